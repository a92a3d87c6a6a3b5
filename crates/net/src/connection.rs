//! One task per connection: read → session → write, plus the session's mailbox, kicks,
//! timeouts and shutdown.

use bytes::BytesMut;
use confab_c2s::{Action, C2sConfig, Framing, Session, Takeover};
use confab_core::StreamErrorCondition;
use confab_router::Router;
use confab_sessions::{Mailbox, Resource, SessionCommand};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Bytes read per syscall. Small on purpose: an idle connection holds no read buffer at
/// all, a busy one never more than this plus one partial stanza.
const READ_CHUNK: usize = 4096;
/// Mailbox entries written per batch before yielding to reads, so a chatty peer cannot
/// starve its own input (and stream-management acks later).
const DELIVERY_BATCH: usize = 64;
/// An output buffer that grew beyond this is released after it drains.
const KEEP_OUTPUT_CAPACITY: usize = 16 * 1024;

/// Per-connection settings shared by a listener.
pub struct ConnectionLimits {
    pub(crate) pre_auth_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) read_rate: u32,
    pub(crate) read_burst: u32,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) direct_tls: bool,
    pub(crate) framing: Framing,
    /// One clock for every connection's rate limiter: creating a quanta clock calibrates it
    /// with `cpuid`, which under virtualisation traps to the hypervisor (it was a sixth of
    /// the server's CPU per login when every connection made its own).
    pub(crate) clock: DefaultClock,
}

impl ConnectionLimits {
    /// The settings a listener configured with `config` gives each connection.
    pub fn new(config: &crate::ListenerConfig) -> Self {
        Self {
            pre_auth_timeout: config.pre_auth_timeout,
            idle_timeout: config.idle_timeout,
            read_rate: config.read_rate,
            read_burst: config.read_burst,
            tls: config.tls.clone().map(TlsAcceptor::from),
            direct_tls: config.direct_tls,
            framing: config.framing,
            clock: DefaultClock::default(),
        }
    }
}

/// A carrier of whole messages (a WebSocket): the driver hands the session each received
/// message as one varint length-delimited frame and sends each frame the session writes as
/// one message (see `confab_codec::wire`).
#[async_trait::async_trait]
pub trait MessageTransport: Send {
    /// Waits for the next message and appends it to `buf` as one varint length-delimited
    /// frame; returns the bytes appended, 0 when the peer closed.
    async fn read_frame(&mut self, buf: &mut BytesMut) -> std::io::Result<usize>;
    /// Sends every varint length-delimited frame in `frames` as one message.
    async fn write_frames(&mut self, frames: &[u8]) -> std::io::Result<()>;
    /// Closes the carrier (a WebSocket close frame).
    async fn close(&mut self);
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Message(Box<dyn MessageTransport>),
    /// The socket was moved into a TLS handshake that failed.
    Gone,
}

impl Conn {
    /// Reads into `buf`. It waits for readability without holding a buffer, so idle
    /// connections cost no read memory: an empty `buf` is released whenever a read finds
    /// nothing.
    async fn read(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Conn::Plain(stream) => loop {
                stream.readable().await?;
                buf.reserve(READ_CHUNK);
                match stream.try_read_buf(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Readiness is stale after every read that did not drain the socket,
                        // so the first wait after a stanza usually lands here: without this,
                        // each idle connection would keep a whole chunk.
                        release_if_empty(buf);
                    }
                    Err(e) => return Err(e),
                }
            },
            Conn::Tls(stream) => loop {
                buf.reserve(READ_CHUNK);
                // One poll: plaintext rustls already decrypted, or whatever the socket holds.
                let polled = {
                    let mut read = std::pin::pin!(stream.read_buf(buf));
                    std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
                };
                if let Poll::Ready(result) = polled {
                    return result;
                }
                // Nothing yet: wait on the socket itself without holding the chunk.
                release_if_empty(buf);
                stream.get_ref().0.readable().await?;
            },
            Conn::Message(transport) => transport.read_frame(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(stream) => stream.write_all(data).await,
            Conn::Tls(stream) => {
                stream.write_all(data).await?;
                stream.flush().await
            }
            Conn::Message(transport) => transport.write_frames(data).await,
            Conn::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(stream) => stream.shutdown().await,
            Conn::Tls(stream) => stream.shutdown().await,
            Conn::Message(transport) => {
                transport.close().await;
                Ok(())
            }
            Conn::Gone => Ok(()),
        };
    }
}

/// Runs one client connection on a TCP socket to completion: with `limits.direct_tls` the
/// TLS handshake comes first (XEP-0368) and the stream starts already secure.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    c2s: Arc<C2sConfig>,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
) {
    // Boxed so the handshake's timer does not add to every connection's task for its life.
    let Some(conn) = Box::pin(open(stream, peer, &limits)).await else {
        return;
    };
    let secure = matches!(conn, Conn::Tls(_));
    run(conn, secure, peer, router, c2s, limits, shutdown).await;
}

/// The connection as the stream starts on it: TLS first on a direct-TLS listener, or `None`
/// when that handshake failed or ran out of time.
async fn open(stream: TcpStream, peer: SocketAddr, limits: &ConnectionLimits) -> Option<Conn> {
    let (Some(acceptor), true) = (&limits.tls, limits.direct_tls) else {
        return Some(Conn::Plain(stream));
    };
    match tokio::time::timeout(limits.pre_auth_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Conn::Tls(Box::new(tls))),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Runs one client connection over a message carrier (a WebSocket) to completion.
pub async fn serve_messages(
    transport: Box<dyn MessageTransport>,
    secure: bool,
    peer: SocketAddr,
    router: Arc<Router>,
    c2s: Arc<C2sConfig>,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
) {
    Box::pin(run(
        Conn::Message(transport),
        secure,
        peer,
        router,
        c2s,
        limits,
        shutdown,
    ))
    .await;
}

async fn run(
    mut conn: Conn,
    secure: bool,
    peer: SocketAddr,
    router: Arc<Router>,
    c2s: Arc<C2sConfig>,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
) {
    router.metrics.connections.inc();
    let mut session = Session::new(router.clone(), c2s, peer, limits.framing, secure);
    let mut mailbox = None;
    if let Err(error) = drive(&mut conn, &mut session, &mut mailbox, &limits, &shutdown).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
    conn.shutdown().await;
    drop(conn);
    router.metrics.connections.dec();
    // A resumable stream (XEP-0198 §5) stays parked in here, without its socket, until it
    // is resumed, its window passes or the server shuts down.
    Box::pin(session.disconnected(mailbox, shutdown.cancelled())).await;
}

fn limiter(limits: &ConnectionLimits) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(limits.read_rate.max(1)).unwrap_or(NonZeroU32::MIN);
    // The burst must fit one read, or a full chunk could never be admitted.
    let burst =
        NonZeroU32::new(limits.read_burst.max(READ_CHUNK as u32)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(
        Quota::per_second(rate).allow_burst(burst),
        limits.clock.clone(),
    )
}

async fn drive(
    conn: &mut Conn,
    session: &mut Session,
    mailbox: &mut Option<Mailbox>,
    limits: &ConnectionLimits,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let limiter = limiter(limits);
    let mut input = BytesMut::new();
    let mut resource: Option<Arc<Resource>> = None;
    let mut takeover: Option<Takeover> = None;
    // Set while the connection is over its read budget; reads resume when it fires.
    let mut paused: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // XEP-0198 §4: set while stanzas wait for an acknowledgement; fires when an `<r/>` is due.
    // Boxed and kept only then, so a connection without stream management carries no timer.
    let mut ack_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // One timer for both timeouts (each timer is another 112 bytes in every connection's
    // task): before authentication it fires at the pre-authentication deadline or after
    // `idle_timeout` of silence, whichever comes first; afterwards only after silence.
    let pre_auth_until = tokio::time::Instant::now() + limits.pre_auth_timeout;
    let timeout_at = |authenticated: bool| {
        // Disabled idle timeout = a deadline that never fires in practice.
        let idle_until = tokio::time::Instant::now()
            + limits
                .idle_timeout
                .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
        if authenticated {
            idle_until
        } else {
            idle_until.min(pre_auth_until)
        }
    };
    let deadline = tokio::time::sleep_until(timeout_at(false));
    tokio::pin!(deadline);
    loop {
        match (session.ack_request_due(), ack_timer.as_mut()) {
            (None, _) => ack_timer = None,
            (Some(due), Some(timer)) => {
                let due = tokio::time::Instant::from_std(due);
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
            }
            (Some(due), None) => {
                let due = tokio::time::Instant::from_std(due);
                ack_timer = Some(Box::pin(tokio::time::sleep_until(due)));
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                session.stream_error(StreamErrorCondition::SystemShutdown, None);
                flush(conn, session).await?;
                return Ok(());
            }
            reason = kicked(resource.as_deref()) => {
                // What was queued before the kick (e.g. the result of an account removal)
                // still goes out ahead of the stream error.
                if let Some(mailbox) = mailbox.as_mut() {
                    while let Ok(command) = mailbox.receiver.try_recv() {
                        session.deliver(command);
                    }
                }
                session.stream_error(reason.0, Some(reason.1));
                flush(conn, session).await?;
                return Ok(());
            }
            () = taken_over(takeover.as_ref()) => {
                // XEP-0198 §5: another connection resumed this stream; this one closes and
                // `Session::disconnected` hands the state over.
                session.stream_error(StreamErrorCondition::Conflict, Some("the stream was resumed on another connection"));
                flush(conn, session).await?;
                return Ok(());
            }
            _ = &mut deadline, if !session.is_authenticated() || limits.idle_timeout.is_some() => {
                let text = if !session.is_authenticated()
                    && tokio::time::Instant::now() >= pre_auth_until
                {
                    "authentication took too long"
                } else {
                    "idle for too long"
                };
                session.stream_error(StreamErrorCondition::ConnectionTimeout, Some(text));
                flush(conn, session).await?;
                return Ok(());
            }
            command = next_command(mailbox.as_mut()) => {
                let Some(command) = command else { return Ok(()) };
                let mut action = session.deliver(command);
                if let Some(mailbox) = mailbox.as_mut() {
                    for _ in 1..DELIVERY_BATCH {
                        if action != Action::Continue {
                            break;
                        }
                        match mailbox.receiver.try_recv() {
                            Ok(command) => action = session.deliver(command),
                            Err(_) => break,
                        }
                    }
                }
                flush(conn, session).await?;
                if action != Action::Continue {
                    return Ok(());
                }
            }
            () = wait_timer(&mut ack_timer), if ack_timer.is_some() => {
                // XEP-0198 §4: stanzas waited long enough for an ack; ask for one.
                session.request_ack();
                flush(conn, session).await?;
            }
            () = wait_timer(&mut paused), if paused.is_some() => {
                paused = None;
            }
            read = conn.read(&mut input), if paused.is_none() => {
                let n = read?;
                if n == 0 {
                    // The peer ended its half of the connection inside a frame (a protobuf
                    // length prefix promised more bytes than came, or a stanza was cut
                    // short). It may still be reading, so say why the stream ends —
                    // bad-format (docs/protocol/confab-protobuf.md) — instead of closing
                    // silently. If it is already gone the write fails, which changes nothing.
                    if !input.is_empty() {
                        session.stream_error(
                            StreamErrorCondition::BadFormat,
                            Some("the connection ended inside a frame"),
                        );
                        let _ = flush(conn, session).await;
                    }
                    return Ok(());
                }
                // Per-connection byte rate: bytes over budget pause further reads (a flood
                // waits in the kernel's buffer instead of costing CPU), while the mailbox
                // keeps draining so traffic *to* this client never stalls behind its sends.
                if let Some(n) = NonZeroU32::new(n as u32)
                    && let Ok(Err(not_until)) = limiter.check_n(n)
                {
                    let wait = not_until.wait_time_from(limiter.clock().now());
                    paused = Some(Box::pin(tokio::time::sleep(wait)));
                }
                // Boxed (one short-lived allocation per read), like the TLS handshake and the
                // teardown: a future is as large as its largest await point, and every idle
                // connection would otherwise carry the room a stanza's trip through the
                // router needs (1.3 KiB).
                let was_authenticated = session.is_authenticated();
                let action = Box::pin(session.receive(&mut input)).await;
                if limits.idle_timeout.is_some() || session.is_authenticated() != was_authenticated {
                    deadline.as_mut().reset(timeout_at(session.is_authenticated()));
                }
                if mailbox.is_none() {
                    *mailbox = session.take_mailbox();
                    resource = session.resource().cloned();
                }
                if takeover.is_none() {
                    takeover = session.takeover();
                }
                flush(conn, session).await?;
                match action {
                    Action::Continue => {}
                    Action::Close => return Ok(()),
                    Action::StartTls => {
                        let Some(acceptor) = limits.tls.clone() else { return Ok(()) };
                        let Conn::Plain(stream) = std::mem::replace(conn, Conn::Gone) else {
                            return Ok(());
                        };
                        // RFC 6120 §5.4.3.3: bytes the client pipelined after <starttls/> are
                        // not allowed; anything buffered is discarded with the old stream.
                        input.clear();
                        let tls = Box::pin(acceptor.accept(stream)).await?;
                        *conn = Conn::Tls(Box::new(tls));
                        session.tls_established();
                    }
                }
                if input.is_empty() {
                    // Idle again: give memory back (see READ_CHUNK).
                    input = BytesMut::new();
                    session.shrink();
                }
            }
        }
    }
}

fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

async fn flush(conn: &mut Conn, session: &mut Session) -> std::io::Result<()> {
    let output = session.output();
    if output.is_empty() {
        return Ok(());
    }
    let result = conn.write_all(output).await;
    output.clear();
    if output.capacity() > KEEP_OUTPUT_CAPACITY {
        *output = BytesMut::new();
    }
    result
}

async fn wait_timer(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn kicked(resource: Option<&Resource>) -> (StreamErrorCondition, &'static str) {
    match resource {
        Some(resource) => resource.kicked().await,
        None => std::future::pending().await,
    }
}

async fn taken_over(takeover: Option<&Takeover>) {
    match takeover {
        Some(takeover) => takeover.requested().await,
        None => std::future::pending().await,
    }
}

async fn next_command(mailbox: Option<&mut Mailbox>) -> Option<SessionCommand> {
    match mailbox {
        Some(mailbox) => mailbox.receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            TcpStream,
            SocketAddr,
            Arc<Router>,
            Arc<C2sConfig>,
            Arc<ConnectionLimits>,
            CancellationToken,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The connection future is the largest part of what an idle session costs (issue 4:
    /// ≤ 8 KiB per idle session). It was 2,936 bytes before the router path, the TLS
    /// handshake and the teardown were boxed and the timers merged; keep it near 2 KiB.
    #[test]
    fn connection_task_stays_small() {
        let size = future_size(serve);
        assert!(size <= 2304, "the connection future grew to {size} bytes");
    }
}
