//! SCRAM credential derivation (RFC 5802 §3, RFC 7677) and password verification.
//!
//! The server stores only `StoredKey` and `ServerKey` per hash, never the password or the
//! `SaltedPassword`, so a leaked database does not directly log anyone in (it still allows
//! an offline dictionary attack and impersonating the server, hence the redacted `Debug`).
//!
//! Password normalization: RFC 5802 §2.2 defines `Normalize()` as SASLprep (RFC 4013) applied
//! as a query string. We apply SASLprep and, when it refuses the password (prohibited or
//! badly ordered bidirectional characters), fall back to the raw UTF-8 bytes rather than
//! refusing the password. Every path in this crate (derivation, PLAIN, password change)
//! uses the same rule, so a password that worked once keeps working. PRECIS OpaqueString
//! (RFC 8265) differs from SASLprep only for non-ASCII input (NFC instead of NFKC); we follow
//! SASLprep because that is what deployed SCRAM clients compute.

use std::borrow::Cow;

use confab_core::store::StoredCredentials;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Default PBKDF2 iteration count: the minimum RFC 5802 §9 and RFC 7677 §4 recommend.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length in bytes; RFC 5802 leaves it open, 16 is NIST SP 800-132's minimum.
pub(crate) const SALT_LEN: usize = 16;

/// The hash function a SCRAM variant runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// Output length in bytes of H() and HMAC().
    pub(crate) fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// HMAC(key, data) from RFC 5802 §2.2.
    pub(crate) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the fallback
        // to an empty output only keeps this function total.
        match self {
            Self::Sha1 => match Hmac::<Sha1>::new_from_slice(key) {
                Ok(mut mac) => {
                    parts.iter().for_each(|part| mac.update(part));
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            Self::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut mac) => {
                    parts.iter().for_each(|part| mac.update(part));
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    /// H(data) from RFC 5802 §2.2.
    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// Hi() from RFC 5802 §2.2, which is PBKDF2 with HMAC as the PRF and dkLen = output_len.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; self.output_len()]);
        match self {
            Self::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            Self::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        }
        out
    }

    /// `(StoredKey, ServerKey)` for a password (RFC 5802 §3).
    fn keys(self, password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>) {
        let salted = self.salted_password(password, salt, iterations);
        let client_key = Zeroizing::new(self.hmac(&salted, &[b"Client Key"]));
        let stored_key = self.hash(&client_key);
        let server_key = self.hmac(&salted, &[b"Server Key"]);
        (stored_key, server_key)
    }

    /// The `(StoredKey, ServerKey)` pair for this hash, if the account has a well-formed one.
    pub(crate) fn stored_keys(self, creds: &StoredCredentials) -> Option<(&[u8], &[u8])> {
        let (stored, server) = match self {
            Self::Sha1 => (&creds.stored_key_sha1, &creds.server_key_sha1),
            Self::Sha256 => (&creds.stored_key_sha256, &creds.server_key_sha256),
        };
        // Rows imported from elsewhere may hold only one variant; a wrong length must not
        // reach the comparison as if it were a real key.
        (stored.len() == self.output_len() && server.len() == self.output_len())
            .then_some((stored.as_slice(), server.as_slice()))
    }
}

/// RFC 5802 §2.2 `Normalize()`; see the module documentation for the fallback rule.
pub(crate) fn normalize_password(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

/// Derives SCRAM-SHA-1 and SCRAM-SHA-256 material for a new password with a fresh random salt.
///
/// An `iterations` of 0 behaves as 1 (PBKDF2 always runs its first round); production
/// callers pass [`DEFAULT_ITERATIONS`] or more.
pub fn derive_credentials(password: &str, iterations: u32) -> StoredCredentials {
    let mut salt = vec![0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    derive_credentials_with_salt(password, salt, iterations)
}

/// Derives credentials with a caller-chosen salt (tests use the RFC example salts).
pub(crate) fn derive_credentials_with_salt(
    password: &str,
    salt: Vec<u8>,
    iterations: u32,
) -> StoredCredentials {
    let iterations = iterations.max(1);
    let password = normalize_password(password);
    let (stored_key_sha1, server_key_sha1) =
        ScramHash::Sha1.keys(password.as_bytes(), &salt, iterations);
    let (stored_key_sha256, server_key_sha256) =
        ScramHash::Sha256.keys(password.as_bytes(), &salt, iterations);
    StoredCredentials {
        salt,
        iterations,
        stored_key_sha1,
        server_key_sha1,
        stored_key_sha256,
        server_key_sha256,
    }
}

/// Whether `password` matches the stored credentials (recomputes PBKDF2; constant-time compare).
///
/// Checks the SHA-256 variant when present, else SHA-1: both come from the same password
/// and salt, so one is enough and halves the PBKDF2 cost of a PLAIN login.
pub fn verify_password(creds: &StoredCredentials, password: &str) -> bool {
    let hash = if ScramHash::Sha256.stored_keys(creds).is_some() {
        ScramHash::Sha256
    } else {
        ScramHash::Sha1
    };
    let Some((stored_key, _)) = hash.stored_keys(creds) else {
        return false;
    };
    let password = normalize_password(password);
    let salted = hash.salted_password(password.as_bytes(), &creds.salt, creds.iterations);
    let client_key = Zeroizing::new(hash.hmac(&salted, &[b"Client Key"]));
    bool::from(hash.hash(&client_key).ct_eq(stored_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_then_verify() {
        let creds = derive_credentials("pencil", 64);
        assert_eq!(creds.iterations, 64);
        assert_eq!(creds.salt.len(), SALT_LEN);
        assert_eq!(creds.stored_key_sha1.len(), 20);
        assert_eq!(creds.server_key_sha1.len(), 20);
        assert_eq!(creds.stored_key_sha256.len(), 32);
        assert_eq!(creds.server_key_sha256.len(), 32);
        assert!(verify_password(&creds, "pencil"));
        assert!(!verify_password(&creds, "pencil "));
        assert!(!verify_password(&creds, ""));
        // Salts are random, so two derivations of one password differ.
        assert_ne!(creds, derive_credentials("pencil", 64));
    }

    #[test]
    fn verify_falls_back_to_sha1_only_rows() {
        let mut creds = derive_credentials("pencil", 16);
        creds.stored_key_sha256.clear();
        creds.server_key_sha256.clear();
        assert!(verify_password(&creds, "pencil"));
        assert!(!verify_password(&creds, "pen"));
        creds.stored_key_sha1.truncate(3);
        assert!(!verify_password(&creds, "pencil"));
    }

    #[test]
    fn saslprep_is_applied_consistently() {
        // RFC 4013 §3 example: SOFT HYPHEN maps to nothing, so "I\u{AD}X" equals "IX".
        let creds = derive_credentials("I\u{AD}X", 16);
        assert!(verify_password(&creds, "IX"));
        // NO-BREAK SPACE maps to SPACE.
        let creds = derive_credentials("a\u{A0}b", 16);
        assert!(verify_password(&creds, "a b"));
        // A password SASLprep refuses (a control character) still round-trips raw.
        let creds = derive_credentials("a\u{7}b", 16);
        assert!(verify_password(&creds, "a\u{7}b"));
        assert!(!verify_password(&creds, "ab"));
    }

    #[test]
    fn debug_redacts_keys() {
        let creds = derive_credentials("pencil", 16);
        let shown = format!("{creds:?}");
        for key in [
            &creds.salt,
            &creds.stored_key_sha1,
            &creds.server_key_sha1,
            &creds.stored_key_sha256,
            &creds.server_key_sha256,
        ] {
            // Neither the decimal list form nor hex of any key byte run may appear.
            assert!(!shown.contains(&format!("{key:?}")), "{shown}");
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!shown.contains(&hex), "{shown}");
        }
        assert!(shown.contains("iterations: 16"), "{shown}");
    }
}
