//! The accept loop: caps connections and turns descriptor exhaustion into refusals.

use crate::connection::{self, ConnectionLimits};
use confab_c2s::{C2sConfig, Framing};
use confab_router::Router;
use rustls::ServerConfig;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of one client listener.
#[derive(Clone)]
pub struct ListenerConfig {
    /// Maximum simultaneous connections; further ones are closed at once.
    pub max_connections: usize,
    /// Unauthenticated connections are closed after this long (`connection-timeout`).
    pub pre_auth_timeout: Duration,
    /// Connections silent for this long are closed (`connection-timeout`); `None` disables it.
    /// Clients keep a quiet stream alive with whitespace (RFC 6120 §4.6.1).
    pub idle_timeout: Option<Duration>,
    /// Sustained read rate per connection, bytes per second.
    pub read_rate: u32,
    /// Read burst per connection, bytes.
    pub read_burst: u32,
    /// TLS for STARTTLS (or for the whole connection with `direct_tls`); `None` disables it.
    pub tls: Option<Arc<ServerConfig>>,
    /// XEP-0368: TLS from the first byte instead of STARTTLS.
    pub direct_tls: bool,
    /// How the stream is framed on this listener.
    pub framing: Framing,
}

/// A bound client listener (RFC 6120 over TCP with STARTTLS).
pub struct C2sListener {
    listener: TcpListener,
    router: Arc<Router>,
    c2s: Arc<C2sConfig>,
    config: ListenerConfig,
}

impl C2sListener {
    /// Wraps an already bound socket (binding is the caller's, so it can report
    /// "address in use" with the configured address).
    pub fn new(
        listener: TcpListener,
        router: Arc<Router>,
        c2s: Arc<C2sConfig>,
        config: ListenerConfig,
    ) -> Self {
        Self {
            listener,
            router,
            c2s,
            config,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `shutdown` fires, then waits for every connection to close.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(self.config.max_connections));
        let limits = Arc::new(ConnectionLimits::new(&self.config));
        // Descriptors held in reserve: when accept fails with EMFILE we release one, accept
        // the waiting connection and close it at once, so the client sees a refusal instead
        // of hanging in the backlog, and the loop does not spin. More than one, because
        // another thread (a database connection, a WAL file) may take the freed descriptor
        // between our close and our reopen; with a single reserve that one theft left every
        // later client hanging until some descriptor was freed.
        let mut reserve = Reserve::new();
        // Linux copies TCP_NODELAY from the listening socket to the accepted ones; when
        // `bind` set it there, a setsockopt per connection is saved.
        let nodelay_inherited = cfg!(target_os = "linux")
            && socket2::SockRef::from(&self.listener)
                .tcp_nodelay()
                .unwrap_or(false);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) if is_fd_exhaustion(&error) => {
                    self.router.metrics.connections_refused.inc();
                    tracing::warn!(%error, "out of file descriptors; refusing a connection");
                    let released = reserve.release_one();
                    // Only a connection already queued is refused: Linux reports EMFILE even
                    // with an empty queue, and waiting here would close the next client to
                    // arrive, however much later. A zero timeout still polls once.
                    if let Ok(Ok((stream, _))) =
                        tokio::time::timeout(Duration::ZERO, self.listener.accept()).await
                    {
                        drop(stream);
                    }
                    reserve.refill();
                    if !released {
                        // Nothing to refuse with: wait for descriptors to come back.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.router.metrics.connections_refused.inc();
                tracing::warn!(%peer, "connection cap reached; refusing");
                drop(stream);
                continue;
            };
            if !nodelay_inherited {
                let _ = stream.set_nodelay(true);
            }
            let router = self.router.clone();
            let c2s = self.c2s.clone();
            let limits = limits.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                connection::serve(stream, peer, router, c2s, limits, shutdown).await;
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// Connections the kernel may queue before `accept`. Large, because a login burst (tens of
/// thousands of clients reconnecting after a restart) otherwise overflows the default of
/// 128 and every overflowed client waits a full second for its SYN retry.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds a listening socket with a deep accept queue, `SO_REUSEADDR` (so a restart does
/// not wait for old connections in TIME_WAIT) and `TCP_NODELAY` for the connections it accepts
/// (stanzas are written whole, and a login's round trips must not wait for Nagle).
pub fn bind(address: std::net::SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Descriptors kept open so that accept can be made to succeed, and refuse, when the process
/// has none left.
struct Reserve(Vec<std::fs::File>);

impl Reserve {
    const SIZE: usize = 4;

    fn new() -> Self {
        let mut reserve = Reserve(Vec::with_capacity(Self::SIZE));
        reserve.refill();
        reserve
    }

    /// Closes one reserved descriptor; false when none was left.
    fn release_one(&mut self) -> bool {
        self.0.pop().is_some()
    }

    /// Reopens what was released, as far as descriptors allow.
    fn refill(&mut self) {
        while self.0.len() < Self::SIZE {
            match std::fs::File::open("/dev/null") {
                Ok(file) => self.0.push(file),
                Err(_) => break,
            }
        }
    }
}

fn is_fd_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accept loop skips its per-connection `set_nodelay` on Linux because accepted sockets
    /// inherit the option from the listener; this holds it to that.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let listener = bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let address = listener.local_addr().expect("address");
        let client = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        if cfg!(target_os = "linux") {
            assert!(accepted.nodelay().expect("nodelay"));
        }
        drop(client);
    }
}
