//! Group messages on the durable path: committed before the room broadcasts them, with the
//! room's stanza-id and a Confab receipt carrying the room's sequence; resends recognised;
//! history on join from the archive across a restart; XEP-0313 on the room JID.

use crate::harness::{Client, Server, assert_error, body_of, ns, stanza_error, xml};
use crate::muc_client;
use minidom::Element;
use serde_json::Value;

const ROOM: &str = "grove@conference.localhost";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const DATA: &str = "jabber:x:data";
const ACK: &str = "urn:confab:ack:0";
const SID: &str = "urn:xmpp:sid:0";
const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";

/// Joins `ROOM` as `nick` with `inner` in the MUC `<x/>`; returns everything up to the subject.
async fn join(client: &mut Client, nick: &str, inner: &str) -> Vec<Element> {
    muc_client::join(client, ROOM, nick, inner).await
}

/// Creates `ROOM` with `owner` in it and submits `fields` (`(var suffix, value)`) as its
/// configuration.
async fn create(owner: &mut Client, fields: &[(&str, &str)]) {
    join(owner, "Owner", "").await;
    let fields: String = fields
        .iter()
        .map(|(var, value)| {
            format!("<field var='muc#roomconfig_{var}'><value>{value}</value></field>")
        })
        .collect();
    let reply = owner
        .iq(
            "set",
            Some(ROOM),
            &format!(
                "<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
                 {fields}</x></query>"
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
}

/// Sends a groupchat message with an origin-id.
async fn say(client: &mut Client, origin: &str, body: &str) {
    client
        .send(format!(
            "<message to='{ROOM}' type='groupchat' id='{origin}'>\
               <origin-id xmlns='{SID}' id='{origin}'/><body>{body}</body></message>"
        ))
        .await;
}

/// The receipt's `<ack/>` the sender gets next (skipping anything else).
async fn expect_ack(client: &mut Client) -> Element {
    let (receipt, _) = client
        .expect_matching("a commit receipt", |e| {
            e.is("message", ns::CLIENT) && e.has_child("ack", ACK)
        })
        .await;
    receipt.get_child("ack", ACK).expect("ack").clone()
}

/// The id of the room's `<stanza-id by='ROOM'/>` on a message.
fn room_stanza_id(message: &Element) -> String {
    let ids: Vec<&Element> = message
        .children()
        .filter(|c| c.is("stanza-id", SID) && c.attr("by") == Some(ROOM))
        .collect();
    assert_eq!(ids.len(), 1, "one stanza-id by the room: {}", xml(message));
    ids[0].attr("id").expect("id").to_owned()
}

/// Sends a MAM query on the room and returns the `<fin/>` (or the error IQ) and the results'
/// (id, body) in arrival order.
async fn room_mam(client: &mut Client, query: &str) -> (Element, Vec<(String, String)>) {
    let id = client.id();
    client
        .send(format!(
            "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='{MAM}' queryid='q-{id}'>{query}</query></iq>"
        ))
        .await;
    let (answer, before) = client
        .expect_matching("the MAM answer", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some(id.as_str())
        })
        .await;
    let results = before
        .iter()
        .filter_map(|m| {
            let result = m.get_child("result", MAM)?;
            assert_eq!(m.attr("from"), Some(ROOM), "{}", xml(m));
            assert_eq!(result.attr("queryid"), Some(format!("q-{id}").as_str()));
            let forwarded = result
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.get_child("message", ns::CLIENT))
                .expect("forwarded message");
            Some((
                result.attr("id").unwrap_or_default().to_owned(),
                body_of(forwarded).unwrap_or_default(),
            ))
        })
        .collect();
    (answer, results)
}

fn rsm_text(fin: &Element, name: &str) -> Option<String> {
    fin.get_child("fin", MAM)
        .and_then(|f| f.get_child("set", RSM))
        .and_then(|s| s.get_child(name, RSM))
        .map(Element::text)
}

#[tokio::test]
async fn group_messages_are_acknowledged_after_commit_and_resends_are_not_broadcast() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    create(&mut alice, &[]).await;
    join(&mut bob, "Bob", "").await;

    let mut server_ids = Vec::new();
    for (n, body) in ["one", "two", "three"].into_iter().enumerate() {
        let origin = format!("o-{body}");
        say(&mut alice, &origin, body).await;
        let ack = expect_ack(&mut alice).await;
        assert_eq!(
            ack.attr("seq"),
            Some((n + 1).to_string().as_str()),
            "{}",
            xml(&ack)
        );
        assert_eq!(ack.attr("with"), Some(ROOM));
        assert_eq!(ack.attr("client-id"), Some(origin.as_str()));
        let server_id = ack.attr("server-id").expect("server-id").to_owned();
        // The receipt came first: the copies carry the id it names.
        let echo = alice.expect_message_with_body(body).await;
        assert_eq!(room_stanza_id(&echo), server_id);
        let copy = bob.expect_message_with_body(body).await;
        assert_eq!(copy.attr("from"), Some(format!("{ROOM}/Owner").as_str()));
        assert_eq!(room_stanza_id(&copy), server_id);
        server_ids.push(server_id);
    }

    // A resend of "two" (its ack was "lost"): the original receipt, and no second copy.
    say(&mut alice, "o-two", "two").await;
    let ack = expect_ack(&mut alice).await;
    assert_eq!(ack.attr("server-id"), Some(server_ids[1].as_str()));
    assert_eq!(ack.attr("seq"), Some("2"));
    say(&mut alice, "o-four", "four").await;
    let ack = expect_ack(&mut alice).await;
    assert_eq!(
        ack.attr("seq"),
        Some("4"),
        "the resend took no sequence number"
    );
    let (_, before) = bob
        .expect_matching("four", |e| body_of(e).as_deref() == Some("four"))
        .await;
    assert!(
        before.iter().all(|e| body_of(e).is_none()),
        "nothing was broadcast between three and four: {:?}",
        before.iter().map(xml).collect::<Vec<_>>()
    );

    // A stanza-id a sender forges in the room's name does not survive.
    alice
        .send(format!(
            "<message to='{ROOM}' type='groupchat'><stanza-id xmlns='{SID}' by='{ROOM}' id='forged'/>\
               <body>five</body></message>"
        ))
        .await;
    let ack = expect_ack(&mut alice).await;
    let copy = bob.expect_message_with_body("five").await;
    assert_eq!(Some(room_stanza_id(&copy).as_str()), ack.attr("server-id"));

    // The room advertises its archive.
    let info = bob
        .iq(
            "get",
            Some(ROOM),
            &format!("<query xmlns='{}'/>", ns::DISCO_INFO),
        )
        .await;
    assert!(
        xml(&info).contains(&format!("var=\"{MAM}\""))
            || xml(&info).contains(&format!("var='{MAM}'")),
        "{}",
        xml(&info)
    );
}

#[tokio::test]
async fn history_on_join_comes_from_the_archive_after_a_restart() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    create(&mut alice, &[("persistentroom", "1")]).await;
    let mut ids = Vec::new();
    for body in ["h1", "h2", "h3"] {
        say(&mut alice, &format!("o-{body}"), body).await;
        let ack = expect_ack(&mut alice).await;
        ids.push(ack.attr("server-id").expect("server-id").to_owned());
        alice.expect_message_with_body(body).await;
    }
    drop(alice);

    let dir = server.stop().await;
    let server = Server::builder().data_dir(dir).start().await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let joined = join(&mut bob, "Bob", "<history maxstanzas='2'/>").await;
    let history: Vec<&Element> = joined
        .iter()
        .filter(|e| e.is("message", ns::CLIENT) && body_of(e).is_some())
        .collect();
    let bodies: Vec<String> = history.iter().filter_map(|e| body_of(e)).collect();
    assert_eq!(bodies, ["h2", "h3"], "the newest two, oldest first");
    for (message, id) in history.iter().zip(&ids[1..]) {
        assert_eq!(&room_stanza_id(message), id);
        let delay = message
            .get_child("delay", ns::DELAY)
            .unwrap_or_else(|| panic!("no delay: {}", xml(message)));
        assert_eq!(delay.attr("from"), Some(ROOM));
        assert!(delay.attr("stamp").is_some());
    }

    // And the sequence continues where it was.
    say(&mut bob, "o-h4", "h4").await;
    let ack = expect_ack(&mut bob).await;
    assert_eq!(ack.attr("seq"), Some("4"));
}

#[tokio::test]
async fn room_archive_pages_and_is_closed_to_non_members_of_a_members_only_room() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create(&mut alice, &[("membersonly", "1")]).await;
    let granted = alice
        .iq(
            "set",
            Some(ROOM),
            &format!("<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='member'/></query>"),
        )
        .await;
    assert_eq!(granted.attr("type"), Some("result"), "{}", xml(&granted));

    let mut ids = Vec::new();
    for body in ["m1", "m2", "m3", "m4", "m5"] {
        say(&mut alice, &format!("o-{body}"), body).await;
        let ack = expect_ack(&mut alice).await;
        ids.push(ack.attr("server-id").expect("server-id").to_owned());
        alice.expect_message_with_body(body).await;
    }
    let expected = |range: std::ops::Range<usize>| -> Vec<(String, String)> {
        range
            .map(|i| (ids[i].clone(), format!("m{}", i + 1)))
            .collect()
    };

    // Bob is a member but not in the room: he may read it, two at a time.
    let (fin, results) =
        room_mam(&mut bob, &format!("<set xmlns='{RSM}'><max>2</max></set>")).await;
    assert_eq!(fin.attr("type"), Some("result"), "{}", xml(&fin));
    assert_eq!(results, expected(0..2));
    let done = fin.get_child("fin", MAM).expect("fin");
    assert_eq!(done.attr("complete"), Some("false"));
    let last = rsm_text(&fin, "last").expect("last");
    let (fin, results) = room_mam(
        &mut bob,
        &format!("<set xmlns='{RSM}'><max>2</max><after>{last}</after></set>"),
    )
    .await;
    assert_eq!(results, expected(2..4));
    let last = rsm_text(&fin, "last").expect("last");
    let (fin, results) = room_mam(
        &mut bob,
        &format!("<set xmlns='{RSM}'><max>2</max><after>{last}</after></set>"),
    )
    .await;
    assert_eq!(results, expected(4..5));
    assert_eq!(
        fin.get_child("fin", MAM).and_then(|f| f.attr("complete")),
        Some("true")
    );
    // The last page, backwards.
    let (_, results) = room_mam(
        &mut bob,
        &format!("<set xmlns='{RSM}'><max>2</max><before/></set>"),
    )
    .await;
    assert_eq!(results, expected(3..5));
    // The extended filters: after-id through the form.
    let (_, results) = room_mam(
        &mut bob,
        &format!(
            "<x xmlns='{DATA}' type='submit'>\
               <field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>\
               <field var='after-id'><value>{}</value></field>\
               <field var='before-id'><value>{}</value></field>\
             </x>",
            ids[0], ids[3]
        ),
    )
    .await;
    assert_eq!(results, expected(1..3));

    // The query form, for a client that asks which fields the room takes.
    let form = bob
        .iq("get", Some(ROOM), &format!("<query xmlns='{MAM}'/>"))
        .await;
    assert_eq!(form.attr("type"), Some("result"), "{}", xml(&form));
    assert!(xml(&form).contains("after-id"), "{}", xml(&form));

    // Carol is nobody here: forbidden, and nothing leaks before the error.
    let (answer, results) = room_mam(&mut carol, "").await;
    assert_eq!(answer.attr("type"), Some("error"), "{}", xml(&answer));
    assert_eq!(stanza_error(&answer).as_deref(), Some("forbidden"));
    assert!(results.is_empty());

    // The room's messages are not in Alice's own archive.
    let own = alice
        .iq("set", None, &format!("<query xmlns='{MAM}'/>"))
        .await;
    assert_eq!(own.attr("type"), Some("result"), "{}", xml(&own));
    assert_eq!(rsm_text(&own, "first"), None, "{}", xml(&own));
}

#[tokio::test]
async fn group_history_over_http_for_members_only() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create(&mut alice, &[("membersonly", "1")]).await;
    let granted = alice
        .iq(
            "set",
            Some(ROOM),
            &format!("<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='member'/></query>"),
        )
        .await;
    assert_eq!(granted.attr("type"), Some("result"), "{}", xml(&granted));
    let mut ids = Vec::new();
    for body in ["g1", "g2", "g3"] {
        say(&mut alice, &format!("o-{body}"), body).await;
        let ack = expect_ack(&mut alice).await;
        ids.push(ack.attr("server-id").expect("server-id").to_owned());
        alice.expect_message_with_body(body).await;
    }

    // Bob, a member who is not in the room, pages back from the latest two.
    let token = bob.im_token().await;
    let response = server
        .http_get_bearer(&format!("/api/v1/history?group={ROOM}&limit=2"), &token)
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let page: Value = serde_json::from_str(&response.body).expect("json");
    assert_eq!(page["with"], ROOM);
    assert_eq!(page["last_seq"], 3);
    let got = |page: &Value| -> Vec<(String, u64)> {
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                assert_eq!(m["from"], "alice@localhost", "{m}");
                assert_eq!(m["to"], ROOM, "{m}");
                (
                    m["id"].as_str().expect("id").to_owned(),
                    m["seq"].as_u64().expect("seq"),
                )
            })
            .collect()
    };
    assert_eq!(got(&page), [(ids[1].clone(), 2), (ids[2].clone(), 3)]);
    let response = server
        .http_get_bearer(
            &format!("/api/v1/history?group={ROOM}&limit=2&before_seq=2"),
            &token,
        )
        .await;
    let page: Value = serde_json::from_str(&response.body).expect("json");
    assert_eq!(got(&page), [(ids[0].clone(), 1)]);
    let xml_text = page["messages"][0]["xml"].as_str().expect("xml");
    assert!(
        xml_text.contains(&ids[0]),
        "the stored copy carries its stanza-id: {xml_text}"
    );

    // Carol is not a member; a room that does not exist is not found; one of the two
    // parameters, not both.
    let carol_token = carol.im_token().await;
    let response = server
        .http_get_bearer(&format!("/api/v1/history?group={ROOM}"), &carol_token)
        .await;
    assert_error(&response, 403, "forbidden");
    let response = server
        .http_get_bearer("/api/v1/history?group=nowhere@conference.localhost", &token)
        .await;
    assert_error(&response, 404, "group_not_found");
    let response = server
        .http_get_bearer(
            &format!("/api/v1/history?group={ROOM}&with=alice@localhost"),
            &token,
        )
        .await;
    assert_error(&response, 400, "bad_request");
}

/// Two senders with messages in flight at once: the room's commits overlap, yet every
/// occupant sees the messages in the room's sequence order, and the sequence has no gaps.
#[tokio::test]
async fn concurrent_senders_are_broadcast_in_sequence_order() {
    const EACH: usize = 15;
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    let mut carol = server.login_available("carol", "c", 0).await;
    create(&mut alice, &[]).await;
    join(&mut bob, "Bob", "").await;
    join(&mut carol, "Carol", "").await;

    // Everything is written before anything is read: both senders' messages are in flight
    // together.
    for n in 0..EACH {
        say(&mut alice, &format!("a{n}"), &format!("alice {n}")).await;
        say(&mut bob, &format!("b{n}"), &format!("bob {n}")).await;
    }
    let mut seq_of = std::collections::HashMap::new();
    for sender in [&mut alice, &mut bob] {
        for _ in 0..EACH {
            let ack = expect_ack(sender).await;
            let seq: u64 = ack.attr("seq").expect("seq").parse().expect("number");
            seq_of.insert(ack.attr("server-id").expect("server-id").to_owned(), seq);
        }
    }
    let mut seqs: Vec<u64> = seq_of.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>());

    let mut seen = Vec::new();
    while seen.len() < 2 * EACH {
        let (copy, _) = carol
            .expect_matching("a group message", |e| {
                e.is("message", ns::CLIENT) && body_of(e).is_some()
            })
            .await;
        seen.push(seq_of[&room_stanza_id(&copy)]);
    }
    assert_eq!(
        seen,
        (1..=2 * EACH as u64).collect::<Vec<_>>(),
        "broadcast in sequence order"
    );
}
