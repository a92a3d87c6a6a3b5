//! XEP-0198 stream management over real sockets: acks (§4), resumption (§5), and what
//! happens to unacknowledged messages when a session ends without resumption (issue 3 item 4).

use crate::harness::{Client, Event, Server, body_of, ns, password, show};
use minidom::Element;
use std::time::Duration;

const SM: &str = "urn:xmpp:sm:3";

/// Sends `<enable/>` and returns the `<enabled/>` answer.
async fn enable(client: &mut Client, resume: bool) -> Element {
    let resume = if resume { " resume='true'" } else { "" };
    client.send(format!("<enable xmlns='{SM}'{resume}/>")).await;
    client
        .expect_matching("<enabled/>", |e| e.is("enabled", SM))
        .await
        .0
}

/// Reads until a message with `body` arrives; returns how many stanzas (message, presence,
/// iq) were read, the message included, and the bodies seen.
async fn count_until_body(client: &mut Client, body: &str) -> (u32, Vec<String>) {
    let mut stanzas = 0;
    let mut bodies = Vec::new();
    loop {
        match client.next_event().await {
            Event::Element(element) if element.ns() == ns::CLIENT => {
                stanzas += 1;
                if let Some(text) = body_of(&element) {
                    bodies.push(text.clone());
                    if text == body {
                        return (stanzas, bodies);
                    }
                }
            }
            Event::Element(_) => {}
            other => panic!("waiting for {body:?}: {}", show(&other)),
        }
    }
}

/// Every message body that arrives within `wait`.
async fn bodies_within(client: &mut Client, wait: Duration) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(event) = client.next_event_within(wait).await {
        match event {
            Event::Element(element) => bodies.extend(body_of(&element)),
            _ => break,
        }
    }
    bodies
}

/// A connection authenticated as `user`, not bound.
async fn authenticated(server: &Server, user: &str) -> Client {
    let mut client = server.connect().await;
    let features = client.login_plain(user, &password(user)).await;
    assert!(
        features.has_child("sm", SM),
        "XEP-0198 offered: {features:?}"
    );
    client
}

async fn resume(client: &mut Client, previd: &str, h: u32) -> Element {
    client
        .send(format!("<resume xmlns='{SM}' previd='{previd}' h='{h}'/>"))
        .await;
    match client.next_event().await {
        Event::Element(element) if element.ns() == SM => element,
        other => panic!("expected <resumed/> or <failed/>, got {}", show(&other)),
    }
}

#[tokio::test]
async fn enable_and_r_count_handled_stanzas() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let enabled = enable(&mut alice, false).await;
    assert_eq!(enabled.attr("resume"), None);
    alice.message("bob@localhost", "one").await;
    alice.message("bob@localhost", "two").await;
    alice
        .send("<presence><priority>1</priority></presence>")
        .await;
    alice.send(format!("<r xmlns='{SM}'/>")).await;
    let (answer, _) = alice.expect_matching("<a/>", |e| e.is("a", SM)).await;
    assert_eq!(answer.attr("h"), Some("3"));
}

#[tokio::test]
async fn unacked_messages_are_resent_after_resume_and_acked_ones_are_not() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "phone", 0).await;
    let enabled = enable(&mut bob, true).await;
    assert_eq!(enabled.attr("resume"), Some("true"));
    assert_eq!(enabled.attr("max"), Some("300"));
    let previd = enabled.attr("id").expect("id").to_owned();

    alice.message("bob@localhost/phone", "m1").await;
    let (handled, _) = count_until_body(&mut bob, "m1").await;
    bob.send(format!("<a xmlns='{SM}' h='{handled}'/>")).await;
    alice.message("bob@localhost/phone", "m2").await;
    bob.expect_message_with_body("m2").await;
    // The connection drops without </stream:stream>; the session is parked.
    drop(bob);
    alice.message("bob@localhost/phone", "m3").await;
    alice.sync().await;

    let mut bob = authenticated(&server, "bob").await;
    let resumed = resume(&mut bob, &previd, handled).await;
    assert!(resumed.is("resumed", SM), "{resumed:?}");
    assert_eq!(resumed.attr("previd"), Some(previd.as_str()));
    let (_, bodies) = count_until_body(&mut bob, "m3").await;
    assert_eq!(bodies, vec!["m2", "m3"], "m1 was acknowledged");
    // Same full JID, and the stream carries on.
    alice.message("bob@localhost/phone", "m4").await;
    bob.expect_message_with_body("m4").await;
}

#[tokio::test]
async fn resume_with_wrong_previd_fails_and_bind_still_works() {
    let server = Server::start(&[], &[]).await;
    let mut bob = server.login_available("bob", "phone", 0).await;
    let previd = enable(&mut bob, true)
        .await
        .attr("id")
        .expect("resumption id")
        .to_owned();
    drop(bob);
    // Another account cannot resume bob's stream.
    let mut alice = authenticated(&server, "alice").await;
    let failed = resume(&mut alice, &previd, 0).await;
    assert!(failed.is("failed", SM), "{failed:?}");
    assert!(
        failed.has_child("item-not-found", ns::STANZAS),
        "{failed:?}"
    );
    let mut bob = authenticated(&server, "bob").await;
    let failed = resume(&mut bob, "not-an-id", 0).await;
    assert!(
        failed.has_child("item-not-found", ns::STANZAS),
        "{failed:?}"
    );
    let jid = bob.bind(Some("laptop")).await;
    assert_eq!(jid, "bob@localhost/laptop");
}

#[tokio::test]
async fn resume_after_the_window_expired_fails_and_the_message_waits_offline() {
    let server = Server::start(&[], &[("CONFAB__C2S__RESUME_TIMEOUT_SECS", "1")]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut bob = server.login_available("bob", "phone", 0).await;
    let enabled = enable(&mut bob, true).await;
    assert_eq!(enabled.attr("max"), Some("1"));
    let previd = enabled.attr("id").expect("resumption id").to_owned();
    alice.message("bob@localhost", "unacked").await;
    bob.expect_message_with_body("unacked").await;
    drop(bob);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut bob = authenticated(&server, "bob").await;
    let failed = resume(&mut bob, &previd, 0).await;
    assert!(
        failed.has_child("item-not-found", ns::STANZAS),
        "{failed:?}"
    );
    bob.bind(Some("phone")).await;
    let triggered = bob.available(0).await;
    let bodies: Vec<String> = triggered.iter().filter_map(body_of).collect();
    assert_eq!(bodies, vec!["unacked"], "delivered again exactly once");
    let later = bodies_within(&mut bob, Duration::from_millis(300)).await;
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test]
async fn dropped_connection_hands_unacked_message_to_the_other_resource() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut phone = server.login_available("bob", "phone", 5).await;
    let mut laptop = server.login_available("bob", "laptop", 1).await;
    enable(&mut phone, false).await;
    alice.message("bob@localhost/phone", "for the phone").await;
    phone.expect_message_with_body("for the phone").await;
    // Not resumable: the session ends at once, the message was never acknowledged.
    drop(phone);
    let message = laptop.expect_message_with_body("for the phone").await;
    assert!(
        message.has_child("stanza-id", "urn:xmpp:sid:0"),
        "the committed message keeps its stanza-id: {message:?}"
    );
    let again = bodies_within(&mut laptop, Duration::from_millis(300)).await;
    assert!(again.is_empty(), "delivered once: {again:?}");
}

#[tokio::test]
async fn dropped_connection_without_other_resource_delivers_at_next_login_once() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut phone = server.login_available("bob", "phone", 0).await;
    enable(&mut phone, false).await;
    alice.message("bob@localhost", "while you were away").await;
    alice.message("bob@localhost", "and this").await;
    phone.expect_message_with_body("and this").await;
    // Acknowledge nothing; the connection drops.
    drop(phone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = server.login("bob", "phone").await;
    let triggered = bob.available(0).await;
    let bodies: Vec<String> = triggered.iter().filter_map(body_of).collect();
    assert_eq!(bodies, vec!["while you were away", "and this"]);
    let later = bodies_within(&mut bob, Duration::from_millis(300)).await;
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test]
async fn acked_messages_are_not_delivered_again() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut phone = server.login_available("bob", "phone", 0).await;
    enable(&mut phone, false).await;
    alice.message("bob@localhost", "seen").await;
    let (handled, _) = count_until_body(&mut phone, "seen").await;
    phone.send(format!("<a xmlns='{SM}' h='{handled}'/>")).await;
    phone.sync().await;
    drop(phone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = server.login("bob", "phone").await;
    let triggered = bob.available(0).await;
    let bodies: Vec<String> = triggered.iter().filter_map(body_of).collect();
    assert!(bodies.is_empty(), "{bodies:?}");
}

#[tokio::test]
async fn clean_close_ends_the_session_without_resumption() {
    let server = Server::start(&[], &[]).await;
    let mut bob = server.login_available("bob", "phone", 0).await;
    let previd = enable(&mut bob, true)
        .await
        .attr("id")
        .expect("resumption id")
        .to_owned();
    bob.send("</stream:stream>").await;
    bob.expect_closed().await;
    let mut bob = authenticated(&server, "bob").await;
    let failed = resume(&mut bob, &previd, 0).await;
    assert!(
        failed.has_child("item-not-found", ns::STANZAS),
        "{failed:?}"
    );
}

#[tokio::test]
async fn resume_takes_over_a_half_dead_connection() {
    let server = Server::start(&[], &[]).await;
    let mut alice = server.login_available("alice", "home", 0).await;
    let mut old = server.login_available("bob", "phone", 0).await;
    let previd = enable(&mut old, true)
        .await
        .attr("id")
        .expect("resumption id")
        .to_owned();
    alice.message("bob@localhost/phone", "unacked").await;
    old.expect_message_with_body("unacked").await;
    // The old connection is still open when the client resumes on a new one.
    let mut new = authenticated(&server, "bob").await;
    let resumed = resume(&mut new, &previd, 0).await;
    assert!(resumed.is("resumed", SM), "{resumed:?}");
    new.expect_message_with_body("unacked").await;
    assert_eq!(old.expect_stream_error().await, "conflict");
    alice.message("bob@localhost/phone", "after").await;
    new.expect_message_with_body("after").await;
}
