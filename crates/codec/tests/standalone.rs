//! `encode::standalone` writes the message archive's stored copy: a document of its own that
//! MAM, offline delivery and the HTTP history parse back with minidom, so whatever the
//! element holds, parsing the output must give back an equal element.

use bytes::BytesMut;
use confab_codec::encode;
use confab_core::ns;
use minidom::Element;
use proptest::prelude::*;
use rxml::{Namespace, NcName};

fn name(name: &str) -> NcName {
    NcName::try_from(name).expect("valid name")
}

fn parse(xml: &str) -> Element {
    xml.parse().expect("xml")
}

/// The standalone text of `element`, parsed back on its own.
fn round_trip(element: &Element) -> Element {
    let xml = encode::to_standalone_string(element);
    xml.parse()
        .unwrap_or_else(|error| panic!("{error} in {xml:?}"))
}

#[test]
fn the_root_declares_jabber_client_once() {
    let message = Element::builder("message", ns::CLIENT)
        .attr(name("to"), "juliet@example.com")
        .append(Element::builder("body", ns::CLIENT).append("hi").build())
        .append(Element::builder("active", "http://jabber.org/protocol/chatstates").build())
        .build();
    let expected = "<message xmlns='jabber:client' to='juliet@example.com'><body>hi</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>";
    assert_eq!(encode::to_standalone_string(&message), expected);
    // Byte for byte what minidom wrote, so rows archived before and after read alike.
    assert_eq!(String::from(&message), expected);

    // The `BytesMut` form appends, like `encode::element`.
    let mut out = BytesMut::from(&b"prefix:"[..]);
    encode::standalone(&mut out, &message);
    assert_eq!(&out[..7], b"prefix:");
    assert_eq!(std::str::from_utf8(&out[7..]).expect("utf-8"), expected);
    assert_eq!(round_trip(&message), message);
}

#[test]
fn stream_namespace_is_declared_not_prefixed() {
    // Inside a stream `stream:` is bound by the header; a document of its own has no header.
    let error = Element::builder("error", ns::STREAM)
        .append(Element::bare("conflict", ns::STREAMS))
        .build();
    let xml = encode::to_standalone_string(&error);
    assert!(!xml.contains("stream:"), "{xml}");
    assert_eq!(round_trip(&error), error);
}

#[test]
fn messages_as_clients_send_them_round_trip() {
    let inputs = [
        // Prefixed namespaces, on elements and on attributes.
        "<message xmlns='jabber:client' xmlns:x='urn:example:x' to='a@b' x:flag='1'>\
         <x:thing x:attr='2'><x:inner>t</x:inner></x:thing></message>",
        // Nested foreign namespaces, and back to jabber:client inside one.
        "<message xmlns='jabber:client' type='chat'><body>a &lt;b&gt; &amp; ]]&gt; c</body>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='x@y'>\
         <body>inner</body></message></forwarded>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>\
         <p style='font-weight:bold'>b</p></body></html></message>",
        // Attribute values needing every kind of escaping; xml:lang; non-ASCII.
        "<message xmlns='jabber:client' id='&apos;&quot;&lt;&gt;&amp;&#9;&#10;&#13;' \
         xml:lang='fr'><body>héllo ✓ 𝄞 \u{a0}</body></message>",
        // An element in no namespace under jabber:client needs `xmlns=''`.
        "<message xmlns='jabber:client'><x xmlns=''><y/></x></message>",
        // Whitespace text between children is content and must survive.
        "<message xmlns='jabber:client'>\n  <body> spaced\r\n </body>\n</message>",
    ];
    for input in inputs {
        let element = parse(input);
        assert_eq!(round_trip(&element), element, "{input}");
        // Same element as minidom's own serialiser, which the archive used before.
        assert_eq!(
            round_trip(&element),
            parse(&String::from(&element)),
            "{input}"
        );
    }
}

#[test]
fn characters_xml_cannot_carry_are_replaced() {
    let message = Element::builder("message", ns::CLIENT)
        .attr(name("id"), "a\u{1}b")
        .append(
            Element::builder("body", ns::CLIENT)
                .append("x\u{0}y\u{fffe}z\u{1f}")
                .build(),
        )
        .build();
    let read = round_trip(&message);
    assert_eq!(read.attr("id"), Some("a\u{fffd}b"));
    assert_eq!(
        read.get_child("body", ns::CLIENT).map(Element::text),
        Some("x\u{fffd}y\u{fffd}z\u{fffd}".to_owned())
    );
}

/// An element tree described independently of minidom, so one description can be built as
/// is and with the characters XML cannot carry replaced (what the fallback must produce).
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    namespace: &'static str,
    attrs: Vec<(Option<&'static str>, String, String)>,
    children: Vec<Child>,
}

#[derive(Debug, Clone)]
enum Child {
    Text(String),
    Element(Spec),
}

fn sanitised(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {
                '\u{fffd}'
            }
            c => c,
        })
        .collect()
}

impl Spec {
    fn build(&self, clean: fn(&str) -> String) -> Element {
        let mut builder = Element::builder(self.name.as_str(), self.namespace);
        for (attr_ns, attr_name, value) in &self.attrs {
            let attr_ns = attr_ns.map_or(Namespace::NONE, |uri| Namespace::from(uri.to_owned()));
            builder = builder.attr_ns(attr_ns, name(attr_name), clean(value));
        }
        for child in &self.children {
            builder = match child {
                Child::Text(text) => builder.append(clean(text)),
                Child::Element(spec) => builder.append(spec.build(clean)),
            };
        }
        builder.build()
    }
}

/// Text biased toward what needs escaping, the `]]>` sequence, non-ASCII and (rarely) the
/// characters the fallback replaces; never empty, since an empty text node does not survive
/// any XML round trip.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec!['<', '>', '&', '\'', '"', '\r', '\n', '\t', ' ', ']']),
            4 => prop::char::range('a', 'z'),
            2 => any::<char>(),
            1 => prop::sample::select(vec!['\0', '\u{1}', '\u{b}', '\u{1f}', '\u{fffe}', '\u{ffff}']),
        ],
        1..24,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// Names starting with `xml` are reserved (XML 1.0 §2.3), and `xmlns` would be a declaration.
fn local_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9._-]{0,6}".prop_filter("not reserved", |name| !name.starts_with("xml"))
}

fn element_ns() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        ns::CLIENT,
        ns::CLIENT,
        "",
        "urn:example:a",
        "urn:example:b&'<\"",
        ns::STREAM,
    ])
}

fn attr_ns() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        None,
        None,
        Some("http://www.w3.org/XML/1998/namespace"),
        Some("urn:example:a"),
        Some("urn:example:c"),
        Some(ns::CLIENT),
    ])
}

fn attrs() -> impl Strategy<Value = Vec<(Option<&'static str>, String, String)>> {
    proptest::collection::btree_map((attr_ns(), local_name()), text(), 0..4).prop_map(|map| {
        map.into_iter()
            .map(|((attr_ns, attr_name), value)| (attr_ns, attr_name, value))
            .collect()
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    let leaf = (local_name(), element_ns(), attrs()).prop_map(|(name, namespace, attrs)| Spec {
        name,
        namespace,
        attrs,
        children: Vec::new(),
    });
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            local_name(),
            element_ns(),
            attrs(),
            proptest::collection::vec(
                prop_oneof![text().prop_map(Child::Text), inner.prop_map(Child::Element)],
                0..4,
            ),
        )
            .prop_map(|(name, namespace, attrs, children)| {
                // Adjacent text nodes parse back as one, so merge them up front.
                let mut merged: Vec<Child> = Vec::with_capacity(children.len());
                for child in children {
                    match (merged.last_mut(), child) {
                        (Some(Child::Text(previous)), Child::Text(text)) => {
                            previous.push_str(&text)
                        }
                        (_, child) => merged.push(child),
                    }
                }
                Spec {
                    name,
                    namespace,
                    attrs,
                    children: merged,
                }
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn standalone_output_parses_back_to_the_same_element(mut spec in spec(), root_ns in element_ns()) {
        // minidom refuses a document whose root is in no namespace (a stanza never is).
        spec.namespace = if root_ns.is_empty() { ns::CLIENT } else { root_ns };
        let element = spec.build(str::to_owned);
        let expected = spec.build(sanitised);
        prop_assert_eq!(round_trip(&element), expected);
    }
}
