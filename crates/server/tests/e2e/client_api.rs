//! The client API's read models over real sockets: `GET /api/v1/conversations` and
//! `GET /api/v1/sync` follow what real XMPP sessions do (messages, displayed markers, roster
//! changes, private XML storage), and refuse bad input with JSON errors.

use crate::harness::{Client, STEP, Server, assert_error, ns, xml};
use serde_json::Value;

const SID: &str = "urn:xmpp:sid:0";
const MARKERS: &str = "urn:xmpp:chat-markers:0";
const PRIVATE: &str = "jabber:iq:private";

/// `GET path` with the token; must answer 200 JSON.
async fn get_json(server: &Server, path: &str, token: &str) -> Value {
    let response = server.http_get_bearer(path, token).await;
    assert_eq!(response.status, 200, "GET {path}: {response:?}");
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
}

/// Polls `GET path` until `ok` holds for the body: markers and roster changes reach the
/// store on the session's path, a moment after the client wrote them.
async fn eventually(
    server: &Server,
    path: &str,
    token: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let body = get_json(server, path, token).await;
        if ok(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} never satisfied the test: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends a chat message and returns the server id the recipient saw.
async fn send(from: &mut Client, to: &mut Client, to_bare: &str, body: &str) -> String {
    from.message(to_bare, body).await;
    let message = to.expect_message_with_body(body).await;
    message
        .get_child("stanza-id", SID)
        .and_then(|s| s.attr("id"))
        .unwrap_or_else(|| panic!("no stanza-id: {}", xml(&message)))
        .to_owned()
}

/// `<displayed/>` for the message with server id `id`, sent to `to`.
async fn displayed(client: &mut Client, to: &str, id: &str) {
    client
        .send(format!(
            "<message type='chat' to='{to}'><displayed xmlns='{MARKERS}' id='{id}'/></message>"
        ))
        .await;
    client.sync().await;
}

/// The `with` of each entry of a conversation list.
fn withs(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|c| c["with"].as_str().expect("with"))
        .collect()
}

/// The entry with `with` in a conversation list.
fn entry<'a>(list: &'a Value, with: &str) -> &'a Value {
    list.as_array()
        .expect("array")
        .iter()
        .find(|c| c["with"] == with)
        .unwrap_or_else(|| panic!("{with} in {list}"))
}

#[tokio::test]
async fn conversations_are_listed_newest_first_with_read_state_and_paged() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob = server.login_available("bob", "desk", 0).await;
    let mut carol = server.login_available("carol", "desk", 0).await;

    send(&mut bob, &mut alice, "alice@localhost", "from bob").await;
    send(&mut carol, &mut alice, "alice@localhost", "carol one").await;
    let carol_two = send(&mut carol, &mut alice, "alice@localhost", "carol two").await;
    // A note to self: one conversation, listed once, never unread.
    alice.message("alice@localhost", "note to self").await;
    alice.expect_message_with_body("note to self").await;
    let token = alice.im_token().await;

    let page = get_json(&server, "/api/v1/conversations", &token).await;
    let list = &page["conversations"];
    assert_eq!(
        withs(list),
        ["alice@localhost", "carol@localhost", "bob@localhost"],
        "{page}"
    );
    assert!(page.get("next").is_none(), "{page}");
    let me = entry(list, "alice@localhost");
    assert_eq!(me["conversation"], "alice@localhost alice@localhost");
    assert_eq!(
        (me["last_seq"].as_u64(), me["unread"].as_u64()),
        (Some(1), Some(0))
    );
    let with_carol = entry(list, "carol@localhost");
    assert_eq!(
        with_carol["conversation"],
        "alice@localhost carol@localhost"
    );
    assert_eq!(with_carol["last_seq"], 2);
    assert_eq!(with_carol["read_seq"], 0);
    assert_eq!(with_carol["unread"], 2);
    assert_eq!(with_carol["last_message"]["id"], carol_two.as_str());
    assert_eq!(with_carol["last_message"]["from"], "carol@localhost");
    assert_eq!(with_carol["last_message"]["seq"], 2);
    assert!(
        with_carol["last_message"]["xml"]
            .as_str()
            .is_some_and(|x| x.contains("carol two")),
        "{with_carol}"
    );
    assert_eq!(entry(list, "bob@localhost")["unread"], 1);

    // Alice reads carol's messages: the marker moves her read position and, being archived
    // itself, makes that conversation the most recent one.
    displayed(&mut alice, "carol@localhost", &carol_two).await;
    let page = eventually(&server, "/api/v1/conversations", &token, |page| {
        page["conversations"][0]["read_seq"] == 2
    })
    .await;
    let list = &page["conversations"];
    assert_eq!(
        withs(list),
        ["carol@localhost", "alice@localhost", "bob@localhost"],
        "{page}"
    );
    let with_carol = entry(list, "carol@localhost");
    assert_eq!(
        (
            with_carol["last_seq"].as_u64(),
            with_carol["unread"].as_u64()
        ),
        (Some(3), Some(0))
    );
    assert_eq!(with_carol["last_message"]["from"], "alice@localhost");
    // Carol's own list counts from her side: nothing unread (a marker is not news).
    let carol_token = carol.im_token().await;
    let carol_page = get_json(&server, "/api/v1/conversations", &carol_token).await;
    assert_eq!(withs(&carol_page["conversations"]), ["alice@localhost"]);
    assert_eq!(carol_page["conversations"][0]["unread"], 0);

    // Paging by one walks the same list, each conversation once.
    let mut walked = Vec::new();
    let mut path = "/api/v1/conversations?limit=1".to_owned();
    loop {
        let page = get_json(&server, &path, &token).await;
        let list = page["conversations"].as_array().expect("array").clone();
        assert!(list.len() <= 1, "{page}");
        walked.extend(
            list.into_iter()
                .map(|c| c["with"].as_str().map(str::to_owned)),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/conversations?limit=1&before={next}"),
            None => break,
        }
        assert!(walked.len() <= 3, "paging does not end: {walked:?}");
    }
    assert_eq!(
        walked,
        ["carol@localhost", "alice@localhost", "bob@localhost"].map(|s| Some(s.to_owned()))
    );

    // Bad input.
    for path in [
        "/api/v1/conversations?limit=0",
        "/api/v1/conversations?limit=501",
        "/api/v1/conversations?limit=ten",
        "/api/v1/conversations?before=not-a-cursor",
        "/api/v1/conversations?bogus=1",
    ] {
        let response = server.http_get_bearer(path, &token).await;
        assert_error(&response, 400, "bad_request");
    }
    let response = server.http_get("/api/v1/conversations").await;
    assert_error(&response, 401, "unauthorized");
    assert!(
        response.headers.contains("www-authenticate: bearer"),
        "{response:?}"
    );
    let response = server
        .http_get_bearer("/api/v1/conversations", "not-a-token")
        .await;
    assert_error(&response, 401, "unauthorized");
}

#[tokio::test]
async fn sync_feed_follows_roster_messages_markers_and_private_storage() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "phone", 0).await;
    let mut bob = server.login_available("bob", "desk", 0).await;
    let token = alice.im_token().await;

    let snapshot = get_json(&server, "/api/v1/sync", &token).await;
    assert_eq!(snapshot["full"], true, "{snapshot}");
    assert_eq!(snapshot["more"], false, "{snapshot}");
    assert_eq!(snapshot["roster"]["changed"], Value::Array(vec![]));
    assert_eq!(snapshot["conversations"], Value::Array(vec![]));
    let start = snapshot["next"].as_str().expect("next").to_owned();

    // A roster item, a private XML fragment, a message and the marker that reads it.
    let reply = alice
        .iq(
            "set",
            None,
            &format!(
                "<query xmlns='{}'><item jid='bob@localhost' name='Bob'>\
                 <group>Friends</group></item></query>",
                ns::ROSTER
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    let reply = alice
        .iq(
            "set",
            None,
            &format!(
                "<query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'>\
                 <conference jid='room@conference.localhost' name='Room'/></storage></query>"
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    let id = send(&mut bob, &mut alice, "alice@localhost", "sync me").await;
    displayed(&mut alice, "bob@localhost", &id).await;

    let path = format!("/api/v1/sync?since={start}");
    // The read position moves on the marker's way in, the marker is archived on its way
    // out: wait for both.
    let feed = eventually(&server, &path, &token, |feed| {
        feed["read"].as_array().is_some_and(|r| !r.is_empty())
            && feed["conversations"][0]["last_seq"] == 2
    })
    .await;
    assert_eq!(feed["full"], false, "{feed}");
    assert_eq!(feed["more"], false, "{feed}");
    let roster = &feed["roster"];
    assert_eq!(roster["removed"], Value::Array(vec![]), "{feed}");
    assert_eq!(
        roster["changed"].as_array().map(Vec::len),
        Some(1),
        "{feed}"
    );
    let item = &roster["changed"][0];
    assert_eq!(item["jid"], "bob@localhost");
    assert_eq!(item["name"], "Bob");
    assert_eq!(item["subscription"], "none");
    assert_eq!(item["groups"], serde_json::json!(["Friends"]));
    assert_eq!(item["ask"], Value::Null);
    let private = &feed["private"]["changed"];
    assert_eq!(private.as_array().map(Vec::len), Some(1), "{feed}");
    assert_eq!(private[0]["key"], "storage|storage:bookmarks");
    assert!(
        private[0]["xml"]
            .as_str()
            .is_some_and(|x| x.contains("room@conference.localhost")),
        "{feed}"
    );
    assert_eq!(
        feed["read"],
        serde_json::json!([{"conversation": "alice@localhost bob@localhost",
                            "with": "bob@localhost", "seq": 1}])
    );
    let conversations = &feed["conversations"];
    assert_eq!(withs(conversations), ["bob@localhost"], "{feed}");
    let with_bob = &conversations[0];
    // The message (1) and alice's archived marker (2); alice has read the message.
    assert_eq!(with_bob["last_seq"], 2, "{feed}");
    assert_eq!(with_bob["read_seq"], 1, "{feed}");
    assert_eq!(with_bob["unread"], 0, "{feed}");

    // The same token gives the same answer while nothing changes.
    let again = get_json(&server, &path, &token).await;
    assert_eq!(again, feed);

    // Removing the contact is reported as a removal after the previous token, and a full
    // snapshot shows the state without it.
    let next = feed["next"].as_str().expect("next").to_owned();
    let reply = alice
        .iq(
            "set",
            None,
            &format!(
                "<query xmlns='{}'><item jid='bob@localhost' subscription='remove'/></query>",
                ns::ROSTER
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    let path = format!("/api/v1/sync?since={next}");
    let removal = eventually(&server, &path, &token, |feed| {
        feed["roster"]["removed"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(
        removal["roster"]["removed"],
        serde_json::json!(["bob@localhost"])
    );
    assert_eq!(removal["roster"]["changed"], Value::Array(vec![]));
    assert_eq!(removal["conversations"], Value::Array(vec![]), "{removal}");
    let snapshot = get_json(&server, "/api/v1/sync", &token).await;
    assert_eq!(
        snapshot["roster"]["changed"],
        Value::Array(vec![]),
        "{snapshot}"
    );
    assert_eq!(
        snapshot["roster"]["removed"],
        Value::Array(vec![]),
        "{snapshot}"
    );
    assert_eq!(withs(&snapshot["conversations"]), ["bob@localhost"]);
    assert_eq!(
        snapshot["private"]["changed"].as_array().map(Vec::len),
        Some(1)
    );

    // A feed of one change record per answer pages with `more` and reaches the same state.
    let mut path = "/api/v1/sync?limit=1".to_owned();
    let mut pages = 0;
    let mut documents = 0;
    let mut conversations = 0;
    loop {
        let page = get_json(&server, &path, &token).await;
        pages += 1;
        documents += page["private"]["changed"].as_array().map_or(0, Vec::len);
        conversations += page["conversations"].as_array().map_or(0, Vec::len);
        let next = page["next"].as_str().expect("next");
        path = format!("/api/v1/sync?limit=1&since={next}");
        if page["more"] == false {
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    assert!(pages > 1, "one record per answer needs several answers");
    assert_eq!(documents, 1);
    assert!(conversations >= 1);

    // Bad tokens are refused with a code the client acts on (drop the token, resync).
    let ahead = format!("{}ffffffffffffffff", &next[..40]);
    let other_store = format!("{}{}", "0".repeat(32), &next[32..]);
    for since in ["garbage", "", &ahead, &other_store, &next[..40]] {
        let response = server
            .http_get_bearer(&format!("/api/v1/sync?since={since}"), &token)
            .await;
        assert_error(&response, 400, "bad_sync_token");
    }
    // Alice's token is not bob's: a client mixing up accounts is told, not served a feed
    // that silently misses bob's earlier changes.
    let bob_token = bob.im_token().await;
    let response = server
        .http_get_bearer(&format!("/api/v1/sync?since={next}"), &bob_token)
        .await;
    assert_error(&response, 400, "bad_sync_token");
    let bob_feed = get_json(&server, "/api/v1/sync", &bob_token).await;
    assert_eq!(withs(&bob_feed["conversations"]), ["alice@localhost"]);
    for path in [
        "/api/v1/sync?limit=0",
        "/api/v1/sync?limit=501",
        "/api/v1/sync?x=1",
    ] {
        let response = server.http_get_bearer(path, &token).await;
        assert_error(&response, 400, "bad_request");
    }
    let response = server.http_get("/api/v1/sync").await;
    assert_error(&response, 401, "unauthorized");
    let response = server.http_get_bearer("/api/v1/sync", "forged").await;
    assert_error(&response, 401, "unauthorized");
}
