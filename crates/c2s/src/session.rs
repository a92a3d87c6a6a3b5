//! One client stream's protocol state (RFC 6120 §4–§7).

use crate::sm::{self, Handoff, Resumption, SmState, Takeover};
use async_trait::async_trait;
use base64::Engine;
use bytes::BytesMut;
use confab_auth::{LoginThrottle, Mechanism, SaslFailure, SaslServer, SaslStep};
use confab_codec::{CodecError, Framing, Limits, StreamEvent, StreamHeader, Wire};
use confab_core::{
    BareJid, Element, FullJid, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind,
    StanzaParseError, StreamErrorCondition, ns,
};
use confab_router::Router;
use confab_sessions::{Mailbox, Resource, SessionCommand, Undelivered};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// How many failed SASL attempts one stream may make before it is closed
/// (RFC 6120 §6.4.5 asks for a configurable retry count of at least two).
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// Settings every session on a listener shares.
pub struct C2sConfig {
    /// The domain served; streams addressed elsewhere get `host-unknown`.
    pub domain: BareJid,
    /// Parser limits (stanza size, depth, …).
    pub limits: Limits,
    /// Whether a STARTTLS upgrade can be offered on this listener.
    pub tls_available: bool,
    /// Whether PLAIN may be used without TLS when the peer is on loopback.
    pub plain_on_loopback: bool,
    /// Capacity of each bound session's mailbox.
    pub mailbox_capacity: usize,
    /// Whether in-band registration is advertised before authentication.
    pub registration_open: bool,
    /// Handler for IQs allowed before authentication (XEP-0077 registration).
    pub pre_auth_iq: Option<Arc<dyn PreAuthIq>>,
    /// Per-IP and per-account login throttling.
    pub throttle: Arc<LoginThrottle>,
    /// XEP-0198 §5 resumable streams and the resumption window.
    pub resumption: Arc<Resumption>,
}

/// Answers IQs an unauthenticated client may send (XEP-0077 in-band registration).
#[async_trait]
pub trait PreAuthIq: Send + Sync {
    /// Whether this handler answers IQs with this payload namespace.
    fn handles(&self, namespace: &str) -> bool;
    /// Returns the result payload or an error.
    async fn handle(&self, router: &Router, iq: &Stanza) -> Result<Option<Element>, StanzaError>;
}

/// What the driver must do after feeding the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep reading.
    Continue,
    /// Write the pending output, then run the TLS handshake on the raw socket and call
    /// [`Session::tls_established`] (RFC 6120 §5.4.3.3).
    StartTls,
    /// Write the pending output, then close the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's stream header (initially and after every stream restart).
    AwaitingHeader,
    /// Header exchanged, features sent, not authenticated.
    Unauthenticated,
    /// In a SASL exchange.
    Authenticating,
    /// Authenticated, resource not bound yet.
    Authenticated,
    /// Resource bound: stanzas flow.
    Bound,
    /// Closing; input is ignored.
    Closed,
}

/// The protocol state of one client connection.
pub struct Session {
    router: Arc<Router>,
    config: Arc<C2sConfig>,
    peer: SocketAddr,
    wire: Wire,
    output: BytesMut,
    phase: Phase,
    header_sent: bool,
    secure: bool,
    /// Boxed: only a stream in the middle of authenticating needs it.
    sasl: Option<Box<SaslServer>>,
    auth_failures: u32,
    attempted_username: Option<String>,
    username: Option<String>,
    resource: Option<Arc<Resource>>,
    mailbox: Option<Mailbox>,
    /// XEP-0198 state, only once enabled (an idle session without it stays small).
    sm: Option<Box<SmState>>,
}

impl Session {
    /// A session for a freshly accepted connection from `peer`.
    /// `secure` when the carrier is already encrypted (direct TLS, WebSocket over HTTPS).
    pub fn new(
        router: Arc<Router>,
        config: Arc<C2sConfig>,
        peer: SocketAddr,
        framing: Framing,
        secure: bool,
    ) -> Self {
        let wire = Wire::new(framing, config.limits);
        Self {
            router,
            config,
            peer,
            wire,
            output: BytesMut::new(),
            phase: Phase::AwaitingHeader,
            header_sent: false,
            secure,
            sasl: None,
            auth_failures: 0,
            attempted_username: None,
            username: None,
            resource: None,
            mailbox: None,
            sm: None,
        }
    }

    /// Bytes queued for the client.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// Whether the stream is authenticated (the pre-authentication timeout no longer applies).
    pub fn is_authenticated(&self) -> bool {
        self.username.is_some()
    }

    /// The bound resource, once bound.
    pub fn resource(&self) -> Option<&Arc<Resource>> {
        self.resource.as_ref()
    }

    /// Hands the bound resource's mailbox to the driver, which waits on it (once, after bind).
    pub fn take_mailbox(&mut self) -> Option<Mailbox> {
        self.mailbox.take()
    }

    /// Releases buffers while the connection is idle.
    pub fn shrink(&mut self) {
        self.wire.shrink();
        if self.output.is_empty() {
            self.output = BytesMut::new();
        }
    }

    /// Feeds bytes read from the connection; consumes what it can.
    pub async fn receive(&mut self, input: &mut BytesMut) -> Action {
        loop {
            if self.phase == Phase::Closed {
                input.clear();
                return Action::Close;
            }
            let event = match self.wire.decode(input) {
                Ok(Some(event)) => event,
                Ok(None) => return Action::Continue,
                Err(error) => return self.codec_error(&error),
            };
            let action = match event {
                StreamEvent::Open(header) => self.stream_open(&header),
                StreamEvent::Close => {
                    self.close_stream();
                    Action::Close
                }
                StreamEvent::Stanza(element) => self.element(element).await,
            };
            if action != Action::Continue {
                return action;
            }
        }
    }

    /// The TLS handshake finished: the stream restarts over the encrypted channel
    /// (RFC 6120 §5.4.3.3). The decoder is reset here, before any encrypted byte is parsed.
    pub fn tls_established(&mut self) {
        self.secure = true;
        self.restart_stream();
    }

    /// Writes a stanza from the mailbox to the client. `Close` when the client let more
    /// stanzas than the mailbox holds go unacknowledged (XEP-0198 §4): the unacked queue is
    /// bounded like the mailbox, and the stream ends with `policy-violation`.
    pub fn deliver(&mut self, command: SessionCommand) -> Action {
        match command {
            SessionCommand::Deliver(stanza) => {
                self.router.metrics.stanza_out(stanza.kind);
                self.write_stanza(stanza)
            }
        }
    }

    /// The driver's handle on this stream's XEP-0198 resumption, once resumption is enabled:
    /// it resolves when another connection resumes the stream (§5), and the driver then
    /// closes this connection; [`Session::disconnected`] hands the state over.
    pub fn takeover(&self) -> Option<Takeover> {
        self.sm.as_ref().and_then(|sm| sm.takeover.clone())
    }

    /// When the driver should call [`Session::request_ack`]: stanzas went out
    /// unacknowledged a while ago (XEP-0198 §4) and no `<r/>` asked for them yet.
    pub fn ack_request_due(&self) -> Option<Instant> {
        self.sm.as_ref().and_then(|sm| sm.request_due_at())
    }

    /// Sends `<r/>` (XEP-0198 §4) if stanzas wait for an acknowledgement.
    pub fn request_ack(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some(sm) = self.sm.as_mut()
            && sm.request_due_at().is_some()
        {
            sm.requested();
            self.wire.write_element(&mut self.output, &sm::request());
        }
    }

    /// Encodes a stanza for the client and, with XEP-0198 enabled, keeps it (moved, not
    /// copied) until the client acknowledges it (§4).
    fn write_stanza(&mut self, stanza: Box<Stanza>) -> Action {
        self.wire.write_element(&mut self.output, &stanza.element);
        let Some(sm) = self.sm.as_mut() else {
            return Action::Continue;
        };
        sm.sent_stanza(stanza);
        if sm.unacked.len() > self.config.mailbox_capacity.max(1) {
            self.stream_error(
                StreamErrorCondition::PolicyViolation,
                Some("too many unacknowledged stanzas"),
            );
            return Action::Close;
        }
        if sm.request_due_by_count() {
            sm.requested();
            self.wire.write_element(&mut self.output, &sm::request());
        }
        Action::Continue
    }

    /// Closes the stream with an error (RFC 6120 §4.9.1.1), e.g. when kicked or timed out.
    pub fn stream_error(&mut self, condition: StreamErrorCondition, text: Option<&str>) {
        if self.phase == Phase::Closed {
            return;
        }
        if !self.header_sent {
            // §4.9.1.2: the error must follow our stream header even if the client's was bad.
            self.wire.write_open(
                &mut self.output,
                self.config.domain.as_str(),
                None,
                &new_id(),
                "en",
            );
            self.header_sent = true;
        }
        self.wire
            .write_element(&mut self.output, &condition.to_element(text));
        self.close_stream();
    }

    /// The connection is gone (closed by either side or dropped). `mailbox` is the one the
    /// driver took with [`Session::take_mailbox`]; `stop` resolves at server shutdown.
    ///
    /// - Another connection resumed this stream: the state moves to it (XEP-0198 §5).
    /// - The connection was lost (neither `</stream:stream>` nor a stream error) with
    ///   resumption enabled: the resource stays bound but parked for the resumption window;
    ///   stanzas routed to it queue as unacknowledged, bounded by the mailbox capacity (an
    ///   overflow, a kick or `stop` ends the session early). This call returns when the
    ///   stream was resumed elsewhere or the session ended.
    /// - Otherwise, or when the window passes: unbind, run the session-closed hooks so
    ///   contacts learn the resource went offline, and hand the messages the client never
    ///   acknowledged, or never got, to [`Router::undelivered`] (issue 3 item 4). Without
    ///   XEP-0198 a stanza written to the socket counts as delivered.
    pub async fn disconnected(&mut self, mailbox: Option<Mailbox>, stop: impl Future<Output = ()>) {
        // A stream we closed (a stream error) or the client closed (`</stream:stream>`,
        // §7 of XEP-0198: that ends the session) is not resumable.
        let lost = self.phase != Phase::Closed;
        self.phase = Phase::Closed;
        let mut mailbox = mailbox.or_else(|| self.mailbox.take());
        let Some(resource) = self.resource.take() else {
            return;
        };
        let mut state = self.sm.take();
        if let Some(resumable) = state.take_if(|sm| sm.id.is_some()) {
            match self.park(resumable, mailbox, lost, &resource, stop).await {
                None => return,
                Some((resumable, rest)) => {
                    state = Some(resumable);
                    mailbox = rest;
                }
            }
        }
        self.end_session(&resource, state, mailbox).await;
    }

    /// Keeps a resumable stream bound while its connection is gone (XEP-0198 §5). `None`
    /// when the state went to a resuming connection; otherwise the state to end with.
    async fn park(
        &mut self,
        mut state: Box<SmState>,
        mut mailbox: Option<Mailbox>,
        lost: bool,
        resource: &Arc<Resource>,
        stop: impl Future<Output = ()>,
    ) -> Option<(Box<SmState>, Option<Mailbox>)> {
        let (Some(id), Some(takeover)) = (state.id.clone(), state.takeover.clone()) else {
            return Some((state, mailbox));
        };
        let registry = self.config.resumption.clone();
        let window = std::time::Duration::from_secs(state.max_secs.into());
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        tokio::pin!(stop);
        let limit = self.config.mailbox_capacity.max(1);
        let mut parked = lost;
        if lost {
            tracing::debug!(jid = %resource.jid, "connection lost; session parked for resumption");
        }
        loop {
            if !parked {
                // Ending: unless a resume is waiting for this stream (then it gets it).
                let Some(entry) = registry.finish(&id) else {
                    return Some((state, mailbox));
                };
                match entry.hand_over(Handoff { sm: state, mailbox }) {
                    Ok(()) => return None,
                    Err(back) => {
                        state = back.sm;
                        mailbox = back.mailbox;
                        continue;
                    }
                }
            }
            tokio::select! {
                biased;
                () = &mut stop => parked = false,
                () = takeover.requested() => {
                    match takeover.0.hand_over(Handoff { sm: state, mailbox }) {
                        Ok(()) => return None,
                        Err(back) => {
                            state = back.sm;
                            mailbox = back.mailbox;
                        }
                    }
                }
                _ = resource.kicked() => parked = false,
                command = next_command(mailbox.as_mut()) => match command {
                    Some(SessionCommand::Deliver(stanza)) => {
                        state.unacked.push_back((stanza, confab_sessions::next_session_id()));
                        // Bounded like a live mailbox: a parked session that fills up ends.
                        if state.unacked.len() > limit {
                            parked = false;
                        }
                    }
                    None => parked = false,
                },
                () = &mut deadline => parked = false,
            }
        }
    }

    /// Ends the session for good (see [`Session::disconnected`]).
    async fn end_session(
        &mut self,
        resource: &Arc<Resource>,
        state: Option<Box<SmState>>,
        mailbox: Option<Mailbox>,
    ) {
        if self.router.sessions.unbind(resource) {
            self.router.session_closed(resource).await;
        } else {
            // Replaced by a newer bind of the same full JID: the hooks ran for the
            // replacement already; only the sessions gauge must be corrected.
            self.router.metrics.sessions.dec();
        }
        let mut undelivered: Vec<Undelivered> = state
            .map(|sm| {
                sm.unacked
                    .into_iter()
                    .map(|(stanza, bound_before)| Undelivered {
                        stanza: *stanza,
                        bound_before,
                        holders: Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(mut mailbox) = mailbox {
            // Unbound: nothing new arrives; what is queued was never written.
            mailbox.receiver.close();
            let bound_before = confab_sessions::next_session_id();
            while let Ok(SessionCommand::Deliver(stanza)) = mailbox.receiver.try_recv() {
                undelivered.push(Undelivered {
                    stanza: *stanza,
                    bound_before,
                    holders: Vec::new(),
                });
            }
        }
        if !undelivered.is_empty() {
            self.router.undelivered(resource, undelivered).await;
        }
    }

    fn close_stream(&mut self) {
        if self.phase != Phase::Closed {
            self.wire.write_close(&mut self.output);
            self.phase = Phase::Closed;
        }
    }

    fn codec_error(&mut self, error: &CodecError) -> Action {
        tracing::debug!(peer = %self.peer, %error, "stream error from codec");
        self.stream_error(error.condition(), Some(&error.to_string()));
        Action::Close
    }

    fn stream_open(&mut self, header: &StreamHeader) -> Action {
        if self.phase != Phase::AwaitingHeader {
            // A second header inside a stream is not well-formed XML at this point.
            self.stream_error(StreamErrorCondition::NotWellFormed, None);
            return Action::Close;
        }
        self.wire.write_open(
            &mut self.output,
            self.config.domain.as_str(),
            header.from.as_deref(),
            &new_id(),
            "en",
        );
        self.header_sent = true;
        // RFC 6120 §4.9.3.6: a stream to a domain we do not serve.
        let to_ok = header
            .to
            .as_deref()
            .and_then(|to| BareJid::new(to).ok())
            .is_some_and(|to| to == self.config.domain);
        if !to_ok {
            self.stream_error(StreamErrorCondition::HostUnknown, None);
            return Action::Close;
        }
        // RFC 6120 §4.7.5: we speak 1.0; a peer without a version is pre-XMPP-1.0.
        let major = header
            .version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if major != Some(1) {
            self.stream_error(StreamErrorCondition::UnsupportedVersion, None);
            return Action::Close;
        }
        let features = self.features();
        self.wire.write_element(&mut self.output, &features);
        self.phase = if self.username.is_some() {
            Phase::Authenticated
        } else {
            Phase::Unauthenticated
        };
        Action::Continue
    }

    /// RFC 6120 §4.3.2: the features offered depend on the stream's state.
    fn features(&self) -> Element {
        let mut features = Element::builder("features", ns::STREAM).build();
        if self.username.is_some() {
            features.append_child(Element::bare("bind", ns::BIND));
            // RFC 6121 Appendix E: advertise the legacy session feature as optional.
            let mut session = Element::bare("session", ns::SESSION);
            session.append_child(Element::bare("optional", ns::SESSION));
            features.append_child(session);
            // XEP-0198 §2: stream management, after authentication.
            features.append_child(Element::bare("sm", sm::NS));
            for feature in self.router.stream_features() {
                features.append_child(feature);
            }
            return features;
        }
        let starttls =
            !self.secure && self.config.tls_available && self.wire.framing().offers_starttls();
        let tls_required = starttls && !self.peer.ip().is_loopback();
        if starttls {
            let mut starttls = Element::bare("starttls", ns::TLS);
            if tls_required {
                starttls.append_child(Element::bare("required", ns::TLS));
            }
            features.append_child(starttls);
        }
        if tls_required {
            // §5.3.1: when TLS is mandatory-to-negotiate, nothing else is offered before it.
            return features;
        }
        let mut mechanisms = Element::bare("mechanisms", ns::SASL);
        for mechanism in confab_auth::offered(self.plain_allowed()) {
            let mut item = Element::bare("mechanism", ns::SASL);
            item.append_text_node(mechanism.name());
            mechanisms.append_child(item);
        }
        features.append_child(mechanisms);
        if self.config.registration_open {
            features.append_child(Element::bare("register", ns::REGISTER_FEATURE));
        }
        features
    }

    fn plain_allowed(&self) -> bool {
        self.secure || (self.config.plain_on_loopback && self.peer.ip().is_loopback())
    }

    fn restart_stream(&mut self) {
        self.wire.reset();
        self.header_sent = false;
        self.phase = Phase::AwaitingHeader;
    }

    async fn element(&mut self, element: Element) -> Action {
        if matches!(self.phase, Phase::Authenticated | Phase::Bound) && element.ns() == sm::NS {
            return self.sm_element(&element).await;
        }
        match self.phase {
            Phase::AwaitingHeader | Phase::Closed => Action::Close,
            Phase::Unauthenticated | Phase::Authenticating => {
                self.negotiation_element(element).await
            }
            Phase::Authenticated => self.pre_bind_element(element).await,
            Phase::Bound => {
                let action = self.stanza(element).await;
                // XEP-0198 §4: h counts stanzas handled. Stanzas are processed one at a
                // time and `router.inbound` returns only after a message was committed
                // (the log commits at on_routed before delivery), so counting here never
                // acknowledges anything that is not durable.
                if let Some(sm) = self.sm.as_mut() {
                    sm.inbound = sm.inbound.wrapping_add(1);
                }
                action
            }
        }
    }

    /// XEP-0198 nonzas (`urn:xmpp:sm:3`) after authentication.
    async fn sm_element(&mut self, element: &Element) -> Action {
        match element.name() {
            "enable" => self.sm_enable(element),
            "resume" => self.sm_resume(element).await,
            // §4: answer a request with the count of stanzas handled.
            "r" => match self.sm.as_ref() {
                Some(sm) => {
                    self.wire
                        .write_element(&mut self.output, &sm::answer(sm.inbound));
                    Action::Continue
                }
                None => self.sm_not_enabled(),
            },
            "a" => {
                let h = element.attr("h").and_then(|h| h.parse::<u32>().ok());
                let Some(sm) = self.sm.as_mut() else {
                    return self.sm_not_enabled();
                };
                let Some(h) = h else {
                    self.stream_error(StreamErrorCondition::BadFormat, Some("<a/> needs h"));
                    return Action::Close;
                };
                sm.request_outstanding = false;
                match sm.ack(h) {
                    Ok(()) => Action::Continue,
                    Err(send_count) => self.handled_count_too_high(h, send_count),
                }
            }
            _ => {
                // §3 ("resume" before bind included): anything else is a client error.
                self.wire
                    .write_element(&mut self.output, &sm::failed("unexpected-request"));
                Action::Continue
            }
        }
    }

    /// `<r/>` or `<a/>` on a stream without stream management: not a known element here.
    fn sm_not_enabled(&mut self) -> Action {
        self.stream_error(
            StreamErrorCondition::UnsupportedStanzaType,
            Some("stream management is not enabled"),
        );
        Action::Close
    }

    /// XEP-0198 §4: the client acknowledged more stanzas than were sent.
    fn handled_count_too_high(&mut self, h: u32, send_count: u32) -> Action {
        if self.phase == Phase::Closed {
            return Action::Close;
        }
        let mut error = StreamErrorCondition::UndefinedCondition
            .to_element(Some("acknowledged more stanzas than were sent"));
        error.append_child(confab_core::stanza::element(
            "handled-count-too-high",
            sm::NS,
            &[
                ("h", &h.to_string()),
                ("send-count", &send_count.to_string()),
            ],
        ));
        self.wire.write_element(&mut self.output, &error);
        self.close_stream();
        Action::Close
    }

    /// XEP-0198 §3: `<enable/>` after resource binding, once per stream.
    fn sm_enable(&mut self, element: &Element) -> Action {
        let (Phase::Bound, None, Some(resource), Some(username)) = (
            self.phase,
            self.sm.as_ref(),
            self.resource.clone(),
            self.username.clone(),
        ) else {
            self.wire
                .write_element(&mut self.output, &sm::failed("unexpected-request"));
            return Action::Continue;
        };
        let window = u32::try_from(self.config.resumption.timeout.as_secs()).unwrap_or(u32::MAX);
        // §5: the client's 'max' is a preference; the server's window is the ceiling.
        let max = element
            .attr("max")
            .and_then(|m| m.parse::<u32>().ok())
            .filter(|m| *m > 0)
            .map_or(window, |m| m.min(window));
        let resume = matches!(element.attr("resume"), Some("true" | "1")) && max > 0;
        let mut state = SmState::new(None, max);
        let enabled = if resume {
            let id = resumption_id();
            state.takeover = Some(
                self.config
                    .resumption
                    .register(id.clone(), username, resource),
            );
            let max = max.to_string();
            let enabled = confab_core::stanza::element(
                "enabled",
                sm::NS,
                &[("id", &id), ("resume", "true"), ("max", &max)],
            );
            state.id = Some(id);
            enabled
        } else {
            Element::bare("enabled", sm::NS)
        };
        self.wire.write_element(&mut self.output, &enabled);
        self.sm = Some(Box::new(state));
        Action::Continue
    }

    /// XEP-0198 §5: `<resume previd='…' h='…'/>` instead of binding a resource.
    async fn sm_resume(&mut self, element: &Element) -> Action {
        let request = (
            self.phase,
            self.username.clone(),
            element.attr("previd"),
            element.attr("h").and_then(|h| h.parse::<u32>().ok()),
        );
        let (Phase::Authenticated, Some(username), Some(previd), Some(h)) = request else {
            let condition = if self.phase == Phase::Authenticated {
                "bad-request"
            } else {
                "unexpected-request"
            };
            self.wire
                .write_element(&mut self.output, &sm::failed(condition));
            return Action::Continue;
        };
        // An id of another account is as unknown as one that expired.
        let Some((entry, receiver)) = self.config.resumption.request(previd, &username) else {
            self.wire
                .write_element(&mut self.output, &sm::failed("item-not-found"));
            return Action::Continue;
        };
        let Ok(Ok(Handoff { mut sm, mailbox })) =
            tokio::time::timeout(sm::TAKEOVER_WAIT, receiver).await
        else {
            self.wire
                .write_element(&mut self.output, &sm::failed("item-not-found"));
            return Action::Continue;
        };
        let previd = previd.to_owned();
        let acked = sm.ack(h);
        let inbound = sm.inbound;
        self.resource = Some(entry.resource.clone());
        self.mailbox = mailbox;
        self.phase = Phase::Bound;
        self.sm = Some(sm);
        if let Err(send_count) = acked {
            return self.handled_count_too_high(h, send_count);
        }
        self.wire.write_element(
            &mut self.output,
            &confab_core::stanza::element(
                "resumed",
                sm::NS,
                &[("previd", &previd), ("h", &inbound.to_string())],
            ),
        );
        // §5: everything the client did not acknowledge is sent again, in order.
        if let Some(sm) = self.sm.as_mut() {
            for (stanza, _) in &sm.unacked {
                self.wire.write_element(&mut self.output, &stanza.element);
            }
            if !sm.unacked.is_empty() {
                sm.requested();
                self.wire.write_element(&mut self.output, &sm::request());
            }
        }
        tracing::debug!(jid = %entry.resource.jid, "stream resumed");
        Action::Continue
    }

    async fn negotiation_element(&mut self, element: Element) -> Action {
        let namespace = element.ns();
        match (element.name(), namespace.as_str()) {
            ("starttls", ns::TLS) if self.phase == Phase::Unauthenticated => {
                if self.secure
                    || !self.config.tls_available
                    || !self.wire.framing().offers_starttls()
                {
                    // RFC 6120 §5.4.2.2: failure, then close.
                    self.wire
                        .write_element(&mut self.output, &Element::bare("failure", ns::TLS));
                    self.close_stream();
                    return Action::Close;
                }
                self.wire
                    .write_element(&mut self.output, &Element::bare("proceed", ns::TLS));
                Action::StartTls
            }
            ("auth", ns::SASL) if self.phase == Phase::Unauthenticated => {
                self.sasl_auth(&element).await
            }
            ("response", ns::SASL) if self.phase == Phase::Authenticating => {
                let Some(data) = decode_sasl_payload(&element) else {
                    return self.sasl_failed(SaslFailure::IncorrectEncoding, None);
                };
                let Some(sasl) = self.sasl.as_mut() else {
                    return self.sasl_failed(SaslFailure::MalformedRequest, None);
                };
                let step = sasl.respond(&data);
                self.sasl_step(step).await
            }
            ("abort", ns::SASL) if self.phase == Phase::Authenticating => {
                self.sasl = None;
                self.sasl_failed(SaslFailure::Aborted, None)
            }
            ("iq", ns::CLIENT) if self.phase == Phase::Unauthenticated => {
                self.pre_auth_iq(element).await
            }
            _ => {
                // RFC 6120 §4.9.3.12 / §6.4.1: no stanzas or unknown elements before auth.
                self.stream_error(StreamErrorCondition::NotAuthorized, None);
                Action::Close
            }
        }
    }

    async fn pre_auth_iq(&mut self, element: Element) -> Action {
        let Ok(stanza) = Stanza::from_element(element) else {
            self.stream_error(StreamErrorCondition::NotAuthorized, None);
            return Action::Close;
        };
        let handler = self
            .config
            .pre_auth_iq
            .clone()
            .filter(|handler| stanza.payload().is_some_and(|p| handler.handles(&p.ns())));
        let Some(handler) = handler else {
            self.stream_error(StreamErrorCondition::NotAuthorized, None);
            return Action::Close;
        };
        let reply = match handler.handle(&self.router, &stanza).await {
            Ok(payload) => {
                let mut reply = stanza.iq_result(payload);
                reply.set_to(None);
                reply.set_from(None);
                reply
            }
            // The request is not echoed: a registration form carries a password
            // (XEP-0077 §3.3).
            Err(error) => match without_payload(&stanza).error_reply(&error) {
                Some(mut reply) => {
                    reply.set_to(None);
                    reply.set_from(None);
                    reply
                }
                None => return Action::Continue,
            },
        };
        self.wire.write_element(&mut self.output, &reply.element);
        Action::Continue
    }

    async fn sasl_auth(&mut self, element: &Element) -> Action {
        let Some(mechanism) = element.attr("mechanism").and_then(Mechanism::from_name) else {
            return self.sasl_failed(SaslFailure::InvalidMechanism, None);
        };
        if !confab_auth::offered(self.plain_allowed()).contains(&mechanism) {
            return self.sasl_failed(SaslFailure::MechanismTooWeak, None);
        }
        if let Err(retry) = self
            .config
            .throttle
            .check(self.peer.ip(), None, Instant::now())
        {
            let text = format!(
                "too many failed attempts; retry in {} s",
                retry.as_secs().max(1)
            );
            return self.sasl_failed(SaslFailure::TemporaryAuthFailure, Some(&text));
        }
        // RFC 6120 §6.4.2: no text means no initial response; "=" means an empty one.
        let initial = match element.text().trim() {
            "" => None,
            "=" => Some(Vec::new()),
            text => match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => Some(bytes),
                Err(_) => return self.sasl_failed(SaslFailure::IncorrectEncoding, None),
            },
        };
        let (sasl, step) = SaslServer::start(mechanism, initial.as_deref());
        self.sasl = Some(Box::new(sasl));
        self.phase = Phase::Authenticating;
        self.sasl_step(step).await
    }

    async fn sasl_step(&mut self, mut step: SaslStep) -> Action {
        loop {
            match step {
                SaslStep::Challenge(data) => {
                    let mut challenge = Element::bare("challenge", ns::SASL);
                    challenge
                        .append_text_node(base64::engine::general_purpose::STANDARD.encode(data));
                    self.wire.write_element(&mut self.output, &challenge);
                    return Action::Continue;
                }
                SaslStep::NeedCredentials { username } => {
                    if let Err(retry) =
                        self.config
                            .throttle
                            .check(self.peer.ip(), Some(&username), Instant::now())
                    {
                        let text = format!(
                            "too many failed attempts; retry in {} s",
                            retry.as_secs().max(1)
                        );
                        return self.sasl_failed(SaslFailure::TemporaryAuthFailure, Some(&text));
                    }
                    let credentials = match self.router.store.credentials(&username).await {
                        Ok(credentials) => credentials,
                        Err(error) => {
                            tracing::warn!(%error, "credential lookup failed");
                            return self.sasl_failed(SaslFailure::TemporaryAuthFailure, None);
                        }
                    };
                    self.attempted_username = Some(username);
                    let Some(sasl) = self.sasl.as_mut() else {
                        return self.sasl_failed(SaslFailure::MalformedRequest, None);
                    };
                    step = sasl.credentials(credentials);
                }
                SaslStep::Success {
                    username,
                    authzid,
                    additional_data,
                } => {
                    // The mechanism checked the localpart; the domain is ours to check.
                    let own = format!("{username}@{}", self.config.domain);
                    if authzid.is_some_and(|authzid| authzid != own) {
                        return self.sasl_failed(SaslFailure::InvalidAuthzid, None);
                    }
                    self.config.throttle.record_success(
                        self.peer.ip(),
                        Some(&username),
                        Instant::now(),
                    );
                    let mut success = Element::bare("success", ns::SASL);
                    if let Some(data) = additional_data {
                        success.append_text_node(
                            base64::engine::general_purpose::STANDARD.encode(data),
                        );
                    }
                    self.wire.write_element(&mut self.output, &success);
                    self.sasl = None;
                    self.username = Some(username);
                    // RFC 6120 §6.4.6: the stream restarts after success.
                    self.restart_stream();
                    return Action::Continue;
                }
                SaslStep::Failure(failure) => return self.sasl_failed(failure, None),
            }
        }
    }

    fn sasl_failed(&mut self, failure: SaslFailure, text: Option<&str>) -> Action {
        self.sasl = None;
        self.phase = Phase::Unauthenticated;
        let username = self.attempted_username.take();
        if !matches!(
            failure,
            SaslFailure::Aborted | SaslFailure::TemporaryAuthFailure
        ) {
            self.router.metrics.auth_failures.inc();
            self.config.throttle.record_failure(
                self.peer.ip(),
                username.as_deref(),
                Instant::now(),
            );
        }
        let mut element = Element::bare("failure", ns::SASL);
        element.append_child(Element::bare(failure.as_str(), ns::SASL));
        if let Some(text) = text {
            let mut text_element = Element::bare("text", ns::SASL);
            text_element.append_text_node(text);
            element.append_child(text_element);
        }
        self.wire.write_element(&mut self.output, &element);
        self.auth_failures += 1;
        if self.auth_failures >= MAX_AUTH_ATTEMPTS {
            self.stream_error(
                StreamErrorCondition::PolicyViolation,
                Some("too many authentication attempts"),
            );
            return Action::Close;
        }
        Action::Continue
    }

    async fn pre_bind_element(&mut self, element: Element) -> Action {
        let stanza = match Stanza::from_element(element) {
            Ok(stanza) => stanza,
            Err(error) => return self.stanza_parse_error(error),
        };
        if stanza.kind != StanzaKind::Iq || stanza.type_attr() != Some("set") {
            self.reply_locally(&stanza, StanzaErrorCondition::NotAuthorized);
            return Action::Continue;
        }
        let Some(payload) = stanza.payload() else {
            self.reply_locally(&stanza, StanzaErrorCondition::BadRequest);
            return Action::Continue;
        };
        if payload.is("bind", ns::BIND) {
            let requested = payload.get_child("resource", ns::BIND).map(Element::text);
            return self.bind(&stanza, requested).await;
        }
        if payload.is("session", ns::SESSION) {
            self.write_local(stanza.iq_result(None));
            return Action::Continue;
        }
        self.reply_locally(&stanza, StanzaErrorCondition::NotAuthorized);
        Action::Continue
    }

    /// RFC 6120 §7: resource binding.
    async fn bind(&mut self, iq: &Stanza, requested: Option<String>) -> Action {
        let Some(username) = self.username.clone() else {
            self.stream_error(StreamErrorCondition::NotAuthorized, None);
            return Action::Close;
        };
        let resource = match requested
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            Some(resource) => resource.to_owned(),
            // §7.6.2.1: the server generates a resource when the client sends none.
            None => new_id(),
        };
        let full = match FullJid::new(&format!("{username}@{}/{resource}", self.config.domain)) {
            Ok(full) => full,
            Err(_) => {
                // §7.7.2.1: a resource that fails resourceprep.
                self.reply_locally(iq, StanzaErrorCondition::BadRequest);
                return Action::Continue;
            }
        };
        let (resource, mailbox) = Resource::new(full.clone(), self.config.mailbox_capacity);
        if let Some(previous) = self.router.sessions.bind(resource.clone()) {
            // §7.7.2.2: the newer session wins; the older one gets a conflict stream error.
            previous.kick(
                StreamErrorCondition::Conflict,
                "replaced by a new connection",
            );
        }
        self.resource = Some(resource.clone());
        self.mailbox = Some(mailbox);
        self.phase = Phase::Bound;
        let mut bound = Element::bare("bind", ns::BIND);
        let mut jid = Element::bare("jid", ns::BIND);
        jid.append_text_node(full.as_str());
        bound.append_child(jid);
        let mut reply = iq.iq_result(Some(bound));
        reply.set_from(None);
        self.write_local(reply);
        self.router.session_opened(&resource).await;
        Action::Continue
    }

    async fn stanza(&mut self, element: Element) -> Action {
        let mut stanza = match Stanza::from_element(element) {
            Ok(stanza) => stanza,
            Err(error) => return self.stanza_parse_error(error),
        };
        let Some(resource) = self.resource.clone() else {
            return Action::Close;
        };
        self.router.metrics.stanza_in(stanza.kind);
        // RFC 6120 §8.1.2.1: a 'from' the client sets must be its own JID; otherwise the
        // stream is closed with invalid-from.
        if let Some(from) = &stanza.from {
            let own_full = Jid::from(resource.jid.clone());
            let own_bare = Jid::from(resource.jid.to_bare());
            if *from != own_full && *from != own_bare {
                self.stream_error(StreamErrorCondition::InvalidFrom, None);
                return Action::Close;
            }
        }
        if stanza.kind == StanzaKind::Iq && !iq_is_valid(&stanza) {
            // RFC 6120 §8.2.3: an IQ needs an id and a known type, and get/set exactly one child.
            self.reply_locally(&stanza, StanzaErrorCondition::BadRequest);
            return Action::Continue;
        }
        if stanza.kind == StanzaKind::Iq
            && stanza.type_attr() == Some("set")
            && stanza
                .payload()
                .is_some_and(|p| p.is("session", ns::SESSION))
        {
            self.write_local(stanza.iq_result(None));
            return Action::Continue;
        }
        stanza.set_from(Some(Jid::from(resource.jid.clone())));
        self.router.inbound(&resource, stanza).await;
        Action::Continue
    }

    fn stanza_parse_error(&mut self, error: StanzaParseError) -> Action {
        match error {
            StanzaParseError::UnsupportedKind(name) => {
                self.stream_error(
                    StreamErrorCondition::UnsupportedStanzaType,
                    Some(&format!("<{name}/> is not a stanza")),
                );
                Action::Close
            }
            StanzaParseError::MalformedJid { kind, id, .. } => {
                // RFC 6120 §8.3.3.8: the element is fine, an address is not: answer with a
                // stanza error and keep the stream. Only kind and id can be echoed.
                let mut reply = Element::bare(kind.as_str(), ns::CLIENT);
                if let Some(id) = id {
                    confab_core::stanza::set_attr(&mut reply, "id", Some(id));
                }
                let stanza = Stanza::new(reply);
                self.reply_locally(&stanza, StanzaErrorCondition::JidMalformed);
                Action::Continue
            }
        }
    }

    /// Answers a stanza without routing (it never got a trustworthy address).
    fn reply_locally(&mut self, stanza: &Stanza, condition: StanzaErrorCondition) {
        if let Some(mut reply) = stanza.error_reply(&StanzaError::new(condition)) {
            reply.set_from(None);
            self.write_local(reply);
        }
    }

    fn write_local(&mut self, mut stanza: Stanza) {
        if let Some(resource) = &self.resource {
            stanza.set_to(Some(Jid::from(resource.jid.clone())));
        }
        self.router.metrics.stanza_out(stanza.kind);
        // A Close here (too many unacknowledged) is seen by `receive` as the closed phase.
        let _ = self.write_stanza(Box::new(stanza));
    }
}

/// The same IQ with its payload removed, for error replies that must not echo it.
fn without_payload(stanza: &Stanza) -> Stanza {
    let mut element = Element::bare("iq", ns::CLIENT);
    if let Some(id) = stanza.id() {
        confab_core::stanza::set_attr(&mut element, "id", Some(id.to_owned()));
    }
    if let Some(kind) = stanza.type_attr() {
        confab_core::stanza::set_attr(&mut element, "type", Some(kind.to_owned()));
    }
    Stanza::new(element)
}

fn iq_is_valid(stanza: &Stanza) -> bool {
    if stanza.id().is_none() {
        return false;
    }
    match stanza.type_attr() {
        Some("get" | "set") => stanza.element.children().count() == 1,
        Some("result" | "error") => true,
        _ => false,
    }
}

fn decode_sasl_payload(element: &Element) -> Option<Vec<u8>> {
    match element.text().trim() {
        "" | "=" => Some(Vec::new()),
        text => base64::engine::general_purpose::STANDARD.decode(text).ok(),
    }
}

/// A XEP-0198 resumption id: 144 random bits, so it cannot be guessed (§5 asks for an
/// unpredictable id; it is also bound to the account that created it).
fn resumption_id() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 18];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn next_command(mailbox: Option<&mut Mailbox>) -> Option<SessionCommand> {
    match mailbox {
        Some(mailbox) => mailbox.receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// A short random identifier for stream ids and generated resources.
fn new_id() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 9];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
