//! Writes that belong together (an act's outcome, its audit row, what follows from it) run as one
//! transaction. On SQLite that is one trip to the database: each trip is a hand-off to the
//! connection's own thread and back, which costs more than the statements themselves, and a
//! request that made a dozen of them spent most of its time waking threads. PostgreSQL will not
//! prepare several statements as one, so there a batch is a transaction sent statement by
//! statement on one connection; statements pushed together are sent as one
//! ([`Batch::push_together`]), and a batch that is all one group, with its closing read, is
//! one statement in no transaction of its own ([`Batch::run_then_together`]). A statement that
//! counts under a lock ([`Stmt::serialized_on`]) needs no transaction either when its counts
//! take the lock themselves ([`LockedCount`]).
//!
//! A [`Stmt`] binds its values in order to anonymous `?` placeholders, or to numbered ones
//! (`$1`, which may come back) when it runs on its own; only the first kind can be joined into a
//! batch, whose values are bound in order across all its statements. For PostgreSQL, `?` is
//! rewritten as `$1`, `$2`… outside quoted text.

use super::inline::FromFields;
use super::value::Value;
use super::{Db, Tx};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, Either};
use std::borrow::Cow;

/// A value kept as JSON text in a `TEXT` column, on either database (sqlx's own `Json` reads
/// PostgreSQL's `JSONB` only).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText<T>(pub T);

impl<T, DB: sqlx::Database> sqlx::Type<DB> for JsonText<T>
where
    String: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, T: serde::de::DeserializeOwned, DB: sqlx::Database> sqlx::Decode<'r, DB> for JsonText<T>
where
    String: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(JsonText(serde_json::from_str(&String::decode(value)?)?))
    }
}

impl<T: serde::Serialize> From<&JsonText<T>> for Value {
    /// As JSON text.
    fn from(v: &JsonText<T>) -> Self {
        Value::Text(serde_json::to_string(&v.0).unwrap_or_else(|_| "null".into()))
    }
}

/// What a row read by a [`Stmt`] is made from, on either database.
pub trait Row:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin + 'static
{
}
impl<T> Row for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin + 'static
{
}

/// One statement and its values, bound in order to its placeholders (see the module's note).
#[derive(Debug, Clone)]
pub struct Stmt {
    sql: Cow<'static, str>,
    values: Vec<Value>,
    /// PostgreSQL advisory locks to hold while it runs (see [`Stmt::serialized_on`]).
    locks: Vec<i64>,
    /// On PostgreSQL, whether some of its counts take its lock themselves (see
    /// [`Stmt::counting_under_its_lock`]).
    locked_by_counts: bool,
}

/// The number of the advisory lock on `key`: the first 8 bytes of its SHA-256, big-endian, as
/// PostgreSQL's `passback_lock_key` makes it too (migration 0011).
pub fn lock_key(key: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A count that a limit makes, in the text a statement writes it with, and the PostgreSQL
/// function that makes it under its subject's lock (migration 0011), with the same placeholders
/// in the same order. The function takes the lock, then counts with a snapshot of its own, so
/// it sees every statement about the subject that held the lock before.
pub struct LockedCount {
    pub text: &'static str,
    postgres: &'static str,
    /// The key of the lock the function takes: this, then its first `subject` values joined by
    /// `|`.
    lock: &'static str,
    subject: usize,
}

/// A subject's events of a kind since a time; its lock is `gate_events:<subject>`.
pub const EVENTS_OF: LockedCount = LockedCount {
    text: "(SELECT COUNT(*) FROM gate_events WHERE subject = ? AND kind = ? AND at > ?)",
    postgres: "passback_gate_events_of(?, ?, ?)",
    lock: "gate_events:",
    subject: 1,
};
/// A subject's change-form attempts since a time; its lock is `change_attempts:<subject>`.
pub const ATTEMPTS_OF: LockedCount = LockedCount {
    text: "(SELECT COUNT(*) FROM change_attempts WHERE subject = ? AND at > ?)",
    postgres: "passback_change_attempts_of(?, ?)",
    lock: "change_attempts:",
    subject: 1,
};
/// The codes made for a person since a time; its lock is `verification_codes:<dir>|<anchor>`.
pub const CODES_OF: LockedCount = LockedCount {
    text: "(SELECT COUNT(*) FROM verification_codes WHERE directory = ? AND anchor = ? AND created_at > ?)",
    postgres: "passback_verification_codes_of(?, ?, ?)",
    lock: "verification_codes:",
    subject: 2,
};

impl LockedCount {
    /// The lock its function takes, given the values bound from its first placeholder on.
    fn lock_of(&self, values: &[Value]) -> Option<i64> {
        let parts: Option<Vec<&str>> = values
            .get(..self.subject)?
            .iter()
            .map(|v| match v {
                Value::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        Some(lock_key(&format!("{}{}", self.lock, parts?.join("|"))))
    }
}
const LOCKED_COUNTS: [&LockedCount; 3] = [&EVENTS_OF, &ATTEMPTS_OF, &CODES_OF];
/// The tables that limits count.
const COUNTED_TABLES: [&str; 3] = ["gate_events", "change_attempts", "verification_codes"];

impl Stmt {
    /// For PostgreSQL: a statement, or a part of a group that runs before the others (the main
    /// query, or the counted part it reads; PostgreSQL runs the other parts after it), with each
    /// of its [`LOCKED_COUNTS`] made by the function, when the lock that function takes is one
    /// it was serialized on. Others stay as they are, counted under the locks a transaction
    /// takes first.
    fn counting_under_its_lock(mut self) -> Stmt {
        for count in LOCKED_COUNTS {
            while let Some(at) = self.sql.find(count.text) {
                let first = placeholder_positions(&self.sql[..at]).count();
                let key = self.values.get(first..).and_then(|v| count.lock_of(v));
                if !key.is_some_and(|k| self.locks.contains(&k)) {
                    break;
                }
                self.sql.to_mut().replace_range(at..at + count.text.len(), count.postgres);
                self.locked_by_counts = true;
            }
        }
        self
    }

    /// Whether it is serialized by itself on PostgreSQL, with no transaction around it: it takes
    /// one lock, its counts take it ([`Stmt::counting_under_its_lock`]), and it reads no table
    /// that limits count otherwise.
    fn serialized_by_itself(&self) -> bool {
        let one_lock = self.locks.first().is_some_and(|first| self.locks.iter().all(|k| k == first));
        let words: Vec<&str> =
            self.sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
        // What it reads of them (a `DELETE FROM` reads only the rows it deletes).
        let reads_counted = (1..words.len()).any(|i| {
            let read = words[i - 1].eq_ignore_ascii_case("JOIN")
                || (words[i - 1].eq_ignore_ascii_case("FROM")
                    && !(i > 1 && words[i - 2].eq_ignore_ascii_case("DELETE")));
            read && COUNTED_TABLES.iter().any(|t| words[i].eq_ignore_ascii_case(t))
        });
        self.locked_by_counts && one_lock && !reads_counted
    }
}

/// One connection, of either database, that a statement runs on.
enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Stmt {
    /// A statement: its text is usually a literal, or made once from constant parts.
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Stmt { sql: sql.into(), values: Vec::new(), locks: Vec::new(), locked_by_counts: false }
    }

    /// For a statement that counts rows and writes only below a limit: on PostgreSQL, it runs
    /// in a transaction that first takes a transaction-scoped advisory lock on `key` (the
    /// limit's subject), so that two such statements about one subject never both count before
    /// either has written, as READ COMMITTED would let them. On SQLite the one writer already
    /// runs each write statement, its reads included, alone.
    ///
    /// A statement that takes one lock and counts only through [`LockedCount`]s whose lock it
    /// is runs without that transaction on PostgreSQL: each count takes the lock itself.
    pub fn serialized_on(mut self, key: &str) -> Self {
        self.locks.push(lock_key(key));
        self
    }

    /// The statement with `more` added to its text (a clause chosen at run time); values bound
    /// after it go to the placeholders in `more`.
    pub fn push(mut self, more: &str) -> Self {
        self.sql.to_mut().push_str(more);
        self
    }

    /// One statement made of `parts`: each `{}` of `template` is replaced by the next part's
    /// text, so their values are bound in that order; their locks are all held.
    pub fn compose<const N: usize>(template: &str, parts: [Stmt; N]) -> Stmt {
        let pieces: Vec<&str> = template.split("{}").collect();
        assert_eq!(pieces.len(), N + 1, "a place for each part in {template}");
        let mut whole = Stmt::new(pieces[0].to_string());
        for (part, after) in parts.into_iter().zip(&pieces[1..]) {
            assert!(highest_numbered_placeholder(&part.sql).is_none(), "a part binds with `?` only: {}", part.sql);
            let sql = whole.sql.to_mut();
            sql.push_str(&part.sql);
            sql.push_str(after);
            whole.values.extend(part.values);
            whole.locks.extend(part.locks);
        }
        whole
    }

    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Runs it on its own: how many rows it changed.
    pub async fn run(self, db: &Db) -> sqlx::Result<u64> {
        if db.is_postgres() && !self.locks.is_empty() {
            let mut alone = Batch::new();
            alone.stmts.push((self, false));
            return alone.run_counting_last(db).await;
        }
        match db {
            Db::Sqlite(db) => {
                let mut lease = self.lease_on(db).await?;
                let ran = self.run_on(Conn::Sqlite(lease.conn()?)).await;
                lease.after(ran)
            }
            Db::Postgres(db) => {
                let mut lease = db.lease().await?;
                let ran = self.run_on(Conn::Postgres(lease.conn()?)).await;
                lease.after(ran)
            }
        }
    }

    /// Runs it on its own: whether it changed exactly one row.
    pub async fn changed_one(self, db: &Db) -> sqlx::Result<bool> {
        Ok(self.run(db).await? == 1)
    }

    /// Runs it on its own: the first row it returns, if any.
    pub async fn fetch_optional<T: Row>(self, db: &Db) -> sqlx::Result<Option<T>> {
        Ok(self.fetch_all(db).await?.into_iter().next())
    }

    /// Runs it on its own: its one row (an error when there is none).
    pub async fn fetch_one<T: Row>(self, db: &Db) -> sqlx::Result<T> {
        self.fetch_optional(db).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs it on its own: every row it returns.
    pub async fn fetch_all<T: Row>(self, db: &Db) -> sqlx::Result<Vec<T>> {
        if let Db::Postgres(pg) = db {
            if !self.locks.is_empty() {
                let alone = postgres_batch(pg.clone(), Vec::new(), Some(self), (ReadWith::Nothing, None));
                return Ok(to_its_end(alone).await?.rows);
            }
        }
        match db {
            Db::Sqlite(db) => {
                let mut lease = self.lease_on(db).await?;
                let rows = self.fetch_all_on(Conn::Sqlite(lease.conn()?)).await;
                lease.after(rows)
            }
            Db::Postgres(db) => {
                let mut lease = db.lease().await?;
                let rows = self.fetch_all_on(Conn::Postgres(lease.conn()?)).await;
                lease.after(rows)
            }
        }
    }

    /// Runs it on its own: the first column of the first row, if there is a row.
    pub async fn scalar<T>(self, db: &Db) -> sqlx::Result<Option<T>>
    where
        (T,): Row,
    {
        Ok(self.fetch_optional::<(T,)>(db).await?.map(|(v,)| v))
    }

    /// Runs it on its own: the first column of its one row (an error when there is none).
    pub async fn scalar_one<T>(self, db: &Db) -> sqlx::Result<T>
    where
        (T,): Row,
    {
        self.scalar(db).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs it on its own: the first column of every row it returns.
    pub async fn scalar_all<T>(self, db: &Db) -> sqlx::Result<Vec<T>>
    where
        (T,): Row,
    {
        Ok(self.fetch_all::<(T,)>(db).await?.into_iter().map(|(v,)| v).collect())
    }

    /// [`Stmt::fetch_all`] for a read by key that most requests make (their session, the
    /// person a name is): on `serve`'s SQLite file, a `SELECT` runs on the calling thread (see
    /// `super::inline`).
    pub async fn fetch_all_brief<T: Row + FromFields>(self, db: &Db) -> sqlx::Result<Vec<T>> {
        if let Some(inline) = db.inline().filter(|_| starts_with_word(&self.sql, "SELECT")) {
            self.check_values();
            if let Some(answer) = super::inline::settled(inline.read(&self.sql, &self.values)) {
                return answer?.rows.into_iter().map(T::from_fields).collect();
            }
        }
        self.fetch_all(db).await
    }

    /// [`Stmt::fetch_all_brief`]'s first row, if any.
    pub async fn fetch_optional_brief<T: Row + FromFields>(self, db: &Db) -> sqlx::Result<Option<T>> {
        Ok(self.fetch_all_brief(db).await?.into_iter().next())
    }

    /// [`Stmt::run`] for a write by key that many requests make (their session): on `serve`'s
    /// SQLite file, on the calling thread in the writer's turn (see `super::inline`).
    pub async fn run_brief(self, db: &Db) -> sqlx::Result<u64> {
        if let (Db::Sqlite(sqlite), Some(_)) = (db, db.inline()) {
            self.check_values();
            if let Some(answer) = written_here(sqlite, &self.sql, &self.values).await? {
                return Ok(answer.changed.last().copied().unwrap_or(0));
            }
        }
        self.run(db).await
    }

    /// Runs it inside `tx`: how many rows it changed. (A statement that must be serialized runs
    /// on its own or in a [`Batch`], which take its locks.)
    pub async fn run_in(self, tx: &mut Tx) -> sqlx::Result<u64> {
        assert!(self.locks.is_empty(), "a serialized statement inside a transaction: {}", self.sql);
        self.run_on(tx.conn()).await
    }

    /// Runs it inside `tx`: the first row it returns, if any.
    pub async fn fetch_optional_in<T: Row>(self, tx: &mut Tx) -> sqlx::Result<Option<T>> {
        assert!(self.locks.is_empty(), "a serialized statement inside a transaction: {}", self.sql);
        Ok(self.fetch_all_on(tx.conn()).await?.into_iter().next())
    }
}

impl Stmt {
    /// A SQLite connection for it: the one that writes, unless it only reads (a `SELECT`, or
    /// a passive checkpoint, which takes no lock that writes wait for).
    async fn lease_on(&self, db: &super::Sqlite) -> sqlx::Result<super::Lease<sqlx::Sqlite>> {
        if starts_with_word(&self.sql, "SELECT") || self.sql.eq_ignore_ascii_case("PRAGMA wal_checkpoint(PASSIVE)") {
            db.lease().await
        } else {
            db.lease_to_write().await
        }
    }

    async fn run_on(self, conn: Conn<'_>) -> sqlx::Result<u64> {
        self.check_values();
        match conn {
            Conn::Sqlite(c) => {
                let args = sqlite_arguments(self.values)?;
                Ok(sqlx::query_with(&self.sql, args).execute(c).await?.rows_affected())
            }
            Conn::Postgres(c) => {
                let (sql, args) = (numbered(&self.sql), pg_arguments(self.values)?);
                Ok(sqlx::query_with(&sql, args).execute(c).await?.rows_affected())
            }
        }
    }

    async fn fetch_all_on<T: Row>(self, conn: Conn<'_>) -> sqlx::Result<Vec<T>> {
        self.check_values();
        match conn {
            Conn::Sqlite(c) => {
                let args = sqlite_arguments(self.values)?;
                sqlx::query_as_with(&self.sql, args).fetch_all(c).await
            }
            Conn::Postgres(c) => {
                let (sql, args) = (numbered(&self.sql), pg_arguments(self.values)?);
                sqlx::query_as_with(&sql, args).fetch_all(c).await
            }
        }
    }

    /// One value for each placeholder (for numbered ones, each number): one missing would shift
    /// every later value of its batch.
    fn check_values(&self) {
        let wanted = match highest_numbered_placeholder(&self.sql) {
            Some(n) => n,
            None => placeholder_positions(&self.sql).count(),
        };
        assert_eq!(wanted, self.values.len(), "values bound to {}", self.sql);
    }
}

impl Tx {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(tx, _) => Conn::Sqlite(&mut *tx),
            Tx::Postgres(tx) => Conn::Postgres(&mut *tx),
        }
    }
}

/// Statements run together: all of them or none. Each is marked with whether it belongs to a
/// group ([`Batch::push_together`]): a run of such statements, one after the other.
#[derive(Debug, Default)]
pub struct Batch {
    stmts: Vec<(Stmt, bool)>,
    /// The statement of the last group whose rows changed are counted, if one was pushed with
    /// [`Batch::push_together_counted`].
    counted: Option<usize>,
}

/// What a batch's closing read returned, and how many rows its counted statement changed: the
/// last one before the read, or the one pushed with [`Batch::push_together_counted`] (for a read
/// together, see [`Batch::run_then_together`]).
#[derive(Debug)]
pub struct Ran<T> {
    pub rows: Vec<T>,
    pub last_changed: u64,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn push(&mut self, s: Stmt) {
        // A numbered placeholder would take a value of another statement of the batch.
        assert!(highest_numbered_placeholder(&s.sql).is_none(), "a batched statement binds with `?` only: {}", s.sql);
        self.stmts.push((s, false));
    }

    /// Pushes a statement that neither reads nor writes a row that another of its group writes
    /// (but for a counted one, see [`Batch::push_together_counted`]): the statements pushed
    /// together one after the other make a group. On PostgreSQL a group
    /// is sent as one statement (the others as data-modifying `WITH` queries before the last,
    /// all on one snapshot), one trip to the server instead of one each; on SQLite, where the
    /// whole batch is one trip, they run one after the other. A group that ends a batch is
    /// counted by the rows its last statement changed ([`Batch::run_counting_last`]; for a read
    /// together, see [`Batch::run_then_together`]).
    ///
    /// So that a group that works on SQLite cannot do otherwise on PostgreSQL, each of its
    /// statements writes (a query that only reads would not run as a `WITH` query that nothing
    /// refers to), and no two of them write one table (checked here, on both).
    pub fn push_together(&mut self, s: Stmt) {
        fits_a_group(&s.sql);
        if let Some(table) = self.counted_in_group().and_then(|counted| written_table(&counted.sql)) {
            assert!(!mentions(&s.sql, table), "a statement after a counted one reads {table}: {}", s.sql);
        }
        assert!(written_table(&s.sql).is_some(), "a statement of a group writes: {}", s.sql);
        if let Some(table) = written_table(&s.sql) {
            let mut group = self.stmts.iter().rev().take_while(|(_, together)| *together);
            let shared =
                group.any(|(other, _)| written_table(&other.sql).is_some_and(|t| t.eq_ignore_ascii_case(table)));
            assert!(!shared, "two statements of a group write {table}: {}", s.sql);
        }
        self.push(s);
        if let Some(last) = self.stmts.last_mut() {
            last.1 = true;
        }
    }

    /// [`Batch::push_together`] for the one statement whose rows changed the batch counts
    /// ([`Ran::last_changed`]), though others of its group follow it. Its group must be the one
    /// that ends the batch, run with a read together ([`Batch::run_then_together`]): on
    /// PostgreSQL the count comes back beside the read's rows, or alone.
    ///
    /// It may read a table that a statement pushed after it writes: on SQLite it runs before
    /// that statement, and on PostgreSQL the group's parts all see the database as it was
    /// before any of them, so it reads the same on both (never what the later one wrote). A
    /// count of it that takes its lock ([`LockedCount`]) sees what its own statement wrote
    /// before it: it is counted still first, as the main query reads it, and PostgreSQL runs the
    /// other parts after the main query.
    pub fn push_together_counted(&mut self, s: Stmt) {
        assert!(self.counted.is_none(), "one counted statement in a batch: {}", s.sql);
        // What it reads is as it was before the group on PostgreSQL: nothing its group wrote.
        let group = self.stmts.iter().rev().take_while(|(_, together)| *together);
        for table in group.filter_map(|(earlier, _)| written_table(&earlier.sql)) {
            assert!(!mentions(&s.sql, table), "a counted statement reads {table}, written before it: {}", s.sql);
        }
        // It is counted by the rows it returns there.
        assert!(!mentions(&s.sql, "RETURNING"), "a counted statement returns nothing: {}", s.sql);
        self.push_together(s);
        self.counted = Some(self.stmts.len() - 1);
    }

    /// The counted statement, if the group pushed last holds it.
    fn counted_in_group(&self) -> Option<&Stmt> {
        let at = self.counted?;
        let in_group = self.stmts[at..].iter().all(|(_, together)| *together);
        in_group.then(|| &self.stmts[at].0)
    }

    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }

    /// Runs every statement, then `read`, in one transaction: the rows `read` returns, and how
    /// many rows the last statement before it changed. Only `read` may return rows (no
    /// `RETURNING` in the others).
    ///
    /// It runs to its end even if the caller stops waiting (a browser that went away): a
    /// transaction is never left half done on a pooled connection.
    pub async fn run_then<T: Row + FromFields>(self, db: &Db, read: Stmt) -> sqlx::Result<Ran<T>> {
        assert!(self.counted.is_none(), "a counted statement of a group is run with a read together");
        self.run_with(db, Some(read)).await
    }

    /// [`Batch::run_then`] for a `read` that belongs with the batch's group: it reads no table
    /// a statement of the batch writes (checked, by the plain names of the tables; a view or a
    /// trigger is not seen through), binds with `?` only and has no `WITH` of its own, as a
    /// statement of a group. So it reads the same whenever it runs, and on PostgreSQL it is the
    /// main query of the batch's last group, one trip fewer. When every statement was pushed
    /// together and none takes a lock, that is all there is: one statement, atomic on its own,
    /// one trip to the server instead of a transaction's four.
    ///
    /// `last_changed` counts the statement pushed with [`Batch::push_together_counted`], else
    /// the last one when it was pushed on its own; the other parts of a group are not counted
    /// one by one, and a batch that ends with one counts 0, on either database.
    pub async fn run_then_together<T: Row + FromFields>(self, db: &Db, read: Stmt) -> sqlx::Result<Ran<T>> {
        for table in self.stmts.iter().filter_map(|(s, _)| written_table(&s.sql)) {
            assert!(!mentions(&read.sql, table), "a read together with writes of {table} reads it: {}", read.sql);
        }
        fits_a_group(&read.sql);
        if self.counted.is_some() {
            assert!(self.counted_in_group().is_some(), "the counted statement is in the group that ends the batch");
            // On PostgreSQL it is read as a subquery, beside the count.
            assert!(starts_with_word(&read.sql, "SELECT"), "a read with a counted group is a SELECT: {}", read.sql);
        }
        let counted = self.counted.is_some() || self.stmts.last().is_some_and(|(_, together)| !together);
        let one_group = !self.is_empty()
            && self.stmts.iter().all(|(s, together)| *together && s.locks.is_empty())
            && read.locks.is_empty();
        let at = self.counted;
        let mut ran = match db.clone() {
            Db::Postgres(db) if one_group => {
                let mut group: Vec<Stmt> = self.stmts.into_iter().map(|(s, _)| s).collect();
                group.push(read);
                let whole = joined(group, at);
                to_its_end(async move {
                    let mut lease = db.lease().await?;
                    let ran = fetch_group(lease.conn()?, whole, at.is_some()).await;
                    lease.after(ran)
                })
                .await?
            }
            Db::Postgres(db) => {
                to_its_end(postgres_batch(db, self.stmts, Some(read), (ReadWith::LastGroup, at))).await?
            }
            Db::Sqlite(_) => self.run_with(db, Some(read)).await?,
        };
        if !counted {
            ran.last_changed = 0;
        }
        Ok(ran)
    }

    /// Runs every statement in one transaction.
    pub async fn run(self, db: &Db) -> sqlx::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        self.run_counting_last(db).await.map(drop)
    }

    /// Runs every statement in one transaction: how many rows the last one changed.
    pub async fn run_counting_last(self, db: &Db) -> sqlx::Result<u64> {
        assert!(self.counted.is_none(), "a counted statement of a group is run with a read together");
        Ok(self.run_with::<(i64,)>(db, None).await?.last_changed)
    }

    async fn run_with<T: Row + FromFields>(self, db: &Db, read: Option<Stmt>) -> sqlx::Result<Ran<T>> {
        match db.clone() {
            Db::Sqlite(db) => sqlite_batch(db, self.stmts, read, self.counted).await,
            Db::Postgres(db) => {
                to_its_end(postgres_batch(db, self.stmts, read, (ReadWith::Nothing, self.counted))).await
            }
        }
    }
}

/// Where a PostgreSQL batch's closing read runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadWith {
    /// On its own, after every statement.
    Nothing,
    /// As the main query of the last group, when there is one: it reads nothing the batch
    /// writes (see [`Batch::run_then_together`]).
    LastGroup,
}

/// What a statement of a group, and a read together with one, must be: bound with `?` only (a
/// numbered placeholder would take a value of another part) and without a `WITH` of its own
/// (on PostgreSQL the group's parts become its `WITH` queries).
fn fits_a_group(sql: &str) {
    assert!(highest_numbered_placeholder(sql).is_none(), "a statement of a group binds with `?` only: {sql}");
    assert!(!starts_with_word(sql, "WITH"), "a statement of a group has no `WITH` of its own: {sql}");
}

/// Runs `work` to its end even if the caller stops waiting (see [`Batch::run_then`]).
async fn to_its_end<R: Send + 'static>(
    work: impl std::future::Future<Output = sqlx::Result<R>> + Send + 'static,
) -> sqlx::Result<R> {
    tokio::spawn(work).await.map_err(|e| sqlx::Error::Protocol(format!("a batch of statements did not finish: {e}")))?
}

/// A batch on SQLite: one text, in a transaction that takes the write lock at once (so that it
/// never has to be upgraded half way, which could fail under contention). On `serve`'s file it
/// runs on the calling thread (see `super::inline`), else (or when it would wait for another
/// process's lock) on sqlx's writing connection.
async fn sqlite_batch<T: Row + FromFields>(
    db: super::Sqlite,
    stmts: Vec<(Stmt, bool)>,
    read: Option<Stmt>,
    counted: Option<usize>,
) -> sqlx::Result<Ran<T>> {
    // The statement counted: the one marked, else the last before the read.
    let counted = counted.or(stmts.len().checked_sub(1));
    let mut sql = String::new();
    let mut values = Vec::new();
    for s in stmts.into_iter().map(|(s, _)| s).chain(read) {
        s.check_values();
        sql.push_str(s.sql.trim().trim_end_matches(';'));
        sql.push_str(";\n");
        values.extend(s.values);
    }
    if let Some(answer) = written_here(&db, &sql, &values).await? {
        let last_changed = counted.and_then(|at| answer.changed.get(at)).copied().unwrap_or(0);
        let rows = answer.rows.into_iter().map(T::from_fields).collect::<sqlx::Result<_>>()?;
        return Ok(Ran { rows, last_changed });
    }
    to_its_end(sqlx_batch(db, counted, sql, values)).await
}

/// Runs `sql` (statements that write) on `serve`'s SQLite file, on the calling thread in the
/// writer's turn (see `super::inline`): `None` when it is left to sqlx's writing connection,
/// the turn given back for it.
async fn written_here(db: &super::Sqlite, sql: &str, values: &[Value]) -> sqlx::Result<Option<super::inline::Answer>> {
    let Some(inline) = &db.inline else { return Ok(None) };
    let _turn = db.writer_turn().await?;
    super::inline::settled(inline.write(sql, values)).transpose()
}

/// [`sqlite_batch`] on sqlx's writing connection. Each statement reports what it changed as it
/// ends: BEGIN is the first, so the `counted`-th statement (from 0) is the one after it.
async fn sqlx_batch<T: Row>(
    db: super::Sqlite,
    counted: Option<usize>,
    sql: String,
    values: Vec<Value>,
) -> sqlx::Result<Ran<T>> {
    use futures_util::TryStreamExt;
    let sql = format!("BEGIN IMMEDIATE;\n{sql}COMMIT;");
    let args = sqlite_arguments(values)?;
    let mut lease = db.lease_to_write().await?;
    lease.in_transaction(true);
    let conn = lease.conn()?;
    let mut ran = Ran { rows: Vec::new(), last_changed: 0 };
    let mut ended = 0;
    let outcome: sqlx::Result<()> = async {
        // One prepared text of several statements, which only SQLite allows (and sqlx's query
        // types warn of): the executor's own call reports each statement's end.
        let mut results = sqlx::Executor::fetch_many(&mut *conn, sqlx::query_with(&sql, args));
        while let Some(item) = results.try_next().await? {
            match item {
                Either::Left(done) => {
                    if counted.map(|at| at + 1) == Some(ended) {
                        ran.last_changed = done.rows_affected();
                    }
                    ended += 1;
                }
                Either::Right(row) => ran.rows.push(T::from_row(&row)?),
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        if rolled_back(Conn::Sqlite(conn)).await {
            lease.in_transaction(false);
        }
        return lease.after(Err(e));
    }
    lease.in_transaction(false);
    Ok(ran)
}

/// A batch on PostgreSQL, which prepares one statement at a time: a transaction sent statement
/// by statement on one connection, each a trip to the server. It begins with the advisory locks
/// its statements asked for, taken in one order (so two batches never wait for each other's),
/// in the same trip as BEGIN: that text is sent unprepared, and holds only numbers made here.
/// A batch that comes to one statement serialized by itself ([`Stmt::serialized_by_itself`]) is
/// that statement alone: one trip, atomic by itself.
async fn postgres_batch<T: Row>(
    db: super::Postgres,
    stmts: Vec<(Stmt, bool)>,
    mut read: Option<Stmt>,
    (read_with, counted): (ReadWith, Option<usize>),
) -> sqlx::Result<Ran<T>> {
    use std::fmt::Write;
    // Each group pushed together is one statement (the last one perhaps with the read), and
    // where in its group the counted statement is.
    let mut groups: Vec<(Vec<Stmt>, bool)> = Vec::new();
    let mut counted_at = None;
    for (i, (s, together)) in stmts.into_iter().enumerate() {
        match groups.last_mut() {
            Some((group, true)) if together => group.push(s),
            _ => groups.push((vec![s], together)),
        }
        if counted == Some(i) {
            counted_at = groups.last().map(|(group, _)| (groups.len() - 1, group.len() - 1));
        }
    }
    let mut reads_at = None;
    if read_with == ReadWith::LastGroup {
        if let Some(at) = groups.iter().rposition(|(_, together)| *together) {
            groups[at].0.extend(read.take());
            reads_at = Some(at);
        }
    }
    // Counted beside the read it goes with (see `Batch::push_together_counted`).
    assert!(counted_at.is_none_or(|(group, _)| Some(group) == reads_at), "a counted statement goes with the read");
    let stmts: Vec<Stmt> = groups
        .into_iter()
        .enumerate()
        .map(|(at, (group, _))| {
            let counted = counted_at.filter(|(g, _)| *g == at).map(|(_, part)| part);
            joined_counting_first(group, counted)
        })
        .collect();
    let read = read.map(Stmt::counting_under_its_lock);
    // One statement, serialized by itself: no transaction.
    let alone = match (&stmts[..], &read) {
        ([only], None) | ([], Some(only)) => only.serialized_by_itself(),
        _ => false,
    };
    let mut locks: Vec<i64> = stmts.iter().chain(&read).flat_map(|s| s.locks.iter().copied()).collect();
    locks.sort_unstable();
    locks.dedup();
    let mut begin = String::from("BEGIN");
    for key in locks {
        // Writing to a String cannot fail.
        let _ = write!(begin, "; SELECT pg_advisory_xact_lock({key})");
    }
    let mut lease = db.lease().await?;
    lease.in_transaction(!alone);
    let conn = lease.conn()?;
    let mut ran = Ran { rows: Vec::new(), last_changed: 0 };
    let outcome: sqlx::Result<()> = async {
        if !alone {
            sqlx::Executor::execute(&mut *conn, begin.as_str()).await?;
        }
        for (at, s) in stmts.into_iter().enumerate() {
            if reads_at == Some(at) {
                ran = fetch_group(&mut *conn, s, counted_at.is_some()).await?;
            } else {
                ran.last_changed = s.run_on(Conn::Postgres(&mut *conn)).await?;
            }
        }
        if let Some(read) = read {
            ran.rows = read.fetch_all_on(Conn::Postgres(&mut *conn)).await?;
        }
        if !alone {
            sqlx::Executor::execute(&mut *conn, "COMMIT").await?;
        }
        Ok(())
    }
    .await;
    if alone {
        // A statement on its own that failed was undone by the server.
        return lease.after(outcome.map(|()| ran));
    }
    if let Err(e) = outcome {
        // A connection whose transaction could not be undone is closed, not given back.
        if rolled_back(Conn::Postgres(conn)).await {
            lease.in_transaction(false);
        }
        return lease.after(Err(e));
    }
    lease.in_transaction(false);
    lease.after(Ok(ran))
}

/// Ends a batch's transaction that failed part way, undoing what ran before: whether it could.
/// A connection that cannot is not given back to the pool.
async fn rolled_back(conn: Conn<'_>) -> bool {
    match conn {
        Conn::Sqlite(c) => sqlx::Executor::execute(c, "ROLLBACK").await.is_ok(),
        Conn::Postgres(c) => sqlx::Executor::execute(c, "ROLLBACK").await.is_ok(),
    }
}

/// The table an `INSERT`, `UPDATE` or `DELETE` writes, as `sql` names it.
fn written_table(sql: &str) -> Option<&str> {
    let mut words = sql.split_whitespace();
    let first = words.next()?;
    let table = if first.eq_ignore_ascii_case("INSERT") || first.eq_ignore_ascii_case("DELETE") {
        words.nth(1)
    } else if first.eq_ignore_ascii_case("UPDATE") {
        words.next()
    } else {
        None
    }?;
    table.split('(').next()
}

/// Whether `sql` names `table`: as a whole word, in any case.
fn mentions(sql: &str, table: &str) -> bool {
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).any(|w| w.eq_ignore_ascii_case(table))
}

/// Whether `sql`'s first word is `word` (in any case).
fn starts_with_word(sql: &str, word: &str) -> bool {
    sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().is_some_and(|w| w.eq_ignore_ascii_case(word))
}

/// The statements of a group ([`Batch::push_together`]) as one, for PostgreSQL: each but the last
/// a data-modifying `WITH` query, run once whether or not the last refers to it. With `counted`
/// (the place of the part pushed with [`Batch::push_together_counted`], the last being a read),
/// the rows that part changed come beside each row of the read, as [`COUNTED`].
fn joined(group: Vec<Stmt>, counted: Option<usize>) -> Stmt {
    let (mut queries, mut main) = (Vec::new(), String::new());
    let (mut values, mut locks, mut locked_by_counts) = (Vec::new(), Vec::new(), false);
    let last = group.len().saturating_sub(1);
    for (i, part) in group.into_iter().enumerate() {
        locked_by_counts |= part.locked_by_counts;
        let text = part.sql.trim().trim_end_matches(';').to_string();
        if i < last {
            // On lines of their own: a statement's closing comment, if it had one, ends there.
            let returning = if counted == Some(i) { "\nRETURNING 1" } else { "" };
            queries.push(format!("together{i} AS (\n{text}{returning}\n)"));
        } else {
            main = text;
        }
        values.extend(part.values);
        locks.extend(part.locks);
    }
    if let Some(at) = counted {
        // One row at least, whatever the read returns: its rows (marked as such) beside the
        // count, or the count alone.
        assert!(at < last, "a counted part is followed by the read");
        main = format!(
            "SELECT counted_read.*, counted.n AS {COUNTED} \
             FROM (SELECT COUNT(*) AS n FROM together{at}) AS counted \
             LEFT JOIN (SELECT read_row.*, TRUE AS {READ_ROW} FROM (\n{main}\n) AS read_row) AS counted_read ON TRUE"
        );
    }
    let sql = if queries.is_empty() { main } else { format!("WITH {}\n{main}", queries.join(", ")) };
    Stmt { sql: sql.into(), values, locks, locked_by_counts }
}

/// [`joined`], with the counts of the parts that PostgreSQL runs first under their locks (see
/// [`Stmt::counting_under_its_lock`]): the main query, and the counted part it reads. It runs
/// the other parts after the main query, so a count there would be made in no known order
/// with what they write: they stay plain subqueries, counted under the locks a transaction
/// takes first.
fn joined_counting_first(group: Vec<Stmt>, counted: Option<usize>) -> Stmt {
    let last = group.len().saturating_sub(1);
    let group = group.into_iter().enumerate();
    let group = group.map(|(i, s)| if i == last || Some(i) == counted { s.counting_under_its_lock() } else { s });
    joined(group.collect(), counted)
}

/// The column beside a read that says how many rows its group's counted part changed.
const COUNTED: &str = "passback_counted";
/// The column that marks a row the read returned (NULL in the row of the count alone).
const READ_ROW: &str = "passback_read_row";

/// Runs a group that ends with a read, as [`joined`] made it: the read's rows and, when
/// `counted`, how many rows its counted part changed (else 0).
async fn fetch_group<T: Row>(conn: &mut PgConnection, s: Stmt, counted: bool) -> sqlx::Result<Ran<T>> {
    if !counted {
        return Ok(Ran { rows: s.fetch_all_on(Conn::Postgres(conn)).await?, last_changed: 0 });
    }
    s.check_values();
    let (sql, args) = (numbered(&s.sql), pg_arguments(s.values)?);
    let rows = sqlx::query_with(&sql, args).fetch_all(conn).await?;
    let changed = match rows.first() {
        Some(row) => sqlx::Row::try_get::<i64, _>(row, COUNTED)?,
        None => return Err(sqlx::Error::Protocol("a counted group returned no row".into())),
    };
    let mut read = Vec::with_capacity(rows.len());
    for row in &rows {
        if sqlx::Row::try_get::<Option<bool>, _>(row, READ_ROW)?.is_some() {
            read.push(T::from_row(row)?);
        }
    }
    Ok(Ran { rows: read, last_changed: u64::try_from(changed).unwrap_or(0) })
}

fn sqlite_arguments(values: Vec<Value>) -> sqlx::Result<SqliteArguments<'static>> {
    let mut args = SqliteArguments::default();
    for v in values {
        let added = match v {
            Value::Null => args.add(None::<i64>),
            Value::Int(i) => args.add(i),
            Value::Bool(b) => args.add(b),
            Value::Text(s) => args.add(s),
            Value::Bytes(b) => args.add(b),
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

fn pg_arguments(values: Vec<Value>) -> sqlx::Result<PgArguments> {
    let mut args = PgArguments::default();
    for v in values {
        let added = match v {
            Value::Null => args.add(UntypedNull),
            Value::Int(i) => args.add(i),
            Value::Bool(b) => args.add(b),
            Value::Text(s) => args.add(s),
            Value::Bytes(b) => args.add(b),
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// A NULL sent to PostgreSQL without a type (OID 0), so that the server gives it the type its
/// place in the statement needs: a typed one (say, `BIGINT`) would be refused in a `TEXT` column.
struct UntypedNull;

impl sqlx::Type<sqlx::Postgres> for UntypedNull {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// Where the `?` placeholders of `sql` are (byte offsets): every `?` outside quoted text.
fn placeholder_positions(sql: &str) -> impl Iterator<Item = usize> + '_ {
    let mut quoted = false;
    sql.bytes().enumerate().filter_map(move |(i, b)| match b {
        b'\'' => {
            quoted = !quoted;
            None
        }
        b'?' if !quoted => Some(i),
        _ => None,
    })
}

/// `sql` with its `?` placeholders numbered (`$1`, `$2`…), as PostgreSQL wants them; a `?` in
/// quoted text stays. A statement that numbers its own is returned as it is.
fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') || highest_numbered_placeholder(sql).is_some() {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut from = 0;
    for (n, at) in placeholder_positions(sql).enumerate() {
        out.push_str(&sql[from..at]);
        out.push('$');
        out.push_str(&(n + 1).to_string());
        from = at + 1;
    }
    out.push_str(&sql[from..]);
    Cow::Owned(out)
}

/// The highest numbered placeholder (`$1`) in `sql`, if it has any: they would not survive
/// being joined. (SQLite's `?1` is not one: PostgreSQL would not know it, and a statement with
/// it fails [`Stmt::check_values`], each `?` counted as a value.)
fn highest_numbered_placeholder(sql: &str) -> Option<usize> {
    let bytes = sql.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .filter(|&i| bytes[i] == b'$' && bytes[i + 1].is_ascii_digit())
        .filter_map(|i| {
            let digits = sql[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
            sql[i + 1..i + 1 + digits].parse().ok()
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> Db {
        let db = super::super::connect("sqlite::memory:", 1).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)").execute(db.sqlite()).await.unwrap();
        db
    }

    #[tokio::test]
    async fn a_batch_binds_across_its_statements_and_returns_what_the_read_found() {
        let db = db().await;
        let mut b = Batch::new();
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, ?)").bind("a").bind(1_i64));
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, ?)").bind("b").bind(None::<i64>));
        let read = Stmt::new("SELECT k, n FROM t WHERE k IN (?, ?) ORDER BY k").bind("a").bind("b");
        let rows: Vec<(String, Option<i64>)> = b.run_then(&db, read).await.unwrap().rows;
        assert_eq!(rows, vec![("a".into(), Some(1)), ("b".into(), None)]);
    }

    #[tokio::test]
    async fn a_failing_statement_undoes_the_batch_and_the_connection_goes_on() {
        let db = db().await;
        let mut b = Batch::new();
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 1)").bind("a"));
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 2)").bind("a"));
        assert!(b.run(&db).await.is_err(), "the second insert breaks the key");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(db.sqlite()).await.unwrap();
        assert_eq!(n, 0, "the first insert was undone");
        // The one connection is usable, outside any transaction.
        let mut again = Batch::new();
        again.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 3)").bind("c"));
        again.run(&db).await.unwrap();
        assert_eq!(Stmt::new("UPDATE t SET n = n + 1 WHERE k = ?").bind("c").run(&db).await.unwrap(), 1);
    }

    #[test]
    fn a_statement_whose_counts_take_its_one_lock_is_serialized_by_itself() {
        let by_itself = |s: Stmt| {
            let s = s.counting_under_its_lock();
            s.check_values();
            (s.serialized_by_itself(), s.sql.into_owned())
        };
        let block = crate::store::security::block_when_reached("corp|a", "reset", 100, 5, 200);
        let before = block.values.clone();
        let s = block.counting_under_its_lock();
        assert!(s.serialized_by_itself(), "{}", s.sql);
        assert!(
            s.sql.contains("passback_gate_events_of(?, ?, ?) + ? >= ?") && !s.sql.contains("COUNT(*)"),
            "{}",
            s.sql
        );
        assert_eq!(s.values, before, "the same values, in the same order");

        // Two counts of one subject, one lock.
        let (alone, sql) = by_itself(crate::store::attempts::Reservation::new("corp|a").take(100, (5, 10)));
        assert!(alone && sql.matches("passback_change_attempts_of(?, ?)").count() == 2, "{sql}");

        // A reset's outcome: its count of resets first, the event and the end of the person's
        // change-form attempts after it.
        let outcome = || {
            vec![
                crate::store::security::block_when_this_reaches("corp|a", "reset", 100, 5, 200),
                crate::store::attempts::clear("corp|a"),
                crate::store::security::record_reset("corp|a", 100),
                Stmt::new("SELECT 1"),
            ]
        };
        let s = joined_counting_first(outcome(), Some(0));
        assert!(s.serialized_by_itself() && s.sql.contains(EVENTS_OF.postgres), "{}", s.sql);
        // Counted in a part that PostgreSQL runs after the main query: left to a transaction.
        let s = joined_counting_first(outcome(), None);
        assert!(!s.serialized_by_itself() && s.sql.contains(EVENTS_OF.text), "{}", s.sql);

        // Not by itself: a count of a limit's table left as it was, a second lock, a count whose
        // lock is not the statement's (left as it was), or no lock at all.
        let count =
            |subject: &str| Stmt::new(format!("SELECT {}", EVENTS_OF.text)).bind(subject).bind("reset").bind(0_i64);
        let left = Stmt::new(format!("SELECT {} + (select count(1) from GATE_EVENTS)", EVENTS_OF.text))
            .bind("corp|a")
            .bind("reset")
            .bind(0_i64)
            .serialized_on("gate_events:corp|a");
        assert!(!by_itself(left).0);
        let two = count("corp|a").serialized_on("gate_events:corp|a").serialized_on("gate_events:client:192.0.2.1");
        assert!(!by_itself(two).0);
        let (alone, sql) = by_itself(count("corp|b").serialized_on("gate_events:corp|a"));
        assert!(!alone && sql.contains(EVENTS_OF.text), "{sql}");
        let (alone, sql) = by_itself(count("corp|a"));
        assert!(!alone && sql.contains(EVENTS_OF.text), "{sql}");
    }

    #[test]
    fn placeholders_are_numbered_for_postgresql_outside_quoted_text() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND c LIKE ? ESCAPE '\\' AND d = '?' LIMIT ?"),
            "SELECT a FROM t WHERE b = $1 AND c LIKE $2 ESCAPE '\\' AND d = '?' LIMIT $3"
        );
        assert_eq!(numbered("SELECT $1, $1"), "SELECT $1, $1");
        assert_eq!(numbered("SELECT 'it''s', ?"), "SELECT 'it''s', $1");
        // A quoted `?` is no placeholder when values are counted either.
        Stmt::new("SELECT ? WHERE x = '?'").bind(1_i64).check_values();
    }

    #[test]
    fn a_group_is_one_statement_for_postgresql_its_values_in_order() {
        let group = vec![
            Stmt::new("UPDATE a SET x = ? WHERE k = ?").bind(1_i64).bind("k"),
            Stmt::new("INSERT INTO b (y) VALUES (?);").bind(2_i64),
            Stmt::new("DELETE FROM c WHERE z = ?").bind(3_i64),
        ];
        let one = joined(group, None);
        assert_eq!(
            one.sql,
            "WITH together0 AS (\nUPDATE a SET x = ? WHERE k = ?\n), together1 AS (\nINSERT INTO b (y) VALUES (?)\n)\n\
             DELETE FROM c WHERE z = ?"
        );
        assert_eq!(one.values, [Value::Int(1), Value::Text("k".into()), Value::Int(2), Value::Int(3)]);
        assert_eq!(joined(vec![Stmt::new("DELETE FROM c")], None).sql, "DELETE FROM c", "a group of one is as it was");
        let nested =
            std::panic::catch_unwind(|| Batch::new().push_together(Stmt::new("WITH x AS (SELECT 1) DELETE FROM c")));
        assert!(nested.is_err(), "a statement with a `WITH` of its own");
        let twice = std::panic::catch_unwind(|| {
            let mut b = Batch::new();
            b.push_together(Stmt::new("UPDATE person SET n = 1"));
            b.push_together(Stmt::new("INSERT INTO audit (n) VALUES (1)"));
            b.push_together(Stmt::new("insert into Person(n) values (2)"));
        });
        assert!(twice.is_err(), "two statements of a group write one table");
        let mut apart = Batch::new();
        apart.push_together(Stmt::new("UPDATE person SET n = 1"));
        apart.push(Stmt::new("DELETE FROM audit"));
        apart.push_together(Stmt::new("DELETE FROM person"));
        assert_eq!(apart.stmts.len(), 3, "in another group, the same table again");

        // A counted part returns a row for each it changed, counted beside the read's rows.
        let counted = joined(
            vec![Stmt::new("UPDATE a SET x = 1"), Stmt::new("DELETE FROM b"), Stmt::new("SELECT y FROM c")],
            Some(0),
        );
        assert_eq!(
            counted.sql,
            "WITH together0 AS (\nUPDATE a SET x = 1\nRETURNING 1\n), together1 AS (\nDELETE FROM b\n)\n\
             SELECT counted_read.*, counted.n AS passback_counted FROM (SELECT COUNT(*) AS n FROM together0) AS counted \
             LEFT JOIN (SELECT read_row.*, TRUE AS passback_read_row FROM (\nSELECT y FROM c\n) AS read_row) AS counted_read ON TRUE"
        );
        let refused = |pushed: fn(&mut Batch)| std::panic::catch_unwind(|| pushed(&mut Batch::new())).is_err();
        assert!(
            refused(|b| {
                b.push_together(Stmt::new("INSERT INTO events (n) VALUES (1)"));
                b.push_together_counted(Stmt::new("INSERT INTO blocks (n) SELECT COUNT(*) FROM events"));
            }),
            "a counted part that reads what its group wrote before it"
        );
        assert!(
            refused(|b| {
                b.push_together_counted(Stmt::new("INSERT INTO blocks (n) VALUES (1)"));
                b.push_together(Stmt::new("INSERT INTO events (n) SELECT COUNT(*) FROM blocks"));
            }),
            "a part that reads what the counted one wrote"
        );
        assert!(
            refused(|b| b.push_together_counted(Stmt::new("DELETE FROM blocks RETURNING n"))),
            "its own rows returned"
        );
        assert!(
            refused(|b| {
                b.push_together_counted(Stmt::new("INSERT INTO blocks (n) VALUES (1)"));
                b.push_together_counted(Stmt::new("INSERT INTO events (n) VALUES (1)"));
            }),
            "two counted"
        );
        let mut fine = Batch::new();
        fine.push_together_counted(Stmt::new("INSERT INTO blocks (n) SELECT COUNT(*) FROM events"));
        fine.push_together(Stmt::new("INSERT INTO events (n) VALUES (1)"));
        assert_eq!(fine.counted, Some(0), "it reads what a part after it writes");
        assert!(mentions("SELECT (SELECT email FROM alternate_emails WHERE a = ?)", "alternate_emails"));
        assert!(mentions("select n from Audit", "audit"), "in any case");
        assert!(!mentions("SELECT email FROM alternate_emails", "emails"), "a whole word only");
    }

    #[test]
    fn numbered_placeholders_are_counted_and_kept_out_of_batches() {
        assert_eq!(highest_numbered_placeholder("SELECT $1 WHERE a = $12 OR b = $1"), Some(12));
        assert_eq!(highest_numbered_placeholder("SELECT ?2"), None, "SQLite's own kind is not used");
        assert_eq!(highest_numbered_placeholder("SELECT ? WHERE x = '$'"), None);
        let batched = std::panic::catch_unwind(|| Batch::new().push(Stmt::new("SELECT $1").bind(1_i64)));
        assert!(batched.is_err(), "a numbered placeholder in a batch");
    }
}
