//! Writebacks the portal sent, keyed by message id (= the one-use key of the form).

use super::Db;
use crate::domain::Outcome;

/// Claims `msg_id`; false if it was claimed before (a double submit).
pub async fn claim(db: &Db, msg_id: &str, directory: &str, anchor: &str, op: &str, now: i64) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT OR IGNORE INTO writebacks (msg_id, directory, anchor, op, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(msg_id)
    .bind(directory)
    .bind(anchor)
    .bind(op)
    .bind(now)
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

/// The stored outcome of an earlier writeback, if it has finished.
pub async fn outcome(db: &Db, msg_id: &str) -> sqlx::Result<Option<Outcome>> {
    let json: Option<Option<String>> = sqlx::query_scalar("SELECT outcome_json FROM writebacks WHERE msg_id = ?")
        .bind(msg_id)
        .fetch_optional(db)
        .await?;
    Ok(json.flatten().and_then(|j| serde_json::from_str(&j).ok()))
}
