//! The hub: live agent connections, their keys, and requests waiting for a result.
//! Its locks are plain mutexes held for a few map operations and never across an `.await`.

mod sealed;

use super::protocol::{AgentStatus, Wire};
use crate::config::RelayConfig;
use crate::domain::{Anchor, DirectoryId, MsgId, Outcome, PolicyFacts};
use crate::envelope::{self, Direction, Flags, FrameKind, Op, PackageKey, RequestPackage, SealedFrame};
use crate::expiring::Expiring;
use crate::store::{self, DataKey, Db};
use rsa::pkcs8::DecodePublicKey;
use rsa::RsaPublicKey;
pub use sealed::{accepted_key, Refusal, REPORT_SKEW_SECS};
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
    /// A writeback with a row in `writebacks` (not a read or a no-op).
    has_row: bool,
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
    /// The agent each writeback about to be claimed will go to ([`Hub::choose_agent`]).
    chosen: Expiring<MsgId, String>,
    /// Writebacks whose answer reached their waiting request and is being recorded: a copy that
    /// comes meanwhile is refused (once recorded, the database refuses it).
    answered: Expiring<MsgId, ()>,
    /// Each directory's default policy as its agent last reported it, read from the database at
    /// most once a minute (a form post needs its lockout threshold), and forgotten as soon as an
    /// agent reports it again.
    pub policies: Expiring<String, PolicyFacts>,
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
    /// Which agent it was sent to, if any.
    pub agent_id: Option<String>,
    /// Whether that agent's answer came in time (it may itself say "not confirmed", PB-1002).
    pub answered: bool,
}

impl WritebackResult {
    /// An outcome the portal reached without an agent's answer (nothing was sent).
    pub fn local(outcome: Outcome, raw: &str) -> Self {
        Self { outcome, raw: raw.into(), policy: None, agent_id: None, answered: false }
    }

    /// The agent whose answer this is; `None` when no answer came (or nothing was sent).
    pub fn answered_by(&self) -> Option<&str> {
        self.agent_id.as_deref().filter(|_| self.answered)
    }

    /// Whether an answer may still come: the request went to an agent, which did not answer in
    /// time.
    pub fn awaited(&self) -> bool {
        self.agent_id.is_some() && !self.answered
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
            chosen: Expiring::default(),
            answered: Expiring::default(),
            policies: Expiring::default(),
        }
    }

    /// How long a writeback's choice of agent, or its answer being recorded, is remembered: well
    /// past the wait for the answer.
    fn remembered_until(&self, now: i64) -> i64 {
        now + i64::try_from(self.cfg.result_deadline_secs).unwrap_or(60) + 60
    }

    /// Chooses the agent that a writeback about to be claimed will be sent to (`None`: none is
    /// alive), so that the claim names it: its answer is then taken from that agent only, even
    /// one that comes after the wait or after a restart of the portal.
    pub fn choose_agent(&self, msg_id: &MsgId, directory: &str, now: i64) -> Option<String> {
        let directory = DirectoryId::parse(directory).ok()?;
        let (agent_id, _, _) = self.pick(&directory, None)?;
        // The same form sent twice at once: both name the first choice, whichever claims.
        let (chosen, _) = self.chosen.get_or_put(msg_id, self.remembered_until(now), now, || agent_id);
        Some(chosen)
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
    /// With `only`, a connection of that agent.
    fn pick(&self, directory: &DirectoryId, only: Option<&str>) -> Option<(String, mpsc::Sender<Wire>, u32)> {
        let window = self.liveness_window();
        let inner = self.lock();
        inner
            .conns
            .values()
            .filter(|c| only.is_none_or(|a| a == c.agent_id))
            .filter(|c| c.last_seen.elapsed() < window)
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| s.directories.iter().any(|d| &d.id == directory && d.reachable))
            })
            .min_by_key(|c| c.last_seen.elapsed())
            .map(|c| (c.agent_id.clone(), c.tx.clone(), c.status.as_ref().map(|s| s.key_version).unwrap_or(0)))
    }

    pub fn is_alive(&self, directory: &DirectoryId) -> bool {
        self.pick(directory, None).is_some()
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

    /// Seals a request for a live agent of the directory, sends it, and waits for the sealed
    /// result up to the configured deadline. Always ends in a definite outcome.
    pub async fn writeback(&self, req: WritebackRequest<'_>, now: i64) -> WritebackResult {
        let (op, started) = (req.op, Instant::now());
        let result = self.send_and_wait(req, now).await;
        self.metrics.writeback(op, &result.outcome, started.elapsed());
        result
    }

    async fn send_and_wait(&self, req: WritebackRequest<'_>, now: i64) -> WritebackResult {
        // The agent the claim named, while it is alive; else another, which the row then names.
        let chosen = self.chosen.get(&req.msg_id, now);
        self.chosen.remove(&req.msg_id);
        let picked = chosen.as_deref().and_then(|a| self.pick(&req.directory, Some(a)));
        let Some((agent_id, tx, agent_key_version)) = picked.or_else(|| self.pick(&req.directory, None)) else {
            return WritebackResult::local(Outcome::NoAgent, "no live agent for this directory");
        };
        let has_row = matches!(req.op, Op::Reset | Op::Change | Op::Unlock | Op::RequireChange);
        if has_row && chosen.as_deref() != Some(agent_id.as_str()) {
            if let Err(e) = store::writebacks::set_agent(&self.db, req.msg_id.as_str(), &agent_id).await {
                tracing::warn!(msg_id = %req.msg_id, error = %e, "could not note the agent of a writeback");
            }
        }
        let frame = match self.seal_request(&agent_id, agent_key_version, &req, now).await {
            Ok(f) => Wire::sealed(&f),
            Err(e) => {
                tracing::error!(agent = %agent_id, error = %e, "cannot seal a request");
                return WritebackResult::local(Outcome::Internal, "sealing failed");
            }
        };
        let (result_tx, result_rx) = oneshot::channel();
        self.lock().pending.insert(req.msg_id.clone(), Pending { agent_id: agent_id.clone(), has_row, tx: result_tx });
        // Whatever ends the wait (an answer, the deadline, or the caller giving up), the entry goes.
        let _pending = PendingGuard { hub: self, msg_id: &req.msg_id };
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
            // The answer is recorded with the outcome (`writebacks::finish`), by the caller.
            Ok(Ok(pkg)) => {
                let (outcome, raw, policy) = (pkg.outcome, pkg.raw, pkg.policy);
                WritebackResult { outcome, raw, policy, agent_id: Some(agent_id), answered: true }
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
}

#[cfg(test)]
mod tests;
