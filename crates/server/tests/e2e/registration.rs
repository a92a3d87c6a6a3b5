//! In-band registration (XEP-0077) before authentication.

use crate::harness::{Server, ns, password, stanza_error, xml};

const REGISTER_NEWBIE: &str = "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>\
<username>newbie</username><password>fresh-pw</password></query></iq>";

#[tokio::test]
async fn open_registration_creates_an_account_that_can_log_in() {
    let server = Server::builder()
        .args(&["--registration", "open"])
        .start()
        .await;
    let mut client = server.connect().await;
    let features = client.open_stream().await;
    assert!(
        features.has_child("register", ns::REGISTER_FEATURE),
        "XEP-0077 §9 stream feature: {}",
        xml(&features)
    );
    client.send(REGISTER_NEWBIE).await;
    let reply = client.expect("iq", ns::CLIENT).await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    assert_eq!(reply.attr("id"), Some("reg1"));

    // The same stream can now authenticate as the new account.
    client.auth_plain("newbie", "fresh-pw").await;
    client.expect("success", ns::SASL).await;
    client.open_stream().await;
    assert_eq!(client.bind(Some("first")).await, "newbie@localhost/first");

    // A second registration of the same name conflicts.
    let mut other = server.connect().await;
    other.open_stream().await;
    other.send(REGISTER_NEWBIE).await;
    let reply = other.expect("iq", ns::CLIENT).await;
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("conflict"),
        "{}",
        xml(&reply)
    );
    // XEP-0077 §3.3: the password is never echoed back.
    assert!(!xml(&reply).contains("fresh-pw"), "{}", xml(&reply));
}

#[tokio::test]
async fn registration_form_is_offered_on_an_empty_query() {
    let server = Server::builder()
        .args(&["--registration", "open"])
        .start()
        .await;
    let mut client = server.connect().await;
    client.open_stream().await;
    client
        .send("<iq type='get' id='form'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    let reply = client.expect("iq", ns::CLIENT).await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    let query = reply
        .get_child("query", ns::REGISTER)
        .unwrap_or_else(|| panic!("form: {}", xml(&reply)));
    assert!(query.has_child("username", ns::REGISTER), "{}", xml(&reply));
    assert!(query.has_child("password", ns::REGISTER), "{}", xml(&reply));
}

#[tokio::test]
async fn closed_registration_is_refused() {
    let server = Server::builder().start().await;
    let mut client = server.connect().await;
    let features = client.open_stream().await;
    assert!(
        !features.has_child("register", ns::REGISTER_FEATURE),
        "{}",
        xml(&features)
    );
    client.send(REGISTER_NEWBIE).await;
    let reply = client.expect("iq", ns::CLIENT).await;
    // XEP-0077 §3.1: a server without in-band registration answers service-unavailable.
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("service-unavailable"),
        "{}",
        xml(&reply)
    );
    assert!(!xml(&reply).contains("fresh-pw"), "{}", xml(&reply));
    // No account was created.
    client.auth_plain("newbie", "fresh-pw").await;
    assert_eq!(client.expect_sasl_failure().await, "not-authorized");
}

#[tokio::test]
async fn account_added_while_the_server_runs_can_log_in() {
    let server = Server::builder().start().await;
    let mut before = server.connect().await;
    before.open_stream().await;
    before.auth_plain("dave", &password("dave")).await;
    assert_eq!(before.expect_sasl_failure().await, "not-authorized");
    // `confab user add` works on the live data directory (SQLite WAL).
    server.add_user("dave", &password("dave")).await;
    let mut dave = server.login("dave", "new").await;
    assert_eq!(dave.full_jid(), "dave@localhost/new");
    dave.sync().await;
}
