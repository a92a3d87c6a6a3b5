//! Who a group message mentions (docs/protocol/confab-groups.md, "Mentions"): the members it
//! names, so their group conversation shows a mention until they read past it, even when
//! they were offline.
//!
//! Rules, in this order:
//! - XEP-0372 references: every `<reference xmlns='urn:xmpp:reference:0' type='mention'
//!   uri='xmpp:…'/>` child of the message names an account (`xmpp:user@domain`) or an
//!   occupant (`xmpp:room@service/nick`, resolved to the occupant's account). `begin`/`end`
//!   only say where the mention sits in the body and change nothing here.
//! - The plain-text fallback, only when the message carries no mention reference (a client
//!   that sends references has said exactly whom it means): each `@word` in the body that
//!   starts the body or follows whitespace, where the word runs to the next whitespace and
//!   loses trailing `, . : ; ! ? )`. It matches, first, the nick of a current occupant
//!   (exactly, then ignoring case), and otherwise the localpart of a member (ignoring case).
//!   Nicks with spaces can only be mentioned through references.
//!
//! Only members (affiliation member and up) other than the sender are flagged: nobody else
//! has the group conversation.
//!
//! Sans-IO: the caller passes the room's lookups, so the rules are tested as plain functions.

use crate::model::Affiliation;
use crate::room::Room;
use confab_core::{BareJid, Element, Jid};
use std::collections::BTreeSet;

/// XEP-0372 references.
pub const REFERENCE: &str = "urn:xmpp:reference:0";

/// Most mentions one message may flag: more is a broadcast, not a mention, and bounds the
/// writes one message causes.
pub const MAX_MENTIONS: usize = 100;

/// Most `@words` of one body looked up: each may walk the room's members.
const MAX_AT_WORDS: usize = 20;

/// The room's view the rules need.
pub trait Roster {
    /// Whether `jid` is a member, admin or owner.
    fn is_member(&self, jid: &BareJid) -> bool;
    /// The account of the occupant with nick `nick`, exact match first, then ignoring case.
    fn occupant(&self, nick: &str) -> Option<BareJid>;
    /// The member whose localpart is `local`, ignoring case.
    fn member_by_localpart(&self, local: &str) -> Option<BareJid>;
}

impl Roster for Room {
    fn is_member(&self, jid: &BareJid) -> bool {
        self.affiliation_of(jid) >= Affiliation::Member
    }

    fn occupant(&self, nick: &str) -> Option<BareJid> {
        self.occupant_account(nick).cloned()
    }

    fn member_by_localpart(&self, local: &str) -> Option<BareJid> {
        let local = local.to_lowercase();
        self.members()
            .map(|(jid, _)| jid)
            .find(|jid| {
                jid.node()
                    .is_some_and(|n| n.as_str().to_lowercase() == local)
            })
            .cloned()
    }
}

/// The members `message` (a groupchat message to `room`) mentions, without `sender`, sorted
/// and at most [`MAX_MENTIONS`].
pub fn mentioned(
    message: &Element,
    room: &BareJid,
    sender: &BareJid,
    roster: &impl Roster,
) -> Vec<BareJid> {
    let mut found = BTreeSet::new();
    let references: Vec<&str> = message
        .children()
        .filter(|c| c.is("reference", REFERENCE) && c.attr("type") == Some("mention"))
        .filter_map(|c| c.attr("uri"))
        .collect();
    if references.is_empty() {
        let body = message
            .children()
            .find(|c| c.name() == "body")
            .map(Element::text)
            .unwrap_or_default();
        for nick in at_words(&body).take(MAX_AT_WORDS) {
            let account = roster
                .occupant(nick)
                .or_else(|| roster.member_by_localpart(nick));
            found.extend(account);
        }
    } else {
        for uri in references {
            found.extend(reference_account(uri, room, roster));
        }
    }
    found
        .into_iter()
        .filter(|jid| jid != sender && roster.is_member(jid))
        .take(MAX_MENTIONS)
        .collect()
}

/// The account an `xmpp:` URI names: itself, or for an occupant JID of `room` the
/// occupant's account. The query and fragment (RFC 5122 §2) are dropped.
fn reference_account(uri: &str, room: &BareJid, roster: &impl Roster) -> Option<BareJid> {
    let rest = uri.strip_prefix("xmpp:")?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let jid = Jid::new(rest).ok()?;
    if jid.to_bare() == *room {
        return roster.occupant(jid.resource()?.as_str());
    }
    Some(jid.to_bare())
}

/// The words after an `@` that starts the text or follows whitespace.
fn at_words(body: &str) -> impl Iterator<Item = &str> {
    body.split_whitespace().filter_map(|word| {
        let word = word.strip_prefix('@')?;
        let word = word.trim_end_matches([',', '.', ':', ';', '!', '?', ')']);
        (!word.is_empty()).then_some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A room with occupants by nick and members.
    struct Fake {
        occupants: HashMap<&'static str, &'static str>,
        members: Vec<&'static str>,
    }

    impl Roster for Fake {
        fn is_member(&self, jid: &BareJid) -> bool {
            self.members.contains(&jid.as_str())
        }
        fn occupant(&self, nick: &str) -> Option<BareJid> {
            let exact = self.occupants.get(nick);
            let any = || {
                self.occupants
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(nick))
                    .map(|(_, j)| j)
            };
            exact.or_else(any).and_then(|j| BareJid::new(j).ok())
        }
        fn member_by_localpart(&self, local: &str) -> Option<BareJid> {
            self.members
                .iter()
                .filter_map(|m| BareJid::new(m).ok())
                .find(|m| {
                    m.node()
                        .is_some_and(|n| n.as_str().eq_ignore_ascii_case(local))
                })
        }
    }

    fn fake() -> Fake {
        Fake {
            occupants: HashMap::from([("Bobby", "bob@x"), ("guest", "guest@y")]),
            members: vec!["alice@x", "bob@x", "carol@x"],
        }
    }

    fn check(xml: &str, expect: &[&str]) {
        let message: Element = xml.parse().expect("test xml");
        let room = BareJid::new("room@conf.x").expect("room");
        let sender = BareJid::new("alice@x").expect("sender");
        let got: Vec<String> = mentioned(&message, &room, &sender, &fake())
            .into_iter()
            .map(|j| j.to_string())
            .collect();
        assert_eq!(got, expect, "{xml}");
    }

    #[test]
    fn references_name_members() {
        check(
            "<message xmlns='jabber:client'><body>hi Carol</body>\
             <reference xmlns='urn:xmpp:reference:0' type='mention' begin='3' end='8' uri='xmpp:carol@x'/></message>",
            &["carol@x"],
        );
        // An occupant JID resolves to its account; other reference types mention nobody.
        check(
            "<message xmlns='jabber:client'><body>x</body>\
             <reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:room@conf.x/Bobby'/>\
             <reference xmlns='urn:xmpp:reference:0' type='data' uri='xmpp:carol@x'/></message>",
            &["bob@x"],
        );
        // With references, the body's @words are not read.
        check(
            "<message xmlns='jabber:client'><body>@bob</body>\
             <reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:carol@x?message'/></message>",
            &["carol@x"],
        );
    }

    #[test]
    fn at_nick_fallback() {
        check(
            "<message xmlns='jabber:client'><body>@bobby, @Carol: see mail@carol</body></message>",
            &["bob@x", "carol@x"],
        );
        // Not a member, the sender, nobody, or no word.
        check(
            "<message xmlns='jabber:client'><body>@guest @alice @nobody @ (@carol)</body></message>",
            &[],
        );
    }
}
