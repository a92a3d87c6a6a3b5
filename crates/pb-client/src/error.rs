//! The one error type of the client library.

/// What went wrong on a connection, during login or while chatting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed or the server closed the connection without ending the stream.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed or the server name is not valid.
    #[error("TLS: {0}")]
    Tls(String),
    /// The WebSocket handshake or connection failed (boxed: tungstenite's error is large).
    #[error("WebSocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent something this client cannot accept (bad frame, unexpected step).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A frame's announced length is larger than the configured maximum; nothing of it was
    /// buffered.
    #[error("frame of {length} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced length.
        length: u64,
        /// The configured maximum.
        max: usize,
    },
    /// SASL failed: the RFC 6120 §6.5 condition (e.g. `not-authorized`), or a client-side
    /// reason such as a mechanism the server does not offer.
    #[error("authentication failed: {condition}{}", text_suffix(.text))]
    Auth {
        /// The condition name.
        condition: String,
        /// The server's `<text/>`, if any.
        text: Option<String>,
    },
    /// The server ended the stream with an RFC 6120 §4.9 stream error.
    #[error("stream error: {condition}{}", text_suffix(.text))]
    Stream {
        /// The condition name, e.g. `conflict`.
        condition: String,
        /// The server's `<text/>`, if any.
        text: Option<String>,
    },
    /// XEP-0198 resumption was refused (`<failed/>`); the session is gone.
    #[error("resumption failed: {}", .condition.as_deref().unwrap_or("no condition"))]
    ResumeFailed {
        /// The stanza error condition in `<failed/>`, e.g. `item-not-found`.
        condition: Option<String>,
    },
    /// The server answered a sent stanza with a stanza error (RFC 6120 §8.3).
    #[error("stanza rejected: {condition}")]
    Rejected {
        /// The error condition, e.g. `service-unavailable`.
        condition: String,
    },
    /// An expected answer did not arrive in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

fn text_suffix(text: &Option<String>) -> String {
    text.as_ref().map(|t| format!(" ({t})")).unwrap_or_default()
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::WebSocket(Box::new(error))
    }
}

impl From<confab_proto::ConvertError> for Error {
    fn from(error: confab_proto::ConvertError) -> Self {
        Error::Protocol(error.to_string())
    }
}
