//! The audit log: one row per attempt, never a password. Append-only (triggers refuse changes).

use super::Db;

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
    sqlx::query(
        "INSERT INTO audit (at, actor, operation, directory, anchor, target, outcome_code, raw, support_code, client) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.at)
    .bind(&r.actor)
    .bind(&r.operation)
    .bind(&r.directory)
    .bind(&r.anchor)
    .bind(&r.target)
    .bind(&r.outcome_code)
    .bind(&r.raw)
    .bind(&r.support_code)
    .bind(&r.client)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn recent(db: &Db, limit: i64) -> sqlx::Result<Vec<AuditRecord>> {
    sqlx::query_as(
        "SELECT at, actor, operation, directory, anchor, target, outcome_code, raw, support_code, client \
         FROM audit ORDER BY id DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
