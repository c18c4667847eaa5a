//! The hub: live agent connections, their keys, and requests waiting for a result.
//! Its locks are plain mutexes held for a few map operations and never across an `.await`.
//!
//! Several `serve` instances on one PostgreSQL share their agents: each writes its live agents
//! into the database every second and reads the others' ([`instances`]), and a request for an
//! agent connected elsewhere travels sealed, as it is, through PostgreSQL's NOTIFY to the
//! instance that holds the agent's connection; the sealed answer comes back the same way.

pub mod instances;
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
use std::collections::{HashMap, HashSet};
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
    /// Unix seconds.
    connected_at: i64,
    /// Dropped with the connection's entry: its socket task then ends at once (a revoked agent is
    /// cut off without waiting for it to close).
    _kill: oneshot::Sender<()>,
}

struct Pending {
    agent_id: String,
    /// A writeback with a row in `writebacks` (not a read or a no-op).
    has_row: bool,
    /// The instance that holds the agent's connection, when it is not this one.
    via: Option<String>,
    tx: oneshot::Sender<envelope::ResultPackage>,
}

/// How long a request waits for its agent to come back after its connection broke, before
/// another agent is asked to check (an agent reconnects within a second or two).
const AGENT_RETURN_GRACE: Duration = Duration::from_secs(5);

/// Why an agent cannot answer for a request, when it went away before answering.
const GONE: &str = "went away before answering";

/// What [`Hub::agent_back`] found.
enum Back {
    /// Where the agent is now.
    Route(Route),
    /// Its answer, which came meanwhile.
    Answer(envelope::ResultPackage),
}

/// Which agents [`Hub::pick`] may choose.
#[derive(Debug, Clone, Copy)]
enum Which<'a> {
    Any,
    Only(&'a str),
    Except(&'a str),
}

/// Where a live agent connection is: on this instance, or on another one.
#[derive(Debug, Clone)]
enum Route {
    Local(mpsc::Sender<Wire>),
    Remote(String),
}

/// A live agent connection of another instance, as it last wrote it into the database.
#[derive(Debug, Clone)]
struct RemoteConn {
    instance: String,
    agent_id: String,
    status: AgentStatus,
    connected_at: i64,
    /// Unix seconds, by the database's clock.
    last_seen: i64,
    /// When this instance read it.
    read_at: Instant,
}

/// How old another instance's word about its agents may be: it renews it every second, so an
/// instance silent for longer has died (or lost the database), and its agents with it.
const PRESENCE_STALE: Duration = Duration::from_secs(store::presence::STALE_SECS as u64);

/// Whether another instance's connection was renewed lately (see [`PRESENCE_STALE`]): the rows
/// read were at most that old by the database's clock, and read at most that long ago.
fn fresh(r: &RemoteConn) -> bool {
    fresh_at(r, Instant::now())
}

fn fresh_at(r: &RemoteConn, now: Instant) -> bool {
    now.saturating_duration_since(r.read_at) < PRESENCE_STALE
}

/// A request another instance sent through this one to an agent connected here: its answer goes
/// back to that instance.
#[derive(Debug, Clone)]
struct Forwarded {
    origin: String,
    agent_id: String,
    until: i64,
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
    /// Agents connected to other instances (empty on SQLite, which has one instance).
    remote: Vec<RemoteConn>,
    forwarded: HashMap<MsgId, Forwarded>,
    /// Agents revoked while this instance ran: a request to one is not sent again.
    revoked: HashSet<String>,
    /// Requests whose waiter is still waiting, between attempts too, and the agent they went to.
    waiting: HashMap<MsgId, String>,
    /// Answers that came between two attempts (by the way the first was sent), from that agent:
    /// the waiter takes them, they are not late.
    early: HashMap<MsgId, (String, envelope::ResultPackage)>,
    /// Forms a request of this instance is acting on now, and how many ([`Hub::hold`]).
    held: HashMap<MsgId, usize>,
}

/// A form a request of this instance acts on, until this is dropped: when the request ends, or
/// when its client went away and its future was dropped half way.
pub struct Held<'a> {
    hub: &'a Hub,
    msg_id: MsgId,
    settled: bool,
}

impl Held<'_> {
    /// Nothing is left to let go of: its outcome is recorded, or it was never claimed here.
    pub fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        let mut last = false;
        if let Some(n) = inner.held.get_mut(&self.msg_id) {
            *n -= 1;
            if *n == 0 {
                inner.held.remove(&self.msg_id);
                last = true;
            }
        }
        drop(inner);
        // Let go of by the last request here before its outcome was recorded (its client went
        // away, or it failed): the writeback is released in the database, so that a sending of
        // the form to any instance carries it on at once instead of waiting for this live
        // instance to answer it.
        if last && !self.settled {
            let (db, msg_id, instance) = (self.hub.db.clone(), self.msg_id.clone(), self.hub.instance.clone());
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = store::writebacks::release(&db, msg_id.as_str(), &instance).await {
                        tracing::warn!(msg_id = %msg_id, error = %e, "could not release a writeback let go of");
                    }
                });
            }
        }
    }
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
        let mut inner = self.hub.lock();
        inner.pending.remove(self.msg_id);
        inner.waiting.remove(self.msg_id);
        inner.early.remove(self.msg_id);
    }
}

pub use super::protocol::CONTENT_KEY_EPOCH;

pub struct Hub {
    /// This instance, among those that share the database (random, new at each start).
    pub instance: String,
    /// When this instance started (Unix seconds).
    pub started_at: i64,
    inner: Mutex<Inner>,
    /// Wakes the task that writes this instance's agents into the database ([`instances`]).
    presence_changed: tokio::sync::Notify,
    /// Authenticates what instances tell each other ([`instances`]).
    notes_key: crate::store::MacKey,
    next_conn: AtomicU64,
    db: Db,
    data_key: DataKey,
    clock: crate::Clock,
    pub cfg: RelayConfig,
    /// Counters for `/metrics`.
    pub metrics: super::metrics::Metrics,
    /// The agent each writeback about to be claimed will go to ([`Hub::choose_agent`]).
    chosen: Expiring<MsgId, String>,
    /// Writebacks carried on after the instance that sent them stopped ([`Hub::carry_on`]): the
    /// agent their claim named, the only one they may go to.
    carried_on: Expiring<MsgId, String>,
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
    /// How long the answer took, from the hub taking the request (choosing an agent, sealing,
    /// sending) to its result, in milliseconds; `None` when no answer came in time.
    pub took_ms: Option<u64>,
}

impl WritebackResult {
    /// An outcome the portal reached without an agent's answer (nothing was sent).
    pub fn local(outcome: Outcome, raw: &str) -> Self {
        Self { outcome, raw: raw.into(), policy: None, agent_id: None, answered: false, took_ms: None }
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
            instance: uuid::Uuid::new_v4().simple().to_string(),
            started_at: clock.now(),
            inner: Mutex::default(),
            presence_changed: tokio::sync::Notify::new(),
            notes_key: data_key.derive("passback/instances/v1"),
            next_conn: AtomicU64::new(1),
            db,
            data_key,
            clock,
            cfg,
            metrics: super::metrics::Metrics::default(),
            chosen: Expiring::default(),
            carried_on: Expiring::default(),
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
        let (agent_id, _, _) = self.pick(&directory, Which::Any)?;
        // The same form sent twice at once: both name the first choice, whichever claims.
        let (chosen, _) = self.chosen.get_or_put(msg_id, self.remembered_until(now), now, || agent_id);
        Some(chosen)
    }

    /// Marks a writeback claimed by an instance that stopped before it answered, about to be sent
    /// again under the same message id: to `agent`, the one its claim named, and no other. That
    /// agent answers a message id once, from what it did (or does it now, if it never got it);
    /// another agent would carry it out a second time.
    pub fn carry_on(&self, msg_id: &MsgId, agent: &str) {
        let now = self.clock.now();
        self.carried_on.put(msg_id.clone(), agent.to_string(), self.remembered_until(now), now);
    }

    /// Notes that a request of this instance acts on the form `msg_id` until the guard drops.
    pub fn hold(&self, msg_id: &MsgId) -> Held<'_> {
        *self.lock().held.entry(msg_id.clone()).or_default() += 1;
        Held { hub: self, msg_id: msg_id.clone(), settled: false }
    }

    /// Whether a request of this instance acts on the form `msg_id` now.
    pub fn holds(&self, msg_id: &MsgId) -> bool {
        self.lock().held.contains_key(msg_id)
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
        let now = self.clock.now();
        let conn = Conn {
            agent_id: agent_id.to_string(),
            allowed,
            tx,
            status: None,
            last_seen: Instant::now(),
            connected_at: now,
            _kill: kill,
        };
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
            // Requests in flight on that agent can no longer be answered on this connection: their
            // waiters send them again once the agent is back (see `send_and_wait`), here or on
            // another instance, whose waiters are told.
            let still_connected = inner.conns.values().any(|c| c.agent_id == conn.agent_id && c.status.is_some());
            if !still_connected {
                inner.pending.retain(|_, p| p.agent_id != conn.agent_id);
                let now = self.clock.now();
                if let Some(seen) = inner.seen.get_mut(&conn.agent_id) {
                    seen.disconnected_at = Some(now);
                }
                let lost: Vec<(MsgId, Forwarded)> = inner
                    .forwarded
                    .iter()
                    .filter(|(_, f)| f.agent_id == conn.agent_id)
                    .map(|(m, f)| (m.clone(), f.clone()))
                    .collect();
                for (msg_id, f) in lost {
                    inner.forwarded.remove(&msg_id);
                    let from = self.instance.clone();
                    self.tell_later(&f.origin, instances::Note::Gone { msg_id, agent: f.agent_id, from });
                }
            }
        }
        drop(inner);
        self.presence_changed.notify_one();
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
        inner.revoked.insert(agent_id.to_string());
        inner.remote.retain(|r| r.agent_id != agent_id);
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
            // Requests waiting on this agent through another instance (which may have died with
            // the agent's old connection) are sent again, here: the agent answers a message id
            // once, from what it did, so nothing is written twice.
            inner.pending.retain(|_, p| !(p.agent_id == agent && p.via.is_some()));
            let seen = inner.seen.entry(agent).or_default();
            seen.status = Some(status);
            seen.last_heard = self.clock.now();
        }
        drop(inner);
        self.presence_changed.notify_one();
    }

    /// Every agent heard from since the portal started, alive or not, and every agent alive on
    /// another instance, by id.
    pub fn agents_health(&self) -> Vec<AgentHealth> {
        self.agents_health_in(&self.lock(), Instant::now())
    }

    /// [`Self::agents_health`], and whether each of `directories` can be written to now (see
    /// [`Self::is_alive`]), seen at one moment: a page that shows both never says that an agent
    /// is up while its directory has none.
    pub fn health_of(&self, directories: &[String]) -> (Vec<AgentHealth>, Vec<bool>) {
        let (inner, now) = (self.lock(), Instant::now());
        let writable = directories
            .iter()
            .map(|d| DirectoryId::parse(d).is_ok_and(|d| self.pick_in(&inner, now, &d, Which::Any).is_some()))
            .collect();
        (self.agents_health_in(&inner, now), writable)
    }

    fn agents_health_in(&self, inner: &Inner, now: Instant) -> Vec<AgentHealth> {
        let window = self.liveness_window();
        let remote_alive = |id: &str| inner.remote.iter().find(|r| r.agent_id == id && fresh_at(r, now));
        let mut out: Vec<AgentHealth> = inner
            .seen
            .iter()
            .map(|(id, seen)| {
                let here = inner.conns.values().any(|c| {
                    &c.agent_id == id && c.status.is_some() && now.saturating_duration_since(c.last_seen) < window
                });
                let elsewhere = remote_alive(id);
                AgentHealth {
                    agent_id: id.clone(),
                    alive: here || elsewhere.is_some(),
                    last_heard: Some(elsewhere.map_or(seen.last_heard, |r| r.last_seen.max(seen.last_heard))),
                    connected_at: seen.connected_at,
                    disconnected_at: seen.disconnected_at.filter(|_| elsewhere.is_none()),
                    status: seen.status.clone(),
                }
            })
            .collect();
        for r in inner.remote.iter().filter(|r| !inner.seen.contains_key(&r.agent_id) && fresh_at(r, now)) {
            if !out.iter().any(|a| a.agent_id == r.agent_id) {
                out.push(AgentHealth {
                    agent_id: r.agent_id.clone(),
                    alive: true,
                    last_heard: Some(r.last_seen),
                    connected_at: Some(r.connected_at),
                    disconnected_at: None,
                    status: Some(r.status.clone()),
                });
            }
        }
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        out
    }

    /// Whether the agent on this connection was enrolled for `directory`.
    pub fn may_serve(&self, conn_id: u64, directory: &DirectoryId) -> bool {
        self.lock().conns.get(&conn_id).is_some_and(|c| c.allowed.contains(directory))
    }

    /// A live connection of an agent that serves `directory` and reports it reachable: its agent
    /// id, where it is, and the key version the agent says it uses.
    ///
    /// The least busy agent: the one with the fewest requests this instance waits on; between
    /// equals, a connection to this instance (no trip through the database), then the one heard
    /// from last.
    fn pick(&self, directory: &DirectoryId, which: Which<'_>) -> Option<(String, Route, u32)> {
        self.pick_in(&self.lock(), Instant::now(), directory, which)
    }

    fn pick_in(
        &self,
        inner: &Inner,
        now: Instant,
        directory: &DirectoryId,
        which: Which<'_>,
    ) -> Option<(String, Route, u32)> {
        let window = self.liveness_window();
        let serves = |s: &AgentStatus| s.directories.iter().any(|d| &d.id == directory && d.reachable);
        let wanted = |agent: &str| match which {
            Which::Any => true,
            Which::Only(a) => a == agent,
            Which::Except(a) => a != agent,
        };
        let busy = |agent: &str| inner.pending.values().filter(|p| p.agent_id == agent).count();
        let here = inner
            .conns
            .values()
            .filter(|c| wanted(&c.agent_id) && now.saturating_duration_since(c.last_seen) < window)
            .filter(|c| c.status.as_ref().is_some_and(serves))
            .map(|c| {
                let version = c.status.as_ref().map(|s| s.key_version).unwrap_or(0);
                let key = (busy(&c.agent_id), 0, now.saturating_duration_since(c.last_seen).as_millis() as i64);
                (key, (c.agent_id.clone(), Route::Local(c.tx.clone()), version))
            });
        let elsewhere = inner.remote.iter().filter(|r| wanted(&r.agent_id) && fresh_at(r, now) && serves(&r.status));
        let elsewhere = elsewhere.map(|r| {
            let key = (busy(&r.agent_id), 1, now.saturating_duration_since(r.read_at).as_millis() as i64);
            (key, (r.agent_id.clone(), Route::Remote(r.instance.clone()), r.status.key_version))
        });
        here.chain(elsewhere).min_by_key(|(key, _)| *key).map(|(_, picked)| picked)
    }

    pub fn is_alive(&self, directory: &DirectoryId) -> bool {
        self.pick(directory, Which::Any).is_some()
    }

    /// Whether any agent serves any directory right now, on any instance.
    pub fn any_alive(&self) -> bool {
        let window = self.liveness_window();
        let inner = self.lock();
        let reachable = |s: &AgentStatus| s.directories.iter().any(|d| d.reachable);
        inner.conns.values().any(|c| c.last_seen.elapsed() < window && c.status.as_ref().is_some_and(reachable))
            || inner.remote.iter().any(|r| fresh(r) && reachable(&r.status))
    }

    /// How many agents are alive, on any instance.
    pub fn live_agents(&self) -> usize {
        let window = self.liveness_window();
        let inner = self.lock();
        let mut ids: Vec<&str> = inner
            .conns
            .values()
            .filter(|c| c.status.is_some() && c.last_seen.elapsed() < window)
            .map(|c| c.agent_id.as_str())
            .chain(inner.remote.iter().filter(|r| fresh(r)).map(|r| r.agent_id.as_str()))
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
        let mut result = self.send_and_wait(req, now).await;
        self.metrics.writeback(op, &result.outcome, started.elapsed());
        if result.answered {
            result.took_ms = u64::try_from(started.elapsed().as_millis()).ok();
        }
        result
    }

    async fn send_and_wait(&self, req: WritebackRequest<'_>, now: i64) -> WritebackResult {
        // Sending counts against the deadline too: a stalled agent connection cannot hold the
        // person's page for longer than the deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.cfg.result_deadline_secs);
        // A writeback carried on goes to the agent its claim named, or nowhere.
        let only = self.carried_on.get(&req.msg_id, self.clock.now());
        self.carried_on.remove(&req.msg_id);
        // Otherwise the agent the claim named, while it is alive; else another, which the row
        // then names.
        let chosen = only.clone().or_else(|| self.chosen.get(&req.msg_id, now));
        self.chosen.remove(&req.msg_id);
        let picked = match &only {
            Some(agent) => match self.only(&req, agent, deadline).await {
                Ok(picked) => Some(picked),
                Err(settled) => return settled,
            },
            None => chosen
                .as_deref()
                .and_then(|a| self.pick(&req.directory, Which::Only(a)))
                .or_else(|| self.pick(&req.directory, Which::Any)),
        };
        let Some((agent_id, mut route, agent_key_version)) = picked else {
            return WritebackResult::local(Outcome::NoAgent, "no live agent for this directory");
        };
        let has_row = matches!(req.op, Op::Reset | Op::Change | Op::Unlock | Op::RequireChange);
        if has_row && chosen.as_deref() != Some(agent_id.as_str()) {
            // Only while this instance holds the writeback: one that carries it on sends it to
            // the agent the row names, and two agents must never both get it.
            let noted = store::writebacks::set_agent(&self.db, req.msg_id.as_str(), &agent_id, &self.instance).await;
            if !noted.as_ref().is_ok_and(|held| *held) {
                tracing::warn!(msg_id = %req.msg_id, error = ?noted.err(), "a writeback not sent: its agent could not be noted, or another instance carries it on");
                return WritebackResult::local(Outcome::AgentTimeout, "not sent: another instance carries it on");
            }
        }
        let frame = match self.seal_request(&agent_id, agent_key_version, &req, now).await {
            Ok(f) => Wire::sealed(&f),
            Err(e) => {
                tracing::error!(agent = %agent_id, error = %e, "cannot seal a request");
                return WritebackResult::local(Outcome::Internal, "sealing failed");
            }
        };
        // Whatever ends the wait (an answer, the deadline, or the caller giving up), the entry goes.
        self.lock().waiting.insert(req.msg_id.clone(), agent_id.clone());
        let _pending = PendingGuard { hub: self, msg_id: &req.msg_id };
        let answered = |pkg: envelope::ResultPackage| {
            let (outcome, raw, policy) = (pkg.outcome, pkg.raw, pkg.policy);
            WritebackResult { outcome, raw, policy, agent_id: Some(agent_id.clone()), answered: true, took_ms: None }
        };
        // However the wait ends without an answer on the current connection, one that came by
        // the way the request was first sent, meanwhile, is the directory's word and wins.
        let unless_answered = |otherwise: WritebackResult| match self.lock().early.remove(&req.msg_id) {
            Some((_, pkg)) => answered(pkg),
            None => otherwise,
        };
        let not_confirmed = |why: &str| {
            unless_answered(WritebackResult {
                agent_id: Some(agent_id.clone()),
                ..WritebackResult::local(Outcome::AgentTimeout, why)
            })
        };
        loop {
            match self.attempt(&req.msg_id, &agent_id, has_row, &route, &frame, deadline).await {
                // Carried on, "set" may be the agent's word on what it did for the first sending,
                // whose password need not be the one sent now: that one must be in place.
                Ok(Ok(pkg)) if only.is_some() && pkg.outcome.password_set() && req.password.is_some() => {
                    let why = "answered \"set\" to a writeback carried on";
                    return match self.check(&req, Which::Any, &agent_id, why, deadline).await {
                        Some(checked) if checked.outcome == Outcome::Success => answered(pkg),
                        _ => not_confirmed("carried on: set, but not the password sent again (or nobody could check)"),
                    };
                }
                // The answer is recorded with the outcome (`writebacks::finish`), by the caller.
                Ok(Ok(pkg)) => return answered(pkg),
                // The agent's connection went away before its answer. Once the agent is back (on
                // this instance or another), the same sealed request goes to it again: it answers
                // a message id once, from what it did, so the person gets the directory's answer
                // and nothing is written twice. An agent that is not back soon while another is
                // alive: that one checks whether the new password is in place.
                Ok(Err(why)) => {
                    let soon = deadline.min(tokio::time::Instant::now() + AGENT_RETURN_GRACE);
                    let mut back = self.agent_back(&req.msg_id, &req.directory, &agent_id, soon).await;
                    if back.is_none() {
                        let checked = self.check(&req, Which::Except(&agent_id), &agent_id, GONE, deadline).await;
                        if let Some(checked) = checked {
                            return unless_answered(checked);
                        }
                        back = self.agent_back(&req.msg_id, &req.directory, &agent_id, deadline).await;
                    }
                    match back {
                        Some(Back::Route(back)) => {
                            tracing::info!(msg_id = %req.msg_id, agent = %agent_id, "agent back: the request is sent again");
                            route = back;
                        }
                        // Its answer came by the way it was first sent, after all.
                        Some(Back::Answer(pkg)) => return answered(pkg),
                        None => return not_confirmed(why),
                    }
                }
                Err(()) => return not_confirmed("no answer before the deadline"),
            }
        }
    }

    /// Sends `frame` to `agent_id` by `route` once and waits for its answer, until `deadline`
    /// (`Err`): the answer, or why none can come on this connection any more.
    async fn attempt(
        &self,
        msg_id: &MsgId,
        agent_id: &str,
        has_row: bool,
        route: &Route,
        frame: &Wire,
        deadline: tokio::time::Instant,
    ) -> Result<Result<envelope::ResultPackage, &'static str>, ()> {
        let (result_tx, result_rx) = oneshot::channel();
        let via = match route {
            Route::Local(_) => None,
            Route::Remote(instance) => Some(instance.clone()),
        };
        let pending = Pending { agent_id: agent_id.to_string(), has_row, via, tx: result_tx };
        self.lock().pending.insert(msg_id.clone(), pending);
        tracing::debug!(msg_id = %msg_id, agent = %agent_id, bytes = frame.len(), "request sent");
        tokio::time::timeout_at(deadline, async {
            let sent = match route {
                Route::Local(tx) => tx.send(frame.clone()).await.is_ok(),
                Route::Remote(instance) => self.forward(instance, agent_id, frame).await,
            };
            if !sent {
                return Err("agent connection closed before sending");
            }
            result_rx.await.map_err(|_| "agent disconnected before answering")
        })
        .await
        .map_err(|_| ())
    }

    /// The agent a writeback carried on must go to ([`Hub::carry_on`]), once it is alive here or
    /// on another instance; when it is not back soon while another is alive, that one checks
    /// whether the new password is in place (`Err`: the answer, definite or not confirmed).
    async fn only(
        &self,
        req: &WritebackRequest<'_>,
        agent: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(String, Route, u32), WritebackResult> {
        if let Some(picked) = self.pick(&req.directory, Which::Only(agent)) {
            return Ok(picked);
        }
        let soon = deadline.min(tokio::time::Instant::now() + AGENT_RETURN_GRACE);
        let mut back = self.agent_back(&req.msg_id, &req.directory, agent, soon).await.is_some();
        if !back {
            if let Some(checked) = self.check(req, Which::Except(agent), agent, GONE, deadline).await {
                return Err(checked);
            }
            back = self.agent_back(&req.msg_id, &req.directory, agent, deadline).await.is_some();
        }
        back.then(|| self.pick(&req.directory, Which::Only(agent))).flatten().ok_or_else(|| WritebackResult {
            agent_id: Some(agent.to_string()),
            ..WritebackResult::local(Outcome::AgentTimeout, "the agent that holds it is gone and none could check")
        })
    }

    /// When the agent that holds a password write (`holder`) cannot answer for it: asks a live
    /// agent among `which` whether the new password is in place, by binding as the person with
    /// it (a request of its own: the write itself never goes to a second agent, so no message id
    /// is carried out by two). `None` when there is nothing to check (no agent, no new password)
    /// or the check gave no clear answer.
    async fn check(
        &self,
        req: &WritebackRequest<'_>,
        which: Which<'_>,
        holder: &str,
        why: &str,
        deadline: tokio::time::Instant,
    ) -> Option<WritebackResult> {
        let password = req.password.filter(|_| matches!(req.op, Op::Reset | Op::Change))?;
        let now = self.clock.now();
        let (other, route, key_version) = self.pick(&req.directory, which)?;
        let check = WritebackRequest {
            msg_id: MsgId::random(),
            op: Op::Verify,
            directory: req.directory.clone(),
            anchor: req.anchor.clone(),
            password: Some(password),
            old_password: None,
            flags: Flags::default(),
            actor: req.actor.clone(),
        };
        let frame = Wire::sealed(&self.seal_request(&other, key_version, &check, now).await.ok()?);
        let _pending = PendingGuard { hub: self, msg_id: &check.msg_id };
        let pkg = self.attempt(&check.msg_id, &other, false, &route, &frame, deadline).await.ok()?.ok()?;
        let (outcome, seen) = match pkg.outcome {
            Outcome::Success | Outcome::MustChange | Outcome::PasswordExpired => (Outcome::Success, "in place"),
            Outcome::OldPasswordWrong => (Outcome::NotWritten, "not in place"),
            _ => return None,
        };
        tracing::warn!(msg_id = %req.msg_id, agent = holder, why, checked_by = %other, seen, "another request checked the new password");
        let raw = format!("agent {holder} {why}; agent {other} found the new password {seen} ({})", pkg.outcome.code());
        Some(WritebackResult {
            outcome,
            raw,
            policy: None,
            agent_id: Some(holder.to_string()),
            answered: false,
            took_ms: None,
        })
    }

    /// Waits until `agent_id` is alive again for `directory`, here or on another instance, but
    /// not past `deadline`, nor for an agent revoked meanwhile: where it is then; or its answer to
    /// `msg_id`, if that comes meanwhile.
    async fn agent_back(
        &self,
        msg_id: &MsgId,
        directory: &DirectoryId,
        agent_id: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Back> {
        const EVERY: Duration = Duration::from_millis(100);
        loop {
            {
                let mut inner = self.lock();
                if inner.early.get(msg_id).is_some_and(|(from, _)| from == agent_id) {
                    return inner.early.remove(msg_id).map(|(_, pkg)| Back::Answer(pkg));
                }
                if inner.revoked.contains(agent_id) {
                    return None;
                }
            }
            if let Some((_, route, _)) = self.pick(directory, Which::Only(agent_id)) {
                return Some(Back::Route(route));
            }
            if tokio::time::Instant::now() + EVERY >= deadline {
                return None;
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests;
