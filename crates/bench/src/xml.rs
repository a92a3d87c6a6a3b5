//! A framing scanner for the server's side of an XMPP stream, and the few lookups the tool
//! needs inside one element.
//!
//! The load generator must cost far less CPU than the server it measures, so it does not
//! build a DOM: [`Scanner`] only finds where each first-level element ends (RFC 6120 §4),
//! and callers look inside the element's bytes with substring searches. That is enough
//! because the tool only reads what it asked for (features, SASL replies, IQ results and its
//! own chat messages) and trusts the server to send well-formed XML; anything it cannot
//! frame is reported as a failure, not repaired.
//!
//! The scanner handles what a well-formed stream may contain between and inside stanzas: an
//! XML declaration, whitespace keepalives, comments, CDATA sections and attribute values
//! holding `>` (legal in XML). Stream restarts (after STARTTLS and SASL) are the caller's
//! business: it calls [`Scanner::reset`] and keeps the bytes already buffered.

use bytes::{Buf, BytesMut};

/// What [`Scanner::next`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The server's `<stream:stream …>` header, `len` bytes long.
    Open(usize),
    /// A complete first-level element, `len` bytes long.
    Element(usize),
    /// The closing `</stream:stream>`, `len` bytes long.
    Close(usize),
}

#[cfg(test)]
impl Frame {
    /// How many bytes at the front of the buffer the frame spans.
    fn len(self) -> usize {
        match self {
            Frame::Open(len) | Frame::Element(len) | Frame::Close(len) => len,
        }
    }
}

/// The stream could not be framed; the text says where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub &'static str);

/// Incremental framing state for one stream.
///
/// Invariant: between elements (`depth == 0`) the buffer starts at the next `<`, so a
/// returned frame always starts at offset 0 and the caller takes it with `split_to(len)`.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Offset up to which the current element has been scanned.
    pos: usize,
    /// Elements open inside the current first-level element.
    depth: usize,
}

impl Scanner {
    /// Forgets any partial element, for a stream restart.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Finds the next complete frame at the front of `buf`, or `Ok(None)` if more bytes are
    /// needed. Skips (consumes) whitespace, XML declarations and comments between elements.
    /// The caller must remove the returned frame's bytes before calling again.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ScanError> {
        loop {
            if self.depth == 0 {
                let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
                buf.advance(blank);
                self.pos = 0;
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] != b'<' {
                    return Err(ScanError("text outside any stanza"));
                }
            }
            let Some(lt) = find_byte(&buf[self.pos..], b'<').map(|i| self.pos + i) else {
                // Character data inside an element: all of it is scanned.
                self.pos = buf.len();
                return Ok(None);
            };
            self.pos = lt;
            let rest = &buf[lt..];
            if rest.len() < 2 {
                return Ok(None);
            }
            match rest[1] {
                b'?' => {
                    let Some(end) = find(rest, b"?>") else {
                        return Ok(None);
                    };
                    self.skip(buf, lt + end + 2);
                }
                b'!' => {
                    let (close, open_len): (&[u8], usize) = if rest.starts_with(b"<!--") {
                        (b"-->", 4)
                    } else if rest.starts_with(b"<![CDATA[") {
                        (b"]]>", 9)
                    } else if rest.len() < 9 {
                        return Ok(None);
                    } else {
                        return Err(ScanError("DTD or unknown markup declaration"));
                    };
                    let Some(end) = find(&rest[open_len..], close) else {
                        return Ok(None);
                    };
                    self.skip(buf, lt + open_len + end + close.len());
                }
                b'/' => {
                    let Some(gt) = find_byte(rest, b'>') else {
                        return Ok(None);
                    };
                    let end = lt + gt + 1;
                    if self.depth == 0 {
                        return Ok(Some(Frame::Close(end)));
                    }
                    self.depth -= 1;
                    self.pos = end;
                    if self.depth == 0 {
                        self.pos = 0;
                        return Ok(Some(Frame::Element(end)));
                    }
                }
                _ => {
                    let Some(gt) = start_tag_end(rest) else {
                        return Ok(None);
                    };
                    let end = lt + gt + 1;
                    let self_closing = rest[gt - 1] == b'/';
                    if self.depth == 0 && local_name(tag_name(rest)) == b"stream" {
                        return Ok(Some(Frame::Open(end)));
                    }
                    if self_closing {
                        if self.depth == 0 {
                            return Ok(Some(Frame::Element(end)));
                        }
                        self.pos = end;
                    } else {
                        self.depth += 1;
                        self.pos = end;
                    }
                }
            }
        }
    }

    /// Moves past a declaration, comment or CDATA section ending at `end`.
    fn skip(&mut self, buf: &mut BytesMut, end: usize) {
        if self.depth == 0 {
            buf.advance(end);
            self.pos = 0;
        } else {
            self.pos = end;
        }
    }
}

/// Offset of the `>` closing the start tag at the front of `tag`, skipping quoted attribute
/// values (which may contain `>`).
fn start_tag_end(tag: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in tag.iter().enumerate().skip(1) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Some(i),
            None => {}
        }
    }
    None
}

/// The qualified name of the element whose start tag begins `element`.
pub fn tag_name(element: &[u8]) -> &[u8] {
    let body = element.get(1..).unwrap_or_default();
    let end = body
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>')
        .unwrap_or(body.len());
    &body[..end]
}

/// The part of a qualified name after its prefix.
pub fn local_name(name: &[u8]) -> &[u8] {
    match name.iter().position(|b| *b == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    }
}

/// The value of attribute `name` on the element's own start tag, entities left as sent.
pub fn attr<'a>(element: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let end = start_tag_end(element)?;
    let mut tag = &element[1 + tag_name(element).len()..end];
    loop {
        let start = tag
            .iter()
            .position(|b| !b.is_ascii_whitespace() && *b != b'/')?;
        tag = &tag[start..];
        let eq = find_byte(tag, b'=')?;
        let key = tag[..eq].trim_ascii();
        let rest = tag[eq + 1..].trim_ascii_start();
        let quote = *rest.first()?;
        let close = find_byte(&rest[1..], quote)?;
        let value = &rest[1..1 + close];
        if key == name.as_bytes() {
            return Some(value);
        }
        tag = &rest[close + 2..];
    }
}

/// The character data of the first descendant named `name` (unprefixed), or `None` if there
/// is no such element. An empty element gives an empty slice.
pub fn child_text<'a>(element: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let open = child_start(element, name)?;
    let rest = &element[open..];
    let gt = start_tag_end(rest)?;
    if rest[gt - 1] == b'/' {
        return Some(&[]);
    }
    let content = &rest[gt + 1..];
    let close = find(content, format!("</{name}").as_bytes())?;
    Some(&content[..close])
}

/// The first descendant named `name` (unprefixed), from its start tag to the end of
/// `element`, so [`attr`] reads the descendant's own attributes.
pub fn child<'a>(element: &'a [u8], name: &str) -> Option<&'a [u8]> {
    child_start(element, name).map(|at| &element[at..])
}

/// Whether the element has a descendant named `name` (unprefixed).
pub fn has_child(element: &[u8], name: &str) -> bool {
    child_start(element, name).is_some()
}

/// Offset of the first `<name` start tag after the element's own start tag.
fn child_start(element: &[u8], name: &str) -> Option<usize> {
    let own = start_tag_end(element)? + 1;
    let needle = format!("<{name}");
    let mut from = own;
    loop {
        let at = from + find(&element[from..], needle.as_bytes())?;
        let after = element.get(at + needle.len()).copied()?;
        if after == b'>' || after == b'/' || after.is_ascii_whitespace() {
            return Some(at);
        }
        from = at + 1;
    }
}

/// The name of the first child element (the condition of a SASL `<failure/>`, a stream
/// error or a stanza `<error/>`), skipping `<text>`.
pub fn first_child_name(element: &[u8]) -> Option<String> {
    let mut from = start_tag_end(element)? + 1;
    loop {
        let at = from + find_byte(&element[from..], b'<')?;
        let rest = &element[at..];
        if rest
            .get(1)
            .is_some_and(|b| *b != b'/' && *b != b'!' && *b != b'?')
        {
            let name = local_name(tag_name(rest));
            if name != b"text" {
                return Some(String::from_utf8_lossy(name).into_owned());
            }
        }
        from = at + 1;
    }
}

/// The condition and text of an error element (`<stream:error>`, SASL `<failure>`, or an
/// IQ/message with an `<error>` child), for failure reports.
pub fn error_reason(element: &[u8]) -> String {
    let scope = match child_start(element, "error") {
        Some(at) if local_name(tag_name(element)) != b"error" => &element[at..],
        _ => element,
    };
    let condition = first_child_name(scope).unwrap_or_else(|| "no condition".to_owned());
    match child_text(scope, "text") {
        Some(text) if !text.is_empty() => {
            format!("{condition} ({})", unescape(text))
        }
        _ => condition,
    }
}

/// Replaces the five predefined entities and numeric character references.
pub fn unescape(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    if !text.contains('&') {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = &*text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for use in character data or a single-quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Offset of the first occurrence of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = find_byte(&haystack[from..haystack.len() - needle.len() + 1], first) {
        let at = from + i;
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn find_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    haystack.iter().position(|b| *b == byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes and returns every frame as text.
    fn frames(input: &str, chunk: usize) -> Vec<String> {
        let mut scanner = Scanner::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = scanner.next(&mut buf).expect("well-formed") {
                let bytes = buf.split_to(frame.len());
                let text = String::from_utf8_lossy(&bytes).into_owned();
                out.push(match frame {
                    Frame::Open(_) => format!("open:{text}"),
                    Frame::Element(_) => text,
                    Frame::Close(_) => "close".to_owned(),
                });
            }
        }
        out
    }

    const STREAM: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='a>b' from='localhost'>\
        <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
        <mechanism>PLAIN</mechanism></mechanisms><register/></stream:features> \n\
        <!-- c --><message a='x>y' b=\"q'\"><body>1 &lt;2</body><x/><![CDATA[</message>]]></message>\
        <iq type='result' id='b'/></stream:stream>";

    #[test]
    fn frames_are_the_same_whatever_the_chunking() {
        let whole = frames(STREAM, STREAM.len());
        assert_eq!(whole.len(), 5, "{whole:?}");
        assert!(whole[0].starts_with("open:<stream:stream"));
        assert!(whole[1].starts_with("<stream:features>"));
        assert!(whole[1].ends_with("</stream:features>"));
        assert!(whole[2].starts_with("<message a='x>y'"));
        assert!(whole[2].ends_with("]]></message>"));
        assert_eq!(whole[3], "<iq type='result' id='b'/>");
        assert_eq!(whole[4], "close");
        for chunk in 1..40 {
            assert_eq!(frames(STREAM, chunk), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn restart_keeps_buffered_bytes() {
        let mut scanner = Scanner::default();
        let mut buf = BytesMut::from(&b"<success xmlns='x'/><stream:stream id='2'>"[..]);
        let frame = scanner.next(&mut buf).expect("ok").expect("frame");
        assert_eq!(frame, Frame::Element(20));
        let _ = buf.split_to(frame.len());
        scanner.reset();
        assert_eq!(scanner.next(&mut buf), Ok(Some(Frame::Open(22))));
    }

    #[test]
    fn rejects_text_between_stanzas() {
        let mut buf = BytesMut::from(&b"hello"[..]);
        assert!(Scanner::default().next(&mut buf).is_err());
    }

    #[test]
    fn lookups() {
        let msg = b"<message from='a@b/c' to=\"d@e\" type = 'chat'><body>12 345</body>\
            <bodyx>no</bodyx></message>";
        assert_eq!(tag_name(msg), b"message");
        assert_eq!(attr(msg, "type"), Some(&b"chat"[..]));
        assert_eq!(attr(msg, "to"), Some(&b"d@e"[..]));
        assert_eq!(attr(msg, "id"), None);
        assert_eq!(child_text(msg, "body"), Some(&b"12 345"[..]));
        assert_eq!(child_text(msg, "bod"), None);
        assert!(has_child(msg, "bodyx"));

        let failure = b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><text>x &amp; y</text>\
            <not-authorized/></failure>";
        assert_eq!(error_reason(failure), "not-authorized (x & y)");
        let iq = b"<iq type='error' id='1'><query/><error type='cancel'><conflict xmlns='s'/>\
            </error></iq>";
        assert_eq!(error_reason(iq), "conflict");
        let stream = b"<stream:error><policy-violation xmlns='s'/></stream:error>";
        assert_eq!(error_reason(stream), "policy-violation");
    }

    #[test]
    fn escaping_round_trips() {
        let text = "a<b>&'\"é";
        assert_eq!(unescape(escape(text).as_bytes()), text);
        assert_eq!(unescape(b"&#65;&#x42;&bogus;"), "AB&bogus;");
    }
}
