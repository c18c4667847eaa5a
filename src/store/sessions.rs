//! Where sessions are kept: in the portal's own database, whichever it is, so that any instance
//! can serve any request of a session. The tables and the encoding are those of
//! `tower-sessions-sqlx-store` (0.15), so that sessions written before stay valid, reached
//! through the portal's own statements (on connections it lends itself, see
//! [`super::Lending::lease`]).
//!
//! A session changed by a request is saved after its handler, a trip of its own. A handler that
//! ends with a transaction (a reset's outcome) can [`stage`] the save into it instead: the
//! session is then written with the outcome, atomically, and the save after the handler writes
//! nothing as long as the session is still what was staged.

use super::{Batch, Db, Stmt};
use std::cell::RefCell;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions::Session;
use tower_sessions_sqlx_store::SqliteStore;

/// A session's data, as saved.
type Data = std::collections::HashMap<String, serde_json::Value>;

tokio::task_local! {
    /// While [`stage`] asks the session to save itself: the statement that would write it, kept
    /// here instead of run, with what it writes.
    static STAGING: RefCell<Option<(Stmt, Id, Data)>>;
    /// For the whole of a request ([`request_scope`]): the session as a transaction of the
    /// request wrote it (see [`Staged::committed`]).
    static WRITTEN: RefCell<Option<(Id, Data)>>;
}

/// Runs a request (`work`: the session layer and everything inside it) with room to remember
/// the session as one of its transactions wrote it, so that the save after its handler need not
/// write the same again (see [`stage`]).
pub async fn request_scope<F: std::future::Future>(work: F) -> F::Output {
    WRITTEN.scope(RefCell::new(None), work).await
}

/// The save of `session` as it is now, made a statement to push into a transaction of the
/// request (see [`Staged`]): one trip fewer than the save of its own after the handler. Nothing
/// to push for a session the store has not made yet (it is made after the handler as ever).
/// The expiry written is counted from now, a little earlier than the cookie's.
pub async fn stage(session: &Session) -> Result<Staged, tower_sessions::session::Error> {
    if session.id().is_none() {
        return Ok(Staged { stmt: None, saved: None });
    }
    let kept = STAGING.scope(RefCell::new(None), async { session.save().await.map(|()| STAGING.with(RefCell::take)) });
    let (stmt, saved) = kept.await?.map(|(stmt, id, data)| (stmt, (id, data))).unzip();
    Ok(Staged { stmt, saved })
}

/// A session's save made part of a transaction of its request (the one that records an act's
/// outcome) in place of a trip of its own after the handler. If the session changes after it
/// was staged, or the transaction is never run, it is saved after the handler as ever.
pub struct Staged {
    /// Until it is pushed into a batch.
    stmt: Option<Stmt>,
    saved: Option<(Id, Data)>,
}

impl Staged {
    /// Pushes the save into `batch`, as a statement of a group (its table is the sessions'),
    /// once.
    pub fn push_into(&mut self, batch: &mut Batch) {
        if let Some(stmt) = self.stmt.take() {
            batch.push_together(stmt);
        }
    }

    /// Tells the request that the batch the save was pushed into committed: the save after the
    /// handler writes nothing if the session is still as it was staged. Nothing if it was
    /// never pushed. Call it only once that batch ran without error.
    pub fn committed(self) {
        if let (None, Some(saved)) = (self.stmt, self.saved) {
            let _ = WRITTEN.try_with(|w| *w.borrow_mut() = Some(saved));
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sessions(Db);

impl Sessions {
    /// The session store of `db`, its table made if need be (on PostgreSQL, the migrations made it).
    pub async fn of(db: &Db) -> sqlx::Result<Self> {
        if let Db::Sqlite(sqlite) = db {
            SqliteStore::new(sqlite.pool().clone()).migrate().await?;
        }
        Ok(Sessions(db.clone()))
    }

    /// The statement for `sqlite`, or for `postgres`, as the database is.
    fn stmt(&self, sqlite: &'static str, postgres: &'static str) -> Stmt {
        Stmt::new(if self.0.is_postgres() { postgres } else { sqlite })
    }

    /// `at` as the store of the database writes it: RFC 3339 text on SQLite (its comparisons
    /// are of text), microseconds since 1970 on PostgreSQL (made a `timestamptz` there).
    fn time(&self, stmt: Stmt, at: OffsetDateTime) -> session_store::Result<Stmt> {
        Ok(if self.0.is_postgres() {
            let micros = i64::try_from(at.unix_timestamp_nanos() / 1_000)
                .map_err(|e| session_store::Error::Encode(e.to_string()))?;
            stmt.bind(micros)
        } else {
            stmt.bind(at.format(&Rfc3339).map_err(|e| session_store::Error::Encode(e.to_string()))?)
        })
    }

    /// Inserts or replaces `record` (`replace`), or inserts it only if its id is new: whether
    /// it was written.
    async fn write(&self, record: &Record, replace: bool) -> session_store::Result<bool> {
        let written = self.upsert(record, replace)?.run_brief(&self.0).await.map_err(backend)?;
        Ok(written == 1)
    }

    /// The statement [`Self::write`] runs.
    fn upsert(&self, record: &Record, replace: bool) -> session_store::Result<Stmt> {
        let stmt = match replace {
            true => self.stmt(
                "INSERT INTO tower_sessions (id, data, expiry_date) VALUES (?, ?, ?) \
                 ON CONFLICT(id) DO UPDATE SET data = excluded.data, expiry_date = excluded.expiry_date",
                "INSERT INTO tower_sessions.session (id, data, expiry_date) VALUES (?, ?, to_timestamp(CAST(? AS DOUBLE PRECISION) / 1000000)) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, expiry_date = excluded.expiry_date",
            ),
            false => self.stmt(
                "INSERT INTO tower_sessions (id, data, expiry_date) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING",
                "INSERT INTO tower_sessions.session (id, data, expiry_date) VALUES (?, ?, to_timestamp(CAST(? AS DOUBLE PRECISION) / 1000000)) \
                 ON CONFLICT (id) DO NOTHING",
            ),
        };
        let stmt = stmt.bind(record.id.to_string()).bind(encoded(record)?);
        self.time(stmt, record.expiry_date)
    }
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn encoded(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A new id until one is free (a clash of 128 random bits is all but impossible).
        while !self.write(record, false).await? {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        if STAGING.try_with(|_| ()).is_ok() {
            let stmt = self.upsert(record, true)?;
            STAGING.with(|s| *s.borrow_mut() = Some((stmt, record.id, record.data.clone())));
            return Ok(());
        }
        // Written as it is by a transaction of this request: nothing to write again.
        let written = WRITTEN
            .try_with(|w| w.borrow_mut().take_if(|(id, data)| *id == record.id && *data == record.data).is_some())
            .unwrap_or(false);
        if written {
            return Ok(());
        }
        self.write(record, true).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let stmt = self.stmt(
            "SELECT data FROM tower_sessions WHERE id = ? AND expiry_date > ?",
            "SELECT data FROM tower_sessions.session WHERE id = ? \
             AND expiry_date > to_timestamp(CAST(? AS DOUBLE PRECISION) / 1000000)",
        );
        let stmt = self.time(stmt.bind(id.to_string()), OffsetDateTime::now_utc())?;
        let data: Option<(Vec<u8>,)> = stmt.fetch_optional_brief(&self.0).await.map_err(backend)?;
        data.map(|(d,)| rmp_serde::from_slice(&d).map_err(|e| session_store::Error::Decode(e.to_string()))).transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let stmt =
            self.stmt("DELETE FROM tower_sessions WHERE id = ?", "DELETE FROM tower_sessions.session WHERE id = ?");
        stmt.bind(id.to_string()).run(&self.0).await.map_err(backend)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ExpiredDeletion for Sessions {
    async fn delete_expired(&self) -> session_store::Result<()> {
        let stmt = self.stmt(
            "DELETE FROM tower_sessions WHERE datetime(expiry_date) < datetime('now')",
            "DELETE FROM tower_sessions.session WHERE expiry_date < now()",
        );
        stmt.run(&self.0).await.map_err(backend)?;
        Ok(())
    }
}
