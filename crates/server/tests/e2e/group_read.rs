//! Group mentions and read state (docs/protocol/confab-groups.md, "Mentions and read state")
//! over real sockets: an XEP-0372 reference or an `@nick` flags the mentioned member's group
//! conversation even while they are offline, reading past it clears the flag, a displayed
//! marker from one device moves the read position (the other device is told, the room is
//! not), and the API answers unread counts and "read by N of M".

use crate::harness::{Client, HttpResponse, Server, body_of, json_body, password, xml};
use crate::muc_client;
use serde_json::Value;

const SID: &str = "urn:xmpp:sid:0";
const MARKERS: &str = "urn:xmpp:chat-markers:0";
const READ: &str = "urn:confab:read:0";

/// Creates a group as the token's owner and returns its room JID.
async fn create(server: &Server, token: &str, members: &[&str]) -> String {
    let body = serde_json::json!({ "name": "Coven", "members": members }).to_string();
    let created = json_body(
        &server.call("POST", "/api/v1/groups", token, &body).await,
        201,
    );
    created["jid"].as_str().expect("jid").to_owned()
}

/// Joins `room` as `nick`; returns once the subject (the end of a join) arrived.
async fn join(client: &mut Client, room: &str, nick: &str) {
    muc_client::join(client, room, nick, "<history maxstanzas='0'/>").await;
}

/// Sends a groupchat message (`extra` children after the body) as a joined occupant and
/// returns the room's stanza-id from its echo. Mentions are recorded before the broadcast,
/// so the echo also means they are stored.
async fn say(client: &mut Client, room: &str, body: &str, extra: &str) -> String {
    client
        .send(format!(
            "<message type='groupchat' to='{room}'><body>{body}</body>{extra}</message>"
        ))
        .await;
    let echo = client.expect_message_with_body(body).await;
    echo.children()
        .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some(room))
        .and_then(|c| c.attr("id"))
        .unwrap_or_else(|| panic!("no stanza-id in {}", xml(&echo)))
        .to_owned()
}

/// The group conversation of `room` in a conversation list or sync answer.
fn group_entry<'a>(conversations: &'a Value, room: &str) -> &'a Value {
    conversations
        .as_array()
        .expect("conversations")
        .iter()
        .find(|c| c["with"] == room)
        .unwrap_or_else(|| panic!("no conversation with {room} in {conversations}"))
}

/// The caller's entry for `room` in `GET /api/v1/conversations`.
async fn listed(server: &Server, token: &str, room: &str) -> Value {
    let list = json_body(
        &server.http_get_bearer("/api/v1/conversations", token).await,
        200,
    );
    group_entry(&list["conversations"], room).clone()
}

/// `GET …/messages/{id}/read` as `token`'s owner.
async fn read_by(server: &Server, token: &str, room: &str, id: &str) -> HttpResponse {
    let path = format!("/api/v1/groups/{room}/messages/{id}/read");
    server.http_get_bearer(&path, token).await
}

#[tokio::test]
async fn mentions_flag_offline_members_until_read() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut carol = server.login_available("carol", "desk", 0).await;
    let alice_token = alice.im_token().await;
    let carol_token = carol.im_token().await;
    let room = create(&server, &alice_token, &["bob@localhost", "carol@localhost"]).await;
    join(&mut alice, &room, "alice").await;
    join(&mut carol, &room, "Cee").await;

    // Bob never logged in: an XEP-0372 reference to his account.
    let to_bob = say(
        &mut alice,
        &room,
        "bob, the moon",
        "<reference xmlns='urn:xmpp:reference:0' type='mention' begin='0' end='3' uri='xmpp:bob@localhost'/>",
    )
    .await;
    // The fallback: carol's occupant nick, in another case; the sender's own is no mention.
    let to_carol = say(&mut alice, &room, "@cee: and @alice too", "").await;
    say(&mut alice, &room, "no one in particular", "").await;

    let carol_entry = listed(&server, &carol_token, &room).await;
    assert_eq!(carol_entry["mentioned"], true, "{carol_entry}");
    assert_eq!(
        carol_entry["mention_id"],
        to_carol.as_str(),
        "{carol_entry}"
    );
    let alice_entry = listed(&server, &alice_token, &room).await;
    assert_eq!(alice_entry["mentioned"], false, "{alice_entry}");
    assert_eq!(alice_entry["unread"], 0, "{alice_entry}");

    // Bob logs in later: the list and a sync snapshot show his mention.
    let mut bob = server.login_available("bob", "phone", 0).await;
    let bob_token = bob.im_token().await;
    let bob_entry = listed(&server, &bob_token, &room).await;
    assert_eq!(bob_entry["mentioned"], true, "{bob_entry}");
    assert_eq!(bob_entry["mention_id"], to_bob.as_str(), "{bob_entry}");
    assert_eq!(bob_entry["unread"], 3, "{bob_entry}");
    let snapshot = json_body(
        &server.http_get_bearer("/api/v1/sync", &bob_token).await,
        200,
    );
    let synced = group_entry(&snapshot["conversations"], &room);
    assert_eq!(synced["mentioned"], true, "{snapshot}");
    assert_eq!(synced["mention_id"], to_bob.as_str(), "{snapshot}");
    let since = snapshot["next"].as_str().expect("next").to_owned();

    // Reading up to the mention clears it; the sync feed reports the change.
    let read = serde_json::json!({ "with": room, "seq": 1 }).to_string();
    let moved = json_body(
        &server.call("POST", "/api/v1/read", &bob_token, &read).await,
        200,
    );
    assert_eq!(moved["seq"], 1, "{moved}");
    assert_eq!(moved["unread"], 2, "{moved}");
    let bob_entry = listed(&server, &bob_token, &room).await;
    assert_eq!(bob_entry["mentioned"], false, "{bob_entry}");
    assert_eq!(bob_entry["mention_id"], Value::Null, "{bob_entry}");
    assert_eq!(bob_entry["unread"], 2, "{bob_entry}");
    let path = format!("/api/v1/sync?since={since}");
    let changes = json_body(&server.http_get_bearer(&path, &bob_token).await, 200);
    let synced = group_entry(&changes["conversations"], &room);
    assert_eq!(synced["mentioned"], false, "{changes}");
    assert_eq!(synced["read_seq"], 1, "{changes}");

    // A newer mention flags him again.
    let again = say(
        &mut alice,
        &room,
        "once more",
        "<reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:bob@localhost'/>",
    )
    .await;
    let bob_entry = listed(&server, &bob_token, &room).await;
    assert_eq!(bob_entry["mention_id"], again.as_str(), "{bob_entry}");
    drop(bob);
    server.stop().await;
}

#[tokio::test]
async fn markers_move_group_read_position_across_devices_and_count_readers() {
    let server = Server::start(&[], &[]).await;
    server.add_user("dave", &password("dave")).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob_phone = server.login_available("bob", "phone", 0).await;
    let mut bob_desk = server.login_available("bob", "desk", 0).await;
    let mut carol = server.login_available("carol", "desk", 0).await;
    let mut dave = server.login_available("dave", "desk", 0).await;
    let alice_token = alice.im_token().await;
    let bob_token = bob_phone.im_token().await;
    let carol_token = carol.im_token().await;
    let dave_token = dave.im_token().await;
    let room = create(&server, &alice_token, &["bob@localhost", "carol@localhost"]).await;
    join(&mut alice, &room, "alice").await;
    join(&mut bob_phone, &room, "bob").await;
    bob_desk.sync().await;

    let first = say(&mut alice, &room, "one", "").await;
    let second = say(&mut alice, &room, "two", "").await;
    let third = say(&mut alice, &room, "three", "").await;
    bob_phone.expect_message_with_body("three").await;
    bob_desk.expect_message_with_body("three").await;
    assert_eq!(listed(&server, &bob_token, &room).await["unread"], 3);
    assert_eq!(listed(&server, &carol_token, &room).await["unread"], 3);
    // The sender's own messages are never unread for her.
    assert_eq!(listed(&server, &alice_token, &room).await["unread"], 0);

    // Nobody has read anything: 0 of the 2 members besides the sender.
    let answer = json_body(&read_by(&server, &alice_token, &room, &second).await, 200);
    assert_eq!(
        answer,
        serde_json::json!({ "read": 0, "members": 2, "readers": [] })
    );

    // Bob's phone marks the second message displayed (XEP-0333 in a room: the stanza-id).
    bob_phone
        .send(format!(
            "<message type='groupchat' to='{room}'><displayed xmlns='{MARKERS}' id='{second}'/></message>"
        ))
        .await;
    // His desk is told; the phone, which read, is not.
    let (push, _) = bob_desk
        .expect_matching("the read push", |e| e.has_child("read", READ))
        .await;
    let pushed = push.get_child("read", READ).expect("read");
    assert_eq!(pushed.attr("with"), Some(room.as_str()), "{}", xml(&push));
    assert_eq!(pushed.attr("seq"), Some("2"), "{}", xml(&push));
    assert_eq!(pushed.attr("unread"), Some("1"), "{}", xml(&push));
    // The marker is not broadcast: bob's next message reaches alice with no marker before it.
    bob_phone
        .send(format!(
            "<message type='groupchat' to='{room}'><body>after the marker</body></message>"
        ))
        .await;
    let own = bob_phone.expect_message_with_body("after the marker").await;
    let own = own
        .children()
        .find(|c| c.is("stanza-id", SID))
        .and_then(|c| c.attr("id"))
        .expect("stanza-id")
        .to_owned();
    let (_, before) = alice
        .expect_matching("bob's message", |e| {
            body_of(e).as_deref() == Some("after the marker")
        })
        .await;
    assert!(
        !before.iter().any(|e| e.has_child("displayed", MARKERS)),
        "a marker was broadcast: {before:?}"
    );
    let phone_saw = bob_phone.sync().await;
    assert!(
        !phone_saw.iter().any(|e| e.has_child("read", READ)),
        "the reading device got a push: {phone_saw:?}"
    );

    let bob_entry = listed(&server, &bob_token, &room).await;
    assert_eq!(bob_entry["read_seq"], 2, "{bob_entry}");
    assert_eq!(bob_entry["unread"], 1, "{bob_entry}");
    // Monotonic: a marker for an older message moves nothing.
    bob_phone
        .send(format!(
            "<message type='groupchat' to='{room}'><displayed xmlns='{MARKERS}' id='{first}'/></message>"
        ))
        .await;
    bob_phone.sync().await;
    assert_eq!(listed(&server, &bob_token, &room).await["read_seq"], 2);

    // Read by 1 of 2 for the first two messages, 0 of 2 for the third.
    for (id, read) in [(&first, 1), (&second, 1), (&third, 0)] {
        let answer = json_body(&read_by(&server, &carol_token, &room, id).await, 200);
        assert_eq!(answer["read"], read, "{id}: {answer}");
        assert_eq!(answer["members"], 2, "{id}: {answer}");
    }
    // Carol reads everything over HTTP: 2 of 2.
    let read = serde_json::json!({ "with": room, "seq": 3 }).to_string();
    let moved = json_body(
        &server
            .call("POST", "/api/v1/read", &carol_token, &read)
            .await,
        200,
    );
    // Bob's message after it is still unread for her.
    assert_eq!(moved["unread"], 1, "{moved}");
    let answer = json_body(&read_by(&server, &alice_token, &room, &second).await, 200);
    assert_eq!(
        answer,
        serde_json::json!({
            "read": 2, "members": 2, "readers": ["bob@localhost", "carol@localhost"],
        })
    );
    // Bob's own message (seq 4): counted over the other members, alice and carol, neither
    // of whom read that far.
    let answer = json_body(&read_by(&server, &bob_token, &room, &own).await, 200);
    assert_eq!(
        answer,
        serde_json::json!({ "read": 0, "members": 2, "readers": [] })
    );

    // Only members may ask; an unknown message is no answer either.
    let refused = read_by(&server, &dave_token, &room, &second).await;
    assert_eq!(json_body(&refused, 404)["error"], "group_not_found");
    let unknown = read_by(&server, &alice_token, &room, "no-such-id").await;
    assert_eq!(json_body(&unknown, 404)["error"], "message_not_found");
    server.stop().await;
}
