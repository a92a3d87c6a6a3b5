//! `POST /api/v1/token/introspect` over a real socket: RFC 7662 §2 responses, RFC 6749
//! §2.3.1 client authentication and the JSON errors, against apps in a real SQLite store.

mod common;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Reply, Server};
use confab_core::apps::{self, AppStore, NewApp};
use confab_core::metrics::Metrics;
use confab_core::store::TokenInfo;
use confab_http::HttpState;
use serde_json::json;

const PATH: &str = "/api/v1/token/introspect";
const FORM: &str = "Content-Type: application/x-www-form-urlencoded\r\n";
const LIVE: &str = "live-token";
/// A token whose lookup fails as if the database were down.
const STORAGE_DOWN: &str = "storage-down";

/// Knows one live token, alice's phone session.
struct OneToken;

#[async_trait::async_trait]
impl confab_http::api::TokenVerifier for OneToken {
    async fn verify(
        &self,
        token: &str,
    ) -> Result<Option<TokenInfo>, confab_core::store::StoreError> {
        if token == STORAGE_DOWN {
            return Err(confab_core::store::StoreError::Unavailable(
                "disk gone".into(),
            ));
        }
        Ok((token == LIVE).then(|| TokenInfo {
            owner: "alice@example.org".into(),
            full_jid: "alice@example.org/phone".into(),
            session: 3,
            created_ms: 1_700_000_000_123,
            expires_ms: 1_700_086_400_999,
        }))
    }
}

/// A server over a fresh store holding one registered app.
async fn setup() -> (Server, Arc<confab_store::SqliteStore>, NewApp) {
    let store = Arc::new(
        confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let app = apps::create(store.as_ref(), "backend", 1)
        .await
        .expect("app");
    let mut state = HttpState::new(Arc::new(Metrics::new()));
    state.api = Some(confab_http::api::ApiState {
        store: store.clone(),
        tokens: Arc::new(OneToken),
        actions: None,
    });
    (Server::start(state).await, store, app)
}

/// The `Authorization` header line for HTTP Basic, encoded as RFC 6749 §2.3.1 says
/// (the ids and secrets here are base64url, which form encoding leaves alone).
fn basic(id: &str, secret: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn assert_invalid_client(reply: &Reply) {
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"confab\"")
    );
    assert_eq!(reply.json()["error"], "invalid_client");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

fn assert_invalid_request(reply: &Reply) {
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error"], "invalid_request");
    assert!(reply.json()["message"].is_string());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn active_token_describes_account_and_session() {
    let (server, _store, app) = setup().await;
    let auth = basic(&app.app.client_id, &app.secret);
    let reply = server
        .send(
            "POST",
            PATH,
            &format!("{auth}{FORM}"),
            &format!("token={LIVE}&token_type_hint=access_token"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        reply.json(),
        json!({
            "active": true,
            "sub": "alice@example.org",
            "username": "alice",
            "token_type": "Bearer",
            "iat": 1_700_000_000,
            "exp": 1_700_086_400,
            "iss": "example.org",
            "confab_full_jid": "alice@example.org/phone",
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_token_is_exactly_inactive() {
    let (server, _store, app) = setup().await;
    let auth = basic(&app.app.client_id, &app.secret);
    for body in [
        "token=nope",
        "token=",
        // An unknown hint does not stop the search (RFC 7662 §2.1).
        "token=nope&token_type_hint=refresh_token",
    ] {
        let reply = server
            .send("POST", PATH, &format!("{auth}{FORM}"), body)
            .await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.body);
        assert_eq!(reply.body, r#"{"active":false}"#, "{body}");
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    server.stop().await;
}

/// A failed lookup is not "inactive" (which would log the user out of the app): 503.
#[tokio::test]
async fn storage_failure_is_503_not_inactive() {
    let (server, _store, app) = setup().await;
    let auth = basic(&app.app.client_id, &app.secret);
    let reply = server
        .send(
            "POST",
            PATH,
            &format!("{auth}{FORM}"),
            &format!("token={STORAGE_DOWN}"),
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["error"], "storage_unavailable");
    server.stop().await;
}

#[tokio::test]
async fn credentials_in_the_body_are_accepted() {
    let (server, _store, app) = setup().await;
    let body = format!(
        "client_id={}&client_secret={}&token={LIVE}",
        app.app.client_id, app.secret
    );
    let reply = server.send("POST", PATH, FORM, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["active"], true);
    assert_eq!(reply.json()["sub"], "alice@example.org");
    server.stop().await;
}

#[tokio::test]
async fn bad_client_authentication_is_401_invalid_client() {
    let (server, store, app) = setup().await;
    let other = apps::create(store.as_ref(), "other", 2).await.expect("app");
    let id = app.app.client_id.as_str();
    let body = format!("token={LIVE}");
    let cases = [
        // No authentication at all.
        String::new(),
        // Another app's secret.
        basic(id, &other.secret),
        // An unknown client id with a real secret.
        basic("no-such-app", &app.secret),
        // Not Basic, or not decodable.
        format!("Authorization: Bearer {LIVE}\r\n"),
        "Authorization: Basic !!!\r\n".to_owned(),
        format!("Authorization: Basic {}\r\n", STANDARD.encode(id)),
    ];
    for headers in cases {
        let reply = server
            .send("POST", PATH, &format!("{headers}{FORM}"), &body)
            .await;
        assert_invalid_client(&reply);
        assert!(!reply.body.contains("alice"), "{}", reply.body);
    }
    // A body client id without its secret, or a wrong one.
    for creds in [
        format!("client_id={id}"),
        format!("client_id={id}&client_secret={}", other.secret),
    ] {
        let reply = server
            .send("POST", PATH, FORM, &format!("{creds}&{body}"))
            .await;
        assert_invalid_client(&reply);
    }
    // A deleted app stops authenticating at once.
    store.delete_app(id).await.expect("delete");
    let reply = server
        .send(
            "POST",
            PATH,
            &format!("{}{FORM}", basic(id, &app.secret)),
            &body,
        )
        .await;
    assert_invalid_client(&reply);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_400_invalid_request() {
    let (server, _store, app) = setup().await;
    let auth = basic(&app.app.client_id, &app.secret);
    // No token.
    for body in ["", "token_type_hint=access_token"] {
        let reply = server
            .send("POST", PATH, &format!("{auth}{FORM}"), body)
            .await;
        assert_invalid_request(&reply);
    }
    // Not a form, and a parameter given twice (RFC 6749 §3.1).
    let json = "Content-Type: application/json\r\n";
    let reply = server
        .send("POST", PATH, &format!("{auth}{json}"), r#"{"token":"x"}"#)
        .await;
    assert_invalid_request(&reply);
    let reply = server
        .send("POST", PATH, &format!("{auth}{FORM}"), "token=a&token=b")
        .await;
    assert_invalid_request(&reply);
    // Two client authentication methods at once (RFC 6749 §2.3).
    let body = format!(
        "client_id={}&client_secret={}&token={LIVE}",
        app.app.client_id, app.secret
    );
    let reply = server
        .send("POST", PATH, &format!("{auth}{FORM}"), &body)
        .await;
    assert_invalid_request(&reply);
    server.stop().await;
}

#[tokio::test]
async fn an_unauthenticated_caller_learns_nothing_about_its_request() {
    let (server, _store, _app) = setup().await;
    // Even a body that is not a form is answered with the authentication failure.
    let reply = server
        .send("POST", PATH, "Content-Type: text/plain\r\n", "hello")
        .await;
    assert_invalid_client(&reply);
    server.stop().await;
}

#[tokio::test]
async fn only_post_is_allowed() {
    let (server, _store, _app) = setup().await;
    let reply = server.request("GET", PATH).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"], "method_not_allowed");
    server.stop().await;
}
