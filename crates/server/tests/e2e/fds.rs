//! Descriptor exhaustion: under a low `ulimit -n` the server refuses the connections it has
//! no descriptors for, keeps running, and serves again once descriptors are free.

use crate::harness::{Client, Event, Server, metric, ns, password, stream_header};
use std::time::Duration;

/// Far more connections than the descriptor limit allows.
const CONNECTIONS: usize = 100;

#[tokio::test]
async fn descriptor_exhaustion_refuses_cleanly_and_recovers() {
    let mut server = Server::builder()
        .users(&["alice"])
        .fd_limit(64)
        .start()
        .await;

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(server.connect().await);
    }
    // Every connection either gets a stream header back (accepted) or is closed at once
    // (refused); none may hang in the backlog.
    let mut accepted = 0;
    let mut refused = 0;
    for client in &mut clients {
        let _ = client.try_send(stream_header("localhost").as_bytes()).await;
    }
    for client in &mut clients {
        match client.next_event().await {
            Event::Open => accepted += 1,
            Event::Eof => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        refused > 0,
        "some connections were refused ({accepted} accepted)"
    );
    assert!(
        accepted > 0,
        "some connections were served ({refused} refused)"
    );
    assert!(server.is_running(), "the server survived the flood");

    // Free the descriptors; the server serves HTTP and XMPP again.
    drop(clients);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut alice = loop {
        // A new connection is accepted once the server has closed the flood's sockets (it
        // does so as it reads their ends, so the first acceptance can come before the last
        // close: the connection that proves recovery is the one that logs in).
        let mut probe = Client::connect(server.c2s).await;
        let _ = probe.try_send(stream_header("localhost").as_bytes()).await;
        if matches!(probe.next_event().await, Event::Open) {
            probe.expect("features", ns::STREAM).await;
            break probe;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server recovers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    alice.auth_plain("alice", &password("alice")).await;
    alice.expect("success", ns::SASL).await;
    alice.open_stream().await;
    alice.bind(Some("after")).await;
    alice.sync().await;
    let metrics = server.metrics().await;
    let health = server.http_get("/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
    let counted = metric(&metrics, "confab_connections_refused_total").unwrap_or(0.0);
    assert!(
        counted >= refused as f64,
        "confab_connections_refused_total {counted} counts the {refused} refusals \
         ({accepted} accepted):\n{metrics}"
    );
    assert!(server.is_running());
}
