//! The command line of the `confab-bench` binary, checked without a server. (Having an
//! integration test also makes `cargo test` build the binary, which the server's end-to-end
//! suite runs against a real server over each transport.)

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_confab-bench"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run confab-bench")
}

#[test]
fn every_login_scenario_takes_a_transport() {
    for scenario in ["connect", "chat", "register", "http-send"] {
        let output = bench(&[scenario, "--help"]);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{scenario} --help");
        assert!(
            help.contains("--transport <TRANSPORT>"),
            "{scenario}: {help}"
        );
        for value in ["tcp", "tls", "websocket", "pb", "pb-tls", "pb-websocket"] {
            assert!(help.contains(&format!("- {value}:")), "{scenario}: {help}");
        }
    }
}

#[test]
fn mismatched_transport_options_are_refused_before_connecting() {
    let starttls_over_ws = bench(&[
        "connect",
        "--transport",
        "websocket",
        "--tls",
        "--count",
        "1",
    ]);
    assert!(!starttls_over_ws.status.success());
    let stderr = String::from_utf8_lossy(&starttls_over_ws.stderr);
    assert!(
        stderr.contains("--tls (STARTTLS) applies to --transport tcp only"),
        "{stderr}"
    );

    let url_over_tcp = bench(&["connect", "--server", "ws://127.0.0.1:9/x", "--count", "1"]);
    assert!(!url_over_tcp.status.success());
    let stderr = String::from_utf8_lossy(&url_over_tcp.stderr);
    assert!(stderr.contains("pass --transport websocket"), "{stderr}");

    let bad_scheme = bench(&[
        "connect",
        "--transport",
        "websocket",
        "--server",
        "http://127.0.0.1:9/xmpp-websocket",
        "--count",
        "1",
    ]);
    assert!(!bad_scheme.status.success());
    let stderr = String::from_utf8_lossy(&bad_scheme.stderr);
    assert!(stderr.contains("starts with ws:// or wss://"), "{stderr}");

    // The protobuf binding has no STARTTLS (TLS is `pb-tls`), and a URL is for pb-websocket.
    let starttls_over_pb = bench(&["connect", "--transport", "pb", "--tls", "--count", "1"]);
    assert!(!starttls_over_pb.status.success());
    let stderr = String::from_utf8_lossy(&starttls_over_pb.stderr);
    assert!(
        stderr.contains("--tls (STARTTLS) applies to --transport tcp only"),
        "{stderr}"
    );
    let url_over_pb = bench(&[
        "connect",
        "--transport",
        "pb",
        "--server",
        "ws://127.0.0.1:9/pb-websocket",
        "--count",
        "1",
    ]);
    assert!(!url_over_pb.status.success());
    let stderr = String::from_utf8_lossy(&url_over_pb.stderr);
    assert!(stderr.contains("pb-websocket"), "{stderr}");
}
