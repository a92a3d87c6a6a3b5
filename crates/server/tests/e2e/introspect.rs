//! Token introspection (RFC 7662) end to end: an IM token obtained over a real XMPP login,
//! checked by an app registered with `confab app add` on the running server's data
//! directory, through the real binary's HTTP listener.

use crate::harness::{STEP, Server};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PATH: &str = "/api/v1/token/introspect";

/// A response: status, lower-cased header block and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("JSON ({e}): {self:?}"))
    }
}

/// `POST PATH` with a form body and optional HTTP Basic credentials.
async fn introspect(addr: SocketAddr, basic: Option<(&str, &str)>, body: &str) -> Reply {
    let auth = basic
        .map(|(id, secret)| {
            format!(
                "Authorization: Basic {}\r\n",
                STANDARD.encode(format!("{id}:{secret}"))
            )
        })
        .unwrap_or_default();
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\n{auth}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let raw = tokio::time::timeout(STEP, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    })
    .await
    .expect("introspection answered in time")
    .expect("introspection request");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("end of headers");
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status"),
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Registers an app with the CLI while the server runs; returns `(client_id, secret)`.
async fn add_app(server: &Server, name: &str) -> (String, String) {
    let output = server.cli(&["app", "add", name]).await;
    assert!(output.status.success(), "confab app add: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {stdout:?}"))
            .to_owned()
    };
    (value("client_id="), value("client_secret="))
}

fn assert_invalid_client(reply: &Reply) {
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(
        reply
            .headers
            .contains("www-authenticate: basic realm=\"confab\""),
        "{reply:?}"
    );
    assert_eq!(reply.json()["error"], "invalid_client", "{reply:?}");
}

#[tokio::test]
async fn registered_app_introspects_an_im_token_until_its_session_ends() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let token = alice.im_token().await;
    let full_jid = alice.full_jid().to_owned();
    let (id, secret) = add_app(&server, "e2e backend").await;
    let body = format!("token={token}&token_type_hint=access_token");

    let reply = introspect(server.http, Some((&id, &secret)), &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.headers.contains("cache-control: no-store"),
        "{reply:?}"
    );
    let info = reply.json();
    let (iat, exp) = (
        info["iat"].as_i64().expect("iat"),
        info["exp"].as_i64().expect("exp"),
    );
    assert!(exp > iat && iat > 1_600_000_000, "{info}");
    assert_eq!(
        info,
        json!({
            "active": true,
            "sub": "alice@localhost",
            "username": "alice",
            "token_type": "Bearer",
            "iat": iat,
            "exp": exp,
            "iss": "localhost",
            "confab_full_jid": full_jid,
        })
    );

    // Client credentials in the body work too.
    let reply = introspect(
        server.http,
        None,
        &format!("client_id={id}&client_secret={secret}&{body}"),
    )
    .await;
    assert_eq!(reply.json()["sub"], "alice@localhost", "{reply:?}");

    // Wrong secret, unknown app, no authentication: 401, nothing about the token.
    let (_, other_secret) = add_app(&server, "other").await;
    for basic in [
        Some((id.as_str(), other_secret.as_str())),
        Some(("no-such-app", secret.as_str())),
        None,
    ] {
        let reply = introspect(server.http, basic, &body).await;
        assert_invalid_client(&reply);
        assert!(!reply.body.contains("alice"), "{reply:?}");
    }
    // Authenticated, but no token.
    let reply = introspect(server.http, Some((&id, &secret)), "token_type_hint=x").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["error"], "invalid_request");

    // Ending the session revokes the token: exactly {"active": false}.
    alice.send("</stream:stream>").await;
    alice.expect_closed().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = introspect(server.http, Some((&id, &secret)), &body).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        if reply.body == r#"{"active":false}"# {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token still active: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleting the app with the CLI stops it at once.
    let output = server.cli(&["app", "del", &id]).await;
    assert!(output.status.success(), "confab app del: {output:?}");
    assert_invalid_client(&introspect(server.http, Some((&id, &secret)), &body).await);
}
