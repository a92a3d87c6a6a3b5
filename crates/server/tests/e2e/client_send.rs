//! The client API's write side against the real server: `POST /api/v1/messages` takes the
//! XMPP path (log, carbons, delivery, idempotent resends) and `POST /api/v1/read` moves the
//! read position every device sees.

use crate::harness::{Client, Server};
use serde_json::Value;
use std::time::Duration;

const CARBONS: &str = "urn:xmpp:carbons:2";
const SID: &str = "urn:xmpp:sid:0";
const READ: &str = "urn:confab:read:0";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Nothing but presence arrives within a short while.
async fn expect_no_message(client: &mut Client) {
    while let Some(event) = client.next_event_within(Duration::from_millis(400)).await {
        if let crate::harness::Event::Element(element) = &event {
            assert_ne!(element.name(), "message", "unexpected {element:?}");
        }
    }
}

#[tokio::test]
async fn api_message_is_committed_carbon_copied_delivered_and_deduplicated() {
    let server = Server::start(&[], &[]).await;
    let mut phone = server.login_available("alice", "phone", 0).await;
    let mut laptop = server.login_available("alice", "laptop", 0).await;
    let reply = laptop
        .iq("set", None, &format!("<enable xmlns='{CARBONS}'/>"))
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let mut bob = server.login_available("bob", "desk", 0).await;
    let token = phone.im_token().await;

    let send = r#"{"to":"bob@localhost","body":"via http","id":"http-1","markable":true}"#;
    let response = server
        .http_post_json_bearer("/api/v1/messages", &token, send)
        .await;
    assert_eq!(response.status, 201, "{response:?}");
    let sent = json(&response.body);
    assert_eq!(sent["id"], "http-1");
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["duplicate"], false);
    let server_id = sent["server_id"].as_str().expect("server_id").to_owned();

    // The recipient gets it as if the phone had sent it over XMPP.
    let delivered = bob.expect_message_with_body("via http").await;
    assert_eq!(delivered.attr("from"), Some("alice@localhost/phone"));
    let stanza_id = delivered.get_child("stanza-id", SID).expect("stanza-id");
    assert_eq!(stanza_id.attr("id"), Some(server_id.as_str()));
    assert_eq!(stanza_id.attr("by"), Some("bob@localhost"));
    let origin_id = delivered.get_child("origin-id", SID).expect("origin-id");
    assert_eq!(origin_id.attr("id"), Some("http-1"));
    assert!(delivered.has_child("markable", "urn:xmpp:chat-markers:0"));

    // The sender's other device gets the sent carbon.
    let (carbon, _) = laptop
        .expect_matching("a sent carbon", |e| e.has_child("sent", CARBONS))
        .await;
    assert!(format!("{carbon:?}").contains("via http"), "{carbon:?}");

    // The receipt went into the HTTP answer, not to the session as a stanza.
    expect_no_message(&mut phone).await;

    // A retry after a lost answer: the original receipt, nothing delivered again.
    let response = server
        .http_post_json_bearer("/api/v1/messages", &token, send)
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let again = json(&response.body);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["server_id"], server_id.as_str());
    assert_eq!(again["seq"], 1);
    expect_no_message(&mut bob).await;

    let history = server
        .http_get_bearer("/api/v1/history?with=bob@localhost", &token)
        .await;
    let history = json(&history.body);
    assert_eq!(history["last_seq"], 1, "{history}");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn api_message_refusals_are_json_and_store_nothing() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob = server.login_available("bob", "desk", 0).await;
    let token = alice.im_token().await;

    let cases = [
        (
            r#"{"to":"nobody@localhost","body":"x"}"#,
            404,
            "recipient_not_found",
        ),
        (
            r#"{"to":"bob@elsewhere.example","body":"x"}"#,
            404,
            "recipient_not_found",
        ),
        (r#"{"to":"bob@localhost","body":""}"#, 400, "bad_request"),
        (r#"{"to":"bob@localhost"}"#, 400, "bad_request"),
        (
            r#"{"to":"bob@localhost","body":"x","colour":"red"}"#,
            400,
            "bad_request",
        ),
        (r#"{"to":"bob@localhost","body":"#, 400, "bad_request"),
        (r#"{"to":"@@","body":"x"}"#, 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let response = server
            .http_post_json_bearer("/api/v1/messages", &token, body)
            .await;
        assert_eq!(response.status, status, "{body}: {response:?}");
        assert_eq!(json(&response.body)["error"], code, "{body}: {response:?}");
    }
    let response = server
        .http_post_json_bearer(
            "/api/v1/messages",
            "forged",
            r#"{"to":"bob@localhost","body":"x"}"#,
        )
        .await;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(json(&response.body)["error"], "unauthorized");

    // Bob blocks Alice: refused, nothing archived, nothing delivered.
    let reply = bob
        .iq(
            "set",
            None,
            "<block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block>",
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let response = server
        .http_post_json_bearer(
            "/api/v1/messages",
            &token,
            r#"{"to":"bob@localhost","body":"blocked","id":"b1"}"#,
        )
        .await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(json(&response.body)["error"], "refused");
    expect_no_message(&mut bob).await;
    let history = server
        .http_get_bearer("/api/v1/history?with=bob@localhost", &token)
        .await;
    assert_eq!(json(&history.body)["last_seq"], 0, "{history:?}");
}

#[tokio::test]
async fn api_read_moves_the_position_for_every_device_and_never_back() {
    let server = Server::start(&[], &[]).await;
    let mut phone = server.login_available("alice", "phone", 0).await;
    let mut laptop = server.login_available("alice", "laptop", 0).await;
    let mut bob = server.login_available("bob", "desk", 0).await;
    for n in 1..=3 {
        bob.message("alice@localhost", &format!("note {n}")).await;
        phone.expect_message_with_body(&format!("note {n}")).await;
        laptop.expect_message_with_body(&format!("note {n}")).await;
    }
    let token = phone.im_token().await;

    let response = server
        .http_post_json_bearer(
            "/api/v1/read",
            &token,
            r#"{"with":"bob@localhost","seq":2}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let read = json(&response.body);
    assert_eq!(
        (read["seq"].as_u64(), read["unread"].as_u64()),
        (Some(2), Some(1))
    );

    // The other device hears of it; the one that read does not.
    let (push, _) = laptop
        .expect_matching("a read push", |e| e.has_child("read", READ))
        .await;
    let position = push.get_child("read", READ).expect("read");
    assert_eq!(position.attr("with"), Some("bob@localhost"));
    assert_eq!(position.attr("seq"), Some("2"));
    assert_eq!(position.attr("unread"), Some("1"));
    expect_no_message(&mut phone).await;

    // Positions never move back; a position past the last message is refused.
    let response = server
        .http_post_json_bearer(
            "/api/v1/read",
            &token,
            r#"{"with":"bob@localhost","seq":1}"#,
        )
        .await;
    assert_eq!(json(&response.body)["seq"], 2, "{response:?}");
    let response = server
        .http_post_json_bearer(
            "/api/v1/read",
            &token,
            r#"{"with":"bob@localhost","seq":4}"#,
        )
        .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(json(&response.body)["error"], "seq_out_of_range");
    let response = server
        .http_post_json_bearer("/api/v1/read", &token, r#"{"with":"bob@","seq":1}"#)
        .await;
    assert_eq!(response.status, 400, "{response:?}");
}
