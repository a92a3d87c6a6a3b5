//! A real HTTP server on an ephemeral loopback port and a raw HTTP/1.1 client, shared by
//! the OpenAPI and introspection tests so they check exactly what a client receives.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use confab_core::metrics::Metrics;
use confab_http::HttpState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", self.body))
    }
}

/// A running server and the means to stop it.
pub struct Server {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Fires the graceful shutdown.
    stop: oneshot::Sender<()>,
    /// The serve task.
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Starts serving `state` on an ephemeral loopback port.
    pub async fn start(state: HttpState) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(confab_http::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    /// Sends a request without a body.
    pub async fn request(&self, method: &str, path: &str) -> Reply {
        self.send(method, path, "", "").await
    }

    /// Sends one request with extra raw header lines (each ending in `\r\n`) and a body
    /// (a `Content-Length` is added when it is not empty), and reads the whole response.
    pub async fn send(&self, method: &str, path: &str, headers: &str, body: &str) -> Reply {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let length = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}{length}Connection: close\r\n\r\n{body}"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("response within 10 s")
            .expect("read");
        parse(&String::from_utf8(raw).expect("UTF-8 response"))
    }

    /// Shuts down and waits for the serve task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task did not panic")
            .expect("serve ends cleanly");
    }
}

/// Splits a raw HTTP/1.1 response; the bodies here are small and not chunked.
fn parse(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A token verifier that knows no token.
pub struct NoTokens;

#[async_trait::async_trait]
impl confab_http::api::TokenVerifier for NoTokens {
    async fn verify(
        &self,
        _token: &str,
    ) -> Result<Option<confab_core::store::TokenInfo>, confab_core::store::StoreError> {
        Ok(None)
    }
}

/// State with fresh metrics and the client API over an empty in-memory store.
pub async fn api_state() -> (HttpState, Arc<confab_store::SqliteStore>) {
    let store = Arc::new(
        confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let mut state = HttpState::new(Arc::new(Metrics::new()));
    state.api = Some(confab_http::api::ApiState {
        store: store.clone(),
        tokens: Arc::new(NoTokens),
        actions: None,
    });
    (state, store)
}
