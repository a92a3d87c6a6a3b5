//! Roster management (RFC 6121 §2), subscriptions (§3) and presence (§4), end to end through
//! a real router with the default modules.

mod common;

use common::{Client, router_with_accounts};
use confab_core::{Element, Stanza, StanzaError, StanzaErrorCondition, ns};

/// Sends an IQ and returns the answer (which must be the next stanza the client receives).
async fn iq(client: &mut Client, xml: &str) -> Stanza {
    client.send(xml).await;
    client.recv().await
}

/// A roster get; the resource becomes "interested" and receives pushes from then on.
async fn roster_get(client: &mut Client, ver: Option<&str>) -> Stanza {
    let ver = ver.map(|v| format!(" ver='{v}'")).unwrap_or_default();
    let result = iq(
        client,
        &format!("<iq xmlns='jabber:client' type='get' id='r1'><query xmlns='jabber:iq:roster'{ver}/></iq>"),
    )
    .await;
    assert_eq!(result.type_attr(), Some("result"), "{}", xml(&result));
    assert_eq!(result.id(), Some("r1"));
    result
}

/// Connects, fetches the roster and sends initial presence, consuming the echo of it.
async fn online(router: &std::sync::Arc<confab_router::Router>, jid: &str) -> Client {
    let mut client = Client::connect(router, jid).await;
    roster_get(&mut client, None).await;
    client.send("<presence xmlns='jabber:client'/>").await;
    let echo = client.recv().await;
    assert_presence(&echo, None, jid);
    client
}

fn xml(stanza: &Stanza) -> String {
    String::from(&stanza.element)
}

/// Asserts a presence of `kind` (None: available) from `from`.
fn assert_presence(stanza: &Stanza, kind: Option<&str>, from: &str) {
    assert_eq!(stanza.element.name(), "presence", "{}", xml(stanza));
    assert_eq!(stanza.type_attr(), kind, "{}", xml(stanza));
    assert_eq!(stanza.element.attr("from"), Some(from), "{}", xml(stanza));
}

/// Asserts a roster push (from the account's bare JID) and returns its one item.
fn push_item<'a>(stanza: &'a Stanza, account: &str) -> &'a Element {
    assert_eq!(stanza.element.name(), "iq", "{}", xml(stanza));
    assert_eq!(stanza.type_attr(), Some("set"), "{}", xml(stanza));
    assert_eq!(
        stanza.element.attr("from"),
        Some(account),
        "{}",
        xml(stanza)
    );
    let query = stanza
        .element
        .get_child("query", ns::ROSTER)
        .expect("push carries a roster query");
    assert!(query.attr("ver").is_some(), "push carries a version");
    let mut items = query.children();
    let item = items.next().expect("push carries an item");
    assert!(items.next().is_none(), "exactly one item per push");
    item
}

/// Asserts an item's jid, subscription and ask.
fn assert_item(item: &Element, jid: &str, subscription: &str, ask: Option<&str>) {
    let shown = String::from(item);
    assert_eq!(item.attr("jid"), Some(jid), "{shown}");
    assert_eq!(item.attr("subscription"), Some(subscription), "{shown}");
    assert_eq!(item.attr("ask"), ask, "{shown}");
}

/// The items of a full roster result.
fn items(result: &Stanza) -> Vec<Element> {
    result
        .element
        .get_child("query", ns::ROSTER)
        .expect("full roster")
        .children()
        .cloned()
        .collect()
}

fn error_condition(stanza: &Stanza) -> StanzaErrorCondition {
    assert_eq!(stanza.type_attr(), Some("error"), "{}", xml(stanza));
    let error = stanza
        .element
        .get_child("error", ns::CLIENT)
        .expect("error child");
    StanzaError::from_element(error)
        .expect("defined condition")
        .condition
}

/// Drives alice@localhost/a and bob@localhost/b (both online, both interested) to a mutual
/// `both` subscription, asserting every step on the way.
async fn befriend(alice: &mut Client, bob: &mut Client) {
    // §3.1.2: the request is stamped with the bare JID; the requester's roster shows
    // None + Pending Out.
    alice
        .send("<presence xmlns='jabber:client' type='subscribe' to='bob@localhost'/>")
        .await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "none",
        Some("subscribe"),
    );
    let request = bob.recv().await;
    assert_presence(&request, Some("subscribe"), "alice@localhost");
    // Pending In is not visible in bob's roster: no push.
    bob.expect_silence().await;

    // §3.1.5: bob approves; bob's roster shows 'from', alice's 'to', and alice gets bob's
    // current presence right away.
    bob.send("<presence xmlns='jabber:client' type='subscribed' to='alice@localhost'/>")
        .await;
    let push = bob.recv().await;
    assert_item(
        push_item(&push, "bob@localhost"),
        "alice@localhost",
        "from",
        None,
    );
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "to",
        None,
    );
    assert_presence(&alice.recv().await, Some("subscribed"), "bob@localhost");
    assert_presence(&alice.recv().await, None, "bob@localhost/b");

    // The other direction: From + Pending Out for bob, then both.
    bob.send("<presence xmlns='jabber:client' type='subscribe' to='alice@localhost'/>")
        .await;
    let push = bob.recv().await;
    assert_item(
        push_item(&push, "bob@localhost"),
        "alice@localhost",
        "from",
        Some("subscribe"),
    );
    assert_presence(&alice.recv().await, Some("subscribe"), "bob@localhost");
    alice
        .send("<presence xmlns='jabber:client' type='subscribed' to='bob@localhost'/>")
        .await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "both",
        None,
    );
    let push = bob.recv().await;
    assert_item(
        push_item(&push, "bob@localhost"),
        "alice@localhost",
        "both",
        None,
    );
    assert_presence(&bob.recv().await, Some("subscribed"), "alice@localhost");
    assert_presence(&bob.recv().await, None, "alice@localhost/a");
    alice.expect_silence().await;
    bob.expect_silence().await;
}

#[tokio::test]
async fn roster_set_pushes_to_every_interested_resource_and_get_lists_it() {
    let router = router_with_accounts(&["alice"]).await;
    let mut a = Client::connect(&router, "alice@localhost/a").await;
    let mut b = Client::connect(&router, "alice@localhost/b").await;
    let mut uninterested = Client::connect(&router, "alice@localhost/c").await;
    assert!(items(&roster_get(&mut a, None).await).is_empty());
    roster_get(&mut b, None).await;

    a.send(
        "<iq xmlns='jabber:client' type='set' id='s1'><query xmlns='jabber:iq:roster'>\
         <item jid='Carol@localhost' name='Carol' subscription='both' ask='subscribe'>\
         <group>Friends</group><group>Work</group></item></query></iq>",
    )
    .await;
    // §2.1.6: pushes go to every interested resource, the requester included, and the
    // result follows the push. The client cannot set subscription or ask (§2.1.2.5).
    for client in [&mut a, &mut b] {
        let push = client.recv().await;
        let item = push_item(&push, "alice@localhost");
        assert_item(item, "carol@localhost", "none", None);
        assert_eq!(item.attr("name"), Some("Carol"));
        let groups: Vec<String> = item.children().map(Element::text).collect();
        assert_eq!(groups, ["Friends", "Work"]);
    }
    let result = a.recv().await;
    assert_eq!(result.type_attr(), Some("result"));
    assert_eq!(result.id(), Some("s1"));
    uninterested.expect_silence().await;
    b.expect_silence().await;

    let roster = items(&roster_get(&mut a, None).await);
    assert_eq!(roster.len(), 1);
    assert_item(&roster[0], "carol@localhost", "none", None);
    assert_eq!(roster[0].attr("name"), Some("Carol"));

    // Updating the name keeps the item; dropping the name attribute clears it.
    a.send(
        "<iq xmlns='jabber:client' type='set' id='s2'><query xmlns='jabber:iq:roster'>\
         <item jid='carol@localhost'/></query></iq>",
    )
    .await;
    let push = a.recv().await;
    let item = push_item(&push, "alice@localhost");
    assert_eq!(item.attr("name"), None);
    assert_eq!(item.children().count(), 0);
    push_item(&b.recv().await, "alice@localhost");
    assert_eq!(a.recv().await.type_attr(), Some("result"));
}

#[tokio::test]
async fn roster_versioning_answers_unchanged_rosters_with_an_empty_result() {
    let router = router_with_accounts(&["alice"]).await;
    let mut a = Client::connect(&router, "alice@localhost/a").await;
    let first = roster_get(&mut a, Some("")).await;
    let ver = first
        .element
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .expect("ver")
        .to_owned();

    // §2.6.3: same version, empty result without a query.
    let same = roster_get(&mut a, Some(&ver)).await;
    assert!(same.payload().is_none(), "{}", xml(&same));

    a.send(
        "<iq xmlns='jabber:client' type='set' id='s1'><query xmlns='jabber:iq:roster'>\
         <item jid='carol@localhost'/></query></iq>",
    )
    .await;
    let push = a.recv().await;
    let push_ver = push
        .element
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .expect("push ver")
        .to_owned();
    assert_ne!(push_ver, ver);
    assert_eq!(a.recv().await.type_attr(), Some("result"));

    // Changed since the cached version: the full roster with the new version.
    let changed = roster_get(&mut a, Some(&ver)).await;
    let query = changed
        .element
        .get_child("query", ns::ROSTER)
        .expect("full roster");
    assert_eq!(query.attr("ver"), Some(push_ver.as_str()));
    assert_eq!(items(&changed).len(), 1);
    let same = roster_get(&mut a, Some(&push_ver)).await;
    assert!(same.payload().is_none());
}

#[tokio::test]
async fn invalid_roster_sets_are_refused() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut a = Client::connect(&router, "alice@localhost/a").await;
    let cases = [
        // §2.3.3: more than one item.
        (
            "<item jid='b@localhost'/><item jid='c@localhost'/>",
            StanzaErrorCondition::BadRequest,
        ),
        ("", StanzaErrorCondition::BadRequest),
        // Duplicate groups.
        (
            "<item jid='b@localhost'><group>X</group><group>X</group></item>",
            StanzaErrorCondition::BadRequest,
        ),
        // Empty group name.
        (
            "<item jid='b@localhost'><group/></item>",
            StanzaErrorCondition::NotAcceptable,
        ),
        // Roster items are bare JIDs.
        (
            "<item jid='b@localhost/res'/>",
            StanzaErrorCondition::BadRequest,
        ),
        ("<item jid='a@b@c'/>", StanzaErrorCondition::JidMalformed),
        ("<item/>", StanzaErrorCondition::BadRequest),
        // §2.5.3: removing an item that does not exist.
        (
            "<item jid='nobody@localhost' subscription='remove'/>",
            StanzaErrorCondition::ItemNotFound,
        ),
    ];
    for (payload, condition) in cases {
        let answer = iq(
            &mut a,
            &format!(
                "<iq xmlns='jabber:client' type='set' id='bad'><query xmlns='jabber:iq:roster'>{payload}</query></iq>"
            ),
        )
        .await;
        assert_eq!(error_condition(&answer), condition, "payload {payload}");
    }
    // Nothing was stored by any of them.
    assert!(items(&roster_get(&mut a, None).await).is_empty());

    // §2.1.5: another account's roster is off limits.
    let answer = iq(
        &mut a,
        "<iq xmlns='jabber:client' type='get' id='x' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>",
    )
    .await;
    assert_eq!(error_condition(&answer), StanzaErrorCondition::Forbidden);
}

#[tokio::test]
async fn stream_features_advertise_versioning_and_pre_approval() {
    let router = router_with_accounts(&[]).await;
    let features = router.stream_features();
    assert!(features.iter().any(|f| f.is("ver", ns::ROSTER_VER)));
    assert!(features.iter().any(|f| f.is("sub", ns::PRE_APPROVAL)));
}

#[tokio::test]
async fn subscription_handshake_reaches_both() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    befriend(&mut alice, &mut bob).await;

    let roster = items(&roster_get(&mut alice, None).await);
    assert_eq!(roster.len(), 1);
    assert_item(&roster[0], "bob@localhost", "both", None);
    let roster = items(&roster_get(&mut bob, None).await);
    assert_item(&roster[0], "alice@localhost", "both", None);

    // Subscribed contacts see presence changes (§4.4.2); the sender gets its own copy.
    alice
        .send("<presence xmlns='jabber:client'><show>away</show></presence>")
        .await;
    assert_presence(&alice.recv().await, None, "alice@localhost/a");
    let away = bob.recv().await;
    assert_presence(&away, None, "alice@localhost/a");
    assert_eq!(
        away.element
            .get_child("show", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("away")
    );

    // A repeated approval or request changes nothing and is not delivered (Appendix A).
    bob.send("<presence xmlns='jabber:client' type='subscribed' to='alice@localhost'/>")
        .await;
    bob.expect_silence().await;
    alice.expect_silence().await;
}

#[tokio::test]
async fn subscription_request_to_offline_contact_waits_for_its_next_login() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    alice
        .send("<presence xmlns='jabber:client' type='subscribe' to='bob@localhost/ignored'><status>hi</status></presence>")
        .await;
    let push = alice.recv().await;
    // §3.1.2: a full JID is treated as the bare JID.
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "none",
        Some("subscribe"),
    );

    for _ in 0..2 {
        let mut bob = Client::connect(&router, "bob@localhost/b").await;
        // The request does not make alice a roster item of bob's.
        assert!(items(&roster_get(&mut bob, None).await).is_empty());
        bob.send("<presence xmlns='jabber:client'/>").await;
        assert_presence(&bob.recv().await, None, "bob@localhost/b");
        // §3.1.3: redelivered at every login until answered, extended content kept.
        let request = bob.recv().await;
        assert_presence(&request, Some("subscribe"), "alice@localhost");
        assert_eq!(request.element.attr("to"), Some("bob@localhost"));
        assert_eq!(
            request
                .element
                .get_child("status", ns::CLIENT)
                .map(Element::text)
                .as_deref(),
            Some("hi")
        );
        bob.expect_silence().await;
        bob.disconnect().await;
    }

    let mut bob = online(&router, "bob@localhost/b").await;
    assert_presence(&bob.recv().await, Some("subscribe"), "alice@localhost");
    bob.send("<presence xmlns='jabber:client' type='subscribed' to='alice@localhost'/>")
        .await;
    push_item(&bob.recv().await, "bob@localhost");
    bob.disconnect().await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "to",
        None,
    );
    assert_presence(&alice.recv().await, Some("subscribed"), "bob@localhost");
    // Bob approved while online, then left.
    assert_presence(&alice.recv().await, None, "bob@localhost/b");
    assert_presence(&alice.recv().await, Some("unavailable"), "bob@localhost/b");

    // Answered: no longer offered at login.
    let mut bob = online(&router, "bob@localhost/b").await;
    bob.expect_silence().await;
}

#[tokio::test]
async fn denied_request_clears_pending_out() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    alice
        .send("<presence xmlns='jabber:client' type='subscribe' to='bob@localhost'/>")
        .await;
    push_item(&alice.recv().await, "alice@localhost");
    bob.recv().await;
    bob.send("<presence xmlns='jabber:client' type='unsubscribed' to='alice@localhost'/>")
        .await;
    // The hidden pending row is gone: bob gets no push.
    bob.expect_silence().await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "none",
        None,
    );
    assert_presence(&alice.recv().await, Some("unsubscribed"), "bob@localhost");
    assert!(items(&roster_get(&mut bob, None).await).is_empty());

    // A request to an account that does not exist is answered with unsubscribed.
    alice
        .send("<presence xmlns='jabber:client' type='subscribe' to='ghost@localhost'/>")
        .await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "ghost@localhost",
        "none",
        Some("subscribe"),
    );
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "ghost@localhost",
        "none",
        None,
    );
    assert_presence(&alice.recv().await, Some("unsubscribed"), "ghost@localhost");
}

#[tokio::test]
async fn pre_approval_grants_the_later_request_without_asking() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;

    // §3.4.1: subscribed without a pending request is a pre-approval: recorded and pushed,
    // not routed.
    bob.send("<presence xmlns='jabber:client' type='subscribed' to='alice@localhost'/>")
        .await;
    let push = bob.recv().await;
    let item = push_item(&push, "bob@localhost");
    assert_item(item, "alice@localhost", "none", None);
    assert_eq!(item.attr("approved"), Some("true"));
    alice.expect_silence().await;

    // §3.4.2: the request is approved on bob's behalf and never shown to him.
    alice
        .send("<presence xmlns='jabber:client' type='subscribe' to='bob@localhost'/>")
        .await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "none",
        Some("subscribe"),
    );
    let push = bob.recv().await;
    let item = push_item(&push, "bob@localhost");
    assert_item(item, "alice@localhost", "from", None);
    assert_eq!(item.attr("approved"), None);
    bob.expect_silence().await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "to",
        None,
    );
    assert_presence(&alice.recv().await, Some("subscribed"), "bob@localhost");
    assert_presence(&alice.recv().await, None, "bob@localhost/b");
    alice.expect_silence().await;
}

#[tokio::test]
async fn cancelled_pre_approval_leaves_the_request_to_the_user() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    bob.send("<presence xmlns='jabber:client' type='subscribed' to='alice@localhost'/>")
        .await;
    push_item(&bob.recv().await, "bob@localhost");
    bob.send("<presence xmlns='jabber:client' type='unsubscribed' to='alice@localhost'/>")
        .await;
    let push = bob.recv().await;
    assert_eq!(push_item(&push, "bob@localhost").attr("approved"), None);
    // Cancelling a pre-approval is not routed.
    alice.expect_silence().await;

    alice
        .send("<presence xmlns='jabber:client' type='subscribe' to='bob@localhost'/>")
        .await;
    push_item(&alice.recv().await, "alice@localhost");
    assert_presence(&bob.recv().await, Some("subscribe"), "alice@localhost");
    alice.expect_silence().await;
}

#[tokio::test]
async fn unsubscribe_and_unsubscribed_end_each_direction() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    befriend(&mut alice, &mut bob).await;

    // §3.3: alice stops receiving bob's presence; bob's server tells her bob is "gone".
    alice
        .send("<presence xmlns='jabber:client' type='unsubscribe' to='bob@localhost'/>")
        .await;
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "from",
        None,
    );
    let push = bob.recv().await;
    assert_item(
        push_item(&push, "bob@localhost"),
        "alice@localhost",
        "to",
        None,
    );
    assert_presence(&bob.recv().await, Some("unsubscribe"), "alice@localhost");
    assert_presence(&alice.recv().await, Some("unavailable"), "bob@localhost/b");

    // Bob's presence no longer reaches alice; alice's still reaches bob.
    bob.send("<presence xmlns='jabber:client'><show>dnd</show></presence>")
        .await;
    assert_presence(&bob.recv().await, None, "bob@localhost/b");
    alice.expect_silence().await;

    // §3.2: alice revokes bob's subscription; bob first sees her go unavailable.
    alice
        .send("<presence xmlns='jabber:client' type='unsubscribed' to='bob@localhost'/>")
        .await;
    assert_presence(&bob.recv().await, Some("unavailable"), "alice@localhost/a");
    let push = alice.recv().await;
    assert_item(
        push_item(&push, "alice@localhost"),
        "bob@localhost",
        "none",
        None,
    );
    let push = bob.recv().await;
    assert_item(
        push_item(&push, "bob@localhost"),
        "alice@localhost",
        "none",
        None,
    );
    assert_presence(&bob.recv().await, Some("unsubscribed"), "alice@localhost");

    alice
        .send("<presence xmlns='jabber:client'><show>chat</show></presence>")
        .await;
    assert_presence(&alice.recv().await, None, "alice@localhost/a");
    bob.expect_silence().await;
}

#[tokio::test]
async fn roster_remove_cancels_both_subscriptions() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    befriend(&mut alice, &mut bob).await;

    alice
        .send(
            "<iq xmlns='jabber:client' type='set' id='rm'><query xmlns='jabber:iq:roster'>\
             <item jid='bob@localhost' subscription='remove'/></query></iq>",
        )
        .await;
    // §2.5.2: alice's side.
    let push = alice.recv().await;
    let item = push_item(&push, "alice@localhost");
    assert_eq!(item.attr("subscription"), Some("remove"));
    assert_presence(&alice.recv().await, Some("unavailable"), "bob@localhost/b");
    let result = alice.recv().await;
    assert_eq!(
        (result.type_attr(), result.id()),
        (Some("result"), Some("rm"))
    );
    // Bob's side: alice goes unavailable, then unsubscribe and unsubscribed arrive with
    // the roster following each.
    assert_presence(&bob.recv().await, Some("unavailable"), "alice@localhost/a");
    let push = bob.recv().await;
    assert_item(
        push_item(&push, "bob@localhost"),
        "alice@localhost",
        "to",
        None,
    );
    assert_presence(&bob.recv().await, Some("unsubscribe"), "alice@localhost");
    let push = bob.recv().await;
    assert_item(
        push_item(&push, "bob@localhost"),
        "alice@localhost",
        "none",
        None,
    );
    assert_presence(&bob.recv().await, Some("unsubscribed"), "alice@localhost");
    alice.expect_silence().await;
    bob.expect_silence().await;
    assert!(items(&roster_get(&mut alice, None).await).is_empty());
}

#[tokio::test]
async fn initial_presence_is_probed_and_broadcast() {
    let router = router_with_accounts(&["alice", "bob", "carol"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    befriend(&mut alice, &mut bob).await;

    // A second resource of alice's comes online.
    let mut phone = Client::connect(&router, "alice@localhost/phone").await;
    phone
        .send("<presence xmlns='jabber:client'><priority>3</priority></presence>")
        .await;
    // §4.2.2: the echo, the contact's presence (probe answered locally) and the user's
    // other resource.
    assert_presence(&phone.recv().await, None, "alice@localhost/phone");
    let answer = phone.recv().await;
    assert_presence(&answer, None, "bob@localhost/b");
    assert_eq!(answer.element.attr("to"), Some("alice@localhost/phone"));
    assert_presence(&phone.recv().await, None, "alice@localhost/a");
    phone.expect_silence().await;
    assert_presence(&bob.recv().await, None, "alice@localhost/phone");
    assert_presence(&alice.recv().await, None, "alice@localhost/phone");
    assert_eq!(phone.resource.priority(), 3);

    // Probe answers are only for subscribers: carol has no subscription to bob.
    let mut carol = Client::connect(&router, "carol@localhost/c").await;
    carol
        .send("<presence xmlns='jabber:client' type='probe' to='bob@localhost'/>")
        .await;
    carol.expect_silence().await;
    // A subscriber's explicit probe is answered (§4.3.2).
    alice
        .send("<presence xmlns='jabber:client' type='probe' to='bob@localhost'/>")
        .await;
    assert_presence(&alice.recv().await, None, "bob@localhost/b");
    // Probes are never delivered to the probed account's clients.
    bob.expect_silence().await;
}

#[tokio::test]
async fn resources_of_one_account_see_each_other() {
    let router = router_with_accounts(&["alice"]).await;
    let mut a = online(&router, "alice@localhost/a").await;
    let mut b = Client::connect(&router, "alice@localhost/b").await;
    b.send("<presence xmlns='jabber:client'/>").await;
    assert_presence(&b.recv().await, None, "alice@localhost/b");
    assert_presence(&b.recv().await, None, "alice@localhost/a");
    assert_presence(&a.recv().await, None, "alice@localhost/b");

    b.send("<presence xmlns='jabber:client'><show>xa</show></presence>")
        .await;
    assert_presence(&b.recv().await, None, "alice@localhost/b");
    let update = a.recv().await;
    assert_presence(&update, None, "alice@localhost/b");
    assert!(update.element.has_child("show", ns::CLIENT));

    // §4.5.2: unavailable goes to the other resources, not back to the sender.
    b.send("<presence xmlns='jabber:client' type='unavailable'/>")
        .await;
    assert_presence(&a.recv().await, Some("unavailable"), "alice@localhost/b");
    b.expect_silence().await;
    assert!(!b.resource.is_available());

    // Coming back is an initial presence again (a's presence is offered anew).
    b.send("<presence xmlns='jabber:client'/>").await;
    assert_presence(&b.recv().await, None, "alice@localhost/b");
    assert_presence(&b.recv().await, None, "alice@localhost/a");
    assert_presence(&a.recv().await, None, "alice@localhost/b");
}

#[tokio::test]
async fn priority_steers_bare_jid_messages() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut high = Client::connect(&router, "alice@localhost/high").await;
    high.send("<presence xmlns='jabber:client'><priority>500</priority></presence>")
        .await;
    high.recv().await;
    // §4.7.2.3: out of range values are clamped.
    assert_eq!(high.resource.priority(), 127);
    let mut low = Client::connect(&router, "alice@localhost/low").await;
    low.send("<presence xmlns='jabber:client'><priority>-5</priority></presence>")
        .await;
    assert_eq!(low.resource.priority(), -5);
    assert_presence(&low.recv().await, None, "alice@localhost/low");
    assert_presence(&low.recv().await, None, "alice@localhost/high");
    assert_presence(&high.recv().await, None, "alice@localhost/low");

    let bob = Client::connect(&router, "bob@localhost/b").await;
    bob.send(
        "<message xmlns='jabber:client' type='chat' to='alice@localhost'><body>hi</body></message>",
    )
    .await;
    let message = high.recv().await;
    assert_eq!(message.element.name(), "message");
    low.expect_silence().await;
}

#[tokio::test]
async fn directed_presence_target_learns_of_disconnect() {
    let router = router_with_accounts(&["alice", "carol"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut carol = online(&router, "carol@localhost/c").await;

    // §4.6: carol is no contact of alice's, but gets presence alice sends her directly…
    alice
        .send("<presence xmlns='jabber:client' to='carol@localhost'><show>chat</show></presence>")
        .await;
    assert_presence(&carol.recv().await, None, "alice@localhost/a");
    assert_eq!(alice.resource.state.lock().directed_to.len(), 1);
    // …not the broadcast…
    alice
        .send("<presence xmlns='jabber:client'><show>away</show></presence>")
        .await;
    assert_presence(&alice.recv().await, None, "alice@localhost/a");
    carol.expect_silence().await;
    // …and unavailable when the session ends, even without a goodbye (§4.6.3).
    alice.disconnect().await;
    assert_presence(
        &carol.recv().await,
        Some("unavailable"),
        "alice@localhost/a",
    );
    carol.expect_silence().await;
}

#[tokio::test]
async fn directed_unavailable_forgets_the_target() {
    let router = router_with_accounts(&["alice", "carol"]).await;
    let alice = online(&router, "alice@localhost/a").await;
    let mut carol = online(&router, "carol@localhost/c").await;
    alice
        .send("<presence xmlns='jabber:client' to='carol@localhost'/>")
        .await;
    carol.recv().await;
    alice
        .send("<presence xmlns='jabber:client' type='unavailable' to='carol@localhost'/>")
        .await;
    assert_presence(
        &carol.recv().await,
        Some("unavailable"),
        "alice@localhost/a",
    );
    assert!(alice.resource.state.lock().directed_to.is_empty());
    alice.disconnect().await;
    carol.expect_silence().await;
}

#[tokio::test]
async fn disconnect_without_unavailable_is_broadcast() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    befriend(&mut alice, &mut bob).await;
    let mut phone = online(&router, "alice@localhost/phone").await;
    assert_presence(&phone.recv().await, None, "bob@localhost/b");
    assert_presence(&phone.recv().await, None, "alice@localhost/a");
    assert_presence(&alice.recv().await, None, "alice@localhost/phone");
    assert_presence(&bob.recv().await, None, "alice@localhost/phone");

    bob.disconnect().await;
    assert_presence(&alice.recv().await, Some("unavailable"), "bob@localhost/b");
    assert_presence(&phone.recv().await, Some("unavailable"), "bob@localhost/b");
    alice.expect_silence().await;
}

#[tokio::test]
async fn offline_contacts_get_no_presence_and_are_not_probed_twice() {
    // A contact that is offline at login simply yields no probe answer; when it comes
    // online, its initial presence reaches the user through the broadcast.
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = online(&router, "alice@localhost/a").await;
    let mut bob = online(&router, "bob@localhost/b").await;
    befriend(&mut alice, &mut bob).await;
    bob.disconnect().await;
    assert_presence(&alice.recv().await, Some("unavailable"), "bob@localhost/b");
    alice.disconnect().await;

    let mut alice = online(&router, "alice@localhost/a").await;
    alice.expect_silence().await;
    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    bob.send("<presence xmlns='jabber:client'/>").await;
    assert_presence(&bob.recv().await, None, "bob@localhost/b");
    assert_presence(&bob.recv().await, None, "alice@localhost/a");
    assert_presence(&alice.recv().await, None, "bob@localhost/b");
    alice.expect_silence().await;
}
