//! Hostile or broken input: size and depth limits, restricted XML, bad encodings, spoofed and
//! malformed addresses, and stanzas that are not stanzas.

use crate::harness::{Server, body_of, ns, stanza_error, stream_header, xml};

#[tokio::test]
async fn oversized_stanza_is_policy_violation_and_other_sessions_keep_working() {
    let server = Server::start(&[], &[("CONFAB__C2S__MAX_STANZA_BYTES", "4096")]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;

    // Just under the limit is fine (the limit is not "reject everything").
    let fits = "x".repeat(3000);
    carol.message("bob@localhost", &fits).await;
    bob.expect_message_with_body(&fits).await;

    let too_big = "y".repeat(5000);
    carol.message("bob@localhost", &too_big).await;
    assert_eq!(carol.expect_stream_error().await, "policy-violation");

    // The other sessions are unaffected.
    alice.message("bob@localhost", "still here").await;
    let message = bob.expect_message_with_body("still here").await;
    assert_eq!(message.attr("from"), Some("alice@localhost/a"));
    let before = bob.sync().await;
    assert!(
        before
            .iter()
            .all(|e| body_of(e).as_deref() != Some(too_big.as_str())),
        "the oversized stanza was never routed"
    );
}

#[tokio::test]
async fn deep_nesting_is_policy_violation() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "deep").await;
    // The default limit is 32 levels; 40 nested elements inside a message exceed it.
    let depth = 40;
    let open = "<x>".repeat(depth);
    let close = "</x>".repeat(depth);
    client
        .send(format!(
            "<message to='bob@localhost'><body>hi</body><deep xmlns='urn:test'>{open}{close}</deep></message>"
        ))
        .await;
    assert_eq!(client.expect_stream_error().await, "policy-violation");
}

/// The classic billion-laughs prolog.
const BILLION_LAUGHS: &str = "<?xml version='1.0'?>\
<!DOCTYPE lolz [<!ENTITY lol \"lol\">\
<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\
<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>";

#[tokio::test]
async fn billion_laughs_in_the_prolog_is_restricted_xml() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.connect().await;
    client
        .send(format!(
            "{BILLION_LAUGHS}<stream:stream to='localhost' version='1.0' xmlns='{}' xmlns:stream='{}'>&lol3;",
            ns::CLIENT,
            ns::STREAM
        ))
        .await;
    // RFC 6120 §11.1 / §4.9.3.18: DTDs are restricted XML.
    assert_eq!(client.expect_stream_error().await, "restricted-xml");
}

#[tokio::test]
async fn doctype_inside_the_stream_is_restricted_xml() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "dtd").await;
    client.send("<!DOCTYPE foo [<!ENTITY x 'y'>]>").await;
    assert_eq!(client.expect_stream_error().await, "restricted-xml");
}

#[tokio::test]
async fn custom_entity_reference_is_restricted_xml() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "ent").await;
    client
        .send("<message to='bob@localhost'><body>&lol;</body></message>")
        .await;
    assert_eq!(client.expect_stream_error().await, "restricted-xml");
}

#[tokio::test]
async fn invalid_utf8_is_unsupported_encoding() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "bytes").await;
    let mut stanza = b"<message to='bob@localhost'><body>".to_vec();
    stanza.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    stanza.extend_from_slice(b"</body></message>");
    client.send(stanza).await;
    // RFC 6120 §4.9.3.22 names UTF-8 violations explicitly.
    assert_eq!(client.expect_stream_error().await, "unsupported-encoding");
}

#[tokio::test]
async fn spoofed_from_is_invalid_from() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login("alice", "spoof").await;
    let mut bob = server.login_available("bob", "victim", 0).await;
    alice
        .send("<message from='bob@localhost' to='bob@localhost'><body>I am bob</body></message>")
        .await;
    assert_eq!(alice.expect_stream_error().await, "invalid-from");
    let before = bob.sync().await;
    assert!(
        before.iter().all(|e| !e.is("message", ns::CLIENT)),
        "the spoofed message was not delivered: {:?}",
        before.iter().map(xml).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn own_from_is_accepted() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login("alice", "honest").await;
    let mut bob = server.login_available("bob", "b", 0).await;
    alice
        .send(
            "<message from='alice@localhost/honest' to='bob@localhost'><body>full</body></message>",
        )
        .await;
    alice
        .send("<message from='alice@localhost' to='bob@localhost'><body>bare</body></message>")
        .await;
    bob.expect_message_with_body("full").await;
    let message = bob.expect_message_with_body("bare").await;
    assert_eq!(message.attr("from"), Some("alice@localhost/honest"));
}

#[tokio::test]
async fn malformed_to_is_jid_malformed_and_the_stream_stays_open() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "typo").await;
    client
        .send("<message id='m1' to='@localhost'><body>to nobody</body></message>")
        .await;
    let reply = client.expect("message", ns::CLIENT).await;
    assert_eq!(reply.attr("id"), Some("m1"), "{}", xml(&reply));
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("jid-malformed"),
        "{}",
        xml(&reply)
    );
    client.sync().await;
}

#[tokio::test]
async fn unknown_first_level_element_is_unsupported_stanza_type() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "foo").await;
    client.send("<foo/>").await;
    assert_eq!(
        client.expect_stream_error().await,
        "unsupported-stanza-type"
    );
}

#[tokio::test]
async fn iq_without_id_is_bad_request() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "noid").await;
    client
        .send(format!(
            "<iq type='get' to='localhost'><ping xmlns='{}'/></iq>",
            ns::PING
        ))
        .await;
    let reply = client.expect("iq", ns::CLIENT).await;
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("bad-request"),
        "{}",
        xml(&reply)
    );
    client.sync().await;
}

#[tokio::test]
async fn iq_get_with_two_children_is_bad_request() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "two").await;
    let reply = client
        .iq(
            "get",
            Some("localhost"),
            &format!("<ping xmlns='{0}'/><ping xmlns='{0}'/>", ns::PING),
        )
        .await;
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("bad-request"),
        "{}",
        xml(&reply)
    );
}

#[tokio::test]
async fn processing_instruction_inside_the_stream_is_restricted_xml() {
    let server = Server::start(&[], &[]).await;
    let mut client = server.login("alice", "pi").await;
    // An XML declaration (a restarted header) mid-stream is a processing instruction.
    client.send(stream_header("localhost")).await;
    assert_eq!(client.expect_stream_error().await, "restricted-xml");
}
