//! `confab serve`: the only place where adapters are wired together.

use crate::config::{Config, Registration};
use anyhow::Context;
use async_trait::async_trait;
use confab_auth::{LoginThrottle, ThrottleConfig};
use confab_c2s::{C2sConfig, Framing, PreAuthIq, Resumption};
use confab_codec::Limits;
use confab_core::metrics::Metrics;
use confab_core::store::{Store, StoreError, TokenInfo};
use confab_core::{BareJid, Element, Stanza, StanzaError, ns};
use confab_log::{LogConfig, LogModule, MamModule};
use confab_modules::{ModuleOptions, modules_with_log};
use confab_net::{C2sListener, ListenerConfig};
use confab_router::Router;
use confab_sessions::SessionManager;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let domain = BareJid::new(&config.domain)
        .with_context(|| format!("invalid domain {:?}", config.domain))?;
    let quota = u32::try_from(config.offline.max_messages_per_user).unwrap_or(u32::MAX);
    let store = confab_store::SqliteStore::open(&config.data_dir)
        .await?
        .with_offline_quota(quota);
    // The conference service's own port on the same database (not part of `Store`).
    let room_store: Arc<dyn confab_core::store::RoomStore> = Arc::new(store.clone());
    let room_archive: Arc<dyn confab_core::archive::ArchiveStore> = Arc::new(store.clone());
    let store: Arc<dyn Store> = Arc::new(store);
    // IM tokens live as long as their session, and no session survives a restart.
    let revoked = store
        .revoke_all()
        .await
        .context("revoking IM tokens of the previous run")?;
    if revoked > 0 {
        tracing::info!(revoked, "revoked IM tokens left by the previous run");
    }
    // One certificate for every TLS listener, so a SIGHUP reload reaches all of them.
    let certificate = confab_net::tls::ReloadableCert::load(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.data_dir,
        &config.domain,
    )
    .context("tls")?;
    let tls = confab_net::tls::starttls_config(certificate.clone()).context("tls")?;
    let direct_tls = confab_net::tls::direct_tls_config(certificate.clone()).context("tls")?;
    // Installed before the listeners are announced: until then SIGHUP would kill the process.
    crate::tls_reload::spawn(certificate);

    let c2s_socket = bind(config.c2s.listen, "c2s").await?;
    let direct_tls_socket = match config.c2s.direct_tls {
        true => Some(bind(config.c2s.direct_tls_listen, "c2s direct TLS").await?),
        false => None,
    };
    let http_socket = bind(config.http.listen, "http").await?;
    let pb_socket = match config.pb.enabled {
        true => Some(bind(config.pb.listen, "pb").await?),
        false => None,
    };

    let metrics = Arc::new(Metrics::new());
    let registration_open = config.registration == Registration::Open;
    let options = ModuleOptions {
        registration_open,
        scram_iterations: config.auth.scram_iterations,
    };
    // The message log commits chat messages at `on_routed`; MAM answers queries over what it
    // committed (an IQ handler only, so its place in the hook order does not matter).
    let log = Arc::new(LogModule::new(store.clone(), log_config(&config.archive)));
    let shared_log = log.shared_log();
    let mut modules = modules_with_log(&options, vec![log, Arc::new(MamModule::new())]);
    let mut groups = None;
    if config.muc.enabled {
        // XEP-0045 on its own domain: the router hands it every stanza for that domain.
        let muc = confab_muc::Muc::load(
            &config.muc.domain_for(&config.domain),
            config.muc.history_max,
            room_store,
        )
        .await
        .context("muc")?
        .with_presence_broadcast_max(config.muc.presence_broadcast_max)
        // Group messages take the durable path through the same writer as one-to-one chat.
        .with_archive(confab_muc::RoomArchive {
            log: shared_log,
            store: room_archive,
        })
        .await
        .context("muc archive")?;
        let muc = Arc::new(muc);
        groups = Some(muc.clone());
        modules.push(muc);
    }
    let router = Arc::new(Router::new(
        domain.clone(),
        Arc::new(SessionManager::new()),
        store.clone(),
        metrics.clone(),
        modules,
    ));
    let throttle = Arc::new(LoginThrottle::new(ThrottleConfig {
        free_failures: config.auth.throttle_free_failures,
        max_delay: Duration::from_secs(config.auth.throttle_max_delay_secs),
        ..ThrottleConfig::default()
    }));
    let c2s = Arc::new(C2sConfig {
        domain,
        limits: Limits {
            max_stanza_bytes: config.c2s.max_stanza_bytes,
            max_depth: config.c2s.max_depth,
            ..Limits::default()
        },
        tls_available: true,
        plain_on_loopback: config.auth.allow_plain_without_tls_on_loopback,
        mailbox_capacity: config.c2s.mailbox_capacity,
        registration_open,
        pre_auth_iq: Some(Arc::new(InBandRegistration {
            open: registration_open,
            iterations: config.auth.scram_iterations,
        })),
        throttle,
        resumption: Arc::new(Resumption::new(Duration::from_secs(
            config.c2s.resume_timeout_secs,
        ))),
    });
    let listener = C2sListener::new(
        c2s_socket,
        router.clone(),
        c2s.clone(),
        listener_config(&config, Some(tls.clone()), false, Framing::XmlStream),
    );
    // XEP-0368 direct TLS: the same sessions (one `C2sConfig`, so resumption and login
    // throttling span both ports), TLS from the first byte with ALPN `xmpp-client`.
    let direct_tls_listener = direct_tls_socket.map(|socket| {
        C2sListener::new(
            socket,
            router.clone(),
            c2s.clone(),
            listener_config(&config, Some(direct_tls), true, Framing::XmlStream),
        )
    });
    // The protobuf binding: the same sessions with another framing, converted at the edge
    // (docs/protocol/confab-protobuf.md). It has no STARTTLS; `pb.tls` makes it direct TLS.
    let pb_listener = pb_socket.map(|socket| {
        C2sListener::new(
            socket,
            router.clone(),
            c2s.clone(),
            listener_config(
                &config,
                config.pb.tls.then(|| tls.clone()),
                config.pb.tls,
                Framing::Protobuf,
            ),
        )
    });

    // Tests and scripts read these lines to learn ephemeral ports.
    println!(
        "confab: domain {}, data in {}",
        config.domain,
        config.data_dir.display()
    );
    println!("confab: c2s listening on {}", listener.local_addr()?);
    if let Some(direct) = &direct_tls_listener {
        println!(
            "confab: c2s direct TLS listening on {}",
            direct.local_addr()?
        );
    }
    println!("confab: http listening on {}", http_socket.local_addr()?);
    if let Some(pb) = &pb_listener {
        println!("confab: pb listening on {}", pb.local_addr()?);
    }

    let shutdown = CancellationToken::new();
    let mut http_state = confab_http::HttpState::new(metrics.clone());
    http_state.api = Some(confab_http::api::ApiState {
        store: store.clone(),
        tokens: Arc::new(StoreTokens(store.clone())),
        actions: Some(Arc::new(
            crate::client_actions::RouterActions::new(router.clone()).with_groups(groups),
        )),
    });
    http_state.websocket = config
        .http
        .websocket
        .then(|| websocket_state(&config, router.clone(), c2s.clone(), shutdown.clone()));
    let http = tokio::spawn(confab_http::serve(
        http_socket,
        http_state,
        shutdown.clone().cancelled_owned(),
    ));
    let c2s_task = tokio::spawn(listener.run(shutdown.clone()));
    let direct_tls_task = direct_tls_listener.map(|l| tokio::spawn(l.run(shutdown.clone())));
    let pb_task = pb_listener.map(|pb| tokio::spawn(pb.run(shutdown.clone())));

    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = c2s_task.await;
    if let Some(direct_tls_task) = direct_tls_task {
        let _ = direct_tls_task.await;
    }
    if let Some(pb_task) = pb_task {
        let _ = pb_task.await;
    }
    let _ = http.await;
    Ok(())
}

/// A client listener's settings: every one shares the `[c2s]` limits and timeouts; they
/// differ in TLS and framing only.
fn listener_config(
    config: &Config,
    tls: Option<Arc<confab_net::tls::ServerConfig>>,
    direct_tls: bool,
    framing: Framing,
) -> ListenerConfig {
    ListenerConfig {
        max_connections: config.c2s.max_connections,
        pre_auth_timeout: Duration::from_secs(config.c2s.pre_auth_timeout_secs),
        idle_timeout: (config.c2s.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(config.c2s.idle_timeout_secs)),
        read_rate: config.c2s.read_rate_bytes_per_sec,
        read_burst: config.c2s.read_burst_bytes,
        tls,
        direct_tls,
        framing,
    }
}

/// XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP listener: sessions with
/// the `[c2s]` limits and timeouts, capped at `[c2s] max_connections` like the TCP listener
/// (a separate count), ending with `system-shutdown` at `shutdown`. The carrier's TLS, if
/// any, is a proxy's: the stream is not taken as secure.
fn websocket_state(
    config: &Config,
    router: Arc<Router>,
    c2s: Arc<C2sConfig>,
    shutdown: CancellationToken,
) -> confab_http::websocket::WebSocketState {
    let limits = |framing| {
        Arc::new(confab_net::ConnectionLimits::new(&listener_config(
            config, None, false, framing,
        )))
    };
    let xml = limits(Framing::XmlWebSocket);
    let protobuf = limits(Framing::Protobuf);
    let run: confab_http::websocket::SessionRunner = Arc::new(move |transport, peer, framing| {
        let limits = match framing {
            Framing::Protobuf => protobuf.clone(),
            _ => xml.clone(),
        };
        Box::pin(confab_net::serve_messages(
            transport,
            false,
            peer,
            router.clone(),
            c2s.clone(),
            limits,
            shutdown.clone(),
        ))
    });
    let mut state = confab_http::websocket::WebSocketState::new(
        run,
        config.c2s.max_connections,
        config.c2s.max_stanza_bytes,
    );
    state.origins = config.http.websocket_origins.clone().into();
    state.public_url = config.http.public_url.clone();
    state
}

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    confab_net::bind(address).with_context(|| format!("cannot listen on {address} ({what})"))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// XEP-0077 registration before authentication, served by the registration feature.
struct InBandRegistration {
    open: bool,
    iterations: u32,
}

#[async_trait]
impl PreAuthIq for InBandRegistration {
    fn handles(&self, namespace: &str) -> bool {
        namespace == ns::REGISTER
    }

    async fn handle(&self, router: &Router, iq: &Stanza) -> Result<Option<Element>, StanzaError> {
        let Some(query) = iq.payload() else {
            return Err(StanzaError::new(
                confab_core::StanzaErrorCondition::BadRequest,
            ));
        };
        confab_modules::register::register_account(
            router.store.as_ref(),
            self.open,
            self.iterations,
            query,
        )
        .await
    }
}

/// The message log's settings from the `[archive]` section: `retention_days = 0` keeps
/// messages for ever, otherwise the log's purge task deletes older ones.
fn log_config(archive: &crate::config::ArchiveConfig) -> LogConfig {
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    LogConfig {
        retention: (archive.retention_days > 0).then(|| DAY * archive.retention_days),
        retract_window: (archive.retract_window_secs > 0)
            .then(|| Duration::from_secs(archive.retract_window_secs)),
        ..LogConfig::default()
    }
}

/// IM tokens as the HTTP API checks them: the token module's verification over the store.
struct StoreTokens(Arc<dyn Store>);

#[async_trait]
impl confab_http::api::TokenVerifier for StoreTokens {
    async fn verify(&self, token: &str) -> Result<Option<TokenInfo>, StoreError> {
        confab_modules::token::verify_token(self.0.as_ref(), token).await
    }
}

#[cfg(test)]
mod archive_wiring_tests {
    use super::*;
    use crate::config::ArchiveConfig;

    #[test]
    fn retention_days_become_the_log_retention() {
        let forever = log_config(&ArchiveConfig::default());
        assert_eq!(forever.retention, None);
        let month = log_config(&ArchiveConfig {
            retention_days: 30,
            ..ArchiveConfig::default()
        });
        assert_eq!(month.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(month.max_batch, LogConfig::default().max_batch);
        assert_eq!(forever.retract_window, Some(Duration::from_secs(86_400)));
        let unlimited = log_config(&ArchiveConfig {
            retract_window_secs: 0,
            ..ArchiveConfig::default()
        });
        assert_eq!(unlimited.retract_window, None);
    }
}
