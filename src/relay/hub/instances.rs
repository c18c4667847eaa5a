//! Several `serve` instances on one PostgreSQL, sharing their agents.
//!
//! * **Presence.** Every second (and at once when an agent comes or goes), each instance replaces
//!   its rows in `relay_presence` with its live, proven agent connections and reads the other
//!   instances' rows. A row not renewed within the liveness window is of an instance that died.
//! * **Forwarding.** A request for an agent connected to another instance goes to that instance
//!   as a NOTIFY on its own channel, sealed as it is (the frame is the agent's to open). That
//!   instance hands it to the agent and remembers where it came from; the agent's sealed answer
//!   goes back the same way and is opened, checked and recorded by the instance that waits.
//! * **Keys and revocations** are announced on one channel that every instance listens to.
//!
//! Notifications are lost while an instance's listening connection is down: a request then waits
//! for its deadline like one to a silent agent, and the periodic checks (presence, revocations)
//! catch up within a second. On SQLite there is one instance and none of this runs.

use super::*;
use crate::store::Stmt;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;

/// Each instance listens on its own channel, this followed by its id.
const INSTANCE_CHANNEL: &str = "passback_relay_";
/// Every instance listens here.
const AGENTS_CHANNEL: &str = "passback_agents";
/// PostgreSQL refuses a notification of 8000 bytes or more.
const MAX_NOTE: usize = 7900;

/// What one instance tells another (or all) through PostgreSQL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// A sealed request for `agent`, connected to the instance it is sent to.
    Request { from: String, agent: String, frame: String },
    /// The agent's sealed answer, for the instance that waits for it.
    Result { agent: String, frame: String },
    /// The agent's connection ended before it answered `msg_id`.
    Gone { msg_id: MsgId, agent: String },
    /// The agent's keys changed: cached ones are forgotten.
    Keys { agent: String },
    /// The agent was revoked: its connections end now.
    Revoked { agent: String },
}

fn channel_of(instance: &str) -> String {
    format!("{INSTANCE_CHANNEL}{instance}")
}

/// Sends `note` on `channel`; false if it could not be sent (or on SQLite, with no other instance).
async fn notify(db: &Db, channel: &str, note: &Note) -> bool {
    if !db.is_postgres() {
        return false;
    }
    let payload = match serde_json::to_string(note) {
        Ok(p) if p.len() < MAX_NOTE => p,
        Ok(p) => {
            tracing::error!(bytes = p.len(), "a relay note too large for PostgreSQL's NOTIFY");
            return false;
        }
        Err(_) => return false,
    };
    match Stmt::new("SELECT pg_notify($1, $2)").bind(channel).bind(payload).run(db).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "sending a relay note through PostgreSQL failed");
            false
        }
    }
}

/// Tells every instance that `agent`'s keys changed, or that it was revoked (`revoked`).
pub async fn announce(db: &Db, agent: &str, revoked: bool) {
    let agent = agent.to_string();
    let note = if revoked { Note::Revoked { agent } } else { Note::Keys { agent } };
    notify(db, AGENTS_CHANNEL, &note).await;
}

impl Hub {
    /// Sends a sealed request to `agent` through the instance that holds its connection.
    pub(super) async fn forward(&self, instance: &str, agent: &str, frame: &Wire) -> bool {
        let note = Note::Request { from: self.instance.clone(), agent: agent.to_string(), frame: B64.encode(&frame.0) };
        notify(&self.db, &channel_of(instance), &note).await
    }

    /// [`notify`] to one instance, from code that cannot wait.
    pub(super) fn tell_later(&self, instance: &str, note: Note) {
        let (db, channel) = (self.db.clone(), channel_of(instance));
        tokio::spawn(async move { notify(&db, &channel, &note).await });
    }

    /// A result from an agent connected here, for a request another instance sent through this
    /// one: back to that instance, still sealed; true if it was one.
    pub(super) fn return_forwarded(&self, agent_id: &str, frame: &SealedFrame) -> bool {
        let now = self.clock.now();
        let origin = {
            let mut inner = self.lock();
            match inner.forwarded.get(&frame.msg_id) {
                Some(f) if f.agent_id == agent_id && f.until > now => inner.forwarded.remove(&frame.msg_id),
                _ => None,
            }
        };
        let Some(f) = origin else { return false };
        let note = Note::Result { agent: agent_id.to_string(), frame: B64.encode(frame.to_bytes()) };
        self.tell_later(&f.origin, note);
        true
    }

    /// Acts on what another instance said.
    async fn on_note(&self, note: Note) {
        match note {
            Note::Request { from, agent, frame } => self.pass_on(from, agent, &frame).await,
            Note::Result { agent, frame } => {
                let Some(frame) = B64.decode(&frame).ok().and_then(|b| crate::relay::protocol::parse_binary(&b).ok())
                else {
                    return;
                };
                if let Err(why) = self.deliver_result(&agent, &frame).await {
                    self.metrics.refused_frame(why.reason());
                    tracing::warn!(agent = %agent, reason = why.reason(), "refused a result passed on by another instance: {why}");
                }
            }
            Note::Gone { msg_id, agent } => {
                // Its waiter sends it again once the agent is back (`send_and_wait`).
                let mut inner = self.lock();
                if inner.pending.get(&msg_id).is_some_and(|p| p.agent_id == agent && p.via.is_some()) {
                    inner.pending.remove(&msg_id);
                }
            }
            Note::Keys { agent } => self.forget_keys(&agent),
            Note::Revoked { agent } => {
                let n = self.drop_agent(&agent);
                if n > 0 {
                    tracing::warn!(agent = %agent, connections = n, "dropped the connections of an agent revoked elsewhere");
                }
            }
        }
    }

    /// Hands a request from instance `from` to `agent`'s connection here, and remembers where
    /// its answer goes; tells `from` at once if the agent is not here (any more).
    async fn pass_on(&self, from: String, agent: String, frame: &str) {
        let Some(bytes) = B64.decode(frame).ok() else { return };
        let Ok(sealed) = crate::relay::protocol::parse_binary(&bytes) else { return };
        let now = self.clock.now();
        let tx = {
            let mut inner = self.lock();
            inner.forwarded.retain(|_, f| f.until > now);
            let tx = inner.conns.values().find(|c| c.agent_id == agent && c.status.is_some()).map(|c| c.tx.clone());
            if tx.is_some() {
                let until = self.remembered_until(now);
                let f = Forwarded { origin: from.clone(), agent_id: agent.clone(), until };
                inner.forwarded.insert(sealed.msg_id.clone(), f);
            }
            tx
        };
        let sent = match tx {
            Some(tx) => tx.send(Wire(bytes)).await.is_ok(),
            None => false,
        };
        if !sent {
            self.lock().forwarded.remove(&sealed.msg_id);
            let gone = Note::Gone { msg_id: sealed.msg_id, agent };
            notify(&self.db, &channel_of(&from), &gone).await;
        }
    }

    /// This instance's live, proven agent connections, as rows for `relay_presence`.
    fn presence_rows(&self, now: i64) -> Vec<store::presence::PresenceRow> {
        let window = self.liveness_window();
        let inner = self.lock();
        inner
            .conns
            .iter()
            .filter(|(_, c)| c.last_seen.elapsed() < window)
            .filter_map(|(id, c)| {
                Some(store::presence::PresenceRow {
                    instance: self.instance.clone(),
                    conn_id: i64::try_from(*id).ok()?,
                    agent_id: c.agent_id.clone(),
                    status_json: serde_json::to_string(c.status.as_ref()?).ok()?,
                    connected_at: c.connected_at,
                    last_seen: now,
                })
            })
            .collect()
    }

    /// Takes what the other instances last wrote of their agents. A request waiting on an agent
    /// through an instance that no longer has it, while the agent is alive elsewhere (here, or on
    /// a third instance), is sent again there.
    fn set_remote(&self, rows: Vec<store::presence::PresenceRow>) {
        let remote: Vec<RemoteConn> = rows
            .into_iter()
            .filter_map(|r| {
                Some(RemoteConn {
                    status: serde_json::from_str(&r.status_json).ok()?,
                    instance: r.instance,
                    agent_id: r.agent_id,
                    connected_at: r.connected_at,
                    last_seen: r.last_seen,
                })
            })
            .collect();
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.remote = remote;
        let inner = &mut *inner;
        let (remote, conns) = (&inner.remote, &inner.conns);
        let alive_on = |instance: &str, agent: &str| {
            remote.iter().any(|r| r.instance == instance && r.agent_id == agent && self.fresh(r, now))
        };
        let alive_elsewhere = |instance: &str, agent: &str| {
            conns.values().any(|c| c.agent_id == agent && c.status.is_some())
                || remote.iter().any(|r| r.instance != instance && r.agent_id == agent && self.fresh(r, now))
        };
        inner.pending.retain(|_, p| match &p.via {
            Some(via) => alive_on(via, &p.agent_id) || !alive_elsewhere(via, &p.agent_id),
            None => true,
        });
    }
}

/// Runs, for as long as the portal does, what ties this instance to the others on PostgreSQL:
/// its listener and its presence. Nothing on SQLite.
pub async fn run(hub: Arc<Hub>) {
    let Db::Postgres(pool) = hub.db.clone() else { return };
    tokio::spawn(listen(hub.clone(), pool));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = hub.presence_changed.notified() => {}
        }
        let now = hub.clock.now();
        if let Err(e) = store::presence::publish(&hub.db, &hub.instance, &hub.presence_rows(now)).await {
            tracing::warn!(error = %e, "writing this instance's agents into the database failed");
        }
        let since = now - i64::try_from(hub.liveness_window().as_secs()).unwrap_or(i64::MAX);
        match store::presence::others(&hub.db, &hub.instance, since).await {
            Ok(rows) => hub.set_remote(rows),
            Err(e) => tracing::warn!(error = %e, "reading the other instances' agents failed"),
        }
    }
}

/// Listens on this instance's channel and the agents' one, acting on each note as it comes
/// (each on a task of its own: one that waits for an agent's socket holds up no other).
async fn listen(hub: Arc<Hub>, pool: sqlx::PgPool) {
    let channels = [channel_of(&hub.instance), AGENTS_CHANNEL.to_string()];
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other instances; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all(channels.iter().map(String::as_str)).await {
            tracing::warn!(error = %e, "cannot listen for other instances; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(n) => match serde_json::from_str::<Note>(n.payload()) {
                    Ok(note) => {
                        let hub = hub.clone();
                        tokio::spawn(async move { hub.on_note(note).await });
                    }
                    Err(e) => tracing::warn!(error = %e, "an unreadable note from another instance"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other instances failed; listening again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}
