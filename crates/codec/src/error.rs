//! Why a client stream could not be decoded, and which stream error (RFC 6120 §4.9.3) the
//! server owes the peer for it.

use confab_core::StreamErrorCondition;

/// A fatal problem with the bytes a peer sent; the session answers with
/// [`CodecError::condition`] and closes the stream (RFC 6120 §4.9.1.1: stream errors are
/// unrecoverable).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// A stream header or top-level element grew past `Limits::max_stanza_bytes`.
    #[error("stanza exceeds the limit of {limit} bytes")]
    StanzaTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Elements nested deeper inside one stanza than `Limits::max_depth`.
    #[error("stanza nests elements deeper than {limit} levels")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// One element carries more attributes (namespace declarations included) than
    /// `Limits::max_attributes`.
    #[error("element has more than {limit} attributes")]
    TooManyAttributes {
        /// The configured limit.
        limit: usize,
    },
    /// One stanza (or the stream header) declares more namespaces than
    /// `Limits::max_namespace_decls`.
    #[error("stanza declares more than {limit} namespaces")]
    TooManyNamespaceDecls {
        /// The configured limit.
        limit: usize,
    },
    /// A name or attribute value longer than the parser's token limit; text is split instead,
    /// so only names and attribute values can hit this.
    #[error("name or attribute value longer than {limit} bytes")]
    TokenTooLong {
        /// The token limit in effect.
        limit: usize,
    },
    /// A construct RFC 6120 §11.1 forbids: comment, processing instruction, DTD, or a
    /// reference to an entity other than the five predefined ones.
    #[error("restricted XML: {0}")]
    RestrictedXml(&'static str),
    /// Bytes that are not UTF-8, or an XML declaration naming another encoding
    /// (RFC 6120 §11.6, §4.9.3.22).
    #[error("stream is not UTF-8: {0}")]
    UnsupportedEncoding(rxml::Error),
    /// The bytes are not well-formed (or not namespace-well-formed) XML.
    #[error("not well-formed XML: {0}")]
    NotWellFormed(rxml::Error),
    /// The root element is not `<stream>` qualified by `http://etherx.jabber.org/streams`
    /// (RFC 6120 §4.8.1, §4.9.3.10).
    #[error("stream root is {{{namespace}}}{name}, expected a <stream:stream> header")]
    InvalidStreamRoot {
        /// Namespace of the root element the peer sent.
        namespace: String,
        /// Local name of the root element the peer sent.
        name: String,
    },
    /// The stream header declares a default namespace other than `jabber:client`
    /// (RFC 6120 §4.8.2, §4.8.3).
    #[error("content namespace '{0}' is not jabber:client")]
    InvalidContentNamespace(String),
    /// A prefix that is not declared, or a stream header that puts the stream namespace in the
    /// default namespace instead of behind a prefix (RFC 6120 §4.8.5, §4.9.3.2).
    #[error("bad namespace prefix '{0}'")]
    BadNamespacePrefix(String),
    /// A frame of a message-oriented framing whose varint length prefix is malformed
    /// (longer than 10 bytes or overflowing 64 bits).
    #[error("malformed frame length")]
    BadFrameLength,
    /// A frame that cannot be read as its framing requires (invalid protobuf, an XML
    /// fragment that is not one element, ...).
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// Non-whitespace character data directly inside `<stream:stream>`; only whitespace may
    /// separate first-level elements (RFC 6120 §11.7).
    #[error("character data between stanzas")]
    TextBetweenStanzas,
}

impl CodecError {
    /// The stream error condition RFC 6120 §4.9.3 prescribes for this failure.
    pub fn condition(&self) -> StreamErrorCondition {
        use StreamErrorCondition as C;
        match self {
            // §4.9.3.14: a local service policy (our limits) was violated.
            Self::StanzaTooLarge { .. }
            | Self::TooDeep { .. }
            | Self::TooManyAttributes { .. }
            | Self::TooManyNamespaceDecls { .. }
            | Self::TokenTooLong { .. } => C::PolicyViolation,
            // §4.9.3.18: comments, PIs, DTDs and entity references are restricted XML.
            Self::RestrictedXml(_) => C::RestrictedXml,
            // §4.9.3.22 names "violating the rules of the UTF-8 encoding" explicitly.
            Self::UnsupportedEncoding(_) => C::UnsupportedEncoding,
            Self::NotWellFormed(_) => C::NotWellFormed,
            // §4.9.3.10: wrong stream namespace or unsupported content namespace.
            Self::InvalidStreamRoot { .. } | Self::InvalidContentNamespace(_) => {
                C::InvalidNamespace
            }
            Self::BadNamespacePrefix(_) => C::BadNamespacePrefix,
            // §4.9.3.1: well-formed, but not something a stream can carry.
            Self::TextBetweenStanzas | Self::BadFrameLength | Self::InvalidFrame(_) => C::BadFormat,
        }
    }

    /// Classifies an error from rxml; `token_limit` is the `max_token_length` the parser ran
    /// with, reported back in [`CodecError::TokenTooLong`].
    pub(crate) fn from_rxml(error: rxml::Error, token_limit: usize) -> Self {
        use rxml::Error as E;
        match error {
            // rxml reports over-long names and attribute values (and, never in practice, an
            // event length overflow) as "restricted XML"; they are our size limits at work.
            E::RestrictedXml("long name or reference" | "event too long") => {
                Self::TokenTooLong { limit: token_limit }
            }
            E::RestrictedXml("only utf-8 encoding is allowed") | E::InvalidUtf8Byte(_) => {
                Self::UnsupportedEncoding(error)
            }
            E::RestrictedXml(what) => Self::RestrictedXml(what),
            // rxml raises this when `<!` is followed by anything but `--` or `[CDATA[`: that is
            // a DTD or other markup declaration (`<!DOCTYPE`, `<!ENTITY`, ...), which RFC 6120
            // §11.1 forbids, so the peer gets restricted-xml rather than not-well-formed.
            E::InvalidSyntax("malformed cdata or comment section start") => {
                Self::RestrictedXml("DTD or markup declaration")
            }
            // rxml knows only the five predefined entities, so any other reference is an
            // attempt at a custom entity: RFC 6120 §11.1 restricts those.
            E::UndeclaredEntity => Self::RestrictedXml("entity reference"),
            E::UndeclaredNamespacePrefix(_) => Self::BadNamespacePrefix(String::new()),
            E::ReservedNamespacePrefix => Self::BadNamespacePrefix("xml/xmlns".to_owned()),
            E::ReservedNamespaceName => Self::BadNamespacePrefix("xml/xmlns".to_owned()),
            other => Self::NotWellFormed(other),
        }
    }
}
