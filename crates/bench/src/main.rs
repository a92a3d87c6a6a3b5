//! `confab-bench`: an XMPP load generator for any XMPP server (Confab, ejabberd, Prosody).
//!
//! - `register`: creates `user1..userN` with XEP-0077 in-band registration.
//! - `connect`: logs N users in at a chosen rate and holds them; login rate, failures, time
//!   to all-online and, with `--pid`, the server's memory per idle session.
//! - `chat`: P pairs exchange messages at a fixed rate or as fast as a bounded window allows;
//!   throughput, loss, duplicates, latency percentiles and server CPU per message.
//! - `http-send`: P senders post messages through Confab's HTTP client API to P receivers
//!   logged in over XMPP; answers by status, loss, commit and delivery latency.
//! - `group`: M members of a XEP-0045 room, K in it, S sending; fan-out deliveries per
//!   second, loss, duplicates, latency to each delivery and the time K members take to join.
//!
//! Every scenario prints a human table and then one line of JSON with all figures.
//! BENCHMARKS.md at the repository root says how to run them and what was measured.
//!
//! Clients reach the server over TCP (optionally STARTTLS), direct TLS (XEP-0368),
//! WebSocket (RFC 7395) or Confab's protobuf binding (TCP, TLS or WebSocket): `--transport`.
//!
//! Layout: `xml` frames the server's stream, `transport` opens TCP/TLS, `link` carries
//! elements over TCP, TLS or WebSocket, `pb` converts them to protobuf frames and back,
//! `sasl` and `client` log one user in, `logins` logs many in, and `connect`, `chat`,
//! `http_send`, `group` and `register` are the scenarios; `stamp` holds what the message
//! scenarios share (stamps, sequence sets, reconciliation, schedule); `report` holds the
//! figures and /proc sampling.

mod chat;
mod client;
mod connect;
mod group;
mod http_send;
mod link;
mod logins;
mod pb;
mod register;
mod report;
mod sasl;
mod sm;
mod stamp;
mod transport;
mod xml;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::client::ClientConfig;
use crate::link::{Dial, PbTarget, TransportKind, WsTarget};
use crate::sasl::Mechanism;

/// XMPP load generator: login storms, idle sessions and chat traffic against any server.
#[derive(Debug, Parser)]
#[command(name = "confab-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create accounts <prefix>1..<prefix>N with XEP-0077 in-band registration.
    Register(RegisterArgs),
    /// Log N users in at a given rate and hold the sessions.
    Connect(ConnectArgs),
    /// P pairs of users exchange chat messages; measures throughput and latency.
    Chat(ChatArgs),
    /// P senders post messages through Confab's HTTP API (`POST /api/v1/messages`) to P
    /// receivers logged in over XMPP; measures commit and delivery latency.
    HttpSend(HttpSendArgs),
    /// M members of a XEP-0045 room, K of them in it, S of those send: fan-out rate, loss and
    /// latency from the send to each delivery.
    Group(GroupArgs),
}

/// Flags every scenario takes.
#[derive(Debug, Clone, Args)]
struct Common {
    /// Server address: host:port for --transport tcp, tls, pb and pb-tls (the `[pb]`
    /// listener); for websocket and pb-websocket a ws:// or wss:// URL (host:port alone means
    /// ws://host:port/xmpp-websocket, or /pb-websocket).
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: String,
    /// How clients reach the server (with tls, --server is the direct TLS port).
    #[arg(long, value_enum, default_value_t = TransportKind::Tcp)]
    transport: TransportKind,
    /// XMPP domain of the accounts.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Account name prefix: user N is <prefix><N>.
    #[arg(long, default_value = "user")]
    users_prefix: String,
    /// Password of every bench account.
    #[arg(long, env = "CONFAB_BENCH_PASSWORD", default_value = "bench-password")]
    password: String,
    /// Number of the first user.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Negotiate STARTTLS (with --transport tcp; any certificate is accepted).
    #[arg(long)]
    tls: bool,
    /// SASL mechanism.
    #[arg(long = "mech", value_enum, default_value_t = Mechanism::ScramSha256)]
    mechanism: Mechanism,
    /// Wait for each <stream:features/> instead of sending ahead of it.
    #[arg(long)]
    no_pipeline: bool,
    /// Local source addresses, e.g. 127.0.0.1-127.0.0.8 (each gives ~28k ports toward one
    /// server port). Default: chosen by the kernel, or one 127.0.0.x per 5,000 connections
    /// when the server is on IPv4 loopback.
    #[arg(long, value_name = "ADDRS")]
    source: Option<String>,
    /// Worker threads of this tool's runtime (the server competes for the same cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// PID of the server: sample its memory and CPU time from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds one login may take before it counts as failed.
    #[arg(long, default_value_t = 30.0)]
    login_timeout: f64,
    /// Logins in progress at once, at most (per process).
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// File caching SCRAM SaltedPasswords across runs (holds the bench password in clear).
    #[arg(long, value_name = "FILE")]
    scram_cache: Option<PathBuf>,
    /// Resource requested at bind.
    #[arg(long, default_value = "bench")]
    resource: String,
}

/// `confab-bench register`.
#[derive(Debug, Clone, Args)]
struct RegisterArgs {
    #[command(flatten)]
    common: Common,
    /// Accounts to create.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Connections registering in parallel.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Registrations in flight per connection.
    #[arg(long, default_value_t = 32)]
    depth: usize,
    /// Registrations per connection before reconnecting (servers cap unauthenticated
    /// streams in time; Confab's pre-auth timeout is 30 s).
    #[arg(long, default_value_t = 500)]
    per_connection: u64,
}

/// `confab-bench connect`.
#[derive(Debug, Clone, Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Users to log in.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Logins started per second, or `max` (bounded by --concurrency).
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    rate: Rate,
    /// Seconds to hold the sessions once all are online.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Send initial presence after binding.
    #[arg(long)]
    presence: bool,
    /// Seconds of idleness after all are online before the server's RSS is sampled.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Processes to spread the users over (a process may hold 20,000 descriptors here); 0
    /// picks one per 18,000 users.
    #[arg(long, visible_alias = "workers", default_value_t = 0)]
    procs: u32,
    /// Internal: run as worker i of K, speaking JSON lines to the parent.
    #[arg(long, hide = true, value_name = "I/K")]
    worker: Option<String>,
}

/// The load shape shared by the pair scenarios (`chat`, `http-send`): user(2i-1) sends to
/// user(2i).
#[derive(Debug, Clone, Args)]
struct PairLoad {
    /// Pairs of users.
    #[arg(long, default_value_t = 100)]
    pairs: u64,
    /// Messages per second per pair, when not --max; the offered load is this times
    /// --pairs, open-loop.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Send as fast as --inflight allows instead of at --rate.
    #[arg(long)]
    max: bool,
    /// With --max: messages (chat) or requests (http-send, each on its own keep-alive
    /// connection) in flight per pair.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// After sending, wait for every message to arrive (and be acknowledged, if the server
    /// sends receipts); give up once nothing has arrived for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
}

/// `confab-bench chat`.
#[derive(Debug, Clone, Args)]
struct ChatArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: PairLoad,
    /// Do not send initial presence (messages then go to the full JID only).
    #[arg(long)]
    no_presence: bool,
    /// Enable XEP-0198 stream management on every client after bind: answer the server's
    /// <r/>, and ask for acknowledgements every 100 messages or 1 s.
    #[arg(long)]
    sm: bool,
    /// Enable XEP-0280 message carbons on every client after bind.
    #[arg(long)]
    carbons: bool,
}

/// `confab-bench http-send`.
#[derive(Debug, Clone, Args)]
struct HttpSendArgs {
    #[command(flatten)]
    common: Common,
    /// The server's HTTP listener (host:port; plain http only).
    #[arg(long, default_value = "127.0.0.1:5280")]
    http: String,
    #[command(flatten)]
    load: PairLoad,
    /// Seconds one request may take before it counts as failed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// `confab-bench group`.
#[derive(Debug, Clone, Args)]
struct GroupArgs {
    #[command(flatten)]
    common: Common,
    /// Users on the room's member list: <prefix><first>.. (the first owns the room).
    #[arg(long, default_value_t = 1000)]
    members: u64,
    /// Members in the room: the owner and the next K-1 users.
    #[arg(long, default_value_t = 200)]
    online: u64,
    /// Occupants that send (the first S).
    #[arg(long, default_value_t = 5)]
    senders: u64,
    /// Messages per second per sender, open-loop, when not --max.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Send as fast as --inflight allows instead of at --rate.
    #[arg(long)]
    max: bool,
    /// With --max: messages per sender not yet delivered to every occupant.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// After sending, wait for every delivery; give up once nothing has arrived for this many
    /// seconds.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// The room's name (local part of its JID).
    #[arg(long, default_value = "bench")]
    room: String,
    /// The MUC service's domain [default: conference.<--domain>].
    #[arg(long)]
    service: Option<String>,
    /// Member-list items per muc#admin request.
    #[arg(long, default_value_t = 100)]
    member_batch: usize,
}

/// A login rate: per second, or unbounded.
#[derive(Debug, Clone, Copy)]
struct Rate(Option<f64>);

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text == "max" {
        return Ok(Rate(None));
    }
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Rate(Some(rate))),
        _ => Err("a positive number or `max`".to_owned()),
    }
}

impl Common {
    /// The address connections go to and how they are opened.
    fn endpoint(&self) -> anyhow::Result<(SocketAddr, Dial)> {
        if self.tls && self.transport != TransportKind::Tcp {
            bail!("--tls (STARTTLS) applies to --transport tcp only");
        }
        let dial = match self.transport {
            TransportKind::Tcp => Dial::Tcp,
            TransportKind::Tls => Dial::DirectTls(transport::direct_tls_connector()?),
            TransportKind::Pb => Dial::Pb(PbTarget::new(&self.domain, None)),
            TransportKind::PbTls => Dial::Pb(PbTarget::new(
                &self.domain,
                Some(transport::tls_connector()?),
            )),
            TransportKind::Websocket | TransportKind::PbWebsocket => {
                let (target, addr) = WsTarget::new(
                    &self.server,
                    &self.domain,
                    transport::tls_connector()?,
                    self.transport == TransportKind::PbWebsocket,
                )?;
                return Ok((addr, Dial::WebSocket(target)));
            }
        };
        if self.server.contains("://") {
            bail!(
                "--server {} is a URL: pass --transport websocket or pb-websocket, or host:port",
                self.server
            );
        }
        let addr = self
            .server
            .to_socket_addrs()
            .with_context(|| format!("resolve {}", self.server))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.server))?;
        Ok((addr, dial))
    }

    /// The transport for human reports: "plain TCP", "STARTTLS", "direct TLS", "WebSocket",
    /// "protobuf/TCP", …
    fn transport_label(&self) -> &'static str {
        match self.transport {
            TransportKind::Tcp if self.tls => "STARTTLS",
            TransportKind::Tcp => "plain TCP",
            TransportKind::Tls => "direct TLS",
            TransportKind::Websocket => "WebSocket",
            TransportKind::Pb => "protobuf/TCP",
            TransportKind::PbTls => "protobuf/TLS",
            TransportKind::PbWebsocket => "protobuf/WebSocket",
        }
    }

    /// The per-connection client settings; `presence` as the scenario wants.
    fn client_config(&self, presence: bool) -> anyhow::Result<ClientConfig> {
        if let Some(path) = &self.scram_cache {
            sasl::persist_cache(path)?;
        }
        let (server, dial) = self.endpoint()?;
        Ok(ClientConfig {
            server,
            dial,
            domain: self.domain.clone(),
            tls: if self.tls {
                Some(transport::tls_connector()?)
            } else {
                None
            },
            mechanism: self.mechanism,
            resource: self.resource.clone(),
            presence,
            pipeline: !self.no_pipeline,
            timeout: Duration::from_secs_f64(self.login_timeout),
        })
    }

    /// Source addresses for `connections` connections in total.
    fn sources(&self, connections: u64) -> anyhow::Result<Arc<Vec<IpAddr>>> {
        if let Some(spec) = &self.source {
            return Ok(Arc::new(transport::parse_sources(spec)?));
        }
        // One source address holds at most ~28k connections to one server port (the
        // ephemeral port range), and long before that connect() gets expensive: the kernel
        // searches the range for a free port under a lock, which cost this tool 0.36 ms of
        // system CPU per login at 19,000 connections from 127.0.0.1, against 0.04 ms with
        // four source addresses. So loopback runs spread over 127.0.0.x beyond 5,000.
        const PER_SOURCE: u64 = 5_000;
        let (server, _) = self.endpoint()?;
        if connections <= PER_SOURCE {
            return Ok(Arc::new(Vec::new()));
        }
        if !server.ip().is_loopback() || !server.is_ipv4() {
            eprintln!(
                "note: {connections} connections from one source address may exhaust \
                 ephemeral ports; pass --source"
            );
            return Ok(Arc::new(Vec::new()));
        }
        let count = connections.div_ceil(PER_SOURCE) as u32;
        let spec = format!("127.0.0.1-127.0.0.{count}");
        eprintln!("note: spreading connections over source addresses {spec}");
        Ok(Arc::new(transport::parse_sources(&spec)?))
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("start the tokio runtime")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Register(args) => {
            runtime(args.common.threads)?.block_on(register::run(args))?;
        }
        Command::Connect(args) => {
            if args.count == 0 {
                bail!("--count must be at least 1");
            }
            runtime(args.common.threads)?.block_on(connect::run(args))?;
        }
        Command::Chat(args) => {
            if args.load.pairs == 0 {
                bail!("--pairs must be at least 1");
            }
            runtime(args.common.threads)?.block_on(chat::run(args))?;
        }
        Command::HttpSend(args) => {
            if args.load.pairs == 0 {
                bail!("--pairs must be at least 1");
            }
            runtime(args.common.threads)?.block_on(http_send::run(args))?;
        }
        Command::Group(args) => {
            runtime(args.common.threads)?.block_on(group::run(args))?;
        }
    }
    Ok(())
}
