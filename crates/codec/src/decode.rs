//! Bytes from a client-to-server stream (RFC 6120 §4) to [`StreamEvent`]s.
//!
//! rxml's [`RawParser`] does the tokenizing and enforces well-formedness and the XMPP
//! restrictions (no DTD, no custom entities, no processing instructions, no comments; RFC 6120
//! §11.1). We use the raw parser rather than rxml's namespace-resolving `Parser` because the
//! latter swallows namespace declarations, and we must count them (`max_namespace_decls`) and
//! turn prefix mistakes into the stream errors RFC 6120 names. The resolution itself is small:
//! a stack of `(prefix, namespace)` bindings with one mark per open element.
//!
//! Limits are enforced as bytes arrive, never after the fact: rxml is handed at most one byte
//! more than the current unit (stream header or top-level element) may still use, so a peer
//! cannot make us buffer more than `max_stanza_bytes` of anything, and rxml's own token buffer
//! is capped at [`MAX_TOKEN_BYTES`].

use bytes::{Buf, BytesMut};
use confab_core::ns;
use minidom::Element;
use rxml::error::EndOrError;
use rxml::{AttrMap, Namespace, NcName, Options, Parse, RawEvent, RawParser, WithOptions};

use crate::CodecError;

/// Cap on rxml's `max_token_length`: the longest name or attribute value accepted, and the
/// size at which long text is cut into several chunks.
///
/// rxml reserves a token buffer of this size up front while it lexes, so it is per-connection
/// memory; 8 KiB is far above any JID (at most 3071 bytes, RFC 7622 §3.1) or id a stanza needs.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Namespace values a client declares on nearly every stream, shared instead of allocated.
const CLIENT_NS: Namespace<'static> = Namespace::from_str(ns::CLIENT);
const STREAM_NS: Namespace<'static> = Namespace::from_str(ns::STREAM);

/// Hard limits on what one peer may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Raw bytes one stanza (any top-level element) or the stream header may span; 256 KiB.
    pub max_stanza_bytes: usize,
    /// Element nesting inside one stanza, counting the stanza itself as depth 1; 32.
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included; 64.
    pub max_attributes: usize,
    /// Namespace declarations in one stanza (or in the stream header); 16.
    pub max_namespace_decls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 64,
            max_namespace_decls: 16,
        }
    }
}

/// The attributes of the initiating entity's stream header (RFC 6120 §4.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// `to`: the domain the client wants to talk to.
    pub to: Option<String>,
    /// `from`: the JID the client claims (informational before authentication).
    pub from: Option<String>,
    /// `version`: `1.0` for RFC 6120 clients; absent means a pre-XMPP-1.0 client.
    pub version: Option<String>,
    /// `xml:lang`: the default language of the client's human-readable text.
    pub lang: Option<String>,
    /// `id`: a client must not send one and the server must ignore it (RFC 6120 §4.7.3);
    /// reported only so it can be logged.
    pub id: Option<String>,
}

/// One complete thing read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The stream header `<stream:stream ...>` (again after every [`XmlStreamDecoder::reset`]).
    Open(StreamHeader),
    /// A complete first-level element: a stanza, or a negotiation element such as `<auth/>`.
    Stanza(Element),
    /// The closing `</stream:stream>` tag.
    Close,
}

/// Where in the document the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing handed to rxml yet; leading whitespace is still skipped.
    Start,
    /// Reading the XML declaration or the stream header.
    Prolog,
    /// Inside `<stream:stream>`.
    Stream,
    /// `</stream:stream>` was read; input is discarded.
    Closed,
}

/// An in-scope namespace binding: `None` is the default namespace.
type Binding = (Option<NcName>, Namespace<'static>);

/// An attribute that is not a namespace declaration, waiting for the head to be complete so
/// its prefix can be resolved.
type PendingAttr = (Option<NcName>, NcName, String);

/// Sans-IO decoder for one client-to-server XML stream.
///
/// Feed it the connection's read buffer; it consumes bytes and returns events one at a time,
/// leaving bytes after the returned event in the buffer. That is what makes a stream restart
/// exact: after the `<proceed/>` or `<success/>` stanza is returned, the caller calls
/// [`reset`](Self::reset) and the very next byte in the buffer is read as the new stream.
pub struct XmlStreamDecoder {
    /// The limits this decoder enforces.
    limits: Limits,
    /// The rxml tokenizer; recreated on every reset because its state is per document.
    parser: RawParser,
    /// Position in the document.
    phase: Phase,
    /// The first error, returned again on every later call: a stream error is final.
    error: Option<CodecError>,
    /// Bytes consumed toward the unit (stream header or top-level element) being read; the
    /// value checked against `max_stanza_bytes` and reported by `buffered`.
    pending: usize,
    /// Qualified name of the element whose start tag is being read.
    head: Option<(Option<NcName>, NcName)>,
    /// Attributes of that start tag, resolved when the tag ends.
    head_attrs: Vec<PendingAttr>,
    /// Attributes seen on that start tag, namespace declarations included.
    head_attr_count: usize,
    /// Namespace declarations in the current stanza or stream header.
    ns_decls: usize,
    /// In-scope namespace bindings, innermost last.
    bindings: Vec<Binding>,
    /// `bindings.len()` when each open element (stream root included) started.
    scopes: Vec<usize>,
    /// Open elements of the stanza being read; the stanza itself at the bottom.
    stack: Vec<Element>,
}

impl std::fmt::Debug for XmlStreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmlStreamDecoder")
            .field("phase", &self.phase)
            .field("pending", &self.pending)
            .field("depth", &self.stack.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl XmlStreamDecoder {
    /// A decoder waiting for a stream header.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            parser: new_parser(&limits),
            phase: Phase::Start,
            error: None,
            pending: 0,
            head: None,
            head_attrs: Vec::new(),
            head_attr_count: 0,
            ns_decls: 0,
            bindings: Vec::new(),
            scopes: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Consumes as many bytes of `buf` as it can and returns the next complete event,
    /// `Ok(None)` if more bytes are needed.
    ///
    /// Bytes after the returned event stay in `buf`; call again until `Ok(None)`. After an
    /// error every call returns that error. After [`StreamEvent::Close`] input is discarded.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        match self.phase {
            Phase::Closed => {
                buf.clear();
                return Ok(None);
            }
            Phase::Start => {
                // XML forbids anything before the XML declaration, but whitespace can sit
                // between the last element of the previous stream and a restarted one: a
                // keepalive sent just before `<success/>` arrived must not break the restart.
                let blank = buf.iter().take_while(|b| is_xml_whitespace(**b)).count();
                buf.advance(blank);
                if buf.is_empty() {
                    return Ok(None);
                }
                self.phase = Phase::Prolog;
            }
            Phase::Prolog | Phase::Stream => {}
        }
        let result = self.run(buf);
        if let Err(error) = &result {
            self.error = Some(error.clone());
        }
        result
    }

    /// Forget all parser state: RFC 6120 §5.4.3.3 / §6.4.6 stream restart after STARTTLS and
    /// SASL. The next bytes must be a fresh stream header (an XML declaration is allowed
    /// again).
    ///
    /// After STARTTLS the caller must also drop whatever plaintext is still in its buffer:
    /// bytes pipelined behind `<starttls/>` were not protected by TLS and must not be read as
    /// part of the new stream (RFC 6120 §5.4.3.3). After SASL the buffer is kept and decoded
    /// on.
    pub fn reset(&mut self) {
        // rxml has no way to start a second document in the same parser, so the parser is
        // replaced; our own vectors keep their capacity.
        self.parser = new_parser(&self.limits);
        self.phase = Phase::Start;
        self.error = None;
        self.pending = 0;
        self.head = None;
        self.head_attrs.clear();
        self.head_attr_count = 0;
        self.ns_decls = 0;
        self.bindings.clear();
        self.scopes.clear();
        self.stack.clear();
    }

    /// Bytes currently buffered inside the decoder (for memory accounting).
    ///
    /// This is the raw size of the partly read stanza or header; its tree and rxml's token
    /// buffer together hold about that much. Zero between stanzas.
    pub fn buffered(&self) -> usize {
        self.pending
    }

    /// Release internal buffers while idle so an idle session stays small (shrink_to_fit or
    /// equivalent).
    pub fn shrink(&mut self) {
        self.parser.release_temporaries();
        self.head_attrs.shrink_to_fit();
        self.bindings.shrink_to_fit();
        self.scopes.shrink_to_fit();
        self.stack.shrink_to_fit();
    }

    /// The token limit rxml runs with.
    fn token_limit(&self) -> usize {
        token_limit(&self.limits)
    }

    /// Feeds rxml until an event completes or the buffer runs dry.
    fn run(&mut self, buf: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        let max = self.limits.max_stanza_bytes;
        loop {
            // One byte more than the unit may still use: if rxml eats all of it, the unit is
            // too large, and we know before buffering anything beyond the limit.
            let room = max.saturating_sub(self.pending).saturating_add(1);
            let offered = buf.len().min(room);
            let mut window = &buf[..offered];
            let result = self.parser.parse(&mut window, false);
            let used = offered - window.len();
            buf.advance(used);
            self.pending += used;
            if self.pending > max {
                return Err(CodecError::StanzaTooLarge { limit: max });
            }
            let event = match result {
                Ok(Some(event)) => event,
                // Only reported at end of input, which we never signal.
                Ok(None) => return Ok(None),
                Err(EndOrError::NeedMoreData) if used > 0 && !buf.is_empty() => continue,
                Err(EndOrError::NeedMoreData) => return Ok(None),
                Err(EndOrError::Error(error)) => {
                    return Err(CodecError::from_rxml(error, self.token_limit()));
                }
            };
            if let Some(event) = self.handle(event)? {
                return Ok(Some(event));
            }
        }
    }

    /// Applies one rxml event; returns a stream event when one completes.
    fn handle(&mut self, event: RawEvent) -> Result<Option<StreamEvent>, CodecError> {
        match event {
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(_, qname) => {
                if self.stack.is_empty() {
                    // A new stanza (or the stream header) starts its own namespace budget.
                    self.ns_decls = 0;
                }
                if self.phase == Phase::Stream && self.stack.len() >= self.limits.max_depth {
                    return Err(CodecError::TooDeep {
                        limit: self.limits.max_depth,
                    });
                }
                self.scopes.push(self.bindings.len());
                self.head = Some(qname);
                self.head_attr_count = 0;
                Ok(None)
            }
            RawEvent::Attribute(_, (prefix, local), value) => {
                self.head_attr_count += 1;
                if self.head_attr_count > self.limits.max_attributes {
                    return Err(CodecError::TooManyAttributes {
                        limit: self.limits.max_attributes,
                    });
                }
                match prefix {
                    None if local == "xmlns" => self.declare(None, value)?,
                    Some(prefix) if prefix == "xmlns" => self.declare(Some(local), value)?,
                    prefix => self.head_attrs.push((prefix, local, value)),
                }
                Ok(None)
            }
            RawEvent::ElementHeadClose(_) => self.finish_head(),
            RawEvent::ElementFoot(_) => Ok(self.close_element()),
            RawEvent::Text(_, text) => self.text(text),
        }
    }

    /// Records a namespace declaration on the start tag being read.
    fn declare(&mut self, prefix: Option<NcName>, value: String) -> Result<(), CodecError> {
        self.ns_decls += 1;
        if self.ns_decls > self.limits.max_namespace_decls {
            return Err(CodecError::TooManyNamespaceDecls {
                limit: self.limits.max_namespace_decls,
            });
        }
        let scope = self.scopes.last().copied().unwrap_or(0);
        if self.bindings[scope..].iter().any(|(p, _)| *p == prefix) {
            // rxml's raw parser leaves duplicate detection to us (XML 1.0 §3.1 WFC: Unique
            // Att Spec).
            return Err(CodecError::NotWellFormed(rxml::Error::DuplicateAttribute));
        }
        let namespace = if value == ns::CLIENT {
            CLIENT_NS
        } else if value == ns::STREAM {
            STREAM_NS
        } else {
            Namespace::from(value)
        };
        self.bindings.push((prefix, namespace));
        Ok(())
    }

    /// Resolves the completed start tag: the stream header becomes [`StreamEvent::Open`],
    /// anything else a new open element.
    fn finish_head(&mut self) -> Result<Option<StreamEvent>, CodecError> {
        let Some((prefix, local)) = self.head.take() else {
            return Ok(None);
        };
        let namespace = match &prefix {
            None => lookup(&self.bindings, None)
                .unwrap_or(Namespace::none())
                .clone(),
            Some(prefix) => lookup(&self.bindings, Some(prefix))
                .ok_or_else(|| CodecError::BadNamespacePrefix(prefix.to_string()))?
                .clone(),
        };
        let mut attrs = AttrMap::new();
        for (attr_prefix, name, value) in self.head_attrs.drain(..) {
            // Unprefixed attributes are in no namespace, whatever the default namespace is
            // (Namespaces in XML 1.0 §6.2).
            let attr_ns = match attr_prefix {
                None => Namespace::NONE,
                Some(attr_prefix) => lookup(&self.bindings, Some(&attr_prefix))
                    .ok_or_else(|| CodecError::BadNamespacePrefix(attr_prefix.to_string()))?
                    .clone(),
            };
            if attrs.insert(attr_ns, name, value).is_some() {
                return Err(CodecError::NotWellFormed(rxml::Error::DuplicateAttribute));
            }
        }
        if self.phase != Phase::Stream {
            let header = self.open_stream(prefix.is_some(), namespace, local, &attrs)?;
            return Ok(Some(StreamEvent::Open(header)));
        }
        let mut element = Element::bare(local, namespace);
        *element.attrs_mut() = attrs;
        self.stack.push(element);
        Ok(None)
    }

    /// Validates the stream header (RFC 6120 §4.7, §4.8) and enters the stream.
    fn open_stream(
        &mut self,
        prefixed: bool,
        namespace: Namespace<'static>,
        local: NcName,
        attrs: &AttrMap,
    ) -> Result<StreamHeader, CodecError> {
        // §4.8.1: the root must be <stream/> in the stream namespace.
        if namespace != ns::STREAM || local != "stream" {
            return Err(CodecError::InvalidStreamRoot {
                namespace: namespace.into(),
                name: local.into(),
            });
        }
        // §4.8.5: the stream namespace needs a prefix (any prefix: we do not insist on
        // "stream"), because the default namespace is for the content namespace.
        if !prefixed {
            return Err(CodecError::BadNamespacePrefix(String::new()));
        }
        // §4.8.2: declaring a default (content) namespace is optional, since stanzas may be
        // prefix-qualified instead; but a declared one must be ours.
        if let Some(default) = lookup(&self.bindings, None)
            && default.is_some()
            && *default != ns::CLIENT
        {
            return Err(CodecError::InvalidContentNamespace(default.to_string()));
        }
        let get = |name: &str| attrs.get(Namespace::none(), name).cloned();
        let header = StreamHeader {
            to: get("to"),
            from: get("from"),
            version: get("version"),
            lang: attrs.get(Namespace::xml(), "lang").cloned(),
            id: get("id"),
        };
        self.phase = Phase::Stream;
        self.pending = 0;
        Ok(header)
    }

    /// Closes the innermost open element; completes a stanza or the stream.
    fn close_element(&mut self) -> Option<StreamEvent> {
        if let Some(mark) = self.scopes.pop() {
            self.bindings.truncate(mark);
        }
        match self.stack.pop() {
            Some(element) => match self.stack.last_mut() {
                Some(parent) => {
                    parent.append_child(element);
                    None
                }
                None => {
                    self.pending = 0;
                    Some(StreamEvent::Stanza(element))
                }
            },
            None => {
                self.phase = Phase::Closed;
                Some(StreamEvent::Close)
            }
        }
    }

    /// Character data: part of a stanza, or whitespace between stanzas.
    fn text(&mut self, text: String) -> Result<Option<StreamEvent>, CodecError> {
        match self.stack.last_mut() {
            // append_text merges with a preceding text node, so text rxml delivered in
            // several chunks ends up as one node.
            Some(element) => element.append_text(text),
            None if text.bytes().all(is_xml_whitespace) => {
                // Whitespace keepalive (RFC 6120 §11.7): nothing to report, and it
                // does not count toward the next stanza's size.
                self.pending = 0;
            }
            None => return Err(CodecError::TextBetweenStanzas),
        }
        Ok(None)
    }
}

/// The namespace bound to `prefix` (`None`: the default namespace), innermost binding first.
fn lookup<'a>(bindings: &'a [Binding], prefix: Option<&NcName>) -> Option<&'a Namespace<'static>> {
    if let Some(prefix) = prefix
        && *prefix == "xml"
    {
        // Bound by definition (Namespaces in XML 1.0 §3), never declared.
        return Some(Namespace::xml());
    }
    bindings
        .iter()
        .rev()
        .find(|(bound, _)| bound.as_ref() == prefix)
        .map(|(_, namespace)| namespace)
}

/// rxml's `max_token_length` for these limits.
fn token_limit(limits: &Limits) -> usize {
    limits.max_stanza_bytes.clamp(1, MAX_TOKEN_BYTES)
}

/// A parser for one XML document (one stream, up to the next restart).
fn new_parser(limits: &Limits) -> RawParser {
    // Comments stay rejected (the default): RFC 6120 §11.1 forbids them.
    <RawParser as WithOptions>::with_options(Options {
        max_token_length: token_limit(limits),
        ..Options::default()
    })
}

/// XML 1.0 `S` production.
fn is_xml_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}
