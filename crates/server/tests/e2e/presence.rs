//! Presence subscriptions and broadcast (RFC 6121 §3–§4) between two real sessions.

use crate::harness::{Client, Server, ns, xml};
use minidom::Element;

/// Whether `e` is presence of `type_` (`None`: available) from `from`.
fn is_presence(e: &Element, type_: Option<&str>, from: &str) -> bool {
    e.is("presence", ns::CLIENT) && e.attr("type") == type_ && e.attr("from") == Some(from)
}

/// `user` adds `contact` to the roster and asks for a subscription; the contact approves.
/// Returns when `user` has received the contact's available presence.
async fn subscribe(user: &mut Client, contact: &mut Client, contact_bare: &str, user_bare: &str) {
    let reply = user
        .iq(
            "set",
            None,
            &format!(
                "<query xmlns='{}'><item jid='{contact_bare}' name='friend'/></query>",
                ns::ROSTER
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", xml(&reply));
    user.send(format!("<presence to='{contact_bare}' type='subscribe'/>"))
        .await;
    // RFC 6121 §3.1.3: the contact's server delivers the request from the user's bare JID.
    contact
        .expect_matching("the subscription request", |e| {
            is_presence(e, Some("subscribe"), user_bare)
        })
        .await;
    contact
        .send(format!("<presence to='{user_bare}' type='subscribed'/>"))
        .await;
    // §3.1.6: the user gets the approval and then the contact's current presence.
    let contact_full = contact.full_jid().to_owned();
    let (_, before) = user
        .expect_matching("the contact's available presence", |e| {
            is_presence(e, None, &contact_full)
        })
        .await;
    assert!(
        before
            .iter()
            .any(|e| is_presence(e, Some("subscribed"), contact_bare)),
        "the approval precedes the presence: {:?}",
        before.iter().map(xml).collect::<Vec<_>>()
    );
}

/// Alice and bob, online with a mutual subscription.
async fn friends(server: &Server) -> (Client, Client) {
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    subscribe(&mut alice, &mut bob, "bob@localhost", "alice@localhost").await;
    subscribe(&mut bob, &mut alice, "alice@localhost", "bob@localhost").await;
    (alice, bob)
}

#[tokio::test]
async fn mutual_subscription_shares_available_presence() {
    let server = Server::start(&[], &[]).await;
    let (mut alice, mut bob) = friends(&server).await;

    // Both rosters show subscription 'both'.
    for (client, contact) in [(&mut alice, "bob@localhost"), (&mut bob, "alice@localhost")] {
        let roster = client
            .iq("get", None, &format!("<query xmlns='{}'/>", ns::ROSTER))
            .await;
        let item = roster
            .get_child("query", ns::ROSTER)
            .and_then(|q| q.children().find(|i| i.attr("jid") == Some(contact)))
            .unwrap_or_else(|| panic!("{contact} in {}", xml(&roster)));
        assert_eq!(item.attr("subscription"), Some("both"), "{}", xml(&roster));
    }

    // A presence update reaches the contact, and a login of a new resource is seen too.
    alice
        .send("<presence><show>away</show><status>lunch</status></presence>")
        .await;
    let (update, _) = bob
        .expect_matching("alice's update", |e| {
            is_presence(e, None, "alice@localhost/a")
        })
        .await;
    assert_eq!(
        update
            .get_child("status", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("lunch")
    );
    let mut phone = server.login("bob", "phone").await;
    phone.send("<presence/>").await;
    alice
        .expect_matching("bob's new resource", |e| {
            is_presence(e, None, "bob@localhost/phone")
        })
        .await;
    // §4.2.3: the new resource gets alice's current presence in answer to its probes.
    phone
        .expect_matching("alice's presence for the new resource", |e| {
            is_presence(e, None, "alice@localhost/a")
        })
        .await;
}

#[tokio::test]
async fn dropped_connection_sends_unavailable_to_contacts() {
    let server = Server::start(&[], &[]).await;
    let (mut alice, bob) = friends(&server).await;
    // No </stream:stream>: the socket just goes away.
    drop(bob);
    let (unavailable, _) = alice
        .expect_matching("bob's unavailable presence", |e| {
            is_presence(e, Some("unavailable"), "bob@localhost/b")
        })
        .await;
    // RFC 6121 §4.5.2: broadcast to the contact's bare JID, delivered to each resource.
    assert_eq!(unavailable.attr("to"), Some("alice@localhost"));
}

#[tokio::test]
async fn presence_is_not_shared_without_a_subscription() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "a", 0).await;
    let mut bob = server.login_available("bob", "b", 0).await;
    alice
        .send("<presence><status>secret</status></presence>")
        .await;
    alice.sync().await;
    let before = bob.sync().await;
    assert!(
        before.iter().all(|e| !e.is("presence", ns::CLIENT)),
        "{:?}",
        before.iter().map(xml).collect::<Vec<_>>()
    );
}
