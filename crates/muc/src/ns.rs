//! Namespaces of XEP-0045 and the core ones the room uses, in one place.

pub use confab_core::ns::{CLIENT, DATA_FORMS, DELAY, DISCO_INFO, DISCO_ITEMS, PING, VCARD};

/// XEP-0045 §19.1: the join extension (`<x/>` in presence to a room).
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045 §19.2: occupant information in presence and messages.
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0045 §19.3: moderator and admin use cases.
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// XEP-0045 §19.4: owner use cases.
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0045 §15.5.3: the room configuration form's FORM_TYPE.
pub const MUC_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// XEP-0045 §15.5.4: the room information form's FORM_TYPE.
pub const MUC_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0359: the `<stanza-id/>` a room stamps on what it broadcasts.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0313: message archive management, here on the room's JID.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0425: moderated message retraction, offered by rooms whose archive it amends.
pub const MODERATE: &str = "urn:xmpp:message-moderate:1";
