//! A SCRAM-SHA-256 client (RFC 5802, RFC 7677) written for these tests on RustCrypto, so the
//! server's SCRAM is checked against an implementation that shares no code with it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// One client-side SCRAM-SHA-256 exchange without channel binding (`n,,`).
pub struct ScramSha256 {
    password: String,
    client_first_bare: String,
    nonce: String,
    /// The server signature we expect in `v=`, known after the client-final message.
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramSha256 {
    /// Starts an exchange for `username` with a random client nonce.
    pub fn new(username: &str, password: &str) -> Self {
        use rand::Rng as _;
        let bytes: [u8; 18] = rand::rng().random();
        let nonce = B64.encode(bytes);
        // RFC 5802 §5.1: ',' and '=' in a username are escaped.
        let username = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            password: password.to_owned(),
            client_first_bare: format!("n={username},r={nonce}"),
            nonce,
            expected_server_signature: None,
        }
    }

    /// The client-first message (the `<auth/>` initial response).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Answers the server-first message with the client-final message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Vec<u8> {
        let server_first = std::str::from_utf8(server_first).expect("server-first is UTF-8");
        let attr = |name: &str| {
            server_first
                .split(',')
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| panic!("server-first {server_first:?} lacks {name}"))
        };
        let nonce = attr("r=");
        assert!(
            nonce.starts_with(&self.nonce) && nonce.len() > self.nonce.len(),
            "the server nonce extends ours: {server_first:?}"
        );
        let salt = B64.decode(attr("s=")).expect("salt is base64");
        let iterations: u32 = attr("i=").parse().expect("iteration count");
        assert!(iterations >= 4096, "RFC 7677 §4 minimum: {iterations}");

        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let server_key = hmac(&salted, b"Server Key");

        // c= is base64 of the gs2 header "n,," (no channel binding): "biws".
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
    }

    /// Checks the server-final message (`v=…`): the server proves it knows the credentials.
    pub fn verify_server_final(&self, server_final: &[u8]) {
        let server_final = std::str::from_utf8(server_final).expect("server-final is UTF-8");
        let signature = server_final
            .strip_prefix("v=")
            .unwrap_or_else(|| panic!("server-final {server_final:?} is not v=…"));
        let signature = B64.decode(signature).expect("server signature is base64");
        assert_eq!(
            Some(signature),
            self.expected_server_signature,
            "the server signature matches"
        );
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}
