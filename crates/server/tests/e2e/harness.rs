//! The test environment: a real `confab serve` process on ephemeral ports, a raw XMPP client
//! over real sockets (plain or STARTTLS), and a minimal HTTP client.
//!
//! Every test starts its own [`Server`] with its own data directory, so tests run in parallel
//! and never share state. Waiting is always "until something happens, at most [`STEP`]": no
//! test sleeps for a fixed time to let the server catch up. To show that something did *not*
//! happen (a message was not delivered), a client calls [`Client::sync`], which pings the
//! server and returns everything that arrived before the answer: the answer travels through
//! the same mailbox as any stanza routed to the session earlier, so anything routed before
//! the ping was sent is in that list.
//!
//! The raw client parses what the server sends with the server's own decoder
//! (`confab_codec::XmlStreamDecoder`): a stream from the server has the same framing as one
//! from a client, and reusing it keeps the client small. The decoder is independent of the
//! code under test in every way that matters here, since these tests check the protocol
//! decisions, not the XML tokenizer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::BytesMut;
use confab_codec::{Limits, StreamEvent, XmlStreamDecoder};
use confab_pb_client::connection::AcceptAnyCertificate;
use minidom::Element;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The binary under test.
pub const CONFAB: &str = env!("CARGO_BIN_EXE_confab");

/// The domain every test server serves.
pub const DOMAIN: &str = "localhost";

/// Longest wait for any single expected event. Generous because many servers start at once
/// on a small machine; a test only waits this long when the behaviour under test is broken.
pub const STEP: Duration = Duration::from_secs(10);

/// Accounts every [`Server::start`] creates; each one's password is [`password`].
pub const DEFAULT_USERS: &[&str] = &["alice", "bob", "carol"];

/// Namespaces the tests use.
pub mod ns {
    pub const CLIENT: &str = "jabber:client";
    pub const STREAM: &str = "http://etherx.jabber.org/streams";
    pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    pub const ROSTER: &str = "jabber:iq:roster";
    pub const PING: &str = "urn:xmpp:ping";
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const BLOCKING: &str = "urn:xmpp:blocking";
    pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
    pub const REGISTER: &str = "jabber:iq:register";
    pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
    pub const DELAY: &str = "urn:xmpp:delay";
}

/// The password [`Server::start`] gives `user`.
pub fn password(user: &str) -> String {
    format!("{user}-secret")
}

/// How a test server is started.
#[derive(Debug, Default)]
pub struct ServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    users: Vec<String>,
    fd_limit: Option<u32>,
    /// A data directory to reuse (a restart), instead of a fresh one.
    data_dir: Option<TempDir>,
}

impl ServerBuilder {
    /// Extra arguments after `serve` (for example `--registration open`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Environment variables for the server (and the `user add` runs), e.g. `CONFAB__…`.
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Accounts to create before the server starts, each with [`password`].
    pub fn users(mut self, users: &[&str]) -> Self {
        self.users.extend(users.iter().map(|u| (*u).to_owned()));
        self
    }

    /// Runs the server under `ulimit -n limit` (the suite forbids unsafe code, so the limit
    /// is set by a shell that then `exec`s the binary: the process under test is confab).
    pub fn fd_limit(mut self, limit: u32) -> Self {
        self.fd_limit = Some(limit);
        self
    }

    /// Runs on the data directory a stopped server left (see [`Server::stop`]).
    pub fn data_dir(mut self, dir: TempDir) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// Creates the data directory and accounts, spawns the server and waits until both
    /// listeners are reported on standard output.
    pub async fn start(self) -> Server {
        let dir = match self.data_dir {
            Some(dir) => dir,
            None => tempfile::tempdir().expect("temporary data directory"),
        };
        for user in &self.users {
            add_user(dir.path(), &self.env, user, &password(user)).await;
        }
        let mut command = match self.fd_limit {
            Some(limit) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(CONFAB);
                command
            }
            None => Command::new(CONFAB),
        };
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--c2s", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(&self.args);
        clean_env(&mut command, &self.env);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn confab serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut c2s = None;
        let mut c2s_tls = None;
        let mut http = None;
        // The protobuf listener is announced after HTTP: wait for it when it was enabled.
        let mut pb = None;
        let expect_pb = self
            .env
            .iter()
            .any(|(key, value)| key == "CONFAB__PB__ENABLED" && value == "true");
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            while c2s.is_none() || http.is_none() || (expect_pb && pb.is_none()) {
                let Ok(Some(line)) = lines.next_line().await else {
                    return false;
                };
                if let Some(addr) = line.strip_prefix("confab: c2s listening on ") {
                    c2s = Some(addr.parse::<SocketAddr>().expect("c2s address"));
                } else if let Some(addr) = line.strip_prefix("confab: c2s direct TLS listening on ")
                {
                    // Announced before the HTTP listener, so it is never missed.
                    c2s_tls = Some(addr.parse::<SocketAddr>().expect("direct TLS address"));
                } else if let Some(addr) = line.strip_prefix("confab: http listening on ") {
                    http = Some(addr.parse::<SocketAddr>().expect("http address"));
                } else if let Some(addr) = line.strip_prefix("confab: pb listening on ") {
                    pb = Some(addr.parse::<SocketAddr>().expect("pb address"));
                }
            }
            true
        })
        .await;
        if started != Ok(true) {
            let status = child.try_wait().ok().flatten();
            // Give the stderr reader a moment to collect the reason the process died.
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "confab serve did not report its listeners (exit status {status:?}); stderr:\n{}",
                stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
        // Keep draining standard output so the server can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            child,
            c2s: c2s.expect("c2s address"),
            c2s_tls,
            http: http.expect("http address"),
            pb,
            dir,
            env: self.env,
            stderr,
        }
    }
}

/// A running `confab serve`; killed when dropped. If the test panicked, the server's
/// standard error is printed so the failure shows what the server logged.
pub struct Server {
    child: Child,
    /// The XMPP client listener.
    pub c2s: SocketAddr,
    /// The XEP-0368 direct TLS client listener, unless disabled.
    pub c2s_tls: Option<SocketAddr>,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The protobuf listener, when `CONFAB__PB__ENABLED=true` was passed.
    pub pb: Option<SocketAddr>,
    dir: TempDir,
    env: Vec<(String, String)>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "----- confab serve stderr -----\n{}-------------------------------",
                self.stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
    }
}

impl Server {
    /// A server with `extra_args` after `serve`, extra environment `env`, and the accounts
    /// in [`DEFAULT_USERS`].
    pub async fn start(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::builder()
            .args(extra_args)
            .env(env)
            .users(DEFAULT_USERS)
            .start()
            .await
    }

    /// A builder for servers that need more control (no default users, a descriptor limit).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Creates an account with `confab user add` on this server's data directory (works
    /// while the server runs).
    pub async fn add_user(&self, user: &str, password: &str) {
        add_user(self.dir.path(), &self.env, user, password).await;
    }

    /// Runs `confab ARGS --data-dir DIR` on this server's data directory while the server
    /// runs, as an operator would, and returns what it printed.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(CONFAB);
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdin(Stdio::null());
        clean_env(&mut command, &self.env);
        command.env("RUST_LOG", "warn");
        command.output().await.expect("run confab")
    }

    /// Sends `signal` (e.g. `HUP`) to the server process.
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits until the server's standard error contains `needle` `count` times or more
    /// (a log line the test caused); panics after [`STEP`].
    pub async fn wait_for_log(&self, needle: &str, count: usize) {
        let found = tokio::time::timeout(STEP, async {
            loop {
                let seen = self
                    .stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .matches(needle)
                    .count();
                if seen >= count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "the server never logged {needle:?} {count} times"
        );
    }

    /// A new XEP-0368 direct TLS connection with `tls` (see [`insecure_tls_config`]).
    pub async fn connect_direct_tls(&self, tls: Arc<rustls::ClientConfig>) -> Client {
        let addr = self.c2s_tls.expect("the direct TLS listener is enabled");
        Client::connect_direct_tls(addr, tls)
            .await
            .expect("direct TLS handshake")
    }

    /// Stops the server cleanly (SIGTERM) and hands back its data directory, so a test can
    /// start another server on the same data ([`ServerBuilder::data_dir`]): a restart.
    pub async fn stop(mut self) -> TempDir {
        self.terminate().await;
        self.wait_exit().await;
        std::mem::replace(
            &mut self.dir,
            tempfile::tempdir().expect("temporary data directory"),
        )
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM, as an operator or a service manager stops the server.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit (after [`Server::terminate`]) and checks it exited
    /// cleanly.
    pub async fn wait_exit(&mut self) {
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("the server did not exit in time")
            .expect("wait for the server");
        assert!(status.success(), "the server exited with {status}");
    }

    /// A new raw connection to the client listener.
    pub async fn connect(&self) -> Client {
        Client::connect(self.c2s).await
    }

    /// Connects, authenticates `user` with PLAIN (allowed without TLS on loopback) and binds
    /// `resource`.
    pub async fn login(&self, user: &str, resource: &str) -> Client {
        let mut client = self.connect().await;
        client.login_plain(user, &password(user)).await;
        client.bind(Some(resource)).await;
        client
    }

    /// Like [`Server::login`], then sends initial presence with `priority` and discards what
    /// that triggers (the presence echo, contacts' presence), so the next element the test
    /// reads is caused by the test.
    pub async fn login_available(&self, user: &str, resource: &str, priority: i8) -> Client {
        let mut client = self.login(user, resource).await;
        client.available(priority).await;
        client
    }

    /// `GET path` on the HTTP listener.
    pub async fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.http, path).await
    }

    /// `GET path` on the HTTP listener with `Authorization: Bearer token`.
    pub async fn http_get_bearer(&self, path: &str, token: &str) -> HttpResponse {
        http_get_with(
            self.http,
            path,
            &format!("Authorization: Bearer {token}\r\n"),
        )
        .await
    }

    /// `method path` with an IM token and a JSON body.
    pub async fn call(&self, method: &str, path: &str, token: &str, json: &str) -> HttpResponse {
        http_request(
            self.http,
            method,
            path,
            &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
            json,
        )
        .await
    }

    /// `POST path` with a JSON body and `Authorization: Bearer token`.
    pub async fn http_post_json_bearer(&self, path: &str, token: &str, json: &str) -> HttpResponse {
        http_request(
            self.http,
            "POST",
            path,
            &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
            json,
        )
        .await
    }

    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.http_get("/metrics").await;
        assert_eq!(response.status, 200, "GET /metrics: {response:?}");
        response.body
    }
}

/// Removes inherited `CONFAB__*` and `RUST_LOG` and sets the test's own variables.
fn clean_env(command: &mut Command, env: &[(String, String)]) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CONFAB__") {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1");
    // Debug logs of the protocol crates make a failing test's stderr dump useful.
    command.env(
        "RUST_LOG",
        "info,confab_c2s=debug,confab_net=debug,confab_router=debug",
    );
    // The direct TLS listener defaults to port 5223; parallel servers need their own ports.
    command.env("CONFAB__C2S__DIRECT_TLS_LISTEN", "127.0.0.1:0");
    for (key, value) in env {
        command.env(key, value);
    }
}

async fn add_user(dir: &Path, env: &[(String, String)], user: &str, password: &str) {
    let mut command = Command::new(CONFAB);
    command
        .args(["user", "add", user, password, "--data-dir"])
        .arg(dir)
        .stdin(Stdio::null());
    clean_env(&mut command, env);
    command.env("RUST_LOG", "warn");
    let output = command.output().await.expect("run confab user add");
    assert!(
        output.status.success(),
        "confab user add {user} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Raw XMPP client

/// Something read from the server.
#[derive(Debug)]
pub enum Event {
    /// The server's stream header.
    Open,
    /// A first-level element.
    Element(Element),
    /// `</stream:stream>`.
    Close,
    /// The connection was closed (or reset) by the server.
    Eof,
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while the socket is moved into the TLS handshake.
    Upgrading,
}

/// A raw client-to-server connection: the test writes XML, the client parses answers.
pub struct Client {
    conn: Conn,
    decoder: XmlStreamDecoder,
    buf: BytesMut,
    next_id: u32,
    /// The bound full JID, once bound.
    pub jid: Option<String>,
}

impl Client {
    /// Opens a TCP connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let _ = stream.set_nodelay(true);
        Client {
            conn: Conn::Plain(stream),
            decoder: XmlStreamDecoder::new(Limits::default()),
            buf: BytesMut::new(),
            next_id: 0,
            jid: None,
        }
    }

    /// Opens a TCP connection to `addr` and completes a TLS handshake at once (XEP-0368
    /// direct TLS), sending SNI [`DOMAIN`]; the handshake's error if it fails.
    pub async fn connect_direct_tls(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Client> {
        let mut client = Client::connect(addr).await;
        let Conn::Plain(stream) = std::mem::replace(&mut client.conn, Conn::Upgrading) else {
            unreachable!("a new client is plain TCP");
        };
        let connector = tokio_rustls::TlsConnector::from(tls);
        let name = rustls::pki_types::ServerName::try_from(DOMAIN).expect("server name");
        let tls = tokio::time::timeout(STEP, connector.connect(name, stream))
            .await
            .expect("TLS handshake timed out")?;
        client.conn = Conn::Tls(Box::new(tls));
        Ok(client)
    }

    /// The TLS session's state (negotiated version, ALPN, peer certificate), if TLS.
    pub fn tls_session(&self) -> Option<&rustls::ClientConnection> {
        match &self.conn {
            Conn::Tls(stream) => Some(stream.get_ref().1),
            _ => None,
        }
    }

    /// The bound full JID.
    pub fn full_jid(&self) -> &str {
        self.jid.as_deref().expect("resource bound")
    }

    /// A fresh stanza id.
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("t{}", self.next_id)
    }

    /// Writes raw bytes; panics if the connection is gone.
    pub async fn send(&mut self, xml: impl AsRef<[u8]>) {
        self.try_send(xml.as_ref())
            .await
            .expect("write to the server");
    }

    /// Writes raw bytes, reporting failure (the server may already have closed).
    pub async fn try_send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.conn {
            Conn::Plain(stream) => stream.write_all(data).await,
            Conn::Tls(stream) => {
                stream.write_all(data).await?;
                stream.flush().await
            }
            Conn::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(4096);
        match &mut self.conn {
            Conn::Plain(stream) => stream.read_buf(&mut self.buf).await,
            Conn::Tls(stream) => stream.read_buf(&mut self.buf).await,
            Conn::Upgrading => Ok(0),
        }
    }

    /// The next event, waiting at most `limit`; `None` on timeout.
    pub async fn next_event_within(&mut self, limit: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(StreamEvent::Open(_))) => return Some(Event::Open),
                Ok(Some(StreamEvent::Stanza(element))) => return Some(Event::Element(element)),
                Ok(Some(StreamEvent::Close)) => return Some(Event::Close),
                Ok(None) => {}
                Err(error) => panic!("the server sent XML the client cannot parse: {error}"),
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return None,
                Ok(Ok(0)) => return Some(Event::Eof),
                Ok(Ok(_)) => {}
                Ok(Err(error))
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Some(Event::Eof);
                }
                Ok(Err(error)) => panic!("read from the server: {error}"),
            }
        }
    }

    /// The next event; panics after [`STEP`].
    pub async fn next_event(&mut self) -> Event {
        match self.next_event_within(STEP).await {
            Some(event) => event,
            None => panic!("nothing arrived from the server within {STEP:?}"),
        }
    }

    /// The next element, which must be `<name xmlns=namespace>`.
    pub async fn expect(&mut self, name: &str, namespace: &str) -> Element {
        match self.next_event().await {
            Event::Element(element) if element.is(name, namespace) => element,
            other => panic!(
                "expected <{name} xmlns='{namespace}'>, got {}",
                show(&other)
            ),
        }
    }

    /// Skips elements until one satisfies `matches` (skipped ones are returned too, for
    /// assertions about what else arrived).
    pub async fn expect_matching(
        &mut self,
        what: &str,
        matches: impl Fn(&Element) -> bool,
    ) -> (Element, Vec<Element>) {
        let mut skipped = Vec::new();
        loop {
            match self.next_event().await {
                Event::Element(element) if matches(&element) => return (element, skipped),
                Event::Element(element) => skipped.push(element),
                other => panic!(
                    "expected {what}, got {} after {}",
                    show(&other),
                    show_all(&skipped)
                ),
            }
        }
    }

    /// A message stanza with this body text (skipping anything else).
    pub async fn expect_message_with_body(&mut self, body: &str) -> Element {
        let what = format!("a message with body {body:?}");
        self.expect_matching(&what, |e| {
            e.is("message", ns::CLIENT) && body_of(e).as_deref() == Some(body)
        })
        .await
        .0
    }

    /// The server's stream error (skipping a stream header and any stanzas before it); then
    /// checks that `</stream:stream>` follows and the connection is closed. Returns the
    /// condition, e.g. `policy-violation`.
    pub async fn expect_stream_error(&mut self) -> String {
        let mut skipped = Vec::new();
        loop {
            match self.next_event().await {
                Event::Open => {}
                Event::Element(element) if element.is("error", ns::STREAM) => {
                    let condition = element
                        .children()
                        .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
                        .map(|c| c.name().to_owned())
                        .unwrap_or_else(|| panic!("stream error without a condition: {element:?}"));
                    self.expect_closed().await;
                    return condition;
                }
                Event::Element(element) => skipped.push(element),
                other => panic!(
                    "expected a stream error, got {} after {}",
                    show(&other),
                    show_all(&skipped)
                ),
            }
        }
    }

    /// `</stream:stream>` followed by the end of the connection.
    pub async fn expect_closed(&mut self) {
        match self.next_event().await {
            Event::Close => {}
            other => panic!("expected </stream:stream>, got {}", show(&other)),
        }
        self.expect_eof().await;
    }

    /// The server closes the connection with nothing more to say.
    pub async fn expect_eof(&mut self) {
        match self.next_event().await {
            Event::Eof => {}
            other => panic!("expected the connection to close, got {}", show(&other)),
        }
    }

    /// Sends a stream header to `to` and returns the server's `<stream:features/>`.
    pub async fn open_stream_to(&mut self, to: &str) -> Element {
        // A new stream restarts the parser (RFC 6120 §4.3.3); nothing of the old one is left
        // in the buffer at this point because the server waits for our header.
        self.decoder.reset();
        self.send(stream_header(to)).await;
        match self.next_event().await {
            Event::Open => {}
            other => panic!("expected the server's stream header, got {}", show(&other)),
        }
        self.expect("features", ns::STREAM).await
    }

    /// Opens a stream to [`DOMAIN`] and returns the features.
    pub async fn open_stream(&mut self) -> Element {
        self.open_stream_to(DOMAIN).await
    }

    /// Opens a stream, upgrades it with STARTTLS (accepting the server's self-signed
    /// certificate) and returns the features of the encrypted stream.
    pub async fn starttls(&mut self) -> Element {
        let features = self.open_stream().await;
        assert!(
            features.has_child("starttls", ns::TLS),
            "STARTTLS offered: {features:?}"
        );
        self.send(format!("<starttls xmlns='{}'/>", ns::TLS)).await;
        self.expect("proceed", ns::TLS).await;
        let Conn::Plain(stream) = std::mem::replace(&mut self.conn, Conn::Upgrading) else {
            panic!("STARTTLS on a connection that is not plain TCP");
        };
        assert!(self.buf.is_empty(), "nothing may follow <proceed/>");
        let connector = tokio_rustls::TlsConnector::from(insecure_tls_config());
        let name = rustls::pki_types::ServerName::try_from(DOMAIN).expect("server name");
        let tls = tokio::time::timeout(STEP, connector.connect(name, stream))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        self.conn = Conn::Tls(Box::new(tls));
        self.open_stream().await
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    /// Opens a stream and authenticates with PLAIN; returns the post-authentication
    /// features (the stream has been restarted).
    pub async fn login_plain(&mut self, user: &str, password: &str) -> Element {
        let features = self.open_stream().await;
        assert!(
            mechanisms(&features).iter().any(|m| m == "PLAIN"),
            "PLAIN offered: {features:?}"
        );
        self.auth_plain(user, password).await;
        self.expect("success", ns::SASL).await;
        self.open_stream().await
    }

    /// Sends a PLAIN `<auth/>` (the answer is left to the caller).
    pub async fn auth_plain(&mut self, user: &str, password: &str) {
        let initial = B64.encode(format!("\0{user}\0{password}"));
        self.send(format!(
            "<auth xmlns='{}' mechanism='PLAIN'>{initial}</auth>",
            ns::SASL
        ))
        .await;
    }

    /// The next element must be a SASL `<failure/>`; returns its condition.
    pub async fn expect_sasl_failure(&mut self) -> String {
        let failure = self.expect("failure", ns::SASL).await;
        failure
            .children()
            .find(|c| c.ns() == ns::SASL && c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| panic!("SASL failure without a condition: {failure:?}"))
    }

    /// Binds `resource` (or lets the server pick one) and returns the full JID.
    pub async fn bind(&mut self, resource: Option<&str>) -> String {
        let id = self.id();
        let resource = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(format!(
            "<iq type='set' id='{id}'><bind xmlns='{}'>{resource}</bind></iq>",
            ns::BIND
        ))
        .await;
        let reply = self.expect("iq", ns::CLIENT).await;
        assert_eq!(reply.attr("type"), Some("result"), "bind: {reply:?}");
        assert_eq!(reply.attr("id"), Some(id.as_str()), "bind: {reply:?}");
        let jid = reply
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text)
            .unwrap_or_else(|| panic!("bind result without a JID: {reply:?}"));
        self.jid = Some(jid.clone());
        jid
    }

    /// Sends initial (or updated) presence with `priority`, then [`Client::sync`]s so what
    /// the presence triggered is consumed; returns those elements.
    pub async fn available(&mut self, priority: i8) -> Vec<Element> {
        self.send(format!(
            "<presence><priority>{priority}</priority></presence>"
        ))
        .await;
        self.sync().await
    }

    /// Sends an IQ (`body` is the child element) and returns the response with the same id,
    /// skipping anything else that arrives first.
    pub async fn iq(&mut self, type_: &str, to: Option<&str>, body: &str) -> Element {
        let id = self.id();
        let to = to.map(|to| format!(" to='{to}'")).unwrap_or_default();
        self.send(format!("<iq type='{type_}' id='{id}'{to}>{body}</iq>"))
            .await;
        self.expect_matching(&format!("the response to IQ {id}"), |e| {
            e.is("iq", ns::CLIENT)
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result" | "error"))
        })
        .await
        .0
    }

    /// Pings the server and returns everything that arrived before the answer (see the
    /// module documentation): a barrier for "nothing else was delivered".
    pub async fn sync(&mut self) -> Vec<Element> {
        let id = self.id();
        self.send(format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='{}'/></iq>",
            ns::PING
        ))
        .await;
        let (answer, before) = self
            .expect_matching("the answer to the sync ping", |e| {
                e.is("iq", ns::CLIENT) && e.attr("id") == Some(id.as_str())
            })
            .await;
        assert_eq!(answer.attr("type"), Some("result"), "ping: {answer:?}");
        before
    }

    /// Asks the server for an IM token for this session (`urn:confab:token:0`).
    pub async fn im_token(&mut self) -> String {
        let reply = self
            .iq("get", None, "<token xmlns='urn:confab:token:0'/>")
            .await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
        reply
            .get_child("token", "urn:confab:token:0")
            .map(|t| t.text())
            .expect("token element")
    }

    /// Sends a chat message.
    pub async fn message(&mut self, to: &str, body: &str) {
        self.send(format!(
            "<message type='chat' to='{to}'><body>{body}</body></message>"
        ))
        .await;
    }
}

/// Our stream header to `to`.
pub fn stream_header(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xml:lang='en' \
         xmlns='{}' xmlns:stream='{}'>",
        ns::CLIENT,
        ns::STREAM
    )
}

/// The SASL mechanisms offered in `features`.
pub fn mechanisms(features: &Element) -> Vec<String> {
    features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .map(Element::text)
                .collect()
        })
        .unwrap_or_default()
}

/// The text of a stanza's `<body/>`.
pub fn body_of(stanza: &Element) -> Option<String> {
    stanza.get_child("body", ns::CLIENT).map(Element::text)
}

/// The defined condition of a stanza error (`type='error'` stanza), e.g. `service-unavailable`.
pub fn stanza_error(stanza: &Element) -> Option<String> {
    if stanza.attr("type") != Some("error") {
        return None;
    }
    stanza
        .get_child("error", ns::CLIENT)?
        .children()
        .find(|c| c.ns() == ns::STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
}

/// A short description of an event for failure messages.
pub fn show(event: &Event) -> String {
    match event {
        Event::Element(element) => xml(element),
        other => format!("{other:?}"),
    }
}

fn show_all(elements: &[Element]) -> String {
    if elements.is_empty() {
        return "nothing else".to_owned();
    }
    elements.iter().map(xml).collect::<Vec<_>>().join(" ")
}

/// An element as XML text.
pub fn xml(element: &Element) -> String {
    String::from(element)
}

// ---------------------------------------------------------------------------------------
// TLS that accepts the server's self-signed certificate

/// Like [`insecure_tls_config`], restricted to `suites` (empty: the provider's defaults) and
/// `versions`, offering `alpn` (empty: no ALPN extension).
pub fn insecure_tls_config_with(
    suites: &[rustls::SupportedCipherSuite],
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !suites.is_empty() {
        provider.cipher_suites = suites.to_vec();
    }
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A rustls client configuration that accepts any certificate: the server generates a
/// self-signed one per data directory, and these tests are about XMPP, not PKI.
pub fn insecure_tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------
// HTTP

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header block, lower-cased.
    pub headers: String,
    /// The body (de-chunked).
    pub body: String,
}

/// `GET path` over HTTP/1.1 with `Connection: close`; the whole exchange within [`STEP`].
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_get_with(addr, path, "").await
}

/// The JSON body of an HTTP answer, which must have this status.
pub fn json_body(response: &HttpResponse, status: u16) -> serde_json::Value {
    assert_eq!(response.status, status, "{response:?}");
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
}

/// A JSON error answer (`{"error", "message"}`) with this status and error code.
pub fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    assert!(
        response.headers.contains("content-type: application/json"),
        "{response:?}"
    );
    let body = json_body(response, status);
    assert_eq!(body["error"], code, "{response:?}");
    assert!(body["message"].is_string(), "{response:?}");
}

/// `method path` with extra raw header lines (each ending in `\r\n`) and a body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> HttpResponse {
    tokio::time::timeout(STEP, async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path} timed out"))
    .map(|raw| parse_http(&raw))
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`http_get`] with extra raw header lines, each ending in `\r\n`.
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> HttpResponse {
    tokio::time::timeout(STEP, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    })
    .await
    .unwrap_or_else(|_| panic!("GET {path} timed out"))
    .map(|raw| parse_http(&raw))
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn parse_http(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size..];
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
    body
}

/// The value of the sample `name` (with labels, e.g. `confab_stanzas_in_total{kind="message"}`)
/// in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            (sample == name).then(|| value.parse().ok())?
        })
}

/// Base64 as SASL payloads carry it (RFC 6120 §6.4.2).
pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

/// Decodes a SASL payload.
pub fn unb64(text: &str) -> Vec<u8> {
    B64.decode(text.trim())
        .unwrap_or_else(|e| panic!("not base64: {text:?}: {e}"))
}
