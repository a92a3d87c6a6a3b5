//! End-to-end tests of the IQ features answered by the server: service discovery (XEP-0030),
//! ping (XEP-0199), software version (XEP-0092), private storage (XEP-0049), vCards
//! (XEP-0054) and in-band registration (XEP-0077).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, router_with_accounts, router_with_options};
use confab_core::{Element, Stanza, StanzaError, StanzaErrorCondition, StreamErrorCondition, ns};
use confab_modules::ModuleOptions;
use confab_modules::register::{register_account, stream_feature};
use std::time::Duration;

/// Sends an IQ and returns the reply.
async fn iq(client: &mut Client, xml: &str) -> Stanza {
    client.send(xml).await;
    let reply = client.recv().await;
    assert_eq!(
        reply.element.name(),
        "iq",
        "expected an IQ reply, got {}",
        String::from(&reply.element)
    );
    reply
}

/// The defined condition of an error reply, `None` for anything else.
fn condition(stanza: &Stanza) -> Option<StanzaErrorCondition> {
    if stanza.type_attr() != Some("error") {
        return None;
    }
    stanza
        .element
        .get_child("error", ns::CLIENT)
        .and_then(StanzaError::from_element)
        .map(|error| error.condition)
}

/// Asserts a `type='result'` reply with the given id and returns its payload, if any.
fn result(stanza: &Stanza, id: &str) -> Option<Element> {
    assert_eq!(
        stanza.type_attr(),
        Some("result"),
        "expected a result, got {}",
        String::from(&stanza.element)
    );
    assert_eq!(stanza.id(), Some(id));
    stanza.payload().cloned()
}

fn features(query: &Element) -> Vec<String> {
    query
        .children()
        .filter(|child| child.is("feature", ns::DISCO_INFO))
        .filter_map(|child| child.attr("var").map(str::to_owned))
        .collect()
}

fn closed_options() -> ModuleOptions {
    ModuleOptions {
        registration_open: false,
        scram_iterations: 64,
    }
}

fn query(xml: &str) -> Element {
    xml.parse().expect("test xml")
}

// ---- XEP-0030 -------------------------------------------------------------------------

#[tokio::test]
async fn disco_info_on_server_lists_identity_and_every_module_feature() {
    let router = router_with_accounts(&["alice"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='d1' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let query = result(&reply, "d1").expect("query");
    assert!(query.is("query", ns::DISCO_INFO));
    let identity = query
        .get_child("identity", ns::DISCO_INFO)
        .expect("identity");
    assert_eq!(identity.attr("category"), Some("server"));
    assert_eq!(identity.attr("type"), Some("im"));
    assert_eq!(identity.attr("name"), Some("Confab"));
    let features = features(&query);
    for feature in [
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::PING,
        ns::VERSION,
        ns::PRIVATE,
        ns::VCARD,
        ns::BLOCKING,
        ns::REGISTER,
    ] {
        assert!(
            features.iter().any(|f| f == feature),
            "missing {feature} in {features:?}"
        );
    }
    // Every module's declaration is listed, and each only once.
    let mut expected: Vec<String> = router
        .server_features()
        .iter()
        .map(|f| f.to_string())
        .collect();
    let mut listed = features.clone();
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn disco_info_on_account_answers_for_the_account() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='d2' to='bob@localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert_eq!(reply.element.attr("from"), Some("bob@localhost"));
    let query = result(&reply, "d2").expect("query");
    let identity = query
        .get_child("identity", ns::DISCO_INFO)
        .expect("identity");
    assert_eq!(identity.attr("category"), Some("account"));
    assert_eq!(identity.attr("type"), Some("registered"));
    let features = features(&query);
    assert!(features.iter().any(|f| f == ns::DISCO_INFO));
    assert!(features.iter().any(|f| f == ns::VCARD));
    // Server-only features are not claimed for the account.
    assert!(!features.iter().any(|f| f == ns::VERSION));

    // Own account, addressed without 'to'.
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='d3'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let query = result(&reply, "d3").expect("query");
    let identity = query
        .get_child("identity", ns::DISCO_INFO)
        .expect("identity");
    assert_eq!(identity.attr("category"), Some("account"));
}

#[tokio::test]
async fn disco_unknown_node_is_item_not_found() {
    let router = router_with_accounts(&["alice"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    for namespace in [ns::DISCO_INFO, ns::DISCO_ITEMS] {
        let reply = iq(
            &mut alice,
            &format!(
                "<iq xmlns='jabber:client' type='get' id='n1' to='localhost'>\
                 <query xmlns='{namespace}' node='nope'/></iq>"
            ),
        )
        .await;
        assert_eq!(condition(&reply), Some(StanzaErrorCondition::ItemNotFound));
    }
}

#[tokio::test]
async fn disco_items_on_server_is_empty() {
    let router = router_with_accounts(&["alice"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='i1' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    let query = result(&reply, "i1").expect("query");
    assert!(query.is("query", ns::DISCO_ITEMS));
    assert_eq!(query.children().count(), 0);
}

// ---- XEP-0199, XEP-0092, unknown namespaces --------------------------------------------

#[tokio::test]
async fn ping_to_server_and_own_account_is_answered() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    for (id, to) in [
        ("p1", " to='localhost'"),
        ("p2", ""),
        ("p3", " to='alice@localhost'"),
    ] {
        let reply = iq(
            &mut alice,
            &format!("<iq xmlns='jabber:client' type='get' id='{id}'{to}><ping xmlns='urn:xmpp:ping'/></iq>"),
        )
        .await;
        assert_eq!(result(&reply, id), None, "a pong has no payload");
    }
    // Another account is not pinged on its behalf.
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='p4' to='bob@localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(
        condition(&reply),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
}

#[tokio::test]
async fn version_reports_name_and_version_but_no_os() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let query = result(&reply, "v1").expect("query");
    assert_eq!(
        query
            .get_child("name", ns::VERSION)
            .map(Element::text)
            .as_deref(),
        Some("Confab")
    );
    assert_eq!(
        query
            .get_child("version", ns::VERSION)
            .map(Element::text)
            .as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(query.get_child("os", ns::VERSION).is_none());

    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='v2' to='bob@localhost'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    assert_eq!(
        condition(&reply),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
}

#[tokio::test]
async fn unknown_iq_namespace_is_service_unavailable() {
    let router = router_with_accounts(&["alice"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='u1' to='localhost'><query xmlns='urn:example:nothing'/></iq>",
    )
    .await;
    assert_eq!(
        condition(&reply),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
}

// ---- XEP-0049 -------------------------------------------------------------------------

#[tokio::test]
async fn private_storage_round_trips_and_answers_empty_for_unknown() {
    let router = router_with_accounts(&["alice"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='s1'><query xmlns='jabber:iq:private'>\
         <prefs xmlns='urn:example:prefs'><nick>Al</nick></prefs>\
         <other xmlns='urn:example:other'/></query></iq>",
    )
    .await;
    assert_eq!(result(&reply, "s1"), None);

    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='g1'><query xmlns='jabber:iq:private'>\
         <prefs xmlns='urn:example:prefs'/></query></iq>",
    )
    .await;
    let query = result(&reply, "g1").expect("query");
    let prefs = query
        .get_child("prefs", "urn:example:prefs")
        .expect("stored fragment");
    assert_eq!(
        prefs
            .get_child("nick", "urn:example:prefs")
            .map(Element::text)
            .as_deref(),
        Some("Al")
    );

    // Nothing stored under this name: the request comes back empty.
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='g2' to='alice@localhost'><query xmlns='jabber:iq:private'>\
         <bookmarks xmlns='storage:bookmarks'/></query></iq>",
    )
    .await;
    let query = result(&reply, "g2").expect("query");
    let empty = query
        .get_child("bookmarks", "storage:bookmarks")
        .expect("empty element");
    assert_eq!(empty.children().count(), 0);
}

#[tokio::test]
async fn private_storage_refuses_reserved_namespaces_and_bad_gets() {
    let router = router_with_accounts(&["alice"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    for reserved in [ns::CLIENT, "jabber:server", ns::PRIVATE] {
        let reply = iq(
            &mut alice,
            &format!(
                "<iq xmlns='jabber:client' type='set' id='r1'><query xmlns='jabber:iq:private'>\
                 <x xmlns='{reserved}'/></query></iq>"
            ),
        )
        .await;
        assert_eq!(
            condition(&reply),
            Some(StanzaErrorCondition::NotAcceptable),
            "{reserved}"
        );
    }
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='r2'><query xmlns='jabber:iq:private'>\
         <a xmlns='urn:a'/><b xmlns='urn:b'/></query></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::BadRequest));

    let big = "x".repeat(70 * 1024);
    let reply = iq(
        &mut alice,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='r3'><query xmlns='jabber:iq:private'>\
             <big xmlns='urn:big'>{big}</big></query></iq>"
        ),
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::NotAcceptable));
    // The refused fragment was not stored.
    let stored = router
        .store
        .document("alice", "big|urn:big")
        .await
        .expect("store");
    assert_eq!(stored, None);
}

#[tokio::test]
async fn private_storage_of_another_user_is_forbidden() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut bob = Client::connect(&router, "bob@localhost/desk").await;
    for kind in ["get", "set"] {
        let reply = iq(
            &mut bob,
            &format!(
                "<iq xmlns='jabber:client' type='{kind}' id='f1' to='alice@localhost'>\
                 <query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>"
            ),
        )
        .await;
        assert_eq!(
            condition(&reply),
            Some(StanzaErrorCondition::Forbidden),
            "{kind}"
        );
    }
    let stored = router
        .store
        .document("alice", "prefs|urn:example:prefs")
        .await
        .expect("store");
    assert_eq!(stored, None);
}

// ---- XEP-0054 -------------------------------------------------------------------------

#[tokio::test]
async fn vcard_set_own_and_get_own_and_others() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let mut bob = Client::connect(&router, "bob@localhost/desk").await;

    // Nothing published yet: an empty vCard.
    let reply = iq(
        &mut bob,
        "<iq xmlns='jabber:client' type='get' id='c0' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let vcard = result(&reply, "c0").expect("vCard");
    assert!(vcard.is("vCard", ns::VCARD));
    assert_eq!(vcard.children().count(), 0);

    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='c1'><vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard></iq>",
    )
    .await;
    assert_eq!(result(&reply, "c1"), None);

    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='c2'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let vcard = result(&reply, "c2").expect("vCard");
    assert_eq!(
        vcard
            .get_child("FN", ns::VCARD)
            .map(Element::text)
            .as_deref(),
        Some("Alice A.")
    );

    let reply = iq(
        &mut bob,
        "<iq xmlns='jabber:client' type='get' id='c3' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(reply.element.attr("from"), Some("alice@localhost"));
    let vcard = result(&reply, "c3").expect("vCard");
    assert_eq!(
        vcard
            .get_child("FN", ns::VCARD)
            .map(Element::text)
            .as_deref(),
        Some("Alice A.")
    );
}

#[tokio::test]
async fn vcard_of_another_user_cannot_be_set_and_size_is_capped() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut bob = Client::connect(&router, "bob@localhost/desk").await;
    let reply = iq(
        &mut bob,
        "<iq xmlns='jabber:client' type='set' id='c4' to='alice@localhost'>\
         <vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::Forbidden));
    assert_eq!(
        router
            .store
            .document("alice", "vcard")
            .await
            .expect("store"),
        None
    );

    let photo = "A".repeat(300 * 1024);
    let reply = iq(
        &mut bob,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='c5'><vCard xmlns='vcard-temp'>\
             <PHOTO><BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>"
        ),
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::NotAcceptable));
    assert_eq!(
        router.store.document("bob", "vcard").await.expect("store"),
        None
    );
}

// ---- XEP-0077 -------------------------------------------------------------------------

#[tokio::test]
async fn registration_get_reports_registered_account() {
    let router = router_with_accounts(&["alice"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='g1'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    let query = result(&reply, "g1").expect("query");
    assert!(query.has_child("registered", ns::REGISTER));
    assert_eq!(
        query
            .get_child("username", ns::REGISTER)
            .map(Element::text)
            .as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn password_change_stores_new_credentials() {
    let router = router_with_options(&["alice"], closed_options()).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    // Allowed even though registration is closed.
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='pw1' to='localhost'><query xmlns='jabber:iq:register'>\
         <username>alice</username><password>n3w-secret</password></query></iq>",
    )
    .await;
    assert_eq!(result(&reply, "pw1"), None);
    let credentials = router
        .store
        .credentials("alice")
        .await
        .expect("store")
        .expect("account");
    assert!(confab_auth::verify_password(&credentials, "n3w-secret"));
    assert!(!confab_auth::verify_password(&credentials, "alice"));
}

#[tokio::test]
async fn password_change_refuses_other_accounts_and_empty_passwords_without_echo() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='pw2'><query xmlns='jabber:iq:register'>\
         <username>bob</username><password>owned</password></query></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::Forbidden));
    // XEP-0077 §3.3: the password is not sent back.
    assert!(reply.element.get_child("query", ns::REGISTER).is_none());
    let bob = router
        .store
        .credentials("bob")
        .await
        .expect("store")
        .expect("account");
    assert!(confab_auth::verify_password(&bob, "bob"));

    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='pw3'><query xmlns='jabber:iq:register'>\
         <username>alice</username><password/></query></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::NotAcceptable));
    let alice_credentials = router
        .store
        .credentials("alice")
        .await
        .expect("store")
        .expect("account");
    assert!(confab_auth::verify_password(&alice_credentials, "alice"));
}

#[tokio::test]
async fn account_removal_answers_then_kicks_every_session_and_deletes() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut phone = Client::connect(&router, "alice@localhost/phone").await;
    let laptop = Client::connect(&router, "alice@localhost/laptop").await;
    let bob = Client::connect(&router, "bob@localhost/desk").await;
    let reply = iq(
        &mut phone,
        "<iq xmlns='jabber:client' type='set' id='rm1'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    )
    .await;
    assert_eq!(result(&reply, "rm1"), None);
    assert!(!router.store.account_exists("alice").await.expect("store"));
    for client in [&phone, &laptop] {
        let kicked = tokio::time::timeout(Duration::from_secs(2), client.resource.kicked())
            .await
            .expect("session kicked");
        assert_eq!(kicked.0, StreamErrorCondition::NotAuthorized);
    }
    // Other accounts are untouched.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), bob.resource.kicked())
            .await
            .is_err()
    );
    assert!(router.store.account_exists("bob").await.expect("store"));
}

#[tokio::test]
async fn account_removal_is_not_allowed_when_registration_is_closed() {
    let router = router_with_options(&["alice"], closed_options()).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='rm2'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::NotAllowed));
    assert!(router.store.account_exists("alice").await.expect("store"));
}

#[tokio::test]
async fn register_account_serves_form_and_creates_accounts() {
    let router = router_with_accounts(&["alice"]).await;
    let store = router.store.as_ref();

    let form = register_account(
        store,
        true,
        64,
        &query("<query xmlns='jabber:iq:register'/>"),
    )
    .await
    .expect("form")
    .expect("form payload");
    assert!(form.has_child("username", ns::REGISTER));
    assert!(form.has_child("password", ns::REGISTER));
    assert!(form.has_child("instructions", ns::REGISTER));

    let created = register_account(
        store,
        true,
        64,
        &query("<query xmlns='jabber:iq:register'><username>Carol</username><password>c4r0l</password></query>"),
    )
    .await
    .expect("registered");
    assert_eq!(created, None);
    // Stored under the normalized localpart, with working credentials.
    let credentials = store
        .credentials("carol")
        .await
        .expect("store")
        .expect("account");
    assert!(confab_auth::verify_password(&credentials, "c4r0l"));

    let taken = register_account(
        store,
        true,
        64,
        &query("<query xmlns='jabber:iq:register'><username>alice</username><password>x</password></query>"),
    )
    .await;
    assert_eq!(
        taken.map_err(|e| e.condition),
        Err(StanzaErrorCondition::Conflict)
    );
    let alice = store
        .credentials("alice")
        .await
        .expect("store")
        .expect("account");
    assert!(
        confab_auth::verify_password(&alice, "alice"),
        "a conflict changes nothing"
    );
}

#[tokio::test]
async fn register_account_refuses_bad_input_and_closed_registration() {
    let router = router_with_accounts(&[]).await;
    let store = router.store.as_ref();
    let cases = [
        (
            "<query xmlns='jabber:iq:register'><username>a b</username><password>x</password></query>",
            StanzaErrorCondition::NotAcceptable,
        ),
        (
            "<query xmlns='jabber:iq:register'><username>a@b</username><password>x</password></query>",
            StanzaErrorCondition::NotAcceptable,
        ),
        (
            "<query xmlns='jabber:iq:register'><username>dave</username></query>",
            StanzaErrorCondition::NotAcceptable,
        ),
        (
            "<query xmlns='jabber:iq:register'><username>dave</username><password/></query>",
            StanzaErrorCondition::NotAcceptable,
        ),
        (
            "<query xmlns='jabber:iq:register'><remove/></query>",
            StanzaErrorCondition::UnexpectedRequest,
        ),
    ];
    for (xml, expected) in cases {
        let outcome = register_account(store, true, 64, &query(xml)).await;
        assert_eq!(outcome.map_err(|e| e.condition), Err(expected), "{xml}");
    }
    assert!(store.list_accounts().await.expect("store").is_empty());

    for xml in [
        "<query xmlns='jabber:iq:register'/>",
        "<query xmlns='jabber:iq:register'><username>erin</username><password>x</password></query>",
    ] {
        let outcome = register_account(store, false, 64, &query(xml)).await;
        assert_eq!(
            outcome.map_err(|e| e.condition),
            Err(StanzaErrorCondition::ServiceUnavailable),
            "{xml}"
        );
    }
    assert!(!store.account_exists("erin").await.expect("store"));
}

#[test]
fn registration_stream_feature_only_when_open() {
    let feature = stream_feature(true).expect("feature");
    assert!(feature.is("register", ns::REGISTER_FEATURE));
    assert!(stream_feature(false).is_none());
}
