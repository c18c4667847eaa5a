//! Writes that belong together (an act's outcome, its audit row, what follows from it) run as one
//! transaction, in one trip to the database. On SQLite each trip is a hand-off to the connection's
//! own thread and back, which costs more than the statements themselves: a request that made a
//! dozen of them spent most of its time waking threads.
//!
//! A [`Stmt`] binds its values in order to anonymous `?` placeholders, or to numbered ones
//! (`$1`, which may come back) when it runs on its own; only the first kind can be joined into a
//! batch, whose values are bound in order across all its statements.

use super::Db;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::Arguments;
use std::borrow::Cow;

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<bool> for Value {
    /// As SQLite keeps it: 1 or 0.
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}

impl<T: serde::Serialize> From<&sqlx::types::Json<T>> for Value {
    /// As JSON text.
    fn from(v: &sqlx::types::Json<T>) -> Self {
        Value::Text(serde_json::to_string(&v.0).unwrap_or_else(|_| "null".into()))
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One statement and its values, bound in order to its placeholders (see the module's note).
#[derive(Debug, Clone)]
pub struct Stmt {
    sql: Cow<'static, str>,
    values: Vec<Value>,
}

impl Stmt {
    /// A statement: its text is usually a literal, or made once from constant parts.
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Stmt { sql: sql.into(), values: Vec::new() }
    }

    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Runs it on its own: how many rows it changed.
    pub async fn run(self, db: &Db) -> sqlx::Result<u64> {
        self.check_values();
        let args = arguments(self.values)?;
        Ok(sqlx::query_with(&self.sql, args).execute(db).await?.rows_affected())
    }

    /// Runs it on its own: whether it changed exactly one row.
    pub async fn changed_one(self, db: &Db) -> sqlx::Result<bool> {
        Ok(self.run(db).await? == 1)
    }

    /// Runs it on its own: the first row it returns, if any.
    pub async fn fetch_optional<T>(self, db: &Db) -> sqlx::Result<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        self.check_values();
        sqlx::query_as_with(&self.sql, arguments(self.values)?).fetch_optional(db).await
    }

    /// Runs it on its own: its one row (an error when there is none).
    pub async fn fetch_one<T>(self, db: &Db) -> sqlx::Result<T>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        self.fetch_optional(db).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs it on its own: every row it returns.
    pub async fn fetch_all<T>(self, db: &Db) -> sqlx::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        self.check_values();
        sqlx::query_as_with(&self.sql, arguments(self.values)?).fetch_all(db).await
    }

    /// Runs it on its own: the first column of the first row, if there is a row.
    pub async fn scalar<T>(self, db: &Db) -> sqlx::Result<Option<T>>
    where
        (T,): for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        Ok(self.fetch_optional::<(T,)>(db).await?.map(|(v,)| v))
    }

    /// Runs it on its own: the first column of its one row (an error when there is none).
    pub async fn scalar_one<T>(self, db: &Db) -> sqlx::Result<T>
    where
        (T,): for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        self.scalar(db).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs it on its own: the first column of every row it returns.
    pub async fn scalar_all<T>(self, db: &Db) -> sqlx::Result<Vec<T>>
    where
        (T,): for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        Ok(self.fetch_all::<(T,)>(db).await?.into_iter().map(|(v,)| v).collect())
    }
}

impl Stmt {
    /// One value for each placeholder (for numbered ones, each number): one missing would shift
    /// every later value of its batch.
    fn check_values(&self) {
        let wanted = match highest_numbered_placeholder(&self.sql) {
            Some(n) => n,
            None => self.sql.matches('?').count(),
        };
        assert_eq!(wanted, self.values.len(), "values bound to {}", self.sql);
    }
}

/// Statements run together: all of them or none.
#[derive(Debug, Default)]
pub struct Batch(Vec<Stmt>);

impl Batch {
    pub fn new() -> Self {
        Batch(Vec::new())
    }

    pub fn push(&mut self, s: Stmt) {
        // A numbered placeholder would take a value of another statement of the batch.
        assert!(highest_numbered_placeholder(&s.sql).is_none(), "a batched statement binds with `?` only: {}", s.sql);
        self.0.push(s);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs every statement, then `read`, in one transaction: the rows `read` returns. Only
    /// `read` may return rows (no `RETURNING` in the others).
    ///
    /// It runs to its end even if the caller stops waiting (a browser that went away): a
    /// transaction is never left half done on a pooled connection.
    pub async fn run_then<T>(self, db: &Db, read: Stmt) -> sqlx::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin + 'static,
    {
        let mut stmts = self.0;
        stmts.push(read);
        let (sql, values) = joined(stmts);
        let args = arguments(values)?;
        let db = db.clone();
        tokio::spawn(async move {
            let mut conn = db.acquire().await?;
            let rows = sqlx::query_as_with::<_, T, _>(&sql, args).fetch_all(&mut *conn).await;
            if rows.is_err() {
                // A statement failed part way: what ran before it is undone. A connection that
                // cannot even roll back is not given back to the pool.
                if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                    conn.close_on_drop();
                }
            }
            rows
        })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("a batch of statements did not finish: {e}")))?
    }

    /// Runs every statement in one transaction.
    pub async fn run(self, db: &Db) -> sqlx::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        self.run_then::<(i64,)>(db, Stmt::new("SELECT 0 WHERE 0")).await.map(drop)
    }
}

/// The statements as one text, in a transaction that takes the write lock at once (so that it
/// never has to be upgraded half way, which could fail under contention), and their values.
fn joined(stmts: Vec<Stmt>) -> (String, Vec<Value>) {
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    let mut values = Vec::new();
    for s in stmts {
        s.check_values();
        sql.push_str(s.sql.trim().trim_end_matches(';'));
        sql.push_str(";\n");
        values.extend(s.values);
    }
    sql.push_str("COMMIT;");
    (sql, values)
}

fn arguments(values: Vec<Value>) -> sqlx::Result<SqliteArguments<'static>> {
    let mut args = SqliteArguments::default();
    for v in values {
        let added = match v {
            Value::Null => args.add(None::<i64>),
            Value::Int(i) => args.add(i),
            Value::Text(s) => args.add(s),
            Value::Bytes(b) => args.add(b),
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// The highest numbered placeholder (`$1`, `?1`) in `sql`, if it has any: they would not survive
/// being joined.
fn highest_numbered_placeholder(sql: &str) -> Option<usize> {
    let bytes = sql.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .filter(|&i| (bytes[i] == b'$' || bytes[i] == b'?') && bytes[i + 1].is_ascii_digit())
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
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)").execute(&db).await.unwrap();
        db
    }

    #[tokio::test]
    async fn a_batch_binds_across_its_statements_and_returns_what_the_read_found() {
        let db = db().await;
        let mut b = Batch::new();
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, ?)").bind("a").bind(1_i64));
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, ?)").bind("b").bind(None::<i64>));
        let read = Stmt::new("SELECT k, n FROM t WHERE k IN (?, ?) ORDER BY k").bind("a").bind("b");
        let rows: Vec<(String, Option<i64>)> = b.run_then(&db, read).await.unwrap();
        assert_eq!(rows, vec![("a".into(), Some(1)), ("b".into(), None)]);
    }

    #[tokio::test]
    async fn a_failing_statement_undoes_the_batch_and_the_connection_goes_on() {
        let db = db().await;
        let mut b = Batch::new();
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 1)").bind("a"));
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 2)").bind("a"));
        assert!(b.run(&db).await.is_err(), "the second insert breaks the key");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&db).await.unwrap();
        assert_eq!(n, 0, "the first insert was undone");
        // The one connection is usable, outside any transaction.
        let mut again = Batch::new();
        again.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 3)").bind("c"));
        again.run(&db).await.unwrap();
        assert_eq!(Stmt::new("UPDATE t SET n = n + 1 WHERE k = ?").bind("c").run(&db).await.unwrap(), 1);
    }

    #[test]
    fn numbered_placeholders_are_counted_and_kept_out_of_batches() {
        assert_eq!(highest_numbered_placeholder("SELECT $1 WHERE a = $12 OR b = $1"), Some(12));
        assert_eq!(highest_numbered_placeholder("SELECT ?2"), Some(2));
        assert_eq!(highest_numbered_placeholder("SELECT ? WHERE x = '$'"), None);
        let batched = std::panic::catch_unwind(|| Batch::new().push(Stmt::new("SELECT $1").bind(1_i64)));
        assert!(batched.is_err(), "a numbered placeholder in a batch");
    }
}
