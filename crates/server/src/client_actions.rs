//! The client API's write side over the router: what `POST /api/v1/messages` and
//! `POST /api/v1/read` do, as the session the caller's IM token is bound to.

use async_trait::async_trait;
use confab_core::archive::{direct_conversation, group_conversation, new_server_id};
use confab_core::stanza::element;
use confab_core::{BareJid, Element, FullJid, Jid, Stanza, ns};
use confab_http::api::Caller;
use confab_http::api::groups::{
    CreateGroup, GroupActionError, GroupDetail, GroupEntry, GroupMember, GroupPatch,
};
use confab_http::api::send::{ActionError, ClientActions, ReadState, SendRequest, SentMessage};
use confab_log::{CommitOutcome, capture_commit};
use confab_modules::markers::{advance_group_read_position, advance_read_position};
use confab_muc::GroupError;
use confab_muc::model::Affiliation;
use confab_router::Router;
use confab_sessions::Resource;
use std::sync::Arc;

/// XEP-0184 message delivery receipts.
const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0333 chat markers.
const MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0359 unique and stable stanza ids.
const SID: &str = "urn:xmpp:sid:0";

/// [`ClientActions`] through the router, so API messages take the stream's path.
pub struct RouterActions {
    router: Arc<Router>,
    /// The conference service, for group history authorisation; `None` when MUC is off.
    groups: Option<Arc<confab_muc::Muc>>,
}

impl RouterActions {
    /// Acts through `router`.
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            router,
            groups: None,
        }
    }

    /// Answers group history authorisation through the conference service's rooms.
    pub fn with_groups(mut self, groups: Option<Arc<confab_muc::Muc>>) -> Self {
        self.groups = groups;
        self
    }

    /// The live session the caller's token is bound to: the same full JID and the same
    /// session, not a later one that took over the resource.
    fn session(&self, caller: &Caller) -> Result<Arc<Resource>, ActionError> {
        let full: FullJid = caller
            .token
            .full_jid
            .parse()
            .map_err(|_| ActionError::SessionGone)?;
        self.router
            .sessions
            .get(&full)
            .filter(|resource| resource.id == caller.token.session)
            .ok_or(ActionError::SessionGone)
    }

    /// The conference service, or `Disabled` when MUC is off.
    fn muc(&self) -> Result<&confab_muc::Muc, GroupActionError> {
        self.groups.as_deref().ok_or(GroupActionError::Disabled)
    }

    /// Errors unless every one of `members` is an account of this server.
    async fn check_members(&self, members: &[BareJid]) -> Result<(), GroupActionError> {
        for member in members {
            match self.check_recipient(member).await {
                Ok(()) => {}
                Err(ActionError::Storage(error)) => return Err(error.into()),
                Err(_) => return Err(GroupActionError::NoSuchAccount(member.to_string())),
            }
        }
        Ok(())
    }

    /// Errors unless `to` is an account of this server.
    async fn check_recipient(&self, to: &BareJid) -> Result<(), ActionError> {
        let missing = || ActionError::NoSuchAccount(to.to_string());
        if !self.router.is_local_account(&Jid::from(to.clone())) {
            return Err(missing());
        }
        let node = to.node().ok_or_else(missing)?;
        if self.router.store.account_exists(node.as_str()).await? {
            Ok(())
        } else {
            Err(missing())
        }
    }
}

/// The API's view of the conference service's refusal.
fn group_error(error: GroupError) -> GroupActionError {
    match error {
        GroupError::NotFound => GroupActionError::NotFound,
        GroupError::Forbidden => GroupActionError::Forbidden,
        GroupError::LastOwner => GroupActionError::LastOwner,
        GroupError::Invalid(message) => GroupActionError::Invalid(message),
        GroupError::Store(error) => GroupActionError::Storage(error),
    }
}

/// The `<message/>` a request stands for, as the session's client would have sent it.
fn message(from: &FullJid, to: &BareJid, id: &str, request: &SendRequest) -> Element {
    let mut message = element(
        "message",
        ns::CLIENT,
        &[
            ("type", "chat"),
            ("id", id),
            ("from", from.as_str()),
            ("to", to.as_str()),
        ],
    );
    let mut body = Element::bare("body", ns::CLIENT);
    body.append_text_node(request.body.as_str());
    message.append_child(body);
    if let Some(thread) = &request.thread {
        let mut node = Element::bare("thread", ns::CLIENT);
        node.append_text_node(thread.as_str());
        message.append_child(node);
    }
    if request.request_receipt {
        message.append_child(Element::bare("request", RECEIPTS));
    }
    if request.markable {
        message.append_child(Element::bare("markable", MARKERS));
    }
    // XEP-0359 §3.1: the id recipients and the log recognise the message by.
    message.append_child(element("origin-id", SID, &[("id", id)]));
    message
}

#[async_trait]
impl ClientActions for RouterActions {
    async fn may_read_group(&self, caller: &Caller, room: &BareJid) -> Option<bool> {
        self.groups
            .as_ref()?
            .may_read_archive(room, &caller.owner)
            .await
    }

    async fn create_group(
        &self,
        caller: &Caller,
        request: CreateGroup,
        members: Vec<BareJid>,
    ) -> Result<String, GroupActionError> {
        let muc = self.muc()?;
        self.check_members(&members).await?;
        let group = confab_muc::NewGroup {
            name: request.name,
            members,
            avatar: request.avatar.unwrap_or_default(),
            announcement: request.announcement.unwrap_or_default(),
        };
        let jid = muc
            .create_group(&self.router, &caller.owner, group)
            .await
            .map_err(group_error)?;
        Ok(jid.to_string())
    }

    async fn group(
        &self,
        caller: &Caller,
        room: &BareJid,
    ) -> Result<GroupDetail, GroupActionError> {
        let view = self
            .muc()?
            .group(room, &caller.owner)
            .await
            .map_err(group_error)?;
        Ok(GroupDetail {
            group: GroupEntry {
                jid: view.jid.to_string(),
                name: view.config.name,
                avatar: view.config.avatar,
                announcement: view.config.announcement,
                affiliation: view.affiliation.as_str().to_owned(),
                last_seq: 0,
                last_id: None,
            },
            members: view
                .members
                .into_iter()
                .map(|(jid, affiliation)| GroupMember {
                    jid: jid.to_string(),
                    affiliation: affiliation.as_str().to_owned(),
                })
                .collect(),
        })
    }

    async fn update_group(
        &self,
        caller: &Caller,
        room: &BareJid,
        patch: GroupPatch,
    ) -> Result<(), GroupActionError> {
        self.muc()?
            .update_group(
                &self.router,
                &caller.owner,
                room,
                patch.name,
                patch.avatar,
                patch.announcement,
            )
            .await
            .map_err(group_error)
    }

    async fn add_members(
        &self,
        caller: &Caller,
        room: &BareJid,
        members: Vec<BareJid>,
    ) -> Result<(), GroupActionError> {
        let muc = self.muc()?;
        self.check_members(&members).await?;
        for member in &members {
            // Adding never demotes: an admin or owner named again keeps the rank.
            let current = muc
                .group(room, member)
                .await
                .map(|view| view.affiliation)
                .unwrap_or(Affiliation::None);
            if current >= Affiliation::Member {
                continue;
            }
            muc.set_member(
                &self.router,
                &caller.owner,
                room,
                member,
                Affiliation::Member,
            )
            .await
            .map_err(group_error)?;
        }
        Ok(())
    }

    async fn remove_member(
        &self,
        caller: &Caller,
        room: &BareJid,
        member: &BareJid,
    ) -> Result<(), GroupActionError> {
        self.muc()?
            .set_member(&self.router, &caller.owner, room, member, Affiliation::None)
            .await
            .map_err(group_error)
    }

    async fn send_message(
        &self,
        caller: &Caller,
        request: SendRequest,
    ) -> Result<SentMessage, ActionError> {
        let origin = self.session(caller)?;
        let to = BareJid::new(&request.to).map_err(|_| {
            ActionError::Invalid(format!("'to' is not a valid JID: {}", request.to))
        })?;
        self.check_recipient(&to).await?;
        let id = request.id.clone().unwrap_or_else(new_server_id);
        let stanza = Stanza::from_element(message(&origin.jid, &to, &id, &request))
            .map_err(|error| ActionError::Invalid(error.to_string()))?;

        let ((), outcome) = capture_commit(self.router.inbound(&origin, stanza)).await;
        match outcome {
            Some(CommitOutcome::Committed { receipt, duplicate }) => Ok(SentMessage {
                id,
                server_id: receipt.server_id,
                seq: receipt.seq,
                to: to.to_string(),
                stamp_ms: receipt.stamp_ms,
                duplicate,
            }),
            Some(CommitOutcome::Failed(error)) => Err(error.into()),
            // Nothing reached the log: blocking (either side) stopped it; the session got
            // the XEP-0191 error as a stream client would.
            None => Err(ActionError::Refused(
                "the message was blocked and not stored".into(),
            )),
        }
    }

    async fn mark_read(
        &self,
        caller: &Caller,
        with: &BareJid,
        seq: u64,
    ) -> Result<ReadState, ActionError> {
        // A group the caller is a member of (no account of ours): its group conversation.
        let group = !self.router.is_local_account(&with.clone().into())
            && self
                .router
                .store
                .is_group_member(with.as_str(), caller.owner.as_str())
                .await?;
        let conversation = if group {
            group_conversation(with)
        } else {
            direct_conversation(&caller.owner, with)
        };
        let last = self.router.store.last_seq(&conversation).await?;
        if seq > last {
            return Err(ActionError::SeqOutOfRange { seq, last });
        }
        // The device that read needs no push; every other one gets it.
        let except = Some(caller.token.session);
        let position = if group {
            advance_group_read_position(&self.router, &caller.owner, with, seq, except).await?
        } else {
            advance_read_position(&self.router, &caller.owner, with, seq, except).await?
        };
        Ok(ReadState {
            with: with.to_string(),
            seq: position.seq,
            unread: position.unread,
        })
    }
}
