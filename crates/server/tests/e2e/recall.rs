//! Message recall over real sockets: XEP-0424 retraction and XEP-0308 correction in one-to-one
//! chat and rooms, XEP-0425 moderation in rooms, and what MAM, offline delivery and the HTTP
//! history serve afterwards (tombstones and latest versions).

use crate::harness::{Client, Server, body_of, ns, stanza_error, xml};
use crate::muc_client;
use minidom::Element;
use serde_json::Value;

const RETRACT: &str = "urn:xmpp:message-retract:1";
const MODERATE: &str = "urn:xmpp:message-moderate:1";
const CORRECT: &str = "urn:xmpp:message-correct:0";
const SID: &str = "urn:xmpp:sid:0";
const MAM: &str = "urn:xmpp:mam:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const ROOM: &str = "den@conference.localhost";

/// Sends a chat message with origin-id and stanza id `id`.
async fn say(client: &mut Client, to: &str, id: &str, body: &str) {
    client
        .send(format!(
            "<message type='chat' to='{to}' id='{id}'><origin-id xmlns='{SID}' id='{id}'/>\
             <body>{body}</body></message>"
        ))
        .await;
}

/// Sends an XEP-0424 retraction of `target` (with the fallback body and store hint §4 asks
/// clients to add).
async fn retract(client: &mut Client, to: &str, kind: &str, id: &str, target: &str) {
    client
        .send(format!(
            "<message type='{kind}' to='{to}' id='{id}'><retract xmlns='{RETRACT}' id='{target}'/>\
             <body>This person attempted to retract a previous message.</body>\
             <store xmlns='urn:xmpp:hints'/></message>"
        ))
        .await;
}

/// Sends an XEP-0308 correction of `target`.
async fn correct(client: &mut Client, to: &str, kind: &str, id: &str, target: &str, body: &str) {
    client
        .send(format!(
            "<message type='{kind}' to='{to}' id='{id}'><body>{body}</body>\
             <replace xmlns='{CORRECT}' id='{target}'/></message>"
        ))
        .await;
}

/// The error answer to the message with stanza id `id`.
async fn expect_error(client: &mut Client, id: &str) -> String {
    let (error, _) = client
        .expect_matching(&format!("the error for {id}"), |e| {
            e.is("message", ns::CLIENT)
                && e.attr("id") == Some(id)
                && e.attr("type") == Some("error")
        })
        .await;
    stanza_error(&error).unwrap_or_else(|| panic!("no condition: {}", xml(&error)))
}

/// A message carrying the edit element `name` (`retract` or `replace`) naming `target`.
async fn expect_edit(client: &mut Client, name: &str, namespace: &str, target: &str) -> Element {
    client
        .expect_matching(&format!("<{name} id='{target}'/>"), |e| {
            e.is("message", ns::CLIENT)
                && e.get_child(name, namespace).and_then(|r| r.attr("id")) == Some(target)
        })
        .await
        .0
}

/// The stanza-id `by` gave a message.
fn stanza_id(message: &Element, by: &str) -> String {
    message
        .children()
        .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .unwrap_or_else(|| panic!("no stanza-id by {by}: {}", xml(message)))
        .to_owned()
}

/// Every archived message of a MAM query to `to` (the own archive when `None`), as
/// (result id, forwarded message), oldest first.
async fn mam(client: &mut Client, to: Option<&str>, form: &str) -> Vec<(String, Element)> {
    let id = client.id();
    let to = to.map(|to| format!(" to='{to}'")).unwrap_or_default();
    client
        .send(format!(
            "<iq type='set' id='{id}'{to}><query xmlns='{MAM}' queryid='q-{id}'>{form}</query></iq>"
        ))
        .await;
    let (fin, before) = client
        .expect_matching("the MAM answer", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some(id.as_str())
        })
        .await;
    assert_eq!(fin.attr("type"), Some("result"), "{}", xml(&fin));
    before
        .iter()
        .filter_map(|m| {
            let result = m.get_child("result", MAM)?;
            let forwarded = result
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.get_child("message", ns::CLIENT))
                .expect("forwarded message");
            Some((result.attr("id")?.to_owned(), forwarded.clone()))
        })
        .collect()
}

/// The MAM form selecting the conversation with `with`.
fn with(with: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='submit'>\
           <field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>\
           <field var='with'><value>{with}</value></field></x>"
    )
}

/// The archived copy with server id `id`.
fn archived<'a>(results: &'a [(String, Element)], id: &str) -> &'a Element {
    results
        .iter()
        .find(|(result, _)| result == id)
        .map(|(_, message)| message)
        .unwrap_or_else(|| panic!("{id} not in the archive"))
}

/// Asserts `message` is an XEP-0424 tombstone: no body, a `<retracted/>` with a stamp.
fn assert_tombstone(message: &Element) -> &Element {
    assert_eq!(body_of(message), None, "{}", xml(message));
    let retracted = message
        .get_child("retracted", RETRACT)
        .unwrap_or_else(|| panic!("no tombstone: {}", xml(message)));
    assert!(retracted.attr("stamp").is_some(), "{}", xml(message));
    retracted
}

/// Whether a disco#info answer lists `feature`.
fn has_feature(info: &Element, feature: &str) -> bool {
    const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    info.get_child("query", DISCO_INFO).is_some_and(|query| {
        query
            .children()
            .any(|f| f.is("feature", DISCO_INFO) && f.attr("var") == Some(feature))
    })
}

/// `/api/v1/history` with `with`, as the JSON messages array.
async fn http_history(server: &Server, token: &str, with: &str) -> Vec<Value> {
    let response = server
        .http_get_bearer(&format!("/api/v1/history?with={with}"), token)
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let page: Value = serde_json::from_str(&response.body).expect("json");
    page["messages"].as_array().cloned().expect("messages")
}

#[tokio::test]
async fn retraction_reaches_the_peer_and_leaves_a_tombstone_in_every_reader() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "work", 0).await;
    let token = alice.im_token().await;

    say(&mut alice, "bob@localhost", "m1", "wrong window").await;
    let original = bob.expect_message_with_body("wrong window").await;
    let server_id = stanza_id(&original, "bob@localhost");
    say(&mut alice, "bob@localhost", "m2", "kept").await;
    bob.expect_message_with_body("kept").await;

    // By origin-id, as XEP-0424 §4 has one-to-one clients do.
    retract(&mut alice, "bob@localhost", "chat", "r1", "m1").await;
    let notice = expect_edit(&mut bob, "retract", RETRACT, "m1").await;
    let retraction_id = stanza_id(&notice, "bob@localhost");

    let archive = mam(&mut alice, None, &with("bob@localhost")).await;
    let ids: Vec<&str> = archive.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 3, "original, kept, retraction: {ids:?}");
    let stone = archived(&archive, &server_id);
    assert_tombstone(stone);
    assert_eq!(stone.attr("id"), Some("m1"), "the tombstone keeps the ids");
    assert_eq!(
        stone.get_child("origin-id", SID).and_then(|o| o.attr("id")),
        Some("m1")
    );
    assert_eq!(body_of(&archive[1].1).as_deref(), Some("kept"));
    assert!(archived(&archive, &retraction_id).has_child("retract", RETRACT));
    // Bob's archive serves the same tombstone.
    let bobs = mam(&mut bob, None, &with("alice@localhost")).await;
    assert_tombstone(archived(&bobs, &server_id));

    let history = http_history(&server, &token, "bob@localhost").await;
    let first = history[0]["xml"].as_str().expect("xml");
    assert_eq!(history[0]["id"], server_id.as_str());
    // XEP-0424 §2: the server says it applies retractions to the archive.
    let info = alice
        .iq(
            "get",
            Some("localhost"),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert!(has_feature(&info, RETRACT), "{}", xml(&info));
    assert!(
        first.contains(RETRACT) && first.contains("retracted"),
        "{first}"
    );
    assert!(!first.contains("wrong window"), "{first}");
    assert!(history[1]["xml"].as_str().expect("xml").contains("kept"));
}

#[tokio::test]
async fn offline_delivery_hands_over_the_tombstone() {
    let server = Server::start(&[], &[("CONFAB__ARCHIVE__RETRACT_WINDOW_SECS", "0")]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    say(&mut alice, "carol@localhost", "m1", "regret").await;
    retract(&mut alice, "carol@localhost", "chat", "r1", "m1").await;
    alice.sync().await;

    let mut carol = server.login("carol", "phone").await;
    carol.send("<presence/>").await;
    let (stone, _) = carol
        .expect_matching("the offline tombstone", |e| {
            e.is("message", ns::CLIENT) && e.attr("id") == Some("m1")
        })
        .await;
    assert_tombstone(&stone);
    expect_edit(&mut carol, "retract", RETRACT, "m1").await;
}

#[tokio::test]
async fn retractions_by_someone_else_or_after_the_window_are_refused() {
    let server = Server::start(&[], &[("CONFAB__ARCHIVE__RETRACT_WINDOW_SECS", "1")]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "work", 0).await;

    say(&mut alice, "bob@localhost", "m1", "mine").await;
    let original = bob.expect_message_with_body("mine").await;
    let server_id = stanza_id(&original, "bob@localhost");

    // Bob names Alice's message by its server id (forbidden) or her client id (which is
    // not his, so no message of his has it).
    retract(&mut bob, "alice@localhost", "chat", "r1", &server_id).await;
    assert_eq!(expect_error(&mut bob, "r1").await, "forbidden");
    retract(&mut bob, "alice@localhost", "chat", "r2", "m1").await;
    assert_eq!(expect_error(&mut bob, "r2").await, "item-not-found");
    correct(
        &mut bob,
        "alice@localhost",
        "chat",
        "c1",
        &server_id,
        "edited",
    )
    .await;
    assert_eq!(expect_error(&mut bob, "c1").await, "forbidden");
    let delivered = alice.sync().await;
    assert!(
        !delivered
            .iter()
            .any(|e| e.has_child("retract", RETRACT) || e.has_child("replace", CORRECT)),
        "a refused edit is not delivered: {delivered:?}"
    );

    // The window is a second: the stamp must be more than a second old.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    retract(&mut alice, "bob@localhost", "chat", "r3", "m1").await;
    assert_eq!(expect_error(&mut alice, "r3").await, "not-allowed");

    let archive = mam(&mut alice, None, &with("bob@localhost")).await;
    assert_eq!(archive.len(), 1, "nothing else was archived");
    assert_eq!(body_of(&archive[0].1).as_deref(), Some("mine"));
}

#[tokio::test]
async fn corrections_show_the_latest_text_and_a_retracted_message_cannot_be_corrected() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "work", 0).await;
    let token = alice.im_token().await;

    say(&mut alice, "bob@localhost", "m1", "teh").await;
    let original = bob.expect_message_with_body("teh").await;
    let server_id = stanza_id(&original, "bob@localhost");
    correct(&mut alice, "bob@localhost", "chat", "c1", "m1", "the").await;
    bob.expect_message_with_body("the").await;

    let archive = mam(&mut alice, None, &with("bob@localhost")).await;
    assert_eq!(
        body_of(archived(&archive, &server_id)).as_deref(),
        Some("the")
    );
    // A second correction (XEP-0308 §5 names the original again), by server id this time.
    correct(
        &mut alice,
        "bob@localhost",
        "chat",
        "c2",
        &server_id,
        "the end",
    )
    .await;
    bob.expect_message_with_body("the end").await;
    let archive = mam(&mut bob, None, &with("alice@localhost")).await;
    let latest = archived(&archive, &server_id);
    assert_eq!(body_of(latest).as_deref(), Some("the end"));
    assert_eq!(
        latest.attr("id"),
        Some("m1"),
        "the corrected copy keeps its ids"
    );
    let history = http_history(&server, &token, "bob@localhost").await;
    let first = history[0]["xml"].as_str().expect("xml");
    assert!(
        first.contains("the end") && !first.contains("teh"),
        "{first}"
    );

    retract(&mut alice, "bob@localhost", "chat", "r1", "m1").await;
    expect_edit(&mut bob, "retract", RETRACT, "m1").await;
    correct(&mut alice, "bob@localhost", "chat", "c3", "m1", "back").await;
    assert_eq!(expect_error(&mut alice, "c3").await, "not-allowed");
    let archive = mam(&mut alice, None, &with("bob@localhost")).await;
    assert_tombstone(archived(&archive, &server_id));
}

/// Joins `ROOM` as `nick`; returns what arrived before the subject (presences, history).
async fn join(client: &mut Client, nick: &str) -> Vec<Element> {
    let mut arrived = muc_client::join(client, ROOM, nick, "").await;
    arrived.pop();
    arrived
}

/// Sends a groupchat message and returns the room's stanza-id, from the reflected copy.
async fn say_in_room(client: &mut Client, id: &str, body: &str) -> String {
    client
        .send(format!(
            "<message type='groupchat' to='{ROOM}' id='{id}'><origin-id xmlns='{SID}' id='{id}'/>\
             <body>{body}</body></message>"
        ))
        .await;
    let reflected = client.expect_message_with_body(body).await;
    stanza_id(&reflected, ROOM)
}

#[tokio::test]
async fn group_retraction_correction_and_moderation() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "work", 0).await;
    // The room's creator is its owner, hence a moderator; Bob is a participant.
    join(&mut alice, "Alice").await;
    alice
        .iq(
            "set",
            Some(ROOM),
            "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query>",
        )
        .await;
    join(&mut bob, "Bob").await;
    // XEP-0425 §3: the room says it takes moderation requests.
    let info = bob
        .iq(
            "get",
            Some(ROOM),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert!(has_feature(&info, MODERATE), "{}", xml(&info));

    let oops = say_in_room(&mut bob, "b1", "oops").await;
    alice.expect_message_with_body("oops").await;
    // A room message is named by the room's stanza-id (XEP-0424 §4).
    retract(&mut bob, ROOM, "groupchat", "b2", &oops).await;
    expect_edit(&mut alice, "retract", RETRACT, &oops).await;

    let typo = say_in_room(&mut bob, "b3", "helo").await;
    correct(&mut bob, ROOM, "groupchat", "b4", "b3", "hello").await;
    alice.expect_message_with_body("hello").await;

    let rude = say_in_room(&mut alice, "a1", "rude").await;
    // Bob may neither retract Alice's message nor moderate.
    retract(&mut bob, ROOM, "groupchat", "b5", &rude).await;
    assert_eq!(expect_error(&mut bob, "b5").await, "forbidden");
    let moderate = |id: &str| {
        format!(
            "<moderate xmlns='{MODERATE}' id='{id}'><retract xmlns='{RETRACT}'/>\
             <reason>spam</reason></moderate>"
        )
    };
    let refused = bob.iq("set", Some(ROOM), &moderate(&rude)).await;
    assert_eq!(
        stanza_error(&refused).as_deref(),
        Some("forbidden"),
        "{}",
        xml(&refused)
    );

    let spam = say_in_room(&mut bob, "b6", "buy now").await;
    alice.expect_message_with_body("buy now").await;
    let done = alice.iq("set", Some(ROOM), &moderate(&spam)).await;
    assert_eq!(done.attr("type"), Some("result"), "{}", xml(&done));
    let notice = expect_edit(&mut bob, "retract", RETRACT, &spam).await;
    assert_eq!(notice.attr("from"), Some(ROOM));
    let by = notice
        .get_child("retract", RETRACT)
        .and_then(|r| r.get_child("moderated", MODERATE))
        .and_then(|m| m.attr("by"));
    assert_eq!(by, Some(format!("{ROOM}/Alice").as_str()));
    // A retracted message cannot be moderated again, nor corrected.
    let again = alice.iq("set", Some(ROOM), &moderate(&spam)).await;
    assert_eq!(stanza_error(&again).as_deref(), Some("not-allowed"));
    correct(&mut bob, ROOM, "groupchat", "b7", "b6", "buy later").await;
    assert_eq!(expect_error(&mut bob, "b7").await, "not-allowed");

    // Joins after the edits see, in the room's history, what the archive serves.
    let mut carol = server.login_available("carol", "desk", 0).await;
    let history: Vec<Element> = join(&mut carol, "Carol")
        .await
        .into_iter()
        .filter(|e| e.is("message", ns::CLIENT))
        .collect();
    let remembered = |id: &str| {
        history
            .iter()
            .find(|m| {
                m.children()
                    .any(|c| c.is("stanza-id", SID) && c.attr("id") == Some(id))
            })
            .unwrap_or_else(|| panic!("{id} not in the history: {history:?}"))
    };
    assert_tombstone(remembered(&oops));
    assert_tombstone(remembered(&spam));
    assert_eq!(body_of(remembered(&typo)).as_deref(), Some("hello"));

    let archive = mam(&mut bob, Some(ROOM), "").await;
    assert_tombstone(archived(&archive, &oops));
    assert_eq!(body_of(archived(&archive, &typo)).as_deref(), Some("hello"));
    assert_eq!(body_of(archived(&archive, &rude)).as_deref(), Some("rude"));
    let stone = assert_tombstone(archived(&archive, &spam));
    assert!(stone.has_child("moderated", MODERATE), "{}", xml(stone));
    assert_eq!(
        stone
            .get_child("reason", RETRACT)
            .map(Element::text)
            .as_deref(),
        Some("spam")
    );
}
