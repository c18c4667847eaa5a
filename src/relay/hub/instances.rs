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
//! Every note is authenticated (HMAC under a key derived from the data key, which every instance
//! shares, for its channel) and dated by its sender's clock: one that anybody else with access to
//! the database makes up, or one more than 30 s old, is ignored. (One repeated within those 30 s
//! can only say again what an instance said: a request the agent answers once, a word that makes
//! a waiter send its request again.) A revocation is also checked in the database before it is
//! acted on. The instances' clocks must agree within those 30 s.
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
    /// The agent's connection to instance `from` ended before it answered `msg_id`.
    Gone { msg_id: MsgId, agent: String, from: String },
    /// The agent's keys changed: cached ones are forgotten.
    Keys { agent: String },
    /// The agent was revoked: its connections end now.
    Revoked { agent: String },
}

fn channel_of(instance: &str) -> String {
    format!("{INSTANCE_CHANNEL}{instance}")
}

/// How long a note stays acceptable after it was sent (instances' clocks may differ a little).
const NOTE_TTL_SECS: i64 = 30;

/// A note as it travels: dated and authenticated for its channel.
#[derive(serde::Serialize, serde::Deserialize)]
struct Signed {
    at: i64,
    note: String,
    mac: String,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Sends a payload made by [`Hub::seal_note`] on `channel`; false if it could not be sent (or on
/// SQLite, with no other instance).
async fn send_note(db: &Db, channel: &str, payload: Option<String>) -> bool {
    let Some(payload) = payload.filter(|_| db.is_postgres()) else { return false };
    match Stmt::new("SELECT pg_notify($1, $2)").bind(channel).bind(payload).run(db).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "sending a relay note through PostgreSQL failed");
            false
        }
    }
}

impl Hub {
    /// `note` for `channel`, dated and authenticated; `None` if it would not fit in a NOTIFY.
    fn seal_note(&self, channel: &str, note: &Note) -> Option<String> {
        let note = serde_json::to_string(note).ok()?;
        let at = unix_now();
        let mac = self.notes_key.hash(&[channel.as_bytes(), b"\n", at.to_string().as_bytes(), b"\n", note.as_bytes()]);
        let payload = serde_json::to_string(&Signed { at, note, mac }).ok()?;
        if payload.len() >= MAX_NOTE {
            tracing::error!(bytes = payload.len(), "a relay note too large for PostgreSQL's NOTIFY");
            return None;
        }
        Some(payload)
    }

    /// The note in `payload`, if an instance sealed it for `channel` lately.
    fn open_note(&self, channel: &str, payload: &str) -> Option<Note> {
        let signed: Signed = serde_json::from_str(payload).ok()?;
        let at = signed.at.to_string();
        let parts: [&[u8]; 5] = [channel.as_bytes(), b"\n", at.as_bytes(), b"\n", signed.note.as_bytes()];
        if !self.notes_key.matches(&parts, &signed.mac) || (unix_now() - signed.at).abs() > NOTE_TTL_SECS {
            return None;
        }
        serde_json::from_str(&signed.note).ok()
    }

    async fn notify(&self, channel: &str, note: &Note) -> bool {
        send_note(&self.db, channel, self.seal_note(channel, note)).await
    }

    /// Tells every instance that `agent`'s keys changed, or that it was revoked (`revoked`).
    pub async fn announce(&self, agent: &str, revoked: bool) {
        let agent = agent.to_string();
        let note = if revoked { Note::Revoked { agent } } else { Note::Keys { agent } };
        self.notify(AGENTS_CHANNEL, &note).await;
    }

    /// Sends a sealed request to `agent` through the instance that holds its connection.
    pub(super) async fn forward(&self, instance: &str, agent: &str, frame: &Wire) -> bool {
        let note = Note::Request { from: self.instance.clone(), agent: agent.to_string(), frame: B64.encode(&frame.0) };
        self.notify(&channel_of(instance), &note).await
    }

    /// [`Hub::notify`] to one instance, from code that cannot wait.
    pub(super) fn tell_later(&self, instance: &str, note: Note) {
        let channel = channel_of(instance);
        let (db, payload) = (self.db.clone(), self.seal_note(&channel, &note));
        tokio::spawn(async move { send_note(&db, &channel, payload).await });
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
            Note::Gone { msg_id, agent, from } => {
                // Its waiter sends it again once the agent is back (`send_and_wait`); a word
                // about an earlier attempt through another instance changes nothing.
                let mut inner = self.lock();
                let this_attempt = |p: &Pending| p.agent_id == agent && p.via.as_deref() == Some(from.as_str());
                if inner.pending.get(&msg_id).is_some_and(this_attempt) {
                    inner.pending.remove(&msg_id);
                }
            }
            Note::Keys { agent } => self.forget_keys(&agent),
            Note::Revoked { agent } => {
                // Only what the database says: a note cannot cut an agent off by itself.
                match store::agents::revoked_ids(&self.db).await {
                    Ok(ids) if ids.contains(&agent) => {}
                    _ => return,
                }
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
            let gone = Note::Gone { msg_id: sealed.msg_id, agent, from: self.instance.clone() };
            self.notify(&channel_of(&from), &gone).await;
        }
    }

    /// This instance's live, proven agent connections, as rows for `relay_presence` (their time
    /// is the database's, set as they are written).
    fn presence_rows(&self) -> Vec<store::presence::PresenceRow> {
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
                    last_seen: 0,
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
                    read_at: Instant::now(),
                })
            })
            .collect();
        let mut inner = self.lock();
        inner.remote = remote;
        let inner = &mut *inner;
        let (remote, conns) = (&inner.remote, &inner.conns);
        let alive_on = |instance: &str, agent: &str| {
            remote.iter().any(|r| r.instance == instance && r.agent_id == agent && fresh(r))
        };
        let alive_elsewhere = |instance: &str, agent: &str| {
            conns.values().any(|c| c.agent_id == agent && c.status.is_some())
                || remote.iter().any(|r| r.instance != instance && r.agent_id == agent && fresh(r))
        };
        inner.pending.retain(|_, p| match &p.via {
            Some(via) => alive_on(via, &p.agent_id) || !alive_elsewhere(via, &p.agent_id),
            None => true,
        });
    }
}

/// Runs, for as long as the portal does, what ties this instance to the others on PostgreSQL:
/// its listener and its presence. On SQLite, with one instance, only its stamp of being alive
/// (the health page shows it, and a form sent again after a restart is carried on by it).
pub async fn run(hub: Arc<Hub>) {
    if let Db::Postgres(db) = &hub.db {
        tokio::spawn(listen(hub.clone(), db.pool().clone()));
    }
    // Its stamps on a connection of their own (see `store::own_connection`).
    let own = store::own_connection(&hub.db);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = hub.presence_changed.notified() => {}
        }
        let Some(db) = own.as_ref() else {
            if let Err(e) = store::presence::stamp(&hub.db, &hub.instance, hub.started_at).await {
                tracing::warn!(error = %e, "stamping this instance alive in the database failed");
            }
            continue;
        };
        let rows = hub.presence_rows();
        if let Err(e) = store::presence::publish(db, &hub.instance, hub.started_at, &rows).await {
            tracing::warn!(error = %e, "writing this instance's agents into the database failed");
        }
        match store::presence::others(db, &hub.instance, store::presence::STALE_SECS).await {
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
                Ok(n) => match hub.open_note(n.channel(), n.payload()) {
                    Some(note) => {
                        let hub = hub.clone();
                        tokio::spawn(async move { hub.on_note(note).await });
                    }
                    None => {
                        hub.metrics.refused_frame("note");
                        tracing::warn!(channel = n.channel(), "ignored a note that no instance sealed lately");
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_note_is_taken_only_as_an_instance_sealed_it_for_its_channel_lately() {
        let db = crate::store::connect("sqlite::memory:", 1).await.unwrap();
        let key = || DataKey::from_base64(&DataKey::generate_base64()).unwrap();
        let shared = key();
        let hub = |k: &DataKey| Hub::new(db.clone(), k.clone(), RelayConfig::default(), crate::Clock::default());
        let (one, two, outsider) = (hub(&shared), hub(&shared), hub(&key()));
        let note = Note::Keys { agent: "a-1".into() };
        let sealed = one.seal_note("passback_agents", &note).unwrap();
        assert!(matches!(two.open_note("passback_agents", &sealed), Some(Note::Keys { agent }) if agent == "a-1"));
        assert!(two.open_note(&channel_of(&two.instance), &sealed).is_none(), "sealed for another channel");
        assert!(outsider.open_note("passback_agents", &sealed).is_none(), "another data key");
        let mut tampered: Signed = serde_json::from_str(&sealed).unwrap();
        tampered.note = tampered.note.replace("a-1", "a-2");
        assert!(two.open_note("passback_agents", &serde_json::to_string(&tampered).unwrap()).is_none());
        let mut old: Signed = serde_json::from_str(&sealed).unwrap();
        old.at -= NOTE_TTL_SECS + 1;
        old.mac =
            one.notes_key.hash(&[b"passback_agents", b"\n", old.at.to_string().as_bytes(), b"\n", old.note.as_bytes()]);
        assert!(two.open_note("passback_agents", &serde_json::to_string(&old).unwrap()).is_none(), "too old");
    }
}
