//! XEP-0313 through a real router: discovery, forms, RSM paging both ways, errors, and
//! preferences governing the archive view.

use crate::harness::{Client, body, router, stanza_ids, xml};
use confab_core::{Element, Stanza, ns};
use confab_log::mam::{FORWARD, MAM, MAM_EXTENDED, RSM};

/// What a query returned: the result messages in order, and the IQ answer.
struct Answer {
    results: Vec<Stanza>,
    reply: Stanza,
}

impl Answer {
    /// The `id` of each result (the archive's server id).
    fn ids(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|m| result(m).attr("id").unwrap_or_default().to_owned())
            .collect()
    }

    /// The body of each forwarded message.
    fn bodies(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|m| body(&Stanza::new(forwarded(m).clone())).unwrap_or_default())
            .collect()
    }

    fn fin(&self) -> &Element {
        assert_eq!(
            self.reply.type_attr(),
            Some("result"),
            "{}",
            xml(&self.reply)
        );
        self.reply.element.get_child("fin", MAM).expect("fin")
    }

    fn complete(&self) -> bool {
        match self.fin().attr("complete") {
            Some("true") => true,
            Some("false") | None => false,
            Some(other) => panic!("complete={other}"),
        }
    }

    fn rsm(&self, name: &str) -> Option<String> {
        self.fin()
            .get_child("set", RSM)
            .expect("set")
            .get_child(name, RSM)
            .map(Element::text)
    }

    /// The error condition of a failed query.
    fn error(&self) -> String {
        assert_eq!(
            self.reply.type_attr(),
            Some("error"),
            "{}",
            xml(&self.reply)
        );
        let error = self
            .reply
            .element
            .get_child("error", ns::CLIENT)
            .expect("error");
        error
            .children()
            .find(|c| c.ns() == ns::STANZAS)
            .expect("condition")
            .name()
            .to_owned()
    }
}

fn result(message: &Stanza) -> &Element {
    message.element.get_child("result", MAM).expect("result")
}

fn forwarded(message: &Stanza) -> &Element {
    result(message)
        .get_child("forwarded", FORWARD)
        .expect("forwarded")
        .get_child("message", ns::CLIENT)
        .expect("message")
}

/// Sends an IQ with `payload` (and optional `to`) and collects results until its answer.
async fn iq(client: &mut Client, kind: &str, to: Option<&str>, payload: &str) -> Answer {
    let to = to.map(|to| format!(" to='{to}'")).unwrap_or_default();
    client
        .send(&format!(
            "<iq xmlns='jabber:client' type='{kind}' id='mam-1'{to}>{payload}</iq>"
        ))
        .await;
    let mut results = Vec::new();
    loop {
        let stanza = client.recv().await;
        if stanza.element.name() == "iq" {
            if stanza.element.attr("id") == Some("mam-1") {
                return Answer {
                    results,
                    reply: stanza,
                };
            }
            // Roster pushes and the like: not part of the answer.
            continue;
        }
        results.push(stanza);
    }
}

/// A query with the given form fields (`<field/>` XML) and RSM children.
async fn query(client: &mut Client, fields: &str, rsm: &str) -> Answer {
    let form = if fields.is_empty() {
        String::new()
    } else {
        format!(
            "<x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x>"
        )
    };
    let set = if rsm.is_empty() {
        String::new()
    } else {
        format!("<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>")
    };
    iq(
        client,
        "set",
        None,
        &format!("<query xmlns='urn:xmpp:mam:2' queryid='q1'>{form}{set}</query>"),
    )
    .await
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// Alice and Bob online; `bodies` sent alternately starting with Alice; returns the
/// server ids in order (from receipts).
async fn conversation(bodies: &[&str]) -> (Client, Client, Vec<String>) {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    let mut ids = Vec::new();
    for (n, text) in bodies.iter().enumerate() {
        let (sender, recipient, to) = if n % 2 == 0 {
            (&mut alice, &mut bob, "bob@localhost")
        } else {
            (&mut bob, &mut alice, "alice@localhost")
        };
        sender.chat(to, "", text, "").await;
        ids.push(sender.receipt().await.server_id);
        recipient.recv().await;
    }
    (alice, bob, ids)
}

#[tokio::test]
async fn mam_is_an_account_feature_and_offers_its_form() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let info = iq(
        &mut alice,
        "get",
        Some("alice@localhost"),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await;
    let features: Vec<&str> = info
        .reply
        .element
        .get_child("query", ns::DISCO_INFO)
        .expect("info")
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(features.contains(&MAM), "{features:?}");
    assert!(features.contains(&MAM_EXTENDED), "{features:?}");

    let form = iq(&mut alice, "get", None, "<query xmlns='urn:xmpp:mam:2'/>").await;
    let vars: Vec<&str> = form
        .reply
        .element
        .get_child("query", MAM)
        .and_then(|q| q.get_child("x", ns::DATA_FORMS))
        .expect("form")
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert_eq!(
        vars,
        [
            "FORM_TYPE",
            "with",
            "start",
            "end",
            "after-id",
            "before-id",
            "ids"
        ]
    );
}

#[tokio::test]
async fn results_forward_the_delivered_message_with_its_stanza_id() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    alice.chat("bob@localhost", "id='m1'", "hello", "").await;
    let receipt = alice.receipt().await;
    let delivered = bob.recv().await;

    let answer = query(&mut bob, "", "").await;
    assert_eq!(answer.ids(), std::slice::from_ref(&receipt.server_id));
    assert_eq!(stanza_ids(&delivered)[0].0, receipt.server_id);
    let envelope = &answer.results[0];
    assert_eq!(envelope.element.attr("to"), Some("bob@localhost/b"));
    assert_eq!(envelope.element.attr("from"), Some("bob@localhost"));
    assert_eq!(result(envelope).attr("queryid"), Some("q1"));
    let stamp = result(envelope)
        .get_child("forwarded", FORWARD)
        .and_then(|f| f.get_child("delay", ns::DELAY))
        .and_then(|d| d.attr("stamp"))
        .expect("delay");
    assert_eq!(
        confab_log::receipt::parse_stamp(stamp),
        Some(receipt.stamp_ms)
    );
    // The archived copy is the message as delivered.
    assert_eq!(String::from(forwarded(envelope)), xml(&delivered));
    assert!(answer.complete());
    assert_eq!(answer.rsm("first"), Some(receipt.server_id.clone()));
    assert_eq!(answer.rsm("last"), Some(receipt.server_id));

    // The sender's archive holds it too.
    let mine = query(&mut alice, "", "").await;
    assert_eq!(mine.bodies(), ["hello"]);
}

#[tokio::test]
async fn rsm_pages_forward_and_backward_with_complete() {
    let (mut alice, _bob, ids) = conversation(&["1", "2", "3", "4", "5"]).await;

    let first = query(&mut alice, "", "<max>2</max>").await;
    assert_eq!(first.bodies(), ["1", "2"]);
    assert!(!first.complete());
    let after = first.rsm("last").expect("last");
    assert_eq!(after, ids[1]);
    let second = query(
        &mut alice,
        "",
        &format!("<max>2</max><after>{after}</after>"),
    )
    .await;
    assert_eq!(second.bodies(), ["3", "4"]);
    assert!(!second.complete());
    let after = second.rsm("last").expect("last");
    let third = query(
        &mut alice,
        "",
        &format!("<max>2</max><after>{after}</after>"),
    )
    .await;
    assert_eq!(third.bodies(), ["5"]);
    assert!(third.complete());

    // <before/> without a value: the last page, then backwards.
    let last = query(&mut alice, "", "<max>2</max><before/>").await;
    assert_eq!(last.bodies(), ["4", "5"]);
    assert!(!last.complete());
    let before = last.rsm("first").expect("first");
    let middle = query(
        &mut alice,
        "",
        &format!("<max>2</max><before>{before}</before>"),
    )
    .await;
    assert_eq!(middle.bodies(), ["2", "3"]);
    assert!(!middle.complete());
    let before = middle.rsm("first").expect("first");
    let start = query(
        &mut alice,
        "",
        &format!("<max>2</max><before>{before}</before>"),
    )
    .await;
    assert_eq!(start.bodies(), ["1"]);
    assert!(start.complete());

    // flip-page: the same page, newest first.
    let flipped = iq(
        &mut alice,
        "set",
        None,
        "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set><flip-page/></query>",
    )
    .await;
    assert_eq!(flipped.bodies(), ["5", "4"]);
    assert_eq!(flipped.rsm("first"), Some(ids[4].clone()));

    // Counting: <max>0</max>.
    let count = query(&mut alice, "", "<max>0</max>").await;
    assert!(count.results.is_empty());
    assert_eq!(count.rsm("count").as_deref(), Some("5"));
    assert_eq!(count.rsm("first"), None);

    // Extended fields: after-id / before-id / ids.
    let between = query(
        &mut alice,
        &format!(
            "{}{}",
            field("after-id", &ids[0]),
            field("before-id", &ids[3])
        ),
        "",
    )
    .await;
    assert_eq!(between.bodies(), ["2", "3"]);
    assert!(between.complete());
    let chosen = query(
        &mut alice,
        &format!(
            "<field var='ids'><value>{}</value><value>{}</value></field>",
            ids[4], ids[2]
        ),
        "",
    )
    .await;
    assert_eq!(chosen.bodies(), ["3", "5"]);
}

#[tokio::test]
async fn filters_by_with_and_time() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    let mut carol = Client::available(&router, "carol@localhost/c").await;
    alice.chat("bob@localhost", "", "to bob", "").await;
    alice.receipt().await;
    bob.recv().await;
    // Stamps have millisecond resolution: keep the two apart for the time filter.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    carol.chat("alice@localhost", "", "from carol", "").await;
    let carol_stamp = carol.receipt().await.stamp_ms;
    alice.recv().await;

    let with_carol = query(&mut alice, &field("with", "carol@localhost/c"), "").await;
    assert_eq!(with_carol.bodies(), ["from carol"]);
    let with_bob = query(&mut alice, &field("with", "bob@localhost"), "").await;
    assert_eq!(with_bob.bodies(), ["to bob"]);

    let stamp = confab_log::receipt::format_stamp(carol_stamp);
    let since = query(&mut alice, &field("start", &stamp), "").await;
    assert_eq!(since.bodies(), ["from carol"]);
    let far_future = query(&mut alice, &field("start", "2999-01-01T00:00:00Z"), "").await;
    assert!(far_future.results.is_empty() && far_future.complete());
    let past = query(&mut alice, &field("end", "2000-01-01T00:00:00Z"), "").await;
    assert!(past.results.is_empty());
    // Bob never spoke with Carol.
    let nothing = query(&mut bob, &field("with", "carol@localhost"), "").await;
    assert!(nothing.results.is_empty());
}

#[tokio::test]
async fn errors_unknown_cursor_foreign_archive_and_malformed_forms() {
    let (mut alice, mut bob, ids) = conversation(&["1", "2"]).await;

    let unknown = query(&mut alice, "", "<after>no-such-id</after>").await;
    assert_eq!(unknown.error(), "item-not-found");
    assert!(unknown.results.is_empty());
    let unknown_before = query(&mut alice, &field("before-id", "nope"), "").await;
    assert_eq!(unknown_before.error(), "item-not-found");

    let foreign = iq(
        &mut alice,
        "set",
        Some("bob@localhost"),
        "<query xmlns='urn:xmpp:mam:2'/>",
    )
    .await;
    assert_eq!(foreign.error(), "forbidden");
    assert!(foreign.results.is_empty());
    // Bob's own query still works, addressed to his bare JID.
    let own = iq(
        &mut bob,
        "set",
        Some("bob@localhost"),
        "<query xmlns='urn:xmpp:mam:2'/>",
    )
    .await;
    assert_eq!(own.ids(), ids);

    for fields in [
        field("start", "last tuesday"),
        field("colour", "red"),
        "<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field>".to_owned(),
    ] {
        let answer = query(&mut alice, &fields, "").await;
        assert_eq!(answer.error(), "bad-request", "{fields}");
    }
    let bad_max = query(&mut alice, "", "<max>lots</max>").await;
    assert_eq!(bad_max.error(), "bad-request");
}

#[tokio::test]
async fn preferences_are_stored_and_govern_the_archive_view() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    let mut carol = Client::available(&router, "carol@localhost/c").await;
    for (sender, text) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        sender.chat("alice@localhost", "", text, "").await;
        sender.receipt().await;
        alice.recv().await;
    }

    let defaults = iq(&mut alice, "get", None, "<prefs xmlns='urn:xmpp:mam:2'/>").await;
    let prefs = defaults
        .reply
        .element
        .get_child("prefs", MAM)
        .expect("prefs");
    assert_eq!(prefs.attr("default"), Some("always"));

    let set = iq(
        &mut alice,
        "set",
        None,
        "<prefs xmlns='urn:xmpp:mam:2' default='always'>\
           <always/><never><jid>bob@localhost</jid></never></prefs>",
    )
    .await;
    let stored = set.reply.element.get_child("prefs", MAM).expect("prefs");
    let never: Vec<String> = stored
        .get_child("never", MAM)
        .expect("never")
        .children()
        .map(Element::text)
        .collect();
    assert_eq!(never, ["bob@localhost"]);
    assert_eq!(query(&mut alice, "", "").await.bodies(), ["carol"]);

    // Messages are still committed and delivered whatever the preferences say.
    bob.chat("alice@localhost", "", "still delivered", "").await;
    bob.receipt().await;
    assert_eq!(
        body(&alice.recv().await).as_deref(),
        Some("still delivered")
    );

    // default='never' shows only the always list.
    iq(
        &mut alice,
        "set",
        None,
        "<prefs xmlns='urn:xmpp:mam:2' default='never'>\
           <always><jid>bob@localhost</jid></always><never/></prefs>",
    )
    .await;
    assert_eq!(
        query(&mut alice, "", "").await.bodies(),
        ["bob", "still delivered"]
    );
    // default='roster' with an empty roster and lists shows nothing from others.
    iq(
        &mut alice,
        "set",
        None,
        "<prefs xmlns='urn:xmpp:mam:2' default='roster'/>",
    )
    .await;
    assert!(query(&mut alice, "", "").await.results.is_empty());
    // …until Bob is in Alice's roster.
    let added = iq(
        &mut alice,
        "set",
        None,
        "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query>",
    )
    .await;
    assert_eq!(
        added.reply.type_attr(),
        Some("result"),
        "{}",
        xml(&added.reply)
    );
    assert_eq!(
        query(&mut alice, "", "").await.bodies(),
        ["bob", "still delivered"]
    );
    // Bob's view is his own preferences' business.
    assert_eq!(
        query(&mut bob, "", "").await.bodies(),
        ["bob", "still delivered"]
    );

    let bad = iq(
        &mut alice,
        "set",
        None,
        "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>",
    )
    .await;
    assert_eq!(bad.error(), "bad-request");
}
