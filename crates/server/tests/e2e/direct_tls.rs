//! XEP-0368 direct TLS: the c2s listener that speaks TLS from the first byte, its ALPN and
//! protocol policy, and reloading the server certificate with SIGHUP.

use crate::harness::{Client, STEP, Server, insecure_tls_config_with, mechanisms, ns, password};
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::version::{TLS12, TLS13};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const XMPP_CLIENT: &[u8] = b"xmpp-client";
const BOTH: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// Opens the stream on a direct TLS client, checks the features of a secure stream and logs
/// in with PLAIN, binding `resource`.
async fn login_direct(client: &mut Client, user: &str, resource: &str) {
    let features = client.open_stream().await;
    // XEP-0368 §3: the stream is already encrypted, so STARTTLS is not offered, and PLAIN is
    // (the test servers refuse PLAIN without TLS even on loopback).
    assert!(!features.has_child("starttls", ns::TLS), "{features:?}");
    assert!(
        mechanisms(&features).iter().any(|m| m == "PLAIN"),
        "PLAIN offered over TLS: {features:?}"
    );
    client.auth_plain(user, &password(user)).await;
    client.expect("success", ns::SASL).await;
    client.open_stream().await;
    client.bind(Some(resource)).await;
}

/// A server where PLAIN needs TLS, so PLAIN in the features proves the stream counts as secure.
async fn server() -> Server {
    Server::start(
        &[],
        &[("CONFAB__AUTH__ALLOW_PLAIN_WITHOUT_TLS_ON_LOOPBACK", "false")],
    )
    .await
}

#[tokio::test]
async fn login_with_alpn_xmpp_client_and_chat_with_a_starttls_client() {
    let server = server().await;
    let mut alice = server
        .connect_direct_tls(insecure_tls_config_with(&[], BOTH, &[XMPP_CLIENT]))
        .await;
    let session = alice.tls_session().expect("TLS");
    assert_eq!(
        session.alpn_protocol(),
        Some(XMPP_CLIENT),
        "XEP-0368 §4 ALPN"
    );
    login_direct(&mut alice, "alice", "direct").await;
    alice.available(0).await;

    let mut bob = server.connect().await;
    bob.starttls().await;
    bob.auth_plain("bob", &password("bob")).await;
    bob.expect("success", ns::SASL).await;
    bob.open_stream().await;
    bob.bind(Some("starttls")).await;
    bob.available(0).await;

    alice
        .message("bob@localhost/starttls", "over direct TLS")
        .await;
    let received = bob.expect_message_with_body("over direct TLS").await;
    assert_eq!(received.attr("from"), Some("alice@localhost/direct"));
    bob.message("alice@localhost/direct", "over STARTTLS").await;
    alice.expect_message_with_body("over STARTTLS").await;
}

#[tokio::test]
async fn a_client_without_alpn_is_accepted() {
    let server = server().await;
    let mut client = server
        .connect_direct_tls(insecure_tls_config_with(&[], BOTH, &[]))
        .await;
    assert_eq!(client.tls_session().expect("TLS").alpn_protocol(), None);
    login_direct(&mut client, "alice", "no-alpn").await;
    client.sync().await;
}

#[tokio::test]
async fn a_client_offering_only_another_protocol_is_refused() {
    let server = server().await;
    let addr = server.c2s_tls.expect("direct TLS listener");
    let refused =
        Client::connect_direct_tls(addr, insecure_tls_config_with(&[], BOTH, &[b"h2"])).await;
    let error = refused.err().expect("ALPN h2 only must be refused");
    assert!(
        error.to_string().contains("NoApplicationProtocol"),
        "refused for the ALPN mismatch: {error}"
    );
}

#[tokio::test]
async fn tls_1_2_with_ecdhe_aead_and_tls_1_3_both_work() {
    let server = server().await;
    let tls12 = insecure_tls_config_with(
        &[cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
        &[&TLS12],
        &[XMPP_CLIENT],
    );
    let mut client = server.connect_direct_tls(tls12).await;
    let session = client.tls_session().expect("TLS");
    assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(
        session.negotiated_cipher_suite().map(|s| s.suite()),
        Some(cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.suite())
    );
    login_direct(&mut client, "alice", "tls12").await;

    let tls13 = insecure_tls_config_with(&[], &[&TLS13], &[XMPP_CLIENT]);
    let mut client = server.connect_direct_tls(tls13).await;
    let session = client.tls_session().expect("TLS");
    assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    login_direct(&mut client, "bob", "tls13").await;
}

/// A TLS ClientHello written by hand, since rustls cannot be made to offer TLS 1.1 or
/// non-AEAD suites: `version` is the legacy_version field (no supported_versions extension,
/// so it is the highest version offered, RFC 8446 §4.1.2), with the ECDHE extensions a
/// server needs to pick a modern suite.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    fn vec16(out: &mut Vec<u8>, data: &[u8]) {
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut extensions = Vec::new();
    // supported_groups: x25519, secp256r1.
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed.
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256.
    extensions.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    let suites: Vec<u8> = suites.iter().flat_map(|s| s.to_be_bytes()).collect();
    vec16(&mut body, &suites);
    body.extend_from_slice(&[1, 0]); // null compression only
    vec16(&mut body, &extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    vec16(&mut record, &handshake);
    record
}

/// Whether the server answered `hello` with a ServerHello (accepted) or an alert / a close.
async fn server_accepts(server: &Server, hello: &[u8]) -> bool {
    let addr = server.c2s_tls.expect("direct TLS listener");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(hello).await.expect("send ClientHello");
    let mut head = [0u8; 6];
    match tokio::time::timeout(STEP, stream.read_exact(&mut head)).await {
        Err(_) => panic!("no answer to the ClientHello within {STEP:?}"),
        Ok(Err(_)) => false,
        // A handshake record whose first message is server_hello (2).
        Ok(Ok(_)) => head[0] == 0x16 && head[5] == 2,
    }
}

#[tokio::test]
async fn tls_1_1_and_non_modern_suites_are_refused() {
    let mut server = server().await;
    const ECDHE_ECDSA_AES128_GCM: u16 = 0xc02b;
    // The control: the hand-written hello is good enough for a modern offer, so a refusal
    // below is the policy and not a malformed message.
    assert!(server_accepts(&server, &client_hello(0x0303, &[ECDHE_ECDSA_AES128_GCM])).await);
    // TLS 1.1 at most, even with a suite the server likes.
    assert!(!server_accepts(&server, &client_hello(0x0302, &[ECDHE_ECDSA_AES128_GCM])).await);
    // TLS 1.2 with only non-ECDHE or CBC suites: RSA key exchange with AES-GCM, ECDHE with
    // AES-CBC (ECDSA and RSA), RSA with AES-CBC, RSA with 3DES.
    let weak = [0x009c, 0xc009, 0xc013, 0x002f, 0x000a];
    assert!(!server_accepts(&server, &client_hello(0x0303, &weak)).await);
    assert!(server.is_running());
}

#[tokio::test]
async fn a_plain_xmpp_client_on_the_direct_tls_port_is_closed() {
    let mut server = server().await;
    let addr = server.c2s_tls.expect("direct TLS listener");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(crate::harness::stream_header("localhost").as_bytes())
        .await
        .expect("send a stream header");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(STEP, stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection was not closed within {STEP:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("stream:stream"),
        "no XMPP stream without TLS: {answer:?}"
    );
    assert!(server.is_running());
    let mut client = server
        .connect_direct_tls(insecure_tls_config_with(&[], BOTH, &[XMPP_CLIENT]))
        .await;
    login_direct(&mut client, "alice", "after").await;
}

/// Writes a new self-signed certificate and key for `localhost`; returns the certificate.
fn write_certificate(cert: &Path, key: &Path) -> Vec<u8> {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    std::fs::write(key, pair.signing_key.serialize_pem()).expect("write key");
    std::fs::write(cert, pair.cert.pem()).expect("write certificate");
    pair.cert.der().to_vec()
}

/// The certificate a new direct TLS connection is shown.
async fn presented(server: &Server) -> Vec<u8> {
    let client = server
        .connect_direct_tls(insecure_tls_config_with(&[], BOTH, &[XMPP_CLIENT]))
        .await;
    let session = client.tls_session().expect("TLS");
    session.peer_certificates().expect("server certificate")[0].to_vec()
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_one_is_not_taken() {
    let dir = tempfile::tempdir().expect("certificate directory");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let a = write_certificate(&cert, &key);
    let (cert_env, key_env) = (
        cert.to_str().expect("utf-8 path").to_owned(),
        key.to_str().expect("utf-8 path").to_owned(),
    );
    let mut server = Server::start(
        &[],
        &[
            ("CONFAB__TLS__CERT", cert_env.as_str()),
            ("CONFAB__TLS__KEY", key_env.as_str()),
        ],
    )
    .await;
    assert_eq!(presented(&server).await, a);
    // A session that lives across the reload.
    let mut before = server
        .connect_direct_tls(insecure_tls_config_with(&[], BOTH, &[XMPP_CLIENT]))
        .await;
    login_direct(&mut before, "alice", "before").await;

    let b = write_certificate(&cert, &key);
    assert_ne!(a, b);
    server.signal("HUP").await;
    server.wait_for_log("reloaded the TLS certificate", 1).await;
    assert_eq!(
        presented(&server).await,
        b,
        "direct TLS presents the new certificate"
    );
    let mut starttls = server.connect().await;
    starttls.starttls().await;
    let shown = starttls.tls_session().expect("TLS").peer_certificates();
    assert_eq!(
        shown.expect("certificate")[0].as_ref(),
        b,
        "so does STARTTLS"
    );
    before.sync().await;

    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("break the file");
    server.signal("HUP").await;
    server
        .wait_for_log("TLS certificate reload failed", 1)
        .await;
    assert!(server.is_running());
    assert_eq!(
        presented(&server).await,
        b,
        "a failed reload keeps the certificate"
    );
    before.sync().await;
}

#[tokio::test]
async fn direct_tls_can_be_switched_off() {
    let server = Server::start(&[], &[("CONFAB__C2S__DIRECT_TLS", "false")]).await;
    assert_eq!(server.c2s_tls, None, "no direct TLS listener announced");
    // STARTTLS on the main listener is unaffected.
    let mut client = server.connect().await;
    client.starttls().await;
}
