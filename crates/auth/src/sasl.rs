//! A sans-IO SASL server (RFC 4422) with the XMPP profile of RFC 6120 §6.
//!
//! The caller owns the stream: it base64-decodes `<auth/>` and `<response/>` payloads, feeds
//! the bytes in, and turns each [`SaslStep`] into `<challenge/>`, `<success/>` or
//! `<failure/>`. Looking up an account is async in the caller, so the machine stops with
//! [`SaslStep::NeedCredentials`] and resumes when [`SaslServer::credentials`] is called.
//!
//! Exchange shapes (RFC 6120 §6.4):
//!
//! ```text
//! SCRAM: start(None)   -> Challenge("")        respond(client-first) -> NeedCredentials
//!        start(Some(client-first))             -> NeedCredentials
//!        credentials() -> Challenge(server-first)
//!        respond(client-final) -> Success { additional_data: server-final } | Failure
//! PLAIN: start(None) -> Challenge("")  respond(message) -> NeedCredentials
//!        start(Some(message)) -> NeedCredentials
//!        credentials() -> Success | Failure
//! ```
//!
//! Every failure is final: after a `Failure` or `Success` the machine accepts nothing more,
//! and the client must start a new `<auth/>`. `<abort/>` (RFC 6120 §6.4.4) needs no call
//! into the machine: the caller drops it and answers `SaslFailure::Aborted`.

use confab_core::store::StoredCredentials;
use zeroize::Zeroizing;

use crate::credentials::{ScramHash, verify_password};
use crate::scram::{self, ClientFirst, ScramPending};

/// A SASL mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// PLAIN (RFC 4616); only over TLS or loopback.
    Plain,
}

impl Mechanism {
    /// The IANA-registered mechanism name used in `<mechanism/>` and `<auth mechanism=…/>`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha1 => "SCRAM-SHA-1",
            Self::Plain => "PLAIN",
        }
    }

    /// Looks a mechanism up by its exact registered name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "SCRAM-SHA-256" => Self::ScramSha256,
            "SCRAM-SHA-1" => Self::ScramSha1,
            "PLAIN" => Self::Plain,
            _ => return None,
        })
    }

    /// The hash of a SCRAM mechanism.
    fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Self::ScramSha256 => Some(ScramHash::Sha256),
            Self::ScramSha1 => Some(ScramHash::Sha1),
            Self::Plain => None,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Mechanisms to offer, strongest first; PLAIN only when `plain_allowed` (TLS or loopback).
///
/// RFC 6120 §6.3.3 lets the server order its list by preference; clients pick the first
/// they support, so SCRAM-SHA-256 leads.
pub fn offered(plain_allowed: bool) -> Vec<Mechanism> {
    let mut mechanisms = vec![Mechanism::ScramSha256, Mechanism::ScramSha1];
    if plain_allowed {
        mechanisms.push(Mechanism::Plain);
    }
    mechanisms
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// Send `<challenge/>` with these bytes (the caller base64-encodes; empty means `=`).
    Challenge(Vec<u8>),
    /// Fetch the credentials of this (nodeprep'd) username and call [`SaslServer::credentials`].
    NeedCredentials {
        /// The normalized localpart to look up.
        username: String,
    },
    /// Authentication succeeded: send `<success/>`, with the additional data if any.
    Success {
        /// The authenticated localpart.
        username: String,
        /// The requested authzid as a normalized bare JID; its node equals `username` but the
        /// caller must still check that its domain is the stream's (RFC 6120 §6.3.8).
        authzid: Option<String>,
        /// SCRAM's server-final-message, sent in `<success/>` (RFC 6120 §6.3.10).
        additional_data: Option<Vec<u8>>,
    },
    /// Authentication failed: send `<failure/>` with this condition.
    Failure(SaslFailure),
}

/// The SASL failure conditions of RFC 6120 §6.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslFailure {
    /// `<aborted/>`: the client sent `<abort/>`.
    Aborted,
    /// `<account-disabled/>`: the account is disabled.
    AccountDisabled,
    /// `<credentials-expired/>`: the credentials have expired.
    CredentialsExpired,
    /// `<encryption-required/>`: the mechanism needs TLS first.
    EncryptionRequired,
    /// `<incorrect-encoding/>`: the base64 payload did not decode.
    IncorrectEncoding,
    /// `<invalid-authzid/>`: the authzid is malformed or not allowed.
    InvalidAuthzid,
    /// `<invalid-mechanism/>`: the mechanism is not offered.
    InvalidMechanism,
    /// `<malformed-request/>`: the payload violates the mechanism's syntax.
    MalformedRequest,
    /// `<mechanism-too-weak/>`: a stronger mechanism is required.
    MechanismTooWeak,
    /// `<not-authorized/>`: wrong credentials or unknown account.
    NotAuthorized,
    /// `<temporary-auth-failure/>`: try again later (store down, throttled).
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// The element name RFC 6120 §6.5 defines for this condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::AccountDisabled => "account-disabled",
            Self::CredentialsExpired => "credentials-expired",
            Self::EncryptionRequired => "encryption-required",
            Self::IncorrectEncoding => "incorrect-encoding",
            Self::InvalidAuthzid => "invalid-authzid",
            Self::InvalidMechanism => "invalid-mechanism",
            Self::MalformedRequest => "malformed-request",
            Self::MechanismTooWeak => "mechanism-too-weak",
            Self::NotAuthorized => "not-authorized",
            Self::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl std::fmt::Display for SaslFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalizes a username to the XMPP localpart form (nodeprep, RFC 6122 Appendix A, as the
/// `jid` crate implements it); `None` if it cannot be a localpart.
pub fn normalize_username(username: &str) -> Option<String> {
    jid::NodePart::new(username)
        .ok()
        .map(|node| node.as_str().to_owned())
}

/// Checks a requested authzid against the authenticated localpart and normalizes it.
///
/// A client may only ask to act as its own bare JID (RFC 6120 §6.3.8); the domain is left to
/// the caller, which knows which domain the stream is for.
pub(crate) fn check_authzid(authzid: &str, username: &str) -> Result<String, SaslFailure> {
    let jid = jid::BareJid::new(authzid).map_err(|_| SaslFailure::InvalidAuthzid)?;
    if jid.node().map(|node| node.as_str()) != Some(username) {
        return Err(SaslFailure::InvalidAuthzid);
    }
    Ok(jid.into_inner())
}

/// A parsed PLAIN message waiting for the account's credentials.
struct PlainRequest {
    username: String,
    authzid: Option<String>,
    password: Zeroizing<String>,
}

/// Parses a PLAIN message (RFC 4616 §2): `[authzid] NUL authcid NUL passwd`.
fn parse_plain(message: &[u8]) -> Result<PlainRequest, SaslFailure> {
    use SaslFailure::MalformedRequest;
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MalformedRequest);
    };
    let text = |bytes| std::str::from_utf8(bytes).map_err(|_| MalformedRequest);
    let (authzid, authcid) = (text(authzid)?, text(authcid)?);
    let password = Zeroizing::new(text(password)?.to_owned());
    if authcid.is_empty() || password.is_empty() {
        return Err(MalformedRequest);
    }
    let username = normalize_username(authcid).ok_or(SaslFailure::NotAuthorized)?;
    let authzid = match authzid {
        "" => None,
        authzid => Some(check_authzid(authzid, &username)?),
    };
    Ok(PlainRequest {
        username,
        authzid,
        password,
    })
}

/// Credentials that match no password, checked when PLAIN names an unknown account so that
/// the reply takes as long as a wrong password does.
fn decoy_credentials() -> &'static StoredCredentials {
    static DECOY: std::sync::OnceLock<StoredCredentials> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        crate::credentials::derive_credentials(
            "decoy password never accepted",
            crate::DEFAULT_ITERATIONS,
        )
    })
}

enum State {
    /// SCRAM started without an initial response; the empty challenge has been sent.
    ScramAwaitFirst(ScramHash),
    /// client-first parsed; waiting for the caller's lookup.
    ScramAwaitCredentials(ScramHash, ClientFirst),
    /// server-first sent; waiting for client-final.
    ScramAwaitFinal(Box<ScramPending>),
    /// PLAIN started without an initial response; the empty challenge has been sent.
    PlainAwaitResponse,
    /// PLAIN message parsed; waiting for the caller's lookup.
    PlainAwaitCredentials(PlainRequest),
    /// Succeeded or failed; nothing more is accepted.
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::ScramAwaitFirst(_) => "ScramAwaitFirst",
            Self::ScramAwaitCredentials(..) => "ScramAwaitCredentials",
            Self::ScramAwaitFinal(_) => "ScramAwaitFinal",
            Self::PlainAwaitResponse => "PlainAwaitResponse",
            Self::PlainAwaitCredentials(_) => "PlainAwaitCredentials",
            Self::Done => "Done",
        }
    }
}

/// One SASL exchange on one stream: feed it client messages, act on the returned steps.
pub struct SaslServer {
    state: State,
    /// Replaces the random server nonce so tests can replay the RFC example exchanges.
    fixed_server_nonce: Option<String>,
}

impl std::fmt::Debug for SaslServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // States hold keys and, for PLAIN, a password: show only where we are.
        f.debug_struct("SaslServer")
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl SaslServer {
    /// Starts an exchange for `<auth mechanism=…>`; `initial_response` is `None` when the
    /// element was empty and `Some(b"")` when it held `=` (RFC 6120 §6.4.2).
    pub fn start(mechanism: Mechanism, initial_response: Option<&[u8]>) -> (Self, SaslStep) {
        Self::start_inner(mechanism, initial_response, None)
    }

    fn start_inner(
        mechanism: Mechanism,
        initial_response: Option<&[u8]>,
        fixed_server_nonce: Option<String>,
    ) -> (Self, SaslStep) {
        let mut server = Self {
            state: match mechanism.scram_hash() {
                Some(hash) => State::ScramAwaitFirst(hash),
                None => State::PlainAwaitResponse,
            },
            fixed_server_nonce,
        };
        let step = match initial_response {
            // Both mechanisms are client-first: with no initial response the server sends
            // an empty challenge and the client's first message arrives as a <response/>.
            None => SaslStep::Challenge(Vec::new()),
            Some(response) => server.respond(response),
        };
        (server, step)
    }

    /// Handles a client `<response/>` (already base64-decoded).
    pub fn respond(&mut self, response: &[u8]) -> SaslStep {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ScramAwaitFirst(hash) => match scram::parse_client_first(response) {
                Ok(first) => {
                    let username = first.username.clone();
                    self.state = State::ScramAwaitCredentials(hash, first);
                    SaslStep::NeedCredentials { username }
                }
                Err(failure) => SaslStep::Failure(failure),
            },
            State::ScramAwaitFinal(pending) => match scram::client_final(&pending, response) {
                Ok(server_final) => SaslStep::Success {
                    username: pending.username,
                    authzid: pending.authzid,
                    additional_data: Some(server_final.into_bytes()),
                },
                Err(failure) => SaslStep::Failure(failure),
            },
            State::PlainAwaitResponse => match parse_plain(response) {
                Ok(request) => {
                    let username = request.username.clone();
                    self.state = State::PlainAwaitCredentials(request);
                    SaslStep::NeedCredentials { username }
                }
                Err(failure) => SaslStep::Failure(failure),
            },
            // A <response/> while we owe the next message, or after the outcome, breaks the
            // exchange's turn-taking (RFC 4422 §3.4).
            State::ScramAwaitCredentials(..) | State::PlainAwaitCredentials(_) | State::Done => {
                SaslStep::Failure(SaslFailure::MalformedRequest)
            }
        }
    }

    /// Answers [`SaslStep::NeedCredentials`]: `None` when the account does not exist.
    ///
    /// Called in any other state it is a caller bug; the exchange then ends with
    /// `TemporaryAuthFailure` rather than a panic.
    pub fn credentials(&mut self, creds: Option<StoredCredentials>) -> SaslStep {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ScramAwaitCredentials(hash, first) => {
                let (message, pending) = scram::server_first(
                    hash,
                    first,
                    creds.as_ref(),
                    self.fixed_server_nonce.take(),
                );
                self.state = State::ScramAwaitFinal(Box::new(pending));
                SaslStep::Challenge(message.into_bytes())
            }
            State::PlainAwaitCredentials(request) => {
                let valid = match &creds {
                    Some(creds) => verify_password(creds, &request.password),
                    None => {
                        // Same PBKDF2 cost as a real account, so timing reveals nothing.
                        let _ = verify_password(decoy_credentials(), &request.password);
                        false
                    }
                };
                if valid {
                    SaslStep::Success {
                        username: request.username,
                        authzid: request.authzid,
                        additional_data: None,
                    }
                } else {
                    SaslStep::Failure(SaslFailure::NotAuthorized)
                }
            }
            _ => SaslStep::Failure(SaslFailure::TemporaryAuthFailure),
        }
    }

    /// Whether the exchange has ended (after `Success` or `Failure`).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

#[cfg(test)]
mod tests;
