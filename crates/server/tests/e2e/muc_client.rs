//! XEP-0045 steps the room suites share: joining, recognising the subject that ends a join,
//! and reading status codes.

use crate::harness::{Client, ns};
use minidom::Element;

/// The MUC namespace of a join's `<x/>`.
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// The namespace of `<x/>` in the room's presence and messages.
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// Whether `e` is the subject message, the last step of a successful join (§7.2.15).
pub fn is_subject(e: &Element) -> bool {
    e.is("message", ns::CLIENT) && e.has_child("subject", ns::CLIENT)
}

/// Sends a join presence for `room/nick` with `inner` inside `<x xmlns=muc>` and returns
/// everything up to and including the subject message, which ends a successful join.
pub async fn join(client: &mut Client, room: &str, nick: &str, inner: &str) -> Vec<Element> {
    client
        .send(format!(
            "<presence to='{room}/{nick}'><x xmlns='{MUC}'>{inner}</x></presence>"
        ))
        .await;
    let (subject, mut before) = client.expect_matching("the room subject", is_subject).await;
    before.push(subject);
    before
}

/// The `<status code/>`s of a MUC presence or message.
pub fn codes(stanza: &Element) -> Vec<String> {
    stanza
        .get_child("x", MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", MUC_USER))
                .filter_map(|c| c.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
