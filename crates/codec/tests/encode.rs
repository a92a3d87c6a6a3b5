//! What the server writes must read back, through our own decoder, as the same elements in
//! the same namespaces, whatever characters the text and attributes hold.

use bytes::BytesMut;
use confab_codec::{Limits, StreamEvent, XmlStreamDecoder, encode};
use confab_core::{StreamErrorCondition, ns};
use minidom::Element;
use proptest::prelude::*;
use rxml::{Namespace, NcName};

fn attr_name(name: &str) -> NcName {
    NcName::try_from(name).expect("valid name")
}

/// Server output for a stream carrying `elements`, as text.
fn server_stream(elements: &[Element]) -> BytesMut {
    let mut out = BytesMut::new();
    encode::stream_header(
        &mut out,
        "example.com",
        Some("juliet@example.com"),
        "s1",
        "en",
    );
    for element in elements {
        encode::element(&mut out, element);
    }
    encode::stream_close(&mut out);
    out
}

/// Reads a server stream back; the decoder accepts it because the header we write is a valid
/// `jabber:client` stream header.
fn read_back(mut bytes: BytesMut) -> Vec<Element> {
    let mut decoder = XmlStreamDecoder::new(Limits::default());
    let mut elements = Vec::new();
    loop {
        match decoder.decode(&mut bytes) {
            Ok(Some(StreamEvent::Stanza(element))) => elements.push(element),
            Ok(Some(StreamEvent::Open(_))) => {}
            Ok(Some(StreamEvent::Close)) | Ok(None) => return elements,
            Err(error) => panic!(
                "{error} in {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        }
    }
}

#[test]
fn header_is_exact_and_escaped() {
    let mut out = BytesMut::new();
    encode::stream_header(
        &mut out,
        "example.com",
        Some("a'b\"c<d>&e@example.com"),
        "id&1",
        "en",
    );
    assert_eq!(
        std::str::from_utf8(&out).expect("utf-8"),
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' from='example.com' \
         to='a&#39;b&#34;c&lt;d&gt;&amp;e@example.com' id='id&amp;1' version='1.0' \
         xml:lang='en'>"
    );
    let mut decoder = XmlStreamDecoder::new(Limits::default());
    let Ok(Some(StreamEvent::Open(header))) = decoder.decode(&mut out) else {
        panic!("our header does not parse");
    };
    assert_eq!(header.to.as_deref(), Some("a'b\"c<d>&e@example.com"));
    assert_eq!(header.id.as_deref(), Some("id&1"));
    assert_eq!(header.lang.as_deref(), Some("en"));

    let mut out = BytesMut::new();
    encode::stream_header(&mut out, "example.com", None, "x", "");
    assert!(!std::str::from_utf8(&out).expect("utf-8").contains("to="));
    assert!(
        !std::str::from_utf8(&out)
            .expect("utf-8")
            .contains("xml:lang")
    );
    encode::stream_close(&mut out);
    assert!(out.ends_with(b"</stream:stream>"));
}

#[test]
fn stanzas_do_not_redeclare_the_content_namespace() {
    let message = Element::builder("message", ns::CLIENT)
        .attr(attr_name("to"), "juliet@example.com")
        .append(Element::builder("body", ns::CLIENT).append("hi").build())
        .append(Element::builder("active", "http://jabber.org/protocol/chatstates").build())
        .build();
    let mut out = BytesMut::new();
    encode::element(&mut out, &message);
    assert_eq!(
        std::str::from_utf8(&out).expect("utf-8"),
        "<message to='juliet@example.com'><body>hi</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    );
}

#[test]
fn stream_namespace_elements_use_the_stream_prefix() {
    let features = Element::builder("features", ns::STREAM)
        .append(
            Element::builder("mechanisms", ns::SASL)
                .append(
                    Element::builder("mechanism", ns::SASL)
                        .append("PLAIN")
                        .build(),
                )
                .build(),
        )
        .append(Element::bare("bind", ns::BIND))
        .build();
    let error = StreamErrorCondition::PolicyViolation.to_element(Some("too big"));

    let mut out = BytesMut::new();
    encode::element(&mut out, &features);
    encode::element(&mut out, &error);
    assert_eq!(
        std::str::from_utf8(&out).expect("utf-8"),
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
         <mechanism>PLAIN</mechanism></mechanisms>\
         <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>\
         <stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too big</text></stream:error>"
    );

    let read = read_back(server_stream(&[features.clone(), error.clone()]));
    assert_eq!(read, vec![features, error]);
    assert_eq!(read[0].ns(), ns::STREAM);
    assert_eq!(
        read[0].children().next().map(Element::ns),
        Some(ns::SASL.into())
    );
    assert_eq!(read[1].ns(), ns::STREAM);
    assert!(read[1].has_child("policy-violation", ns::STREAMS));
}

#[test]
fn namespaced_attributes_and_empty_namespace_round_trip() {
    let element = Element::builder("iq", ns::CLIENT)
        .attr_ns(Namespace::XML, attr_name("lang"), "de")
        .attr_ns(
            Namespace::from("urn:example:a".to_owned()),
            attr_name("x"),
            "1",
        )
        .attr_ns(
            Namespace::from("urn:example:b".to_owned()),
            attr_name("x"),
            "2",
        )
        .append(
            Element::builder("unqualified", "")
                .append(Element::builder("back", ns::CLIENT).build())
                .build(),
        )
        .build();
    assert_eq!(
        read_back(server_stream(std::slice::from_ref(&element))),
        vec![element]
    );
}

#[test]
fn characters_xml_cannot_carry_are_replaced() {
    let message = Element::builder("message", ns::CLIENT)
        .attr(attr_name("id"), "a\u{1}b")
        .append(
            Element::builder("body", ns::CLIENT)
                .append("x\u{0}y\u{fffe}")
                .build(),
        )
        .build();
    let read = read_back(server_stream(&[message]));
    assert_eq!(read[0].attr("id"), Some("a\u{fffd}b"));
    assert_eq!(
        read[0].get_child("body", ns::CLIENT).map(Element::text),
        Some("x\u{fffd}y\u{fffd}".to_owned())
    );
}

/// Text XML 1.0 can carry, biased toward characters that need escaping.
fn xml_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec!['<', '>', '&', '\'', '"', '\r', '\n', '\t', ' ', ']']),
            4 => prop::char::range('a', 'z'),
            2 => any::<char>().prop_filter("XML Char", |c| {
                !matches!(*c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
            }),
        ],
        1..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #[test]
    fn stanzas_round_trip(
        body in xml_text(),
        id in xml_text(),
        to in xml_text(),
        nested in xml_text(),
    ) {
        let message = Element::builder("message", ns::CLIENT)
            .attr(attr_name("id"), id)
            .attr(attr_name("to"), to)
            .append(Element::builder("body", ns::CLIENT).append(body).build())
            .append(
                Element::builder("x", "urn:example:x")
                    .append(Element::builder("y", "urn:example:x").append(nested).build())
                    .build(),
            )
            .build();
        let read = read_back(server_stream(std::slice::from_ref(&message)));
        prop_assert_eq!(read, vec![message]);
    }
}
