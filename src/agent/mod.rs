//! The agent: runs inside the company network, connects *out* to the portal's relay, serves sealed
//! requests against its directories, and keeps the portal's list of people current.
//! It never touches the portal's database.

pub mod doctor;
pub mod enroll;
mod handler;
pub mod journal;
pub mod state;

use crate::config::AgentConfig;
use crate::directory::Directory;
use crate::domain::DirectoryId;
use crate::envelope::{self, Direction, FrameKind, Report};
use crate::relay::protocol::{self, AgentStatus, DirectoryStatus, SyncChunk, Wire};
use crate::Clock;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use handler::ReplayCache;
use rand::Rng;
use state::{AgentState, LoadedKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// People per sync frame.
const SYNC_CHUNK: usize = 200;

pub struct Agent {
    cfg: AgentConfig,
    agent_id: String,
    portal_url: String,
    directories: HashMap<DirectoryId, Arc<Directory>>,
    keys: RwLock<Arc<Vec<LoadedKey>>>,
    replay: ReplayCache,
    /// Message ids taken, on disk: a copy sent again after a restart is not written twice.
    journal: Arc<journal::Journal>,
    /// Resets, unlocks and forced changes per directory and minute.
    budget: handler::Budget,
    /// Content keys already unwrapped (RSA) this epoch, by the hash of their wrapped form.
    unwrapped: handler::UnwrappedKeys,
    clock: Clock,
    last_sync: std::sync::Mutex<HashMap<DirectoryId, i64>>,
    /// Where each directory's last sync got to.
    sync_marks: std::sync::Mutex<HashMap<DirectoryId, crate::domain::SyncMark>>,
    /// Serialises key rotations started by this process.
    rotating: Mutex<()>,
    /// When the state file was last read, to notice `passback agent rotate-keys`.
    state_mtime: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl Agent {
    pub fn new(cfg: AgentConfig) -> anyhow::Result<Arc<Self>> {
        cfg.validate()?;
        let state = AgentState::load(&cfg.state_file)?;
        let clock = Clock::default();
        let keys = state.usable_keys(clock.now(), grace_secs(&cfg))?;
        let mut directories = HashMap::new();
        for d in &cfg.directories {
            let dir = Directory::new(d).with_context(|| format!("directory {}", d.id))?;
            directories.insert(dir.id().clone(), Arc::new(dir));
        }
        let budget = handler::Budget::new(cfg.resets_per_minute);
        let journal = Arc::new(journal::Journal::open(journal::Journal::path_for(&cfg.state_file), clock.now())?);
        Ok(Arc::new(Self {
            agent_id: state.agent_id.clone(),
            portal_url: state.portal_url.clone(),
            cfg,
            directories,
            keys: RwLock::new(Arc::new(keys)),
            replay: ReplayCache::default(),
            journal,
            budget,
            unwrapped: handler::UnwrappedKeys::default(),
            clock,
            last_sync: std::sync::Mutex::default(),
            sync_marks: std::sync::Mutex::default(),
            rotating: Mutex::new(()),
            state_mtime: std::sync::Mutex::new(None),
        }))
    }

    pub fn keys(&self) -> Arc<Vec<LoadedKey>> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Reloads the keys if the state file changed since it was last read (another process, such
    /// as `passback agent rotate-keys`, may have rotated them), and drops versions past their grace.
    fn reload_keys_if_changed(&self) {
        let mtime = std::fs::metadata(&self.cfg.state_file).and_then(|m| m.modified()).ok();
        let changed =
            self.state_mtime.lock().map(|mut seen| std::mem::replace(&mut *seen, mtime) != mtime).unwrap_or(true);
        let now = self.clock.now();
        if changed || self.keys().iter().any(|k| !k.usable_at(now)) {
            self.reload_keys();
        }
    }

    fn reload_keys(&self) {
        let loaded =
            AgentState::load(&self.cfg.state_file).and_then(|s| s.usable_keys(self.clock.now(), grace_secs(&self.cfg)));
        match loaded {
            Ok(k) => {
                if let Ok(mut slot) = self.keys.write() {
                    *slot = Arc::new(k);
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "reloading keys failed"),
        }
    }

    /// Rotates the keys when the newest is older than the configured age.
    async fn rotate_if_due(&self) {
        let _guard = self.rotating.lock().await;
        let now = self.clock.now();
        let max_age = i64::try_from(self.cfg.key_rotation_days * 86_400).unwrap_or(i64::MAX);
        let newest_at = self.keys().first().map(|k| k.created_at).unwrap_or(0);
        if now - newest_at < max_age {
            return;
        }
        let result = async {
            let mut state = AgentState::load(&self.cfg.state_file)?;
            if state.keys.first().is_some_and(|k| now - k.created_at < max_age) {
                return Ok(None); // someone else rotated already
            }
            enroll::rotate(&mut state, &self.cfg.state_file, self.cfg.portal_ca_file.as_deref(), now).await.map(Some)
        }
        .await;
        match result {
            Ok(Some(v)) => tracing::info!(version = v, "keys rotated (age limit reached)"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %format!("{e:#}"), "automatic key rotation failed; will retry"),
        }
        self.reload_keys();
    }

    /// What the agent reports in its hello and heartbeats: version, keys, and each directory.
    pub async fn status(&self) -> AgentStatus {
        let mut dirs = Vec::new();
        for (id, dir) in &self.directories {
            let check = dir.check().await;
            let last_sync = self.last_sync.lock().ok().and_then(|m| m.get(id).copied());
            let alert = self.budget.alert(id);
            dirs.push(DirectoryStatus {
                id: id.clone(),
                reachable: check.is_ok(),
                last_sync,
                error: check.err(),
                alert,
            });
        }
        dirs.sort_by(|a, b| a.id.cmp(&b.id));
        let keys = self.keys();
        let newest = keys.first();
        AgentStatus {
            version: VERSION.into(),
            key_version: newest.map(|k| k.version).unwrap_or(0),
            key_created_at: newest.map(|k| k.created_at).unwrap_or(0),
            key_rotation_days: Some(self.cfg.key_rotation_days),
            directories: dirs,
        }
    }

    /// Seals a report for the portal with the newest key, under a fresh frame id: the portal
    /// trusts nothing an agent says unless it is sealed so.
    fn report<T: serde::Serialize>(&self, kind: FrameKind, body: &T) -> Option<Wire> {
        let keys = self.keys();
        let key = keys.first()?;
        let id = crate::domain::MsgId::random();
        let report = Report { issued_at: self.clock.now(), body };
        match envelope::seal(
            &self.agent_id,
            key.version,
            &key.package,
            Direction::ToPortal,
            kind,
            &id,
            &report,
            &mut rand::rngs::OsRng,
        ) {
            Ok(frame) => Some(Wire::sealed(&frame)),
            Err(e) => {
                tracing::error!(error = %e, ?kind, "sealing a report failed");
                None
            }
        }
    }

    async fn sync_all(&self, out: &mpsc::Sender<Wire>, full: bool) {
        for (id, dir) in &self.directories {
            let since = if full { None } else { self.sync_marks.lock().ok().and_then(|m| m.get(id).cloned()) };
            let full = since.is_none();
            let (users, mark) = match dir.sync_changes(since.as_ref()).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(directory = %id, error = %format!("{e:#}"), "sync failed");
                    continue;
                }
            };
            let policy = dir.policy().await;
            let chunks: Vec<_> = users.chunks(SYNC_CHUNK).collect();
            let total = chunks.len().max(1);
            for i in 0..total {
                let chunk = SyncChunk {
                    directory: id.clone(),
                    full,
                    seq: u32::try_from(i).unwrap_or(u32::MAX),
                    last: i + 1 == total,
                    users: chunks.get(i).map(|c| c.to_vec()).unwrap_or_default(),
                    policy: if i == 0 { policy.clone() } else { None },
                };
                let Some(frame) = self.report(FrameKind::Sync, &chunk) else { return };
                if out.send(frame).await.is_err() {
                    return;
                }
            }
            if let Ok(mut m) = self.last_sync.lock() {
                m.insert(id.clone(), self.clock.now());
            }
            if let (Some(mark), Ok(mut marks)) = (mark, self.sync_marks.lock()) {
                marks.insert(id.clone(), mark);
            }
            tracing::info!(directory = %id, people = users.len(), full, "sync sent");
        }
    }

    /// Connects, serves until the connection drops, and tells how long it lasted.
    async fn session(self: &Arc<Self>) -> anyhow::Result<Duration> {
        let state = AgentState::load(&self.cfg.state_file)?;
        let ws_url = format!("{}{}", self.portal_url.replacen("https://", "wss://", 1), protocol::AGENT_PATH);
        let mut request = ws_url.as_str().into_client_request()?;
        request.headers_mut().insert(axum::http::header::AUTHORIZATION, state.bearer().as_str().parse()?);
        drop(state);
        let tls = crate::tls::client_config(self.cfg.portal_ca_file.as_deref())?;
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            // Nagle's algorithm off: answers go out at once, not after the portal's delayed ack.
            true,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        )
        .await
        .with_context(|| format!("connecting to {ws_url}"))?;
        let started = Instant::now();
        tracing::info!(portal = %self.portal_url, "connected to the portal");
        let (mut sink, mut stream) = socket.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Wire>(256);

        // The agent pings too: the portal's pongs prove the connection is alive from this side.
        let ping_every = Duration::from_secs(self.cfg.heartbeat_secs);
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(ping_every);
            loop {
                let msg = tokio::select! {
                    out = out_rx.recv() => match out {
                        Some(Wire(bytes)) => Message::Binary(bytes.into()),
                        None => break,
                    },
                    _ = ping.tick() => Message::Ping(Vec::new().into()),
                };
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        if let Some(hello) = self.report(FrameKind::Hello, &self.status().await) {
            out_tx.send(hello).await.ok();
        }
        let background = {
            let me = self.clone();
            let out = out_tx.clone();
            tokio::spawn(async move {
                let heartbeat = Duration::from_secs(me.cfg.heartbeat_secs);
                let sync_every = Duration::from_secs(me.cfg.sync_interval_secs);
                let full_every = Duration::from_secs(me.cfg.full_sync_interval_secs);
                let (mut last_sync, mut last_full): (Option<Instant>, Option<Instant>) = (None, None);
                loop {
                    if last_sync.is_none_or(|t| t.elapsed() >= sync_every) {
                        // Everyone on connect and now and then; in between, who changed.
                        let full = last_full.is_none_or(|t| t.elapsed() >= full_every);
                        me.sync_all(&out, full).await;
                        last_sync = Some(Instant::now());
                        if full {
                            last_full = last_sync;
                        }
                    }
                    tokio::time::sleep(heartbeat).await;
                    me.reload_keys_if_changed();
                    me.rotate_if_due().await;
                    let Some(heartbeat) = me.report(FrameKind::Heartbeat, &me.status().await) else { break };
                    if out.send(heartbeat).await.is_err() {
                        break;
                    }
                }
            })
        };

        let limit = Arc::new(Semaphore::new(self.cfg.max_concurrent));
        let silence = Duration::from_secs(self.cfg.heartbeat_secs * 3).max(Duration::from_secs(5));
        let result = loop {
            let next = match tokio::time::timeout(silence, stream.next()).await {
                Ok(n) => n,
                Err(_) => break Err(anyhow::anyhow!("the portal has been silent for {silence:?}")),
            };
            match next {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => match parse(&msg) {
                    Ok(frame) if frame.kind == FrameKind::Request => {
                        let received = Instant::now();
                        let Ok(permit) = limit.clone().acquire_owned().await else { break Ok(()) };
                        let me = self.clone();
                        let out = out_tx.clone();
                        tokio::spawn(async move {
                            if let Some(answer) = me.handle_request(frame, received).await {
                                let _ = out.send(answer).await;
                            }
                            drop(permit);
                        });
                    }
                    Ok(_) => tracing::warn!("unexpected frame from the portal ignored"),
                    Err(e) => tracing::warn!(error = %e, "refused a frame from the portal"),
                },
                Some(Ok(Message::Close(_))) | None => break Ok(()),
                Some(Ok(_)) => {} // pongs, and pings (answered by the WebSocket layer)
                Some(Err(e)) => break Err(anyhow::anyhow!("relay connection: {e}")),
            }
        };
        background.abort();
        writer.abort();
        result.map(|_| started.elapsed())
    }

    /// Runs forever: reconnects with exponential backoff and jitter whenever the connection drops.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        for (id, dir) in &self.directories {
            if let Err(e) = dir.check().await {
                tracing::warn!(directory = %id, error = %e, "directory not reachable at start; will keep trying");
            }
        }
        self.rotate_if_due().await;
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.session().await {
                Ok(lasted) => {
                    tracing::warn!(?lasted, "relay connection closed");
                    if lasted > Duration::from_secs(30) {
                        backoff = Duration::from_secs(1);
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "relay connection failed"),
            }
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

fn grace_secs(cfg: &AgentConfig) -> i64 {
    i64::try_from(cfg.key_grace_hours * 3600).unwrap_or(i64::MAX)
}

/// A message from the portal as a sealed frame; text is refused.
fn parse(msg: &Message) -> Result<envelope::SealedFrame, protocol::FrameError> {
    match msg {
        Message::Binary(bytes) => protocol::parse_binary(bytes),
        _ => Err(protocol::FrameError::Unsealed),
    }
}
