//! Protocol errors as values (RFC 6120 §4.9 stream errors, §8.3 stanza errors).
//!
//! Errors here are not Rust failures: they are answers the server owes a peer, so each knows
//! how to become the XML element the RFC prescribes.

use crate::ns;
use minidom::Element;

macro_rules! conditions {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $(#[doc = $text] $variant),+ }

        impl $name {
            /// The element name the RFC defines for this condition.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Looks a condition up by its element name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

conditions! {
    /// RFC 6120 §4.9.3: the defined stream error conditions.
    StreamErrorCondition {
        BadFormat => "bad-format",
        BadNamespacePrefix => "bad-namespace-prefix",
        Conflict => "conflict",
        ConnectionTimeout => "connection-timeout",
        HostGone => "host-gone",
        HostUnknown => "host-unknown",
        ImproperAddressing => "improper-addressing",
        InternalServerError => "internal-server-error",
        InvalidFrom => "invalid-from",
        InvalidNamespace => "invalid-namespace",
        InvalidXml => "invalid-xml",
        NotAuthorized => "not-authorized",
        NotWellFormed => "not-well-formed",
        PolicyViolation => "policy-violation",
        RemoteConnectionFailed => "remote-connection-failed",
        Reset => "reset",
        ResourceConstraint => "resource-constraint",
        RestrictedXml => "restricted-xml",
        SeeOtherHost => "see-other-host",
        SystemShutdown => "system-shutdown",
        UndefinedCondition => "undefined-condition",
        UnsupportedEncoding => "unsupported-encoding",
        UnsupportedFeature => "unsupported-feature",
        UnsupportedStanzaType => "unsupported-stanza-type",
        UnsupportedVersion => "unsupported-version",
    }
}

impl StreamErrorCondition {
    /// Builds `<stream:error>` with this condition and an optional human-readable text
    /// (RFC 6120 §4.9.2).
    pub fn to_element(self, text: Option<&str>) -> Element {
        let mut builder =
            Element::builder("error", ns::STREAM).append(Element::bare(self.as_str(), ns::STREAMS));
        if let Some(text) = text {
            builder = builder.append(Element::builder("text", ns::STREAMS).append(text).build());
        }
        builder.build()
    }
}

conditions! {
    /// RFC 6120 §8.3.3: the defined stanza error conditions.
    StanzaErrorCondition {
        BadRequest => "bad-request",
        Conflict => "conflict",
        FeatureNotImplemented => "feature-not-implemented",
        Forbidden => "forbidden",
        Gone => "gone",
        InternalServerError => "internal-server-error",
        ItemNotFound => "item-not-found",
        JidMalformed => "jid-malformed",
        NotAcceptable => "not-acceptable",
        NotAllowed => "not-allowed",
        NotAuthorized => "not-authorized",
        PolicyViolation => "policy-violation",
        RecipientUnavailable => "recipient-unavailable",
        Redirect => "redirect",
        RegistrationRequired => "registration-required",
        RemoteServerNotFound => "remote-server-not-found",
        RemoteServerTimeout => "remote-server-timeout",
        ResourceConstraint => "resource-constraint",
        ServiceUnavailable => "service-unavailable",
        SubscriptionRequired => "subscription-required",
        UndefinedCondition => "undefined-condition",
        UnexpectedRequest => "unexpected-request",
    }
}

/// RFC 6120 §8.3.2: the error type says what the sender may do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry; the error cannot be remedied.
    Cancel,
    /// Proceed; the condition was only a warning.
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting; the error is temporary.
    Wait,
}

impl StanzaErrorType {
    /// The value of the `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Cancel => "cancel",
            Self::Continue => "continue",
            Self::Modify => "modify",
            Self::Wait => "wait",
        }
    }
}

impl StanzaErrorCondition {
    /// The error type RFC 6120 §8.3.3 gives for this condition in its examples.
    pub fn default_type(self) -> StanzaErrorType {
        use StanzaErrorCondition::*;
        use StanzaErrorType as T;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect => T::Modify,
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => T::Auth,
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => {
                T::Wait
            }
            Conflict
            | FeatureNotImplemented
            | Gone
            | InternalServerError
            | ItemNotFound
            | NotAllowed
            | RemoteServerNotFound
            | ServiceUnavailable
            | UndefinedCondition => T::Cancel,
        }
    }
}

/// A stanza error to be returned to the sender (RFC 6120 §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// What the sender may do next.
    pub kind: StanzaErrorType,
    /// The defined condition.
    pub condition: StanzaErrorCondition,
    /// Optional human-readable description.
    pub text: Option<String>,
    /// Optional application-specific condition element (for example XEP-0191's `<blocked/>`).
    pub app_condition: Option<Element>,
}

impl StanzaError {
    /// An error with the condition's usual type and no text.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        Self {
            kind: condition.default_type(),
            condition,
            text: None,
            app_condition: None,
        }
    }

    /// Adds a human-readable text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Overrides the error type.
    pub fn with_type(mut self, kind: StanzaErrorType) -> Self {
        self.kind = kind;
        self
    }

    /// Adds an application-specific condition element.
    pub fn with_app_condition(mut self, element: Element) -> Self {
        self.app_condition = Some(element);
        self
    }

    /// Builds the `<error/>` child (RFC 6120 §8.3.2).
    pub fn to_element(&self) -> Element {
        let mut builder = Element::builder("error", ns::CLIENT)
            .attr(rxml_name("type"), self.kind.as_str())
            .append(Element::bare(self.condition.as_str(), ns::STANZAS));
        if let Some(text) = &self.text {
            builder = builder.append(
                Element::builder("text", ns::STANZAS)
                    .append(text.as_str())
                    .build(),
            );
        }
        if let Some(app) = &self.app_condition {
            builder = builder.append(app.clone());
        }
        builder.build()
    }

    /// Reads an `<error/>` child back (used by tests and by modules that relay errors).
    pub fn from_element(element: &Element) -> Option<Self> {
        let kind = match element.attr("type")? {
            "auth" => StanzaErrorType::Auth,
            "cancel" => StanzaErrorType::Cancel,
            "continue" => StanzaErrorType::Continue,
            "modify" => StanzaErrorType::Modify,
            "wait" => StanzaErrorType::Wait,
            _ => return None,
        };
        let condition = element
            .children()
            .filter(|child| child.ns() == ns::STANZAS)
            .find_map(|child| StanzaErrorCondition::from_name(child.name()))?;
        let text = element.get_child("text", ns::STANZAS).map(Element::text);
        Some(Self {
            kind,
            condition,
            text,
            app_condition: None,
        })
    }
}

impl From<StanzaErrorCondition> for StanzaError {
    fn from(condition: StanzaErrorCondition) -> Self {
        Self::new(condition)
    }
}

/// Turns an attribute name known at compile time into rxml's checked name type.
///
/// Panics only on a name that is not an XML NCName, which is a programming error caught by
/// every test that builds the element.
pub(crate) fn rxml_name(name: &'static str) -> rxml::NcName {
    #[allow(clippy::expect_used)]
    rxml::NcName::try_from(name).expect("attribute names in Confab are valid NCNames")
}
