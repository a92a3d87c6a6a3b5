//! XML namespaces Confab speaks, in one place so a typo is a compile error.

/// RFC 6120 §4.8.1: the default namespace of client-to-server streams.
pub const CLIENT: &str = "jabber:client";
/// RFC 6120 §4.8.1: the stream namespace.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 §4.9.3: stream error conditions.
pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3.3: stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 6120 §5: STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6: SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 §7: resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 §3 (legacy session establishment, kept for old clients).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6121 §2: roster management.
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0237: roster versioning stream feature.
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// RFC 6121 §3.4: subscription pre-approval stream feature.
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0030: service discovery info.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: service discovery items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199: XMPP ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0092: software version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0049: private XML storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0054: vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0191: blocking command.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191 §3.5: the application error for a blocked stanza.
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0077: in-band registration.
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077 §9: the stream feature advertising in-band registration.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0160 / XEP-0203: delayed delivery stamp.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0004: data forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0359 unique and stable stanza ids.
pub const SID: &str = "urn:xmpp:sid:0";
