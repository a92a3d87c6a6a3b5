//! XEP-0077 in-band registration: account creation before authentication, and password
//! change and account removal after it.
//!
//! Account creation happens on a stream that has not authenticated, so no router or session
//! is involved: the c2s layer advertises [`stream_feature`] and hands each pre-auth
//! `jabber:iq:register` query to [`register_account`]. After authentication the
//! [`Registration`] module answers the same namespace for the signed-in account.
//!
//! Policy: `open` governs the account lifecycle in band (creating and removing accounts);
//! changing one's own password is always allowed, because a closed server still wants users
//! to rotate passwords without an administrator.
//!
//! Error replies from this module never echo the request: a password change or registration
//! carries a password in clear, and XEP-0077 §3.3 asks servers not to send it back.

use async_trait::async_trait;
use confab_core::stanza::set_attr;
use confab_core::store::{Store, StoreError, StoredCredentials};
use confab_core::{
    BareJid, Element, Stanza, StanzaError, StanzaErrorCondition, StanzaErrorType,
    StreamErrorCondition, ns,
};
use confab_router::{IqOutcome, Module, Router};

/// Instructions shown with the registration form.
const FORM_INSTRUCTIONS: &str = "Choose a username and password to register with this server.";

/// Instructions shown to a signed-in account that asks for its registration.
const REGISTERED_INSTRUCTIONS: &str =
    "You are registered. Send a new password to change it, or <remove/> to delete the account.";

/// Answers `jabber:iq:register` for authenticated accounts: password change and removal.
#[derive(Debug)]
pub struct Registration {
    /// Whether accounts may be created and removed in band.
    open: bool,
    /// PBKDF2 iterations for credentials derived from a new password.
    scram_iterations: u32,
}

impl Registration {
    /// Creates the module; `open` allows in-band account removal as it allows creation.
    pub fn new(open: bool, scram_iterations: u32) -> Self {
        Self {
            open,
            scram_iterations,
        }
    }

    /// Computes the answer; an `Err` is sent back without the request payload.
    async fn answer(&self, router: &Router, iq: &Stanza) -> Result<IqOutcome, StanzaError> {
        let account = addressed_account(router, iq).ok_or(StanzaErrorCondition::Forbidden)?;
        let username = account
            .node()
            .map(|node| node.as_str().to_owned())
            .ok_or(StanzaErrorCondition::Forbidden)?;
        let query = iq
            .payload()
            .filter(|payload| payload.name() == "query")
            .ok_or(StanzaErrorCondition::BadRequest)?;
        match iq.type_attr() {
            // XEP-0077 §3.1: a registered entity gets <registered/> and its data on file.
            Some("get") => Ok(IqOutcome::Result(Some(registered_query(&username)))),
            Some("set") if query.has_child("remove", ns::REGISTER) => {
                self.remove(router, iq, &account, &username, query).await
            }
            Some("set") => {
                self.change_password(router, &account, &username, query)
                    .await
            }
            _ => Err(StanzaErrorCondition::BadRequest.into()),
        }
    }

    /// XEP-0077 §3.2: deletes the account, answers, then closes every session of it with
    /// `<not-authorized/>`.
    async fn remove(
        &self,
        router: &Router,
        iq: &Stanza,
        account: &BareJid,
        username: &str,
        query: &Element,
    ) -> Result<IqOutcome, StanzaError> {
        if !self.open {
            return Err(StanzaErrorCondition::NotAllowed.into());
        }
        // XEP-0077 §3.2: <remove/> must be the only child.
        if query.children().count() != 1 {
            return Err(StanzaErrorCondition::BadRequest.into());
        }
        match router.store.delete_account(username).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                return Err(StanzaErrorCondition::RegistrationRequired.into());
            }
            Err(error) => return Err(internal(&error)),
        }
        // The result goes out before the kick so the requesting client learns the removal
        // succeeded before its stream is closed.
        router.route(iq.iq_result(None)).await;
        for resource in router.sessions.resources(account) {
            resource.kick(StreamErrorCondition::NotAuthorized, "account removed");
        }
        tracing::info!(username, "account removed in band");
        Ok(IqOutcome::Replied)
    }

    /// XEP-0077 §3.3: replaces the account's credentials with ones derived from the new
    /// password.
    async fn change_password(
        &self,
        router: &Router,
        account: &BareJid,
        username: &str,
        query: &Element,
    ) -> Result<IqOutcome, StanzaError> {
        let (Some(named), Some(password)) = (
            query.get_child("username", ns::REGISTER),
            query.get_child("password", ns::REGISTER),
        ) else {
            // XEP-0077 §3.3: an incomplete request is a bad request.
            return Err(StanzaErrorCondition::BadRequest.into());
        };
        if !names_account(&named.text(), account) {
            return Err(StanzaError::new(StanzaErrorCondition::Forbidden)
                .with_text("only your own password can be changed"));
        }
        let password = password.text();
        // XEP-0077 §3.3: an empty password must never replace the current one.
        if password.is_empty() {
            return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
                .with_text("the password must not be empty"));
        }
        let credentials = derive(password, self.scram_iterations).await?;
        match router.store.set_credentials(username, &credentials).await {
            Ok(()) => Ok(IqOutcome::Result(None)),
            Err(StoreError::NotFound) => Err(StanzaErrorCondition::RegistrationRequired.into()),
            Err(error) => Err(internal(&error)),
        }
    }
}

#[async_trait]
impl Module for Registration {
    fn name(&self) -> &'static str {
        "register"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[ns::REGISTER]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::REGISTER]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        match self.answer(router, iq).await {
            Ok(outcome) => outcome,
            Err(error) => {
                reply_without_payload(router, iq, &error).await;
                IqOutcome::Replied
            }
        }
    }
}

/// Handles a `jabber:iq:register` query received before authentication, for the c2s layer.
///
/// A query without child elements asks for the form (IQ get) and is answered with
/// `Ok(Some(form))`; any other query is a submission (IQ set), answered with `Ok(None)` once
/// the account exists. The caller replies with `type='error'` on `Err` and must not echo
/// the query, which holds the password.
pub async fn register_account(
    store: &dyn Store,
    open: bool,
    iterations: u32,
    query: &Element,
) -> Result<Option<Element>, StanzaError> {
    // XEP-0077 §3.1: a host that does not offer in-band registration says service-unavailable.
    if !open {
        return Err(StanzaErrorCondition::ServiceUnavailable.into());
    }
    if !query.is("query", ns::REGISTER) {
        return Err(StanzaErrorCondition::BadRequest.into());
    }
    if query.children().next().is_none() {
        return Ok(Some(registration_form()));
    }
    // XEP-0077 §3.2: an unauthenticated entity has no registration to cancel.
    if query.has_child("remove", ns::REGISTER) {
        return Err(StanzaError::new(StanzaErrorCondition::UnexpectedRequest)
            .with_type(StanzaErrorType::Cancel));
    }
    let field = |name: &str| query.get_child(name, ns::REGISTER).map(Element::text);
    // XEP-0077 §3.1: missing fields, including an empty password, are not-acceptable.
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_text("username and password are required"));
    };
    if password.is_empty() {
        return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_text("the password must not be empty"));
    }
    // Accounts are keyed by the localpart as SASL normalizes it, so "Bob" and "bob" are one
    // account and the new user can log in under the name they registered.
    let username = confab_auth::normalize_username(&username).ok_or_else(|| {
        StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_text("the username is not a valid JID localpart")
    })?;
    let credentials = derive(password, iterations).await?;
    match store.create_account(&username, &credentials).await {
        Ok(()) => {
            tracing::info!(username, "account registered in band");
            Ok(None)
        }
        Err(StoreError::Conflict) => Err(StanzaErrorCondition::Conflict.into()),
        Err(error) => Err(internal(&error)),
    }
}

/// The stream feature advertising in-band registration (XEP-0077 §8), when it is open.
pub fn stream_feature(open: bool) -> Option<Element> {
    open.then(|| Element::bare("register", ns::REGISTER_FEATURE))
}

/// The blank form a new user fills in (XEP-0077 §3.1).
fn registration_form() -> Element {
    Element::builder("query", ns::REGISTER)
        .append(text_element("instructions", FORM_INSTRUCTIONS))
        .append(Element::bare("username", ns::REGISTER))
        .append(Element::bare("password", ns::REGISTER))
        .build()
}

/// What is on file for a signed-in account; the password field stays empty because only
/// SCRAM material is stored (XEP-0077 §3.1 allows an empty `<password/>`).
fn registered_query(username: &str) -> Element {
    Element::builder("query", ns::REGISTER)
        .append(text_element("instructions", REGISTERED_INSTRUCTIONS))
        .append(Element::bare("registered", ns::REGISTER))
        .append(text_element("username", username))
        .append(Element::bare("password", ns::REGISTER))
        .build()
}

fn text_element(name: &str, text: &str) -> Element {
    Element::builder(name, ns::REGISTER).append(text).build()
}

/// The account the IQ is about: the sender's, when addressed to nobody (RFC 6120 §10.3.3),
/// to the server or to the sender's own bare JID.
fn addressed_account(router: &Router, iq: &Stanza) -> Option<BareJid> {
    let from = iq.from.as_ref()?.to_bare();
    from.node()?;
    match &iq.to {
        None => Some(from),
        Some(to) if router.is_server(to) => Some(from),
        Some(to) if to.resource().is_none() && to.to_bare() == from => Some(from),
        Some(_) => None,
    }
}

/// Whether a `<username/>` names `account`, given either as a localpart (XEP-0077 §3.3) or
/// as a bare JID (as the data-form variant of the same section shows).
fn names_account(named: &str, account: &BareJid) -> bool {
    let Some(node) = account.node() else {
        return false;
    };
    if named.contains('@') {
        return BareJid::new(named).is_ok_and(|named| &named == account);
    }
    confab_auth::normalize_username(named).is_some_and(|named| named == node.as_str())
}

/// Derives SCRAM credentials off the async workers: PBKDF2 with thousands of iterations is
/// milliseconds of CPU, long enough to stall every session sharing the worker thread.
async fn derive(password: String, iterations: u32) -> Result<StoredCredentials, StanzaError> {
    tokio::task::spawn_blocking(move || confab_auth::derive_credentials(&password, iterations))
        .await
        .map_err(|error| {
            tracing::error!(%error, "credential derivation failed");
            StanzaError::new(StanzaErrorCondition::InternalServerError)
        })
}

/// Logs a storage failure and hides its details from the client.
fn internal(error: &StoreError) -> StanzaError {
    tracing::warn!(%error, "registration storage failed");
    StanzaError::new(StanzaErrorCondition::InternalServerError)
}

/// Answers with `type='error'` carrying only the error, never the request (XEP-0077 §3.3).
async fn reply_without_payload(router: &Router, iq: &Stanza, error: &StanzaError) {
    if iq.is_error() {
        return;
    }
    let mut reply = Element::builder("iq", ns::CLIENT)
        .append(error.to_element())
        .build();
    set_attr(&mut reply, "type", Some("error".to_owned()));
    if let Some(id) = iq.id() {
        set_attr(&mut reply, "id", Some(id.to_owned()));
    }
    let mut reply = Stanza::new(reply);
    reply.set_to(iq.from.clone());
    reply.set_from(iq.to.clone());
    router.route(reply).await;
}
