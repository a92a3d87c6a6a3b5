//! The room vocabulary of XEP-0045 §5 (affiliations and roles, with the privileges each
//! carries) and the room configuration of §10.2, with its `muc#roomconfig` data form.

use crate::ns;
use confab_core::Element;
use confab_core::stanza::element;
use serde::{Deserialize, Serialize};

/// A long-lived relation between a bare JID and a room (XEP-0045 §5.2). Ordered by rank, so
/// `a > b` means "a outranks b".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    /// Banned: may not enter.
    Outcast,
    /// No affiliation.
    None,
    /// On the member list.
    Member,
    /// Administrator: manages members and bans, is a moderator when present.
    Admin,
    /// Owner: configures and destroys the room.
    Owner,
}

impl Affiliation {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outcast => "outcast",
            Self::None => "none",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Parses the wire value.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "outcast" => Self::Outcast,
            "none" => Self::None,
            "member" => Self::Member,
            "admin" => Self::Admin,
            "owner" => Self::Owner,
            _ => return None,
        })
    }
}

/// A temporary relation between an occupant and a room, for the length of a visit
/// (XEP-0045 §5.1). Ordered by privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Not in the room (used for the presence of someone leaving or kicked).
    None,
    /// Present but without voice in a moderated room.
    Visitor,
    /// Present with voice.
    Participant,
    /// May kick, grant and revoke voice.
    Moderator,
}

impl Role {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Visitor => "visitor",
            Self::Participant => "participant",
            Self::Moderator => "moderator",
        }
    }

    /// Parses the wire value.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "none" => Self::None,
            "visitor" => Self::Visitor,
            "participant" => Self::Participant,
            "moderator" => Self::Moderator,
            _ => return None,
        })
    }
}

/// Who may see occupants' real JIDs (`muc#roomconfig_whois`, XEP-0045 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Whois {
    /// Semi-anonymous: only moderators.
    #[default]
    Moderators,
    /// Non-anonymous: every occupant.
    Anyone,
}

/// A room's configuration (XEP-0045 §10.2) plus its subject, which persistent rooms keep
/// across restarts too. Serialized as JSON into the room store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    /// `muc#roomconfig_roomname`.
    pub name: String,
    /// `muc#roomconfig_roomdesc`.
    pub description: String,
    /// `muc#roomconfig_persistentroom`: the room outlives its last occupant and a restart.
    pub persistent: bool,
    /// `muc#roomconfig_publicroom`: listed in the service's disco#items.
    pub public: bool,
    /// `muc#roomconfig_membersonly`.
    pub members_only: bool,
    /// `muc#roomconfig_moderatedroom`: only participants and moderators may speak.
    pub moderated: bool,
    /// `muc#roomconfig_passwordprotectedroom`.
    pub password_protected: bool,
    /// `muc#roomconfig_roomsecret`.
    pub secret: String,
    /// `muc#roomconfig_whois`.
    pub whois: Whois,
    /// `muc#roomconfig_maxusers`; 0 means no limit.
    pub max_users: u32,
    /// `muc#roomconfig_changesubject`: participants may change the subject, not only
    /// moderators.
    pub change_subject: bool,
    /// `muc#roomconfig_allowinvites`: any occupant may invite, not only moderators.
    pub allow_invites: bool,
    /// The current subject (§8.1); empty when none was set.
    pub subject: String,
    /// The nick that set the subject, for the `from` of the subject message on join.
    pub subject_by: String,
    /// `muc#roomconfig_confab_group`: a group (docs/protocol/confab-groups.md): members get
    /// every message on all their available resources, joined or not.
    pub group: bool,
    /// `muc#roomconfig_confab_avatar`: the group's avatar URL; empty for none.
    pub avatar: String,
    /// `muc#roomconfig_confab_announcement`: the group's announcement; empty for none.
    pub announcement: String,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password_protected: false,
            secret: String::new(),
            whois: Whois::Moderators,
            max_users: 0,
            change_subject: false,
            allow_invites: false,
            subject: String::new(),
            subject_by: String::new(),
            group: false,
            avatar: String::new(),
            announcement: String::new(),
        }
    }
}

/// Why a submitted configuration form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A field held a value its type does not allow.
    #[error("invalid value for {0}")]
    InvalidValue(String),
}

/// Field `var`s of the `muc#roomconfig` form (XEP-0045 §15.5.3).
mod field {
    pub const NAME: &str = "muc#roomconfig_roomname";
    pub const DESC: &str = "muc#roomconfig_roomdesc";
    pub const PERSISTENT: &str = "muc#roomconfig_persistentroom";
    pub const PUBLIC: &str = "muc#roomconfig_publicroom";
    pub const MEMBERS_ONLY: &str = "muc#roomconfig_membersonly";
    pub const MODERATED: &str = "muc#roomconfig_moderatedroom";
    pub const PASSWORD_PROTECTED: &str = "muc#roomconfig_passwordprotectedroom";
    pub const SECRET: &str = "muc#roomconfig_roomsecret";
    pub const WHOIS: &str = "muc#roomconfig_whois";
    pub const MAX_USERS: &str = "muc#roomconfig_maxusers";
    pub const CHANGE_SUBJECT: &str = "muc#roomconfig_changesubject";
    pub const ALLOW_INVITES: &str = "muc#roomconfig_allowinvites";
    pub const GROUP: &str = "muc#roomconfig_confab_group";
    pub const AVATAR: &str = "muc#roomconfig_confab_avatar";
    pub const ANNOUNCEMENT: &str = "muc#roomconfig_confab_announcement";
}

impl RoomConfig {
    /// What a group list shows of the room when it is a group.
    pub fn group_meta(&self) -> Option<confab_core::store::GroupMeta> {
        self.group.then(|| confab_core::store::GroupMeta {
            name: self.name.clone(),
            avatar: self.avatar.clone(),
            announcement: self.announcement.clone(),
        })
    }

    /// Whether a password is required to enter.
    pub fn needs_password(&self) -> bool {
        self.password_protected && !self.secret.is_empty()
    }

    /// The configuration form an owner fills in (XEP-0045 §10.2), with current values.
    pub fn form(&self) -> Element {
        let mut form = element("x", ns::DATA_FORMS, &[("type", "form")]);
        form.append_child(text_child("title", ns::DATA_FORMS, "Room configuration"));
        form.append_child(form_field(
            "FORM_TYPE",
            "hidden",
            None,
            &[ns::MUC_ROOMCONFIG],
        ));
        let bool_value = |b: bool| if b { "1" } else { "0" };
        form.append_child(form_field(
            field::NAME,
            "text-single",
            Some("Room name"),
            &[&self.name],
        ));
        form.append_child(form_field(
            field::DESC,
            "text-single",
            Some("Description"),
            &[&self.description],
        ));
        for (var, label, value) in [
            (field::PERSISTENT, "Persistent", self.persistent),
            (field::PUBLIC, "Listed in the directory", self.public),
            (field::MEMBERS_ONLY, "Members only", self.members_only),
            (field::MODERATED, "Moderated", self.moderated),
            (
                field::PASSWORD_PROTECTED,
                "Password protected",
                self.password_protected,
            ),
            (
                field::CHANGE_SUBJECT,
                "Participants may change the subject",
                self.change_subject,
            ),
            (
                field::ALLOW_INVITES,
                "Occupants may invite",
                self.allow_invites,
            ),
            (field::GROUP, "Members get messages everywhere", self.group),
        ] {
            form.append_child(form_field(
                var,
                "boolean",
                Some(label),
                &[bool_value(value)],
            ));
        }
        form.append_child(form_field(
            field::AVATAR,
            "text-single",
            Some("Avatar URL"),
            &[&self.avatar],
        ));
        form.append_child(form_field(
            field::ANNOUNCEMENT,
            "text-single",
            Some("Announcement"),
            &[&self.announcement],
        ));
        form.append_child(form_field(
            field::SECRET,
            "text-private",
            Some("Password"),
            &[&self.secret],
        ));
        let mut whois = form_field(
            field::WHOIS,
            "list-single",
            Some("Who may discover real JIDs"),
            &[match self.whois {
                Whois::Moderators => "moderators",
                Whois::Anyone => "anyone",
            }],
        );
        for (label, value) in [("Moderators only", "moderators"), ("Anyone", "anyone")] {
            whois.append_child(form_option(label, value));
        }
        form.append_child(whois);
        let max = match self.max_users {
            0 => "none".to_owned(),
            n => n.to_string(),
        };
        let mut max_users = form_field(
            field::MAX_USERS,
            "list-single",
            Some("Maximum number of occupants"),
            &[&max],
        );
        for value in ["10", "20", "30", "50", "100", "none"] {
            max_users.append_child(form_option(value, value));
        }
        form.append_child(max_users);
        form
    }

    /// Applies a submitted form (`type='submit'`); fields it does not carry keep their value,
    /// unknown fields are ignored (XEP-0004 §3.2 lets a service ignore what it does not know).
    pub fn apply_form(&mut self, form: &Element) -> Result<(), FormError> {
        let mut next = self.clone();
        for f in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let Some(var) = f.attr("var") else { continue };
            let value = f
                .get_child("value", ns::DATA_FORMS)
                .map(Element::text)
                .unwrap_or_default();
            let boolean = || match value.as_str() {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                _ => Err(FormError::InvalidValue(var.to_owned())),
            };
            match var {
                field::NAME => next.name = value.clone(),
                field::DESC => next.description = value.clone(),
                field::PERSISTENT => next.persistent = boolean()?,
                field::PUBLIC => next.public = boolean()?,
                field::MEMBERS_ONLY => next.members_only = boolean()?,
                field::MODERATED => next.moderated = boolean()?,
                field::PASSWORD_PROTECTED => next.password_protected = boolean()?,
                field::SECRET => next.secret = value.clone(),
                field::CHANGE_SUBJECT => next.change_subject = boolean()?,
                field::ALLOW_INVITES => next.allow_invites = boolean()?,
                field::GROUP => next.group = boolean()?,
                field::AVATAR => next.avatar = value.clone(),
                field::ANNOUNCEMENT => next.announcement = value.clone(),
                field::WHOIS => {
                    next.whois = match value.as_str() {
                        "moderators" => Whois::Moderators,
                        "anyone" => Whois::Anyone,
                        _ => return Err(FormError::InvalidValue(var.to_owned())),
                    }
                }
                field::MAX_USERS => {
                    next.max_users = match value.as_str() {
                        "none" | "" | "0" => 0,
                        n => n
                            .parse()
                            .map_err(|_| FormError::InvalidValue(var.to_owned()))?,
                    }
                }
                _ => {}
            }
        }
        *self = next;
        Ok(())
    }

    /// The `muc_*` features of disco#info on the room (XEP-0045 §6.4, §15.6).
    pub fn features(&self) -> Vec<&'static str> {
        vec![
            ns::MUC,
            if self.public {
                "muc_public"
            } else {
                "muc_hidden"
            },
            if self.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if self.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if self.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            if self.needs_password() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            match self.whois {
                Whois::Anyone => "muc_nonanonymous",
                Whois::Moderators => "muc_semianonymous",
            },
            ns::PING,
        ]
    }
}

/// `<name xmlns=namespace>text</name>`.
pub fn text_child(name: &str, namespace: &str, text: &str) -> Element {
    Element::builder(name, namespace).append(text).build()
}

/// A data form field with its values (XEP-0004 §3.2).
pub fn form_field(var: &str, kind: &str, label: Option<&str>, values: &[&str]) -> Element {
    let mut attrs = vec![("var", var), ("type", kind)];
    if let Some(label) = label {
        attrs.push(("label", label));
    }
    let mut f = element("field", ns::DATA_FORMS, &attrs);
    for value in values {
        f.append_child(text_child("value", ns::DATA_FORMS, value));
    }
    f
}

fn form_option(label: &str, value: &str) -> Element {
    let mut option = element("option", ns::DATA_FORMS, &[("label", label)]);
    option.append_child(text_child("value", ns::DATA_FORMS, value));
    option
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_ordered() {
        assert!(Affiliation::Owner > Affiliation::Admin);
        assert!(Affiliation::Member > Affiliation::None);
        assert!(Affiliation::None > Affiliation::Outcast);
        assert!(Role::Moderator > Role::Participant);
        assert!(Role::Participant > Role::Visitor);
    }

    #[test]
    fn form_round_trips_through_submit() {
        let config = RoomConfig {
            name: "Coven".into(),
            persistent: true,
            members_only: true,
            password_protected: true,
            secret: "cauldron".into(),
            whois: Whois::Anyone,
            max_users: 20,
            allow_invites: true,
            group: true,
            avatar: "https://example.org/coven.png".into(),
            announcement: "Full moon tonight".into(),
            ..RoomConfig::default()
        };
        // `apply_form` reads fields only; the caller checks `type='submit'`.
        let submitted = config.form();
        let mut back = RoomConfig::default();
        back.apply_form(&submitted).expect("valid form");
        assert_eq!(back, config);
    }

    #[test]
    fn bad_boolean_is_refused_and_changes_nothing() {
        let mut form = element("x", ns::DATA_FORMS, &[("type", "submit")]);
        form.append_child(form_field(field::NAME, "text-single", None, &["new"]));
        form.append_child(form_field(field::PERSISTENT, "boolean", None, &["maybe"]));
        let mut config = RoomConfig::default();
        assert!(config.apply_form(&form).is_err());
        assert_eq!(config, RoomConfig::default());
    }
}
