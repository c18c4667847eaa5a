//! The audit log: one row per attempt, never a password. Append-only (triggers refuse changes).

use super::{Db, Stmt};

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct AuditRecord {
    pub at: i64,
    pub actor: String,
    pub operation: String,
    pub directory: Option<String>,
    pub anchor: Option<String>,
    pub target: Option<String>,
    pub outcome_code: String,
    pub raw: String,
    pub support_code: String,
    pub client: Option<String>,
}

pub async fn record(db: &Db, r: &AuditRecord) -> sqlx::Result<()> {
    insert(r).run(db).await.map(drop)
}

/// [`record`], as a statement to run with others.
pub fn insert(r: &AuditRecord) -> Stmt {
    Stmt::new(
        "INSERT INTO audit (at, actor, operation, directory, anchor, target, outcome_code, raw, support_code, client) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.at)
    .bind(&r.actor)
    .bind(&r.operation)
    .bind(r.directory.as_deref())
    .bind(r.anchor.as_deref())
    .bind(r.target.as_deref())
    .bind(&r.outcome_code)
    .bind(&r.raw)
    .bind(&r.support_code)
    .bind(r.client.as_deref())
}

/// What the audit page filters by; every field that is set narrows.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AuditFilter {
    /// From this time (Unix seconds), inclusive.
    pub from: Option<i64>,
    /// Until this time (Unix seconds), exclusive.
    pub until: Option<i64>,
    pub actor: Option<String>,
    /// The person's user name (or the keyed name of an unmatched one), or their anchor.
    pub target: Option<String>,
    /// An operation, or the start of one (`helpdesk.` for every helpdesk act).
    pub operation: Option<String>,
    pub outcome: Option<String>,
    pub support_code: Option<String>,
}

const COLUMNS: &str = "at, actor, operation, directory, anchor, target, outcome_code, raw, support_code, client";

/// The rows that match `f`, newest first.
pub async fn search(db: &Db, f: &AuditFilter, offset: i64, limit: i64) -> sqlx::Result<Vec<AuditRecord>> {
    let given = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    let mut q = Stmt::new(format!("SELECT {COLUMNS} FROM audit WHERE 1 = 1"));
    if let Some(from) = f.from {
        q = q.push(" AND at >= ?").bind(from);
    }
    if let Some(until) = f.until {
        q = q.push(" AND at < ?").bind(until);
    }
    if let Some(actor) = given(&f.actor) {
        q = q.push(" AND actor = ?").bind(actor);
    }
    if let Some(target) = given(&f.target) {
        q = q.push(" AND (target = ? OR anchor = ?)").bind(target.to_lowercase()).bind(target);
    }
    if let Some(op) = given(&f.operation) {
        q = if op.ends_with('.') {
            // Every operation under `op` (`helpdesk.` for `helpdesk.reset`…), its text taken as it is.
            q.push(" AND substr(operation, 1, length(?)) = ?").bind(op.clone()).bind(op)
        } else {
            q.push(" AND operation = ?").bind(op)
        };
    }
    if let Some(outcome) = given(&f.outcome) {
        q = q.push(" AND outcome_code = ?").bind(outcome.to_uppercase());
    }
    if let Some(code) = given(&f.support_code) {
        q = q.push(" AND support_code = ?").bind(code.trim().to_uppercase());
    }
    q.push(" ORDER BY id DESC LIMIT ? OFFSET ?").bind(limit).bind(offset).fetch_all(db).await
}

/// The newest rows about one person.
pub async fn for_person(db: &Db, directory: &str, anchor: &str, limit: i64) -> sqlx::Result<Vec<AuditRecord>> {
    Stmt::new(format!("SELECT {COLUMNS} FROM audit WHERE directory = ? AND anchor = ? ORDER BY id DESC LIMIT ?"))
        .bind(directory)
        .bind(anchor)
        .bind(limit)
        .fetch_all(db)
        .await
}

pub async fn recent(db: &Db, limit: i64) -> sqlx::Result<Vec<AuditRecord>> {
    Stmt::new(
        "SELECT at, actor, operation, directory, anchor, target, outcome_code, raw, support_code, client \
         FROM audit ORDER BY id DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
