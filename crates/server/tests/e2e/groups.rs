//! Persistent member groups (docs/protocol/confab-groups.md) over real sockets: created and
//! managed through `/api/v1/groups…`, their messages reach every available device of every
//! member whether or not it joined the room (once for a joined one), a removed member stops
//! getting them, the sync feed reports the group's arrival, change and removal, and the XMPP
//! side sees the XEP-0045 notifications.

use crate::harness::{Client, Server, assert_error, body_of, json_body, ns, xml};
use crate::muc_client::{self, codes};
use minidom::Element;
use serde_json::Value;

const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const SID: &str = "urn:xmpp:sid:0";

/// Creates a group as the token's owner and returns its room JID.
async fn create(server: &Server, token: &str, name: &str, members: &[&str]) -> String {
    let body = serde_json::json!({ "name": name, "members": members }).to_string();
    let reply = server.call("POST", "/api/v1/groups", token, &body).await;
    let created = json_body(&reply, 201);
    created["jid"]
        .as_str()
        .unwrap_or_else(|| panic!("no jid in {created}"))
        .to_owned()
}

/// `GET /api/v1/sync[?since=TOKEN]`.
async fn sync(server: &Server, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("/api/v1/sync?since={since}"),
        None => "/api/v1/sync".to_owned(),
    };
    json_body(&server.http_get_bearer(&path, token).await, 200)
}

/// The `affiliation` of the muc#user `<item/>` of a stanza.
fn item_affiliation(stanza: &Element) -> Option<&str> {
    stanza
        .get_child("x", MUC_USER)?
        .get_child("item", MUC_USER)?
        .attr("affiliation")
}

/// Waits for the status 101 notice ("your affiliation changed") from `room`.
async fn expect_affiliation_notice(client: &mut Client, room: &str) -> Element {
    client
        .expect_matching("an affiliation notice (status 101)", |e| {
            e.is("message", ns::CLIENT)
                && e.attr("from") == Some(room)
                && codes(e).contains(&"101".to_owned())
        })
        .await
        .0
}

/// Joins `room` as `nick`; returns once the subject (the end of a join) arrived.
async fn join(client: &mut Client, room: &str, nick: &str) {
    muc_client::join(client, room, nick, "<history maxstanzas='0'/>").await;
}

/// Sends a groupchat message to `room`.
async fn say(client: &mut Client, room: &str, body: &str) {
    client
        .send(format!(
            "<message type='groupchat' to='{room}'><body>{body}</body></message>"
        ))
        .await;
}

/// How many messages with `body` arrived before a ping answer (nothing else is in flight).
async fn copies_of(client: &mut Client, body: &str) -> usize {
    client
        .sync()
        .await
        .iter()
        .filter(|e| e.is("message", ns::CLIENT) && body_of(e).as_deref() == Some(body))
        .count()
}

/// A group message as a member's device gets it: from the sender's room/nick, groupchat,
/// with the room's stanza-id.
fn assert_group_copy(message: &Element, room: &str, nick: &str) {
    assert_eq!(message.attr("type"), Some("groupchat"), "{}", xml(message));
    assert_eq!(
        message.attr("from"),
        Some(format!("{room}/{nick}").as_str()),
        "{}",
        xml(message)
    );
    let by_room = message
        .children()
        .any(|c| c.is("stanza-id", SID) && c.attr("by") == Some(room) && c.attr("id").is_some());
    assert!(by_room, "no stanza-id by the room: {}", xml(message));
}

#[tokio::test]
async fn group_messages_reach_every_member_device_joined_or_not() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob_phone = server.login_available("bob", "phone", 0).await;
    let mut bob_desk = server.login_available("bob", "desk", 0).await;
    let mut carol = server.login_available("carol", "desk", 0).await;
    let token = alice.im_token().await;

    let room = create(&server, &token, "Coven", &["bob@localhost"]).await;
    assert!(room.ends_with("@conference.localhost"), "{room}");
    // Both of bob's devices learn they are members, over XMPP.
    for device in [&mut bob_phone, &mut bob_desk] {
        let notice = expect_affiliation_notice(device, &room).await;
        assert_eq!(
            item_affiliation(&notice),
            Some("member"),
            "{}",
            xml(&notice)
        );
    }

    join(&mut alice, &room, "alice").await;
    // The desk joins; the phone never does.
    join(&mut bob_desk, &room, "bob").await;
    alice.sync().await;

    say(&mut alice, &room, "hello coven").await;
    alice.expect_message_with_body("hello coven").await;
    let on_phone = bob_phone.expect_message_with_body("hello coven").await;
    assert_group_copy(&on_phone, &room, "alice");
    let on_desk = bob_desk.expect_message_with_body("hello coven").await;
    assert_group_copy(&on_desk, &room, "alice");
    // Exactly once each: no second copy for the joined session, none for the other.
    assert_eq!(copies_of(&mut bob_desk, "hello coven").await, 0);
    assert_eq!(copies_of(&mut bob_phone, "hello coven").await, 0);
    // Not a member: nothing.
    assert_eq!(copies_of(&mut carol, "hello coven").await, 0);

    // Removed through the API: the joined session is removed from the members-only room
    // (status 321), the other device gets status 101 with affiliation none.
    let path = format!("/api/v1/groups/{room}/members/bob@localhost");
    let removed = server.call("DELETE", &path, &token, "").await;
    assert_eq!(removed.status, 204, "{removed:?}");
    let (gone, _) = bob_desk
        .expect_matching("bob's removal from the room", |e| {
            e.is("presence", ns::CLIENT)
                && e.attr("type") == Some("unavailable")
                && e.attr("from") == Some(format!("{room}/bob").as_str())
        })
        .await;
    assert!(codes(&gone).contains(&"321".to_owned()), "{}", xml(&gone));
    let notice = expect_affiliation_notice(&mut bob_phone, &room).await;
    assert_eq!(item_affiliation(&notice), Some("none"), "{}", xml(&notice));

    say(&mut alice, &room, "bob is gone").await;
    alice.expect_message_with_body("bob is gone").await;
    assert_eq!(copies_of(&mut bob_phone, "bob is gone").await, 0);
    assert_eq!(copies_of(&mut bob_desk, "bob is gone").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn group_list_sync_feed_and_management_rules() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob = server.login_available("bob", "phone", 0).await;
    let mut carol = server.login_available("carol", "phone", 0).await;
    let alice_token = alice.im_token().await;
    let bob_token = bob.im_token().await;
    let carol_token = carol.im_token().await;

    let snapshot = sync(&server, &bob_token, None).await;
    assert_eq!(
        snapshot["groups"]["changed"],
        serde_json::json!([]),
        "{snapshot}"
    );
    let since = snapshot["next"].as_str().expect("next").to_owned();

    let room = create(&server, &alice_token, "Coven", &["bob@localhost"]).await;
    let added = sync(&server, &bob_token, Some(&since)).await;
    let changed = added["groups"]["changed"].as_array().expect("changed");
    assert_eq!(changed.len(), 1, "{added}");
    assert_eq!(changed[0]["jid"], room.as_str());
    assert_eq!(changed[0]["name"], "Coven");
    assert_eq!(changed[0]["affiliation"], "member");
    assert_eq!(changed[0]["last_seq"], 0);
    let since = added["next"].as_str().expect("next").to_owned();

    // The list and the detail.
    let list = json_body(
        &server.http_get_bearer("/api/v1/groups", &bob_token).await,
        200,
    );
    assert_eq!(list["groups"][0]["jid"], room.as_str(), "{list}");
    let detail_path = format!("/api/v1/groups/{room}");
    let detail = json_body(&server.http_get_bearer(&detail_path, &bob_token).await, 200);
    assert_eq!(
        detail["members"],
        serde_json::json!([
            { "jid": "alice@localhost", "affiliation": "owner" },
            { "jid": "bob@localhost", "affiliation": "member" },
        ]),
        "{detail}"
    );
    // A non-member learns nothing, not even that the group exists.
    assert_error(
        &server.http_get_bearer(&detail_path, &carol_token).await,
        404,
        "group_not_found",
    );

    // A plain member may not change the group; the owner may, and occupants get status 104.
    join(&mut bob, &room, "bob").await;
    let patch = r#"{"name":"Renamed","announcement":"Full moon"}"#;
    assert_error(
        &server.call("PATCH", &detail_path, &bob_token, patch).await,
        403,
        "forbidden",
    );
    let patched = server
        .call("PATCH", &detail_path, &alice_token, patch)
        .await;
    assert_eq!(patched.status, 204, "{patched:?}");
    let (notice, _) = bob
        .expect_matching("the configuration change notice", |e| {
            e.is("message", ns::CLIENT) && codes(e).contains(&"104".to_owned())
        })
        .await;
    assert_eq!(notice.attr("from"), Some(room.as_str()), "{}", xml(&notice));
    let renamed = sync(&server, &bob_token, Some(&since)).await;
    let changed = renamed["groups"]["changed"].as_array().expect("changed");
    assert_eq!(changed.len(), 1, "{renamed}");
    assert_eq!(changed[0]["name"], "Renamed");
    assert_eq!(changed[0]["announcement"], "Full moon");
    let since = renamed["next"].as_str().expect("next").to_owned();

    // A message shows as the group conversation and in the group's last sequence.
    join(&mut alice, &room, "alice").await;
    say(&mut alice, &room, "first").await;
    alice.expect_message_with_body("first").await;
    bob.expect_message_with_body("first").await;
    let conversations = json_body(
        &server
            .http_get_bearer("/api/v1/conversations", &bob_token)
            .await,
        200,
    );
    assert_eq!(
        conversations["conversations"][0]["with"],
        room.as_str(),
        "{conversations}"
    );
    let detail = json_body(&server.http_get_bearer(&detail_path, &bob_token).await, 200);
    assert_eq!(detail["last_seq"], 1, "{detail}");

    // Members are added by admins and owners only.
    let add = r#"{"members":["carol@localhost"]}"#;
    let members_path = format!("{detail_path}/members");
    assert_error(
        &server.call("POST", &members_path, &bob_token, add).await,
        403,
        "forbidden",
    );
    assert_error(
        &server
            .call(
                "POST",
                &members_path,
                &alice_token,
                r#"{"members":["nobody@localhost"]}"#,
            )
            .await,
        404,
        "member_not_found",
    );
    let added = server.call("POST", &members_path, &alice_token, add).await;
    assert_eq!(added.status, 204, "{added:?}");
    let notice = expect_affiliation_notice(&mut carol, &room).await;
    assert_eq!(
        item_affiliation(&notice),
        Some("member"),
        "{}",
        xml(&notice)
    );

    // Bob leaves by himself; his feed reports the group removed.
    let leave = format!("{members_path}/bob@localhost");
    let left = server.call("DELETE", &leave, &bob_token, "").await;
    assert_eq!(left.status, 204, "{left:?}");
    let removed = sync(&server, &bob_token, Some(&since)).await;
    assert_eq!(
        removed["groups"]["removed"],
        serde_json::json!([room.as_str()]),
        "{removed}"
    );
    assert_eq!(
        removed["groups"]["changed"],
        serde_json::json!([]),
        "{removed}"
    );
    let list = json_body(
        &server.http_get_bearer("/api/v1/groups", &bob_token).await,
        200,
    );
    assert_eq!(list["groups"], serde_json::json!([]), "{list}");
    // The last owner cannot leave.
    let owner_leaves = format!("{members_path}/alice@localhost");
    assert_error(
        &server.call("DELETE", &owner_leaves, &alice_token, "").await,
        409,
        "last_owner",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_group_survives_a_restart_and_still_reaches_members_who_never_joined() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let token = alice.im_token().await;
    let room = create(&server, &token, "Coven", &["bob@localhost"]).await;
    drop(alice);
    let dir = server.stop().await;

    let server = Server::builder().data_dir(dir).start().await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob = server.login_available("bob", "phone", 0).await;
    let bob_token = bob.im_token().await;
    let list = json_body(
        &server.http_get_bearer("/api/v1/groups", &bob_token).await,
        200,
    );
    assert_eq!(list["groups"][0]["jid"], room.as_str(), "{list}");
    assert_eq!(list["groups"][0]["name"], "Coven", "{list}");
    join(&mut alice, &room, "alice").await;
    say(&mut alice, &room, "still here").await;
    alice.expect_message_with_body("still here").await;
    let copy = bob.expect_message_with_body("still here").await;
    assert_group_copy(&copy, &room, "alice");
    server.stop().await;
}
