//! Where sessions are kept: in the portal's own database, whichever it is, so that any instance
//! can serve any request of a session.

use super::{Db, Stmt};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

#[derive(Debug, Clone)]
pub enum Sessions {
    /// The table and the encoding of `tower-sessions-sqlx-store`'s SQLite store, through the
    /// portal's own statements (see [`super::Sqlite::lease`]).
    Sqlite(Db),
    Postgres(PostgresStore),
}

impl Sessions {
    /// The session store of `db`, its table made if need be (on PostgreSQL, the migrations made it).
    pub async fn of(db: &Db) -> sqlx::Result<Self> {
        Ok(match db {
            Db::Sqlite(sqlite) => {
                SqliteStore::new(sqlite.pool().clone()).migrate().await?;
                Sessions::Sqlite(db.clone())
            }
            Db::Postgres(pg) => Sessions::Postgres(PostgresStore::new(pg.pool().clone())),
        })
    }
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn encoded(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

/// A time as the SQLite store writes it (RFC 3339, UTC), so that its comparisons hold.
fn written(at: OffsetDateTime) -> session_store::Result<String> {
    at.format(&Rfc3339).map_err(|e| session_store::Error::Encode(e.to_string()))
}

async fn sqlite_create(db: &Db, record: &mut Record) -> session_store::Result<()> {
    loop {
        let inserted = Stmt::new("INSERT OR ABORT INTO tower_sessions (id, data, expiry_date) VALUES (?, ?, ?)")
            .bind(record.id.to_string())
            .bind(encoded(record)?)
            .bind(written(record.expiry_date)?)
            .run(db)
            .await;
        match inserted {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => record.id = Id::default(),
            Err(e) => return Err(backend(e)),
        }
    }
}

async fn sqlite_save(db: &Db, record: &Record) -> session_store::Result<()> {
    Stmt::new(
        "INSERT INTO tower_sessions (id, data, expiry_date) VALUES (?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET data = excluded.data, expiry_date = excluded.expiry_date",
    )
    .bind(record.id.to_string())
    .bind(encoded(record)?)
    .bind(written(record.expiry_date)?)
    .run(db)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn sqlite_load(db: &Db, id: &Id) -> session_store::Result<Option<Record>> {
    let data: Option<(Vec<u8>,)> = Stmt::new("SELECT data FROM tower_sessions WHERE id = ? AND expiry_date > ?")
        .bind(id.to_string())
        .bind(written(OffsetDateTime::now_utc())?)
        .fetch_optional(db)
        .await
        .map_err(backend)?;
    data.map(|(d,)| rmp_serde::from_slice(&d).map_err(|e| session_store::Error::Decode(e.to_string()))).transpose()
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Sessions::Sqlite(db) => sqlite_create(db, record).await,
            Sessions::Postgres(s) => s.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            Sessions::Sqlite(db) => sqlite_save(db, record).await,
            Sessions::Postgres(s) => s.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Sessions::Sqlite(db) => sqlite_load(db, id).await,
            Sessions::Postgres(s) => s.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            Sessions::Sqlite(db) => {
                Stmt::new("DELETE FROM tower_sessions WHERE id = ?")
                    .bind(id.to_string())
                    .run(db)
                    .await
                    .map_err(backend)?;
                Ok(())
            }
            Sessions::Postgres(s) => s.delete(id).await,
        }
    }
}

#[async_trait::async_trait]
impl ExpiredDeletion for Sessions {
    async fn delete_expired(&self) -> session_store::Result<()> {
        match self {
            Sessions::Sqlite(db) => {
                Stmt::new("DELETE FROM tower_sessions WHERE datetime(expiry_date) < datetime('now')")
                    .run(db)
                    .await
                    .map_err(backend)?;
                Ok(())
            }
            Sessions::Postgres(s) => s.delete_expired().await,
        }
    }
}
