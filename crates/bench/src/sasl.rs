//! SASL client side: PLAIN (RFC 4616) and SCRAM-SHA-1/SHA-256 without channel binding
//! (RFC 5802, RFC 7677).
//!
//! SCRAM makes the client compute `SaltedPassword = PBKDF2(password, salt, i)`, the same cost
//! the server pays at registration. A load tool that paid it on every login would measure
//! its own PBKDF2 throughput, so, like real clients (RFC 5802 §5.1 lets them store
//! `SaltedPassword`), it caches the derived keys per (hash, password, salt, iterations):
//! in memory always, and across runs in the file given by `--scram-cache`. The number of
//! derivations actually computed is reported so a reader can tell whether a run was bound by
//! the tool.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The mechanism the tool logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    /// PLAIN: the server derives PBKDF2 on every login (when it stores SCRAM material).
    Plain,
    /// SCRAM-SHA-1.
    #[value(name = "scram-sha-1")]
    ScramSha1,
    /// SCRAM-SHA-256.
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

impl Mechanism {
    /// The IANA name sent in `<auth mechanism='…'>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    fn hash(self) -> Option<Hash> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha1 => Some(Hash::Sha1),
            Mechanism::ScramSha256 => Some(Hash::Sha256),
        }
    }
}

/// The initial response for PLAIN: `authzid NUL authcid NUL password`, authzid empty.
pub fn plain_initial(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn tag(self) -> &'static str {
        match self {
            Hash::Sha1 => "sha1",
            Hash::Sha256 => "sha256",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length, so construction cannot fail.
        match self {
            Hash::Sha1 => {
                let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Hash::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut out = vec![0; 20];
                pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt, iterations, &mut out)
                    .expect("HMAC accepts any key length");
                out
            }
            Hash::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, iterations, &mut out)
                    .expect("HMAC accepts any key length");
                out
            }
        }
    }
}

/// What a cached derivation is keyed by.
type CacheKey = (Hash, String, Vec<u8>, u32);

/// Process-wide cache of `SaltedPassword`s, optionally persisted.
struct Cache {
    entries: Mutex<HashMap<CacheKey, Arc<Vec<u8>>>>,
    /// Where new entries are appended, if persistence is on.
    file: Mutex<Option<std::fs::File>>,
    computed: AtomicU64,
    hits: AtomicU64,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache {
        entries: Mutex::new(HashMap::new()),
        file: Mutex::new(None),
        computed: AtomicU64::new(0),
        hits: AtomicU64::new(0),
    })
}

/// Loads the persisted cache from `path` (if it exists) and appends new derivations to it.
///
/// The file holds one `hash<TAB>base64(password)<TAB>base64(salt)<TAB>iterations<TAB>
/// base64(SaltedPassword)` line per derivation. It holds the bench password in the clear:
/// use it only for bench accounts.
pub fn persist_cache(path: &Path) -> anyhow::Result<()> {
    let cache = cache();
    if let Ok(text) = std::fs::read_to_string(path) {
        let mut entries = cache.entries.lock().expect("cache lock");
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let [tag, password, salt, iterations, salted] = fields[..] else {
                continue;
            };
            let hash = match tag {
                "sha1" => Hash::Sha1,
                "sha256" => Hash::Sha256,
                _ => continue,
            };
            let (Ok(password), Ok(salt), Ok(iterations), Ok(salted)) = (
                B64.decode(password),
                B64.decode(salt),
                iterations.parse(),
                B64.decode(salted),
            ) else {
                continue;
            };
            let password = String::from_utf8_lossy(&password).into_owned();
            entries.insert((hash, password, salt, iterations), Arc::new(salted));
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open SCRAM cache {}", PathBuf::from(path).display()))?;
    *cache.file.lock().expect("cache lock") = Some(file);
    Ok(())
}

/// (derivations computed, cache hits) so far in this process.
pub fn cache_stats() -> (u64, u64) {
    let cache = cache();
    (
        cache.computed.load(Ordering::Relaxed),
        cache.hits.load(Ordering::Relaxed),
    )
}

/// Returns `SaltedPassword`, from the cache or by running PBKDF2 on a blocking thread (so a
/// derivation never stalls the other connections on the runtime).
async fn salted_password(
    hash: Hash,
    password: &str,
    salt: Vec<u8>,
    iterations: u32,
) -> Arc<Vec<u8>> {
    let cache = cache();
    let key = (hash, password.to_owned(), salt, iterations);
    if let Some(hit) = cache.entries.lock().expect("cache lock").get(&key) {
        cache.hits.fetch_add(1, Ordering::Relaxed);
        return hit.clone();
    }
    let (pw, salt) = (key.1.clone(), key.2.clone());
    let salted = tokio::task::spawn_blocking(move || {
        Arc::new(hash.salted_password(pw.as_bytes(), &salt, iterations))
    })
    .await
    .expect("PBKDF2 task does not panic");
    cache.computed.fetch_add(1, Ordering::Relaxed);
    if let Some(file) = cache.file.lock().expect("cache lock").as_mut() {
        // One write per line: `--procs` workers append to the same file, and O_APPEND
        // keeps single writes whole. Losing a line only costs a derivation next time.
        let line = format!(
            "{}\t{}\t{}\t{iterations}\t{}\n",
            hash.tag(),
            B64.encode(&key.1),
            B64.encode(&key.2),
            B64.encode(salted.as_slice())
        );
        let _ = file.write_all(line.as_bytes());
    }
    cache
        .entries
        .lock()
        .expect("cache lock")
        .insert(key, salted.clone());
    salted
}

/// One SCRAM exchange, client side.
#[derive(Debug)]
pub struct Scram {
    hash: Hash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// `ServerSignature`, known once the client-final message is built.
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// Starts an exchange for `mechanism` (must be a SCRAM one) with a random nonce.
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> anyhow::Result<Self> {
        let nonce: [u8; 18] = rand::random();
        Self::with_nonce(mechanism, user, password, &B64.encode(nonce))
    }

    fn with_nonce(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        nonce: &str,
    ) -> anyhow::Result<Self> {
        let Some(hash) = mechanism.hash() else {
            bail!("{} is not a SCRAM mechanism", mechanism.name());
        };
        // RFC 5802 §5.1: "=" and "," in the username are escaped.
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Ok(Self {
            hash,
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
            server_signature: None,
        })
    }

    /// The client-first message, with the GS2 header `n,,` (no channel binding, no authzid).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Answers the server-first message with the client-final message.
    pub async fn client_final(&mut self, server_first: &[u8]) -> anyhow::Result<Vec<u8>> {
        let server_first = std::str::from_utf8(server_first).context("server-first not UTF-8")?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(B64.decode(v).context("salt not base64")?),
                Some(("i=", v)) => iterations = Some(v.parse::<u32>().context("bad i=")?),
                Some(("m=", _)) => bail!("server requires a SCRAM extension"),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            bail!("server-first message lacks r, s or i: {server_first}");
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            bail!("server nonce does not extend ours");
        }
        let salted = salted_password(self.hash, &self.password, salt, iterations).await;
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let stored_key = self.hash.digest(&client_key);
        let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        self.server_signature = Some(self.hash.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message (`v=…`): the server proves it knew our credentials.
    pub fn verify_server_final(&self, server_final: &[u8]) -> anyhow::Result<()> {
        let text = std::str::from_utf8(server_final).context("server-final not UTF-8")?;
        if let Some(error) = text.strip_prefix("e=") {
            bail!("server-final error {error}");
        }
        let Some(v) = text.strip_prefix("v=") else {
            bail!("server-final lacks v=");
        };
        let signature = B64.decode(v.trim()).context("v= not base64")?;
        match &self.server_signature {
            Some(expected) if *expected == signature => Ok(()),
            _ => bail!("server signature does not match"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(
        mechanism: Mechanism,
        nonce: &str,
        server_first: &str,
        client_final: &str,
        server_final: &str,
    ) {
        let mut scram = Scram::with_nonce(mechanism, "user", "pencil", nonce).expect("scram");
        assert_eq!(
            scram.client_first(),
            format!("n,,n=user,r={nonce}").into_bytes()
        );
        let answer = scram
            .client_final(server_first.as_bytes())
            .await
            .expect("valid server-first");
        assert_eq!(String::from_utf8(answer).expect("utf8"), client_final);
        scram
            .verify_server_final(server_final.as_bytes())
            .expect("server signature");
        assert!(scram.verify_server_final(b"v=AAAA").is_err());
    }

    #[tokio::test]
    async fn rfc5802_sha1_vector() {
        exchange(
            Mechanism::ScramSha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        )
        .await;
    }

    #[tokio::test]
    async fn rfc7677_sha256_vector() {
        exchange(
            Mechanism::ScramSha256,
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,\
             i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        )
        .await;
    }

    #[tokio::test]
    async fn rejects_a_nonce_the_server_did_not_extend() {
        let mut scram = Scram::with_nonce(Mechanism::ScramSha256, "u", "p", "abc").expect("ok");
        assert!(scram.client_final(b"r=xyz1,s=AAAA,i=4096").await.is_err());
        assert!(scram.client_final(b"r=abc,s=AAAA,i=4096").await.is_err());
    }

    #[test]
    fn usernames_are_escaped() {
        let scram = Scram::with_nonce(Mechanism::ScramSha1, "a=b,c", "p", "n").expect("ok");
        assert_eq!(scram.client_first(), b"n,,n=a=3Db=2Cc,r=n".to_vec());
    }
}
