//! The load generator (`confab-bench`) over XEP-0368 direct TLS, RFC 7395 WebSocket and
//! Confab's protobuf binding (TCP, TLS and `/pb-websocket`), against the real server: it
//! registers accounts, holds sessions and exchanges chat messages over each transport, with
//! nothing lost, duplicated or dropped.
//!
//! The bench binary is another package's, so it is found next to the `confab` binary (both
//! are built into the same target directory by `cargo build --workspace` and by
//! `cargo test --workspace`, through the bench's own integration test).

use crate::harness::{CONFAB, Server};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Longest one bench run may take (its own login timeout is shorter).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The `confab-bench` binary next to `confab`.
fn bench_binary() -> PathBuf {
    let path = std::path::Path::new(CONFAB).with_file_name("confab-bench");
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build -p confab-bench`",
        path.display()
    );
    path
}

/// Runs `confab-bench <args>` and returns its JSON report (the last line of its output).
async fn bench(args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        RUN_LIMIT,
        Command::new(bench_binary())
            .args(args)
            .env_remove("CONFAB_BENCH_PASSWORD")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("confab-bench {args:?} did not finish in {RUN_LIMIT:?}"))
    .expect("run confab-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "confab-bench {args:?} failed: {stderr}\n{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("no JSON report ({e}) from {args:?}: {stdout}\n{stderr}"))
}

/// One transport's whole run: register users `first..first+3`, hold them online, then two
/// pairs chat as fast as a window of 8 allows, with stream management and receipts. Returns
/// the chat's wire bytes per delivered message.
async fn run_over(transport: &str, server: &str, first: u64) -> f64 {
    let first = first.to_string();
    let common = [
        "--transport",
        transport,
        "--server",
        server,
        "--first",
        &first,
        "--mech",
        "scram-sha-1",
        // A broken transport shows as failed logins in the report, well before RUN_LIMIT.
        "--login-timeout",
        "10",
    ];
    let with = |extra: &[&'static str]| {
        let mut args: Vec<&str> = Vec::new();
        args.extend_from_slice(&extra[..1]);
        args.extend_from_slice(&common);
        args.extend_from_slice(&extra[1..]);
        args
    };

    let report = bench(&with(&["register", "--count", "4", "--connections", "1"])).await;
    assert_eq!(report["transport"], transport, "{report}");
    assert_eq!(report["created"], 4, "{transport}: {report}");
    assert_eq!(report["failed"], 0, "{transport}: {report}");

    let report = bench(&with(&[
        "connect",
        "--count",
        "4",
        "--presence",
        "--hold",
        "0.2",
        "--settle",
        "0",
    ]))
    .await;
    assert_eq!(report["succeeded"], 4, "{transport}: {report}");
    assert_eq!(report["failed"], 0, "{transport}: {report}");
    assert_eq!(report["dropped"], 0, "{transport}: {report}");
    assert!(report["time_to_all_online_s"].is_number(), "{report}");

    let report = bench(&with(&[
        "chat",
        "--pairs",
        "2",
        "--max",
        "--inflight",
        "8",
        "--duration",
        "1",
        "--sm",
    ]))
    .await;
    let at = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert_eq!(at("failed_logins"), 0, "{transport}: {report}");
    assert!(at("sent") > 0, "{transport}: nothing sent: {report}");
    assert_eq!(at("received"), at("sent"), "{transport}: {report}");
    assert_eq!(at("lost"), 0, "{transport}: {report}");
    assert_eq!(at("duplicated"), 0, "{transport}: {report}");
    assert_eq!(at("bounced"), 0, "{transport}: {report}");
    assert_eq!(at("unacked"), 0, "{transport}: {report}");
    assert_eq!(
        report["bounce_reasons"],
        serde_json::json!({}),
        "{transport}: {report}"
    );
    assert_eq!(
        report["drops"],
        serde_json::json!({}),
        "{transport}: {report}"
    );
    assert_eq!(
        report["send_errors"],
        serde_json::json!({}),
        "{transport}: {report}"
    );
    // Every client answered the server's <r/> and got <a/> back over this transport.
    assert_eq!(report["sm"]["enabled"], 4, "{transport}: {report}");
    let bytes = report["bytes_per_msg"]
        .as_f64()
        .unwrap_or_else(|| panic!("bytes_per_msg: {report}"));
    assert!(bytes > 0.0, "{transport}: {report}");
    bytes
}

#[tokio::test]
async fn bench_over_direct_tls_and_websocket() {
    let server = Server::builder()
        .args(&["--registration", "open"])
        .start()
        .await;
    let tls = server.c2s_tls.expect("direct TLS listener").to_string();
    let ws = format!("ws://{}/xmpp-websocket", server.http);
    // Separate accounts per transport, so no run sees another's late traffic.
    run_over("tls", &tls, 1).await;
    run_over("websocket", &ws, 101).await;
}

/// The protobuf binding on TCP and on `/pb-websocket`: the bench converts its XML to frames
/// at the edge, so the same scenarios must give the same clean figures as over XML.
#[tokio::test]
async fn bench_over_the_protobuf_binding() {
    let server = Server::builder()
        .args(&["--registration", "open"])
        .env(&[
            ("CONFAB__PB__ENABLED", "true"),
            ("CONFAB__PB__LISTEN", "127.0.0.1:0"),
        ])
        .start()
        .await;
    let pb = server.pb.expect("protobuf listener").to_string();
    let ws = format!("ws://{}/pb-websocket", server.http);
    let pb_bytes = run_over("pb", &pb, 201).await;
    run_over("pb-websocket", &ws, 301).await;
    // The same traffic as XML: the bench must really speak the compact binding (typed
    // fields), not, say, XML fragments in frames, or its pb figures would measure that.
    let xml_bytes = run_over("tcp", &server.c2s.to_string(), 501).await;
    assert!(
        pb_bytes < xml_bytes * 0.55,
        "protobuf {pb_bytes} B per message against XML {xml_bytes} B"
    );
}

/// The protobuf listener with TLS from the first byte (`[pb] tls = true`).
#[tokio::test]
async fn bench_over_the_protobuf_binding_with_tls() {
    let server = Server::builder()
        .args(&["--registration", "open"])
        .env(&[
            ("CONFAB__PB__ENABLED", "true"),
            ("CONFAB__PB__LISTEN", "127.0.0.1:0"),
            ("CONFAB__PB__TLS", "true"),
        ])
        .start()
        .await;
    let pb = server.pb.expect("protobuf listener").to_string();
    run_over("pb-tls", &pb, 401).await;
}

/// `confab-bench group` against Confab's XEP-0045 service at `conference.localhost`: the
/// bench creates a members-only room, puts 19 users on its member list, 10 join and 2 send
/// for 2 s; every message must reach each of the 10 occupants exactly once.
#[tokio::test]
async fn bench_group_fan_out_over_muc() {
    let server = Server::builder()
        .args(&["--registration", "open"])
        .start()
        .await;
    let c2s = server.c2s.to_string();
    let common = ["--server", c2s.as_str(), "--mech", "scram-sha-1"];
    let with = |extra: &[&'static str]| {
        let mut args: Vec<&str> = vec![extra[0]];
        args.extend_from_slice(&common);
        args.extend_from_slice(&extra[1..]);
        args
    };
    let report = bench(&with(&["register", "--count", "20", "--connections", "2"])).await;
    assert_eq!(report["created"], 20, "{report}");

    let report = bench(&with(&[
        "group",
        "--members",
        "20",
        "--online",
        "10",
        "--senders",
        "2",
        "--max",
        "--inflight",
        "8",
        "--duration",
        "2",
        "--service",
        "conference.localhost",
        "--login-timeout",
        "10",
    ]))
    .await;
    let at = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert_eq!(at("failed_logins"), 0, "{report}");
    assert_eq!(report["created"], true, "{report}");
    assert_eq!(report["member_list"]["listed"], 19, "{report}");
    assert_eq!(at("failed_joins"), 0, "{report}");
    assert_eq!(at("occupants"), 10, "{report}");
    assert_eq!(at("senders"), 2, "{report}");
    assert!(at("sent") > 0, "nothing sent: {report}");
    assert_eq!(at("deliveries_expected"), at("sent") * 10, "{report}");
    assert_eq!(at("received"), at("deliveries_expected"), "{report}");
    assert_eq!(at("lost"), 0, "{report}");
    assert_eq!(at("duplicated"), 0, "{report}");
    assert_eq!(at("bounced"), 0, "{report}");
    assert_eq!(at("history_replayed"), 0, "{report}");
    for key in ["bounce_reasons", "send_errors", "drops", "join_failures"] {
        assert_eq!(report[key], serde_json::json!({}), "{key}: {report}");
    }
    assert_eq!(report["latency"]["count"], report["received"], "{report}");
}
