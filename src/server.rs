//! `serve`: builds the application from configuration, binds its listener (port 0 works in
//! tests), and runs the portal and the relay hub in one process, HTTPS built in.

use crate::config::PortalConfig;
use crate::mail::sink::Mailbox;
use crate::mail::Mailer;
use crate::portal::{self, AppState, ClientAddr};
use crate::relay::server::RelayState;
use crate::relay::Hub;
use crate::store::{self, DataKey, Db};
use crate::Clock;
use anyhow::Context;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

pub struct Application {
    listener: PortalListener,
    router: axum::Router,
    pub addr: SocketAddr,
    pub db: Db,
    pub hub: Arc<Hub>,
}

/// Options that only code (the demo, tests) can set, never configuration.
#[derive(Default, Clone)]
pub struct Extras {
    pub demo_mailbox: Option<Mailbox>,
    /// The clock the portal reads (tests move it to reach expiries).
    pub clock: Clock,
    /// The file the configuration came from: its `[password_policy]` is reloaded as it changes.
    pub config_file: Option<std::path::PathBuf>,
}

/// Checks a configuration as `serve` would at start, without listening, connecting or writing:
/// its rules, the data key, the TLS certificate and key, the mail settings, the password rules
/// and the files they name. What it would warn of comes back as notes.
pub fn check(cfg: &PortalConfig) -> anyhow::Result<Vec<String>> {
    cfg.validate()?;
    DataKey::from_config(&cfg.secrets)?;
    if let (Some(cert), Some(key)) = (&cfg.server.tls_cert_file, &cfg.server.tls_key_file) {
        crate::tls::server_config(cert, key)?;
    }
    Mailer::new(&cfg.mail)?;
    crate::usecase::policy::PasswordRules::new(&cfg.password_policy)?;
    crate::config::read_secret(&cfg.server.metrics_token, &cfg.server.metrics_token_file, "server.metrics_token")?;
    let url = url::Url::parse(&cfg.server.public_url).context("server.public_url")?;
    let mut notes = Vec::new();
    if !crate::portal::passkey::usable(cfg) {
        notes.push(format!("note: server.public_url ({url}) has no host name, so no passkeys will be offered"));
    }
    if cfg.reminders.expiry_days.is_empty() && cfg.directories.values().all(|d| d.expiry_reminder_days.is_none()) {
        notes.push("note: no expiry reminders will be sent (reminders.expiry_days is empty)".into());
    }
    Ok(notes)
}

impl Application {
    pub async fn build(cfg: PortalConfig, extras: Extras) -> anyhow::Result<Self> {
        cfg.validate()?;
        let data_key = DataKey::from_config(&cfg.secrets)?;
        let db =
            store::connect_with(&cfg.database.url, cfg.database.max_connections, cfg.database.durable_commits).await?;
        let clock = extras.clock.clone();
        let hub = Arc::new(Hub::new(db.clone(), data_key.clone(), cfg.relay.clone(), clock.clone()));
        let mailer = Mailer::new(&cfg.mail)?;

        let session_store = store::sessions::Sessions::of(&db).await.context("session table")?;
        let guard =
            Arc::new(crate::portal::Guard::new(&cfg.anti_automation, data_key.derive("passback/proof-of-work/v1")));
        tokio::spawn({
            use tower_sessions::ExpiredDeletion;
            session_store.clone().continuously_delete_expired(Duration::from_secs(300))
        });
        tokio::spawn({
            let guard = guard.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    guard.tidy();
                }
            }
        });
        tokio::spawn(crate::relay::revoke::watch(db.clone(), hub.clone()));
        tokio::spawn(crate::relay::hub::instances::run(hub.clone()));
        tokio::spawn(store::housekeeping::run(db.clone(), clock.clone()));
        let secure = cfg.serves_tls() || cfg.server.behind_tls_proxy;
        let sessions = SessionManagerLayer::new(session_store)
            .with_name(if secure { "__Host-passback" } else { "passback" })
            .with_secure(secure)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::minutes(20)));

        let code_key = data_key.derive(crate::store::CODE_KEY_PURPOSE);
        let rules = Arc::new(crate::usecase::policy::PasswordRules::new(&cfg.password_policy)?);
        if let Some(file) = extras.config_file.clone() {
            tokio::spawn(crate::usecase::policy::watch(rules.clone(), file, crate::usecase::policy::WATCH_EVERY));
        }
        let relay_state = RelayState {
            hub: hub.clone(),
            db: db.clone(),
            data_key: data_key.clone(),
            clock: clock.clone(),
            mailer: mailer.clone(),
            helpdesk_contact: cfg.server.helpdesk_contact.clone(),
        };
        let host = crate::usecase::Host {
            db: db.clone(),
            hub: hub.clone(),
            cfg: Arc::new(cfg.clone()),
            mailer,
            clock,
            code_key,
            secrets: data_key.clone(),
            live: Arc::default(),
            rules: rules.clone(),
        };
        let app_state = AppState::new(crate::portal::Shared {
            host,
            guard,
            population: Arc::default(),
            metrics_token: crate::config::read_secret(
                &cfg.server.metrics_token,
                &cfg.server.metrics_token_file,
                "server.metrics_token",
            )?
            .map(|t| {
                use sha2::Digest;
                sha2::Sha256::digest(t.expose_secret().as_bytes()).into()
            }),
            demo_mailbox: extras.demo_mailbox,
        });
        tokio::spawn(crate::portal::guard::watch_failures(app_state.clone()));
        tokio::spawn(crate::portal::reminders::run(app_state.clone()));
        let router = portal::router(app_state)
            .layer(sessions)
            // Room for a request to tell its session's save that a transaction of its own wrote
            // the session already (see `store::sessions::stage`).
            .layer(axum::middleware::from_fn(|req, next: axum::middleware::Next| {
                store::sessions::request_scope(next.run(req))
            }))
            .merge(crate::relay::server::router(relay_state))
            // A failed request is logged where it failed, with its reason (and a support code on
            // pages); the status alone adds nothing, and a 503 the health check answers while
            // writeback is down is an answer, not an error to log at every poll.
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            )
            .layer(axum::middleware::from_fn(crate::portal::access::log));

        let tcp =
            TcpListener::bind(cfg.server.listen).await.with_context(|| format!("binding {}", cfg.server.listen))?;
        let addr = tcp.local_addr()?;
        let listener = match (&cfg.server.tls_cert_file, &cfg.server.tls_key_file) {
            (Some(cert), Some(key)) => {
                let acceptor = TlsAcceptor::from(crate::tls::server_config(cert, key)?);
                PortalListener::tls(tcp, acceptor)
            }
            _ => PortalListener::Plain(tcp),
        };
        crate::portal::passkey::warn_if_unusable(&cfg);
        tracing::info!(%addr, tls = cfg.serves_tls(), "passback portal listening");
        Ok(Self { listener, router, addr, db, hub })
    }

    /// Serves until `shutdown` completes; then closes every agent connection (so agents reconnect,
    /// to another instance or to this one restarted), stops accepting, and lets requests finish.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let svc = self.router.into_make_service_with_connect_info::<ClientAddr>();
        let hub = self.hub.clone();
        axum::serve(self.listener, svc)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing agent connections");
                hub.close_all();
            })
            .await
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
        .await
    }
}

/// Plain TCP (development, or behind a TLS-terminating proxy) or TLS.
pub enum PortalListener {
    Plain(TcpListener),
    Tls { addr: SocketAddr, rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> },
}

impl PortalListener {
    /// Handshakes run in their own tasks, so a slow or silent client cannot hold up others.
    fn tls(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        let addr = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                // Stops (and frees the port) once the listener is dropped.
                let accepted = tokio::select! {
                    a = tcp.accept() => a,
                    _ = tx.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                no_delay(&stream);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        PortalListener::Tls { addr, rx }
    }
}

/// Each write goes out at once. With Nagle's algorithm on, a small write waits for the peer's
/// acknowledgement of the one before, which the peer may hold back for up to 40 ms: the agent's
/// connection carries many requests at a time, and stalled on it.
pub(crate) fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not turn off Nagle's algorithm");
    }
}

pub enum PortalIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Listener for PortalListener {
    type Io = PortalIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            PortalListener::Plain(l) => loop {
                match TcpListener::accept(l).await {
                    Ok((s, a)) => {
                        no_delay(&s);
                        return (PortalIo::Plain(s), a);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
            PortalListener::Tls { rx, .. } => match rx.recv().await {
                Some((s, a)) => (PortalIo::Tls(Box::new(s)), a),
                // The accept task never ends while the listener lives.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match self {
            PortalListener::Plain(l) => l.local_addr(),
            PortalListener::Tls { addr, .. } => Ok(*addr),
        }
    }
}

impl Connected<IncomingStream<'_, PortalListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, PortalListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

macro_rules! delegate_io {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            PortalIo::Plain($s) => {
                let $s = std::pin::Pin::new($s);
                $e
            }
            PortalIo::Tls($s) => {
                let $s = std::pin::Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl tokio::io::AsyncRead for PortalIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate_io!(self, s => s.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for PortalIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate_io!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate_io!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate_io!(self, s => s.poll_shutdown(cx))
    }
}

/// Creates a one-time enrollment token (stored hashed) for an agent that will serve exactly
/// `directories`, and returns it.
pub async fn create_enrollment_token(
    db: &Db,
    name: &str,
    directories: &[String],
    ttl_mins: u64,
    now: i64,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    anyhow::ensure!(!directories.is_empty(), "name at least one directory the agent will serve");
    for d in directories {
        crate::domain::DirectoryId::parse(d).map_err(|e| anyhow::anyhow!("directory {d:?}: {e}"))?;
    }
    let token = store::random_token();
    let expires = now + i64::try_from(ttl_mins * 60)?;
    let e = store::agents::Enrollment { name: name.into(), directories: store::JsonText(directories.to_vec()) };
    store::agents::create_enrollment_token(db, &store::token_hash(&token), &e, now, expires).await?;
    Ok(token)
}
