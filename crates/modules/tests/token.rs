//! IM tokens (urn:confab:token:0) through a real router and store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, router_with_accounts};
use confab_core::{Jid, Stanza, StanzaErrorCondition};
use confab_modules::token::{ImToken, TOKEN, verify_token};
use confab_router::{IqOutcome, Module, Router};
use std::time::Duration;

const REQUEST: &str =
    "<iq xmlns='jabber:client' type='get' id='t'><token xmlns='urn:confab:token:0'/></iq>";

/// Asks for a token the way a bound client does and returns it.
async fn token(client: &mut Client) -> String {
    client.send(REQUEST).await;
    loop {
        let reply = client.recv().await;
        if reply.id() != Some("t") {
            continue;
        }
        assert_eq!(
            reply.type_attr(),
            Some("result"),
            "{}",
            String::from(&reply.element)
        );
        let token = reply.element.get_child("token", TOKEN).expect("token");
        let expires = token.attr("expires").expect("expires");
        assert!(chrono::DateTime::parse_from_rfc3339(expires).is_ok());
        return token.text();
    }
}

/// An IQ as if `from` had sent it, parsed like a session would.
fn request_from(from: &str) -> Stanza {
    let mut iq = Stanza::from_element(REQUEST.parse().expect("xml")).expect("stanza");
    iq.set_from(Some(Jid::new(from).expect("jid")));
    iq
}

#[tokio::test]
async fn bound_session_gets_a_token_that_verifies() {
    let router = router_with_accounts(&["alice"]).await;
    let mut phone = Client::connect(&router, "alice@localhost/phone").await;
    let issued = token(&mut phone).await;
    assert_eq!(issued.len(), 43, "256 bits, base64url unpadded");
    assert!(
        issued
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let info = verify_token(&*router.store, &issued)
        .await
        .expect("store")
        .expect("valid");
    assert_eq!(info.owner, "alice@localhost");
    assert_eq!(info.full_jid, "alice@localhost/phone");
    assert_eq!(info.session, phone.resource.id);
    assert!(info.expires_ms > info.created_ms);
    assert!(router.server_features().contains(&TOKEN));
}

#[tokio::test]
async fn every_request_gets_a_different_token() {
    let router = router_with_accounts(&["alice"]).await;
    let mut phone = Client::connect(&router, "alice@localhost/phone").await;
    let first = token(&mut phone).await;
    let second = token(&mut phone).await;
    assert_ne!(first, second);
    assert!(
        verify_token(&*router.store, &first)
            .await
            .expect("store")
            .is_some()
    );
    assert!(
        verify_token(&*router.store, &second)
            .await
            .expect("store")
            .is_some()
    );
}

#[tokio::test]
async fn no_token_without_a_bound_session() {
    let router = router_with_accounts(&["alice"]).await;
    let module = ImToken::default();
    for from in ["alice@localhost/not-bound", "alice@localhost"] {
        match module.handle_iq(&router, &request_from(from)).await {
            IqOutcome::Error(error) => {
                assert_eq!(error.condition, StanzaErrorCondition::NotAuthorized)
            }
            other => panic!("{from}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn tokens_are_revoked_when_their_session_closes() {
    let router = router_with_accounts(&["alice"]).await;
    let mut phone = Client::connect(&router, "alice@localhost/phone").await;
    let mut laptop = Client::connect(&router, "alice@localhost/laptop").await;
    let on_phone = token(&mut phone).await;
    let on_laptop = token(&mut laptop).await;
    phone.disconnect().await;
    assert_eq!(
        verify_token(&*router.store, &on_phone)
            .await
            .expect("store"),
        None
    );
    assert!(
        verify_token(&*router.store, &on_laptop)
            .await
            .expect("store")
            .is_some()
    );
}

#[tokio::test]
async fn closing_a_replaced_session_keeps_the_new_sessions_tokens() {
    let router = router_with_accounts(&["alice"]).await;
    let mut old = Client::connect(&router, "alice@localhost/phone").await;
    let old_token = token(&mut old).await;
    // Same full JID bound again: the old session is replaced, and closes afterwards.
    let mut new = Client::connect(&router, "alice@localhost/phone").await;
    let new_token = token(&mut new).await;
    router.session_closed(&old.resource).await;
    assert_eq!(
        verify_token(&*router.store, &old_token)
            .await
            .expect("store"),
        None
    );
    assert!(
        verify_token(&*router.store, &new_token)
            .await
            .expect("store")
            .is_some()
    );
}

#[tokio::test]
async fn unknown_malformed_and_expired_tokens_are_refused() {
    let router = router_with_accounts(&["alice"]).await;
    for presented in [
        "",
        "x",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_eq!(
            verify_token(&*router.store, presented)
                .await
                .expect("store"),
            None,
            "{presented:?}"
        );
    }

    // A module issuing tokens that expire at once.
    let phone = Client::connect(&router, "alice@localhost/phone").await;
    let expired = issue_directly(&router, &ImToken::new(Duration::ZERO), &phone).await;
    assert_eq!(
        verify_token(&*router.store, &expired).await.expect("store"),
        None
    );
    let fresh = issue_directly(&router, &ImToken::default(), &phone).await;
    assert!(
        verify_token(&*router.store, &fresh)
            .await
            .expect("store")
            .is_some()
    );
}

#[tokio::test]
async fn tokens_per_session_are_capped() {
    let router = router_with_accounts(&["alice"]).await;
    let phone = Client::connect(&router, "alice@localhost/phone").await;
    let module = ImToken::default();
    for _ in 0..confab_modules::token::MAX_TOKENS_PER_SESSION {
        issue_directly(&router, &module, &phone).await;
    }
    let iq = request_from(phone.resource.jid.as_str());
    assert!(matches!(
        module.handle_iq(&router, &iq).await,
        IqOutcome::Error(e) if e.condition == StanzaErrorCondition::ResourceConstraint
    ));
}

async fn issue_directly(router: &Router, module: &ImToken, client: &Client) -> String {
    let iq = request_from(client.resource.jid.as_str());
    match module.handle_iq(router, &iq).await {
        IqOutcome::Result(Some(token)) => token.text(),
        other => panic!("{other:?}"),
    }
}
