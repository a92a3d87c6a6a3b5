//! Registered third-party apps: OAuth-style confidential clients (RFC 6749 §2) that an
//! operator creates with `confab app add` and that authenticate to operator-facing HTTP
//! endpoints such as token introspection (RFC 7662) with a client id and secret.
//!
//! The secret is 256 bits from the operating system's random source, encoded base64url
//! without padding, and shown once when the app is created. The store keeps only the
//! SHA-256 of the decoded bytes, exactly as for IM tokens: a copy of the database
//! authenticates no app. Because the secret is uniformly random, a fast hash is enough;
//! slow password hashing only helps against guessable secrets.
//!
//! [`AppStore`] is the storage port; [`create`] and [`verify`] hold the policy (generation,
//! hashing, constant-time comparison) so every adapter gets it right by construction.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{StoreError, StoreResult};

/// Longest app name, in characters; names are labels for operators, not identifiers.
pub const MAX_NAME_CHARS: usize = 64;

/// Length of an encoded secret: 32 bytes in unpadded base64.
const SECRET_CHARS: usize = 43;

/// A registered app as listed; never includes the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// The public identifier the app authenticates with (RFC 6749 §2.2).
    pub client_id: String,
    /// The operator's label for it.
    pub name: String,
    /// Registration time, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// What [`create`] returns: the app and its secret, which exists nowhere else afterwards.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApp {
    /// The stored app.
    pub app: App,
    /// The client secret (RFC 6749 §2.3.1); show it once and drop it.
    pub secret: String,
}

impl std::fmt::Debug for NewApp {
    // The secret must not end up in a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApp")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// Why an app could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The name is empty, too long or contains control characters.
    #[error("app name must be 1 to {MAX_NAME_CHARS} characters without control characters")]
    InvalidName,
    /// The operating system's random source failed; nothing was stored.
    #[error("no randomness for an app secret: {0}")]
    NoRandomness(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registered apps, keyed by client id; secrets only as SHA-256.
#[async_trait]
pub trait AppStore: Send + Sync {
    /// Stores a new app with its secret hash; `Conflict` if the client id exists already.
    async fn put_app(&self, app: &App, secret_hash: &[u8; 32]) -> StoreResult<()>;
    /// Every app, oldest first.
    async fn list_apps(&self) -> StoreResult<Vec<App>>;
    /// Deletes one app; `NotFound` if there is none with that client id.
    async fn delete_app(&self, client_id: &str) -> StoreResult<()>;
    /// One app and its secret hash, for [`verify`].
    async fn app_secret(&self, client_id: &str) -> StoreResult<Option<(App, [u8; 32])>>;
}

/// Registers an app named `name` at `now_ms`: a fresh client id and a fresh secret.
pub async fn create<S: AppStore + ?Sized>(
    store: &S,
    name: &str,
    now_ms: i64,
) -> Result<NewApp, AppError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(AppError::InvalidName);
    }
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|error| AppError::NoRandomness(error.to_string()))?;
    let (id, secret) = bytes.split_at(16);
    // 128 random bits make collisions negligible, so a `Conflict` here means a broken
    // random source, and failing loudly is right.
    let app = App {
        // Hex, not base64url: an id starting with '-' would read as an option to
        // `confab app del` and to most command-line tools.
        client_id: id.iter().map(|byte| format!("{byte:02x}")).collect(),
        name: name.to_owned(),
        created_ms: now_ms,
    };
    store.put_app(&app, &Sha256::digest(secret).into()).await?;
    Ok(NewApp {
        app,
        secret: URL_SAFE_NO_PAD.encode(secret),
    })
}

/// The app that `client_id` and `secret` authenticate, or `None`.
///
/// The hashes are compared in constant time, and an unknown client id or a malformed
/// secret still costs one hash and one comparison, so response timing tells an attacker
/// neither how much of a secret matched nor (roughly) whether a client id exists.
pub async fn verify<S: AppStore + ?Sized>(
    store: &S,
    client_id: &str,
    secret: &str,
) -> StoreResult<Option<App>> {
    let stored = store.app_secret(client_id).await?;
    let decoded = (secret.len() == SECRET_CHARS)
        .then(|| URL_SAFE_NO_PAD.decode(secret).ok())
        .flatten();
    let presented: [u8; 32] = Sha256::digest(decoded.as_deref().unwrap_or_default()).into();
    let (app, expected) = match stored {
        Some((app, hash)) => (Some(app), hash),
        None => (None, [0u8; 32]),
    };
    let matches: bool = presented.ct_eq(&expected).into();
    Ok(app.filter(|_| matches && decoded.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// An in-memory store, enough to test the policy without an adapter.
    #[derive(Default)]
    struct Memory(Mutex<BTreeMap<String, (App, [u8; 32])>>);

    #[async_trait]
    impl AppStore for Memory {
        async fn put_app(&self, app: &App, secret_hash: &[u8; 32]) -> StoreResult<()> {
            let mut apps = self.0.lock().map_err(|_| StoreError::NotFound)?;
            if apps.contains_key(&app.client_id) {
                return Err(StoreError::Conflict);
            }
            apps.insert(app.client_id.clone(), (app.clone(), *secret_hash));
            Ok(())
        }
        async fn list_apps(&self) -> StoreResult<Vec<App>> {
            let apps = self.0.lock().map_err(|_| StoreError::NotFound)?;
            Ok(apps.values().map(|(app, _)| app.clone()).collect())
        }
        async fn delete_app(&self, client_id: &str) -> StoreResult<()> {
            let mut apps = self.0.lock().map_err(|_| StoreError::NotFound)?;
            apps.remove(client_id).map(drop).ok_or(StoreError::NotFound)
        }
        async fn app_secret(&self, client_id: &str) -> StoreResult<Option<(App, [u8; 32])>> {
            let apps = self.0.lock().map_err(|_| StoreError::NotFound)?;
            Ok(apps.get(client_id).cloned())
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        // The in-memory store never awaits anything, so one poll finishes the future.
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("in-memory store future pending"),
        }
    }

    #[test]
    fn secret_is_256_bits_and_stored_only_hashed() {
        let store = Memory::default();
        let new = block_on(create(&store, " reports ", 5)).expect("create");
        assert_eq!(new.app.name, "reports");
        assert_eq!(new.secret.len(), SECRET_CHARS);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&new.secret).expect("base64").len(),
            32
        );
        let (_, hash) = block_on(store.app_secret(&new.app.client_id))
            .expect("read")
            .expect("stored");
        assert_ne!(&hash[..], new.secret.as_bytes());
        assert!(!format!("{new:?}").contains(&new.secret));
    }

    #[test]
    fn client_ids_are_lowercase_hex() {
        let store = Memory::default();
        for _ in 0..64 {
            let new = block_on(create(&store, "a", 0)).expect("create");
            let id = &new.app.client_id;
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
    }

    #[test]
    fn verify_accepts_only_the_exact_secret() {
        let store = Memory::default();
        let new = block_on(create(&store, "a", 0)).expect("create");
        let id = &new.app.client_id;
        let ok = block_on(verify(&store, id, &new.secret)).expect("verify");
        assert_eq!(ok, Some(new.app.clone()));
        let mut flipped = new.secret.clone().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        for wrong in [flipped.as_str(), "", "short", &new.secret[..42]] {
            assert_eq!(block_on(verify(&store, id, wrong)).expect("verify"), None);
        }
        assert_eq!(
            block_on(verify(&store, "nobody", &new.secret)).expect("verify"),
            None
        );
    }

    #[test]
    fn names_are_checked() {
        let store = Memory::default();
        for bad in ["", "   ", "a\nb", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(matches!(
                block_on(create(&store, bad, 0)),
                Err(AppError::InvalidName)
            ));
        }
        assert!(block_on(create(&store, &"é".repeat(MAX_NAME_CHARS), 0)).is_ok());
    }
}
