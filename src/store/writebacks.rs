//! Writebacks the portal sent, keyed by message id (= the one-use key of the form).

use super::Db;
use crate::domain::Outcome;

/// A writeback about to be sent.
pub struct Claim<'a> {
    pub msg_id: &'a str,
    pub directory: &'a str,
    pub anchor: &'a str,
    pub op: &'a str,
    /// The support code the person is shown for this attempt.
    pub support_code: &'a str,
    pub now: i64,
}

/// Claims the message id; false if it was claimed before (a double submit).
pub async fn claim(db: &Db, c: &Claim<'_>) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT OR IGNORE INTO writebacks (msg_id, directory, anchor, op, support_code, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(c.msg_id)
    .bind(c.directory)
    .bind(c.anchor)
    .bind(c.op)
    .bind(c.support_code)
    .bind(c.now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn finish(db: &Db, msg_id: &str, outcome: &Outcome, now: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE writebacks SET outcome_code = ?, outcome_json = ?, finished_at = ? WHERE msg_id = ?")
        .bind(outcome.code().0)
        .bind(serde_json::to_string(outcome).unwrap_or_default())
        .bind(now)
        .bind(msg_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Notes which agent the request went to, so only that agent's answer is accepted later.
pub async fn set_agent(db: &Db, msg_id: &str, agent_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE writebacks SET agent_id = ? WHERE msg_id = ?").bind(agent_id).bind(msg_id).execute(db).await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WritebackRow {
    pub msg_id: String,
    pub directory: String,
    pub anchor: String,
    pub op: String,
    pub support_code: String,
    pub agent_id: Option<String>,
    pub outcome_code: Option<String>,
}

pub async fn get(db: &Db, msg_id: &str) -> sqlx::Result<Option<WritebackRow>> {
    sqlx::query_as(
        "SELECT msg_id, directory, anchor, op, support_code, agent_id, outcome_code FROM writebacks WHERE msg_id = ?",
    )
    .bind(msg_id)
    .fetch_optional(db)
    .await
}
