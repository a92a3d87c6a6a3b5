//! XML -> Frame -> bytes -> Frame -> XML gives back an equal element, typed where it can be.

use confab_proto::v1::Frame;
use confab_proto::v1::frame::Kind;
use confab_proto::{
    Fragments, MinidomFragments, ProstMessage, Unit, element_to_frame, frame_to_unit,
};
use minidom::Element;
use proptest::prelude::*;

fn parse(xml: &str) -> Element {
    MinidomFragments
        .parse(xml)
        .expect("test XML is one element")
}

/// Round-trips `element` through protobuf bytes and returns the frame.
fn round_trip(element: &Element) -> Frame {
    let frame = element_to_frame(element, &mut MinidomFragments);
    let bytes = frame.encode_to_vec();
    let decoded = Frame::decode(bytes.as_slice()).expect("our own frame decodes");
    assert_eq!(decoded, frame);
    match frame_to_unit(&decoded, &mut MinidomFragments).expect("frame converts back") {
        Unit::Element(back) => assert_eq!(&back, element, "round trip of {element:?}"),
        other => panic!("expected an element, got {other:?}"),
    }
    frame
}

fn is_typed(frame: &Frame) -> bool {
    !matches!(frame.kind, Some(Kind::Xml(_)))
}

#[test]
fn common_stanzas_are_typed_and_exact() {
    let cases = [
        "<message to='bob@example.org' type='chat' id='9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69'><body>Hi &amp; &lt;bye&gt;</body><request xmlns='urn:xmpp:receipts'/></message>",
        "<message type='headline' id='ack-01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d' from='example.org' to='alice@example.org/phone'><ack xmlns='urn:confab:ack:0' client-id='4a1c0e2f-origin' server-id='01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d' seq='17' with='bob@example.org' stamp='2025-01-31T12:00:00.123Z'/></message>",
        "<message from='a@x/r' to='b@x' id='m1' xml:lang='en'><active xmlns='http://jabber.org/protocol/chatstates'/><body/><markable xmlns='urn:xmpp:chat-markers:0'/><origin-id xmlns='urn:xmpp:sid:0' id='o1'/><stanza-id xmlns='urn:xmpp:sid:0' id='01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d' by='b@x'/><delay xmlns='urn:xmpp:delay' stamp='2025-01-31T12:00:00.000Z' from='x'/></message>",
        "<message to='b@x'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/><received xmlns='urn:xmpp:receipts' id='m1'/><thread>t</thread><subject>s</subject></message>",
        "<presence><show>away</show><status>lunch</status><priority>-5</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
        "<presence type='unavailable' to='a@x/r'/>",
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>",
        "<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>a@x/phone</jid></bind></iq>",
        "<iq type='get' id='p' to='x'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms><register xmlns='http://jabber.org/features/iq-register'/></stream:features>",
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session><sm xmlns='urn:xmpp:sm:3'/><csi xmlns='urn:xmpp:csi:0'/></stream:features>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'/>",
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1hYmM=</success>",
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text>no</text></failure>",
        "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
        "<enabled xmlns='urn:xmpp:sm:3' id='abc' resume='true' max='300'/>",
        "<r xmlns='urn:xmpp:sm:3'/>",
        "<a xmlns='urn:xmpp:sm:3' h='42'/>",
        "<resume xmlns='urn:xmpp:sm:3' h='7' previd='abc'/>",
        "<failed xmlns='urn:xmpp:sm:3' h='3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
        "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too big</text></stream:error>",
    ];
    for xml in cases {
        let element = parse(xml);
        let frame = round_trip(&element);
        assert!(is_typed(&frame), "{xml} should be typed: {frame:?}");
    }
}

#[test]
fn odd_xml_survives_as_fragments() {
    let cases = [
        // An unknown first-level element.
        ("<foo xmlns='urn:example' a='1'><bar/>text</foo>", false),
        // Text between a stanza's children: the whole stanza is a fragment.
        ("<message to='b@x'>\n  <body>hi</body>\n</message>", false),
        // An attribute the typed form does not carry.
        (
            "<message to='b@x' foo='bar'><body>hi</body></message>",
            false,
        ),
        ("<message type='weird'><body>hi</body></message>", false),
        // Children that do not match their typed shape go as fragments, in place.
        (
            "<message to='b@x'><body xml:lang='de'>hallo</body><body>hi</body></message>",
            true,
        ),
        (
            "<message to='b@x'><request xmlns='urn:xmpp:receipts' x='1'/><body>a</body><body>b</body></message>",
            true,
        ),
        (
            "<message><delay xmlns='urn:xmpp:delay' stamp='2002-09-10T23:08:25Z'/><body>x</body></message>",
            true,
        ),
        (
            "<message><ack xmlns='urn:confab:ack:0' server-id='not-a-uuid' seq='1' with='b@x' stamp='2025-01-31T12:00:00.123Z'/></message>",
            true,
        ),
        (
            "<message id='ABCDEF00-0000-0000-0000-000000000000'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            true,
        ),
        (
            "<presence><priority>+5</priority><show>busy</show></presence>",
            true,
        ),
        (
            "<iq type='set' id='1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>a</resource><resource>b</resource></bind></iq>",
            true,
        ),
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNl\nAHNlY3JldA==</auth>",
            false,
        ),
        ("<a xmlns='urn:xmpp:sm:3' h='007'/>", false),
        (
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind></stream:features>",
            false,
        ),
    ];
    for (xml, typed) in cases {
        let frame = round_trip(&parse(xml));
        assert_eq!(is_typed(&frame), typed, "{xml}: {frame:?}");
    }
}

#[test]
fn children_out_of_canonical_order_keep_their_order() {
    let element = parse(
        "<message to='b@x'><origin-id xmlns='urn:xmpp:sid:0' id='o'/><x xmlns='urn:a'/><request xmlns='urn:xmpp:receipts'/><body>hi</body></message>",
    );
    let frame = round_trip(&element);
    let Some(Kind::Message(message)) = frame.kind else {
        panic!("typed message expected");
    };
    assert_eq!(message.layout, vec![11, 14, 6, 5]);
}

#[test]
fn inconsistent_frames_are_errors_not_panics() {
    use confab_proto::v1::{Id, Message};
    let bad = [
        Message {
            layout: vec![5],
            ..Message::default()
        },
        Message {
            id: Some(Id {
                text: None,
                uuid: vec![1, 2, 3],
            }),
            ..Message::default()
        },
        Message {
            id_is_ack: true,
            ..Message::default()
        },
        Message {
            r#type: 99,
            ..Message::default()
        },
        Message {
            xml: vec!["<a/><b/>".into()],
            ..Message::default()
        },
    ];
    for message in bad {
        let frame = Frame {
            kind: Some(Kind::Message(message)),
        };
        assert!(
            frame_to_unit(&frame, &mut MinidomFragments).is_err(),
            "{frame:?}"
        );
    }
    assert!(frame_to_unit(&Frame { kind: None }, &mut MinidomFragments).is_err());
}

/// A random child of a message: typed shapes, near-misses and unknown elements.
fn child() -> impl Strategy<Value = Element> {
    let text = "[a-z &<>'\"]{0,6}";
    prop_oneof![
        text.prop_map(|t| {
            let mut e = Element::bare("body", "jabber:client");
            if !t.is_empty() {
                e.append_text_node(t);
            }
            e
        }),
        Just(Element::bare("request", "urn:xmpp:receipts")),
        text.prop_map(|t| with(Element::bare("received", "urn:xmpp:receipts"), "id", &t)),
        Just(Element::bare("markable", "urn:xmpp:chat-markers:0")),
        (
            prop::sample::select(vec!["displayed", "received", "acknowledged", "other"]),
            text
        )
            .prop_map(|(n, t)| with(Element::bare(n, "urn:xmpp:chat-markers:0"), "id", &t)),
        prop::sample::select(vec![
            "active",
            "composing",
            "paused",
            "inactive",
            "gone",
            "x"
        ])
        .prop_map(|n| Element::bare(n, "http://jabber.org/protocol/chatstates")),
        prop::sample::select(vec![
            "o1",
            "01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d",
            "01947A3C-8e1f-7b2a-9c4d-5e6f7a8b9c0d"
        ])
        .prop_map(|t| with(Element::bare("origin-id", "urn:xmpp:sid:0"), "id", t)),
        (text, "[0-9]{1,3}").prop_map(|(t, n)| with(
            with(Element::bare("stanza-id", "urn:xmpp:sid:0"), "id", &n),
            "by",
            &t
        )),
        (
            "[0-9]{1,4}",
            prop::sample::select(vec!["2025-01-31T12:00:00.123Z", "2025-01-31T12:00:00Z"])
        )
            .prop_map(|(seq, stamp)| {
                let e = with(
                    Element::bare("ack", "urn:confab:ack:0"),
                    "server-id",
                    "01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d",
                );
                with(with(with(e, "seq", &seq), "with", "b@x"), "stamp", stamp)
            }),
        text.prop_map(|t| with(Element::bare("x", "urn:example"), "a", &t)),
        text.prop_map(|t| with(Element::bare("error", "jabber:client"), "type", &t)),
    ]
}

fn with(mut element: Element, name: &str, value: &str) -> Element {
    element.attrs_mut().insert(
        rxml::Namespace::NONE,
        rxml::NcName::try_from(name).expect("test names are NCNames"),
        value.to_owned(),
    );
    element
}

proptest! {
    #[test]
    fn any_message_round_trips(
        children in prop::collection::vec(child(), 0..8),
        to in prop::option::of("[a-z@./]{0,8}"),
        id in prop::option::of(prop::sample::select(vec!["m1", "", "ack-01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d", "01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d"])),
        kind in prop::option::of(prop::sample::select(vec!["chat", "normal", "headline", "bogus"])),
    ) {
        let mut message = Element::bare("message", "jabber:client");
        if let Some(to) = to { message = with(message, "to", &to); }
        if let Some(id) = id { message = with(message, "id", id); }
        if let Some(kind) = kind { message = with(message, "type", kind); }
        for child in children { message.append_child(child); }
        round_trip(&message);
    }
}
