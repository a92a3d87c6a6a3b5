//! Message recall: retraction (XEP-0424), moderation (XEP-0425) and correction (XEP-0308),
//! applied to the archive.
//!
//! A retraction or a correction is itself a message: it is committed and delivered like any
//! other. Before it is committed, the message it names is amended in the archive
//! ([`ArchiveStore::amend`]): the copy every reader serves (MAM, offline delivery, HTTP
//! history) becomes a tombstone or the corrected message, and the copy it replaces goes to
//! the audit trail, which no user-facing reader serves. Amending first means a retraction
//! the archive refused (window closed, not the sender, already retracted) is never
//! delivered: the sender gets the error instead.
//!
//! # Naming the target
//! XEP-0424 §4 names a one-to-one message by its XEP-0359 origin-id and a group message by
//! the room's stanza-id; XEP-0308 names a message by the id its sender gave it. Confab
//! accepts either in both places: the server id wins, else the client id the editor itself
//! sent the message with ([`ArchiveStore::find_message`]). Both are looked up only within the
//! conversation the edit travels in, so no one reaches into another conversation.
//!
//! # Tombstones
//! XEP-0424 §6 (archives): a retracted message is served as a `<message/>` with the same
//! attributes, its XEP-0359 ids and a `<retracted stamp='…'/>` element instead of its
//! content; a moderated one also says who moderated it and why (XEP-0425 §5).
//!
//! [`ArchiveStore::amend`]: confab_core::archive::ArchiveStore::amend
//! [`ArchiveStore::find_message`]: confab_core::archive::ArchiveStore::find_message

use crate::receipt::{SID, format_stamp};
use confab_core::archive::{AmendKind, Amendment, ArchivedMessage};
use confab_core::stanza::element;
use confab_core::store::{Store, StoreError};
use confab_core::{Element, StanzaError, StanzaErrorCondition, StanzaErrorType, ns};
use std::sync::Arc;
use std::time::Duration;

/// XEP-0424 message retraction (version 0.4 and later).
pub const RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0425 moderated message retraction (version 0.3 and later).
pub const MODERATE: &str = "urn:xmpp:message-moderate:1";
/// XEP-0308 last message correction.
pub const CORRECT: &str = "urn:xmpp:message-correct:0";

/// The longest id a `<retract/>` or `<replace/>` may name: as long as any id we store.
const MAX_TARGET_BYTES: usize = 256;

/// A retraction or correction a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Retraction (`<retract/>`) or correction (`<replace/>`).
    pub kind: AmendKind,
    /// The id it names: a server id or the editor's client id.
    pub target: String,
}

/// The retraction or correction `message` carries, if any. A message with both is taken as
/// a retraction, the stronger of the two.
pub fn edit_of(message: &Element) -> Option<Edit> {
    let mut edit = None;
    for child in message.children() {
        let kind = match child.name() {
            "retract" if child.ns() == RETRACT => AmendKind::Retract,
            "replace" if child.ns() == CORRECT => AmendKind::Correct,
            _ => continue,
        };
        let Some(target) = child
            .attr("id")
            .filter(|id| !id.is_empty() && id.len() <= MAX_TARGET_BYTES)
        else {
            continue;
        };
        edit = Some(Edit {
            kind,
            target: target.to_owned(),
        });
        if kind == AmendKind::Retract {
            break;
        }
    }
    edit
}

/// Why an edit or a moderation was refused; nothing changed in the archive.
#[derive(Debug, thiserror::Error)]
pub enum RecallError {
    /// No message of the conversation has that id (never sent, purged or someone else's).
    #[error("no such message")]
    NotFound,
    /// The message was sent by someone else.
    #[error("only the sender may retract or correct a message")]
    NotSender,
    /// The retraction window (`[archive] retract_window_secs`) has closed.
    #[error("the retraction window has closed")]
    WindowClosed,
    /// The message is already retracted, so it cannot be corrected or moderated.
    #[error("the message was retracted")]
    Retracted,
    /// The archive failed; a resend later may succeed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RecallError {
    /// The stanza error the editor gets.
    pub fn to_stanza_error(&self) -> StanzaError {
        let error = match self {
            Self::NotFound => StanzaError::new(StanzaErrorCondition::ItemNotFound),
            Self::NotSender => StanzaError::new(StanzaErrorCondition::Forbidden),
            Self::WindowClosed | Self::Retracted => {
                StanzaError::new(StanzaErrorCondition::NotAllowed)
            }
            Self::Store(_) => StanzaError::new(StanzaErrorCondition::InternalServerError)
                .with_type(StanzaErrorType::Wait),
        };
        error.with_text(self.to_string())
    }
}

/// Applies edits and moderations to the archive. Shared by one-to-one chat and group chat
/// rooms through the [`MessageLog`](crate::MessageLog).
#[derive(Clone)]
pub struct Recall {
    store: Arc<dyn Store>,
    /// How long after its commit a message may be retracted by its sender; `None` for ever.
    window: Option<Duration>,
}

impl std::fmt::Debug for Recall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recall")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Recall {
    /// Recall over `store`, retractions allowed for `window` after a message's commit.
    pub fn new(store: Arc<dyn Store>, window: Option<Duration>) -> Self {
        Self { store, window }
    }

    /// Applies the edit `message` carries (see [`edit_of`]) from `editor` (a bare JID) in
    /// `conversation`, at `now_ms`, and returns the server id of the message it amended. A
    /// retraction resent after its commit failed finds its own tombstone and succeeds again.
    pub async fn apply(
        &self,
        conversation: &str,
        editor: &str,
        edit: &Edit,
        message: &Element,
        now_ms: i64,
    ) -> Result<String, RecallError> {
        let target = self
            .store
            .find_message(conversation, Some(editor), &edit.target)
            .await?
            .ok_or(RecallError::NotFound)?;
        if target.sender != editor {
            return Err(RecallError::NotSender);
        }
        let original = parse(&target)?;
        let xml = match edit.kind {
            AmendKind::Retract => {
                if let Some(window) = self.window {
                    let age = u128::try_from(now_ms.saturating_sub(target.stamp_ms)).unwrap_or(0);
                    if !window.is_zero() && age > window.as_millis() {
                        return Err(RecallError::WindowClosed);
                    }
                }
                tombstone(&original, now_ms, None)
            }
            AmendKind::Correct => corrected(&original, message),
        };
        let amendment = Amendment {
            server_id: target.server_id,
            kind: edit.kind,
            by: editor.to_owned(),
            stamp_ms: now_ms,
            xml: confab_codec::encode::to_standalone_string(&xml),
        };
        match self.store.amend(&amendment).await {
            Ok(()) => Ok(amendment.server_id),
            Err(StoreError::Conflict) if edit.kind == AmendKind::Retract => Ok(amendment.server_id),
            Err(StoreError::Conflict) => Err(RecallError::Retracted),
            Err(StoreError::NotFound) => Err(RecallError::NotFound),
            Err(error) => Err(error.into()),
        }
    }

    /// XEP-0425: tombstones the message with server id `server_id` of `conversation` on
    /// behalf of `moderator` (a bare JID the caller has checked holds the right), whoever
    /// sent it and however old it is.
    pub async fn moderate(
        &self,
        conversation: &str,
        server_id: &str,
        moderator: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(), RecallError> {
        let target = self
            .store
            .find_message(conversation, None, server_id)
            .await?
            .ok_or(RecallError::NotFound)?;
        let original = parse(&target)?;
        let amendment = Amendment {
            server_id: target.server_id,
            kind: AmendKind::Retract,
            by: moderator.to_owned(),
            stamp_ms: now_ms,
            xml: confab_codec::encode::to_standalone_string(&tombstone(
                &original,
                now_ms,
                Some((moderator, reason)),
            )),
        };
        match self.store.amend(&amendment).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict) => Err(RecallError::Retracted),
            Err(StoreError::NotFound) => Err(RecallError::NotFound),
            Err(error) => Err(error.into()),
        }
    }
}

/// The stored copy as an element; the archive only holds what the server serialized, so a
/// parse failure means a damaged store.
fn parse(message: &ArchivedMessage) -> Result<Element, RecallError> {
    message.xml.parse().map_err(|_| {
        RecallError::Store(StoreError::Unavailable(format!(
            "archived message {} does not parse",
            message.server_id
        )))
    })
}

/// XEP-0424 §6 tombstone of `original`: its attributes and XEP-0359 ids, and a
/// `<retracted/>` stamped `now_ms`, with XEP-0425 `<moderated/>` and `<reason/>` when a
/// moderator retracted it.
pub fn tombstone(
    original: &Element,
    now_ms: i64,
    moderated: Option<(&str, Option<&str>)>,
) -> Element {
    let mut message = original.clone();
    let ids: Vec<Element> = message
        .take_contents_as_children()
        .filter(|child| child.ns() == SID && matches!(child.name(), "stanza-id" | "origin-id"))
        .collect();
    let stamp = format_stamp(now_ms);
    let mut retracted = element("retracted", RETRACT, &[("stamp", stamp.as_str())]);
    if let Some((by, reason)) = moderated {
        retracted.append_child(element("moderated", MODERATE, &[("by", by)]));
        if let Some(reason) = reason {
            let mut text = element("reason", RETRACT, &[]);
            text.append_text(reason);
            retracted.append_child(text);
        }
    }
    message.append_child(retracted);
    for id in ids {
        message.append_child(id);
    }
    message
}

/// `original` with its bodies replaced by the correction's (XEP-0308 §4: the correction
/// carries the full new text); everything else, its ids included, stays as first sent.
pub fn corrected(original: &Element, correction: &Element) -> Element {
    let mut message = original.clone();
    while message.remove_child("body", ns::CLIENT).is_some() {}
    for body in correction
        .children()
        .filter(|child| child.is("body", ns::CLIENT))
    {
        message.append_child(body.clone());
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn edits_are_recognised_by_namespace() {
        let retract = parse(
            "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1' id='m1'/><body>fallback</body></message>",
        );
        assert_eq!(
            edit_of(&retract),
            Some(Edit {
                kind: AmendKind::Retract,
                target: "m1".into()
            })
        );
        let replace = parse(
            "<message xmlns='jabber:client'><body>new</body><replace xmlns='urn:xmpp:message-correct:0' id='m2'/></message>",
        );
        assert_eq!(
            edit_of(&replace),
            Some(Edit {
                kind: AmendKind::Correct,
                target: "m2".into()
            })
        );
        for xml in [
            "<message xmlns='jabber:client'><body>hi</body></message>",
            "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:0' id='m1'/></message>",
            "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1'/></message>",
            "<message xmlns='jabber:client'><replace xmlns='urn:xmpp:message-correct:0' id=''/></message>",
        ] {
            assert_eq!(edit_of(&parse(xml)), None, "{xml}");
        }
    }

    #[test]
    fn tombstones_keep_ids_and_drop_content() {
        let original = parse(
            "<message xmlns='jabber:client' to='b@x' id='m1' type='chat'><body>secret</body>\
             <origin-id xmlns='urn:xmpp:sid:0' id='m1'/><stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='b@x'/></message>",
        );
        let stone = tombstone(&original, 0, None);
        assert_eq!(stone.attr("id"), Some("m1"));
        assert_eq!(stone.attr("to"), Some("b@x"));
        assert!(!stone.has_child("body", ns::CLIENT));
        assert!(stone.has_child("origin-id", SID));
        assert!(stone.has_child("stanza-id", SID));
        let retracted = stone.get_child("retracted", RETRACT).expect("retracted");
        assert_eq!(retracted.attr("stamp"), Some("1970-01-01T00:00:00.000Z"));
        assert!(!retracted.has_child("moderated", MODERATE));

        let moderated = tombstone(&original, 0, Some(("mod@x", Some("spam"))));
        let retracted = moderated
            .get_child("retracted", RETRACT)
            .expect("retracted");
        let by = retracted
            .get_child("moderated", MODERATE)
            .expect("moderated");
        assert_eq!(by.attr("by"), Some("mod@x"));
        assert_eq!(
            retracted.get_child("reason", RETRACT).map(Element::text),
            Some("spam".into())
        );
    }

    #[test]
    fn corrections_replace_only_the_bodies() {
        let original = parse(
            "<message xmlns='jabber:client' id='m1'><body>teh</body><origin-id xmlns='urn:xmpp:sid:0' id='m1'/></message>",
        );
        let correction = parse(
            "<message xmlns='jabber:client' id='m2'><body>the</body><replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>",
        );
        let fixed = corrected(&original, &correction);
        assert_eq!(fixed.attr("id"), Some("m1"));
        let bodies: Vec<String> = fixed
            .children()
            .filter(|c| c.is("body", ns::CLIENT))
            .map(Element::text)
            .collect();
        assert_eq!(bodies, ["the"]);
        assert!(fixed.has_child("origin-id", SID));
        assert!(!fixed.has_child("replace", CORRECT));
    }

    #[test]
    fn refusals_map_to_stanza_errors() {
        let cases = [
            (RecallError::NotFound, StanzaErrorCondition::ItemNotFound),
            (RecallError::NotSender, StanzaErrorCondition::Forbidden),
            (RecallError::WindowClosed, StanzaErrorCondition::NotAllowed),
            (RecallError::Retracted, StanzaErrorCondition::NotAllowed),
        ];
        for (error, condition) in cases {
            assert_eq!(error.to_stanza_error().condition, condition, "{error}");
        }
    }
}
