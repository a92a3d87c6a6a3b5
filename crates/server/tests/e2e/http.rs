//! The HTTP listener: health and Prometheus metrics reflecting real XMPP traffic.

use crate::harness::{Server, metric};
use std::time::Duration;

#[tokio::test]
async fn healthz_is_ok() {
    let server = Server::builder().start().await;
    let response = server.http_get("/healthz").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, r#"{"status":"ok"}"#);
    assert!(
        response.headers.contains("content-type: application/json"),
        "{response:?}"
    );
}

#[tokio::test]
async fn unknown_path_is_a_json_404() {
    let server = Server::builder().start().await;
    let response = server.http_get("/nope").await;
    assert_eq!(response.status, 404, "{response:?}");
    assert!(
        response.body.contains(r#""error":"not_found""#),
        "{response:?}"
    );
}

/// Polls `/metrics` until `sample` satisfies `ok` (counters are updated by the server's tasks,
/// so a reply seen by the client may precede the counter update by a moment).
async fn wait_for_metric(server: &Server, sample: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = server.metrics().await;
        if let Some(value) = metric(&text, sample).filter(|v| ok(*v)) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} never reached the expected value; /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_follow_sessions_stanzas_and_auth_failures() {
    let server = Server::start(&[], &[]).await;
    let text = server.metrics().await;
    assert_eq!(metric(&text, "confab_sessions"), Some(0.0), "{text}");
    assert_eq!(
        metric(&text, "confab_auth_failures_total"),
        Some(0.0),
        "{text}"
    );

    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    wait_for_metric(&server, "confab_sessions", |v| v >= 2.0).await;
    assert!(
        metric(&server.metrics().await, "confab_connections").is_some_and(|v| v >= 2.0),
        "connections gauge"
    );

    let sample = r#"confab_stanzas_in_total{kind="message"}"#;
    let before = metric(&server.metrics().await, sample).unwrap_or(0.0);
    for n in 0..3 {
        alice.message("bob@localhost", &format!("count {n}")).await;
        bob.expect_message_with_body(&format!("count {n}")).await;
    }
    wait_for_metric(&server, sample, |v| v >= before + 3.0).await;
    wait_for_metric(
        &server,
        r#"confab_stanzas_out_total{kind="message"}"#,
        |v| v >= 3.0,
    )
    .await;

    let mut mallory = server.connect().await;
    mallory.open_stream().await;
    mallory.auth_plain("alice", "guess").await;
    assert_eq!(mallory.expect_sasl_failure().await, "not-authorized");
    wait_for_metric(&server, "confab_auth_failures_total", |v| v == 1.0).await;

    // Closing a session lowers the gauge again.
    bob.send("</stream:stream>").await;
    bob.expect_closed().await;
    wait_for_metric(&server, "confab_sessions", |v| v == 1.0).await;
}

/// The IM token (issue 3 item 7) fetched over XMPP authenticates the HTTP history API, and
/// dies with its session.
#[tokio::test]
async fn im_token_from_the_connection_reads_history_until_the_session_ends() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob = server.login_available("bob", "desk", 0).await;
    alice.message("bob@localhost", "over-http").await;
    bob.expect_message_with_body("over-http").await;

    let token = alice.im_token().await;

    let path = "/api/v1/history?with=bob@localhost";
    let response = server.http_get_bearer(path, &token).await;
    assert_eq!(response.status, 200, "{response:?}");
    let page: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(page["last_seq"], 1, "{page}");
    assert!(
        page["messages"][0]["xml"]
            .as_str()
            .unwrap_or("")
            .contains("over-http"),
        "{page}"
    );
    assert_eq!(page["messages"][0]["from"], "alice@localhost");

    let response = server.http_get(path).await;
    assert_eq!(response.status, 401, "{response:?}");
    assert!(
        response.body.contains(r#""error":"unauthorized""#),
        "{response:?}"
    );

    // Ending the session revokes the token.
    alice.send("</stream:stream>").await;
    alice.expect_closed().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = server.http_get_bearer(path, &token).await;
        if response.status == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token still valid: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
