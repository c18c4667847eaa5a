//! Writebacks the portal sent, keyed by message id (= the one-use key of the form).

use super::{Db, Stmt};
use crate::domain::Outcome;

/// A writeback about to be sent.
pub struct Claim<'a> {
    pub msg_id: &'a str,
    pub directory: &'a str,
    pub anchor: &'a str,
    pub op: &'a str,
    /// The support code the person is shown for this attempt.
    pub support_code: &'a str,
    /// The agent it will be sent to, if it goes to one: only its answer is taken.
    pub agent_id: Option<&'a str>,
    pub now: i64,
}

/// Claims the message id; false if it was claimed before (a double submit).
pub async fn claim(db: &Db, c: &Claim<'_>) -> sqlx::Result<bool> {
    changed_one!(
        db,
        "INSERT OR IGNORE INTO writebacks (msg_id, directory, anchor, op, support_code, agent_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        c.msg_id,
        c.directory,
        c.anchor,
        c.op,
        c.support_code,
        c.agent_id,
        c.now
    )
    .await
}

/// Records a writeback's outcome, and when the answer of `answered_by` came (none: no answer came
/// in time): from then on no other answer is taken for it (see [`take_late_result`]).
pub fn finish(msg_id: &str, outcome: &Outcome, answered_by: Option<&str>, now: i64) -> Stmt {
    Stmt::new(
        "UPDATE writebacks SET outcome_code = ?, outcome_json = ?, finished_at = ?, \
         agent_id = COALESCE(agent_id, ?), result_at = COALESCE(result_at, ?) WHERE msg_id = ?",
    )
    .bind(outcome.code().0)
    .bind(serde_json::to_string(outcome).unwrap_or_default())
    .bind(now)
    .bind(answered_by)
    .bind(answered_by.map(|_| now))
    .bind(msg_id)
}

/// Takes an answer that came after the wait ended, from the agent the request was sent to, and
/// only if no answer was taken before; what the person was shown stays as it is. `None` when the
/// writeback is unknown, was sent to another agent, or already has its answer.
pub async fn take_late_result(
    db: &Db,
    msg_id: &str,
    agent_id: &str,
    outcome: &Outcome,
    now: i64,
) -> sqlx::Result<Option<WritebackRow>> {
    sqlx::query_as(
        "UPDATE writebacks SET result_at = $1, late_outcome_code = $2 \
         WHERE msg_id = $3 AND agent_id = $4 AND result_at IS NULL \
         RETURNING msg_id, directory, anchor, op, support_code, agent_id, outcome_code",
    )
    .bind(now)
    .bind(outcome.code().0)
    .bind(msg_id)
    .bind(agent_id)
    .fetch_optional(db)
    .await
}

/// Keeps the answer of a writeback whose wait ended as it came, beside what the person saw; no
/// other answer is taken for it after this one.
pub async fn note_late_outcome(db: &Db, msg_id: &str, outcome: &Outcome, now: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE writebacks SET late_outcome_code = $1, result_at = COALESCE(result_at, $2) WHERE msg_id = $3")
        .bind(outcome.code().0)
        .bind(now)
        .bind(msg_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Notes which agent the request went to, when it is not the one its claim named, so that only
/// that agent's answer is taken later.
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
