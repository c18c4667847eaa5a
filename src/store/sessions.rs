//! Where sessions are kept: in the portal's own database, whichever it is, so that any instance
//! can serve any request of a session. The tables and the encoding are those of
//! `tower-sessions-sqlx-store` (0.15), so that sessions written before stay valid, reached
//! through the portal's own statements (on connections it lends itself, see
//! [`super::Lending::lease`]).

use super::{Db, Stmt};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions_sqlx_store::SqliteStore;

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
        let written = self.time(stmt, record.expiry_date)?.run(&self.0).await.map_err(backend)?;
        Ok(written == 1)
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
        self.write(record, true).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let stmt = self.stmt(
            "SELECT data FROM tower_sessions WHERE id = ? AND expiry_date > ?",
            "SELECT data FROM tower_sessions.session WHERE id = ? \
             AND expiry_date > to_timestamp(CAST(? AS DOUBLE PRECISION) / 1000000)",
        );
        let stmt = self.time(stmt.bind(id.to_string()), OffsetDateTime::now_utc())?;
        let data: Option<(Vec<u8>,)> = stmt.fetch_optional(&self.0).await.map_err(backend)?;
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
