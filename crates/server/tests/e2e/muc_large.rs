//! Large rooms (issue 6 item 4, docs/protocol/confab-groups.md "Large rooms"): above
//! `[muc] presence_broadcast_max` occupants nobody's presence is broadcast, yet the room
//! stays usable; and a member that stops reading never holds up the others.

use crate::harness::{Client, Server, body_of, ns, stanza_error, xml};
use crate::muc_client;
use minidom::Element;

const ROOM: &str = "agora@conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DATA: &str = "jabber:x:data";
const ACK: &str = "urn:confab:ack:0";

/// Whether `e` is a presence from `ROOM/nick`.
fn presence_from(e: &Element, nick: &str) -> bool {
    e.is("presence", ns::CLIENT) && e.attr("from") == Some(&format!("{ROOM}/{nick}"))
}

/// Whether `e` carries MUC status `code`.
fn has_code(e: &Element, code: &str) -> bool {
    e.get_child("x", MUC_USER).is_some_and(|x| {
        x.children()
            .any(|c| c.is("status", MUC_USER) && c.attr("code") == Some(code))
    })
}

/// Joins `ROOM` as `nick` without history; returns everything up to the subject.
async fn join(client: &mut Client, nick: &str) -> Vec<Element> {
    muc_client::join(client, ROOM, nick, "<history maxstanzas='0'/>").await
}

/// Creates `ROOM` as an instant room (XEP-0045 §10.1.2) with `owner` in it as `nick`.
async fn create(owner: &mut Client, nick: &str) {
    let joined = join(owner, nick).await;
    assert!(
        joined.iter().any(|e| has_code(e, "201")),
        "room not created: {joined:?}"
    );
    let reply = owner
        .iq(
            "set",
            Some(ROOM),
            &format!("<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'/></query>"),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
}

/// Sends a groupchat message.
async fn say(client: &mut Client, body: &str) {
    client
        .send(format!(
            "<message to='{ROOM}' type='groupchat'><body>{body}</body></message>"
        ))
        .await;
}

/// Presences from other occupants among `elements`.
fn others_presence<'a>(elements: &'a [Element], me: &str) -> Vec<&'a Element> {
    elements
        .iter()
        .filter(|e| e.is("presence", ns::CLIENT) && !presence_from(e, me))
        .collect()
}

#[tokio::test]
async fn above_the_threshold_joins_get_only_self_presence_and_the_room_stays_usable() {
    let users = ["p1", "p2", "p3", "p4", "p5"];
    let server = Server::builder()
        .users(&users)
        .env(&[("CONFAB__MUC__PRESENCE_BROADCAST_MAX", "3")])
        .start()
        .await;
    let mut p1 = server.login_available("p1", "r", 0).await;
    let mut p2 = server.login_available("p2", "r", 0).await;
    let mut p3 = server.login_available("p3", "r", 0).await;
    let mut p4 = server.login_available("p4", "r", 0).await;
    let mut p5 = server.login_available("p5", "r", 0).await;
    create(&mut p1, "One").await;
    join(&mut p2, "Two").await;
    // Three occupants, at the limit: the joiner sees the other two, they see it.
    let joined = join(&mut p3, "Three").await;
    assert_eq!(others_presence(&joined, "Three").len(), 2, "{joined:?}");
    p1.expect_matching("Three's join", |e| presence_from(e, "Three"))
        .await;

    // The fourth occupant: only its own presence (110), then the subject.
    let joined = join(&mut p4, "Four").await;
    assert_eq!(others_presence(&joined, "Four"), Vec::<&Element>::new());
    let own: Vec<_> = joined.iter().filter(|e| presence_from(e, "Four")).collect();
    assert_eq!(own.len(), 1, "{joined:?}");
    assert!(has_code(own[0], "110"), "{}", xml(own[0]));

    // Messages still flow both ways, and nobody heard of Four's join first: were its
    // presence broadcast, it would reach One before this message (one order per room).
    say(&mut p4, "hello from four").await;
    let (message, before) = p1
        .expect_matching("Four's message", |e| {
            body_of(e).as_deref() == Some("hello from four")
        })
        .await;
    assert_eq!(message.attr("from"), Some(&*format!("{ROOM}/Four")));
    assert!(
        !before.iter().any(|e| presence_from(e, "Four")),
        "Four's presence was broadcast: {before:?}"
    );
    say(&mut p1, "hello from one").await;
    p4.expect_message_with_body("hello from one").await;

    // Nicks stay unique.
    p5.send(format!(
        "<presence to='{ROOM}/Four'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let (error, _) = p5
        .expect_matching("an error presence", |e| {
            presence_from(e, "Four") && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(stanza_error(&error).as_deref(), Some("conflict"));

    // Disco#info counts every occupant and names the limit.
    let info = p4
        .iq("get", Some(ROOM), &format!("<query xmlns='{DISCO_INFO}'/>"))
        .await;
    let text = xml(&info);
    let occupants = field_value(&info, "muc#roominfo_occupants");
    assert_eq!(occupants.as_deref(), Some("4"), "{text}");
    assert_eq!(
        field_value(&info, "confab#roominfo_presence_broadcast_max").as_deref(),
        Some("3"),
        "{text}"
    );

    // A moderator (the owner) still lists the occupants.
    let list = p1
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{MUC_ADMIN}'><item role='participant'/></query>"),
        )
        .await;
    let nicks: Vec<_> = list
        .get_child("query", MUC_ADMIN)
        .map(|q| q.children().filter_map(|i| i.attr("nick")).collect())
        .unwrap_or_default();
    assert_eq!(nicks, ["Four", "Three", "Two"], "{}", xml(&list));

    // A presence change and a leave above the limit reach only the occupant itself.
    p4.send(format!(
        "<presence to='{ROOM}/Four'><show>away</show></presence>"
    ))
    .await;
    let (own, _) = p4
        .expect_matching("Four's own presence change", |e| presence_from(e, "Four"))
        .await;
    assert!(has_code(&own, "110"), "{}", xml(&own));
    p4.send(format!("<presence to='{ROOM}/Four' type='unavailable'/>"))
        .await;
    let (own, _) = p4
        .expect_matching("Four's own leave", |e| presence_from(e, "Four"))
        .await;
    assert_eq!(own.attr("type"), Some("unavailable"));
    say(&mut p2, "after four left").await;
    let (_, before) = p1
        .expect_matching("Two's message", |e| {
            body_of(e).as_deref() == Some("after four left")
        })
        .await;
    assert!(
        !before.iter().any(|e| presence_from(e, "Four")),
        "Four's change or leave was broadcast: {before:?}"
    );
}

/// The value of a field of the first data form in a disco#info result.
fn field_value(info: &Element, var: &str) -> Option<String> {
    info.get_child("query", DISCO_INFO)?
        .get_child("x", DATA)?
        .children()
        .find(|f| f.is("field", DATA) && f.attr("var") == Some(var))?
        .get_child("value", DATA)
        .map(Element::text)
}

/// Messages a sender puts into the room; with a body of [`BODY_BYTES`] they are far more
/// than the socket buffers and the small mailbox of a member that reads nothing can hold.
const MESSAGES: usize = 200;
const BODY_BYTES: usize = 100_000;

#[tokio::test]
async fn a_member_that_stops_reading_does_not_slow_the_room() {
    let server = Server::builder()
        .users(&["owner", "fast", "slow"])
        .env(&[("CONFAB__C2S__MAILBOX_CAPACITY", "16")])
        .start()
        .await;
    let mut owner = server.login_available("owner", "r", 0).await;
    let mut fast = server.login_available("fast", "r", 0).await;
    let mut slow = server.login_available("slow", "r", 0).await;
    create(&mut owner, "Owner").await;
    join(&mut fast, "Fast").await;
    join(&mut slow, "Slow").await;
    owner
        .expect_matching("Slow's join", |e| presence_from(e, "Slow"))
        .await;
    fast.expect_matching("Slow's join", |e| presence_from(e, "Slow"))
        .await;

    // Slow reads nothing from here on. The owner sends and Fast reads; were the broadcast
    // waiting for Slow's mailbox, both would stall once Slow's socket buffers filled.
    let filler = "x".repeat(BODY_BYTES);
    let sender = async {
        // One message at a time, each acknowledged and echoed before the next: the sender
        // reads as it goes, so only Slow stops reading.
        for i in 0..MESSAGES {
            say(&mut owner, &format!("{i} {filler}")).await;
            let (mut ack, mut echo) = (false, false);
            while !(ack && echo) {
                let (e, _) = owner
                    .expect_matching("a receipt or an echo", |e| e.is("message", ns::CLIENT))
                    .await;
                ack |= e.has_child("ack", ACK);
                echo |= body_of(&e).is_some_and(|b| b.starts_with(&format!("{i} ")));
            }
        }
    };
    let reader = async {
        for i in 0..MESSAGES {
            let (e, _) = fast
                .expect_matching("the next room message", |e| {
                    e.is("message", ns::CLIENT) && body_of(e).is_some()
                })
                .await;
            let body = body_of(&e).unwrap_or_default();
            assert!(
                body.starts_with(&format!("{i} ")),
                "message {i} out of order"
            );
        }
    };
    tokio::join!(sender, reader);

    // Slow's mailbox overflowed: after what its socket held, the stream ends with
    // policy-violation (ARCHITECTURE.md, "Overflow policy").
    assert_eq!(slow.expect_stream_error().await, "policy-violation");
    // The room goes on without it; its session left the room.
    say(&mut owner, "still here").await;
    fast.expect_message_with_body("still here").await;
    let list = owner
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{MUC_ADMIN}'><item role='participant'/></query>"),
        )
        .await;
    assert!(!xml(&list).contains("Slow"), "{}", xml(&list));
}

/// Blocks `jid` (XEP-0191 §3.3).
async fn block(client: &mut Client, jid: &str) {
    let reply = client
        .iq(
            "set",
            None,
            &format!(
                "<block xmlns='{}'><item jid='{jid}'/></block>",
                ns::BLOCKING
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
}

/// A room's broadcast runs the routing hooks once per message (`Router::fan_out`), but the
/// inbound block still holds per recipient: one who blocks the sender's occupant JID, or
/// the room, gets none of its copies, while the others get theirs.
#[tokio::test]
async fn a_broadcast_skips_recipients_who_block_the_sender_or_the_room() {
    let server = Server::builder()
        .users(&["owner", "talker", "hater", "leaver"])
        .start()
        .await;
    let mut owner = server.login_available("owner", "r", 0).await;
    let mut talker = server.login_available("talker", "r", 0).await;
    let mut hater = server.login_available("hater", "r", 0).await;
    let mut leaver = server.login_available("leaver", "r", 0).await;
    create(&mut owner, "Owner").await;
    join(&mut talker, "Talker").await;
    join(&mut hater, "Hater").await;
    join(&mut leaver, "Leaver").await;
    block(&mut hater, &format!("{ROOM}/Talker")).await;
    block(&mut leaver, ROOM).await;

    say(&mut talker, "from talker").await;
    owner.expect_message_with_body("from talker").await;
    say(&mut owner, "from owner").await;
    // Messages of one room arrive in order: had Hater been sent Talker's copy, it would
    // come before the owner's.
    let (message, before) = hater
        .expect_matching("the owner's message", |e| {
            body_of(e).as_deref() == Some("from owner")
        })
        .await;
    assert_eq!(message.attr("from"), Some(&*format!("{ROOM}/Owner")));
    assert_eq!(message.attr("to"), Some("hater@localhost/r"));
    assert!(
        !before
            .iter()
            .any(|e| body_of(e).as_deref() == Some("from talker")),
        "a blocked sender's message was delivered: {before:?}"
    );
    // The talker, who blocks nobody, gets the others' messages.
    talker.expect_message_with_body("from owner").await;
    say(&mut hater, "hater speaks").await;
    talker.expect_message_with_body("hater speaks").await;
    // The room serves this query under its lock, so after it every copy of the messages
    // above is in its recipient's mailbox: Leaver, who blocks the room, would read any of
    // them before its ping result.
    owner
        .iq("get", Some(ROOM), &format!("<query xmlns='{DISCO_INFO}'/>"))
        .await;
    leaver
        .send("<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let (_, before) = leaver
        .expect_matching("the ping result", |e| e.attr("id") == Some("ping1"))
        .await;
    assert!(
        !before.iter().any(|e| body_of(e).is_some()),
        "a blocked room's message was delivered: {before:?}"
    );
}
