//! Features plugged into the router's hooks (see `confab_router::Module`).
//!
//! Each file is one feature and one XEP or RFC section; none is known to the router by name.
//! **Architecture invariant:** modules reach storage only through `confab_core::store`
//! traits and sessions only through the router, never through a socket.

pub mod blocking;
pub mod carbons;
pub mod disco;
pub mod markers;
pub mod offline;
pub mod ping;
pub mod presence;
pub mod private;
pub mod register;
pub mod roster;
pub mod token;
pub mod vcard;
pub mod version;

use confab_core::store::StoreError;
use confab_core::{StanzaError, StanzaErrorCondition};
use confab_router::Module;
use std::sync::Arc;

/// Switches for the default feature set.
#[derive(Debug, Clone)]
pub struct ModuleOptions {
    /// Whether XEP-0077 in-band registration of new accounts is open.
    pub registration_open: bool,
    /// PBKDF2 iterations for credentials created by registration or password change.
    pub scram_iterations: u32,
}

/// The IM core's features, in hook order: blocking filters before anything else sees a
/// stanza; roster and presence before offline storage decides a message is undeliverable;
/// carbons after everything that may still drop a message.
pub fn default_modules(options: &ModuleOptions) -> Vec<Arc<dyn Module>> {
    modules_with_log(options, Vec::new())
}

/// The default features with `log` (the message log and its companions, which this crate
/// cannot name) in the one place committing belongs: after blocking, roster and presence
/// had their say (a blocked message is never archived) and before offline storage, which
/// then keeps the committed message with its stanza-id.
pub fn modules_with_log(
    options: &ModuleOptions,
    log: Vec<Arc<dyn Module>>,
) -> Vec<Arc<dyn Module>> {
    let mut modules: Vec<Arc<dyn Module>> = vec![
        Arc::new(blocking::Blocking::new()),
        Arc::new(roster::Roster::new()),
        Arc::new(presence::Presence::new()),
    ];
    modules.extend(log);
    let rest: [Arc<dyn Module>; 10] = [
        Arc::new(offline::Offline::new()),
        Arc::new(disco::Disco::new()),
        Arc::new(ping::Ping::new()),
        Arc::new(version::Version::new()),
        Arc::new(private::PrivateStorage::new()),
        Arc::new(vcard::VCard::new()),
        Arc::new(register::Registration::new(
            options.registration_open,
            options.scram_iterations,
        )),
        // Read state records markers at `on_inbound`, on the sender's path.
        Arc::new(markers::ReadState::new()),
        // Carbons copy at `on_routed` and must run after the message log, so copies carry the stanza-id and resends the log
        // swallows are not copied; last, so nothing after it drops a copied message.
        Arc::new(carbons::Carbons::new()),
        Arc::new(token::ImToken::default()),
    ];
    modules.extend(rest);
    modules
}

/// Maps a storage failure to the error a client sees; details stay in the log.
pub(crate) fn store_error(error: StoreError) -> StanzaError {
    match error {
        StoreError::Quota(what) => StanzaError::new(StanzaErrorCondition::ResourceConstraint)
            .with_text(format!("quota exceeded: {what}")),
        error => {
            tracing::warn!(%error, "storage failed");
            StanzaError::new(StanzaErrorCondition::InternalServerError)
        }
    }
}
