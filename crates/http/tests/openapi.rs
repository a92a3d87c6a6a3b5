//! `/openapi.json` against the router: every registered route is documented and every
//! documented operation is served, so the description cannot drift from the code.

mod common;

use common::{Server, api_state};
use serde_json::Value;

/// Fetches and parses the description from a running server.
async fn fetch(server: &Server) -> Value {
    let reply = server.request("GET", "/openapi.json").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

/// Documented `(method, path)` pairs, methods uppercased.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths object");
    let mut out = Vec::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("path item object") {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                out.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn description_is_openapi_3_1_for_confab() {
    let (state, _store) = api_state().await;
    let server = Server::start(state).await;
    let doc = fetch(&server).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Confab HTTP API");
    // The shared error body is a named schema handlers can point at.
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["properties"]["error"]["type"], "string");
    assert_eq!(error["properties"]["message"]["type"], "string");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_registered_route_is_documented() {
    let (state, _store) = api_state().await;
    let server = Server::start(state).await;
    let doc = fetch(&server).await;
    let routes = confab_http::route_paths();
    assert!(routes.contains(&"/healthz"), "{routes:?}");
    for path in routes {
        assert!(
            doc["paths"].get(path).is_some(),
            "route {path} is registered in router() but missing from openapi.rs paths(...)"
        );
    }
    assert!(
        doc["paths"].get("/openapi.json").is_none(),
        "the description does not describe itself"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let (state, _store) = api_state().await;
    let server = Server::start(state).await;
    let doc = fetch(&server).await;
    let operations = operations(&doc);
    assert!(!operations.is_empty());
    for (method, path) in operations {
        // A template segment `{id}` becomes a literal so the route still matches.
        let concrete = path.replace(['{', '}'], "");
        let reply = server.request(&method, &concrete).await;
        let fallback = reply.status == 405
            || (reply.status == 404
                && reply
                    .json()
                    .get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.starts_with("no route for")));
        assert!(
            !fallback,
            "{method} {path} is documented but not served: {} {}",
            reply.status, reply.body
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn security_requirements_name_defined_schemes() {
    let (state, _store) = api_state().await;
    let server = Server::start(state).await;
    let doc = fetch(&server).await;
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][method.to_ascii_lowercase()];
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for name in requirement.as_object().expect("requirement object").keys() {
                assert!(
                    schemes.contains_key(name),
                    "{method} {path} requires undefined scheme {name}"
                );
            }
        }
    }
    server.stop().await;
}
