//! Decoder behaviour on client transcripts, byte by byte and in one piece, and on hostile
//! input: each case states the input and the event or stream error it must produce.

use bytes::BytesMut;
use confab_codec::{CodecError, Limits, StreamEvent, StreamHeader, XmlStreamDecoder};
use confab_core::{Stanza, StanzaKind, StreamErrorCondition, ns};
use minidom::Element;
use proptest::prelude::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' \
    xml:lang='en'>";

/// Decodes all of `input` fed in chunks of `chunk` bytes; stops at the first error.
fn decode_chunked(
    limits: Limits,
    input: &[u8],
    chunk: usize,
) -> (Vec<StreamEvent>, Option<CodecError>) {
    let mut decoder = XmlStreamDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(error) => return (events, Some(error)),
            }
        }
    }
    (events, None)
}

fn decode_all(input: &str) -> (Vec<StreamEvent>, Option<CodecError>) {
    decode_chunked(Limits::default(), input.as_bytes(), usize::MAX)
}

/// The condition of the error `input` (after a valid header) must end with.
fn error_after_header(limits: Limits, body: &str) -> StreamErrorCondition {
    let input = format!("{HEADER}{body}");
    let (_, error) = decode_chunked(limits, input.as_bytes(), usize::MAX);
    let error = error.unwrap_or_else(|| panic!("no error for {body:?}"));
    // Feeding byte by byte must reach the same verdict.
    let (_, bytewise) = decode_chunked(limits, input.as_bytes(), 1);
    assert_eq!(
        bytewise.map(|e| e.condition()),
        Some(error.condition()),
        "{body:?}"
    );
    error.condition()
}

fn stanzas(events: &[StreamEvent]) -> Vec<&Element> {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::Stanza(element) => Some(element),
            _ => None,
        })
        .collect()
}

#[test]
fn open_stanza_close() {
    let input = format!(
        "{HEADER}<message to='juliet@example.com' id='m1' type='chat'>\
         <body>Wherefore art thou?</body></message></stream:stream>"
    );
    let (events, error) = decode_all(&input);
    assert_eq!(error, None);
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0],
        StreamEvent::Open(StreamHeader {
            to: Some("example.com".into()),
            from: None,
            version: Some("1.0".into()),
            lang: Some("en".into()),
            id: None,
        })
    );
    let StreamEvent::Stanza(message) = &events[1] else {
        panic!("expected a stanza, got {:?}", events[1]);
    };
    assert_eq!(message.ns(), ns::CLIENT);
    assert_eq!(
        message.get_child("body", ns::CLIENT).map(Element::text),
        Some("Wherefore art thou?".to_owned())
    );
    let stanza = Stanza::from_element(message.clone()).expect("a valid stanza");
    assert_eq!(stanza.kind, StanzaKind::Message);
    assert_eq!(
        stanza.to.map(|j| j.to_string()),
        Some("juliet@example.com".into())
    );
    assert_eq!(events[2], StreamEvent::Close);
}

#[test]
fn any_chunking_gives_the_same_events() {
    let input = format!(
        "  {HEADER}\n<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq> \n\
         <presence><show>away</show><status>caf\u{e9} &amp; &lt;cr&#xe8;me&gt; \
         <![CDATA[<raw>]]></status></presence>\
         <message><body>{}</body></message></stream:stream>",
        "long text ".repeat(2000)
    );
    let (whole, error) = decode_all(&input);
    assert_eq!(error, None);
    assert_eq!(whole.len(), 5);
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let (events, error) = decode_chunked(Limits::default(), input.as_bytes(), chunk);
        assert_eq!(error, None, "chunk {chunk}");
        assert_eq!(events, whole, "chunk {chunk}");
    }
    let presence = stanzas(&whole)[1];
    assert_eq!(
        presence.get_child("status", ns::CLIENT).map(Element::text),
        Some("caf\u{e9} & <cr\u{e8}me> <raw>".to_owned())
    );
    // Text rxml delivers in several chunks ends up in one node.
    let message = stanzas(&whole)[2];
    let body = message.get_child("body", ns::CLIENT).expect("body");
    assert_eq!(body.nodes().count(), 1);
    assert_eq!(body.text().len(), 20_000);
}

#[test]
fn whitespace_keepalives_are_ignored() {
    let input = format!("{HEADER} \n\t\r\n<presence/>   \n \n<presence/>\n\n");
    let (events, error) = decode_all(&input);
    assert_eq!(error, None);
    assert_eq!(events.len(), 3);
    // A long run of keepalives is not one oversized stanza.
    let limits = Limits {
        max_stanza_bytes: 1024,
        ..Limits::default()
    };
    let input = format!("{HEADER}{}<presence/>", " ".repeat(100_000));
    let (events, error) = decode_chunked(limits, input.as_bytes(), 1000);
    assert_eq!(error, None);
    assert_eq!(events.len(), 2);
}

#[test]
fn text_between_stanzas_is_bad_format() {
    assert_eq!(
        error_after_header(Limits::default(), "<presence/>hello<presence/>"),
        StreamErrorCondition::BadFormat
    );
}

#[test]
fn reset_restarts_at_the_exact_byte() {
    // The client pipelines the new stream header right behind <auth/>; the bytes after the
    // stanza must survive in the buffer and be read as the new stream after reset().
    let auth =
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>";
    let input = format!("{HEADER}{auth}{HEADER}<iq type='set' id='b'/>");
    let mut decoder = XmlStreamDecoder::new(Limits::default());
    let mut buf = BytesMut::from(input.as_bytes());
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Open(_)))
    ));
    let Ok(Some(StreamEvent::Stanza(auth))) = decoder.decode(&mut buf) else {
        panic!("expected <auth/>");
    };
    assert_eq!(auth.ns(), ns::SASL);
    assert!(
        buf.starts_with(b"<?xml"),
        "bytes after the stanza stay in the buffer"
    );
    decoder.reset();
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Open(_)))
    ));
    let Ok(Some(StreamEvent::Stanza(iq))) = decoder.decode(&mut buf) else {
        panic!("expected <iq/>");
    };
    assert_eq!(iq.ns(), ns::CLIENT);
    assert!(matches!(decoder.decode(&mut buf), Ok(None)));
}

#[test]
fn reset_tolerates_a_keepalive_before_the_new_header() {
    let mut decoder = XmlStreamDecoder::new(Limits::default());
    let mut buf = BytesMut::from(
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/> ").as_bytes(),
    );
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Open(_)))
    ));
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Stanza(_)))
    ));
    decoder.reset();
    buf.extend_from_slice(HEADER.as_bytes());
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Open(_)))
    ));
}

#[test]
fn reset_clears_an_error() {
    let mut decoder = XmlStreamDecoder::new(Limits::default());
    let mut buf = BytesMut::from("<wrong/>");
    assert!(decoder.decode(&mut buf).is_err());
    assert!(decoder.decode(&mut buf).is_err(), "errors are sticky");
    decoder.reset();
    let mut buf = BytesMut::from(HEADER);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Open(_)))
    ));
}

#[test]
fn header_forms() {
    // Any prefix may be bound to the stream namespace (RFC 6120 §4.8.5).
    let (events, error) = decode_all(
        "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
         <s:features/><message/></s:stream>",
    );
    assert_eq!(error, None);
    assert_eq!(events.len(), 4);
    let found = stanzas(&events);
    assert_eq!(found[0].ns(), ns::STREAM);
    assert_eq!(found[1].ns(), ns::CLIENT);

    // Content may be prefix-qualified instead of using a default namespace (§4.8.2).
    let (events, error) = decode_all(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
         xmlns:c='jabber:client'><c:message><c:body>x</c:body></c:message>",
    );
    assert_eq!(error, None);
    let message = stanzas(&events)[0];
    assert!(message.is("message", ns::CLIENT));
    assert!(message.has_child("body", ns::CLIENT));

    // No XML declaration at all is fine too.
    let (events, error) = decode_all(&HEADER["<?xml version='1.0'?>".len()..]);
    assert_eq!(error, None);
    assert_eq!(events.len(), 1);
}

#[test]
fn nested_namespaces_and_prefixed_attributes() {
    let (events, error) = decode_all(&format!(
        "{HEADER}<iq type='set' id='1'><pubsub xmlns='http://jabber.org/protocol/pubsub' \
         xmlns:x='urn:example:x'><publish node='n' x:flag='1' xml:lang='de'>\
         <item><entry xmlns='urn:example:entry'/></item></publish></pubsub>\
         <other xmlns=''/></iq>"
    ));
    assert_eq!(error, None);
    let iq = stanzas(&events)[0];
    let pubsub = iq
        .get_child("pubsub", "http://jabber.org/protocol/pubsub")
        .expect("pubsub");
    let publish = pubsub
        .get_child("publish", "http://jabber.org/protocol/pubsub")
        .expect("publish");
    assert_eq!(publish.attr("node"), Some("n"));
    assert_eq!(publish.attr_ns("urn:example:x", "flag"), Some("1"));
    assert_eq!(publish.attr_ns(rxml::XMLNS_XML, "lang"), Some("de"));
    let item = publish.children().next().expect("item");
    assert_eq!(item.ns(), "http://jabber.org/protocol/pubsub");
    assert_eq!(
        item.children().next().map(Element::ns),
        Some("urn:example:entry".into())
    );
    assert!(iq.has_child("other", ""));
}

#[test]
fn stanza_size_limit_is_policy_violation() {
    let limits = Limits {
        max_stanza_bytes: 1000,
        ..Limits::default()
    };
    let fits = format!("<message><body>{}</body></message>", "a".repeat(900));
    let input = format!("{HEADER}{fits}{fits}");
    let (events, error) = decode_chunked(limits, input.as_bytes(), 1);
    assert_eq!(error, None);
    assert_eq!(events.len(), 3, "the limit is per stanza, not per stream");

    for body in [
        format!("<message><body>{}</body></message>", "a".repeat(2000)),
        format!("<message><body>{}", "<b>".repeat(600)),
        format!("<message {}/>", "      ".repeat(400)),
    ] {
        assert_eq!(
            error_after_header(limits, &body),
            StreamErrorCondition::PolicyViolation
        );
    }
}

#[test]
fn oversized_input_is_refused_before_it_is_buffered() {
    let limits = Limits {
        max_stanza_bytes: 4096,
        ..Limits::default()
    };
    let mut decoder = XmlStreamDecoder::new(limits);
    let mut buf = BytesMut::from(HEADER);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Open(_)))
    ));
    buf.extend_from_slice(b"<message><body>");
    buf.extend_from_slice(&vec![b'x'; 1 << 20]);
    let error = decoder.decode(&mut buf).expect_err("too large");
    assert_eq!(error, CodecError::StanzaTooLarge { limit: 4096 });
    // No more than the limit (plus one byte) was taken from the buffer.
    assert!(
        buf.len() >= (1 << 20) + 15 - 4097,
        "consumed {}",
        (1 << 20) + 15 - buf.len()
    );
}

#[test]
fn oversized_stream_header_is_policy_violation() {
    let limits = Limits {
        max_stanza_bytes: 512,
        ..Limits::default()
    };
    let input = format!("<stream:stream {}", "x".repeat(600));
    let (_, error) = decode_chunked(limits, input.as_bytes(), 1);
    assert_eq!(
        error.map(|e| e.condition()),
        Some(StreamErrorCondition::PolicyViolation)
    );
}

#[test]
fn depth_limit_is_policy_violation() {
    let limits = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    let (events, error) = decode_chunked(
        limits,
        format!("{HEADER}<a><b><c><d/></c></b></a>").as_bytes(),
        usize::MAX,
    );
    assert_eq!(error, None, "depth 4 is allowed");
    assert_eq!(events.len(), 2);
    assert_eq!(
        error_after_header(limits, "<a><b><c><d><e/></d></c></b></a>"),
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn attribute_limit_is_policy_violation() {
    // HEADER itself has five attributes, namespace declarations included.
    let limits = Limits {
        max_attributes: 5,
        ..Limits::default()
    };
    let (_, error) = decode_chunked(
        limits,
        format!("{HEADER}<message a='1' b='2' c='3' d='4' e='5'/>").as_bytes(),
        usize::MAX,
    );
    assert_eq!(error, None);
    assert_eq!(
        error_after_header(limits, "<message a='1' b='2' c='3' d='4' e='5' f='6'/>"),
        StreamErrorCondition::PolicyViolation
    );
    // Namespace declarations count as attributes too.
    assert_eq!(
        error_after_header(
            limits,
            "<message xmlns:a='a' xmlns:b='b' c='3' d='4' e='5' f='6'/>"
        ),
        StreamErrorCondition::PolicyViolation
    );
    let limits = Limits {
        max_attributes: 4,
        ..Limits::default()
    };
    let (_, error) = decode_chunked(limits, HEADER.as_bytes(), 1);
    assert_eq!(
        error.map(|e| e.condition()),
        Some(StreamErrorCondition::PolicyViolation)
    );
}

#[test]
fn namespace_declaration_limit_is_per_stanza() {
    let limits = Limits {
        max_namespace_decls: 3,
        ..Limits::default()
    };
    let three = "<iq><a xmlns='urn:a'><b xmlns='urn:b'/></a><c xmlns='urn:c'/></iq>";
    let input = format!("{HEADER}{three}{three}");
    let (events, error) = decode_chunked(limits, input.as_bytes(), usize::MAX);
    assert_eq!(error, None);
    assert_eq!(events.len(), 3);
    assert_eq!(
        error_after_header(
            limits,
            "<iq><a xmlns='urn:a'><b xmlns='urn:b'/></a><c xmlns='urn:c'><d xmlns='urn:d'/></c></iq>"
        ),
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn long_attribute_value_is_policy_violation() {
    let value = "v".repeat(confab_codec::MAX_TOKEN_BYTES + 1);
    assert_eq!(
        error_after_header(Limits::default(), &format!("<message id='{value}'/>")),
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn restricted_xml_is_refused() {
    let billion_laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
        <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>\
        <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
        <message><body>&lol2;</body></message>";
    let (_, error) = decode_all(billion_laughs);
    assert_eq!(
        error.map(|e| e.condition()),
        Some(StreamErrorCondition::RestrictedXml)
    );

    for (body, condition) in [
        ("<!DOCTYPE foo>", StreamErrorCondition::RestrictedXml),
        (
            "<message><!ENTITY x 'y'></message>",
            StreamErrorCondition::RestrictedXml,
        ),
        (
            "<message><body>&custom;</body></message>",
            StreamErrorCondition::RestrictedXml,
        ),
        (
            "<message id='&custom;'/>",
            StreamErrorCondition::RestrictedXml,
        ),
        ("<?pi data?>", StreamErrorCondition::RestrictedXml),
        (
            "<message><?pi data?></message>",
            StreamErrorCondition::RestrictedXml,
        ),
        ("<!-- comment -->", StreamErrorCondition::RestrictedXml),
        (
            "<message><!-- comment --></message>",
            StreamErrorCondition::RestrictedXml,
        ),
    ] {
        assert_eq!(
            error_after_header(Limits::default(), body),
            condition,
            "{body}"
        );
    }
}

#[test]
fn not_well_formed() {
    for body in [
        "<message></presence>",
        "<message a='1' a='2'/>",
        "<message xmlns:p='urn:a' xmlns:q='urn:a' p:a='1' q:a='2'/>",
        "<message xmlns:p='urn:a' xmlns:p='urn:b'/>",
        "<message><body>\u{1}</body></message>",
        "<message a=1/>",
    ] {
        let condition = error_after_header(Limits::default(), body);
        assert_eq!(condition, StreamErrorCondition::NotWellFormed, "{body}");
    }
}

#[test]
fn close_ends_decoding() {
    let (events, error) = decode_all(&format!("{HEADER}</stream:stream><message/>"));
    assert_eq!(error, None);
    assert_eq!(events.last(), Some(&StreamEvent::Close));
    assert_eq!(events.len(), 2);
}

#[test]
fn bad_utf8_is_unsupported_encoding() {
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(b"<message><body>\xff\xfe</body></message>");
    for chunk in [1, usize::MAX] {
        let (_, error) = decode_chunked(Limits::default(), &input, chunk);
        assert_eq!(
            error.map(|e| e.condition()),
            Some(StreamErrorCondition::UnsupportedEncoding)
        );
    }
    let (_, error) = decode_all("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream/>");
    assert_eq!(
        error.map(|e| e.condition()),
        Some(StreamErrorCondition::UnsupportedEncoding)
    );
}

#[test]
fn wrong_stream_namespace() {
    for (input, condition) in [
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>",
            StreamErrorCondition::InvalidNamespace,
        ),
        (
            "<stream:root xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            StreamErrorCondition::InvalidNamespace,
        ),
        (
            "<stream xmlns='jabber:client'>",
            StreamErrorCondition::InvalidNamespace,
        ),
        (
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
            StreamErrorCondition::InvalidNamespace,
        ),
        (
            "<stream xmlns='http://etherx.jabber.org/streams'>",
            StreamErrorCondition::BadNamespacePrefix,
        ),
        (
            "<stream:stream xmlns='jabber:client'>",
            StreamErrorCondition::BadNamespacePrefix,
        ),
    ] {
        let (events, error) = decode_all(input);
        assert!(events.is_empty(), "{input}");
        assert_eq!(error.map(|e| e.condition()), Some(condition), "{input}");
    }
    assert_eq!(
        error_after_header(Limits::default(), "<x:message/>"),
        StreamErrorCondition::BadNamespacePrefix
    );
    assert_eq!(
        error_after_header(Limits::default(), "<message x:a='1'/>"),
        StreamErrorCondition::BadNamespacePrefix
    );
}

#[test]
fn idle_decoder_is_small() {
    let size = std::mem::size_of::<XmlStreamDecoder>();
    println!("size_of::<XmlStreamDecoder>() = {size} bytes");
    assert!(size <= 1024, "XmlStreamDecoder is {size} bytes inline");

    let mut decoder = XmlStreamDecoder::new(Limits::default());
    let mut buf = BytesMut::from(
        format!(
            "{HEADER}<message><body>{}</body></message>",
            "x".repeat(50_000)
        )
        .as_bytes(),
    );
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Open(_)))
    ));
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(StreamEvent::Stanza(_)))
    ));
    assert_eq!(decoder.buffered(), 0);
    buf.extend_from_slice(b"<message><body>partial");
    assert!(matches!(decoder.decode(&mut buf), Ok(None)));
    assert_eq!(decoder.buffered(), "<message><body>partial".len());
    decoder.shrink();
}

/// A transcript exercising text, entities, CDATA, namespaces and keepalives.
fn transcript() -> String {
    format!(
        "{HEADER}<iq type='get' id='r&amp;1'><query xmlns='jabber:iq:roster' ver=''/></iq>\n \
         <message xmlns:x='urn:x' x:a='&#x10FFFF;'><body>a&lt;b&gt;c &#233;\u{1F600}\
         <![CDATA[<&>]]></body><x:y/></message> <presence/></stream:stream>"
    )
}

proptest! {
    #[test]
    fn arbitrary_split_points_give_the_same_events(
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)
    ) {
        let input = transcript();
        let (expected, error) = decode_all(&input);
        prop_assert_eq!(error, None);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len())).collect();
        cuts.sort_unstable();
        let mut decoder = XmlStreamDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        let mut start = 0;
        for end in cuts.into_iter().chain([input.len()]) {
            buf.extend_from_slice(&input.as_bytes()[start..end]);
            start = end;
            while let Some(event) = decoder.decode(&mut buf).expect("valid input") {
                events.push(event);
            }
        }
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn garbage_never_panics(
        garbage in proptest::collection::vec(
            prop_oneof![
                any::<u8>(),
                prop::sample::select(b"<>/='\"&;:!?[]-x \n".to_vec()),
            ],
            0..300,
        ),
        chunk in 1usize..50,
    ) {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(&garbage);
        let limits = Limits { max_stanza_bytes: 200, max_depth: 4, ..Limits::default() };
        // Whatever the verdict, it must come without a panic or an endless loop.
        let _ = decode_chunked(limits, &input, chunk);
    }
}
