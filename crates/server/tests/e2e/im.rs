//! Instant messaging (RFC 6121 §5, §8): delivery rules, errors, offline storage, server IQs
//! and blocking.

use crate::harness::{Server, body_of, ns, stanza_error, xml};

/// Messages among `elements`, as XML, for assertion messages.
fn messages(elements: &[minidom::Element]) -> Vec<String> {
    elements
        .iter()
        .filter(|e| e.is("message", ns::CLIENT))
        .map(xml)
        .collect()
}

#[tokio::test]
async fn message_to_bare_jid_reaches_the_available_resource() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "work", 0).await;
    alice.message("bob@localhost", "hello bob").await;
    let message = bob.expect_message_with_body("hello bob").await;
    // RFC 6120 §8.1.2.1: the server stamps the sender's full JID.
    assert_eq!(message.attr("from"), Some("alice@localhost/home"));
    assert_eq!(message.attr("type"), Some("chat"));
}

#[tokio::test]
async fn bare_jid_message_goes_to_the_highest_priority_resource_only() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut high = server.login_available("bob", "high", 5).await;
    let mut low = server.login_available("bob", "low", 1).await;
    alice.message("bob@localhost", "for the best").await;
    high.expect_message_with_body("for the best").await;
    alice.sync().await;
    let before = low.sync().await;
    assert!(
        messages(&before).is_empty(),
        "the lower priority resource got nothing: {:?}",
        messages(&before)
    );
}

#[tokio::test]
async fn bare_jid_message_goes_to_every_resource_on_equal_priority() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut one = server.login_available("bob", "one", 3).await;
    let mut two = server.login_available("bob", "two", 3).await;
    alice.message("bob@localhost", "for both").await;
    one.expect_message_with_body("for both").await;
    two.expect_message_with_body("for both").await;
}

#[tokio::test]
async fn negative_priority_resource_gets_no_bare_jid_messages() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut positive = server.login_available("bob", "pos", 0).await;
    let mut negative = server.login_available("bob", "neg", -1).await;
    alice.message("bob@localhost", "not for negatives").await;
    positive.expect_message_with_body("not for negatives").await;
    alice.sync().await;
    assert!(messages(&negative.sync().await).is_empty());
}

#[tokio::test]
async fn full_jid_message_goes_to_that_resource_only() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut high = server.login_available("bob", "high", 5).await;
    let mut low = server.login_available("bob", "low", 1).await;
    alice.message("bob@localhost/low", "just for low").await;
    let message = low.expect_message_with_body("just for low").await;
    assert_eq!(message.attr("to"), Some("bob@localhost/low"));
    alice.sync().await;
    let before = high.sync().await;
    assert!(
        messages(&before).is_empty(),
        "the other resource got nothing: {:?}",
        messages(&before)
    );
}

#[tokio::test]
async fn message_to_an_unknown_account_bounces_service_unavailable() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    alice
        .send("<message type='chat' id='x1' to='nobody@localhost'><body>anyone?</body></message>")
        .await;
    let (error, _) = alice
        .expect_matching("the bounce", |e| {
            e.is("message", ns::CLIENT) && e.attr("id") == Some("x1")
        })
        .await;
    assert_eq!(
        stanza_error(&error).as_deref(),
        Some("service-unavailable"),
        "{}",
        xml(&error)
    );
    assert_eq!(error.attr("from"), Some("nobody@localhost"));
    assert_eq!(error.attr("to"), Some("alice@localhost/a"));
}

#[tokio::test]
async fn message_to_another_domain_bounces_remote_server_not_found() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    alice
        .send(
            "<message type='chat' id='x2' to='someone@elsewhere.example'><body>hi</body></message>",
        )
        .await;
    let (error, _) = alice
        .expect_matching("the bounce", |e| {
            e.is("message", ns::CLIENT) && e.attr("id") == Some("x2")
        })
        .await;
    assert_eq!(
        stanza_error(&error).as_deref(),
        Some("remote-server-not-found"),
        "{}",
        xml(&error)
    );
}

#[tokio::test]
async fn offline_message_is_delivered_with_a_delay_stamp_after_presence() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    alice.message("bob@localhost", "while you were out").await;
    // The message is stored, not bounced.
    let before = alice.sync().await;
    assert!(
        before.iter().all(|e| stanza_error(e).is_none()),
        "no bounce: {:?}",
        before.iter().map(xml).collect::<Vec<_>>()
    );

    let mut bob = server.login("bob", "back").await;
    // Offline messages wait for initial presence (XEP-0160 §3).
    let before = bob.sync().await;
    assert!(messages(&before).is_empty(), "{:?}", messages(&before));
    let after_presence = bob.available(0).await;
    let message = after_presence
        .iter()
        .find(|e| {
            e.is("message", ns::CLIENT) && body_of(e).as_deref() == Some("while you were out")
        })
        .unwrap_or_else(|| {
            panic!(
                "the offline message after presence: {:?}",
                after_presence.iter().map(xml).collect::<Vec<_>>()
            )
        });
    assert_eq!(message.attr("from"), Some("alice@localhost/a"));
    let delay = message
        .get_child("delay", ns::DELAY)
        .unwrap_or_else(|| panic!("XEP-0203 delay: {}", xml(message)));
    assert!(
        delay.attr("stamp").is_some_and(|s| s.ends_with('Z')),
        "{}",
        xml(message)
    );

    // Delivered once: a new session does not get it again.
    drop(bob);
    let mut again = server.login("bob", "again").await;
    let replay = again.available(0).await;
    assert!(messages(&replay).is_empty(), "{:?}", messages(&replay));
}

#[tokio::test]
async fn ping_to_the_server_is_answered() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login("alice", "a").await;
    let reply = alice
        .iq(
            "get",
            Some("localhost"),
            &format!("<ping xmlns='{}'/>", ns::PING),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    assert_eq!(reply.attr("from"), Some("localhost"));
    assert_eq!(reply.attr("to"), Some("alice@localhost/a"));
}

#[tokio::test]
async fn iq_with_an_unknown_namespace_is_service_unavailable() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login("alice", "a").await;
    let reply = alice
        .iq(
            "get",
            Some("localhost"),
            "<query xmlns='urn:example:unknown'/>",
        )
        .await;
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("service-unavailable"),
        "{}",
        xml(&reply)
    );
}

#[tokio::test]
async fn disco_info_on_the_server_lists_ping() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login("alice", "a").await;
    let reply = alice
        .iq(
            "get",
            Some("localhost"),
            &format!("<query xmlns='{}'/>", ns::DISCO_INFO),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    let query = reply
        .get_child("query", ns::DISCO_INFO)
        .unwrap_or_else(|| panic!("disco#info query: {}", xml(&reply)));
    let features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|c| c.attr("var"))
        .collect();
    for expected in [ns::PING, ns::DISCO_INFO, ns::BLOCKING] {
        assert!(features.contains(&expected), "{expected} in {features:?}");
    }
    assert!(
        query
            .children()
            .any(|c| c.is("identity", ns::DISCO_INFO) && c.attr("category") == Some("server")),
        "server identity: {}",
        xml(&reply)
    );
}

#[tokio::test]
async fn blocked_contact_cannot_message_and_the_blocker_gets_a_blocked_error() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let reply = alice
        .iq(
            "set",
            None,
            &format!(
                "<block xmlns='{}'><item jid='bob@localhost'/></block>",
                ns::BLOCKING
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));

    // Bob's message is not delivered (and alice still gets other people's messages).
    bob.message("alice@localhost", "let me in").await;
    bob.sync().await;
    let mut carol = server.login_available("carol", "c", 0).await;
    carol.message("alice@localhost", "marker").await;
    let (_, before) = alice
        .expect_matching("carol's marker", |e| {
            body_of(e).as_deref() == Some("marker")
        })
        .await;
    assert!(
        messages(&before).is_empty(),
        "bob's message was dropped: {:?}",
        messages(&before)
    );

    // XEP-0191 §3.3: alice's own message to bob is refused with <blocked/>.
    alice
        .send("<message type='chat' id='b2' to='bob@localhost'><body>hi bob</body></message>")
        .await;
    let (error, _) = alice
        .expect_matching("the refusal", |e| {
            e.is("message", ns::CLIENT) && e.attr("id") == Some("b2")
        })
        .await;
    assert_eq!(error.attr("type"), Some("error"), "{}", xml(&error));
    let condition = error
        .get_child("error", ns::CLIENT)
        .unwrap_or_else(|| panic!("error element: {}", xml(&error)));
    assert!(
        condition.has_child("blocked", ns::BLOCKING_ERRORS),
        "{}",
        xml(&error)
    );
    assert_eq!(stanza_error(&error).as_deref(), Some("not-acceptable"));
    let before = bob.sync().await;
    assert!(messages(&before).is_empty(), "{:?}", messages(&before));
}
