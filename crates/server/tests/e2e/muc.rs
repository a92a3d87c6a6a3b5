//! XEP-0045 multi-user chat on `conference.localhost`: creation and configuration, joining
//! and leaving, messages and history, subject, moderation and administration, destruction,
//! self-ping (XEP-0410) and persistence across a restart.

use crate::harness::{Client, DOMAIN, Server, body_of, ns, stanza_error, xml};
use crate::muc_client::{codes, is_subject, join};
use minidom::Element;

const SERVICE: &str = "conference.localhost";
const ROOM: &str = "coven@conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const DATA: &str = "jabber:x:data";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// The `<item/>` of a MUC presence.
fn item(stanza: &Element) -> &Element {
    stanza
        .get_child("x", MUC_USER)
        .and_then(|x| x.get_child("item", MUC_USER))
        .unwrap_or_else(|| panic!("no muc#user item in {}", xml(stanza)))
}

fn is_presence_from(e: &Element, from: &str) -> bool {
    e.is("presence", ns::CLIENT) && e.attr("from") == Some(from)
}

/// Sends a join presence that must fail and returns the error condition.
async fn join_refused(client: &mut Client, room: &str, nick: &str, inner: &str) -> String {
    client
        .send(format!(
            "<presence to='{room}/{nick}'><x xmlns='{MUC}'>{inner}</x></presence>"
        ))
        .await;
    let from = format!("{room}/{nick}");
    let (error, _) = client
        .expect_matching("an error presence", |e| {
            is_presence_from(e, &from) && e.attr("type") == Some("error")
        })
        .await;
    stanza_error(&error).expect("a defined condition")
}

/// The self-presence (status 110) among what a join returned.
fn self_presence(elements: &[Element]) -> &Element {
    elements
        .iter()
        .find(|e| e.is("presence", ns::CLIENT) && codes(e).contains(&"110".to_owned()))
        .unwrap_or_else(|| panic!("no self-presence in {:?}", show(elements)))
}

fn show(elements: &[Element]) -> Vec<String> {
    elements.iter().map(xml).collect()
}

/// Creates `room` as an instant room (§10.1.2) with `owner` joined as `nick`.
async fn create_instant(owner: &mut Client, room: &str, nick: &str) {
    let joined = join(owner, room, nick, "").await;
    let me = self_presence(&joined);
    assert!(codes(me).contains(&"201".to_owned()), "{}", xml(me));
    let reply = owner
        .iq(
            "set",
            Some(room),
            &format!("<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'/></query>"),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
}

/// Submits room configuration `fields` (`(var suffix, value)`).
async fn configure(owner: &mut Client, room: &str, fields: &[(&str, &str)]) -> Element {
    let fields: String = fields
        .iter()
        .map(|(var, value)| {
            format!("<field var='muc#roomconfig_{var}'><value>{value}</value></field>")
        })
        .collect();
    owner
        .iq(
            "set",
            Some(room),
            &format!(
                "<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
                 {fields}</x></query>"
            ),
        )
        .await
}

/// Sends a `muc#admin` set with one item and returns the answer.
async fn admin(client: &mut Client, room: &str, item_attrs: &str) -> Element {
    client
        .iq(
            "set",
            Some(room),
            &format!("<query xmlns='{MUC_ADMIN}'><item {item_attrs}/></query>"),
        )
        .await
}

async fn groupchat(client: &mut Client, room: &str, body: &str) {
    client
        .send(format!(
            "<message to='{room}' type='groupchat'><body>{body}</body></message>"
        ))
        .await;
}

#[tokio::test]
async fn reserved_room_is_locked_until_configured_and_is_discoverable() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;

    // The server lists its conference service; the service describes itself.
    let items = alice
        .iq(
            "get",
            Some(DOMAIN),
            &format!("<query xmlns='{DISCO_ITEMS}'/>"),
        )
        .await;
    let listed: Vec<_> = items
        .get_child("query", DISCO_ITEMS)
        .expect("query")
        .children()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert!(listed.contains(&SERVICE), "{}", xml(&items));
    let info = alice
        .iq(
            "get",
            Some(SERVICE),
            &format!("<query xmlns='{}'/>", ns::DISCO_INFO),
        )
        .await;
    let query = info.get_child("query", ns::DISCO_INFO).expect("query");
    let identity = query
        .get_child("identity", ns::DISCO_INFO)
        .expect("identity");
    assert_eq!(identity.attr("category"), Some("conference"));
    assert_eq!(identity.attr("type"), Some("text"));
    assert!(
        query.children().any(|f| f.attr("var") == Some(MUC)),
        "{}",
        xml(&info)
    );

    // §10.1.3: a reserved room is locked with status 201; others cannot enter yet.
    let joined = join(&mut alice, ROOM, "Alice", "").await;
    let me = self_presence(&joined);
    assert!(codes(me).contains(&"201".to_owned()), "{}", xml(me));
    assert_eq!(item(me).attr("affiliation"), Some("owner"));
    assert_eq!(item(me).attr("role"), Some("moderator"));
    assert_eq!(
        join_refused(&mut bob, ROOM, "Bob", "").await,
        "item-not-found"
    );

    let form = alice
        .iq("get", Some(ROOM), &format!("<query xmlns='{MUC_OWNER}'/>"))
        .await;
    let x = form
        .get_child("query", MUC_OWNER)
        .and_then(|q| q.get_child("x", DATA))
        .expect("a config form");
    let vars: Vec<_> = x.children().filter_map(|f| f.attr("var")).collect();
    for var in [
        "FORM_TYPE",
        "muc#roomconfig_roomname",
        "muc#roomconfig_roomdesc",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_publicroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_moderatedroom",
        "muc#roomconfig_passwordprotectedroom",
        "muc#roomconfig_roomsecret",
        "muc#roomconfig_whois",
        "muc#roomconfig_maxusers",
        "muc#roomconfig_changesubject",
        "muc#roomconfig_allowinvites",
    ] {
        assert!(vars.contains(&var), "{var} missing from {}", xml(x));
    }
    // Only owners configure.
    let refused = bob
        .iq("get", Some(ROOM), &format!("<query xmlns='{MUC_OWNER}'/>"))
        .await;
    assert_eq!(stanza_error(&refused).as_deref(), Some("forbidden"));

    let done = configure(
        &mut alice,
        ROOM,
        &[
            ("roomname", "The Coven"),
            ("roomdesc", "Witches only"),
            ("whois", "anyone"),
        ],
    )
    .await;
    assert_eq!(done.attr("type"), Some("result"), "{}", xml(&done));

    // Unlocked: bob enters a non-anonymous room (status 100) and sees alice's real JID.
    let joined = join(&mut bob, ROOM, "Bob", "").await;
    let me = self_presence(&joined);
    assert!(codes(me).contains(&"100".to_owned()), "{}", xml(me));
    let alice_seen = joined
        .iter()
        .find(|e| is_presence_from(e, &format!("{ROOM}/Alice")))
        .expect("alice's presence");
    assert_eq!(item(alice_seen).attr("jid"), Some("alice@localhost/a"));

    // Room disco#info reflects the configuration; the service lists the public room.
    let info = bob
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{}'/>", ns::DISCO_INFO),
        )
        .await;
    let query = info.get_child("query", ns::DISCO_INFO).expect("query");
    let identity = query
        .get_child("identity", ns::DISCO_INFO)
        .expect("identity");
    assert_eq!(identity.attr("name"), Some("The Coven"));
    let features: Vec<_> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    for feature in [
        MUC,
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_nonanonymous",
    ] {
        assert!(features.contains(&feature), "{feature}: {}", xml(&info));
    }
    let roominfo = query.get_child("x", DATA).expect("muc#roominfo form");
    assert!(xml(roominfo).contains("Witches only"), "{}", xml(roominfo));
    let items = bob
        .iq(
            "get",
            Some(SERVICE),
            &format!("<query xmlns='{DISCO_ITEMS}'/>"),
        )
        .await;
    let room = items
        .get_child("query", DISCO_ITEMS)
        .and_then(|q| q.get_child("item", DISCO_ITEMS))
        .expect("the room is listed");
    assert_eq!(room.attr("jid"), Some(ROOM));
    assert_eq!(room.attr("name"), Some("The Coven"));
}

#[tokio::test]
async fn join_order_presence_broadcast_leave_and_session_end() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;

    let joined = join(&mut bob, ROOM, "Bob", "").await;
    // §7.2.3: others' presence, then the self-presence, then (history and) the subject last.
    let kinds: Vec<String> = joined
        .iter()
        .map(|e| format!("{} {}", e.name(), e.attr("from").unwrap_or_default()))
        .collect();
    assert_eq!(
        kinds,
        [
            format!("presence {ROOM}/Alice"),
            format!("presence {ROOM}/Bob"),
            format!("message {ROOM}"),
        ]
    );
    // Semi-anonymous by default: bob does not see alice's real JID; alice, a moderator,
    // sees bob's.
    assert_eq!(item(&joined[0]).attr("jid"), None);
    assert_eq!(item(&joined[0]).attr("role"), Some("moderator"));
    assert_eq!(item(&joined[1]).attr("role"), Some("participant"));
    assert_eq!(item(&joined[1]).attr("affiliation"), Some("none"));
    let (bob_seen, _) = alice
        .expect_matching("bob's presence", |e| {
            is_presence_from(e, &format!("{ROOM}/Bob"))
        })
        .await;
    assert_eq!(item(&bob_seen).attr("jid"), Some("bob@localhost/b"));
    assert!(codes(&bob_seen).is_empty(), "{}", xml(&bob_seen));

    // A presence update is broadcast.
    bob.send(format!(
        "<presence to='{ROOM}/Bob'><show>away</show></presence>"
    ))
    .await;
    let (away, _) = alice
        .expect_matching("bob away", |e| is_presence_from(e, &format!("{ROOM}/Bob")))
        .await;
    assert_eq!(
        away.get_child("show", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("away")
    );

    // A join from a client that is already in (it lost track, say after reconnecting with
    // the same full JID) gets the whole entry sequence again, subject last.
    let again = join(&mut bob, ROOM, "Bob", "").await;
    assert!(
        again
            .iter()
            .any(|e| is_presence_from(e, &format!("{ROOM}/Alice"))),
        "{:?}",
        show(&again)
    );
    self_presence(&again);

    // §7.14: leaving is broadcast, with 110 to the one leaving.
    bob.send(format!(
        "<presence to='{ROOM}/Bob' type='unavailable'><status>bye</status></presence>"
    ))
    .await;
    let (gone, _) = bob
        .expect_matching("bob's own unavailable", |e| {
            is_presence_from(e, &format!("{ROOM}/Bob")) && e.attr("type") == Some("unavailable")
        })
        .await;
    assert!(codes(&gone).contains(&"110".to_owned()), "{}", xml(&gone));
    assert_eq!(item(&gone).attr("role"), Some("none"));
    let (gone, _) = alice
        .expect_matching("bob unavailable", |e| {
            is_presence_from(e, &format!("{ROOM}/Bob")) && e.attr("type") == Some("unavailable")
        })
        .await;
    assert_eq!(
        gone.get_child("status", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("bye")
    );

    // A session that ends without leaving is removed and its departure broadcast.
    join(&mut carol, ROOM, "Carol", "").await;
    alice
        .expect_matching("carol joined", |e| {
            is_presence_from(e, &format!("{ROOM}/Carol"))
        })
        .await;
    drop(carol);
    alice
        .expect_matching("carol unavailable", |e| {
            is_presence_from(e, &format!("{ROOM}/Carol")) && e.attr("type") == Some("unavailable")
        })
        .await;
    // Her nick is free again.
    let mut carol = server.login_available("carol", "c2", 0).await;
    join(&mut carol, ROOM, "Carol", "").await;
}

#[tokio::test]
async fn groupchat_broadcast_and_history_limits() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;

    // §7.4: only occupants may send.
    groupchat(&mut bob, ROOM, "let me in").await;
    let (error, _) = bob
        .expect_matching("an error message", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error(&error).as_deref(), Some("not-acceptable"));

    for n in 1..=3 {
        groupchat(&mut alice, ROOM, &format!("m{n}")).await;
        // Reflected to the sender, from the room nick.
        let echo = alice.expect_message_with_body(&format!("m{n}")).await;
        assert_eq!(
            echo.attr("from").map(str::to_owned),
            Some(format!("{ROOM}/Alice"))
        );
        assert_eq!(echo.attr("type"), Some("groupchat"));
    }

    // §7.2.13: the last two only, stamped by the room (XEP-0203).
    let joined = join(&mut bob, ROOM, "Bob", "<history maxstanzas='2'/>").await;
    let history: Vec<&Element> = joined
        .iter()
        .filter(|e| e.is("message", ns::CLIENT) && body_of(e).is_some())
        .collect();
    assert_eq!(
        history
            .iter()
            .filter_map(|m| body_of(m))
            .collect::<Vec<_>>(),
        ["m2", "m3"]
    );
    for message in &history {
        let delay = message.get_child("delay", ns::DELAY).expect("delay");
        assert_eq!(delay.attr("from"), Some(ROOM));
        assert!(delay.attr("stamp").is_some());
    }
    // The subject comes after the history.
    assert!(is_subject(joined.last().expect("subject")));

    // maxchars='0': no history at all.
    let joined = join(&mut carol, ROOM, "Carol", "<history maxchars='0'/>").await;
    assert!(
        !joined.iter().any(|e| body_of(e).is_some()),
        "{:?}",
        show(&joined)
    );

    // Semi-anonymous (the default): a participant does not see a newcomer's real JID, a
    // moderator does.
    let (carol_seen, _) = bob
        .expect_matching("carol's presence", |e| {
            is_presence_from(e, &format!("{ROOM}/Carol"))
        })
        .await;
    assert_eq!(item(&carol_seen).attr("jid"), None, "{}", xml(&carol_seen));
    let (carol_seen, _) = alice
        .expect_matching("carol's presence", |e| {
            is_presence_from(e, &format!("{ROOM}/Carol"))
        })
        .await;
    assert_eq!(item(&carol_seen).attr("jid"), Some("carol@localhost/c"));

    // A message reaches every occupant.
    groupchat(&mut bob, ROOM, "hello all").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        let message = client.expect_message_with_body("hello all").await;
        assert_eq!(
            message.attr("from").map(str::to_owned),
            Some(format!("{ROOM}/Bob"))
        );
    }
}

#[tokio::test]
async fn nick_conflict_and_nick_change() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;

    // §7.2.9.
    assert_eq!(join_refused(&mut bob, ROOM, "Alice", "").await, "conflict");
    join(&mut bob, ROOM, "Bob", "").await;

    // §7.6: to another occupant's nick is a conflict; to a free one, 303 then the new nick.
    bob.send(format!("<presence to='{ROOM}/Alice'/>")).await;
    let (error, _) = bob
        .expect_matching("conflict", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error(&error).as_deref(), Some("conflict"));
    bob.send(format!("<presence to='{ROOM}/Robert'/>")).await;
    for client in [&mut alice, &mut bob] {
        let (old, _) = client
            .expect_matching("the old nick leaving", |e| {
                is_presence_from(e, &format!("{ROOM}/Bob")) && e.attr("type") == Some("unavailable")
            })
            .await;
        assert!(codes(&old).contains(&"303".to_owned()), "{}", xml(&old));
        assert_eq!(item(&old).attr("nick"), Some("Robert"));
        client
            .expect_matching("the new nick", |e| {
                is_presence_from(e, &format!("{ROOM}/Robert")) && e.attr("type").is_none()
            })
            .await;
    }
    groupchat(&mut bob, ROOM, "renamed").await;
    let message = alice.expect_message_with_body("renamed").await;
    assert_eq!(
        message.attr("from").map(str::to_owned),
        Some(format!("{ROOM}/Robert"))
    );
}

#[tokio::test]
async fn members_only_password_and_mediated_invitation() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;
    let done = configure(
        &mut alice,
        ROOM,
        &[
            ("membersonly", "1"),
            ("passwordprotectedroom", "1"),
            ("roomsecret", "cauldron"),
        ],
    )
    .await;
    assert_eq!(done.attr("type"), Some("result"), "{}", xml(&done));

    // §7.2.6.
    assert_eq!(
        join_refused(&mut bob, ROOM, "Bob", "").await,
        "registration-required"
    );

    // §7.8.2: the owner invites bob through the room; bob becomes a member.
    alice
        .send(format!(
            "<message to='{ROOM}'><x xmlns='{MUC_USER}'><invite to='bob@localhost'>\
             <reason>join us</reason></invite></x></message>"
        ))
        .await;
    let (invitation, _) = bob
        .expect_matching("the invitation", |e| {
            e.is("message", ns::CLIENT) && e.attr("from") == Some(ROOM)
        })
        .await;
    let x = invitation.get_child("x", MUC_USER).expect("muc#user");
    let invite = x.get_child("invite", MUC_USER).expect("invite");
    assert_eq!(invite.attr("from"), Some("alice@localhost"));
    assert_eq!(
        invite
            .get_child("reason", MUC_USER)
            .map(Element::text)
            .as_deref(),
        Some("join us")
    );
    assert_eq!(
        x.get_child("password", MUC_USER)
            .map(Element::text)
            .as_deref(),
        Some("cauldron")
    );

    // §7.8.2: an invitation declined goes back to the inviter through the room.
    bob.send(format!(
        "<message to='{ROOM}'><x xmlns='{MUC_USER}'><decline to='alice@localhost/a'>\
         <reason>busy</reason></decline></x></message>"
    ))
    .await;
    let (declined, _) = alice
        .expect_matching("the decline", |e| {
            e.is("message", ns::CLIENT)
                && e.get_child("x", MUC_USER)
                    .is_some_and(|x| x.has_child("decline", MUC_USER))
        })
        .await;
    assert_eq!(declined.attr("from"), Some(ROOM));
    let decline = declined
        .get_child("x", MUC_USER)
        .and_then(|x| x.get_child("decline", MUC_USER))
        .expect("decline");
    assert_eq!(decline.attr("from"), Some("bob@localhost"));

    // §7.2.5: now a member, but the password is still required.
    assert_eq!(
        join_refused(&mut bob, ROOM, "Bob", "<password>wrong</password>").await,
        "not-authorized"
    );
    let joined = join(&mut bob, ROOM, "Bob", "<password>cauldron</password>").await;
    assert_eq!(
        item(self_presence(&joined)).attr("affiliation"),
        Some("member")
    );

    // The member list shows him; carol, never invited, is still refused.
    let list = alice
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='member'/></query>"),
        )
        .await;
    assert!(xml(&list).contains("bob@localhost"), "{}", xml(&list));
    assert_eq!(
        join_refused(&mut carol, ROOM, "Carol", "<password>cauldron</password>").await,
        "registration-required"
    );
}

#[tokio::test]
async fn kick_rules_and_kick() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;
    join(&mut bob, ROOM, "Bob", "").await;
    join(&mut carol, ROOM, "Carol", "").await;

    // §8.2: a participant may not kick.
    let refused = admin(&mut bob, ROOM, "nick='Carol' role='none'").await;
    assert_eq!(stanza_error(&refused).as_deref(), Some("forbidden"));

    // An admin may not kick an owner.
    let granted = admin(
        &mut alice,
        ROOM,
        "jid='carol@localhost' affiliation='admin'",
    )
    .await;
    assert_eq!(granted.attr("type"), Some("result"), "{}", xml(&granted));
    let (promoted, _) = carol
        .expect_matching("carol's new role", |e| {
            is_presence_from(e, &format!("{ROOM}/Carol"))
                && item(e).attr("affiliation") == Some("admin")
        })
        .await;
    assert_eq!(item(&promoted).attr("role"), Some("moderator"));
    let refused = admin(&mut carol, ROOM, "nick='Alice' role='none'").await;
    assert_eq!(stanza_error(&refused).as_deref(), Some("not-allowed"));

    // The owner kicks bob: 307 with the reason and actor, to him and to the others.
    let kicked = alice
        .iq(
            "set",
            Some(ROOM),
            &format!(
                "<query xmlns='{MUC_ADMIN}'><item nick='Bob' role='none'>\
                 <reason>spam</reason></item></query>"
            ),
        )
        .await;
    assert_eq!(kicked.attr("type"), Some("result"), "{}", xml(&kicked));
    for (client, is_self) in [(&mut bob, true), (&mut carol, false)] {
        let (out, _) = client
            .expect_matching("bob kicked", |e| {
                is_presence_from(e, &format!("{ROOM}/Bob")) && e.attr("type") == Some("unavailable")
            })
            .await;
        let codes = codes(&out);
        assert!(codes.contains(&"307".to_owned()), "{}", xml(&out));
        assert_eq!(codes.contains(&"110".to_owned()), is_self, "{}", xml(&out));
        assert_eq!(
            item(&out)
                .get_child("reason", MUC_USER)
                .map(Element::text)
                .as_deref(),
            Some("spam")
        );
        assert_eq!(
            item(&out)
                .get_child("actor", MUC_USER)
                .and_then(|a| a.attr("nick")),
            Some("Alice")
        );
    }
    // Kicked means out: his messages are refused.
    groupchat(&mut bob, ROOM, "still here?").await;
    let (error, _) = bob
        .expect_matching("an error message", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error(&error).as_deref(), Some("not-acceptable"));
    // But he may come back.
    join(&mut bob, ROOM, "Bob", "").await;
}

#[tokio::test]
async fn ban_removes_and_refuses() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;
    join(&mut bob, ROOM, "Bob", "").await;

    // A participant may not ban.
    let refused = admin(
        &mut bob,
        ROOM,
        "jid='alice@localhost' affiliation='outcast'",
    )
    .await;
    assert_eq!(stanza_error(&refused).as_deref(), Some("forbidden"));

    let banned = admin(
        &mut alice,
        ROOM,
        "jid='bob@localhost' affiliation='outcast'",
    )
    .await;
    assert_eq!(banned.attr("type"), Some("result"), "{}", xml(&banned));
    let (out, _) = bob
        .expect_matching("bob banned", |e| {
            is_presence_from(e, &format!("{ROOM}/Bob")) && e.attr("type") == Some("unavailable")
        })
        .await;
    assert!(codes(&out).contains(&"301".to_owned()), "{}", xml(&out));
    assert_eq!(item(&out).attr("affiliation"), Some("outcast"));

    // §7.2.7.
    assert_eq!(join_refused(&mut bob, ROOM, "Bob", "").await, "forbidden");
    let list = alice
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='outcast'/></query>"),
        )
        .await;
    let items: Vec<_> = list
        .get_child("query", MUC_ADMIN)
        .expect("query")
        .children()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(items, ["bob@localhost"]);

    // Lifting the ban lets him in again.
    let lifted = admin(&mut alice, ROOM, "jid='bob@localhost' affiliation='none'").await;
    assert_eq!(lifted.attr("type"), Some("result"), "{}", xml(&lifted));
    join(&mut bob, ROOM, "Bob", "").await;
}

#[tokio::test]
async fn subject_rules_and_moderated_voice() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;
    join(&mut bob, ROOM, "Bob", "").await;

    // §8.1: participants may not change the subject unless the room allows it.
    bob.send(format!(
        "<message to='{ROOM}' type='groupchat'><subject>mine</subject></message>"
    ))
    .await;
    let (error, _) = bob
        .expect_matching("an error message", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error(&error).as_deref(), Some("forbidden"));

    alice
        .send(format!(
            "<message to='{ROOM}' type='groupchat'><subject>Spells</subject></message>"
        ))
        .await;
    for client in [&mut alice, &mut bob] {
        let (subject, _) = client.expect_matching("the new subject", is_subject).await;
        assert_eq!(
            subject
                .get_child("subject", ns::CLIENT)
                .map(Element::text)
                .as_deref(),
            Some("Spells")
        );
        assert_eq!(
            subject.attr("from").map(str::to_owned),
            Some(format!("{ROOM}/Alice"))
        );
    }
    // §7.2.15: a newcomer gets it last.
    let joined = join(&mut carol, ROOM, "Carol", "").await;
    let last = joined.last().expect("subject");
    assert_eq!(
        last.get_child("subject", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("Spells")
    );

    // §8.3–§8.4: in a moderated room a newcomer without affiliation is a visitor, who may
    // not speak until given voice.
    let done = configure(&mut alice, ROOM, &[("moderatedroom", "1")]).await;
    assert_eq!(done.attr("type"), Some("result"), "{}", xml(&done));
    // §10.2.1: occupants are told the configuration changed (status 104).
    let (notice, _) = bob
        .expect_matching("the configuration change notice", |e| {
            e.is("message", ns::CLIENT) && e.attr("from") == Some(ROOM) && !is_subject(e)
        })
        .await;
    assert_eq!(codes(&notice), ["104"]);
    carol
        .send(format!("<presence to='{ROOM}/Carol' type='unavailable'/>"))
        .await;
    carol
        .expect_matching("carol left", |e| {
            is_presence_from(e, &format!("{ROOM}/Carol")) && e.attr("type") == Some("unavailable")
        })
        .await;
    let joined = join(&mut carol, ROOM, "Carol", "").await;
    assert_eq!(item(self_presence(&joined)).attr("role"), Some("visitor"));
    groupchat(&mut carol, ROOM, "can I talk?").await;
    let (error, _) = carol
        .expect_matching("an error message", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error(&error).as_deref(), Some("forbidden"));
    let voiced = admin(&mut alice, ROOM, "nick='Carol' role='participant'").await;
    assert_eq!(voiced.attr("type"), Some("result"), "{}", xml(&voiced));
    groupchat(&mut carol, ROOM, "thanks").await;
    alice.expect_message_with_body("thanks").await;
}

#[tokio::test]
async fn private_messages_and_self_ping() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let ping = "<ping xmlns='urn:xmpp:ping'/>";
    let nick = format!("{ROOM}/Bob");

    // XEP-0410: not joined (the room does not exist yet).
    let answer = bob.iq("get", Some(&nick), ping).await;
    assert_eq!(stanza_error(&answer).as_deref(), Some("item-not-found"));
    create_instant(&mut alice, ROOM, "Alice").await;
    let answer = bob.iq("get", Some(&nick), ping).await;
    assert_eq!(stanza_error(&answer).as_deref(), Some("not-acceptable"));
    join(&mut bob, ROOM, "Bob", "").await;
    let answer = bob.iq("get", Some(&nick), ping).await;
    assert_eq!(answer.attr("type"), Some("result"), "{}", xml(&answer));
    assert_eq!(answer.attr("from"), Some(nick.as_str()));

    // §7.5: a private message arrives from the sender's room nick, marked as such.
    bob.send(format!(
        "<message to='{ROOM}/Alice' type='chat'><body>psst</body></message>"
    ))
    .await;
    let message = alice.expect_message_with_body("psst").await;
    assert_eq!(message.attr("from"), Some(nick.as_str()));
    assert_eq!(message.attr("to"), Some("alice@localhost/a"));
    assert!(message.has_child("x", MUC_USER), "{}", xml(&message));
    // To a nick nobody holds.
    bob.send(format!(
        "<message to='{ROOM}/Nobody' type='chat'><body>hello?</body></message>"
    ))
    .await;
    let (error, _) = bob
        .expect_matching("an error message", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error(&error).as_deref(), Some("item-not-found"));

    // An IQ to another occupant is forwarded from the asker's nick under an id of the room's
    // own, and the answer comes back through the room with the asker's id.
    bob.send(format!(
        "<iq type='get' id='v1' to='{ROOM}/Alice'><query xmlns='jabber:iq:version'/></iq>"
    ))
    .await;
    let (request, _) = alice
        .expect_matching("the forwarded IQ", |e| {
            e.is("iq", ns::CLIENT) && e.has_child("query", "jabber:iq:version")
        })
        .await;
    assert_eq!(request.attr("from"), Some(nick.as_str()));
    let forwarded_id = request.attr("id").expect("an id").to_owned();
    alice
        .send(format!(
            "<iq type='result' id='{forwarded_id}' to='{nick}'><query xmlns='jabber:iq:version'>\
             <name>broom</name></query></iq>"
        ))
        .await;
    let (response, _) = bob
        .expect_matching("the forwarded answer", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some("v1")
        })
        .await;
    assert_eq!(response.attr("type"), Some("result"));
    assert_eq!(
        response.attr("from").map(str::to_owned),
        Some(format!("{ROOM}/Alice"))
    );
    assert!(xml(&response).contains("broom"), "{}", xml(&response));
    // Nobody else may answer in alice's name: a forged answer to a used id is dropped.
    alice
        .send(format!(
            "<iq type='result' id='{forwarded_id}' to='{nick}'/>"
        ))
        .await;

    // A vCard request goes to the occupant's account, which the server answers.
    let stored = alice
        .iq(
            "set",
            None,
            "<vCard xmlns='vcard-temp'><FN>Alice Witch</FN></vCard>",
        )
        .await;
    assert_eq!(stored.attr("type"), Some("result"), "{}", xml(&stored));
    bob.send(format!(
        "<iq type='get' id='vc1' to='{ROOM}/Alice'><vCard xmlns='vcard-temp'/></iq>"
    ))
    .await;
    let (card, skipped) = bob
        .expect_matching("the vCard", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some("vc1")
        })
        .await;
    assert_eq!(card.attr("type"), Some("result"), "{}", xml(&card));
    assert!(xml(&card).contains("Alice Witch"), "{}", xml(&card));
    assert!(
        !skipped.iter().any(|e| e.is("iq", ns::CLIENT)),
        "the forged answer reached bob: {:?}",
        show(&skipped)
    );

    // After leaving, self-ping says so.
    bob.send(format!("<presence to='{nick}' type='unavailable'/>"))
        .await;
    let answer = bob.iq("get", Some(&nick), ping).await;
    assert_eq!(stanza_error(&answer).as_deref(), Some("not-acceptable"));
}

#[tokio::test]
async fn destroy_with_alternate_venue() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;
    join(&mut bob, ROOM, "Bob", "").await;

    let refused = bob
        .iq(
            "set",
            Some(ROOM),
            &format!("<query xmlns='{MUC_OWNER}'><destroy/></query>"),
        )
        .await;
    assert_eq!(stanza_error(&refused).as_deref(), Some("forbidden"));

    let done = alice
        .iq(
            "set",
            Some(ROOM),
            &format!(
                "<query xmlns='{MUC_OWNER}'><destroy jid='new@{SERVICE}'>\
                 <reason>moved</reason></destroy></query>"
            ),
        )
        .await;
    assert_eq!(done.attr("type"), Some("result"), "{}", xml(&done));
    let (out, _) = bob
        .expect_matching("the room destroyed", |e| {
            is_presence_from(e, &format!("{ROOM}/Bob")) && e.attr("type") == Some("unavailable")
        })
        .await;
    let destroy = out
        .get_child("x", MUC_USER)
        .and_then(|x| x.get_child("destroy", MUC_USER))
        .expect("destroy notice");
    assert_eq!(
        destroy.attr("jid").map(str::to_owned),
        Some(format!("new@{SERVICE}"))
    );
    assert_eq!(
        destroy
            .get_child("reason", MUC_USER)
            .map(Element::text)
            .as_deref(),
        Some("moved")
    );
    // Gone: disco on it is item-not-found.
    let info = bob
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{}'/>", ns::DISCO_INFO),
        )
        .await;
    assert_eq!(stanza_error(&info).as_deref(), Some("item-not-found"));
}

#[tokio::test]
async fn persistent_room_survives_a_restart() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    create_instant(&mut alice, ROOM, "Alice").await;
    let done = configure(
        &mut alice,
        ROOM,
        &[
            ("roomname", "Standing Stones"),
            ("persistentroom", "1"),
            ("membersonly", "1"),
        ],
    )
    .await;
    assert_eq!(done.attr("type"), Some("result"), "{}", xml(&done));
    let granted = admin(&mut alice, ROOM, "jid='bob@localhost' affiliation='member'").await;
    assert_eq!(granted.attr("type"), Some("result"), "{}", xml(&granted));
    let banned = admin(
        &mut alice,
        ROOM,
        "jid='carol@localhost' affiliation='outcast'",
    )
    .await;
    assert_eq!(banned.attr("type"), Some("result"), "{}", xml(&banned));
    alice
        .send(format!(
            "<message to='{ROOM}' type='groupchat'><subject>Solstice</subject></message>"
        ))
        .await;
    alice.expect_matching("the subject", is_subject).await;
    drop(alice);

    let dir = server.stop().await;
    let server = Server::builder().data_dir(dir).start().await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;

    // The configuration, subject and affiliations came back; no occupant did.
    let info = bob
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{}'/>", ns::DISCO_INFO),
        )
        .await;
    assert!(xml(&info).contains("Standing Stones"), "{}", xml(&info));
    assert!(xml(&info).contains("muc_persistent"), "{}", xml(&info));
    assert_eq!(
        join_refused(&mut carol, ROOM, "Carol", "").await,
        "forbidden"
    );
    let joined = join(&mut bob, ROOM, "Bob", "").await;
    let me = self_presence(&joined);
    assert_eq!(item(me).attr("affiliation"), Some("member"));
    assert!(!codes(me).contains(&"201".to_owned()), "{}", xml(me));
    assert_eq!(
        joined
            .iter()
            .filter(|e| e.is("presence", ns::CLIENT))
            .count(),
        1,
        "nobody else is in the room: {:?}",
        show(&joined)
    );
    let subject = joined.last().expect("subject");
    assert_eq!(
        subject
            .get_child("subject", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("Solstice")
    );
    // The owner is still the owner.
    let mut alice = server.login_available("alice", "a", 0).await;
    let joined = join(&mut alice, ROOM, "Alice", "").await;
    assert_eq!(
        item(self_presence(&joined)).attr("affiliation"),
        Some("owner")
    );
}

#[tokio::test]
async fn two_sessions_of_one_account_share_a_nick() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut phone = server.login_available("bob", "phone", 0).await;
    let mut desk = server.login_available("bob", "desk", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    let bob_nick = format!("{ROOM}/Bob");
    create_instant(&mut alice, ROOM, "Alice").await;
    join(&mut phone, ROOM, "Bob", "").await;
    alice
        .expect_matching("bob joined", |e| is_presence_from(e, &bob_nick))
        .await;

    // Bob's second device joins the same nick: it gets the room as a newcomer does, and
    // the others see no one new.
    let joined = join(&mut desk, ROOM, "Bob", "").await;
    assert!(
        joined
            .iter()
            .any(|e| is_presence_from(e, &format!("{ROOM}/Alice"))),
        "{:?}",
        show(&joined)
    );
    assert_eq!(
        item(self_presence(&joined)).attr("role"),
        Some("participant")
    );
    let before = alice.sync().await;
    assert!(
        !before.iter().any(|e| is_presence_from(e, &bob_nick)),
        "{:?}",
        show(&before)
    );
    // Another account cannot take the nick.
    assert_eq!(join_refused(&mut carol, ROOM, "Bob", "").await, "conflict");

    // Group and private messages reach both sessions.
    groupchat(&mut alice, ROOM, "to both").await;
    phone.expect_message_with_body("to both").await;
    desk.expect_message_with_body("to both").await;
    alice
        .send(format!(
            "<message to='{bob_nick}' type='chat'><body>psst both</body></message>"
        ))
        .await;
    phone.expect_message_with_body("psst both").await;
    desk.expect_message_with_body("psst both").await;
    // What either session says comes from the one nick.
    groupchat(&mut desk, ROOM, "from the desk").await;
    let message = alice.expect_message_with_body("from the desk").await;
    assert_eq!(message.attr("from"), Some(bob_nick.as_str()));

    // One session leaving is its own business; the last one leaving is the room's.
    desk.send(format!("<presence to='{bob_nick}' type='unavailable'/>"))
        .await;
    let (gone, _) = desk
        .expect_matching("the desk's own unavailable", |e| {
            is_presence_from(e, &bob_nick) && e.attr("type") == Some("unavailable")
        })
        .await;
    assert!(codes(&gone).contains(&"110".to_owned()), "{}", xml(&gone));
    let before = alice.sync().await;
    assert!(
        !before
            .iter()
            .any(|e| is_presence_from(e, &bob_nick) && e.attr("type") == Some("unavailable")),
        "{:?}",
        show(&before)
    );
    groupchat(&mut phone, ROOM, "still here").await;
    alice.expect_message_with_body("still here").await;
    phone
        .send(format!("<presence to='{bob_nick}' type='unavailable'/>"))
        .await;
    alice
        .expect_matching("bob gone", |e| {
            is_presence_from(e, &bob_nick) && e.attr("type") == Some("unavailable")
        })
        .await;
}
