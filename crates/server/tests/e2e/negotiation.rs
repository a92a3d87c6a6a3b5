//! Stream negotiation (RFC 6120 §4–§7): headers, features, STARTTLS, SASL, throttling,
//! resource binding, timeouts and closing.

use crate::harness::{Server, b64, mechanisms, ns, password, stream_header, unb64};
use crate::scram::ScramSha256;
use std::time::Duration;

#[tokio::test]
async fn stream_to_another_domain_is_host_unknown() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    client.send(stream_header("example.org")).await;
    assert_eq!(client.expect_stream_error().await, "host-unknown");
}

#[tokio::test]
async fn features_before_auth_offer_starttls_and_all_mechanisms_on_loopback() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    let features = client.open_stream().await;
    let starttls = features
        .get_child("starttls", ns::TLS)
        .unwrap_or_else(|| panic!("STARTTLS offered: {features:?}"));
    // RFC 6120 §5.3.1: on loopback TLS is offered but not required (PLAIN is allowed there).
    assert!(!starttls.has_child("required", ns::TLS), "{features:?}");
    assert_eq!(
        mechanisms(&features),
        ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"],
        "{features:?}"
    );
    assert!(!features.has_child("bind", ns::BIND), "no bind before auth");
    assert!(
        !features.has_child("register", ns::REGISTER_FEATURE),
        "registration is closed by default"
    );
}

#[tokio::test]
async fn starttls_then_scram_sha_256_then_bind() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    let features = client.starttls().await;
    assert!(client.is_tls());
    // RFC 6120 §5.4.3.3: STARTTLS is not offered again on the encrypted stream.
    assert!(!features.has_child("starttls", ns::TLS), "{features:?}");
    assert_eq!(
        mechanisms(&features),
        ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"],
        "{features:?}"
    );

    let mut scram = ScramSha256::new("alice", &password("alice"));
    client
        .send(format!(
            "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
            ns::SASL,
            b64(&scram.client_first())
        ))
        .await;
    let challenge = client.expect("challenge", ns::SASL).await;
    let response = scram.client_final(&unb64(&challenge.text()));
    client
        .send(format!(
            "<response xmlns='{}'>{}</response>",
            ns::SASL,
            b64(&response)
        ))
        .await;
    let success = client.expect("success", ns::SASL).await;
    // RFC 6120 §6.4.6 / RFC 5802: the server-final message rides on <success/>.
    scram.verify_server_final(&unb64(&success.text()));

    let features = client.open_stream().await;
    assert!(features.has_child("bind", ns::BIND), "{features:?}");
    assert!(
        features.get_child("mechanisms", ns::SASL).is_none(),
        "no SASL after auth"
    );
    let jid = client.bind(Some("laptop")).await;
    assert_eq!(jid, "alice@localhost/laptop");
    // The encrypted, authenticated stream carries stanzas.
    client.sync().await;
}

#[tokio::test]
async fn wrong_password_is_not_authorized_and_the_stream_may_retry() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    client.open_stream().await;

    client.auth_plain("alice", "wrong").await;
    assert_eq!(client.expect_sasl_failure().await, "not-authorized");

    // Same with SCRAM: the proof does not verify.
    let mut scram = ScramSha256::new("alice", "also-wrong");
    client
        .send(format!(
            "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
            ns::SASL,
            b64(&scram.client_first())
        ))
        .await;
    let challenge = client.expect("challenge", ns::SASL).await;
    let response = scram.client_final(&unb64(&challenge.text()));
    client
        .send(format!(
            "<response xmlns='{}'>{}</response>",
            ns::SASL,
            b64(&response)
        ))
        .await;
    assert_eq!(client.expect_sasl_failure().await, "not-authorized");

    // RFC 6120 §6.4.5: the client may retry on the same stream.
    client.auth_plain("alice", &password("alice")).await;
    client.expect("success", ns::SASL).await;
}

#[tokio::test]
async fn three_failures_close_the_stream_with_policy_violation() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    client.open_stream().await;
    for _ in 0..2 {
        client.auth_plain("alice", "wrong").await;
        assert_eq!(client.expect_sasl_failure().await, "not-authorized");
    }
    client.auth_plain("alice", "wrong").await;
    assert_eq!(client.expect_sasl_failure().await, "not-authorized");
    assert_eq!(client.expect_stream_error().await, "policy-violation");
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled() {
    // One free failure; the second blocks the address and the account for a second.
    let server = Server::start(&[], &[("CONFAB__AUTH__THROTTLE_FREE_FAILURES", "1")]).await;
    let mut first = server.connect().await;
    first.open_stream().await;
    for _ in 0..2 {
        first.auth_plain("alice", "wrong").await;
        assert_eq!(first.expect_sasl_failure().await, "not-authorized");
    }
    // While blocked even the right password is refused, on this stream and on a new one.
    first.auth_plain("alice", &password("alice")).await;
    assert_eq!(first.expect_sasl_failure().await, "temporary-auth-failure");
    let mut second = server.connect().await;
    second.open_stream().await;
    second.auth_plain("bob", &password("bob")).await;
    assert_eq!(
        second.expect_sasl_failure().await,
        "temporary-auth-failure",
        "the address is blocked for every account"
    );
}

#[tokio::test]
async fn bind_returns_the_requested_resource_or_generates_one() {
    let server = Server::start(&[], &[]).await;
    let mut named = server.connect().await;
    named.login_plain("alice", &password("alice")).await;
    assert_eq!(named.bind(Some("desk")).await, "alice@localhost/desk");

    let mut unnamed = server.connect().await;
    unnamed.login_plain("alice", &password("alice")).await;
    let jid = unnamed.bind(None).await;
    let resource = jid
        .strip_prefix("alice@localhost/")
        .unwrap_or_else(|| panic!("generated JID {jid:?}"));
    assert!(!resource.is_empty(), "a resource was generated: {jid:?}");
    assert_ne!(resource, "desk");
}

#[tokio::test]
async fn binding_the_same_full_jid_again_replaces_the_first_session_with_conflict() {
    let server = Server::start(&[], &[]).await;
    let mut first = server.login_available("alice", "phone", 0).await;
    let mut second = server.login("alice", "phone").await;
    assert_eq!(second.full_jid(), "alice@localhost/phone");
    assert_eq!(first.expect_stream_error().await, "conflict");
    // The new session works and receives what is addressed to the full JID.
    second.available(0).await;
    let mut bob = server.login("bob", "pc").await;
    bob.message("alice@localhost/phone", "to the new phone")
        .await;
    second.expect_message_with_body("to the new phone").await;
}

#[tokio::test]
async fn legacy_session_iq_is_answered_with_a_result() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    let features = client.login_plain("alice", &password("alice")).await;
    // RFC 6121 Appendix E: advertised, and optional.
    let session = features
        .get_child("session", ns::SESSION)
        .unwrap_or_else(|| panic!("session feature: {features:?}"));
    assert!(session.has_child("optional", ns::SESSION), "{features:?}");
    client.bind(Some("old")).await;
    let reply = client
        .iq("set", None, &format!("<session xmlns='{}'/>", ns::SESSION))
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
}

#[tokio::test]
async fn stanza_before_authentication_is_not_authorized() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    client.open_stream().await;
    client
        .send("<message to='bob@localhost'><body>sneaky</body></message>")
        .await;
    assert_eq!(client.expect_stream_error().await, "not-authorized");
}

#[tokio::test]
async fn unauthenticated_connection_times_out_but_authenticated_one_stays() {
    let server = Server::start(&[], &[("CONFAB__C2S__PRE_AUTH_TIMEOUT_SECS", "1")]).await;
    let mut authenticated = server.login("alice", "patient").await;
    let mut idle = server.connect().await;
    idle.open_stream().await;
    let started = tokio::time::Instant::now();
    assert_eq!(idle.expect_stream_error().await, "connection-timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after about a second, not {:?}",
        started.elapsed()
    );
    // This one connected before the idle one and has outlived the timeout.
    authenticated.sync().await;
}

#[tokio::test]
async fn whitespace_keepalives_are_accepted_everywhere() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    client.open_stream().await;
    // RFC 6120 §4.6.1: whitespace between first-level elements, before and after auth.
    client.send(" \n\t ").await;
    client.auth_plain("alice", &password("alice")).await;
    client.expect("success", ns::SASL).await;
    client.open_stream().await;
    client.send("\n").await;
    client.bind(Some("ws")).await;
    client.send(" ").await;
    client.sync().await;
    client.send("\r\n \r\n").await;
    client.sync().await;
    client.send(" ").await;
    client.send(" ").await;
    client.sync().await;
}

#[tokio::test]
async fn closing_the_stream_gets_the_closing_tag_back() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "leaving").await;
    client.send("</stream:stream>").await;
    client.expect_closed().await;
}

#[tokio::test]
async fn closing_before_authentication_gets_the_closing_tag_back() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    client.open_stream().await;
    client.send("</stream:stream>").await;
    client.expect_closed().await;
}
