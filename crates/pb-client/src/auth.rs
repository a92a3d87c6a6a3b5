//! SASL mechanisms (RFC 6120 §6) through the `sasl` crate of the xmpp-rs project.

use sasl::client::Mechanism as _;
use sasl::client::mechanisms::{Plain, Scram};
use sasl::common::scram::{Sha1, Sha256};
use sasl::common::{ChannelBinding, Credentials};

use crate::Error;

/// The SASL mechanism to log in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677), without channel binding.
    #[default]
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802), without channel binding.
    ScramSha1,
    /// PLAIN (RFC 4616): only over TLS or on loopback, where the server offers it.
    Plain,
}

impl Mechanism {
    /// The IANA name, as offered in the features and sent in `<auth/>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism for its IANA name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// A client state machine for `user` and `password`.
    pub(crate) fn start(self, user: &str, password: &str) -> Result<Sasl, Error> {
        // No channel binding: the binding's TLS (when used) ends at the listener, and the
        // server offers no -PLUS variant on it.
        let credentials = Credentials::default()
            .with_username(user)
            .with_password(password)
            .with_channel_binding(ChannelBinding::None);
        let mechanism: Box<dyn sasl::client::Mechanism + Send> = match self {
            Mechanism::ScramSha256 => {
                Box::new(Scram::<Sha256>::from_credentials(credentials).map_err(client_side)?)
            }
            Mechanism::ScramSha1 => {
                Box::new(Scram::<Sha1>::from_credentials(credentials).map_err(client_side)?)
            }
            Mechanism::Plain => {
                Box::new(Plain::from_credentials(credentials).map_err(client_side)?)
            }
        };
        Ok(Sasl(mechanism))
    }
}

/// A running SASL exchange.
pub(crate) struct Sasl(Box<dyn sasl::client::Mechanism + Send>);

impl Sasl {
    /// The initial response sent in `<auth/>`.
    pub(crate) fn initial(&mut self) -> Vec<u8> {
        self.0.initial()
    }

    /// The response to a challenge. SCRAM derives the salted password here (PBKDF2, the
    /// server's iteration count), which takes milliseconds of CPU: it runs on a blocking
    /// thread so other connections on the runtime are not stalled.
    pub(crate) async fn respond(self, challenge: Vec<u8>) -> Result<(Sasl, Vec<u8>), Error> {
        let Sasl(mut mechanism) = self;
        let (mechanism, response) = tokio::task::spawn_blocking(move || {
            let response = mechanism.response(&challenge);
            (mechanism, response)
        })
        .await
        .map_err(|e| Error::Protocol(format!("SASL task: {e}")))?;
        Ok((Sasl(mechanism), response.map_err(client_side)?))
    }

    /// Checks the server's final message (SCRAM's server signature proves the server knows
    /// the password too).
    pub(crate) fn success(&mut self, data: &[u8]) -> Result<(), Error> {
        self.0.success(data).map_err(client_side)
    }
}

fn client_side(error: sasl::client::MechanismError) -> Error {
    Error::Auth {
        condition: "client-side".into(),
        text: Some(error.to_string()),
    }
}
