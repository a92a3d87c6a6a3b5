//! The server's side of the stream: header, elements and close tag, written into a
//! `BytesMut` that the connection flushes.
//!
//! All escaping is rxml's [`Encoder`]. What this module adds is namespace bookkeeping that
//! knows the context every element is written into: the stream header we sent binds the
//! default namespace to `jabber:client` and the prefix `stream` to the stream namespace, so a
//! `jabber:client` stanza needs no `xmlns`, and `<stream:features/>` / `<stream:error/>` use
//! the `stream:` prefix every client library expects (RFC 6120 §4.8.5).

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::{BufMut, BytesMut};
use confab_core::ns;
use minidom::{Element, Node};
use rxml::writer::{Encoder, Item, PREFIX_XML, PREFIX_XMLNS, PrefixError, TrackNamespace};
use rxml::{Namespace, NcName, NcNameStr};

/// `jabber:client` in rxml's shared form, so writing an element clones an `Arc` instead of
/// copying the URI (rxml copies namespaces that are not `Arc`-backed on every element).
static CLIENT: LazyLock<Namespace<'static>> =
    LazyLock::new(|| Namespace::from(ns::CLIENT.to_owned()));

/// The stream namespace, shared like [`CLIENT`].
static STREAM: LazyLock<Namespace<'static>> =
    LazyLock::new(|| Namespace::from(ns::STREAM.to_owned()));

/// Writes the XML declaration and the response stream header (RFC 6120 §4.7), declaring
/// `jabber:client` as the default namespace and `stream` as the stream namespace's prefix.
///
/// `lang` is omitted when empty; `to` when `None`.
pub fn stream_header(
    out: &mut BytesMut,
    from_domain: &str,
    to: Option<&str>,
    id: &str,
    lang: &str,
) {
    // §11.5: the declaration is optional but recommended; constant, so written as is.
    out.put_slice(b"<?xml version='1.0'?>");
    let start = out.len();
    if write_header(out, from_domain, to, id, lang, false).is_err() {
        // Only characters XML cannot carry (C0 controls) make rxml refuse; write the header
        // with those replaced rather than a broken one.
        out.truncate(start);
        if write_header(out, from_domain, to, id, lang, true).is_err() {
            out.truncate(start);
        }
    }
}

/// Writes `</stream:stream>`.
pub fn stream_close(out: &mut BytesMut) {
    out.put_slice(b"</stream:stream>");
}

/// Writes one element (a stanza, `<stream:features/>`, `<stream:error/>`, a negotiation
/// element, ...) as a first-level child of a stream opened with [`stream_header`].
///
/// Text or attribute values containing characters XML 1.0 cannot represent (C0 controls other
/// than tab, CR and LF; U+FFFE; U+FFFF) are written with those characters replaced by U+FFFD.
/// An element name that is not an XML NCName is a programming error: nothing is written (and
/// debug builds panic).
pub fn element(out: &mut BytesMut, element: &Element) {
    let start = out.len();
    if write_element(out, element, false).is_ok() {
        return;
    }
    out.truncate(start);
    if let Err(error) = write_element(out, element, true) {
        out.truncate(start);
        if cfg!(debug_assertions) {
            panic!("<{}/> cannot be serialised: {error}", element.name());
        }
    }
}

fn write_header(
    out: &mut BytesMut,
    from_domain: &str,
    to: Option<&str>,
    id: &str,
    lang: &str,
    sanitize: bool,
) -> Result<(), rxml::Error> {
    let mut encoder = Encoder::new();
    let tracker = encoder.ns_tracker_mut();
    tracker.declare_fixed(None, CLIENT.clone());
    tracker.declare_fixed(Some(ncname("stream")), STREAM.clone());
    encoder.encode(
        Item::ElementHeadStart(STREAM.clone(), ncname("stream")),
        out,
    )?;
    let mut attr = |name: &'static str, ns: Namespace<'static>, value: &str| {
        let value = xml_safe(value, sanitize);
        encoder.encode(Item::Attribute(ns, ncname(name), &value), out)
    };
    attr("from", Namespace::NONE, from_domain)?;
    if let Some(to) = to {
        attr("to", Namespace::NONE, to)?;
    }
    attr("id", Namespace::NONE, id)?;
    attr("version", Namespace::NONE, "1.0")?;
    if !lang.is_empty() {
        attr("lang", Namespace::XML, lang)?;
    }
    // The header stays open for the life of the stream, so no foot is ever written.
    encoder.encode(Item::ElementHeadEnd, out)
}

fn write_element(out: &mut BytesMut, element: &Element, sanitize: bool) -> Result<(), rxml::Error> {
    let mut encoder = Encoder::from(StreamNamespaces::new());
    write_tree(&mut encoder, element, out, sanitize)
}

fn write_tree(
    encoder: &mut Encoder<StreamNamespaces>,
    element: &Element,
    out: &mut BytesMut,
    sanitize: bool,
) -> Result<(), rxml::Error> {
    let name = <&NcNameStr>::try_from(element.name())?;
    let namespace = encoder.ns_tracker().namespace_of(element);
    encoder.encode(Item::ElementHeadStart(namespace, name), out)?;
    for ((attr_ns, attr_name), value) in element.attrs() {
        let value = xml_safe(value, sanitize);
        encoder.encode(Item::Attribute(attr_ns.borrow(), attr_name, &value), out)?;
    }
    let mut nodes = element.nodes().peekable();
    if nodes.peek().is_some() {
        encoder.encode(Item::ElementHeadEnd, out)?;
        for node in nodes {
            match node {
                Node::Element(child) => write_tree(encoder, child, out, sanitize)?,
                Node::Text(text) => encoder.encode(Item::Text(&xml_safe(text, sanitize)), out)?,
            }
        }
    }
    // Without content this writes `/>`.
    encoder.encode(Item::ElementFoot, out)
}

/// Returns `text` unchanged, or with the characters XML 1.0 §2.2 excludes replaced by U+FFFD
/// when `sanitize` is set (only on the retry after rxml refused them).
fn xml_safe(text: &str, sanitize: bool) -> Cow<'_, str> {
    fn excluded(c: char) -> bool {
        matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
    }
    if sanitize && text.chars().any(excluded) {
        Cow::Owned(
            text.chars()
                .map(|c| if excluded(c) { '\u{fffd}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Turns a name known at compile time into rxml's checked type.
fn ncname(name: &'static str) -> &'static NcNameStr {
    #[allow(clippy::expect_used)]
    <&NcNameStr>::try_from(name).expect("names used by the codec are valid NCNames")
}

/// Namespace tracking for elements written inside our stream header.
///
/// rxml's `SimpleNamespaces` would have to be primed with a fake root element per call and
/// would still re-declare namespaces; this tracker starts out knowing the header's bindings.
/// Element namespaces other than the stream namespace are expressed as default-namespace
/// declarations (`xmlns='...'`), the form XMPP software universally reads; namespaced
/// attributes other than `xml:` get per-element prefixes `ns0`, `ns1`, ...
struct StreamNamespaces {
    /// The default namespace of each open element; the bottom is the stream's `jabber:client`.
    defaults: Vec<Namespace<'static>>,
    /// Default namespace declared on the element head being written.
    next_default: Option<Namespace<'static>>,
    /// Prefixes declared on the element head being written.
    prefixes: Vec<(Namespace<'static>, NcName)>,
}

impl StreamNamespaces {
    fn new() -> Self {
        let mut defaults = Vec::with_capacity(4);
        defaults.push(CLIENT.clone());
        Self {
            defaults,
            next_default: None,
            prefixes: Vec::new(),
        }
    }

    /// The default namespace in effect for the element being written.
    fn current_default(&self) -> &Namespace<'static> {
        self.next_default
            .as_ref()
            .or(self.defaults.last())
            .unwrap_or(Namespace::none())
    }

    /// The element's namespace, taken from a shared value when it is a common one:
    /// `Element` only hands out its namespace as a fresh `String`.
    fn namespace_of(&self, element: &Element) -> Namespace<'static> {
        let current = self.current_default();
        if element.has_ns(current.as_str()) {
            current.clone()
        } else if element.has_ns(ns::STREAM) {
            STREAM.clone()
        } else if element.has_ns(ns::CLIENT) {
            CLIENT.clone()
        } else {
            Namespace::from(element.ns())
        }
    }

    /// The prefix bound by the stream header or by definition, if any.
    fn fixed_prefix(name: &Namespace<'static>) -> Option<&'static NcNameStr> {
        if *name == rxml::XMLNS_XML {
            Some(PREFIX_XML)
        } else if *name == rxml::XMLNS_XMLNS {
            Some(PREFIX_XMLNS)
        } else if *name == ns::STREAM {
            Some(ncname("stream"))
        } else {
            None
        }
    }
}

impl TrackNamespace for StreamNamespaces {
    fn declare_fixed(&mut self, prefix: Option<&NcNameStr>, name: Namespace<'static>) -> bool {
        match prefix {
            None => self.next_default = Some(name),
            Some(prefix) => self.prefixes.push((name, prefix.to_ncname())),
        }
        true
    }

    fn declare_auto(&mut self, name: Namespace<'static>) -> (bool, Option<&NcNameStr>) {
        if let Some(prefix) = Self::fixed_prefix(&name) {
            return (false, Some(prefix));
        }
        if *self.current_default() == name {
            return (false, None);
        }
        if self.next_default.is_some() {
            let (new, prefix) = self.declare_with_auto_prefix(name);
            return (new, Some(prefix));
        }
        self.next_default = Some(name);
        (true, None)
    }

    fn declare_with_auto_prefix(&mut self, name: Namespace<'static>) -> (bool, &NcNameStr) {
        if let Some(prefix) = Self::fixed_prefix(&name) {
            return (false, prefix);
        }
        if let Some(index) = self.prefixes.iter().position(|(bound, _)| *bound == name) {
            return (false, &self.prefixes[index].1);
        }
        #[allow(clippy::expect_used)]
        let prefix = NcName::try_from(format!("ns{}", self.prefixes.len()))
            .expect("ns<n> is a valid NCName");
        self.prefixes.push((name, prefix));
        let (_, prefix) = &self.prefixes[self.prefixes.len() - 1];
        (true, prefix)
    }

    fn get_prefix_or_default(
        &self,
        name: Namespace<'static>,
    ) -> Result<Option<&NcNameStr>, PrefixError> {
        if *self.current_default() == name {
            Ok(None)
        } else {
            self.get_prefix(name).map(Some)
        }
    }

    fn get_prefix(&self, name: Namespace<'static>) -> Result<&NcNameStr, PrefixError> {
        if let Some(prefix) = Self::fixed_prefix(&name) {
            return Ok(prefix);
        }
        self.prefixes
            .iter()
            .find(|(bound, _)| *bound == name)
            .map(|(_, prefix)| &**prefix)
            .ok_or(PrefixError::Undeclared)
    }

    fn push(&mut self) {
        let default = match self.next_default.take() {
            Some(default) => default,
            None => self.current_default().clone(),
        };
        self.defaults.push(default);
        // Attribute prefixes are declared on the element that uses them and not reused by
        // descendants; rare in XMPP, and always correct.
        self.prefixes.clear();
    }

    fn pop(&mut self) {
        self.defaults.pop();
    }

    fn new_default_declaration(&self) -> Option<&Namespace<'static>> {
        self.next_default.as_ref()
    }

    fn new_prefix_declarations(
        &self,
    ) -> Box<dyn Iterator<Item = (&Namespace<'static>, &NcNameStr)> + '_> {
        if self.prefixes.is_empty() {
            // A zero-sized iterator: boxing it does not allocate, and this is the common case.
            Box::new(std::iter::empty())
        } else {
            Box::new(self.prefixes.iter().map(|(name, prefix)| (name, &**prefix)))
        }
    }
}
