//! SCRAM server messages (RFC 5802 §5 and §7, RFC 7677): parsing the client's messages,
//! building the server's, and checking the proof. No state machine here; `sasl` drives it.
//!
//! The `AuthMessage` is built from the messages exactly as they crossed the wire
//! (RFC 5802 §3), so the username is kept both raw (inside `client-first-message-bare`) and
//! normalized (for the account lookup).

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::{DecodePaddingMode, general_purpose};
use confab_core::store::StoredCredentials;
use rand::RngCore;
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::credentials::{DEFAULT_ITERATIONS, SALT_LEN, ScramHash};
use crate::sasl::{SaslFailure, check_authzid, normalize_username};

/// Random bytes in the server's share of the nonce. RFC 5802 §5.1 asks only that it be
/// hard to guess; 24 bytes (192 bits) encode to 32 base64 characters with no padding.
const SERVER_NONCE_LEN: usize = 24;

/// Standard alphabet, padding optional on input: some clients strip `=` from `c=` and `p=`.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The gs2-cbind-flag of RFC 5802 §7.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CbindFlag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports channel binding but believes the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client uses channel binding of that type (only valid for -PLUS).
    Used,
}

/// Decides whether a gs2-cbind-flag is acceptable for the mechanism in use.
///
/// No -PLUS mechanism is offered yet, so `p=` is a protocol violation (RFC 5802 §6: a
/// client selecting a non-PLUS mechanism must not send `p`), and `y` is honest and accepted.
/// Once -PLUS variants are advertised, `y` on a non-PLUS mechanism must become
/// `NotAuthorized` (a downgrade, RFC 5802 §6) and -PLUS mechanisms must require `p=` and
/// append the channel binding data to the expected `c=` value in [`ScramPending`].
fn check_cbind_flag(flag: &CbindFlag) -> Result<(), SaslFailure> {
    match flag {
        CbindFlag::No | CbindFlag::ClientOnly => Ok(()),
        CbindFlag::Used => Err(SaslFailure::MalformedRequest),
    }
}

/// A parsed and validated client-first-message.
pub(crate) struct ClientFirst {
    /// The gs2-header as received, including its trailing comma; echoed in `c=`.
    gs2_header: String,
    /// client-first-message-bare as received; the first part of the AuthMessage.
    bare: String,
    /// The client's nonce.
    client_nonce: String,
    /// The username after nodeprep: the account to look up.
    pub(crate) username: String,
    /// The authzid as a normalized bare JID, if one was given.
    pub(crate) authzid: Option<String>,
}

/// Parses a client-first-message (RFC 5802 §7).
///
/// Syntax errors are `MalformedRequest`; a username that cannot be an XMPP localpart is
/// `NotAuthorized` (no such account can exist); a bad authzid is `InvalidAuthzid`.
pub(crate) fn parse_client_first(message: &[u8]) -> Result<ClientFirst, SaslFailure> {
    use SaslFailure::MalformedRequest;
    let message = std::str::from_utf8(message).map_err(|_| MalformedRequest)?;

    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = message.split_once(',').ok_or(MalformedRequest)?;
    let flag = match flag {
        "n" => CbindFlag::No,
        "y" => CbindFlag::ClientOnly,
        f if f.len() > 2 && f.starts_with("p=") => CbindFlag::Used,
        _ => return Err(MalformedRequest),
    };
    let (authzid, bare) = rest.split_once(',').ok_or(MalformedRequest)?;
    let authzid = match authzid {
        "" => None,
        a => Some(unescape_saslname(
            a.strip_prefix("a=").ok_or(MalformedRequest)?,
        )?),
    };
    let gs2_header = &message[..message.len() - bare.len()];

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut attributes = bare.split(',');
    let username = attributes.next().unwrap_or_default();
    // RFC 5802 §5.1: "m" marks a mandatory extension; we know none, so we must fail.
    if username.starts_with("m=") {
        return Err(MalformedRequest);
    }
    let username = unescape_saslname(username.strip_prefix("n=").ok_or(MalformedRequest)?)?;
    let client_nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(MalformedRequest)?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(is_nonce_char) {
        return Err(MalformedRequest);
    }
    // Optional extensions are ignored, but must at least be well-formed attr-vals.
    if !attributes.all(is_attr_val) {
        return Err(MalformedRequest);
    }
    check_cbind_flag(&flag)?;

    let username = normalize_username(&username).ok_or(SaslFailure::NotAuthorized)?;
    let authzid = authzid
        .map(|authzid| check_authzid(&authzid, &username))
        .transpose()?;
    Ok(ClientFirst {
        gs2_header: gs2_header.to_owned(),
        bare: bare.to_owned(),
        client_nonce: client_nonce.to_owned(),
        username,
        authzid,
    })
}

/// Everything the server keeps between server-first and client-final.
pub(crate) struct ScramPending {
    hash: ScramHash,
    /// c-nonce followed by s-nonce, which client-final must echo exactly.
    nonce: String,
    /// `client-first-message-bare "," server-first-message ","`: the AuthMessage prefix.
    auth_message_prefix: String,
    /// The value `c=` must decode to: the gs2-header (plus cbind-data once -PLUS exists).
    expected_cbind_input: Vec<u8>,
    stored_key: Zeroizing<Vec<u8>>,
    server_key: Zeroizing<Vec<u8>>,
    /// False when the account is unknown or lacks keys for this hash: the exchange runs on
    /// decoy keys and must fail whatever the proof.
    genuine: bool,
    pub(crate) username: String,
    pub(crate) authzid: Option<String>,
}

/// Builds the server-first-message for `first` and the state needed to check client-final.
///
/// `creds` is `None` for an unknown account: RFC 5802 §9 and RFC 6120 §6.4.5 want that
/// indistinguishable from a wrong password, so we answer with a decoy salt that is a keyed
/// hash of the username (stable across attempts, unlike a random one, which would give the
/// game away on a second try) and the default iteration count, then fail at the end.
pub(crate) fn server_first(
    hash: ScramHash,
    first: ClientFirst,
    creds: Option<&StoredCredentials>,
    server_nonce: Option<String>,
) -> (String, ScramPending) {
    let keys = creds.and_then(|c| hash.stored_keys(c).map(|keys| (c, keys)));
    let (salt, iterations, stored_key, server_key, genuine) = match (creds, keys) {
        (_, Some((c, (stored, server)))) => (
            c.salt.clone(),
            c.iterations,
            stored.to_vec(),
            server.to_vec(),
            true,
        ),
        // The account exists but has no usable keys for this hash (e.g. a SHA-1-only row
        // asked for SCRAM-SHA-256): show its real salt so it looks like any account.
        (Some(c), None) => {
            let (stored, server) = decoy_keys(hash, &first.username);
            (c.salt.clone(), c.iterations, stored, server, false)
        }
        (None, None) => {
            let (stored, server) = decoy_keys(hash, &first.username);
            (
                decoy_salt(&first.username),
                DEFAULT_ITERATIONS,
                stored,
                server,
                false,
            )
        }
    };
    let server_nonce = server_nonce.unwrap_or_else(|| {
        let mut bytes = [0u8; SERVER_NONCE_LEN];
        rand::rng().fill_bytes(&mut bytes);
        STANDARD_NO_PAD.encode(bytes)
    });
    let nonce = format!("{}{server_nonce}", first.client_nonce);
    let message = format!(
        "r={nonce},s={},i={iterations}",
        general_purpose::STANDARD.encode(&salt)
    );
    let pending = ScramPending {
        hash,
        nonce,
        auth_message_prefix: format!("{},{message},", first.bare),
        expected_cbind_input: first.gs2_header.into_bytes(),
        stored_key: Zeroizing::new(stored_key),
        server_key: Zeroizing::new(server_key),
        genuine,
        username: first.username,
        authzid: first.authzid,
    };
    (message, pending)
}

/// Checks a client-final-message (RFC 5802 §7); on success returns the server-final-message.
pub(crate) fn client_final(pending: &ScramPending, message: &[u8]) -> Result<String, SaslFailure> {
    use SaslFailure::MalformedRequest;
    let message = std::str::from_utf8(message).map_err(|_| MalformedRequest)?;
    // client-final-message = client-final-message-without-proof "," proof; the proof is
    // always last and base64 contains no comma, so the last ",p=" splits the two.
    let (without_proof, proof) = message.rsplit_once(",p=").ok_or(MalformedRequest)?;
    let mut attributes = without_proof.split(',');
    let cbind = attributes
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(MalformedRequest)?;
    let nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(MalformedRequest)?;
    if !attributes.all(is_attr_val) {
        return Err(MalformedRequest);
    }
    let cbind = LENIENT_B64.decode(cbind).map_err(|_| MalformedRequest)?;
    if cbind != pending.expected_cbind_input {
        return Err(MalformedRequest);
    }
    // A nonce other than ours means a confused client or a replayed message.
    if !bool::from(nonce.as_bytes().ct_eq(pending.nonce.as_bytes())) {
        return Err(MalformedRequest);
    }
    let proof = Zeroizing::new(LENIENT_B64.decode(proof).map_err(|_| MalformedRequest)?);
    if proof.len() != pending.hash.output_len() {
        return Err(MalformedRequest);
    }

    // RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), and the proof
    // is good iff H(ClientKey) = StoredKey. Decoy exchanges do the same work.
    let hash = pending.hash;
    let auth_message = [
        pending.auth_message_prefix.as_bytes(),
        without_proof.as_bytes(),
    ];
    let client_signature = hash.hmac(&pending.stored_key, &auth_message);
    let client_key: Zeroizing<Vec<u8>> = Zeroizing::new(
        proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect(),
    );
    let server_signature = hash.hmac(&pending.server_key, &auth_message);
    let valid =
        hash.hash(&client_key).ct_eq(&pending.stored_key) & Choice::from(u8::from(pending.genuine));
    if bool::from(valid) {
        Ok(format!(
            "v={}",
            general_purpose::STANDARD.encode(server_signature)
        ))
    } else {
        Err(SaslFailure::NotAuthorized)
    }
}

/// Decodes a saslname (RFC 5802 §7): `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn unescape_saslname(name: &str) -> Result<String, SaslFailure> {
    if name.is_empty() || name.contains('\0') {
        return Err(SaslFailure::MalformedRequest);
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        out.push(match rest.get(at + 1..at + 3) {
            Some("2C") => ',',
            Some("3D") => '=',
            _ => return Err(SaslFailure::MalformedRequest),
        });
        rest = rest.get(at + 3..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802 §7 `printable`: any visible ASCII character but the comma.
fn is_nonce_char(byte: u8) -> bool {
    matches!(byte, 0x21..=0x2B | 0x2D..=0x7E)
}

/// RFC 5802 §7 `attr-val = ALPHA "=" value` with a non-empty value.
fn is_attr_val(attribute: &str) -> bool {
    let bytes = attribute.as_bytes();
    bytes.len() > 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'='
}

/// A per-process random key for decoy material, so that decoy salts cannot be precomputed
/// and do not survive a restart.
fn decoy_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    })
}

/// A salt for an unknown username: deterministic per username within this process.
fn decoy_salt(username: &str) -> Vec<u8> {
    let mut salt = ScramHash::Sha256.hmac(decoy_key(), &[b"salt\0", username.as_bytes()]);
    salt.truncate(SALT_LEN);
    salt
}

/// Keys no password derives, used so a decoy exchange costs what a real one does.
fn decoy_keys(hash: ScramHash, username: &str) -> (Vec<u8>, Vec<u8>) {
    let mut stored = ScramHash::Sha256.hmac(decoy_key(), &[b"stored\0", username.as_bytes()]);
    let mut server = ScramHash::Sha256.hmac(decoy_key(), &[b"server\0", username.as_bytes()]);
    stored.truncate(hash.output_len());
    server.truncate(hash.output_len());
    (stored, server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_unescaping() {
        assert_eq!(
            unescape_saslname("a=2Cb=3Dc").ok().as_deref(),
            Some("a,b=c")
        );
        assert_eq!(unescape_saslname("plain").ok().as_deref(), Some("plain"));
        for bad in ["", "a=", "a=2", "a=2c", "a=41", "=", "a\0b", "a=é"] {
            assert_eq!(
                unescape_saslname(bad).err(),
                Some(SaslFailure::MalformedRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decoy_salt_is_stable_per_username() {
        assert_eq!(decoy_salt("romeo"), decoy_salt("romeo"));
        assert_ne!(decoy_salt("romeo"), decoy_salt("juliet"));
        assert_eq!(decoy_salt("romeo").len(), SALT_LEN);
    }
}
