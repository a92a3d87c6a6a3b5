//! The server's configuration: one typed struct, declared once, with a documented default for
//! every key.
//!
//! Layers, lowest precedence first: the defaults below, an optional TOML file (`--config`),
//! environment variables named `CONFAB__<SECTION>__<KEY>` (for example
//! `CONFAB__C2S__LISTEN=127.0.0.1:6222` or `CONFAB__DOMAIN=example.com`), and finally the
//! command-line flags in [`Overrides`]. The file and environment layers are merged as TOML
//! tables and deserialized once, so a value means the same wherever it comes from.
//!
//! Every struct is declared through `config_struct!`, which also records each key's doc
//! comment. [`example`] renders those docs with the default values into
//! `confab.example.toml`, and tests check that the committed file matches and that it
//! deserializes back to [`Config::default`]: the example cannot drift from the code.
//!
//! Errors are single lines naming the key and where its value came from, because an operator
//! reads them in a terminal or a journal, not in a debugger.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "CONFAB__";

/// Separator between the section and key parts of an environment variable name.
const ENV_SEPARATOR: &str = "__";

/// Smallest SCRAM iteration count accepted; RFC 7677 §4 asks for at least 4096.
const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// The documentation of one key, captured from its doc comment.
#[derive(Debug)]
struct KeyDoc {
    /// The key as written in TOML.
    name: &'static str,
    /// Doc comment lines, each usually starting with a space.
    doc: &'static [&'static str],
    /// A value shown (commented out) in the example when the key has no default.
    example: Option<&'static str>,
}

/// The documentation of one `[section]`.
#[derive(Debug)]
struct SectionDoc {
    /// The section name as written in TOML.
    name: &'static str,
    /// Doc comment lines.
    doc: &'static [&'static str],
    /// The section's own keys.
    table: &'static TableDoc,
}

/// The documentation of one table: its plain keys, then its sections.
#[derive(Debug)]
struct TableDoc {
    /// Plain keys, in declaration order.
    keys: &'static [KeyDoc],
    /// Nested tables, in declaration order.
    sections: &'static [SectionDoc],
}

impl TableDoc {
    /// Looks a key up among the plain keys.
    fn key(&self, name: &str) -> Option<&KeyDoc> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// Looks a section up.
    fn section(&self, name: &str) -> Option<&SectionDoc> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Declares a configuration struct with its defaults and records every field's doc comment,
/// so the example file is rendered from the same declaration the server reads.
///
/// Each plain field is `pub name: Type = default;`, optionally `pub name: Type = default,
/// example "toml value";` for keys without a default. Nested tables go in a trailing
/// `sections { pub name: Type; }` block.
macro_rules! config_struct {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($serde:tt)*)])*
                pub $field:ident : $ty:ty = $default:expr $(, example $example:literal)? ;
            )*
            $(
                sections {
                    $(
                        $(#[doc = $sec_doc:literal])*
                        pub $section:ident : $sty:ident ;
                    )*
                }
            )?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                $(#[serde($($serde)*)])*
                pub $field: $ty,
            )*
            $($(
                $(#[doc = $sec_doc])*
                pub $section: $sty,
            )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                    $($($section: $sty::default(),)*)?
                }
            }
        }

        impl $name {
            /// Every key of this table with its documentation, in declaration order.
            const DOCS: TableDoc = TableDoc {
                keys: &[$(KeyDoc {
                    name: stringify!($field),
                    doc: &[$($doc),*],
                    example: config_struct!(@example $($example)?),
                },)*],
                sections: &[$($(SectionDoc {
                    name: stringify!($section),
                    doc: &[$($sec_doc),*],
                    table: &$sty::DOCS,
                },)*)?],
            };
        }
    };
    (@example) => { None };
    (@example $example:literal) => { Some($example) };
}

/// Who may create accounts over XMPP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may register an account in-band (XEP-0077).
    Open,
    /// Only an administrator creates accounts (`confab user add`).
    #[default]
    Closed,
}

config_struct! {
    /// The whole server configuration.
    pub struct Config {
        /// The XMPP domain this server hosts; account JIDs are user@domain.
        pub domain: String = String::from("localhost");
        /// Directory holding the database and the generated TLS certificate. A relative path
        /// is taken from the working directory of the process.
        pub data_dir: PathBuf = PathBuf::from("./confab-data");
        /// Who may create accounts: "closed" (only `confab user add`) or "open" (in-band
        /// registration, XEP-0077, for anyone who can reach the server).
        pub registration: Registration = Registration::Closed;
        sections {
            /// The client-to-server XMPP listener (RFC 6120).
            pub c2s: C2sConfig;
            /// TLS for the client listeners (STARTTLS and direct TLS).
            pub tls: TlsConfig;
            /// The HTTP listener: health, metrics and the APIs.
            pub http: HttpConfig;
            /// The compact protobuf listener (docs/protocol/confab-protobuf.md).
            pub pb: PbConfig;
            /// Authentication and login throttling.
            pub auth: AuthConfig;
            /// Storage of messages for users who are offline (XEP-0160).
            pub offline: OfflineConfig;
            /// The message archive every chat message is committed to (and XEP-0313 reads).
            pub archive: ArchiveConfig;
            /// The multi-user chat service (XEP-0045).
            pub muc: MucConfig;
            /// Logging.
            pub log: LogConfig;
        }
    }
}

config_struct! {
    /// The client-to-server listener and the limits each client connection lives under.
    pub struct C2sConfig {
        /// Address and port the XMPP client listener binds (IP:PORT).
        #[serde(with = "socket_addr")]
        pub listen: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 5222));
        /// Also serve clients over direct TLS (XEP-0368: TLS from the first byte, ALPN
        /// "xmpp-client") on direct_tls_listen, with the same sessions and limits as listen.
        pub direct_tls: bool = true;
        /// Address and port the direct TLS client listener binds (IP:PORT); 5223 by
        /// convention (advertise it with an _xmpps-client._tcp SRV record).
        #[serde(with = "socket_addr")]
        pub direct_tls_listen: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 5223));
        /// Most client connections open at once; further connections are refused so the
        /// process keeps descriptors and memory for the ones it has.
        pub max_connections: usize = 100_000;
        /// Seconds a connection may take to authenticate before it is closed, so idle
        /// unauthenticated sockets cannot pile up.
        pub pre_auth_timeout_secs: u64 = 30;
        /// Largest stanza accepted, in bytes; a bigger one ends the stream with a
        /// policy-violation error (RFC 6120 §4.9.3.14).
        pub max_stanza_bytes: usize = 262_144;
        /// Deepest element nesting accepted inside a stanza.
        pub max_depth: usize = 32;
        /// Sustained bytes per second read from one connection; a faster client is slowed
        /// down, not disconnected. Generous enough for a bot or gateway on one stream
        /// (about 1,000 typical messages a second), small enough that one connection cannot
        /// monopolise a core.
        pub read_rate_bytes_per_sec: u32 = 262_144;
        /// Bytes one connection may read in a burst before the sustained rate applies; values
        /// below the size of one socket read are raised to it.
        pub read_burst_bytes: u32 = 1_048_576;
        /// Stanzas queued for delivery to one session; a session whose queue fills up is
        /// disconnected as too slow. Memory is only used as stanzas queue, so a large value
        /// costs nothing for healthy sessions.
        pub mailbox_capacity: usize = 1024;
        /// Seconds without any traffic after which a connection is closed; 0 never closes
        /// one. Keeping an idle connection alive (whitespace pings) is the client's job.
        pub idle_timeout_secs: u64 = 0;
        /// Seconds a client's session stays bound after its connection is lost, when the
        /// client enabled resumption (XEP-0198 stream management): stanzas to it queue and a
        /// reconnecting client resumes without losing any. This is the 'max' announced to
        /// clients; 0 disables resumption.
        pub resume_timeout_secs: u64 = 300;
    }
}

config_struct! {
    /// TLS certificate for the client listeners. TLS 1.2 and 1.3 only, with ECDHE and AEAD
    /// ciphers. SIGHUP re-reads cert and key (or the self-signed pair) without a restart:
    /// new connections get the new certificate; if the files are unusable the old one stays.
    pub struct TlsConfig {
        /// PEM certificate chain. Set both cert and key, or neither: without them a
        /// self-signed certificate for the domain is generated in data_dir.
        pub cert: Option<PathBuf> = None, example "\"/etc/confab/tls/fullchain.pem\"";
        /// PEM private key matching cert.
        pub key: Option<PathBuf> = None, example "\"/etc/confab/tls/privkey.pem\"";
    }
}

config_struct! {
    /// The HTTP listener.
    pub struct HttpConfig {
        /// Address and port the HTTP listener binds (IP:PORT); serves /healthz and /metrics.
        #[serde(with = "socket_addr")]
        pub listen: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 5280));
        /// Serve XMPP over WebSocket (RFC 7395) at /xmpp-websocket, with XEP-0156 discovery
        /// at /.well-known/host-meta and /.well-known/host-meta.json.
        pub websocket: bool = true;
        /// Origins (scheme://host[:port]) whose web pages may open XMPP WebSockets. Empty:
        /// only pages from this server's own origin and from loopback addresses (local
        /// development); ["*"]: any origin. Clients that are not browsers send no Origin and
        /// are not restricted.
        pub websocket_origins: Vec<String> = Vec::new();
        /// Public base URL of this listener as clients reach it, advertised by XEP-0156
        /// discovery (https://... becomes wss://.../xmpp-websocket). Unset: ws:// and the
        /// Host header of each discovery request.
        pub public_url: Option<String> = None, example "\"https://chat.example.com\"";
    }
}

config_struct! {
    /// The protobuf client listener: the same XMPP sessions as c2s, framed as varint
    /// length-delimited protobuf messages (docs/protocol/confab-protobuf.md).
    pub struct PbConfig {
        /// Serve the protobuf binding at all.
        pub enabled: bool = false;
        /// Address and port the protobuf listener binds (IP:PORT); 5202 by convention.
        #[serde(with = "socket_addr")]
        pub listen: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 5202));
        /// Speak TLS from the first byte (direct TLS with the server certificate, as in
        /// [tls]); the binding has no STARTTLS.
        pub tls: bool = false;
    }
}

config_struct! {
    /// Authentication settings.
    pub struct AuthConfig {
        /// PBKDF2 iterations for newly stored SCRAM credentials (at least 4096, RFC 7677 §4).
        /// Existing accounts keep the count they were created with until their password changes.
        pub scram_iterations: u32 = 4096;
        /// Failed logins allowed per account and per IP address before each further attempt
        /// is delayed.
        pub throttle_free_failures: u32 = 5;
        /// Longest delay, in seconds, imposed on a throttled login attempt; the delay doubles
        /// with each failure up to this cap.
        pub throttle_max_delay_secs: u64 = 300;
        /// Offer PLAIN authentication on unencrypted connections from a loopback address
        /// (the password never leaves the machine); elsewhere PLAIN requires TLS.
        pub allow_plain_without_tls_on_loopback: bool = true;
    }
}

config_struct! {
    /// Offline message storage.
    pub struct OfflineConfig {
        /// Messages kept for one offline user; further messages are bounced with an error
        /// to their sender.
        pub max_messages_per_user: usize = 1000;
    }
}

config_struct! {
    /// The message archive.
    pub struct ArchiveConfig {
        /// Days a message is kept in the archive, counted from its arrival; older messages
        /// are purged hourly. This is also how long a client's resend is recognised as one.
        /// 0 keeps messages for ever.
        pub retention_days: u32 = 0;
        /// Seconds after sending during which a sender may retract a message (XEP-0424);
        /// later retractions are refused. 0 sets no limit. Group moderators (XEP-0425) are
        /// not bound by it.
        pub retract_window_secs: u64 = 86_400;
    }
}

config_struct! {
    /// The multi-user chat service (XEP-0045) on a domain of its own.
    pub struct MucConfig {
        /// Serve group chat rooms at all.
        pub enabled: bool = true;
        /// The service's domain, where rooms live (room@domain). Unset: "conference."
        /// followed by the server's domain. Clients reach it through this server, so it needs
        /// no DNS record of its own.
        pub domain: Option<String> = None, example "\"conference.example.com\"";
        /// Messages each room keeps in memory for new occupants (XEP-0045 §7.2.12); 0 keeps
        /// none.
        pub history_max: usize = 50;
        /// Rooms with more occupants than this stop broadcasting occupants' presence: a
        /// joiner gets only its own (status 110), and joins, leaves and presence changes are
        /// not sent to everyone (docs/protocol/confab-groups.md, "Large rooms"); 0 makes every
        /// room quiet.
        pub presence_broadcast_max: usize = 100;
    }
}

impl MucConfig {
    /// The service domain: the configured one, or "conference.<domain>".
    pub fn domain_for(&self, server_domain: &str) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| format!("conference.{server_domain}"))
    }
}

config_struct! {
    /// Logging.
    pub struct LogConfig {
        /// Log filter in tracing's EnvFilter syntax, for example "info" or
        /// "info,confab_c2s=debug". The RUST_LOG environment variable, when set, wins.
        pub level: String = String::from("info");
    }
}

/// Values from command-line flags; they override every other layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--domain`.
    pub domain: Option<String>,
    /// `--c2s`.
    pub c2s_listen: Option<SocketAddr>,
    /// `--http`.
    pub http_listen: Option<SocketAddr>,
    /// `--registration`.
    pub registration: Option<Registration>,
}

/// A configuration that could not be loaded; displays as one line starting with `config:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Shorthand for building an error from a message.
fn err(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

impl Config {
    /// Loads the configuration from defaults, the optional file, the process environment and
    /// the flags, then validates it.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars_os(), overrides)
    }

    /// Like [`Config::load`], with the environment passed in (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        // Where each key's value came from, so a bad value's error can point at it.
        let mut origins = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(format!("{}: {}", path.display(), io_reason(&e))))?;
            let origin = format!("in {}", path.display());
            table = parse_toml(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
            check_keys(&table, &Config::DOCS, "", &origin)?;
            record_origins(&table, "", &origin, &mut origins);
        }
        overlay_env(&mut table, env, &mut origins)?;

        let mut config: Config = serde_path_to_error::deserialize(table).map_err(
            |e: serde_path_to_error::Error<_>| {
                let path = e.path().to_string();
                let origin = origins
                    .get(&path)
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default();
                err(format!("{path}: {}{origin}", e.inner().message()))
            },
        )?;

        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line flags on top of the loaded values.
    fn apply(&mut self, overrides: &Overrides) {
        if let Some(dir) = &overrides.data_dir {
            self.data_dir.clone_from(dir);
        }
        if let Some(domain) = &overrides.domain {
            self.domain.clone_from(domain);
        }
        if let Some(addr) = overrides.c2s_listen {
            self.c2s.listen = addr;
        }
        if let Some(addr) = overrides.http_listen {
            self.http.listen = addr;
        }
        if let Some(registration) = overrides.registration {
            self.registration = registration;
        }
    }

    /// Checks what types alone cannot express and normalizes the domain (so `Example.COM`
    /// and `example.com` name the same accounts).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.domain = normalize_domain(&self.domain)?;

        let c2s = &self.c2s;
        for (key, value) in [
            ("c2s.max_connections", c2s.max_connections as u64),
            ("c2s.pre_auth_timeout_secs", c2s.pre_auth_timeout_secs),
            ("c2s.max_stanza_bytes", c2s.max_stanza_bytes as u64),
            ("c2s.max_depth", c2s.max_depth as u64),
            (
                "c2s.read_rate_bytes_per_sec",
                u64::from(c2s.read_rate_bytes_per_sec),
            ),
            ("c2s.read_burst_bytes", u64::from(c2s.read_burst_bytes)),
            ("c2s.mailbox_capacity", c2s.mailbox_capacity as u64),
        ] {
            if value == 0 {
                return Err(err(format!("{key}: must be greater than 0")));
            }
        }

        if self.auth.scram_iterations < MIN_SCRAM_ITERATIONS {
            return Err(err(format!(
                "auth.scram_iterations: {} is below the minimum of {MIN_SCRAM_ITERATIONS} (RFC 7677 §4)",
                self.auth.scram_iterations
            )));
        }

        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => {
                check_readable("tls.cert", cert)?;
                check_readable("tls.key", key)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(err(
                    "tls.cert is set but tls.key is not; set both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls.key is set but tls.cert is not; set both or neither",
                ));
            }
        }

        if let Some(domain) = &self.muc.domain {
            let normalized = normalize_domain(domain)
                .map_err(|_| err(format!("muc.domain: {domain:?} is not a valid XMPP domain")))?;
            if normalized == self.domain {
                return Err(err(
                    "muc.domain: must differ from the server's domain (rooms would shadow accounts)",
                ));
            }
            self.muc.domain = Some(normalized);
        }

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(err(format!(
                "log.level: invalid filter {:?}: {e}",
                self.log.level
            )));
        }
        Ok(())
    }
}

/// Validates an XMPP domain with the `jid` crate's rules (RFC 7622) and returns its
/// normalized form.
fn normalize_domain(domain: &str) -> Result<String, ConfigError> {
    let invalid = || err(format!("domain {domain:?} is not a valid XMPP domain"));
    // A domain may not contain '@' or '/', which BareJid would read as a localpart or a
    // resource; rejecting them first keeps "user@host" from passing as "host".
    if domain.is_empty() || domain.contains(['@', '/']) {
        return Err(invalid());
    }
    let jid = jid::BareJid::new(domain).map_err(|_| invalid())?;
    Ok(jid.domain().as_str().to_owned())
}

/// Checks that a configured file exists and can be opened for reading.
fn check_readable(key: &str, path: &Path) -> Result<(), ConfigError> {
    let fail = |reason: String| err(format!("{key} {}: {reason}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| fail(io_reason(&e)))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|e| fail(io_reason(&e)))?;
    Ok(())
}

/// An IO error's message without the trailing " (os error N)", which means nothing to an
/// operator.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Parses TOML text into a table; a syntax error becomes "line L, column C: message".
fn parse_toml(text: &str) -> Result<toml::Table, String> {
    text.parse::<toml::Table>().map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message,
        }
    })
}

/// Joins a parent key path and a key with a dot.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Rejects keys the configuration does not have, naming the key and where it was written.
fn check_keys(
    table: &toml::Table,
    docs: &TableDoc,
    prefix: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let path = join(prefix, key);
        if docs.key(key).is_some() {
            continue;
        }
        match (docs.section(key), value) {
            (Some(section), toml::Value::Table(inner)) => {
                check_keys(inner, section.table, &path, origin)?;
            }
            (Some(_), _) => {
                return Err(err(format!("{path}: must be a table ([{path}]) {origin}")));
            }
            (None, _) => return Err(err(format!("unknown key '{path}' {origin}"))),
        }
    }
    Ok(())
}

/// Notes the origin of every leaf value in a table.
fn record_origins(
    table: &toml::Table,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, String>,
) {
    for (key, value) in table {
        let path = join(prefix, key);
        match value {
            toml::Value::Table(inner) => record_origins(inner, &path, origin, origins),
            _ => {
                origins.insert(path, origin.to_owned());
            }
        }
    }
}

/// Overlays `CONFAB__SECTION__KEY` variables onto the table.
///
/// A value is taken as a TOML value (so numbers and booleans work) unless the key holds a
/// string or a path, in which case it is taken verbatim: `CONFAB__DOMAIN=1234` must not
/// become an integer, and nobody should have to quote a path in an environment variable.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (OsString, OsString)>,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let defaults = default_table();
    let mut vars: Vec<(String, String)> = Vec::new();
    for (name, value) in env {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let value = value.into_string().map_err(|_| {
            err(format!(
                "environment variable {name}: value is not valid UTF-8"
            ))
        })?;
        vars.push((rest.to_owned(), value));
    }
    // Sorted so that the first error reported does not depend on the environment's order.
    vars.sort();

    for (rest, raw) in vars {
        let var = format!("{ENV_PREFIX}{rest}");
        let parts: Vec<String> = rest
            .split(ENV_SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        let path = parts.join(".");
        let unknown = || {
            err(format!(
                "unknown key '{path}' in environment variable {var}"
            ))
        };
        let (leaf, sections) = parts.split_last().ok_or_else(unknown)?;

        let mut docs = &Config::DOCS;
        for section in sections {
            docs = docs.section(section).ok_or_else(unknown)?.table;
        }
        if docs.key(leaf).is_none() {
            return Err(match docs.section(leaf) {
                Some(_) => err(format!(
                    "environment variable {var}: {path} is a section; set {var}__<KEY> instead"
                )),
                None => unknown(),
            });
        }

        let default = lookup(&defaults, &parts);
        let value = match default {
            Some(toml::Value::String(_)) | None => toml::Value::String(raw),
            Some(_) => parse_env_value(&raw),
        };

        let mut target = &mut *table;
        for section in sections {
            let entry = target
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                // The file set a section name to a plain value; the file's error would be
                // reported already, so this only guards the overlay.
                *entry = toml::Value::Table(toml::Table::new());
            }
            let toml::Value::Table(inner) = entry else {
                unreachable!("replaced by a table just above")
            };
            target = inner;
        }
        target.insert(leaf.clone(), value);
        origins.insert(path, format!("from environment variable {var}"));
    }
    Ok(())
}

/// Parses an environment value as a TOML value, falling back to a string so the type error
/// comes from deserialization and names the key.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Follows a key path through nested tables.
fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        toml::Value::Table(inner) => lookup(inner, rest),
        _ => None,
    }
}

/// [`Config::default`] as a TOML table; keys without a default (`None`) are absent.
fn default_table() -> toml::Table {
    toml::Table::try_from(Config::default())
        .expect("the configuration types serialize to TOML without failing")
}

/// Renders `confab.example.toml`: every key with its doc comment and default value.
pub fn example() -> String {
    let defaults = default_table();
    let mut out = String::new();
    out.push_str(
        "# Confab configuration, generated by `confab config example` from the server's own\n\
         # definition: every key is shown with its default value.\n\
         #\n\
         # Any key can also be set from the environment as CONFAB__<SECTION>__<KEY>, for\n\
         # example CONFAB__C2S__LISTEN=0.0.0.0:5222 or CONFAB__DOMAIN=example.com, and the\n\
         # flags of `confab serve` (--data-dir, --domain, --c2s, --http, --registration)\n\
         # override both.\n",
    );
    render_table(&mut out, &Config::DOCS, &defaults, "");
    out
}

/// Appends one table's keys and then its sections to the example text.
fn render_table(out: &mut String, docs: &TableDoc, defaults: &toml::Table, prefix: &str) {
    for key in docs.keys {
        out.push('\n');
        render_doc(out, key.doc);
        match (defaults.get(key.name), key.example) {
            (Some(value), _) => {
                let _ = writeln!(out, "{} = {value}", key.name);
            }
            (None, Some(example)) => {
                let _ = writeln!(out, "# {} = {example}", key.name);
            }
            (None, None) => {
                let _ = writeln!(out, "# {} =", key.name);
            }
        }
    }
    for section in docs.sections {
        let path = join(prefix, section.name);
        let empty = toml::Table::new();
        let inner = match defaults.get(section.name) {
            Some(toml::Value::Table(inner)) => inner,
            _ => &empty,
        };
        out.push('\n');
        render_doc(out, section.doc);
        let _ = writeln!(out, "[{path}]");
        render_table(out, section.table, inner, &path);
    }
}

/// Appends doc comment lines as TOML comments.
fn render_doc(out: &mut String, doc: &[&str]) {
    for line in doc {
        let line = line.trim_end();
        if line.is_empty() {
            out.push_str("#\n");
        } else if line.starts_with(' ') {
            let _ = writeln!(out, "#{line}");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
}

/// Parses `IP:PORT`, shared by the config file, the environment and the `--c2s`/`--http` flags.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid socket address {text:?}: expected IP:PORT such as 127.0.0.1:5222")
    })
}

/// Serde glue that writes socket addresses as strings and reads them with a clear error.
mod socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the address as `IP:PORT`.
    pub fn serialize<S: Serializer>(addr: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }

    /// Reads `IP:PORT` from a string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_socket_addr(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads with only the given environment variables and flags.
    fn load(
        file: Option<&Path>,
        env: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect::<Vec<_>>();
        Config::load_from(file, env, overrides)
    }

    /// Writes a config file into a fresh temporary directory.
    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("confab.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    /// Loads and returns the error line.
    fn error(file: Option<&Path>, env: &[(&str, &str)], overrides: &Overrides) -> String {
        load(file, env, overrides)
            .expect_err("configuration should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let config = load(None, &[], &Overrides::default()).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(config.c2s.listen.to_string(), "127.0.0.1:5222");
        assert!(config.c2s.direct_tls);
        assert_eq!(config.c2s.direct_tls_listen.to_string(), "127.0.0.1:5223");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:5280");
        assert_eq!(config.registration, Registration::Closed);
    }

    #[test]
    fn layers_apply_in_order() {
        let (_dir, path) =
            file("domain = \"file.example\"\n[c2s]\nlisten = \"127.0.0.1:7000\"\nmax_depth = 8\n");
        let env = [
            ("CONFAB__DOMAIN", "env.example"),
            ("CONFAB__C2S__MAX_DEPTH", "16"),
            ("CONFAB__AUTH__ALLOW_PLAIN_WITHOUT_TLS_ON_LOOPBACK", "false"),
            ("CONFAB__TLS__CERT", "x"),
            ("OTHER__DOMAIN", "ignored"),
        ];
        // tls.cert without tls.key is invalid; drop that variable for the happy path.
        let config = load(Some(&path), &env[..3], &Overrides::default()).expect("loads");
        assert_eq!(config.domain, "env.example");
        assert_eq!(config.c2s.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(config.c2s.max_depth, 16);
        assert!(!config.auth.allow_plain_without_tls_on_loopback);

        let flags = Overrides {
            domain: Some("Flag.Example".into()),
            c2s_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 7001))),
            registration: Some(Registration::Open),
            data_dir: Some(PathBuf::from("/tmp/x")),
            http_listen: None,
        };
        let config = load(Some(&path), &env[..3], &flags).expect("loads");
        assert_eq!(config.domain, "flag.example", "domain is normalized");
        assert_eq!(config.c2s.listen.port(), 7001);
        assert_eq!(config.registration, Registration::Open);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));

        assert_eq!(
            error(Some(&path), &env, &Overrides::default()),
            "config: tls.cert is set but tls.key is not; set both or neither"
        );
    }

    #[test]
    fn env_strings_are_taken_verbatim() {
        let config = load(None, &[("CONFAB__DOMAIN", "1234")], &Overrides::default())
            .expect("a numeric domain is still a string");
        assert_eq!(config.domain, "1234");
    }

    #[test]
    fn unknown_keys_are_named() {
        let (_dir, path) = file("[c2s]\nlisen = \"127.0.0.1:1\"\n");
        assert_eq!(
            error(Some(&path), &[], &Overrides::default()),
            format!("config: unknown key 'c2s.lisen' in {}", path.display())
        );
        let (_dir, path) = file("colour = 1\n");
        assert_eq!(
            error(Some(&path), &[], &Overrides::default()),
            format!("config: unknown key 'colour' in {}", path.display())
        );
        assert_eq!(
            error(None, &[("CONFAB__C2S__LISEN", "1")], &Overrides::default()),
            "config: unknown key 'c2s.lisen' in environment variable CONFAB__C2S__LISEN"
        );
        assert_eq!(
            error(None, &[("CONFAB__NOPE__X", "1")], &Overrides::default()),
            "config: unknown key 'nope.x' in environment variable CONFAB__NOPE__X"
        );
        assert!(error(None, &[("CONFAB__C2S", "1")], &Overrides::default()).contains("section"));
    }

    #[test]
    fn bad_values_name_key_and_origin() {
        let (_dir, path) = file("[c2s]\nlisten = \"foo\"\n");
        assert_eq!(
            error(Some(&path), &[], &Overrides::default()),
            format!(
                "config: c2s.listen: invalid socket address \"foo\": expected IP:PORT such as \
                 127.0.0.1:5222 (in {})",
                path.display()
            )
        );
        let line = error(
            None,
            &[("CONFAB__C2S__MAX_CONNECTIONS", "lots")],
            &Overrides::default(),
        );
        assert!(line.starts_with("config: c2s.max_connections: "), "{line}");
        assert!(line.ends_with("(from environment variable CONFAB__C2S__MAX_CONNECTIONS)"));
        let line = error(
            None,
            &[("CONFAB__REGISTRATION", "opn")],
            &Overrides::default(),
        );
        assert!(
            line.starts_with("config: registration: unknown variant"),
            "{line}"
        );
        let line = error(
            None,
            &[("CONFAB__C2S__MAX_DEPTH", "0")],
            &Overrides::default(),
        );
        assert_eq!(line, "config: c2s.max_depth: must be greater than 0");
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let (_dir, path) = file("domain = \"x\"\n[c2s\n");
        let line = error(Some(&path), &[], &Overrides::default());
        assert!(
            line.starts_with(&format!("config: {}: line 2, column", path.display())),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn missing_file_is_reported() {
        let line = error(
            Some(Path::new("/nonexistent/confab.toml")),
            &[],
            &Overrides::default(),
        );
        assert_eq!(
            line,
            "config: /nonexistent/confab.toml: No such file or directory"
        );
    }

    #[test]
    fn domains_are_validated() {
        for bad in ["a b", "", "user@host", "host/res", "a..b"] {
            let flags = Overrides {
                domain: Some(bad.into()),
                ..Overrides::default()
            };
            assert_eq!(
                error(None, &[], &flags),
                format!("config: domain {bad:?} is not a valid XMPP domain")
            );
        }
    }

    #[test]
    fn tls_files_must_be_readable() {
        let (_dir, path) = file("x");
        let flags = Overrides::default();
        let env = [
            ("CONFAB__TLS__CERT", "/nonexistent/cert.pem"),
            ("CONFAB__TLS__KEY", path.to_str().expect("utf-8 temp path")),
        ];
        assert_eq!(
            error(None, &env, &flags),
            "config: tls.cert /nonexistent/cert.pem: No such file or directory"
        );
        let env = [
            ("CONFAB__TLS__CERT", path.to_str().expect("utf-8 temp path")),
            ("CONFAB__TLS__KEY", path.to_str().expect("utf-8 temp path")),
        ];
        let config = load(None, &env, &flags).expect("readable files pass");
        assert_eq!(config.tls.cert.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn scram_iterations_have_a_floor() {
        let line = error(
            None,
            &[("CONFAB__AUTH__SCRAM_ITERATIONS", "10")],
            &Overrides::default(),
        );
        assert!(
            line.starts_with("config: auth.scram_iterations: 10 is below"),
            "{line}"
        );
    }

    #[test]
    fn example_round_trips_to_defaults() {
        let (_dir, path) = file(&example());
        let config = load(Some(&path), &[], &Overrides::default()).expect("example loads");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn example_mentions_every_key() {
        let text = example();
        // Every key with a default, found by serializing the struct itself rather than
        // trusting the recorded docs.
        fn walk(table: &toml::Table, section: &str, text: &str) {
            let body = if section.is_empty() {
                text.split("\n[").next().unwrap_or_default().to_owned()
            } else {
                let header = format!("[{section}]\n");
                let start = text
                    .find(&header)
                    .unwrap_or_else(|| panic!("{header} missing"));
                let rest = &text[start + header.len()..];
                rest.split("\n[").next().unwrap_or_default().to_owned()
            };
            for (key, value) in table {
                match value {
                    toml::Value::Table(inner) => walk(inner, &join(section, key), text),
                    _ => assert!(
                        body.contains(&format!("\n{key} = ")),
                        "key {} missing from the example",
                        join(section, key)
                    ),
                }
            }
        }
        walk(&default_table(), "", &text);
        // Keys without a default appear commented out with an example value.
        assert!(text.contains("\n# cert = \"/etc/confab/tls/fullchain.pem\"\n"));
        assert!(text.contains("\n# key = \"/etc/confab/tls/privkey.pem\"\n"));
    }

    #[test]
    fn keys_without_default_have_an_example() {
        fn walk(docs: &TableDoc, defaults: &toml::Table) {
            for key in docs.keys {
                assert!(
                    defaults.contains_key(key.name) || key.example.is_some(),
                    "{} needs `example`",
                    key.name
                );
                assert!(!key.doc.is_empty(), "{} needs a doc comment", key.name);
            }
            for section in docs.sections {
                let inner = match defaults.get(section.name) {
                    Some(toml::Value::Table(t)) => t.clone(),
                    _ => toml::Table::new(),
                };
                walk(section.table, &inner);
            }
        }
        walk(&Config::DOCS, &default_table());
    }
}
