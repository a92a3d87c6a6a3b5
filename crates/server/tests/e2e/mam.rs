//! XEP-0313 over real sockets: what Bob received is in Alice's archive under the same ids.

use crate::harness::{Server, body_of, ns, xml};

const MAM: &str = "urn:xmpp:mam:2";
const SID: &str = "urn:xmpp:sid:0";

#[tokio::test]
async fn alice_finds_her_chat_in_her_archive_under_the_ids_bob_saw() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "work", 0).await;

    let mut seen = Vec::new();
    for text in ["one", "two", "three"] {
        alice.message("bob@localhost", text).await;
        let message = bob.expect_message_with_body(text).await;
        let stanza_id = message
            .get_child("stanza-id", SID)
            .and_then(|s| s.attr("id"))
            .unwrap_or_else(|| panic!("no stanza-id: {}", xml(&message)))
            .to_owned();
        seen.push((text.to_owned(), stanza_id));
    }
    bob.message("alice@localhost", "four").await;
    alice.expect_message_with_body("four").await;

    alice
        .send(
            "<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='f1'>\
               <x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
                 <field var='with'><value>bob@localhost</value></field>\
               </x>\
               <set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set>\
             </query></iq>",
        )
        .await;
    let (fin, before) = alice
        .expect_matching("the MAM answer", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some("mam1")
        })
        .await;
    assert_eq!(fin.attr("type"), Some("result"), "{}", xml(&fin));
    let results: Vec<(String, String)> = before
        .iter()
        .filter_map(|m| m.get_child("result", MAM))
        .map(|result| {
            assert_eq!(result.attr("queryid"), Some("f1"));
            let forwarded = result
                .get_child("forwarded", "urn:xmpp:forward:0")
                .and_then(|f| f.get_child("message", ns::CLIENT))
                .expect("forwarded message");
            (
                body_of(forwarded).unwrap_or_default(),
                result.attr("id").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(results, seen, "oldest first, ids as Bob saw them");

    let fin = fin.get_child("fin", MAM).expect("fin");
    assert_eq!(
        fin.attr("complete"),
        Some("false"),
        "a fourth message remains"
    );
    let last = fin
        .get_child("set", "http://jabber.org/protocol/rsm")
        .and_then(|s| s.get_child("last", "http://jabber.org/protocol/rsm"))
        .map(|l| l.text())
        .expect("last");
    let rest = alice
        .iq(
            "set",
            None,
            &format!(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                   <after>{last}</after></set></query>"
            ),
        )
        .await;
    assert_eq!(
        rest.get_child("fin", MAM).and_then(|f| f.attr("complete")),
        Some("true"),
        "{}",
        xml(&rest)
    );

    // Bob's archive is his alone.
    let foreign = bob
        .iq(
            "set",
            Some("alice@localhost"),
            "<query xmlns='urn:xmpp:mam:2'/>",
        )
        .await;
    assert_eq!(
        crate::harness::stanza_error(&foreign).as_deref(),
        Some("forbidden")
    );
}
