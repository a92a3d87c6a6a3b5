//! A logged-in session: login (SASL, stream restart, bind), stanzas out and events in,
//! XEP-0198 acknowledgements and resumption.

use std::collections::VecDeque;
use std::time::Duration;

use confab_proto::v1::frame::Kind;
use confab_proto::v1::{self, Frame, IqType, MessageType, SmEnable, StreamOpen};
use confab_proto::{MinidomFragments, Unit};
use minidom::Element;

use crate::Error;
use crate::auth::Mechanism;
use crate::connection::{Connection, DEFAULT_MAX_FRAME, Endpoint};
use crate::sm::StreamManagement;

/// After this many unacknowledged stanzas the client asks for an acknowledgement (`<r/>`),
/// so the resend queue kept for resumption stays short without a request per stanza.
const REQUEST_ACK_EVERY: usize = 8;

/// How to log in.
#[derive(Clone)]
pub struct LoginOptions {
    /// The account's local part (`alice`).
    pub user: String,
    /// The server's domain (`example.org`), sent as the stream's `to`.
    pub domain: String,
    /// The password.
    pub password: String,
    /// The resource to ask for; `None` lets the server choose.
    pub resource: Option<String>,
    /// The SASL mechanism.
    pub mechanism: Mechanism,
    /// Enable XEP-0198 stream management with resumption after binding.
    pub sm: bool,
    /// Longest wait for each answer during login, for receipts and for the close.
    pub timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
}

impl std::fmt::Debug for LoginOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: options end up in logs and panic messages.
        f.debug_struct("LoginOptions")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("resource", &self.resource)
            .field("mechanism", &self.mechanism)
            .field("sm", &self.sm)
            .field("timeout", &self.timeout)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl LoginOptions {
    /// Options for `jid` (`user@domain` or `user@domain/resource`) with defaults:
    /// SCRAM-SHA-256, no stream management, 10 s timeout, 256 KiB frames.
    pub fn new(jid: &str, password: impl Into<String>) -> Result<LoginOptions, Error> {
        let (bare, resource) = match jid.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource.to_owned())),
            None => (jid, None),
        };
        let Some((user, domain)) = bare.split_once('@') else {
            return Err(Error::Protocol(format!("{jid:?} is not user@domain")));
        };
        if user.is_empty() || domain.is_empty() {
            return Err(Error::Protocol(format!("{jid:?} is not user@domain")));
        }
        Ok(LoginOptions {
            user: user.to_owned(),
            domain: domain.to_owned(),
            password: password.into(),
            resource,
            mechanism: Mechanism::default(),
            sm: false,
            timeout: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
        })
    }
}

/// The Confab commit receipt for a sent message (docs/protocol/confab-ack.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The id the server recognised the message by (its origin-id or stanza id).
    pub client_id: Option<String>,
    /// The server's id of the message (a UUIDv7).
    pub server_id: String,
    /// The message's position in the conversation, from 1.
    pub seq: u64,
    /// The other party, a bare JID.
    pub with: String,
    /// Server time of receipt, milliseconds since the Unix epoch.
    pub stamp_ms: i64,
}

impl Receipt {
    /// The stamp as XEP-0082 text (`2025-01-31T12:00:00.123Z`), as in the XML receipt.
    pub fn stamp(&self) -> String {
        confab_proto::time::format_ms(self.stamp_ms)
    }

    fn from_ack(ack: &v1::ConfabAck) -> Result<Receipt, Error> {
        let uuid = v1::Id {
            text: None,
            uuid: ack.server_id.clone(),
        };
        Ok(Receipt {
            client_id: ack
                .client_id
                .as_ref()
                .map(confab_proto::convert::id_text)
                .transpose()?,
            server_id: confab_proto::convert::id_text(&uuid)?,
            seq: ack.seq,
            with: ack.with.clone(),
            stamp_ms: ack.stamp_ms,
        })
    }
}

/// A received message. The common fields are read from the typed frame without
/// converting it; [`Message::element`] gives the full XML form when needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `id`, as text.
    pub id: Option<String>,
    /// The XEP-0359 stanza id the server assigned, from the `<stanza-id/>` whose `by` is
    /// our own bare JID (the only one a client can trust, XEP-0359 §3).
    pub stanza_id: Option<String>,
    /// The frame as received.
    pub raw: v1::Message,
}

impl Message {
    /// `from`.
    pub fn from(&self) -> Option<&str> {
        self.raw.from.as_deref()
    }

    /// `to`.
    pub fn to(&self) -> Option<&str> {
        self.raw.to.as_deref()
    }

    /// The `<body/>` text.
    pub fn body(&self) -> Option<&str> {
        self.raw.body.as_deref()
    }

    /// The message type.
    pub fn kind(&self) -> MessageType {
        self.raw.r#type()
    }

    /// The message as an XML element (exactly what an XML client would have received).
    pub fn element(&self) -> Result<Element, Error> {
        element_of(Kind::Message(self.raw.clone()))
    }
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message that is not a Confab receipt (boxed: a typed message frame is large).
    Message(Box<Message>),
    /// A presence stanza.
    Presence(v1::Presence),
    /// An IQ the library did not answer itself (it answers XEP-0199 pings).
    Iq(v1::Iq),
    /// A Confab commit receipt for a message sent with [`Client::send_message`].
    Receipt(Receipt),
    /// Any other first-level element (sent as an XML fragment).
    Element(Element),
    /// The server ended the stream, after a stream error when there is one.
    Closed(Option<StreamError>),
}

/// An RFC 6120 §4.9 stream error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The condition, e.g. `conflict`.
    pub condition: String,
    /// The server's `<text/>`.
    pub text: Option<String>,
}

/// What [`Client::resume`] needs to take over a session after the connection was lost.
/// It holds the login options, password included.
#[derive(Debug, Clone)]
pub struct ResumeToken {
    /// The session's full JID.
    pub jid: String,
    /// The login options (the new connection authenticates again before resuming).
    pub options: LoginOptions,
    /// Stream management state: resumption id, `h`, unacknowledged stanzas.
    pub sm: StreamManagement,
}

/// A logged-in session on the protobuf binding.
pub struct Client {
    conn: Connection,
    options: LoginOptions,
    jid: String,
    bare: String,
    sm: Option<StreamManagement>,
    /// Events read while waiting for something else (a receipt), handed out first.
    pending: VecDeque<Event>,
    /// A stream error seen before the close.
    stream_error: Option<StreamError>,
    /// Whether we sent our close (RFC 6120 §4.4: each side sends one).
    closing: bool,
    closed: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("jid", &self.jid)
            .field("conn", &self.conn)
            .field("sm", &self.sm.as_ref().map(|sm| (&sm.id, sm.inbound)))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, authenticates, restarts the stream, binds a resource and (with
    /// `options.sm`) enables resumable stream management.
    pub async fn login(endpoint: &Endpoint, options: LoginOptions) -> Result<Client, Error> {
        let mut client = Client::authenticate(endpoint, options).await?;
        let resource = client.options.resource.clone();
        let id = new_id();
        client
            .send_frame(&kind_frame(Kind::Iq(v1::Iq {
                id: Some(confab_proto::convert::id_of(&id)),
                r#type: IqType::Set as i32,
                payload: Some(v1::iq::Payload::Bind(v1::Bind {
                    resource,
                    jid: None,
                })),
                ..v1::Iq::default()
            })))
            .await?;
        let reply = client
            .expect("the bind result", |kind| match kind {
                Kind::Iq(iq) if iq.id.as_ref().map(id_string).as_deref() == Some(&id) => {
                    Some(iq.clone())
                }
                _ => None,
            })
            .await?;
        let jid = match (reply.r#type(), &reply.payload) {
            (IqType::Result, Some(v1::iq::Payload::Bind(v1::Bind { jid: Some(jid), .. }))) => {
                jid.clone()
            }
            _ => {
                return Err(Error::Rejected {
                    condition: stanza_error_condition(&reply.xml)
                        .unwrap_or_else(|| "bind failed".into()),
                });
            }
        };
        client.set_jid(jid);
        if client.options.sm {
            client
                .send_frame(&kind_frame(Kind::SmEnable(SmEnable {
                    resume: true,
                    max: None,
                })))
                .await?;
            let enabled = client
                .expect("<enabled/>", |kind| match kind {
                    Kind::SmEnabled(enabled) => Some(Ok(enabled.clone())),
                    Kind::SmFailed(failed) => Some(Err(failed.condition.clone())),
                    _ => None,
                })
                .await?
                .map_err(|condition| Error::Rejected {
                    condition: condition.unwrap_or_else(|| "sm enable failed".into()),
                })?;
            client.sm = Some(StreamManagement {
                id: enabled.resume.then_some(enabled.id).flatten(),
                ..StreamManagement::default()
            });
        }
        Ok(client)
    }

    /// Takes over the session of `previous` on a new connection (XEP-0198 §5): authenticates
    /// again, resumes with the `h` the client had, then sends again what the server had not
    /// acknowledged. The server sends again what we had not acknowledged; those arrive as
    /// ordinary events. A refusal is [`Error::ResumeFailed`].
    pub async fn resume(endpoint: &Endpoint, previous: ResumeToken) -> Result<Client, Error> {
        let ResumeToken {
            jid,
            options,
            mut sm,
        } = previous;
        let Some(previd) = sm.id.clone() else {
            return Err(Error::ResumeFailed {
                condition: Some("the session was not resumable".into()),
            });
        };
        let mut client = Client::authenticate(endpoint, options).await?;
        client
            .send_frame(&kind_frame(Kind::SmResume(v1::SmResume {
                h: sm.inbound,
                previd,
            })))
            .await?;
        let answer = client
            .expect("<resumed/>", |kind| match kind {
                Kind::SmResumed(resumed) => Some(Ok(resumed.h)),
                Kind::SmFailed(failed) => Some(Err(failed.condition.clone())),
                _ => None,
            })
            .await?;
        let h = answer.map_err(|condition| Error::ResumeFailed { condition })?;
        sm.ack(h).map_err(|too_many| {
            Error::Protocol(format!(
                "the server acknowledged {} stanzas, we sent {}",
                too_many.h, too_many.sent
            ))
        })?;
        let resend: Vec<Frame> = sm.unacked.iter().cloned().collect();
        client.set_jid(jid);
        client.sm = Some(sm);
        for frame in &resend {
            client.send_frame(frame).await?;
        }
        if !resend.is_empty() {
            client.request_ack().await?;
        }
        Ok(client)
    }

    /// The full JID the server bound.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// What [`Client::resume`] needs, when resumable stream management is enabled.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        let sm = self.sm.as_ref().filter(|sm| sm.id.is_some())?;
        Some(ResumeToken {
            jid: self.jid.clone(),
            options: self.options.clone(),
            sm: sm.clone(),
        })
    }

    /// Sends a chat message to `to` with a fresh UUID id and an XEP-0184 receipt request;
    /// returns the id. The Confab receipt arrives later as [`Event::Receipt`].
    pub async fn send_message(&mut self, to: &str, body: &str) -> Result<String, Error> {
        let id = new_id();
        let message = v1::Message {
            to: Some(to.to_owned()),
            id: Some(confab_proto::convert::id_of(&id)),
            r#type: MessageType::Chat as i32,
            body: Some(body.to_owned()),
            receipt_request: true,
            ..v1::Message::default()
        };
        self.send_stanza_frame(kind_frame(Kind::Message(message)))
            .await?;
        Ok(id)
    }

    /// Sends a chat message and waits for its Confab commit receipt. Events that arrive
    /// meanwhile are kept for [`Client::next_event`]. A stanza error for the message is
    /// [`Error::Rejected`].
    pub async fn send_message_acked(&mut self, to: &str, body: &str) -> Result<Receipt, Error> {
        let id = self.send_message(to, body).await?;
        self.wait_receipt(&id).await
    }

    /// Waits for the Confab receipt of the message sent with id `id`.
    pub async fn wait_receipt(&mut self, id: &str) -> Result<Receipt, Error> {
        // A receipt already read while waiting for something else.
        if let Some(at) = self
            .pending
            .iter()
            .position(|e| matches!(e, Event::Receipt(r) if r.client_id.as_deref() == Some(id)))
            && let Some(Event::Receipt(receipt)) = self.pending.remove(at)
        {
            return Ok(receipt);
        }
        let timeout = self.options.timeout;
        let wait = async {
            loop {
                match self.read_event().await? {
                    Event::Receipt(receipt) if receipt.client_id.as_deref() == Some(id) => {
                        return Ok(receipt);
                    }
                    Event::Message(message)
                        if message.kind() == MessageType::Error
                            && message.id.as_deref() == Some(id) =>
                    {
                        return Err(Error::Rejected {
                            condition: stanza_error_condition(&message.raw.xml)
                                .unwrap_or_else(|| "undefined-condition".into()),
                        });
                    }
                    Event::Closed(error) => return Err(closed_error(error)),
                    other => self.pending.push_back(other),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout("the Confab receipt"))?
    }

    /// Sends a presence stanza.
    pub async fn send_presence(&mut self, presence: v1::Presence) -> Result<(), Error> {
        self.send_stanza_frame(kind_frame(Kind::Presence(presence)))
            .await
    }

    /// Sends initial presence (available, no show or status).
    pub async fn available(&mut self) -> Result<(), Error> {
        self.send_presence(v1::Presence::default()).await
    }

    /// Sends any first-level element (converted exactly, typed where possible).
    pub async fn send_stanza(&mut self, element: &Element) -> Result<(), Error> {
        let frame = confab_proto::element_to_frame(element, &mut MinidomFragments);
        if is_stanza_element(element) {
            self.send_stanza_frame(frame).await
        } else {
            self.send_frame(&frame).await
        }
    }

    /// Asks the server to acknowledge what it handled (XEP-0198 `<r/>`); the answer is
    /// processed by [`Client::next_event`]. Does nothing without stream management.
    pub async fn request_ack(&mut self) -> Result<(), Error> {
        if self.sm.is_none() {
            return Ok(());
        }
        self.send_frame(&kind_frame(Kind::SmRequest(v1::SmRequest {})))
            .await
    }

    /// Stanzas sent that the server has not acknowledged yet (0 without stream management).
    pub fn unacked(&self) -> usize {
        self.sm.as_ref().map_or(0, |sm| sm.unacked.len())
    }

    /// The next event. Stream management requests and acknowledgements and XEP-0199 pings
    /// are handled here and not returned. Cancel-safe, so it can be raced in a `select!`:
    /// input stays buffered until a whole frame is read, and an answer the library was
    /// writing when cancelled stays queued and is written by the next call.
    pub async fn next_event(&mut self) -> Result<Event, Error> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(event);
        }
        self.read_event().await
    }

    /// Ends the stream: sends the close frame and waits (at most the timeout) for the
    /// server's; events that arrive meanwhile are dropped.
    pub async fn close(mut self) -> Result<(), Error> {
        if !self.closed {
            if !self.closing {
                self.closing = true;
                self.send_frame(&confab_proto::close_frame()).await?;
            }
            let timeout = self.options.timeout;
            let wait = async {
                loop {
                    if let Event::Closed(_) = self.read_event().await? {
                        return Ok::<_, Error>(());
                    }
                }
            };
            tokio::time::timeout(timeout, wait)
                .await
                .map_err(|_| Error::Timeout("the server's close"))??;
        }
        // The server may already have closed the socket.
        let _ = self.conn.shutdown().await;
        Ok(())
    }

    /// Connects, opens the stream, authenticates and restarts the stream.
    async fn authenticate(endpoint: &Endpoint, options: LoginOptions) -> Result<Client, Error> {
        let timeout = options.timeout;
        let conn = tokio::time::timeout(timeout, Connection::connect(endpoint, options.max_frame))
            .await
            .map_err(|_| Error::Timeout("the connection"))??;
        let mut client = Client {
            conn,
            jid: String::new(),
            bare: format!("{}@{}", options.user, options.domain),
            options,
            sm: None,
            pending: VecDeque::new(),
            stream_error: None,
            closing: false,
            closed: false,
        };
        let features = client.open().await?;
        let mechanism = client.options.mechanism;
        if !features.mechanisms.iter().any(|m| m == mechanism.name()) {
            return Err(Error::Auth {
                condition: "mechanism-not-offered".into(),
                text: Some(format!(
                    "{} not offered (offered: {})",
                    mechanism.name(),
                    features.mechanisms.join(", ")
                )),
            });
        }
        let mut sasl = mechanism.start(&client.options.user, &client.options.password)?;
        let initial = sasl.initial();
        client
            .send_frame(&kind_frame(Kind::SaslAuth(v1::SaslAuth {
                mechanism: mechanism.name().to_owned(),
                data: Some(initial),
            })))
            .await?;
        loop {
            let step = client
                .expect("a SASL answer", |kind| match kind {
                    Kind::SaslChallenge(data) => Some(SaslStep::Challenge(data.data.clone())),
                    Kind::SaslSuccess(data) => Some(SaslStep::Success(data.data.clone())),
                    Kind::SaslFailure(failure) => Some(SaslStep::Failure(failure.clone())),
                    _ => None,
                })
                .await?;
            match step {
                SaslStep::Challenge(data) => {
                    let (next, response) = sasl.respond(data.unwrap_or_default()).await?;
                    sasl = next;
                    client
                        .send_frame(&kind_frame(Kind::SaslResponse(v1::SaslData {
                            data: Some(response),
                        })))
                        .await?;
                }
                SaslStep::Success(data) => {
                    sasl.success(&data.unwrap_or_default())?;
                    break;
                }
                SaslStep::Failure(failure) => {
                    return Err(Error::Auth {
                        condition: failure.condition,
                        text: failure.text,
                    });
                }
            }
        }
        // RFC 6120 §6.4.6: a new stream on the same connection after success.
        client.open().await?;
        Ok(client)
    }

    /// Sends the stream header and returns the features that follow the server's.
    async fn open(&mut self) -> Result<v1::Features, Error> {
        self.send_frame(&confab_proto::open_frame(StreamOpen {
            to: Some(self.options.domain.clone()),
            version: Some("1.0".into()),
            ..StreamOpen::default()
        }))
        .await?;
        self.expect("the stream header", |kind| match kind {
            Kind::Opened(_) => Some(()),
            _ => None,
        })
        .await?;
        self.expect("the stream features", |kind| match kind {
            Kind::Features(features) => Some(features.clone()),
            _ => None,
        })
        .await
    }

    fn set_jid(&mut self, jid: String) {
        self.bare = jid.split('/').next().unwrap_or(&jid).to_owned();
        self.jid = jid;
    }

    /// Reads frames until `pick` accepts one (within the timeout). Used only during
    /// negotiation, where anything else (other than a stream error or close) is unexpected.
    async fn expect<T>(
        &mut self,
        what: &'static str,
        mut pick: impl FnMut(&Kind) -> Option<T>,
    ) -> Result<T, Error> {
        let timeout = self.options.timeout;
        let wait = async {
            loop {
                let Some(frame) = self.conn.recv().await? else {
                    return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
                };
                let Some(kind) = frame.kind else {
                    return Err(Error::Protocol("an empty frame".into()));
                };
                if let Some(found) = pick(&kind) {
                    return Ok(found);
                }
                match kind {
                    Kind::StreamError(error) => {
                        return Err(Error::Stream {
                            condition: error.condition,
                            text: error.text,
                        });
                    }
                    Kind::Close(_) => {
                        return Err(Error::Protocol(format!("stream closed waiting for {what}")));
                    }
                    // The server may ask for acks and route stanzas as soon as SM is on
                    // (after a resumption), before the answer we wait for.
                    kind @ (Kind::SmRequest(_)
                    | Kind::SmAck(_)
                    | Kind::Message(_)
                    | Kind::Presence(_)
                    | Kind::Iq(_)) => {
                        if let Some(event) = self.handle(kind).await? {
                            self.pending.push_back(event);
                        }
                    }
                    other => {
                        return Err(Error::Protocol(format!(
                            "unexpected {} waiting for {what}",
                            kind_name(&other)
                        )));
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout(what))?
    }

    async fn send_frame(&mut self, frame: &Frame) -> Result<(), Error> {
        self.conn.send(frame).await
    }

    /// Sends a stanza, keeping it for resumption while unacknowledged. It is counted before
    /// it is written, so a send cancelled half-way (in `next_event`) cannot leave the
    /// server's `h` ahead of our count.
    async fn send_stanza_frame(&mut self, frame: Frame) -> Result<(), Error> {
        let request = match self.sm.as_mut() {
            Some(sm) => {
                sm.sent(frame);
                let queued = sm.unacked.len();
                if let Some(frame) = sm.unacked.back() {
                    self.conn.send(frame).await?;
                }
                queued % REQUEST_ACK_EVERY == 0
            }
            None => {
                self.conn.send(&frame).await?;
                false
            }
        };
        if request {
            self.request_ack().await?;
        }
        Ok(())
    }

    /// Reads until something is worth an event.
    async fn read_event(&mut self) -> Result<Event, Error> {
        if self.closed {
            return Ok(Event::Closed(self.stream_error.clone()));
        }
        loop {
            let Some(frame) = self.conn.recv().await? else {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            };
            let Some(kind) = frame.kind else {
                return Err(Error::Protocol("an empty frame".into()));
            };
            if let Some(event) = self.handle(kind).await? {
                return Ok(event);
            }
        }
    }

    /// Processes one frame: counts stanzas, answers what the library answers, and turns
    /// the rest into an event.
    async fn handle(&mut self, kind: Kind) -> Result<Option<Event>, Error> {
        let event = match kind {
            Kind::Message(message) => {
                self.received();
                match &message.ack {
                    Some(ack) if message.id_is_ack || message.body.is_none() => {
                        Event::Receipt(Receipt::from_ack(ack)?)
                    }
                    _ => Event::Message(Box::new(Message {
                        id: message.id.as_ref().map(id_string),
                        stanza_id: message
                            .stanza_ids
                            .iter()
                            .find(|sid| sid.by == self.bare)
                            .and_then(|sid| sid.id.as_ref().map(id_string)),
                        raw: message,
                    })),
                }
            }
            Kind::Presence(presence) => {
                self.received();
                Event::Presence(presence)
            }
            Kind::Iq(iq) => {
                self.received();
                // XEP-0199 §4.1: answer a ping; a load tool's idle sessions stay alive.
                if iq.r#type() == IqType::Get
                    && matches!(iq.payload, Some(v1::iq::Payload::Ping(true)))
                {
                    let pong = v1::Iq {
                        to: iq.from.clone(),
                        id: iq.id.clone(),
                        r#type: IqType::Result as i32,
                        ..v1::Iq::default()
                    };
                    self.send_stanza_frame(kind_frame(Kind::Iq(pong))).await?;
                    return Ok(None);
                }
                Event::Iq(iq)
            }
            Kind::SmRequest(_) => {
                let h = self.sm.as_ref().map_or(0, |sm| sm.inbound);
                self.send_frame(&kind_frame(Kind::SmAck(v1::SmAck { h })))
                    .await?;
                return Ok(None);
            }
            Kind::SmAck(ack) => {
                if let Some(sm) = self.sm.as_mut() {
                    sm.ack(ack.h).map_err(|too_many| {
                        Error::Protocol(format!(
                            "the server acknowledged {} stanzas, we sent {}",
                            too_many.h, too_many.sent
                        ))
                    })?;
                }
                return Ok(None);
            }
            Kind::StreamError(error) => {
                self.stream_error = Some(StreamError {
                    condition: error.condition,
                    text: error.text,
                });
                return Ok(None);
            }
            Kind::Close(_) => {
                self.closed = true;
                if !self.closing {
                    // RFC 6120 §4.4: answer the close; the peer may be gone already.
                    self.closing = true;
                    let _ = self.send_frame(&confab_proto::close_frame()).await;
                }
                Event::Closed(self.stream_error.clone())
            }
            Kind::Xml(xml) => {
                let element = element_of(Kind::Xml(xml))?;
                // A stanza the converter could not type still counts for XEP-0198.
                if is_stanza_element(&element) {
                    self.received();
                }
                Event::Element(element)
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected {} in an established stream",
                    kind_name(&other)
                )));
            }
        };
        Ok(Some(event))
    }

    fn received(&mut self) {
        if let Some(sm) = self.sm.as_mut() {
            sm.received();
        }
    }
}

enum SaslStep {
    Challenge(Option<Vec<u8>>),
    Success(Option<Vec<u8>>),
    Failure(v1::SaslFailure),
}

fn kind_frame(kind: Kind) -> Frame {
    Frame { kind: Some(kind) }
}

fn element_of(kind: Kind) -> Result<Element, Error> {
    match confab_proto::frame_to_unit(&kind_frame(kind), &mut MinidomFragments)? {
        Unit::Element(element) => Ok(element),
        other => Err(Error::Protocol(format!("not an element: {other:?}"))),
    }
}

fn is_stanza_element(element: &Element) -> bool {
    element.ns() == confab_proto::convert::CLIENT
        && matches!(element.name(), "message" | "presence" | "iq")
}

/// An id as text; an inconsistent id (both forms, bad UUID length) is shown as empty, since
/// ids only serve to match answers and such an id matches nothing we sent.
fn id_string(id: &v1::Id) -> String {
    confab_proto::convert::id_text(id).unwrap_or_default()
}

/// A fresh stanza id: a UUID, which the binding carries as 16 bytes.
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The defined condition in a stanza's `<error/>` fragment, if any.
fn stanza_error_condition(fragments: &[String]) -> Option<String> {
    const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    fragments.iter().find_map(|xml| {
        let element = confab_proto::Fragments::parse(&mut MinidomFragments, xml).ok()?;
        if element.name() != "error" {
            return None;
        }
        element
            .children()
            .find(|c| c.ns() == STANZAS && c.name() != "text")
            .map(|c| c.name().to_owned())
    })
}

fn closed_error(error: Option<StreamError>) -> Error {
    match error {
        Some(error) => Error::Stream {
            condition: error.condition,
            text: error.text,
        },
        None => Error::Protocol("the server closed the stream".into()),
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Message(_) => "message",
        Kind::Presence(_) => "presence",
        Kind::Iq(_) => "iq",
        Kind::SmAck(_) => "sm_ack",
        Kind::SmRequest(_) => "sm_request",
        Kind::Open(_) => "open",
        Kind::Opened(_) => "opened",
        Kind::Features(_) => "features",
        Kind::SaslAuth(_) => "sasl_auth",
        Kind::SaslChallenge(_) => "sasl_challenge",
        Kind::SaslResponse(_) => "sasl_response",
        Kind::SaslSuccess(_) => "sasl_success",
        Kind::SaslFailure(_) => "sasl_failure",
        Kind::SmEnable(_) => "sm_enable",
        Kind::SmEnabled(_) => "sm_enabled",
        Kind::SmResume(_) => "sm_resume",
        Kind::SmResumed(_) => "sm_resumed",
        Kind::SmFailed(_) => "sm_failed",
        Kind::StreamError(_) => "stream_error",
        Kind::Close(_) => "close",
        Kind::Xml(_) => "xml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_options_parse_the_jid() {
        let options = LoginOptions::new("alice@example.org/phone", "pw").expect("valid");
        assert_eq!(
            (
                options.user.as_str(),
                options.domain.as_str(),
                options.resource.as_deref()
            ),
            ("alice", "example.org", Some("phone"))
        );
        assert!(LoginOptions::new("example.org", "pw").is_err());
        assert!(LoginOptions::new("@example.org", "pw").is_err());
        assert!(!format!("{options:?}").contains("pw"), "password hidden");
    }

    #[test]
    fn a_receipt_reads_the_ack() {
        let ack = v1::ConfabAck {
            client_id: Some(confab_proto::convert::id_of("m1")),
            server_id: vec![1; 16],
            seq: 7,
            with: "bob@example.org".into(),
            stamp_ms: 1_738_324_800_123,
        };
        let receipt = Receipt::from_ack(&ack).expect("valid ack");
        assert_eq!(receipt.client_id.as_deref(), Some("m1"));
        assert_eq!(receipt.server_id, "01010101-0101-0101-0101-010101010101");
        assert_eq!(receipt.seq, 7);
        assert_eq!(receipt.stamp(), "2025-01-31T12:00:00.123Z");
        let bad = v1::ConfabAck {
            server_id: vec![1; 3],
            ..ack
        };
        assert!(Receipt::from_ack(&bad).is_err());
    }

    #[test]
    fn stanza_error_conditions_are_found_in_fragments() {
        let xml = "<error type='cancel'><service-unavailable \
                   xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
        assert_eq!(
            stanza_error_condition(&[xml.to_owned()]).as_deref(),
            Some("service-unavailable")
        );
        assert_eq!(stanza_error_condition(&["<x xmlns='a'/>".into()]), None);
    }
}
