//! The portal's database: sqlx queries behind small repositories. SQLite by default, where
//! `serve` runs the statements every request makes on the request's own thread ([`inline`]).
//! Only the portal uses this module; the agent never touches the database.

pub mod agents;
pub mod attempts;
pub mod audit;
pub mod batch;
pub mod cloud;
pub mod codes;
pub mod housekeeping;
mod inline;
pub mod passkeys;
pub mod presence;
pub mod reminders;
pub mod reports;
pub mod security;
pub mod sessions;
pub mod staff;
pub mod users;
mod value;
pub mod writebacks;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

pub use batch::{Batch, JsonText, Ran, Row, Stmt};
pub use value::Value;

/// The portal's database: the embedded SQLite file, or PostgreSQL shared by several instances.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

/// The SQLite file's connections (see [`Lending`]).
pub type Sqlite = Lending<sqlx::Sqlite>;
/// PostgreSQL's connections (see [`Lending`]).
pub type Postgres = Lending<sqlx::Postgres>;

/// A database's connections: sqlx's pool (migrations, transactions made by hand, PostgreSQL's
/// listener), and connections for statements and batches ([`Lending::lease`]).
#[derive(Debug)]
pub struct Lending<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    /// Where the connections lent are opened, when not in `pool`: a pool of their own, made
    /// with the same settings, whose connections are all taken out of it as they open.
    opener: Option<sqlx::Pool<DB>>,
    spare: std::sync::Arc<Spare<DB::Connection>>,
    /// On a SQLite file, the one connection that writes ([`Lending::lease_to_write`]).
    writer: Option<std::sync::Arc<Spare<DB::Connection>>>,
    /// On `serve`'s SQLite file, connections that run brief statements on the calling thread.
    inline: Option<std::sync::Arc<inline::Inline>>,
}

impl<DB: sqlx::Database> Clone for Lending<DB> {
    fn clone(&self) -> Self {
        Lending {
            pool: self.pool.clone(),
            opener: self.opener.clone(),
            spare: self.spare.clone(),
            writer: self.writer.clone(),
            inline: self.inline.clone(),
        }
    }
}

/// The connections lent for statements, idle, with how many may be out at once
/// (`max_connections`). On SQLite they are taken out of the pool (which keeps up to as many of
/// its own for transactions made by hand, which few acts use); an in-memory SQLite database
/// lives in its one connection, which is never taken out (`turns` is `None`). On PostgreSQL
/// they are opened here (the pool keeps only [`HAND_MADE`] and the listener). The last given
/// back is lent first: on SQLite its pages are the likeliest to be still cached.
#[derive(Debug)]
struct Spare<C> {
    idle: std::sync::Mutex<Vec<Idle<C>>>,
    turns: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// Whether a connection is a link that can break (PostgreSQL's), looked after as sqlx's
    /// pool would: a connection idle for longer than [`TRUSTED_IDLE`] is pinged before it is
    /// lent (and one that does not answer is closed); one whose statement did not end (its
    /// caller went away half way) is pinged before it is given back, holding its turn
    /// meanwhile; one that failed as a connection, or that lived or idled past the pool's own
    /// limits, is closed.
    link: bool,
}

#[derive(Debug)]
struct Idle<C> {
    conn: C,
    opened: std::time::Instant,
    since: std::time::Instant,
}

/// How long a link to PostgreSQL may have been idle and still be lent without a ping first.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);
/// How long a ping may take before the link is taken for broken (a half-open one would
/// otherwise wait for the kernel, many minutes).
const PING_FOR: Duration = Duration::from_secs(5);
/// A link idle this long is closed rather than lent, and one open this long is closed when it
/// is given back (sqlx's pool's own defaults): the server's backends are renewed.
const IDLE_AT_MOST: Duration = Duration::from_secs(600);
const LIVES_AT_MOST: Duration = Duration::from_secs(1800);

impl<DB: sqlx::Database> Lending<DB> {
    fn new(pool: sqlx::Pool<DB>, at_once: Option<u32>, opener: Option<sqlx::Pool<DB>>) -> Self {
        let link = opener.is_some();
        let spare = |at_once: Option<u32>| {
            let turns = at_once.map(|n| std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1) as usize)));
            std::sync::Arc::new(Spare { idle: std::sync::Mutex::new(Vec::new()), turns, link })
        };
        // A SQLite file's writer; an in-memory database has its one connection only.
        let writer = at_once.filter(|_| !link).map(|_| spare(Some(1)));
        Lending { pool, opener, spare: spare(at_once), writer, inline: None }
    }

    /// A connection for a statement or batch that writes. SQLite lets one connection write at a
    /// time, and a connection's cached pages are all dropped whenever another connection wrote
    /// since it last read: so on a SQLite file every write is made by one connection, in turn.
    /// Writers wait for it here, not in SQLite's busy handler (which sleeps and tries again),
    /// and it finds in its cache the pages the last write left. Reads go on at once on the
    /// others. A transaction made by hand ([`Db::begin`]) holds the writer's turn while it
    /// writes on a connection of its own. A write waits for its turn for as long as SQLite's
    /// busy handler would wait for its lock ([`BUSY_FOR`]), then fails as busy.
    pub(crate) async fn lease_to_write(&self) -> sqlx::Result<Lease<DB>> {
        match &self.writer {
            Some(writer) => {
                tokio::time::timeout(BUSY_FOR, self.lease_from(writer)).await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
            }
            None => self.lease().await,
        }
    }

    /// The writer's turn without its connection (see [`Lending::lease_to_write`]), if there is
    /// a writer.
    async fn writer_turn(&self) -> sqlx::Result<Option<tokio::sync::OwnedSemaphorePermit>> {
        let Some(turns) = self.writer.as_ref().and_then(|w| w.turns.clone()) else { return Ok(None) };
        match tokio::time::timeout(BUSY_FOR, turns.acquire_owned()).await {
            Ok(Ok(turn)) => Ok(Some(turn)),
            Ok(Err(_)) => Err(sqlx::Error::PoolClosed),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// A connection for one statement or one batch, given back when the lease ends. sqlx's pool
    /// sends every connection given back a ping (a round trip: to SQLite's thread, or to the
    /// PostgreSQL server) to learn whether a statement dropped half way left it unusable.
    /// A SQLite connection runs its statements in the order they are sent, so the next one
    /// simply follows; a PostgreSQL connection is pinged only when its statement did not end
    /// (see [`Spare::link`]). A connection is not given back while a batch's transaction may be open
    /// on it, nor once it failed as a connection (its thread gone, its link broken).
    pub(crate) async fn lease(&self) -> sqlx::Result<Lease<DB>> {
        self.lease_from(&self.spare).await
    }

    async fn lease_from(&self, spare: &std::sync::Arc<Spare<DB::Connection>>) -> sqlx::Result<Lease<DB>> {
        let Some(turns) = &spare.turns else {
            let conn = Some(Leased::Pooled(self.pool.acquire().await?));
            return Ok(Lease { conn, spare: None, in_transaction: false, ended: true });
        };
        let turn = turns.clone().acquire_owned().await.map_err(|_| sqlx::Error::PoolClosed)?;
        let (conn, opened) = loop {
            let idle = spare.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(i) if spare.link && (i.since.elapsed() > IDLE_AT_MOST || i.opened.elapsed() > LIVES_AT_MOST) => {}
                Some(mut i) if spare.link && i.since.elapsed() > TRUSTED_IDLE => {
                    // Perhaps dropped by the server meanwhile (a restart, a failover): then the
                    // next one, or a new one.
                    if answers(&mut i.conn).await {
                        break (i.conn, i.opened);
                    }
                }
                Some(i) => break (i.conn, i.opened),
                None => {
                    let from = self.opener.as_ref().unwrap_or(&self.pool);
                    break (from.acquire().await?.detach(), std::time::Instant::now());
                }
            }
        };
        let ended = !spare.link;
        let spare = Some((spare.clone(), turn, opened));
        Ok(Lease { conn: Some(Leased::Taken(conn)), spare, in_transaction: false, ended })
    }

    pub(crate) fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    fn close_spare(&self) {
        if let Some(inline) = &self.inline {
            inline.close();
        }
        for spare in std::iter::once(&self.spare).chain(&self.writer) {
            let mut idle = spare.idle.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(turns) = &spare.turns {
                turns.close();
            }
            idle.clear();
        }
    }
}

/// Whether a connection answers a ping in time (which also reads to their end any answers still
/// due to statements sent before).
async fn answers<C: sqlx::Connection>(conn: &mut C) -> bool {
    matches!(tokio::time::timeout(PING_FOR, conn.ping()).await, Ok(Ok(())))
}

impl<C> Spare<C> {
    /// Takes `conn` back, unless the database is closing or it lived long enough.
    fn give_back(&self, conn: C, opened: std::time::Instant, turn: &tokio::sync::OwnedSemaphorePermit) {
        if self.link && opened.elapsed() > LIVES_AT_MOST {
            return;
        }
        // Under the lock that closing takes, so that none is given back after it.
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !turn.semaphore().is_closed() {
            idle.push(Idle { conn, opened, since: std::time::Instant::now() });
        }
    }
}

/// A connection lent by [`Lending::lease`].
pub(crate) struct Lease<DB: sqlx::Database> {
    conn: Option<Leased<DB>>,
    spare: Option<Turn<DB::Connection>>,
    /// Set while a batch's transaction runs: a lease dropped then (its task ended half way) does
    /// not give its connection back.
    in_transaction: bool,
    /// Whether what was sent on the connection has ended (always, for a SQLite connection).
    ended: bool,
}

/// Where a lent connection goes back to, the turn it holds, and when it was opened.
type Turn<C> = (std::sync::Arc<Spare<C>>, tokio::sync::OwnedSemaphorePermit, std::time::Instant);

enum Leased<DB: sqlx::Database> {
    Taken(DB::Connection),
    Pooled(sqlx::pool::PoolConnection<DB>),
}

/// What a failed statement left its connection as.
#[derive(Debug, PartialEq, Eq)]
enum Left {
    /// The database refused the statement, or what was asked of its answer was not there.
    Usable,
    /// Its rows did not decode as they came: the rest of its answer may still be on the way.
    Unsure,
    /// The link broke, the server ended the session, or the connection's thread is gone.
    Broken,
}

fn left_by(e: &sqlx::Error) -> Left {
    use sqlx::Error::*;
    match e {
        Database(d) => {
            let code = d.code().unwrap_or_default();
            let fatal = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some_and(|pg| {
                matches!(pg.severity(), sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic)
            });
            // Class 08: connection exception; 57P: the server is shutting down or ending sessions.
            if fatal || code.starts_with("08") || code.starts_with("57P") {
                Left::Broken
            } else {
                Left::Usable
            }
        }
        RowNotFound | TypeNotFound { .. } | ColumnIndexOutOfBounds { .. } | ColumnNotFound(_) | Encode(_) => {
            Left::Usable
        }
        ColumnDecode { .. } | Decode(_) => Left::Unsure,
        _ => Left::Broken,
    }
}

impl<DB: sqlx::Database> Lease<DB> {
    pub(crate) fn conn(&mut self) -> sqlx::Result<&mut DB::Connection> {
        match &mut self.conn {
            Some(Leased::Taken(c)) => Ok(c),
            Some(Leased::Pooled(c)) => Ok(&mut **c),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// A transaction begins (`true`) or has ended, committed or rolled back (`false`).
    pub(crate) fn in_transaction(&mut self, open: bool) {
        self.in_transaction = open;
    }

    /// Passes on what the statements on this connection came to, once they have ended: a
    /// connection that failed as a connection is closed, not given back.
    pub(crate) fn after<T>(&mut self, result: sqlx::Result<T>) -> sqlx::Result<T> {
        let link = self.spare.as_ref().is_some_and(|(spare, _, _)| spare.link);
        match result.as_ref().err().map(left_by) {
            None | Some(Left::Usable) => self.ended = true,
            Some(Left::Unsure) if !link => self.ended = true,
            // Pinged before it is given back (see `Drop`).
            Some(Left::Unsure) => {}
            Some(Left::Broken) => self.discard(),
        }
        result
    }

    /// Closes the connection instead of giving it back.
    pub(crate) fn discard(&mut self) {
        match self.conn.take() {
            Some(Leased::Pooled(mut c)) => c.close_on_drop(),
            Some(Leased::Taken(_)) | None => {}
        }
    }
}

impl<DB: sqlx::Database> Drop for Lease<DB> {
    fn drop(&mut self) {
        if self.in_transaction {
            self.discard();
        }
        let (Some(Leased::Taken(mut conn)), Some((spare, turn, opened))) = (self.conn.take(), self.spare.take()) else {
            return;
        };
        if self.ended {
            return spare.give_back(conn, opened, &turn);
        }
        // A statement that did not end: given back once a ping says the link is in step again
        // (the server may still be running it meanwhile, so its turn is kept until then).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if answers(&mut conn).await {
                    spare.give_back(conn, opened, &turn);
                }
            });
        }
    }
}

/// A transaction that reads between its writes (most writes that belong together are a [`Batch`]).
pub enum Tx {
    /// With the writer's turn, held until it ends.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, Option<tokio::sync::OwnedSemaphorePermit>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Db {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// A transaction made by hand. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), waiting for it like any write: one that read first and took the lock only at
    /// its first write would fail at once, not wait, if another connection wrote meanwhile. It
    /// holds the writer's turn meanwhile (see [`Lending::lease_to_write`]).
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match self {
            Db::Sqlite(db) => {
                let turn = db.writer_turn().await?;
                Tx::Sqlite(db.pool.begin_with("BEGIN IMMEDIATE").await?, turn)
            }
            Db::Postgres(db) => Tx::Postgres(db.pool.begin().await?),
        })
    }

    /// The connections that run brief statements on the calling thread, on `serve`'s SQLite file.
    fn inline(&self) -> Option<&inline::Inline> {
        match self {
            Db::Sqlite(db) => db.inline.as_deref(),
            Db::Postgres(_) => None,
        }
    }

    /// Tells the connections that run statements on the calling thread that a checkpoint copied
    /// the whole log (see [`inline::Inline::after_checkpoint`]).
    fn after_checkpoint(&self) {
        if let Some(inline) = self.inline() {
            inline.after_checkpoint();
        }
    }

    /// The SQLite pool, for tests of what only SQLite has.
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &sqlx::SqlitePool {
        match self {
            Db::Sqlite(db) => &db.pool,
            Db::Postgres(_) => panic!("a SQLite database was expected"),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(db) => {
                db.close_spare();
                db.pool.close().await
            }
            Db::Postgres(db) => {
                db.close_spare();
                if let Some(opener) = &db.opener {
                    opener.close().await;
                }
                db.pool.close().await
            }
        }
    }
}

impl Tx {
    pub async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Sqlite(tx, _turn) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Opens (creating if needed) the database and applies its migrations.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
    open(url, max_connections, false, false).await
}

/// [`connect`] for `serve`, choosing whether every commit is flushed to the disk (`durable`) or
/// only at checkpoints (see `database.durable_commits`). No request checkpoints SQLite's log: the
/// caller runs [`housekeeping::run`], which does.
pub async fn connect_with(url: &str, max_connections: u32, durable: bool) -> anyhow::Result<Db> {
    open(url, max_connections, durable, true).await
}

async fn open(url: &str, max_connections: u32, durable: bool, checkpoints_apart: bool) -> anyhow::Result<Db> {
    if crate::config::is_postgres_url(url) {
        return open_postgres(url, max_connections, durable).await;
    }
    let mut opts = SqliteConnectOptions::from_str(url)
        .with_context(|| "database.url")?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(BUSY_FOR);
    let pragmas = per_connection(durable, checkpoints_apart);
    for (name, value) in &pragmas {
        opts = opts.pragma(*name, *value);
    }
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let file = opts.get_filename().to_path_buf();
    if !in_memory {
        private_database_file(&file)?;
    }
    let pool = SqlitePoolOptions::new()
        // An in-memory SQLite database lives in one connection; more would each see their own.
        .max_connections(if in_memory { 1 } else { max_connections.max(1) })
        // A SQLite connection is a file, not a link that can break: no ping (a round trip to
        // its worker thread) before every statement.
        .test_before_acquire(false)
        .after_connect(|conn, _| Box::pin(wait_briefly_when_busy(conn)))
        .connect_with(opts)
        .await
        .context("opening the database")?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await.context("applying migrations")?;
    let mut db = Sqlite::new(pool, (!in_memory).then_some(max_connections), None);
    // Only `serve`'s: there nothing checkpoints the log on a commit, nor flushes it (see `inline`).
    if checkpoints_apart && !durable && !in_memory {
        db.inline = Some(std::sync::Arc::new(inline::Inline::new(&file, &pragmas)?));
    }
    Ok(Db::Sqlite(db))
}

/// What each connection to a SQLite file is set to as it opens, sqlx's and the portal's own
/// (see `inline`): whether a commit is flushed, foreign keys, and for `serve` (`checkpoints_apart`)
/// no checkpoint made by a commit.
fn per_connection(durable: bool, checkpoints_apart: bool) -> Vec<(&'static str, &'static str)> {
    let mut pragmas = vec![("synchronous", if durable { "FULL" } else { "NORMAL" }), ("foreign_keys", "ON")];
    if checkpoints_apart {
        // After a checkpoint, a log grown by a burst is cut back to 64 MiB on the disk.
        pragmas.extend([("wal_autocheckpoint", "0"), ("journal_size_limit", "67108864")]);
    }
    pragmas
}

/// Opens a PostgreSQL database and applies its migrations. Several instances may start at once:
/// sqlx runs the migrations under a PostgreSQL advisory lock, so one instance applies them and
/// the others find them applied.
///
/// Unless `durable`, the portal's connections commit without waiting for the server to flush
/// (`synchronous_commit = off`), as SQLite's `NORMAL` does: a crash of the server may lose its
/// last moments of records, never corrupt them, and a commit costs no flush. Durable, the
/// server's own setting stands (which is also what makes a commit wait for synchronous standbys).
async fn open_postgres(url: &str, max_connections: u32, durable: bool) -> anyhow::Result<Db> {
    // Whether the link is safe enough is checked with the configuration (`PortalConfig::validate`).
    let opts = PgConnectOptions::from_str(url).context("database.url")?;
    let pool = pg_pool_options(durable)
        // Statements and batches run on connections of their own (`max_connections` at once,
        // see [`Lending::lease`]); the pool keeps the one that listens for the other instances,
        // and a few for transactions made by hand (a sync's chunks, a hold, a revocation).
        .max_connections(HAND_MADE + 1)
        .connect_with(opts.clone())
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await.context("applying migrations")?;
    let opener = pg_pool_options(durable).max_connections(max_connections.max(1)).connect_lazy_with(opts);
    Ok(Db::Postgres(Postgres::new(pool, Some(max_connections.max(1)), Some(opener))))
}

/// How the portal's connections to PostgreSQL are made and kept.
fn pg_pool_options(durable: bool) -> PgPoolOptions {
    PgPoolOptions::new()
        // A connection used within the last second is not pinged before it is taken (a round
        // trip as dear as a statement); one idle for longer is, so that one the server dropped
        // (a restart, a failover) is replaced rather than failing a request.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                use sqlx::Connection;
                if meta.idle_for > Duration::from_secs(1) {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // Every limit counts under READ COMMITTED (see `batch::LockedCount`): a role or a
                // database whose default is another isolation level does not change the portal's.
                let mut set = String::from("SET default_transaction_isolation = 'read committed'");
                if !durable {
                    set.push_str("; SET synchronous_commit = off");
                }
                sqlx::Executor::execute(conn, set.as_str()).await?;
                Ok(())
            })
        })
}

/// Connections kept by PostgreSQL's pool for transactions made by hand, beside the one that
/// listens: an instance opens at most `max_connections` + this + 2 (see README, PostgreSQL).
const HAND_MADE: u32 = 2;

/// A connection of its own to `db`'s PostgreSQL, for the stamps an instance renews every second:
/// requests waiting for the main pool under load must not make a live instance look stopped to
/// the others (they carry on its forms after 3 s of silence). `None` on SQLite.
pub fn own_connection(db: &Db) -> Option<Db> {
    let Db::Postgres(db) = db else { return None };
    let options = (*db.pool.connect_options()).clone();
    let pool = PgPoolOptions::new().max_connections(1).test_before_acquire(false).connect_lazy_with(options.clone());
    let opener = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
    Some(Db::Postgres(Postgres::new(pool, Some(1), Some(opener))))
}

/// How long a statement waits for another connection's write before it fails as busy.
const BUSY_FOR: Duration = Duration::from_secs(10);

/// Replaces SQLite's own busy handler on `conn`. That one sleeps 1 ms, then 2, 5, 10… whenever
/// another connection of the pool is writing, though a write holds the lock for a tenth of a
/// millisecond: under load most requests slept once, and the processor sat idle meanwhile.
/// This one waits 50 µs first (the kernel makes that a little longer), doubling up to 5 ms, for
/// as long in all ([`BUSY_FOR`], counted in the waits asked for). Until it is set, while sqlx
/// opens the connection, SQLite's own handler serves with the same `busy_timeout`; once it is
/// set, `PRAGMA busy_timeout` reads 0.
async fn wait_briefly_when_busy(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<()> {
    use libsqlite3_sys::{sqlite3_busy_handler, SQLITE_OK};
    use std::ffi::{c_int, c_void};

    extern "C" fn busy(_: *mut c_void, tries: c_int) -> c_int {
        match busy_wait(u32::try_from(tries).unwrap_or(u32::MAX)) {
            Some(wait) => {
                std::thread::sleep(wait);
                1
            }
            None => 0,
        }
    }

    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    // SAFETY: `db` is this connection's open handle, lent to us alone while `handle` lives. The
    // handler keeps no state and is given no pointer (SQLite passes the null one back to it).
    let rc = unsafe { sqlite3_busy_handler(db.as_ptr(), Some(busy), std::ptr::null_mut()) };
    if rc != SQLITE_OK {
        return Err(sqlx::Error::Configuration(format!("setting the busy handler: SQLite error {rc}").into()));
    }
    Ok(())
}

/// How long to wait before trying a busy database again, after `tries` waits already; `None`
/// once the waits add up to [`BUSY_FOR`].
fn busy_wait(tries: u32) -> Option<Duration> {
    const FIRST: Duration = Duration::from_micros(50);
    const LONGEST: Duration = Duration::from_millis(5);
    let doubling = |n: u32| FIRST.saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX)).min(LONGEST);
    // The waits double until they reach the longest, then stay there.
    let rising = (0..).take_while(|&n| doubling(n) < LONGEST).count() as u32;
    let waited = if tries <= rising {
        (0..tries).map(doubling).sum()
    } else {
        (0..rising).map(doubling).sum::<Duration>() + LONGEST.saturating_mul(tries - rising)
    };
    (waited < BUSY_FOR).then(|| doubling(tries))
}

/// Makes the database file readable by its owner only before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the same mode), and a folder made for it 0700. An existing folder is
/// left as it is: it may be shared (say, `/var/lib`).
fn private_database_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the database was readable by others: now 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub use crate::crypto::{hashes_equal, random_token, token_hash, DataKey, MacKey, CODE_KEY_PURPOSE};

/// A `LIKE … ESCAPE '\'` pattern that finds `text` anywhere, lower-cased, with the wildcards
/// in it taken literally.
pub fn contains_pattern(text: &str) -> String {
    format!("%{}%", text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_database_is_tried_again_soon_then_less_often_for_ten_seconds() {
        let waits: Vec<Duration> = (0..).map_while(busy_wait).collect();
        assert_eq!(waits[..3], [Duration::from_micros(50), Duration::from_micros(100), Duration::from_micros(200)]);
        assert_eq!(waits.iter().max(), Some(&Duration::from_millis(5)));
        let total: Duration = waits.iter().sum();
        let longest = Duration::from_millis(5);
        assert!(total >= BUSY_FOR - longest && total <= BUSY_FOR + longest, "{total:?}");
    }

    #[tokio::test]
    async fn a_write_waits_for_another_connections_write_and_then_goes_through() {
        let root = std::env::temp_dir().join(format!("pb-busy-{}", uuid::Uuid::new_v4()));
        let db = connect(&format!("sqlite://{}/b.db?mode=rwc", root.display()), 2).await.unwrap();
        let mut holder = db.sqlite().acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *holder).await.unwrap();
        let write = tokio::spawn({
            let db = db.clone();
            async move { sqlx::query("INSERT INTO relay_frames VALUES ('a', 'b', 0)").execute(db.sqlite()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!write.is_finished(), "the write waits while the other holds the lock");
        sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
        write.await.unwrap().expect("then it goes through");
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut *holder).await.unwrap();
        assert_eq!(timeout, 0, "our handler, not SQLite's timed one, is the connection's");
        drop(holder);
        db.close().await;
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lent_connections_are_given_back_and_a_statement_dropped_half_way_leaves_them_usable() {
        let root = std::env::temp_dir().join(format!("pb-lease-{}", uuid::Uuid::new_v4()));
        let db = connect(&format!("sqlite://{}/l.db?mode=rwc", root.display()), 2).await.unwrap();
        let Db::Sqlite(sqlite) = &db else { unreachable!() };
        // Many statements and batches at once.
        let writes = (0..40).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let row = Stmt::new("INSERT INTO relay_frames VALUES (?, 'b', 0)").bind(format!("s{i}"));
                let mut batch = Batch::new();
                batch.push(Stmt::new("INSERT INTO relay_frames VALUES (?, 'b', 0)").bind(format!("b{i}")));
                (row.run(&db).await.unwrap(), batch.run(&db).await.unwrap())
            })
        });
        for w in writes {
            assert_eq!(w.await.unwrap(), (1, ()));
        }
        let writer = sqlite.writer.as_ref().expect("a file has its one writer");
        assert_eq!(writer.idle.lock().unwrap().len(), 1, "every write was made by the one writer, given back");
        assert!(sqlite.spare.idle.lock().unwrap().is_empty(), "no other connection was needed");
        // While the writer is out, reads go on and a write waits for its turn.
        let out = sqlite.lease_to_write().await.unwrap();
        let n: i64 = Stmt::new("SELECT COUNT(*) FROM relay_frames").scalar_one(&db).await.unwrap();
        assert_eq!(n, 80);
        let write = tokio::spawn({
            let db = db.clone();
            async move { Stmt::new("INSERT INTO relay_frames VALUES ('w', 'b', 0)").run(&db).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!write.is_finished(), "the write waits for the writer");
        drop(out);
        assert_eq!(write.await.unwrap().unwrap(), 1, "then it is made");
        // A transaction made by hand holds the writer's turn until it ends.
        let turns = writer.turns.as_ref().unwrap();
        let tx = db.begin().await.unwrap();
        assert_eq!(turns.available_permits(), 0, "the writer's turn is the transaction's");
        tx.commit().await.unwrap();
        assert_eq!(turns.available_permits(), 1);
        // A long statement whose caller gives up on it at once.
        let slow = Stmt::new(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT COUNT(*) FROM n",
        );
        let gave_up = tokio::time::timeout(Duration::from_millis(1), slow.scalar_one::<i64>(&db)).await;
        assert!(gave_up.is_err(), "the statement was still running");
        // The connection it ran on is lent again: its next statements follow it, whole.
        for i in 0..4 {
            let n: i64 = Stmt::new("SELECT COUNT(*) FROM relay_frames").scalar_one(&db).await.unwrap();
            assert_eq!(n, 81 + i);
            Stmt::new("INSERT INTO relay_frames VALUES (?, 'b', 0)").bind(format!("after{i}")).run(&db).await.unwrap();
        }
        db.close().await;
        assert!(sqlite.spare.idle.lock().unwrap().is_empty(), "closed with the pool");
        assert!(writer.idle.lock().unwrap().is_empty(), "the writer too");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn the_database_and_a_folder_made_for_it_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("pb-db-{}", uuid::Uuid::new_v4()));
        let file = root.join("state").join("passback.db");
        let db = connect(&format!("sqlite://{}?mode=rwc", file.display()), 1).await.unwrap();
        sqlx::query("INSERT INTO relay_frames VALUES ('a', 'b', 0)").execute(db.sqlite()).await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("state")), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&root.join("state").join("passback.db-wal")), 0o600, "SQLite's own files follow");
        db.close().await;
        std::fs::remove_dir_all(root).unwrap();
    }
}
