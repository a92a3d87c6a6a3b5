//! The protobuf binding's client library (`confab-pb-client`) and its `confab-pb` CLI against
//! a real server: SCRAM and PLAIN logins, TCP, TLS from the first byte and `/pb-websocket`,
//! Confab receipts, XEP-0198 resumption, and the CLI's JSON lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use confab_pb_client::{Client, Endpoint, Error, Event, LoginOptions, Mechanism, Receipt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::harness::{CONFAB, DEFAULT_USERS, DOMAIN, STEP, Server, password};

/// A server with the protobuf listener on, plain or TLS.
async fn server(tls: bool) -> Server {
    Server::builder()
        .env(&[
            ("CONFAB__PB__ENABLED", "true"),
            ("CONFAB__PB__LISTEN", "127.0.0.1:0"),
            ("CONFAB__PB__TLS", if tls { "true" } else { "false" }),
        ])
        .users(DEFAULT_USERS)
        .start()
        .await
}

fn tcp(server: &Server) -> Endpoint {
    Endpoint::Tcp(server.pb.expect("pb listener"))
}

fn options(user: &str, resource: &str, mechanism: Mechanism) -> LoginOptions {
    let mut options = LoginOptions::new(&format!("{user}@{DOMAIN}/{resource}"), password(user))
        .expect("valid JID");
    options.mechanism = mechanism;
    options.timeout = STEP;
    options
}

/// The next message with a body, skipping presence and other events.
async fn next_message(client: &mut Client) -> confab_pb_client::Message {
    loop {
        let event = tokio::time::timeout(STEP, client.next_event())
            .await
            .expect("an event within the step")
            .expect("the stream is healthy");
        if let Event::Message(message) = event
            && message.body().is_some()
        {
            return *message;
        }
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit")
}

/// The receipt describes a fresh first message of alice to bob.
fn assert_first_receipt(receipt: &Receipt, sent_at_ms: i64) {
    assert_eq!(receipt.seq, 1, "{receipt:?}");
    assert_eq!(receipt.with, format!("bob@{DOMAIN}"));
    assert!(receipt.client_id.is_some(), "the message had an id");
    assert_eq!(receipt.server_id.len(), 36, "a UUID: {receipt:?}");
    assert!(
        (sent_at_ms - 1000..=now_ms() + 1000).contains(&receipt.stamp_ms),
        "the stamp is server time of this exchange: {receipt:?}"
    );
    assert!(receipt.stamp().ends_with('Z'), "{}", receipt.stamp());
}

#[tokio::test]
async fn scram_login_chats_with_an_xml_client_and_reads_the_receipt() {
    let server = server(false).await;
    let mut bob = server.login_available("bob", "xml", 5).await;
    let mut alice = Client::login(
        &tcp(&server),
        options("alice", "pb", Mechanism::ScramSha256),
    )
    .await
    .expect("SCRAM-SHA-256 login");
    assert_eq!(alice.jid(), format!("alice@{DOMAIN}/pb"));

    let sent_at = now_ms();
    let receipt = alice
        .send_message_acked(&format!("bob@{DOMAIN}"), "hi bob")
        .await
        .expect("a Confab receipt");
    assert_first_receipt(&receipt, sent_at);

    // Bob sees the message from alice's full JID, with the same server id as the receipt.
    let delivered = bob.expect_message_with_body("hi bob").await;
    assert_eq!(delivered.attr("from"), Some(alice.jid()));
    assert_eq!(delivered.attr("id"), receipt.client_id.as_deref());
    let stanza_id = delivered
        .get_child("stanza-id", "urn:xmpp:sid:0")
        .and_then(|sid| sid.attr("id"));
    assert_eq!(stanza_id, Some(receipt.server_id.as_str()));

    // The reply comes back as an event with the server's stanza id for alice.
    bob.send(format!(
        "<message to='{}' type='chat' id='r1'><body>hi alice</body></message>",
        alice.jid()
    ))
    .await;
    let reply = next_message(&mut alice).await;
    assert_eq!(reply.body(), Some("hi alice"));
    assert_eq!(reply.from(), Some(format!("bob@{DOMAIN}/xml").as_str()));
    assert_eq!(reply.id.as_deref(), Some("r1"));
    let reply_sid = reply
        .stanza_id
        .clone()
        .expect("a stanza id by alice's bare JID");
    assert_eq!(reply_sid.len(), 36);
    assert_ne!(reply_sid, receipt.server_id);
    let element = reply.element().expect("converts to XML");
    assert_eq!(element.attr("id"), Some("r1"));
    alice.close().await.expect("clean close");
}

#[tokio::test]
async fn plain_and_scram_sha1_log_in_and_a_wrong_password_is_an_auth_error() {
    let server = server(false).await;
    let alice = Client::login(&tcp(&server), options("alice", "plain", Mechanism::Plain))
        .await
        .expect("PLAIN is offered on loopback");
    assert_eq!(alice.jid(), format!("alice@{DOMAIN}/plain"));
    let carol = Client::login(
        &tcp(&server),
        options("carol", "sha1", Mechanism::ScramSha1),
    )
    .await
    .expect("SCRAM-SHA-1 login");
    assert_eq!(carol.jid(), format!("carol@{DOMAIN}/sha1"));

    for mechanism in [Mechanism::Plain, Mechanism::ScramSha256] {
        let mut wrong = options("bob", "x", mechanism);
        wrong.password = "not-bobs-password".into();
        match Client::login(&tcp(&server), wrong).await {
            Err(Error::Auth { condition, .. }) => {
                assert_eq!(condition, "not-authorized", "{mechanism:?}");
            }
            other => panic!("{mechanism:?}: expected an auth error, got {other:?}"),
        }
    }
    alice.close().await.expect("clean close");
    carol.close().await.expect("clean close");
}

#[tokio::test]
async fn the_client_chats_over_pb_websocket() {
    let server = server(false).await;
    let mut bob = server.login_available("bob", "xml", 5).await;
    let endpoint = Endpoint::WebSocket {
        url: format!("ws://{}/pb-websocket", server.http),
        verify: true,
    };
    let mut alice = Client::login(&endpoint, options("alice", "ws", Mechanism::ScramSha256))
        .await
        .expect("login over /pb-websocket");
    alice.available().await.expect("presence");

    let sent_at = now_ms();
    let receipt = alice
        .send_message_acked(&format!("bob@{DOMAIN}"), "over websocket")
        .await
        .expect("a receipt");
    assert_first_receipt(&receipt, sent_at);
    bob.expect_message_with_body("over websocket").await;

    bob.message(alice.jid(), "back over websocket").await;
    let reply = next_message(&mut alice).await;
    assert_eq!(reply.body(), Some("back over websocket"));
    alice.close().await.expect("clean close");
}

#[tokio::test]
async fn the_tls_listener_speaks_tls_from_the_first_byte() {
    let server = server(true).await;
    let addr = server.pb.expect("pb listener");
    let mut bob = server.login_available("bob", "xml", 5).await;
    let endpoint = Endpoint::Tls {
        addr,
        server_name: DOMAIN.into(),
        verify: false,
    };
    let mut alice = Client::login(&endpoint, options("alice", "tls", Mechanism::ScramSha256))
        .await
        .expect("login over TLS");
    let sent_at = now_ms();
    let receipt = alice
        .send_message_acked(&format!("bob@{DOMAIN}"), "over tls")
        .await
        .expect("a receipt");
    assert_first_receipt(&receipt, sent_at);
    bob.expect_message_with_body("over tls").await;
    alice.close().await.expect("clean close");

    // A client that does not start with a TLS handshake gets no stream on that port.
    let plain = Client::login(
        &Endpoint::Tcp(addr),
        options("carol", "x", Mechanism::Plain),
    )
    .await;
    assert!(
        matches!(plain, Err(Error::Io(_))),
        "plain frames on the TLS port end the connection: {plain:?}"
    );
    // And the certificate is checked when asked: the server's is self-signed.
    let verified = Endpoint::Tls {
        addr,
        server_name: DOMAIN.into(),
        verify: true,
    };
    let checked = Client::login(&verified, options("carol", "x", Mechanism::Plain)).await;
    assert!(
        matches!(&checked, Err(Error::Tls(reason)) if reason.contains("certificate")),
        "a self-signed certificate fails verification: {checked:?}"
    );
}

#[tokio::test]
async fn resumption_delivers_what_was_sent_meanwhile_exactly_once() {
    let server = server(false).await;
    let mut bob = server.login_available("bob", "xml", 5).await;
    let mut opts = options("alice", "pb", Mechanism::ScramSha256);
    opts.sm = true;
    let mut alice = Client::login(&tcp(&server), opts)
        .await
        .expect("login with SM");
    alice.available().await.expect("presence");
    let full = alice.jid().to_owned();

    bob.message(&full, "m1").await;
    assert_eq!(next_message(&mut alice).await.body(), Some("m1"));
    alice
        .send_message_acked(&format!("bob@{DOMAIN}"), "before the drop")
        .await
        .expect("a receipt");
    bob.expect_message_with_body("before the drop").await;

    // The socket goes away without a close frame: the server parks the session.
    let token = alice.resume_token().expect("resumable");
    drop(alice);
    bob.message(&full, "m2").await;
    bob.message(&full, "m3").await;
    bob.sync().await;

    let mut alice = Client::resume(&tcp(&server), token).await.expect("resumed");
    assert_eq!(alice.jid(), full, "the same session");
    let mut bodies = Vec::new();
    while bodies.last().map(String::as_str) != Some("m3") {
        let message = next_message(&mut alice).await;
        bodies.push(message.body().unwrap_or_default().to_owned());
    }
    assert_eq!(bodies, ["m2", "m3"], "m1 was handled before the drop");

    // The resumed stream carries on both ways, and bob got alice's first message once.
    alice
        .send_message_acked(&format!("bob@{DOMAIN}"), "after the resume")
        .await
        .expect("a receipt after resuming");
    let (_, before) = bob
        .expect_matching("the message after the resume", |e| {
            crate::harness::body_of(e).as_deref() == Some("after the resume")
        })
        .await;
    assert!(
        before
            .iter()
            .all(|e| crate::harness::body_of(e).as_deref() != Some("before the drop")),
        "nothing was sent twice: {before:?}"
    );
    bob.message(&full, "m4").await;
    assert_eq!(next_message(&mut alice).await.body(), Some("m4"));
    alice.request_ack().await.expect("request an ack");
    alice.close().await.expect("clean close");
}

#[tokio::test]
async fn resuming_an_unknown_session_fails() {
    let server = server(false).await;
    let mut opts = options("alice", "pb", Mechanism::ScramSha256);
    opts.sm = true;
    let alice = Client::login(&tcp(&server), opts)
        .await
        .expect("login with SM");
    let mut token = alice.resume_token().expect("resumable");
    token.sm.id = Some("no-such-session".into());
    match Client::resume(&tcp(&server), token).await {
        Err(Error::ResumeFailed { condition }) => {
            assert_eq!(condition.as_deref(), Some("item-not-found"));
        }
        other => panic!("expected a refused resumption, got {other:?}"),
    }
    alice.close().await.expect("clean close");
}

/// The `confab-pb` binary: built by `cargo build --workspace` next to the server binary.
fn cli() -> PathBuf {
    let path = PathBuf::from(CONFAB).with_file_name("confab-pb");
    assert!(
        path.exists(),
        "{} not built: run `cargo build -p confab-pb-client` (or the whole workspace) first",
        path.display()
    );
    path
}

/// `confab-pb SUBCOMMAND` logging in as `user` on the server's pb listener (the password
/// through the environment, as a script would pass it).
fn cli_command(server: &Server, subcommand: &str, user: &str) -> Command {
    let mut command = Command::new(cli());
    command
        .arg(subcommand)
        .env("CONFAB_PB_PASSWORD", password(user))
        .args(["--server", &server.pb.expect("pb listener").to_string()])
        .args(["--user", &format!("{user}@{DOMAIN}")])
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_cli_sends_and_listens_with_json_lines() {
    let server = server(false).await;
    let mut listen = cli_command(&server, "listen", "bob");
    listen
        .args(["--count", "1", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut listener = listen.spawn().expect("spawn confab-pb listen");
    let mut errors = BufReader::new(listener.stderr.take().expect("stderr")).lines();
    // Wait until bob is online, so the message is delivered live.
    tokio::time::timeout(STEP, async {
        while let Some(line) = errors.next_line().await.expect("read stderr") {
            if line.contains("confab-pb: listening") {
                return;
            }
        }
        panic!("confab-pb listen exited before listening");
    })
    .await
    .expect("listen logs in within the step");

    let sent = tokio::time::timeout(
        STEP,
        cli_command(&server, "send", "alice")
            .args(["--to", &format!("bob@{DOMAIN}"), "hello from the cli"])
            .output(),
    )
    .await
    .expect("send finishes within the step")
    .expect("run confab-pb send");
    assert!(
        sent.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let receipt: serde_json::Value =
        serde_json::from_slice(&sent.stdout).expect("one JSON line from send");
    assert_eq!(receipt["seq"], 1, "{receipt}");
    let server_id = receipt["server_id"].as_str().expect("server_id").to_owned();
    let id = receipt["id"].as_str().expect("id").to_owned();
    assert!(
        receipt["stamp"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{receipt}"
    );

    let output = tokio::time::timeout(STEP, listener.wait_with_output())
        .await
        .expect("listen exits after one message")
        .expect("wait for confab-pb listen");
    assert!(output.status.success(), "listen: {:?}", output.status);
    let line: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON line from listen");
    assert_eq!(line["body"], "hello from the cli");
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["stanza_id"], server_id.as_str(), "the same server id");
    assert!(
        line["from"]
            .as_str()
            .is_some_and(|from| from.starts_with(&format!("alice@{DOMAIN}/"))),
        "{line}"
    );

    // A wrong password is a non-zero exit with the SASL condition.
    let refused = tokio::time::timeout(
        STEP,
        cli_command(&server, "send", "carol")
            .env("CONFAB_PB_PASSWORD", "wrong")
            .args(["--to", &format!("bob@{DOMAIN}"), "x"])
            .output(),
    )
    .await
    .expect("send fails within the step")
    .expect("run confab-pb send");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not-authorized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test]
async fn the_cli_chats_interactively() {
    let server = server(false).await;
    let mut chat = cli_command(&server, "chat", "bob");
    chat.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut bob = chat.spawn().expect("spawn confab-pb chat");
    let mut stdin = bob.stdin.take().expect("stdin");
    let mut lines = BufReader::new(bob.stdout.take().expect("stdout")).lines();
    let mut errors = BufReader::new(bob.stderr.take().expect("stderr")).lines();
    tokio::time::timeout(STEP, async {
        while let Some(line) = errors.next_line().await.expect("read stderr") {
            if line.contains("type `JID: text` lines") {
                return;
            }
        }
        panic!("confab-pb chat exited before it was ready");
    })
    .await
    .expect("chat logs in within the step");

    let mut alice = Client::login(&tcp(&server), options("alice", "lib", Mechanism::Plain))
        .await
        .expect("login");
    alice.available().await.expect("presence");
    // A line typed into the chat is sent; its receipt is printed.
    stdin
        .write_all(format!("{}: hello alice\n", alice.jid()).as_bytes())
        .await
        .expect("write to chat");
    assert_eq!(next_message(&mut alice).await.body(), Some("hello alice"));
    let mut next_line = async || -> serde_json::Value {
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await
            .expect("a line within the step")
            .expect("read stdout")
            .expect("chat still running");
        serde_json::from_str(&line).expect("a JSON line")
    };
    let receipt = next_line().await;
    assert_eq!(receipt["seq"], 1, "{receipt}");
    // A message to bob is printed.
    alice
        .send_message_acked(&format!("bob@{DOMAIN}"), "hello bob")
        .await
        .expect("a receipt");
    let received = next_line().await;
    assert_eq!(received["body"], "hello bob", "{received}");
    assert!(received["stanza_id"].is_string(), "{received}");
    // End of input ends the chat cleanly.
    drop(stdin);
    let status = tokio::time::timeout(STEP, bob.wait())
        .await
        .expect("chat exits at end of input")
        .expect("wait for chat");
    assert!(status.success(), "{status:?}");
}
