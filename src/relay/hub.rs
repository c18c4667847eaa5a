//! The hub: live agent connections, their keys, and requests waiting for a result.
//! Its locks are plain mutexes held for a few map operations and never across an `.await`.

use super::protocol::{AgentStatus, Wire};
use crate::config::RelayConfig;
use crate::domain::{Anchor, DirectoryId, MsgId, Outcome, PolicyFacts};
use crate::envelope::{self, Direction, Flags, FrameKind, Op, PackageKey, RequestPackage, SealedFrame};
use crate::store::{self, DataKey, Db};
use rsa::pkcs8::DecodePublicKey;
use rsa::RsaPublicKey;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One version of an agent's keys, parsed once.
pub struct KeyVersion {
    pub version: u32,
    pub public: RsaPublicKey,
    pub package: PackageKey,
    pub created_at: i64,
}

struct Conn {
    agent_id: String,
    /// The directories this agent was enrolled for; it may serve no other.
    allowed: Vec<DirectoryId>,
    tx: mpsc::Sender<Wire>,
    status: Option<AgentStatus>,
    last_seen: Instant,
    /// Dropped with the connection's entry: its socket task then ends at once (a revoked agent is
    /// cut off without waiting for it to close).
    _kill: oneshot::Sender<()>,
}

struct Pending {
    agent_id: String,
    tx: oneshot::Sender<envelope::ResultPackage>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Conn>,
    pending: HashMap<MsgId, Pending>,
    keys: HashMap<String, Arc<Vec<KeyVersion>>>,
    /// The content key of the current epoch, per (agent, key version): passwords are sealed under
    /// it, and the agent unwraps it with RSA once per epoch instead of once per request.
    content_keys: HashMap<(String, u32), (envelope::ContentKey, Instant)>,
    /// When the full sync in progress began, per (agent, directory).
    syncs: HashMap<(String, String), i64>,
    /// What each agent last told this portal, and when (for the health page, also after it left).
    seen: HashMap<String, Seen>,
}

/// The last that was heard from one agent.
#[derive(Debug, Clone, Default)]
struct Seen {
    status: Option<AgentStatus>,
    /// Unix seconds of the last heartbeat, pong or frame.
    last_heard: i64,
    connected_at: Option<i64>,
    disconnected_at: Option<i64>,
}

/// One agent as the health page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentHealth {
    pub agent_id: String,
    /// Connected, and heard from within two ping intervals.
    pub alive: bool,
    pub last_heard: Option<i64>,
    pub connected_at: Option<i64>,
    pub disconnected_at: Option<i64>,
    pub status: Option<AgentStatus>,
}

/// Removes a waiting request's entry when its wait ends, however it ends.
struct PendingGuard<'a> {
    hub: &'a Hub,
    msg_id: &'a MsgId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.hub.lock().pending.remove(self.msg_id);
    }
}

pub use super::protocol::CONTENT_KEY_EPOCH;

pub struct Hub {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    db: Db,
    data_key: DataKey,
    clock: crate::Clock,
    pub cfg: RelayConfig,
    /// Counters for `/metrics`.
    pub metrics: super::metrics::Metrics,
}

/// What the portal asks an agent to do. Passwords stay wrapped until RSA encryption.
pub struct WritebackRequest<'a> {
    pub msg_id: MsgId,
    pub op: Op,
    pub directory: DirectoryId,
    pub anchor: Anchor,
    pub password: Option<&'a SecretString>,
    pub old_password: Option<&'a SecretString>,
    pub flags: Flags,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritebackResult {
    pub outcome: Outcome,
    /// The directory's raw answer, for the audit only.
    pub raw: String,
    pub policy: Option<PolicyFacts>,
    /// Which agent served it, if any.
    pub agent_id: Option<String>,
}

impl WritebackResult {
    fn local(outcome: Outcome, raw: &str) -> Self {
        Self { outcome, raw: raw.into(), policy: None, agent_id: None }
    }
}

impl Hub {
    pub fn new(db: Db, data_key: DataKey, cfg: RelayConfig, clock: crate::Clock) -> Self {
        Self {
            inner: Mutex::default(),
            next_conn: AtomicU64::new(1),
            db,
            data_key,
            clock,
            cfg,
            metrics: super::metrics::Metrics::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only maps behind; carry on with them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long an older key version stays accepted after the next one was made.
    pub fn grace_secs(&self) -> i64 {
        i64::try_from(self.cfg.key_grace_hours * 3600).unwrap_or(i64::MAX)
    }

    fn liveness_window(&self) -> Duration {
        Duration::from_secs(self.cfg.ping_interval_secs * 2)
    }

    /// A new connection of `agent_id`: its id, and a signal that fires when the hub drops it.
    pub fn register(
        &self,
        agent_id: &str,
        allowed: Vec<DirectoryId>,
        tx: mpsc::Sender<Wire>,
    ) -> (u64, oneshot::Receiver<()>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (kill, killed) = oneshot::channel();
        let conn =
            Conn { agent_id: agent_id.to_string(), allowed, tx, status: None, last_seen: Instant::now(), _kill: kill };
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.conns.insert(id, conn);
        let seen = inner.seen.entry(agent_id.to_string()).or_default();
        seen.connected_at = Some(now);
        seen.disconnected_at = None;
        seen.last_heard = now;
        (id, killed)
    }

    pub fn unregister(&self, conn_id: u64) {
        let mut inner = self.lock();
        if let Some(conn) = inner.conns.remove(&conn_id) {
            // Requests in flight on that agent can no longer be confirmed: their waiters get an
            // immediate "not confirmed" rather than waiting for the deadline.
            let still_connected = inner.conns.values().any(|c| c.agent_id == conn.agent_id && c.status.is_some());
            if !still_connected {
                inner.pending.retain(|_, p| p.agent_id != conn.agent_id);
                let now = self.clock.now();
                if let Some(seen) = inner.seen.get_mut(&conn.agent_id) {
                    seen.disconnected_at = Some(now);
                }
            }
        }
    }

    /// Cuts off a revoked agent: its live connections end at once, the requests sent to it end
    /// as "not confirmed", and its keys are forgotten. Returns how many connections it had.
    pub fn drop_agent(&self, agent_id: &str) -> usize {
        let now = self.clock.now();
        let mut inner = self.lock();
        let before = inner.conns.len();
        inner.conns.retain(|_, c| c.agent_id != agent_id);
        let dropped = before - inner.conns.len();
        inner.pending.retain(|_, p| p.agent_id != agent_id);
        inner.keys.remove(agent_id);
        inner.content_keys.retain(|(agent, _), _| agent != agent_id);
        if dropped > 0 {
            if let Some(seen) = inner.seen.get_mut(agent_id) {
                seen.disconnected_at = Some(now);
            }
        }
        dropped
    }

    /// The agents with a connection to this instance now.
    pub fn connected_agents(&self) -> Vec<String> {
        let inner = self.lock();
        let mut ids: Vec<String> = inner.conns.values().map(|c| c.agent_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Drops every agent connection (their writers then close the sockets); used at shutdown.
    pub fn close_all(&self) {
        let mut inner = self.lock();
        inner.conns.clear();
        inner.pending.clear();
    }

    /// Notes that a connection is alive (a frame or a pong came). Only a connection that has
    /// proved itself with a sealed status counts: the relay secret alone keeps nothing alive.
    pub fn touch(&self, conn_id: u64) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(c) = inner.conns.get_mut(&conn_id).filter(|c| c.status.is_some()) {
            c.last_seen = Instant::now();
            let agent = c.agent_id.clone();
            inner.seen.entry(agent).or_default().last_heard = now;
        }
    }

    /// Records an agent's status. Directories it was not enrolled for are dropped, so no agent
    /// can draw another directory's requests to itself.
    pub fn set_status(&self, conn_id: u64, mut status: AgentStatus) {
        let mut inner = self.lock();
        if let Some(c) = inner.conns.get_mut(&conn_id) {
            let before = status.directories.len();
            status.directories.retain(|d| c.allowed.contains(&d.id));
            if status.directories.len() != before {
                tracing::warn!(agent = %c.agent_id, "agent reported directories it was not enrolled for; ignored");
            }
            c.status = Some(status.clone());
            c.last_seen = Instant::now();
            let agent = c.agent_id.clone();
            let seen = inner.seen.entry(agent).or_default();
            seen.status = Some(status);
            seen.last_heard = self.clock.now();
        }
    }

    /// Every agent heard from since the portal started, alive or not, by id.
    pub fn agents_health(&self) -> Vec<AgentHealth> {
        let window = self.liveness_window();
        let inner = self.lock();
        let mut out: Vec<AgentHealth> = inner
            .seen
            .iter()
            .map(|(id, seen)| AgentHealth {
                agent_id: id.clone(),
                alive: inner
                    .conns
                    .values()
                    .any(|c| &c.agent_id == id && c.status.is_some() && c.last_seen.elapsed() < window),
                last_heard: Some(seen.last_heard),
                connected_at: seen.connected_at,
                disconnected_at: seen.disconnected_at,
                status: seen.status.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        out
    }

    /// Whether the agent on this connection was enrolled for `directory`.
    pub fn may_serve(&self, conn_id: u64, directory: &DirectoryId) -> bool {
        self.lock().conns.get(&conn_id).is_some_and(|c| c.allowed.contains(directory))
    }

    /// A live connection of an agent that serves `directory` and reports it reachable: its agent
    /// id, its sender, and the key version the agent says it uses.
    fn pick(&self, directory: &DirectoryId) -> Option<(String, mpsc::Sender<Wire>, u32)> {
        let window = self.liveness_window();
        let inner = self.lock();
        inner
            .conns
            .values()
            .filter(|c| c.last_seen.elapsed() < window)
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| s.directories.iter().any(|d| &d.id == directory && d.reachable))
            })
            .min_by_key(|c| c.last_seen.elapsed())
            .map(|c| (c.agent_id.clone(), c.tx.clone(), c.status.as_ref().map(|s| s.key_version).unwrap_or(0)))
    }

    pub fn is_alive(&self, directory: &DirectoryId) -> bool {
        self.pick(directory).is_some()
    }

    /// Whether any agent serves any directory right now.
    pub fn any_alive(&self) -> bool {
        let window = self.liveness_window();
        self.lock().conns.values().any(|c| {
            c.last_seen.elapsed() < window
                && c.status.as_ref().is_some_and(|s| s.directories.iter().any(|d| d.reachable))
        })
    }

    pub fn live_agents(&self) -> usize {
        let window = self.liveness_window();
        let inner = self.lock();
        let mut ids: Vec<&str> = inner
            .conns
            .values()
            .filter(|c| c.status.is_some() && c.last_seen.elapsed() < window)
            .map(|c| c.agent_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Notes the progress of a full sync; returns when the sync that this chunk belongs to began.
    pub fn sync_progress(&self, agent_id: &str, directory: &str, full: bool, seq: u32, now: i64) -> Option<i64> {
        let key = (agent_id.to_string(), directory.to_string());
        let mut inner = self.lock();
        // Only a full sync starts the count of who was seen: a delta in between must not.
        if full && seq == 0 {
            inner.syncs.insert(key.clone(), now);
        }
        inner.syncs.get(&key).copied()
    }

    /// Forgets cached keys after a rollover, so the next request seals with the newest.
    pub fn forget_keys(&self, agent_id: &str) {
        let mut inner = self.lock();
        inner.keys.remove(agent_id);
        inner.content_keys.retain(|(agent, _), _| agent != agent_id);
    }

    /// An agent's keys, newest first: from the cache, or read and parsed once from the database.
    pub async fn keys(&self, agent_id: &str) -> anyhow::Result<Arc<Vec<KeyVersion>>> {
        if let Some(k) = self.lock().keys.get(agent_id) {
            return Ok(k.clone());
        }
        let rows = store::agents::keys(&self.db, agent_id).await?;
        let mut parsed = Vec::with_capacity(rows.len());
        for row in rows {
            let ctx = store::agents::key_context(&row.agent_id, row.version);
            let raw = self.data_key.decrypt(&ctx, &row.package_key_enc)?;
            let package =
                PackageKey::from_slice(&raw).ok_or_else(|| anyhow::anyhow!("stored package key has the wrong size"))?;
            let public = RsaPublicKey::from_public_key_pem(&row.public_key_pem)?;
            parsed.push(KeyVersion {
                version: u32::try_from(row.version)?,
                public,
                package,
                created_at: row.created_at,
            });
        }
        anyhow::ensure!(!parsed.is_empty(), "agent {agent_id} has no keys");
        let parsed = Arc::new(parsed);
        self.lock().keys.insert(agent_id.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Seals a request for a live agent of the directory, sends it, and waits for the sealed
    /// result up to the configured deadline. Always ends in a definite outcome.
    pub async fn writeback(&self, req: WritebackRequest<'_>, now: i64) -> WritebackResult {
        let (op, started) = (req.op, Instant::now());
        let result = self.send_and_wait(req, now).await;
        self.metrics.writeback(op, &result.outcome, started.elapsed());
        result
    }

    async fn send_and_wait(&self, req: WritebackRequest<'_>, now: i64) -> WritebackResult {
        let Some((agent_id, tx, agent_key_version)) = self.pick(&req.directory) else {
            return WritebackResult::local(Outcome::NoAgent, "no live agent for this directory");
        };
        let frame = match self.seal_request(&agent_id, agent_key_version, &req, now).await {
            Ok(f) => Wire::sealed(&f),
            Err(e) => {
                tracing::error!(agent = %agent_id, error = %e, "cannot seal a request");
                return WritebackResult::local(Outcome::Internal, "sealing failed");
            }
        };
        let (result_tx, result_rx) = oneshot::channel();
        self.lock().pending.insert(req.msg_id.clone(), Pending { agent_id: agent_id.clone(), tx: result_tx });
        // Whatever ends the wait (an answer, the deadline, or the caller giving up), the entry goes.
        let _pending = PendingGuard { hub: self, msg_id: &req.msg_id };
        if let Err(e) = store::writebacks::set_agent(&self.db, req.msg_id.as_str(), &agent_id).await {
            tracing::warn!(msg_id = %req.msg_id, error = %e, "could not note the agent of a writeback");
        }
        tracing::debug!(msg_id = %req.msg_id, agent = %agent_id, bytes = frame.len(), "request sent");
        // Sending counts against the deadline too: a stalled agent connection cannot hold the
        // person's page for longer than the deadline.
        let deadline = Duration::from_secs(self.cfg.result_deadline_secs);
        let answer = tokio::time::timeout(deadline, async {
            if tx.send(frame).await.is_err() {
                return Err("agent connection closed before sending");
            }
            result_rx.await.map_err(|_| "agent disconnected before answering")
        })
        .await;
        match answer {
            Ok(Ok(pkg)) => {
                WritebackResult { outcome: pkg.outcome, raw: pkg.raw, policy: pkg.policy, agent_id: Some(agent_id) }
            }
            Ok(Err(why)) => {
                WritebackResult { agent_id: Some(agent_id), ..WritebackResult::local(Outcome::AgentTimeout, why) }
            }
            Err(_) => WritebackResult {
                agent_id: Some(agent_id),
                ..WritebackResult::local(Outcome::AgentTimeout, "no answer before the deadline")
            },
        }
    }

    /// Seals with the key version the agent reports using, while the portal still accepts it;
    /// otherwise with the newest. An agent that missed a rollover answer keeps working.
    async fn seal_request(
        &self,
        agent_id: &str,
        agent_key_version: u32,
        req: &WritebackRequest<'_>,
        now: i64,
    ) -> anyhow::Result<SealedFrame> {
        let keys = self.keys(agent_id).await?;
        let grace = self.grace_secs();
        let newest = keys
            .iter()
            .find(|k| k.version == agent_key_version && accepted_key(&keys, k.version, now, grace).is_some())
            .or(keys.first())
            .ok_or_else(|| anyhow::anyhow!("no key"))?;
        let mut rng = rand::rngs::OsRng;
        let secrets = match req.password {
            Some(new) => Some(envelope::seal_secrets(
                &self.content_key(agent_id, newest)?,
                &req.msg_id,
                new.expose_secret(),
                req.old_password.map(|o| o.expose_secret()),
                &mut rng,
            )?),
            None => None,
        };
        let pkg = RequestPackage {
            msg_id: req.msg_id.clone(),
            op: req.op,
            directory: req.directory.clone(),
            anchor: req.anchor.clone(),
            secrets,
            flags: req.flags,
            actor: req.actor.clone(),
            issued_at: now,
            expires_at: now + i64::try_from(self.cfg.request_ttl_secs)?,
            wait_secs: u32::try_from(self.cfg.result_deadline_secs).unwrap_or(u32::MAX),
        };
        Ok(envelope::seal(
            agent_id,
            newest.version,
            &newest.package,
            Direction::ToAgent,
            FrameKind::Request,
            &req.msg_id,
            &pkg,
            &mut rng,
        )?)
    }

    /// The content key of the current epoch for this agent and key version (a new one after
    /// [`CONTENT_KEY_EPOCH`], or when the agent's keys changed).
    fn content_key(&self, agent_id: &str, key: &KeyVersion) -> anyhow::Result<envelope::ContentKey> {
        let slot = (agent_id.to_string(), key.version);
        if let Some((content, made)) = self.lock().content_keys.get(&slot) {
            if made.elapsed() < CONTENT_KEY_EPOCH {
                return Ok(content.clone());
            }
        }
        let content = envelope::ContentKey::new(&key.public, &mut rand::rngs::OsRng)?;
        let mut inner = self.lock();
        inner.content_keys.retain(|_, (_, made)| made.elapsed() < CONTENT_KEY_EPOCH);
        inner.content_keys.insert(slot, (content.clone(), Instant::now()));
        Ok(content)
    }

    /// The package key of each version still accepted from `agent_id`, now.
    async fn key_for(&self, agent_id: &str) -> Result<impl Fn(u32) -> Option<PackageKey>, Refusal> {
        let keys = self.keys(agent_id).await.map_err(|e| {
            tracing::warn!(agent = %agent_id, error = %e, "a frame from an agent without keys");
            Refusal::NoKeys
        })?;
        let (now, grace) = (self.clock.now(), self.grace_secs());
        Ok(move |v: u32| accepted_key(&keys, v, now, grace))
    }

    /// Opens what an agent reports (hello, heartbeat, sync): authentic, of its kind, fresh, and
    /// never seen before on any instance (its frame id is recorded until it would be stale).
    pub async fn open_report<T: serde::de::DeserializeOwned>(
        &self,
        agent_id: &str,
        frame: &SealedFrame,
    ) -> Result<T, Refusal> {
        let key_for = self.key_for(agent_id).await?;
        let now = self.clock.now();
        let report: envelope::Report<T> =
            envelope::open_report(agent_id, frame, now, REPORT_SKEW_SECS, key_for).map_err(Refusal::from)?;
        let keep_until = report.issued_at + 2 * REPORT_SKEW_SECS;
        match store::agents::note_frame(&self.db, agent_id, frame.msg_id.as_str(), keep_until).await {
            Ok(true) => Ok(report.body),
            Ok(false) => Err(Refusal::Replayed),
            Err(e) => {
                tracing::error!(agent = %agent_id, error = %e, "recording a frame id failed");
                Err(Refusal::Store)
            }
        }
    }

    /// A sealed result from `agent_id`: authenticated with that agent's keys, then handed to the
    /// request waiting for it. A writeback takes one answer only: a copy, or a second answer for
    /// the same message, is refused and changes nothing.
    pub async fn deliver_result(&self, agent_id: &str, frame: &SealedFrame) -> Result<(), Refusal> {
        let key_for = self.key_for(agent_id).await?;
        let pkg = envelope::open_result(agent_id, frame, key_for).map_err(Refusal::from)?;
        let waiting = {
            let mut inner = self.lock();
            match inner.pending.get(&pkg.msg_id) {
                Some(p) if p.agent_id == agent_id => inner.pending.remove(&pkg.msg_id),
                Some(_) => return Err(Refusal::WrongAgent),
                None => None,
            }
        };
        let now = self.clock.now();
        match waiting {
            Some(p) => {
                // Noted before the waiter hears of it, so a copy that follows on this connection
                // already finds the writeback answered. Requests outside `writebacks` (no-ops,
                // reads) have no row: their one answer is the waiter's.
                if let Err(e) = store::writebacks::take_result(&self.db, pkg.msg_id.as_str(), now).await {
                    tracing::error!(msg_id = %pkg.msg_id, error = %e, "noting a writeback's answer failed");
                }
                if let Err(pkg) = p.tx.send(pkg) {
                    // The wait ended meanwhile (the deadline): the answer is kept as a late one.
                    tracing::warn!(msg_id = %pkg.msg_id, outcome = %pkg.outcome.code(), "result arrived as its wait ended");
                    if let Err(e) =
                        store::writebacks::note_late_outcome(&self.db, pkg.msg_id.as_str(), &pkg.outcome).await
                    {
                        tracing::error!(msg_id = %pkg.msg_id, error = %e, "keeping a late answer failed");
                    }
                }
                Ok(())
            }
            None => self.record_late_result(agent_id, &pkg, now).await,
        }
    }

    /// A result that came after the person was told "not confirmed": the directory's real answer
    /// is still recorded, against the support code the person was shown, so nothing is lost.
    /// Only the first answer of the agent the request went to counts.
    async fn record_late_result(&self, agent_id: &str, pkg: &envelope::ResultPackage, now: i64) -> Result<(), Refusal> {
        let row = store::writebacks::take_late_result(&self.db, pkg.msg_id.as_str(), agent_id, &pkg.outcome, now)
            .await
            .map_err(|e| {
                tracing::error!(agent = %agent_id, msg_id = %pkg.msg_id, error = %e, "storing a late result failed");
                Refusal::Store
            })?;
        let Some(row) = row else { return Err(Refusal::Answered) };
        let rec = store::audit::AuditRecord {
            at: now,
            actor: format!("agent:{agent_id}"),
            operation: format!("{}.late_result", row.op),
            directory: Some(row.directory),
            anchor: Some(row.anchor),
            target: None,
            outcome_code: pkg.outcome.code().0.into(),
            raw: format!("after {} was shown: {}", row.outcome_code.unwrap_or_default(), pkg.raw),
            support_code: row.support_code,
            client: None,
        };
        tracing::warn!(agent = %agent_id, msg_id = %pkg.msg_id, outcome = %rec.outcome_code, support_code = %rec.support_code, "result arrived after the deadline; recorded");
        if let Err(e) = store::audit::record(&self.db, &rec).await {
            tracing::error!(agent = %agent_id, msg_id = %pkg.msg_id, error = %e, "auditing a late result failed");
        }
        Ok(())
    }
}

/// How far an agent's report may be sealed from the portal's clock (the doctor warns beyond a
/// minute). Frame ids are kept twice as long, so no copy outlives its record.
pub const REPORT_SKEW_SECS: i64 = 300;

/// Why a frame from an agent was refused; counted in `/metrics` under [`Refusal::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not sealed")]
    Unsealed,
    #[error("malformed frame")]
    Malformed,
    #[error("unsupported protocol version")]
    Version,
    #[error("a kind of frame an agent may not send")]
    Kind,
    #[error("failed authentication")]
    Tampered,
    #[error("sealed with a key version the portal does not accept")]
    UnknownKey,
    #[error("sealed too long ago, or the clocks differ by more than five minutes")]
    Stale,
    #[error("a copy of a frame already taken")]
    Replayed,
    #[error("a result for a writeback that already has its answer")]
    Answered,
    #[error("a result from an agent the request was not sent to")]
    WrongAgent,
    #[error("for a directory the agent was not enrolled for")]
    NotEnrolled,
    #[error("the agent has no keys")]
    NoKeys,
    #[error("the database could not record it")]
    Store,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unsealed => "unsealed",
            Refusal::Malformed => "malformed",
            Refusal::Version => "version",
            Refusal::Kind => "kind",
            Refusal::Tampered => "tampered",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::Answered => "answered",
            Refusal::WrongAgent => "wrong_agent",
            Refusal::NotEnrolled => "not_enrolled",
            Refusal::NoKeys => "no_keys",
            Refusal::Store => "store",
        }
    }
}

impl From<envelope::EnvelopeError> for Refusal {
    fn from(e: envelope::EnvelopeError) -> Self {
        use envelope::EnvelopeError as E;
        match e {
            E::Version(_) => Refusal::Version,
            E::WrongKind => Refusal::Kind,
            E::UnknownKey(_) => Refusal::UnknownKey,
            E::Tampered | E::Rsa => Refusal::Tampered,
            E::Expired => Refusal::Stale,
            E::Malformed => Refusal::Malformed,
        }
    }
}

impl From<super::protocol::FrameError> for Refusal {
    fn from(e: super::protocol::FrameError) -> Self {
        use super::protocol::FrameError as E;
        match e {
            E::Version => Refusal::Version,
            E::Binary => Refusal::Malformed,
            E::Unsealed => Refusal::Unsealed,
        }
    }
}

/// The package key of version `v`, if still accepted: the newest always, an older one only until
/// `grace` seconds after the version that replaced it was made.
pub fn accepted_key(keys: &[KeyVersion], v: u32, now: i64, grace: i64) -> Option<PackageKey> {
    let i = keys.iter().position(|k| k.version == v)?;
    let still_valid = i == 0 || keys.get(i - 1).is_some_and(|newer| now - newer.created_at <= grace);
    still_valid.then(|| keys[i].package.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_key_is_accepted_until_the_grace_after_its_replacement() {
        let public = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap().to_public_key();
        let version = |v: u32, at: i64| KeyVersion {
            version: v,
            public: public.clone(),
            package: PackageKey::generate(&mut rand::rngs::OsRng),
            created_at: at,
        };
        let keys = vec![version(2, 1_000), version(1, 0)];
        assert!(accepted_key(&keys, 2, i64::MAX, 10).is_some(), "the newest always");
        assert!(accepted_key(&keys, 1, 1_010, 10).is_some());
        assert!(accepted_key(&keys, 1, 1_011, 10).is_none());
        assert!(accepted_key(&keys, 3, 0, 10).is_none(), "an unknown version never");
    }
}
