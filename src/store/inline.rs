//! SQLite statements run on the calling thread, for the few trips most requests make (their
//! session, the person a name is, their limits and claims, their batches). sqlx runs each SQLite connection on a thread of its own: a statement
//! is handed to that thread and its answer handed back, and on this kind of machine the two
//! hand-offs cost more than a session read itself (about 0.1 ms one at a time, and a context
//! switch each under load). Here the portal keeps a few connections of its own to the same file
//! and runs a statement where the request is, in the tens of microseconds it takes.
//!
//! Only what cannot wait runs here: nothing that could sleep on a lock. A connection here never
//! waits for another's lock (no busy handler): a write takes the writer's turn first, which every
//! writer of this process takes (so none of them holds the lock meanwhile), and if another
//! process holds it, or a read finds the log being started again, the statement is handed to
//! sqlx's connections, which wait on their own threads ([`Ran::Busy`]). Commits that are flushed
//! to the disk (`durable_commits`) are not made here: a flush would hold the request's thread.

use super::value::Value;
use libsqlite3_sys as ffi;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a statement, or several in one text, came to.
#[derive(Debug, Default)]
pub struct Answer {
    /// The rows returned, by any of its statements, in order.
    pub rows: Vec<Vec<Field>>,
    /// For each statement in order, the rows changed as SQLite counts them when it ends (the
    /// last insert, update or delete's, as sqlx reports it).
    pub changed: Vec<u64>,
}

/// How a run ended, where it did not end with its answer.
#[derive(Debug)]
pub enum Ran {
    /// Nothing ran: another connection holds a lock it would have waited for, or no connection
    /// here was free. The caller runs it through sqlx.
    Busy,
    /// The database refused it; what ran of it was undone.
    Failed(sqlx::Error),
}

/// What ran here, or `None` when it is left to sqlx's connections ([`Ran::Busy`]).
pub fn settled(ran: Result<Answer, Ran>) -> Option<sqlx::Result<Answer>> {
    match ran {
        Ok(answer) => Some(Ok(answer)),
        Err(Ran::Failed(e)) => Some(Err(e)),
        Err(Ran::Busy) => None,
    }
}

/// The connections of one SQLite file kept for running statements on the calling thread.
pub struct Inline {
    path: CString,
    /// Set on each connection as it opens (see `super::per_connection`).
    pragmas: CString,
    writer: Mutex<Option<Conn>>,
    readers: Vec<Mutex<Option<Conn>>>,
    closed: AtomicBool,
    /// See [`Inline::after_checkpoint`].
    restart_due: AtomicBool,
    /// Whether a connection failed to open (said once).
    open_failed: AtomicBool,
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").field("path", &self.path).field("readers", &self.readers.len()).finish()
    }
}

/// How many connections here read at once; a read finding them all in use goes through sqlx.
const READERS: usize = 2;

/// How many statement texts a connection keeps prepared; past that, all are let go.
const KEPT: usize = 128;

impl Inline {
    pub fn new(path: &std::path::Path, pragmas: &[(&str, &str)]) -> anyhow::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let path = CString::new(path.as_os_str().as_bytes())?;
        let pragmas: String = pragmas.iter().map(|(k, v)| format!("PRAGMA {k} = {v};")).collect();
        let readers = (0..READERS).map(|_| Mutex::new(None)).collect();
        Ok(Inline {
            path,
            pragmas: CString::new(pragmas)?,
            writer: Mutex::new(None),
            readers,
            closed: AtomicBool::new(false),
            restart_due: AtomicBool::new(false),
            open_failed: AtomicBool::new(false),
        })
    }

    /// Closes every connection; nothing runs here after this.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for slot in std::iter::once(&self.writer).chain(&self.readers) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Runs `sql` (one statement that only reads) with `values` on a free reading connection.
    /// A read that finds the log being started again by a checkpoint is handed back before it
    /// read anything; SQLite itself may first try again for a moment (rarely, and only then).
    pub fn read(&self, sql: &str, values: &[Value]) -> Result<Answer, Ran> {
        for slot in &self.readers {
            if let Ok(mut conn) = slot.try_lock() {
                return self.on(&mut conn, |c| match c.run(sql, values) {
                    Err(e) if busy(&e) && c.idle() => Err(Ran::Busy),
                    ran => ran.map_err(Ran::Failed),
                });
            }
        }
        Err(Ran::Busy)
    }

    /// Runs `sql` (several statements, which write) with `values` in one transaction that takes
    /// the write lock at once, on the writing connection. The caller holds the writer's turn.
    pub fn write(&self, sql: &str, values: &[Value]) -> Result<Answer, Ran> {
        // The first write after a checkpoint starts the log again, and flushes its new header.
        if self.restart_due.swap(false, Ordering::SeqCst) {
            return Err(Ran::Busy);
        }
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.on(&mut conn, |c| c.transaction(sql, values))
    }

    /// Says that a checkpoint copied the whole log into the database: the next write, which
    /// starts the log again and flushes it, is left to sqlx's writing connection.
    pub fn after_checkpoint(&self) {
        self.restart_due.store(true, Ordering::SeqCst);
    }

    /// Runs `work` on the connection in `slot`, opened if need be; a connection left in a
    /// transaction it could not end is closed.
    fn on(&self, slot: &mut Option<Conn>, work: impl FnOnce(&mut Conn) -> Result<Answer, Ran>) -> Result<Answer, Ran> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Ran::Busy);
        }
        if slot.is_none() {
            match Conn::open(&self.path, &self.pragmas) {
                Ok(conn) => *slot = Some(conn),
                Err(e) => {
                    if !self.open_failed.swap(true, Ordering::SeqCst) {
                        tracing::warn!(error = %e, "a connection to the database could not be opened here; sqlx's run the statements");
                    }
                    return Err(Ran::Busy);
                }
            }
        }
        let conn = slot.as_mut().ok_or(Ran::Busy)?;
        let ran = work(conn);
        if !conn.idle() {
            *slot = None;
        }
        ran
    }
}

/// One connection of our own.
struct Conn {
    db: NonNull<ffi::sqlite3>,
    /// Statement texts prepared, each as the statements it is made of.
    prepared: HashMap<Box<str>, Vec<NonNull<ffi::sqlite3_stmt>>>,
}

// SAFETY: SQLite is built thread-safe (sqlx's bundled build); a connection opened with
// `SQLITE_OPEN_NOMUTEX` may move between threads as long as one uses it at a time, which its
// `Mutex` in `Inline` sees to. Its statements go with it.
unsafe impl Send for Conn {}

impl Conn {
    fn open(path: &CStr, pragmas: &CStr) -> Result<Conn, sqlx::Error> {
        let mut db = std::ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX | ffi::SQLITE_OPEN_PRIVATECACHE;
        // SAFETY: `path` is NUL-terminated; `db` is written by SQLite (a handle even on failure,
        // closed by `Conn`'s drop).
        let rc = unsafe { ffi::sqlite3_open_v2(path.as_ptr(), &mut db, flags, std::ptr::null()) };
        let db =
            NonNull::new(db).ok_or_else(|| sqlx::Error::Protocol("SQLite could not allocate a connection".into()))?;
        let conn = Conn { db, prepared: HashMap::new() };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc));
        }
        // SAFETY: an open handle.
        unsafe { ffi::sqlite3_extended_result_codes(db.as_ptr(), 1) };
        conn.exec(pragmas)?;
        Ok(conn)
    }

    /// Runs `sql`, which takes no values and returns no rows.
    fn exec(&self, sql: &CStr) -> Result<(), sqlx::Error> {
        // SAFETY: an open handle and a NUL-terminated text; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(self.db.as_ptr(), sql.as_ptr(), None, std::ptr::null_mut(), std::ptr::null_mut())
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    /// Whether no transaction is open.
    fn idle(&self) -> bool {
        // SAFETY: an open handle.
        unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) != 0 }
    }

    /// Runs `sql` in a transaction of its own that takes the write lock at once; what failed
    /// half way is rolled back.
    fn transaction(&mut self, sql: &str, values: &[Value]) -> Result<Answer, Ran> {
        // Busy only here, before anything ran: nothing is ever run twice.
        if let Err(e) = self.run("BEGIN IMMEDIATE", &[]) {
            return Err(if busy(&e) { Ran::Busy } else { Ran::Failed(e) });
        }
        let ran = self.run(sql, values).and_then(|answer| self.run("COMMIT", &[]).map(|_| answer));
        if ran.is_err() && !self.idle() {
            let _ = self.exec(c"ROLLBACK");
        }
        ran.map_err(Ran::Failed)
    }

    /// Runs each statement of `sql` in turn, binding `values` in order across them.
    fn run(&mut self, sql: &str, values: &[Value]) -> Result<Answer, sqlx::Error> {
        let stmts = self.prepare(sql)?;
        let mut answer = Answer::default();
        let mut bound = 0;
        for stmt in stmts {
            let ran = self.step_all(stmt, values, &mut bound, &mut answer);
            // SAFETY: a statement of this connection; resetting ends its run and releases
            // what it read, clearing lets go of its values.
            unsafe {
                ffi::sqlite3_reset(stmt.as_ptr());
                ffi::sqlite3_clear_bindings(stmt.as_ptr());
            }
            ran?;
        }
        Ok(answer)
    }

    fn step_all(
        &self,
        stmt: NonNull<ffi::sqlite3_stmt>,
        values: &[Value],
        bound: &mut usize,
        answer: &mut Answer,
    ) -> Result<(), sqlx::Error> {
        let s = stmt.as_ptr();
        // SAFETY: `s` is a statement of this connection, reset and cleared after every run.
        unsafe {
            for i in 1..=ffi::sqlite3_bind_parameter_count(s) {
                let at = match placeholder_number(ffi::sqlite3_bind_parameter_name(s, i)) {
                    Some(n) => n.checked_sub(1),
                    None => {
                        *bound += 1;
                        Some(*bound - 1)
                    }
                };
                // As sqlx: a placeholder without a value is NULL.
                let Some(value) = at.and_then(|at| values.get(at)) else { continue };
                let rc = bind(s, i, value);
                if rc != ffi::SQLITE_OK {
                    return Err(self.error(rc));
                }
            }
            loop {
                match ffi::sqlite3_step(s) {
                    ffi::SQLITE_ROW => answer.rows.push(row(s)?),
                    ffi::SQLITE_DONE => break,
                    rc => return Err(self.error(rc)),
                }
            }
            answer.changed.push(u64::try_from(ffi::sqlite3_changes64(self.db.as_ptr())).unwrap_or(0));
        }
        Ok(())
    }

    /// The statements `sql` is made of, prepared once and kept.
    fn prepare(&mut self, sql: &str) -> Result<Vec<NonNull<ffi::sqlite3_stmt>>, sqlx::Error> {
        if let Some(stmts) = self.prepared.get(sql) {
            return Ok(stmts.clone());
        }
        if self.prepared.len() >= KEPT {
            self.let_go();
        }
        let mut stmts: Vec<NonNull<ffi::sqlite3_stmt>> = Vec::new();
        let mut rest = sql.as_bytes();
        while !rest.iter().all(u8::is_ascii_whitespace) {
            let (mut stmt, mut tail) = (std::ptr::null_mut(), std::ptr::null());
            let len = c_int::try_from(rest.len()).map_err(|_| sqlx::Error::Protocol("a statement too long".into()))?;
            // SAFETY: `rest` is valid for `len` bytes; SQLite writes a statement (or null, for a
            // text of comments) and where it stopped reading, within `rest`.
            let rc = unsafe {
                ffi::sqlite3_prepare_v3(
                    self.db.as_ptr(),
                    rest.as_ptr().cast::<c_char>(),
                    len,
                    ffi::SQLITE_PREPARE_PERSISTENT,
                    &mut stmt,
                    &mut tail,
                )
            };
            if rc != ffi::SQLITE_OK {
                for s in stmts {
                    // SAFETY: prepared above, kept nowhere else.
                    unsafe { ffi::sqlite3_finalize(s.as_ptr()) };
                }
                return Err(self.error(rc));
            }
            // SAFETY: `tail` points into `rest` (or at its end).
            let used = usize::try_from(unsafe { tail.cast::<u8>().offset_from(rest.as_ptr()) }).unwrap_or(rest.len());
            rest = &rest[used.min(rest.len())..];
            stmts.extend(NonNull::new(stmt));
            if used == 0 {
                break;
            }
        }
        self.prepared.insert(sql.into(), stmts.clone());
        Ok(stmts)
    }

    fn let_go(&mut self) {
        for s in self.prepared.drain().flat_map(|(_, stmts)| stmts) {
            // SAFETY: prepared by this connection and no longer kept.
            unsafe { ffi::sqlite3_finalize(s.as_ptr()) };
        }
    }

    /// The connection's error for `rc`, as sqlx reports a database's.
    fn error(&self, rc: c_int) -> sqlx::Error {
        // SAFETY: an open handle; the message is copied before anything else runs on it.
        let message = unsafe {
            let msg = ffi::sqlite3_errmsg(self.db.as_ptr());
            if msg.is_null() {
                String::new()
            } else {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            }
        };
        // Extended result codes are on: `rc` is the extended one.
        sqlx::Error::Database(Box::new(Refused { code: rc, message }))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.let_go();
        // SAFETY: every statement is finalized; the handle is not used again.
        unsafe { ffi::sqlite3_close(self.db.as_ptr()) };
    }
}

/// `?NNN` or `$NNN`, as sqlx numbers them; `None` for an anonymous `?`.
///
/// # Safety
/// `name` is null or a NUL-terminated text.
unsafe fn placeholder_number(name: *const c_char) -> Option<usize> {
    if name.is_null() {
        return None;
    }
    let name = CStr::from_ptr(name).to_str().ok()?;
    name.get(1..)?.parse().ok()
}

/// Binds `value` to placeholder `i` of `s` (SQLite copies texts and blobs).
///
/// # Safety
/// `s` is a statement that is not running.
unsafe fn bind(s: *mut ffi::sqlite3_stmt, i: c_int, value: &Value) -> c_int {
    match value {
        Value::Null => ffi::sqlite3_bind_null(s, i),
        Value::Int(n) => ffi::sqlite3_bind_int64(s, i, *n),
        Value::Bool(b) => ffi::sqlite3_bind_int64(s, i, i64::from(*b)),
        Value::Text(t) => ffi::sqlite3_bind_text64(
            s,
            i,
            t.as_ptr().cast(),
            t.len() as u64,
            ffi::SQLITE_TRANSIENT(),
            ffi::SQLITE_UTF8 as u8,
        ),
        Value::Bytes(b) => ffi::sqlite3_bind_blob64(s, i, b.as_ptr().cast(), b.len() as u64, ffi::SQLITE_TRANSIENT()),
    }
}

/// The current row of `s`.
///
/// # Safety
/// `s` has just stepped to a row.
unsafe fn row(s: *mut ffi::sqlite3_stmt) -> Result<Vec<Field>, sqlx::Error> {
    let bytes = |i: c_int, p: *const u8| -> Vec<u8> {
        let n = usize::try_from(ffi::sqlite3_column_bytes(s, i)).unwrap_or(0);
        if p.is_null() || n == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p, n).to_vec()
        }
    };
    (0..ffi::sqlite3_column_count(s))
        .map(|i| {
            Ok(match ffi::sqlite3_column_type(s, i) {
                ffi::SQLITE_INTEGER => Field::Int(ffi::sqlite3_column_int64(s, i)),
                ffi::SQLITE_FLOAT => Field::Real(ffi::sqlite3_column_double(s, i)),
                ffi::SQLITE_TEXT => {
                    let text = bytes(i, ffi::sqlite3_column_text(s, i));
                    Field::Text(String::from_utf8(text).map_err(|e| sqlx::Error::Decode(e.utf8_error().into()))?)
                }
                ffi::SQLITE_BLOB => Field::Blob(bytes(i, ffi::sqlite3_column_blob(s, i).cast())),
                _ => Field::Null,
            })
        })
        .collect()
}

/// Whether `e` is SQLite's "busy": another connection holds a lock this one would wait for.
fn busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.try_downcast_ref::<Refused>().is_some_and(|r| r.code & 0xff == ffi::SQLITE_BUSY))
}

/// SQLite's refusal of a statement run here.
#[derive(Debug)]
struct Refused {
    /// SQLite's extended result code.
    code: c_int,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for Refused {}

impl sqlx::error::DatabaseError for Refused {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use sqlx::error::ErrorKind;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A value of a row read here, as the type the caller wants.
pub trait FromField: Sized {
    fn from_field(field: Field) -> Result<Self, Field>;
}

impl FromField for i64 {
    fn from_field(field: Field) -> Result<Self, Field> {
        match field {
            Field::Int(n) => Ok(n),
            other => Err(other),
        }
    }
}

impl FromField for bool {
    fn from_field(field: Field) -> Result<Self, Field> {
        i64::from_field(field).map(|n| n != 0)
    }
}

impl FromField for String {
    fn from_field(field: Field) -> Result<Self, Field> {
        match field {
            Field::Text(t) => Ok(t),
            other => Err(other),
        }
    }
}

impl FromField for Vec<u8> {
    fn from_field(field: Field) -> Result<Self, Field> {
        match field {
            Field::Blob(b) => Ok(b),
            Field::Text(t) => Ok(t.into_bytes()),
            other => Err(other),
        }
    }
}

impl<T: FromField> FromField for Option<T> {
    fn from_field(field: Field) -> Result<Self, Field> {
        match field {
            Field::Null => Ok(None),
            other => T::from_field(other).map(Some),
        }
    }
}

/// A row read here, as the type the caller wants: a tuple of [`FromField`] values.
pub trait FromFields: Sized {
    fn from_fields(row: Vec<Field>) -> sqlx::Result<Self>;
}

macro_rules! tuple_from_fields {
    ($($t:ident),+) => {
        impl<$($t: FromField),+> FromFields for ($($t,)+) {
            fn from_fields(row: Vec<Field>) -> sqlx::Result<Self> {
                let mut fields = row.into_iter().enumerate();
                Ok(($(field::<$t>(fields.next())?,)+))
            }
        }
    };
}

tuple_from_fields!(A);
tuple_from_fields!(A, B);
tuple_from_fields!(A, B, C);
tuple_from_fields!(A, B, C, D);
tuple_from_fields!(A, B, C, D, E);
tuple_from_fields!(A, B, C, D, E, F);
tuple_from_fields!(A, B, C, D, E, F, G);
tuple_from_fields!(A, B, C, D, E, F, G, H);
tuple_from_fields!(A, B, C, D, E, F, G, H, I);

/// The next value of a row, as `T`.
fn field<T: FromField>(next: Option<(usize, Field)>) -> sqlx::Result<T> {
    let (index, field) = next.ok_or_else(|| sqlx::Error::ColumnIndexOutOfBounds { index: 0, len: 0 })?;
    T::from_field(field).map_err(|was| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: format!("a {} where a {} was wanted", kind(&was), std::any::type_name::<T>()).into(),
    })
}

fn kind(field: &Field) -> &'static str {
    match field {
        Field::Null => "NULL",
        Field::Int(_) => "integer",
        Field::Real(_) => "real",
        Field::Text(_) => "text",
        Field::Blob(_) => "blob",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, Db, Stmt};

    /// `serve`'s database on a file of its own, with a table `t`.
    async fn served() -> (Db, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("pb-inline-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).unwrap();
        let url = format!("sqlite://{}?mode=rwc", root.join("passback.db").display());
        let db = crate::store::connect_with(&url, 4, false).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)").execute(db.sqlite()).await.unwrap();
        (db, root)
    }

    async fn done(db: Db, root: std::path::PathBuf) {
        db.close().await;
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn statements_run_here_bind_in_order_across_them_and_say_what_each_changed() {
        let (db, root) = served().await;
        let inline = db.inline().expect("serve's file runs brief statements here");
        let values = [Value::from("a"), Value::Int(1), Value::from(vec![0_u8, 1]), Value::from("b"), Value::Null];
        let sql = "INSERT INTO t (k, n, b) VALUES (?, ?, ?); INSERT INTO t (k, n) VALUES (?, ?);\n\
                   UPDATE t SET n = n + 1 WHERE n IS NOT NULL; SELECT k, n, b FROM t ORDER BY k;";
        let answer = inline.write(sql, &values).unwrap();
        assert_eq!(answer.changed, [1, 1, 1, 1], "the read reports the update before it, as sqlx does");
        let rows: Vec<(String, Option<i64>, Option<Vec<u8>>)> =
            answer.rows.into_iter().map(FromFields::from_fields).collect::<sqlx::Result<_>>().unwrap();
        assert_eq!(rows, [("a".into(), Some(2), Some(vec![0, 1])), ("b".into(), None, None)]);
        // Numbered placeholders, one used twice, on a reading connection.
        let read = inline.read("SELECT k FROM t WHERE n = $1 OR k = $2 OR k = $2", &["x".into(), "b".into()]).unwrap();
        assert_eq!(read.rows, [vec![Field::Text("b".into())]]);
        // What sqlx's connections see.
        let n: i64 = sqlx::query_scalar("SELECT n FROM t WHERE k = 'a'").fetch_one(db.sqlite()).await.unwrap();
        assert_eq!(n, 2);
        let wrong = <(i64,)>::from_fields(vec![Field::Text("a".into())]);
        assert!(matches!(wrong, Err(sqlx::Error::ColumnDecode { .. })), "{wrong:?}");
        done(db, root).await;
    }

    #[tokio::test]
    async fn a_batch_refused_half_way_is_undone_and_says_why_and_the_writer_goes_on() {
        let (db, root) = served().await;
        let mut b = Batch::new();
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 1)").bind("a"));
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 2)").bind("a"));
        let refused = b.run(&db).await.unwrap_err();
        assert!(refused.as_database_error().is_some_and(|e| e.is_unique_violation()), "{refused}");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(db.sqlite()).await.unwrap();
        assert_eq!(n, 0, "the first insert was undone");
        let mut again = Batch::new();
        again.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 3)").bind("c"));
        assert_eq!(again.run_counting_last(&db).await.unwrap(), 1);
        assert!(
            db.inline().unwrap().writer.lock().unwrap().as_ref().is_some_and(Conn::idle),
            "kept, out of any transaction"
        );
        done(db, root).await;
    }

    #[tokio::test]
    async fn a_write_that_would_wait_for_another_process_is_left_to_sqlx_which_waits() {
        use sqlx::Connection;
        let (db, root) = served().await;
        // Another process's write, holding the lock.
        let url = format!("sqlite://{}", root.join("passback.db").display());
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
        sqlx::query("INSERT INTO t (k, n) VALUES ('other', 1)").execute(&mut other).await.unwrap();
        let inline = db.inline().unwrap();
        assert!(matches!(inline.write("INSERT INTO t (k) VALUES ('x')", &[]), Err(Ran::Busy)), "it does not wait here");
        let mut b = Batch::new();
        b.push(Stmt::new("INSERT INTO t (k, n) VALUES (?, 2)").bind("mine"));
        let write = tokio::spawn({
            let db = db.clone();
            async move { b.run_counting_last(&db).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!write.is_finished(), "it waits for the other's lock");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        assert_eq!(write.await.unwrap().unwrap(), 1);
        let session: Option<(i64,)> =
            Stmt::new("SELECT n FROM t WHERE k = ?").bind("mine").fetch_optional_brief(&db).await.unwrap();
        assert_eq!(session, Some((2,)));
        drop(other);
        inline.after_checkpoint();
        let after = "INSERT INTO t (k) VALUES ('after')";
        assert!(matches!(inline.write(after, &[]), Err(Ran::Busy)), "the write that starts the log again is sqlx's");
        assert_eq!(inline.write(after, &[]).unwrap().changed, [1], "and the next is made here");
        inline.close();
        assert!(matches!(inline.read("SELECT 1", &[]), Err(Ran::Busy)), "nothing runs here once closed");
        done(db, root).await;
    }
}
