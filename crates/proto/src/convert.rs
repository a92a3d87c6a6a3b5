//! Exact conversion between XMPP elements and [`Frame`]s.
//!
//! Encoding ([`element_to_frame`]) gives an element typed fields only where the typed form
//! rebuilds *exactly* that element: each typed child is rebuilt and compared with the input
//! before it is accepted, and the stanza's attributes must all be ones the typed form carries.
//! A child that does not fit (an unexpected attribute, a second `<body/>`, text where none is
//! expected) travels as an XML fragment in its place; a stanza with text directly inside it,
//! or a first-level element that is not a known kind, travels whole as a fragment. Child order
//! is kept with the `layout` field when it is not the canonical one.
//!
//! Decoding ([`frame_to_unit`]) is the inverse and rejects frames that are not consistent
//! (a layout naming an absent field, a UUID that is not 16 bytes, ...).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use minidom::{Element, Node};
use rxml::{Namespace, NcName};

use crate::time;
use crate::v1::{
    self, Bind, ChatState, ConfabAck, Delay, Features, Frame, Id, Iq, IqType, Marker, MarkerKind,
    Message, MessageType, Presence, PresenceType, SaslAuth, SaslData, SaslFailure, Show, SmAck,
    SmEnable, SmEnabled, SmFailed, SmRequest, SmResume, StanzaId, StreamError, StreamOpen,
    frame::Kind,
};

/// `jabber:client`, the namespace of stanzas.
pub const CLIENT: &str = "jabber:client";
const STREAM: &str = "http://etherx.jabber.org/streams";
const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const SM: &str = "urn:xmpp:sm:3";
const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
const RECEIPTS: &str = "urn:xmpp:receipts";
const MARKERS: &str = "urn:xmpp:chat-markers:0";
const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
const SID: &str = "urn:xmpp:sid:0";
const DELAY: &str = "urn:xmpp:delay";
const ACK: &str = "urn:confab:ack:0";
const PING: &str = "urn:xmpp:ping";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Why a frame could not be turned into XMPP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The frame's oneof is not set.
    #[error("frame carries nothing")]
    Empty,
    /// An XML fragment is not exactly one acceptable element.
    #[error("invalid XML fragment: {0}")]
    Fragment(String),
    /// A typed field holds a value XMPP cannot carry or the frame is inconsistent.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// What one frame stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    /// The client's stream header.
    Open(StreamOpen),
    /// The server's stream header.
    Opened(StreamOpen),
    /// A first-level element.
    Element(Element),
    /// The end of the stream.
    Close,
}

/// How XML fragments are written and read.
///
/// A fragment is one element serialized as a first-level child of a stream whose default
/// namespace is `jabber:client` (and whose `stream` prefix is the stream namespace); elements
/// in that namespace may omit `xmlns`.
pub trait Fragments {
    /// Serializes one element.
    fn write(&mut self, element: &Element) -> String;
    /// Parses one element; anything but exactly one element is an error.
    fn parse(&mut self, xml: &str) -> Result<Element, ConvertError>;
}

/// [`Fragments`] over minidom's own writer and parser, without limits: for clients, which
/// trust their server. The server parses with its codec's limits instead.
#[derive(Debug, Default, Clone, Copy)]
pub struct MinidomFragments;

impl Fragments for MinidomFragments {
    fn write(&mut self, element: &Element) -> String {
        let mut out = Vec::new();
        // minidom declares the element's namespace on the root, which is always valid here.
        match element.write_to(&mut out) {
            Ok(()) => String::from_utf8(out).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn parse(&mut self, xml: &str) -> Result<Element, ConvertError> {
        let wrapped = format!("<w xmlns='{CLIENT}' xmlns:stream='{STREAM}'>{xml}</w>");
        let mut root = Element::from_reader(wrapped.as_bytes())
            .map_err(|error| ConvertError::Fragment(error.to_string()))?;
        let mut nodes = root.take_nodes().into_iter();
        match (nodes.next(), nodes.next()) {
            (Some(Node::Element(element)), None) => Ok(element),
            _ => Err(ConvertError::Fragment("not exactly one element".into())),
        }
    }
}

/// The client's stream header as a frame.
pub fn open_frame(open: StreamOpen) -> Frame {
    Frame {
        kind: Some(Kind::Open(open)),
    }
}

/// The server's stream header as a frame.
pub fn opened_frame(opened: StreamOpen) -> Frame {
    Frame {
        kind: Some(Kind::Opened(opened)),
    }
}

/// The end of the stream as a frame.
pub fn close_frame() -> Frame {
    Frame {
        kind: Some(Kind::Close(v1::Close {})),
    }
}

/// The frame for one first-level element: typed where the typed form is exact, otherwise
/// (in whole or in part) XML fragments.
pub fn element_to_frame(element: &Element, fragments: &mut impl Fragments) -> Frame {
    let kind = typed(element, fragments).unwrap_or_else(|| Kind::Xml(fragments.write(element)));
    Frame { kind: Some(kind) }
}

/// What a frame stands for; XML fragments are parsed with `fragments`.
pub fn frame_to_unit(frame: &Frame, fragments: &mut impl Fragments) -> Result<Unit, ConvertError> {
    let kind = frame.kind.as_ref().ok_or(ConvertError::Empty)?;
    Ok(match kind {
        Kind::Open(open) => Unit::Open(open.clone()),
        Kind::Opened(open) => Unit::Opened(open.clone()),
        Kind::Close(_) => Unit::Close,
        kind => Unit::Element(kind_to_element(kind, fragments)?),
    })
}

fn typed(element: &Element, fragments: &mut impl Fragments) -> Option<Kind> {
    let ns = element.ns();
    let kind = match (ns.as_str(), element.name()) {
        (CLIENT, "message") => return message(element, fragments).map(Kind::Message),
        (CLIENT, "presence") => return presence(element, fragments).map(Kind::Presence),
        (CLIENT, "iq") => return iq(element, fragments).map(Kind::Iq),
        (SM, "a") => Kind::SmAck(SmAck {
            h: number(only_attrs(element, &["h"])?.first()?.as_deref()?)?,
        }),
        (SM, "r") => Kind::SmRequest(SmRequest {}),
        (SM, "enable") => {
            let attrs = only_attrs(element, &["resume", "max"])?;
            Kind::SmEnable(SmEnable {
                resume: attrs[0].is_some(),
                max: attrs[1]
                    .as_deref()
                    .map(number)
                    .map_or(Some(None), |n| n.map(Some))?,
            })
        }
        (SM, "enabled") => {
            let attrs = only_attrs(element, &["id", "resume", "max", "location"])?;
            Kind::SmEnabled(SmEnabled {
                id: attrs[0].clone(),
                resume: attrs[1].is_some(),
                max: attrs[2]
                    .as_deref()
                    .map(number)
                    .map_or(Some(None), |n| n.map(Some))?,
                location: attrs[3].clone(),
            })
        }
        (SM, name @ ("resume" | "resumed")) => {
            let attrs = only_attrs(element, &["h", "previd"])?;
            let resume = SmResume {
                h: number(attrs[0].as_deref()?)?,
                previd: attrs[1].clone()?,
            };
            if name == "resume" {
                Kind::SmResume(resume)
            } else {
                Kind::SmResumed(resume)
            }
        }
        (SM, "failed") => {
            let attrs = only_attrs(element, &["h"])?;
            Kind::SmFailed(SmFailed {
                h: attrs[0]
                    .as_deref()
                    .map(number)
                    .map_or(Some(None), |n| n.map(Some))?,
                condition: element.children().next().map(|c| c.name().to_owned()),
            })
        }
        (SASL, "auth") => Kind::SaslAuth(SaslAuth {
            mechanism: only_attrs(element, &["mechanism"])?.first()?.clone()?,
            data: sasl_data(element)?,
        }),
        (SASL, "challenge") => Kind::SaslChallenge(SaslData {
            data: sasl_data(element)?,
        }),
        (SASL, "response") => Kind::SaslResponse(SaslData {
            data: sasl_data(element)?,
        }),
        (SASL, "success") => Kind::SaslSuccess(SaslData {
            data: sasl_data(element)?,
        }),
        (SASL, "failure") => {
            let mut children = element.children();
            let condition = children.next()?.name().to_owned();
            Kind::SaslFailure(SaslFailure {
                condition,
                text: children.next().map(Element::text),
            })
        }
        (STREAM, "error") => {
            let mut children = element.children();
            let condition = children.next()?.name().to_owned();
            Kind::StreamError(StreamError {
                condition,
                text: children.next().map(Element::text),
            })
        }
        (STREAM, "features") => Kind::Features(features(element, fragments)?),
        _ => return None,
    };
    // The forms above are read loosely; only an exact rebuild is accepted.
    let rebuilt = kind_to_element(&kind, fragments).ok()?;
    (rebuilt == *element).then_some(kind)
}

fn kind_to_element(kind: &Kind, fragments: &mut impl Fragments) -> Result<Element, ConvertError> {
    Ok(match kind {
        Kind::Message(message) => message_element(message, fragments)?,
        Kind::Presence(presence) => presence_element(presence, fragments)?,
        Kind::Iq(iq) => iq_element(iq, fragments)?,
        Kind::SmAck(ack) => with_attrs(Element::bare("a", SM), [("h", Some(ack.h.to_string()))]),
        Kind::SmRequest(_) => Element::bare("r", SM),
        Kind::SmEnable(enable) => with_attrs(
            Element::bare("enable", SM),
            [
                ("resume", enable.resume.then(|| "true".to_owned())),
                ("max", enable.max.map(|n| n.to_string())),
            ],
        ),
        Kind::SmEnabled(enabled) => with_attrs(
            Element::bare("enabled", SM),
            [
                ("id", enabled.id.clone()),
                ("resume", enabled.resume.then(|| "true".to_owned())),
                ("max", enabled.max.map(|n| n.to_string())),
                ("location", enabled.location.clone()),
            ],
        ),
        Kind::SmResume(resume) | Kind::SmResumed(resume) => {
            let name = if matches!(kind, Kind::SmResume(_)) {
                "resume"
            } else {
                "resumed"
            };
            with_attrs(
                Element::bare(name, SM),
                [
                    ("h", Some(resume.h.to_string())),
                    ("previd", Some(resume.previd.clone())),
                ],
            )
        }
        Kind::SmFailed(failed) => {
            let mut element = with_attrs(
                Element::bare("failed", SM),
                [("h", failed.h.map(|h| h.to_string()))],
            );
            if let Some(condition) = &failed.condition {
                element.append_child(Element::bare(name(condition)?, STANZAS));
            }
            element
        }
        Kind::SaslAuth(auth) => {
            let mut element = with_attrs(
                Element::bare("auth", SASL),
                [("mechanism", Some(auth.mechanism.clone()))],
            );
            put_sasl_data(&mut element, auth.data.as_deref());
            element
        }
        Kind::SaslChallenge(data) => sasl_element("challenge", data),
        Kind::SaslResponse(data) => sasl_element("response", data),
        Kind::SaslSuccess(data) => sasl_element("success", data),
        Kind::SaslFailure(failure) => {
            let mut element = Element::bare("failure", SASL);
            element.append_child(Element::bare(name(&failure.condition)?, SASL));
            if let Some(text) = &failure.text {
                element.append_child(text_element("text", SASL, text));
            }
            element
        }
        Kind::StreamError(error) => {
            let mut element = Element::bare("error", STREAM);
            element.append_child(Element::bare(name(&error.condition)?, STREAMS));
            if let Some(text) = &error.text {
                element.append_child(text_element("text", STREAMS, text));
            }
            element
        }
        Kind::Features(features) => features_element(features, fragments)?,
        Kind::Xml(xml) => fragments.parse(xml)?,
        Kind::Open(_) | Kind::Opened(_) | Kind::Close(_) => {
            return Err(ConvertError::Invalid("stream control is not an element"));
        }
    })
}

// ---------------------------------------------------------------------------------------
// Stanza envelopes and child layout.

/// The attributes every stanza may carry; `None` when the element has any other attribute.
struct Envelope {
    to: Option<String>,
    from: Option<String>,
    id: Option<Id>,
    kind: Option<String>,
    lang: Option<String>,
}

fn envelope(element: &Element) -> Option<Envelope> {
    let mut envelope = Envelope {
        to: None,
        from: None,
        id: None,
        kind: None,
        lang: None,
    };
    for ((ns, name), value) in element.attrs() {
        let slot = match (ns.as_str(), name.as_str()) {
            ("", "to") => &mut envelope.to,
            ("", "from") => &mut envelope.from,
            ("", "type") => &mut envelope.kind,
            ("", "id") => {
                envelope.id = Some(id_of(value));
                continue;
            }
            (XML_NS, "lang") => &mut envelope.lang,
            _ => return None,
        };
        *slot = Some(value.clone());
    }
    Some(envelope)
}

fn stanza_element(
    name: &str,
    to: &Option<String>,
    from: &Option<String>,
    id: Option<String>,
    kind: Option<&str>,
    lang: &Option<String>,
) -> Element {
    let mut element = with_attrs(
        Element::bare(name, CLIENT),
        [
            ("to", to.clone()),
            ("from", from.clone()),
            ("id", id),
            ("type", kind.map(str::to_owned)),
        ],
    );
    if let Some(lang) = lang {
        element
            .attrs_mut()
            .insert(Namespace::xml().clone(), ncname("lang"), lang.clone());
    }
    element
}

/// The rank of a layout code in the canonical order: field number, fragments last.
fn rank(code: u8, xml_code: u8) -> u8 {
    if code == xml_code { u8::MAX } else { code }
}

/// `codes` as a layout: empty when already canonical.
fn layout(codes: Vec<u8>, xml_code: u8) -> Vec<u8> {
    let canonical = codes
        .windows(2)
        .all(|pair| rank(pair[0], xml_code) <= rank(pair[1], xml_code));
    if canonical { Vec::new() } else { codes }
}

/// Assembles children from typed slots and fragments following `layout` (or the canonical
/// order), failing when the layout and the present fields disagree.
struct Assembler {
    /// Typed children by code, in canonical order; repeated codes appear repeatedly.
    typed: Vec<(u8, Element)>,
    /// Parsed fragments in order.
    xml: Vec<Element>,
    xml_code: u8,
}

impl Assembler {
    fn children(self, layout: &[u8]) -> Result<Vec<Element>, ConvertError> {
        if layout.is_empty() {
            let mut children: Vec<Element> = self.typed.into_iter().map(|(_, e)| e).collect();
            children.extend(self.xml);
            return Ok(children);
        }
        if layout.len() != self.typed.len() + self.xml.len() {
            return Err(ConvertError::Invalid("layout does not match the fields"));
        }
        let mut typed: Vec<Option<(u8, Element)>> = self.typed.into_iter().map(Some).collect();
        let mut xml = self.xml.into_iter();
        let mut children = Vec::with_capacity(layout.len());
        for &code in layout {
            let child = if code == self.xml_code {
                xml.next()
            } else {
                typed
                    .iter_mut()
                    .find(|slot| slot.as_ref().is_some_and(|(c, _)| *c == code))
                    .and_then(Option::take)
                    .map(|(_, e)| e)
            };
            children.push(child.ok_or(ConvertError::Invalid("layout names an absent field"))?);
        }
        Ok(children)
    }
}

fn parse_all(xml: &[String], fragments: &mut impl Fragments) -> Result<Vec<Element>, ConvertError> {
    xml.iter().map(|x| fragments.parse(x)).collect()
}

/// The element children of a stanza; `None` when it holds text (whitespace included), which
/// only a whole-stanza fragment keeps.
fn element_children(element: &Element) -> Option<Vec<&Element>> {
    element
        .nodes()
        .map(|node| match node {
            Node::Element(child) => Some(child),
            Node::Text(_) => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// <message/>

const MESSAGE_XML: u8 = 14;

fn message(element: &Element, fragments: &mut impl Fragments) -> Option<Message> {
    let envelope = envelope(element)?;
    let mut message = Message {
        to: envelope.to,
        from: envelope.from,
        r#type: match envelope.kind.as_deref() {
            None => MessageType::Unspecified,
            Some("chat") => MessageType::Chat,
            Some("normal") => MessageType::Normal,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            Some("error") => MessageType::Error,
            Some(_) => return None,
        } as i32,
        lang: envelope.lang,
        ..Message::default()
    };
    let mut codes = Vec::new();
    for child in element_children(element)? {
        let code = message_child(&mut message, child).unwrap_or_else(|| {
            message.xml.push(fragments.write(child));
            MESSAGE_XML
        });
        codes.push(code);
    }
    // A Confab receipt's id is "ack-" + its server id: sent as a flag instead of 40 bytes.
    match (&envelope.id, &message.ack) {
        (
            Some(Id {
                text: Some(text), ..
            }),
            Some(ack),
        ) if text
            .strip_prefix("ack-")
            .and_then(uuid_bytes)
            .is_some_and(|id| id[..] == ack.server_id[..]) =>
        {
            message.id_is_ack = true;
        }
        _ => message.id = envelope.id,
    }
    message.layout = layout(codes, MESSAGE_XML);
    Some(message)
}

/// Takes one child into its typed field; its code, or `None` when it must be a fragment.
fn message_child(message: &mut Message, child: &Element) -> Option<u8> {
    let ns = child.ns();
    match (ns.as_str(), child.name()) {
        (CLIENT, "body") if message.body.is_none() => {
            message.body = Some(exact_text(child)?);
            Some(5)
        }
        (RECEIPTS, "request") if !message.receipt_request => {
            exact(child, || Element::bare("request", RECEIPTS))?;
            message.receipt_request = true;
            Some(6)
        }
        (RECEIPTS, "received") if message.receipt_received.is_none() => {
            let id = child.attr("id")?.to_owned();
            exact(child, || receipt_received(&id))?;
            message.receipt_received = Some(id);
            Some(7)
        }
        (MARKERS, "markable") if !message.markable => {
            exact(child, || Element::bare("markable", MARKERS))?;
            message.markable = true;
            Some(8)
        }
        (MARKERS, name) if message.marker.is_none() => {
            let kind = match name {
                "received" => MarkerKind::Received,
                "displayed" => MarkerKind::Displayed,
                "acknowledged" => MarkerKind::Acknowledged,
                _ => return None,
            };
            let marker = Marker {
                kind: kind as i32,
                id: child.attr("id")?.to_owned(),
            };
            exact(child, || marker_element(&marker).ok())?;
            message.marker = Some(marker);
            Some(9)
        }
        (CHATSTATES, name) if message.chat_state == 0 => {
            let state = match name {
                "active" => ChatState::Active,
                "composing" => ChatState::Composing,
                "paused" => ChatState::Paused,
                "inactive" => ChatState::Inactive,
                "gone" => ChatState::Gone,
                _ => return None,
            };
            exact(child, || chat_state_element(state))?;
            message.chat_state = state as i32;
            Some(10)
        }
        (SID, "origin-id") if message.origin_id.is_none() => {
            let id = id_of(child.attr("id")?);
            exact(child, || origin_id_element(&id).ok())?;
            message.origin_id = Some(id);
            Some(11)
        }
        (SID, "stanza-id") => {
            let stanza_id = StanzaId {
                by: child.attr("by")?.to_owned(),
                id: Some(id_of(child.attr("id")?)),
            };
            exact(child, || stanza_id_element(&stanza_id).ok())?;
            message.stanza_ids.push(stanza_id);
            Some(12)
        }
        (ACK, "ack") if message.ack.is_none() => {
            let server_id = uuid_bytes(child.attr("server-id")?)?;
            let ack = ConfabAck {
                client_id: child.attr("client-id").map(id_of),
                server_id: server_id.to_vec(),
                seq: number(child.attr("seq")?)?,
                with: child.attr("with")?.to_owned(),
                stamp_ms: time::parse_ms(child.attr("stamp")?)?,
            };
            exact(child, || ack_element(&ack).ok())?;
            message.ack = Some(ack);
            Some(13)
        }
        (CLIENT, "thread") if message.thread.is_none() => {
            message.thread = Some(exact_text(child)?);
            Some(16)
        }
        (CLIENT, "subject") if message.subject.is_none() => {
            message.subject = Some(exact_text(child)?);
            Some(17)
        }
        (DELAY, "delay") if message.delay.is_none() => {
            let delay = Delay {
                stamp_ms: time::parse_ms(child.attr("stamp")?)?,
                from: child.attr("from").map(str::to_owned),
            };
            exact(child, || Some(delay_element(&delay)))?;
            message.delay = Some(delay);
            Some(18)
        }
        _ => None,
    }
}

fn message_element(
    message: &Message,
    fragments: &mut impl Fragments,
) -> Result<Element, ConvertError> {
    let kind = match MessageType::try_from(message.r#type) {
        Ok(MessageType::Unspecified) => None,
        Ok(MessageType::Chat) => Some("chat"),
        Ok(MessageType::Normal) => Some("normal"),
        Ok(MessageType::Groupchat) => Some("groupchat"),
        Ok(MessageType::Headline) => Some("headline"),
        Ok(MessageType::Error) => Some("error"),
        Err(_) => return Err(ConvertError::Invalid("message type")),
    };
    let id = if message.id_is_ack {
        let ack = message
            .ack
            .as_ref()
            .ok_or(ConvertError::Invalid("id_is_ack without ack"))?;
        Some(format!("ack-{}", uuid_text(&ack.server_id)?))
    } else {
        message.id.as_ref().map(id_text).transpose()?
    };
    let mut element = stanza_element(
        "message",
        &message.to,
        &message.from,
        id,
        kind,
        &message.lang,
    );
    let mut typed = Vec::new();
    if let Some(body) = &message.body {
        typed.push((5, text_element("body", CLIENT, body)));
    }
    if message.receipt_request {
        typed.push((6, Element::bare("request", RECEIPTS)));
    }
    if let Some(id) = &message.receipt_received {
        typed.push((7, receipt_received(id)));
    }
    if message.markable {
        typed.push((8, Element::bare("markable", MARKERS)));
    }
    if let Some(marker) = &message.marker {
        typed.push((9, marker_element(marker)?));
    }
    if message.chat_state != 0 {
        let state = ChatState::try_from(message.chat_state)
            .map_err(|_| ConvertError::Invalid("chat state"))?;
        typed.push((
            10,
            chat_state_element(state).ok_or(ConvertError::Invalid("chat state"))?,
        ));
    }
    if let Some(id) = &message.origin_id {
        typed.push((11, origin_id_element(id)?));
    }
    for stanza_id in &message.stanza_ids {
        typed.push((12, stanza_id_element(stanza_id)?));
    }
    if let Some(ack) = &message.ack {
        typed.push((13, ack_element(ack)?));
    }
    if let Some(thread) = &message.thread {
        typed.push((16, text_element("thread", CLIENT, thread)));
    }
    if let Some(subject) = &message.subject {
        typed.push((17, text_element("subject", CLIENT, subject)));
    }
    if let Some(delay) = &message.delay {
        typed.push((18, delay_element(delay)));
    }
    let assembler = Assembler {
        typed,
        xml: parse_all(&message.xml, fragments)?,
        xml_code: MESSAGE_XML,
    };
    for child in assembler.children(&message.layout)? {
        element.append_child(child);
    }
    Ok(element)
}

fn receipt_received(id: &str) -> Element {
    with_attrs(
        Element::bare("received", RECEIPTS),
        [("id", Some(id.to_owned()))],
    )
}

fn marker_element(marker: &Marker) -> Result<Element, ConvertError> {
    let name = match MarkerKind::try_from(marker.kind) {
        Ok(MarkerKind::Received) => "received",
        Ok(MarkerKind::Displayed) => "displayed",
        Ok(MarkerKind::Acknowledged) => "acknowledged",
        _ => return Err(ConvertError::Invalid("marker kind")),
    };
    Ok(with_attrs(
        Element::bare(name, MARKERS),
        [("id", Some(marker.id.clone()))],
    ))
}

fn chat_state_element(state: ChatState) -> Option<Element> {
    let name = match state {
        ChatState::Unspecified => return None,
        ChatState::Active => "active",
        ChatState::Composing => "composing",
        ChatState::Paused => "paused",
        ChatState::Inactive => "inactive",
        ChatState::Gone => "gone",
    };
    Some(Element::bare(name, CHATSTATES))
}

fn origin_id_element(id: &Id) -> Result<Element, ConvertError> {
    Ok(with_attrs(
        Element::bare("origin-id", SID),
        [("id", Some(id_text(id)?))],
    ))
}

fn stanza_id_element(stanza_id: &StanzaId) -> Result<Element, ConvertError> {
    let id = stanza_id
        .id
        .as_ref()
        .ok_or(ConvertError::Invalid("stanza-id without id"))?;
    Ok(with_attrs(
        Element::bare("stanza-id", SID),
        [
            ("id", Some(id_text(id)?)),
            ("by", Some(stanza_id.by.clone())),
        ],
    ))
}

fn ack_element(ack: &ConfabAck) -> Result<Element, ConvertError> {
    Ok(with_attrs(
        Element::bare("ack", ACK),
        [
            (
                "client-id",
                ack.client_id.as_ref().map(id_text).transpose()?,
            ),
            ("server-id", Some(uuid_text(&ack.server_id)?)),
            ("seq", Some(ack.seq.to_string())),
            ("with", Some(ack.with.clone())),
            ("stamp", Some(time::format_ms(ack.stamp_ms))),
        ],
    ))
}

fn delay_element(delay: &Delay) -> Element {
    with_attrs(
        Element::bare("delay", DELAY),
        [
            ("stamp", Some(time::format_ms(delay.stamp_ms))),
            ("from", delay.from.clone()),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// <presence/>

const PRESENCE_XML: u8 = 8;

fn presence(element: &Element, fragments: &mut impl Fragments) -> Option<Presence> {
    let envelope = envelope(element)?;
    let mut presence = Presence {
        to: envelope.to,
        from: envelope.from,
        id: envelope.id,
        r#type: match envelope.kind.as_deref() {
            None => PresenceType::Unspecified,
            Some("unavailable") => PresenceType::Unavailable,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some("probe") => PresenceType::Probe,
            Some("error") => PresenceType::Error,
            Some(_) => return None,
        } as i32,
        lang: envelope.lang,
        ..Presence::default()
    };
    let mut codes = Vec::new();
    for child in element_children(element)? {
        let ns = child.ns();
        let code = match (ns.as_str(), child.name()) {
            (CLIENT, "show") if presence.show == 0 => exact_text(child)
                .and_then(|text| {
                    Show::from_str_name(&format!("SHOW_{}", text.to_ascii_uppercase()))
                        .filter(|s| show_text(*s) == Some(text.as_str()))
                })
                .map(|show| {
                    presence.show = show as i32;
                    5
                }),
            (CLIENT, "status") if presence.status.is_none() => exact_text(child).map(|text| {
                presence.status = Some(text);
                6
            }),
            (CLIENT, "priority") if presence.priority.is_none() => exact_text(child)
                .and_then(|text| text.parse::<i8>().ok().filter(|p| p.to_string() == text))
                .map(|priority| {
                    presence.priority = Some(i32::from(priority));
                    7
                }),
            _ => None,
        };
        codes.push(code.unwrap_or_else(|| {
            presence.xml.push(fragments.write(child));
            PRESENCE_XML
        }));
    }
    presence.layout = layout(codes, PRESENCE_XML);
    Some(presence)
}

fn show_text(show: Show) -> Option<&'static str> {
    match show {
        Show::Unspecified => None,
        Show::Away => Some("away"),
        Show::Chat => Some("chat"),
        Show::Dnd => Some("dnd"),
        Show::Xa => Some("xa"),
    }
}

fn presence_element(
    presence: &Presence,
    fragments: &mut impl Fragments,
) -> Result<Element, ConvertError> {
    let kind = match PresenceType::try_from(presence.r#type) {
        Ok(PresenceType::Unspecified) => None,
        Ok(PresenceType::Unavailable) => Some("unavailable"),
        Ok(PresenceType::Subscribe) => Some("subscribe"),
        Ok(PresenceType::Subscribed) => Some("subscribed"),
        Ok(PresenceType::Unsubscribe) => Some("unsubscribe"),
        Ok(PresenceType::Unsubscribed) => Some("unsubscribed"),
        Ok(PresenceType::Probe) => Some("probe"),
        Ok(PresenceType::Error) => Some("error"),
        Err(_) => return Err(ConvertError::Invalid("presence type")),
    };
    let id = presence.id.as_ref().map(id_text).transpose()?;
    let mut element = stanza_element(
        "presence",
        &presence.to,
        &presence.from,
        id,
        kind,
        &presence.lang,
    );
    let mut typed = Vec::new();
    if presence.show != 0 {
        let show = Show::try_from(presence.show)
            .ok()
            .and_then(show_text)
            .ok_or(ConvertError::Invalid("show"))?;
        typed.push((5, text_element("show", CLIENT, show)));
    }
    if let Some(status) = &presence.status {
        typed.push((6, text_element("status", CLIENT, status)));
    }
    if let Some(priority) = presence.priority {
        let priority = i8::try_from(priority).map_err(|_| ConvertError::Invalid("priority"))?;
        typed.push((7, text_element("priority", CLIENT, &priority.to_string())));
    }
    let assembler = Assembler {
        typed,
        xml: parse_all(&presence.xml, fragments)?,
        xml_code: PRESENCE_XML,
    };
    for child in assembler.children(&presence.layout)? {
        element.append_child(child);
    }
    Ok(element)
}

// ---------------------------------------------------------------------------------------
// <iq/>

const IQ_XML: u8 = 7;

fn iq(element: &Element, fragments: &mut impl Fragments) -> Option<Iq> {
    let envelope = envelope(element)?;
    let mut iq = Iq {
        to: envelope.to,
        from: envelope.from,
        id: envelope.id,
        r#type: match envelope.kind.as_deref() {
            None => IqType::Unspecified,
            Some("get") => IqType::Get,
            Some("set") => IqType::Set,
            Some("result") => IqType::Result,
            Some("error") => IqType::Error,
            Some(_) => return None,
        } as i32,
        ..Iq::default()
    };
    if envelope.lang.is_some() {
        return None;
    }
    let mut codes = Vec::new();
    for child in element_children(element)? {
        let ns = child.ns();
        let code = match (ns.as_str(), child.name()) {
            (BIND, "bind") if iq.payload.is_none() => bind(child).map(|bind| {
                iq.payload = Some(v1::iq::Payload::Bind(bind));
                5
            }),
            (PING, "ping") if iq.payload.is_none() => exact(child, || Element::bare("ping", PING))
                .map(|()| {
                    iq.payload = Some(v1::iq::Payload::Ping(true));
                    6
                }),
            _ => None,
        };
        codes.push(code.unwrap_or_else(|| {
            iq.xml.push(fragments.write(child));
            IQ_XML
        }));
    }
    iq.layout = layout(codes, IQ_XML);
    Some(iq)
}

fn bind(child: &Element) -> Option<Bind> {
    let mut bind = Bind::default();
    for grandchild in child.children() {
        let slot = match grandchild.name() {
            "resource" if bind.resource.is_none() => &mut bind.resource,
            "jid" if bind.jid.is_none() && bind.resource.is_none() => &mut bind.jid,
            _ => return None,
        };
        *slot = Some(grandchild.text());
    }
    exact(child, || Some(bind_element(&bind)))?;
    Some(bind)
}

fn bind_element(bind: &Bind) -> Element {
    let mut element = Element::bare("bind", BIND);
    if let Some(resource) = &bind.resource {
        element.append_child(text_element("resource", BIND, resource));
    }
    if let Some(jid) = &bind.jid {
        element.append_child(text_element("jid", BIND, jid));
    }
    element
}

fn iq_element(iq: &Iq, fragments: &mut impl Fragments) -> Result<Element, ConvertError> {
    let kind = match IqType::try_from(iq.r#type) {
        Ok(IqType::Unspecified) => None,
        Ok(IqType::Get) => Some("get"),
        Ok(IqType::Set) => Some("set"),
        Ok(IqType::Result) => Some("result"),
        Ok(IqType::Error) => Some("error"),
        Err(_) => return Err(ConvertError::Invalid("iq type")),
    };
    let id = iq.id.as_ref().map(id_text).transpose()?;
    let mut element = stanza_element("iq", &iq.to, &iq.from, id, kind, &None);
    let mut typed = Vec::new();
    match &iq.payload {
        Some(v1::iq::Payload::Bind(bind)) => typed.push((5, bind_element(bind))),
        Some(v1::iq::Payload::Ping(true)) => typed.push((6, Element::bare("ping", PING))),
        Some(v1::iq::Payload::Ping(false)) | None => {}
    }
    let assembler = Assembler {
        typed,
        xml: parse_all(&iq.xml, fragments)?,
        xml_code: IQ_XML,
    };
    for child in assembler.children(&iq.layout)? {
        element.append_child(child);
    }
    Ok(element)
}

// ---------------------------------------------------------------------------------------
// <stream:features/>

const FEATURES_XML: u8 = 7;

fn features(element: &Element, fragments: &mut impl Fragments) -> Option<Features> {
    let mut features = Features::default();
    let mut codes = Vec::new();
    if !element.attrs().is_empty() {
        return None;
    }
    for child in element_children(element)? {
        let ns = child.ns();
        let code = match (ns.as_str(), child.name()) {
            (SASL, "mechanisms") if !features.has_mechanisms => {
                features.has_mechanisms = true;
                features.mechanisms = child.children().map(Element::text).collect();
                1
            }
            (BIND, "bind") if !features.bind => {
                features.bind = true;
                3
            }
            (SESSION, "session") if !features.session_optional => {
                features.session_optional = true;
                4
            }
            (SM, "sm") if !features.sm => {
                features.sm = true;
                5
            }
            (REGISTER_FEATURE, "register") if !features.register => {
                features.register = true;
                6
            }
            _ => {
                features.xml.push(fragments.write(child));
                FEATURES_XML
            }
        };
        codes.push(code);
    }
    features.layout = layout(codes, FEATURES_XML);
    // The caller compares the rebuilt element with the input, so a feature read too loosely
    // here (say, <bind/> with a child) makes the whole element a fragment, never a wrong one.
    Some(features)
}

fn features_element(
    features: &Features,
    fragments: &mut impl Fragments,
) -> Result<Element, ConvertError> {
    let mut typed = Vec::new();
    if features.has_mechanisms {
        let mut mechanisms = Element::bare("mechanisms", SASL);
        for mechanism in &features.mechanisms {
            mechanisms.append_child(text_element("mechanism", SASL, mechanism));
        }
        typed.push((1, mechanisms));
    }
    if features.bind {
        typed.push((3, Element::bare("bind", BIND)));
    }
    if features.session_optional {
        let mut session = Element::bare("session", SESSION);
        session.append_child(Element::bare("optional", SESSION));
        typed.push((4, session));
    }
    if features.sm {
        typed.push((5, Element::bare("sm", SM)));
    }
    if features.register {
        typed.push((6, Element::bare("register", REGISTER_FEATURE)));
    }
    let assembler = Assembler {
        typed,
        xml: parse_all(&features.xml, fragments)?,
        xml_code: FEATURES_XML,
    };
    let mut element = Element::bare("features", STREAM);
    for child in assembler.children(&features.layout)? {
        element.append_child(child);
    }
    Ok(element)
}

// ---------------------------------------------------------------------------------------
// SASL

/// The raw data of a SASL element: `None` for no text, empty for "=" (RFC 6120 §6.4.2);
/// `Some(None)` is returned for an element that is not canonical base64 text only.
fn sasl_data(element: &Element) -> Option<Option<Vec<u8>>> {
    if element.children().next().is_some() {
        return None;
    }
    let text = element.text();
    if text.is_empty() {
        return Some(None);
    }
    if text == "=" {
        return Some(Some(Vec::new()));
    }
    let data = BASE64.decode(text.as_bytes()).ok()?;
    // Only canonical base64 (no line breaks, padding as written by us) is typed.
    (BASE64.encode(&data) == text).then_some(Some(data))
}

fn put_sasl_data(element: &mut Element, data: Option<&[u8]>) {
    match data {
        None => {}
        Some([]) => element.append_text_node("="),
        Some(data) => element.append_text_node(BASE64.encode(data)),
    }
}

fn sasl_element(name: &str, data: &SaslData) -> Element {
    let mut element = Element::bare(name, SASL);
    put_sasl_data(&mut element, data.data.as_deref());
    element
}

// ---------------------------------------------------------------------------------------
// Small helpers.

/// `Some(())` when `make` rebuilds `child` exactly.
fn exact<T: IntoOption>(child: &Element, make: impl FnOnce() -> T) -> Option<()> {
    (make().into_option()? == *child).then_some(())
}

/// Lets [`exact`] take makers that can and cannot fail.
trait IntoOption {
    fn into_option(self) -> Option<Element>;
}

impl IntoOption for Element {
    fn into_option(self) -> Option<Element> {
        Some(self)
    }
}

impl IntoOption for Option<Element> {
    fn into_option(self) -> Option<Element> {
        self
    }
}

/// The text of a child with no attributes and no element children, when rebuilding it from
/// that text is exact.
fn exact_text(child: &Element) -> Option<String> {
    let text = child.text();
    let ns = child.ns();
    exact(child, || text_element(child.name(), &ns, &text))?;
    Some(text)
}

fn text_element(name: &str, ns: &str, text: &str) -> Element {
    let mut element = Element::bare(name, ns);
    if !text.is_empty() {
        element.append_text_node(text);
    }
    element
}

/// Sets the attributes that are `Some`; the names are constants of this module.
fn with_attrs<const N: usize>(
    mut element: Element,
    attrs: [(&'static str, Option<String>); N],
) -> Element {
    for (name, value) in attrs {
        if let Some(value) = value {
            element
                .attrs_mut()
                .insert(Namespace::NONE, ncname(name), value);
        }
    }
    element
}

/// The values of `names` when the element has no other attribute.
fn only_attrs(element: &Element, names: &[&str]) -> Option<Vec<Option<String>>> {
    let mut values = vec![None; names.len()];
    for ((ns, name), value) in element.attrs() {
        if !ns.is_none() {
            return None;
        }
        let index = names.iter().position(|n| *n == name.as_str())?;
        values[index] = Some(value.clone());
    }
    Some(values)
}

/// A decimal number in canonical form (no sign, no leading zeros).
fn number<T: std::str::FromStr + ToString>(text: &str) -> Option<T> {
    let n = text.parse::<T>().ok()?;
    (n.to_string() == text).then_some(n)
}

/// An element name received in a frame (a condition), checked to be an XML name.
fn name(text: &str) -> Result<&str, ConvertError> {
    NcName::try_from(text)
        .map(|_| text)
        .map_err(|_| ConvertError::Invalid("element name"))
}

fn ncname(name: &'static str) -> NcName {
    #[allow(clippy::expect_used)]
    NcName::try_from(name).expect("attribute names of this module are NCNames")
}

/// The id as 16 bytes when it is a canonical (lowercase, hyphenated) UUID, else as text.
pub fn id_of(text: &str) -> Id {
    match uuid_bytes(text) {
        Some(bytes) => Id {
            text: None,
            uuid: bytes.to_vec(),
        },
        None => Id {
            text: Some(text.to_owned()),
            uuid: Vec::new(),
        },
    }
}

/// The text of an id.
pub fn id_text(id: &Id) -> Result<String, ConvertError> {
    match &id.text {
        Some(text) if id.uuid.is_empty() => Ok(text.clone()),
        None => uuid_text(&id.uuid),
        Some(_) => Err(ConvertError::Invalid("id has both text and uuid")),
    }
}

fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut hex = b.iter().filter(|c| **c != b'-');
    for byte in &mut out {
        let hi = lower_hex(*hex.next()?)?;
        let lo = lower_hex(*hex.next()?)?;
        *byte = hi << 4 | lo;
    }
    Some(out)
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn uuid_text(bytes: &[u8]) -> Result<String, ConvertError> {
    if bytes.len() != 16 {
        return Err(ConvertError::Invalid("uuid is not 16 bytes"));
    }
    let mut out = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    Ok(out)
}
