//! The HTTP listener over a real socket: each test binds 127.0.0.1:0, serves the router and
//! speaks raw HTTP/1.1 to it, so what is checked is exactly what a client receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use confab_core::StanzaKind;
use confab_core::metrics::Metrics;
use confab_http::{HttpState, METRICS_CONTENT_TYPE};

mod common;

use common::{Reply, Server};

/// State with fresh metrics and a healthy check.
fn state() -> HttpState {
    HttpState::new(Arc::new(Metrics::new()))
}

#[tokio::test]
async fn healthz_reports_health() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let server = Server::start(state().with_health(move || flag.load(Ordering::Relaxed))).await;

    let reply = server.request("GET", "/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));

    healthy.store(false, Ordering::Relaxed);
    let reply = server.request("GET", "/healthz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json(), serde_json::json!({"status": "unavailable"}));

    server.stop().await;
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let state = state();
    state.metrics.connections.inc();
    state.metrics.stanza_in(StanzaKind::Message);
    let server = Server::start(state).await;

    let reply = server.request("GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(METRICS_CONTENT_TYPE));
    assert!(
        reply.body.contains("confab_connections 1"),
        "{}",
        reply.body
    );
    assert!(
        reply
            .body
            .contains("confab_stanzas_in_total{kind=\"message\"} 1"),
        "{}",
        reply.body
    );
    assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);

    server.stop().await;
}

#[tokio::test]
async fn unknown_route_is_json_404() {
    let server = Server::start(state()).await;
    let reply = server.request("GET", "/nope").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "not_found", "message": "no route for GET /nope"})
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_method_is_json_405() {
    let server = Server::start(state()).await;
    let reply = server.request("POST", "/healthz").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        serde_json::json!({
            "error": "method_not_allowed",
            "message": "/healthz does not support POST"
        })
    );
    let allow = reply.header("allow").expect("Allow header");
    assert!(allow.contains("GET"), "{allow}");
    server.stop().await;
}

#[tokio::test]
async fn head_is_answered_without_body() {
    let server = Server::start(state()).await;
    let reply = server.request("HEAD", "/healthz").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    server.stop().await;
}

/// A token verifier that knows one token, for alice.
struct OneToken;

#[async_trait::async_trait]
impl confab_http::api::TokenVerifier for OneToken {
    async fn verify(
        &self,
        token: &str,
    ) -> Result<Option<confab_core::store::TokenInfo>, confab_core::store::StoreError> {
        if token == "storage-down" {
            return Err(confab_core::store::StoreError::Unavailable(
                "disk gone".into(),
            ));
        }
        Ok(
            (token == "good-token").then(|| confab_core::store::TokenInfo {
                owner: "alice@localhost".into(),
                full_jid: "alice@localhost/phone".into(),
                session: 1,
                created_ms: 0,
                expires_ms: i64::MAX,
            }),
        )
    }
}

/// State with the client API over an in-memory store holding `count` messages between
/// alice and bob (seq 1..=count).
async fn api_state(count: u64) -> HttpState {
    use confab_core::archive::{ArchiveStore, NewMessage, direct_conversation, new_server_id};
    let store = confab_store::SqliteStore::open_in_memory()
        .await
        .expect("store");
    let alice = confab_core::BareJid::new("alice@localhost").expect("jid");
    let bob = confab_core::BareJid::new("bob@localhost").expect("jid");
    let conversation = direct_conversation(&alice, &bob);
    let batch: Vec<NewMessage> = (1..=count)
        .map(|n| NewMessage {
            server_id: new_server_id(),
            conversation: conversation.clone(),
            sender: if n % 2 == 0 {
                "bob@localhost"
            } else {
                "alice@localhost"
            }
            .into(),
            recipient: if n % 2 == 0 {
                "alice@localhost"
            } else {
                "bob@localhost"
            }
            .into(),
            client_id: Some(format!("c{n}")),
            stamp_ms: 1_700_000_000_000 + n as i64,
            xml: format!("<message xmlns='jabber:client'><body>m{n}</body></message>"),
            counts_unread: true,
            for_later: false,
        })
        .collect();
    store.append(&batch).await.expect("append");
    let mut state = state();
    state.api = Some(confab_http::api::ApiState {
        store: Arc::new(store),
        tokens: Arc::new(OneToken),
        actions: None,
    });
    state
}

fn seqs(reply: &Reply) -> Vec<u64> {
    reply.json()["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn history_requires_a_valid_bearer_token() {
    let server = Server::start(api_state(3).await).await;
    let reply = server
        .request("GET", "/api/v1/history?with=bob@localhost")
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "unauthorized");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"confab\"")
    );
    let reply = server
        .send(
            "GET",
            "/api/v1/history?with=bob@localhost",
            "Authorization: Bearer bad\r\n",
            "",
        )
        .await;
    assert_eq!(reply.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn history_rejects_bad_queries_with_json_errors() {
    let server = Server::start(api_state(3).await).await;
    let auth = "Authorization: Bearer good-token\r\n";
    for path in [
        "/api/v1/history",
        "/api/v1/history?with=a@b@c",
        "/api/v1/history?with=bob@localhost&limit=0",
        "/api/v1/history?with=bob@localhost&limit=100000",
        "/api/v1/history?with=bob@localhost&after_seq=x",
        "/api/v1/history?with=bob@localhost&bogus=1",
    ] {
        let reply = server.send("GET", path, auth, "").await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.json()["error"], "bad_request", "{path}");
        assert!(
            !reply.json()["message"].as_str().unwrap_or("").is_empty(),
            "{path}"
        );
    }
    server.stop().await;
}

/// Storage trouble while checking the token is a 503 the client retries, not a 401 that
/// would send it back to log in.
#[tokio::test]
async fn token_check_failure_is_503_storage_unavailable() {
    let server = Server::start(api_state(1).await).await;
    let auth = "Authorization: Bearer storage-down\r\n";
    for (method, path) in [
        ("GET", "/api/v1/history?with=bob@localhost"),
        ("GET", "/api/v1/conversations"),
        ("GET", "/api/v1/sync"),
        ("POST", "/api/v1/read"),
    ] {
        let reply = server.send(method, path, auth, "").await;
        assert_eq!(reply.status, 503, "{method} {path}: {}", reply.body);
        assert_eq!(reply.json()["error"], "storage_unavailable", "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn history_pages_latest_backward_and_forward() {
    let server = Server::start(api_state(10).await).await;
    let auth = "Authorization: Bearer good-token\r\n";
    let latest = server
        .send(
            "GET",
            "/api/v1/history?with=bob@localhost&limit=3",
            auth,
            "",
        )
        .await;
    assert_eq!(latest.status, 200, "{}", latest.body);
    assert_eq!(latest.json()["last_seq"], 10);
    assert_eq!(seqs(&latest), vec![8, 9, 10]);
    let message = &latest.json()["messages"][2];
    assert_eq!(message["from"], "bob@localhost");
    assert!(message["xml"].as_str().expect("xml").contains("m10"));

    let before = server
        .send(
            "GET",
            "/api/v1/history?with=bob@localhost&limit=3&before_seq=8",
            auth,
            "",
        )
        .await;
    assert_eq!(seqs(&before), vec![5, 6, 7]);
    let after = server
        .send(
            "GET",
            "/api/v1/history?with=bob@localhost&limit=4&after_seq=7",
            auth,
            "",
        )
        .await;
    assert_eq!(seqs(&after), vec![8, 9, 10]);
    // Another conversation of the caller is empty, not someone else's.
    let other = server
        .send("GET", "/api/v1/history?with=carol@localhost", auth, "")
        .await;
    assert_eq!(seqs(&other), Vec::<u64>::new());
    server.stop().await;
}
