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
    /// The portal instance that claims it and waits for its answer.
    pub instance: &'a str,
    pub now: i64,
}

/// Claims the message id; false if it was claimed before (a double submit).
pub async fn claim(db: &Db, c: &Claim<'_>) -> sqlx::Result<bool> {
    Ok(claim_where(c, "VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run_brief(db).await? == 1)
}

/// Takes `reservation` (within `limits`) and, only if it was taken, claims `c`, in one
/// transaction: whether it was taken, and whether the message id was claimed now (false: it was
/// claimed before, a form sent again). On SQLite a batch; on PostgreSQL one statement, whose
/// claim sees what its first part inserted: one trip fewer than the two apart.
pub async fn claim_counted(
    db: &Db,
    c: &Claim<'_>,
    reservation: &super::attempts::Reservation,
    now: i64,
    limits: (u32, u32),
) -> sqlx::Result<(bool, bool)> {
    const CLAIMED_VALUES: &str = "SELECT ?, ?, ?, ?, ?, ?, ?, ?";
    let take = reservation.take(now, limits);
    if db.is_postgres() {
        let claim = claim_where(c, &format!("{CLAIMED_VALUES} WHERE EXISTS (SELECT 1 FROM taken)"));
        let both = Stmt::compose(
            "WITH taken AS ({} RETURNING 1), claimed AS ({} RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM taken), (SELECT COUNT(*) FROM claimed)",
            [take, claim],
        );
        let (taken, claimed): (i64, i64) = both.fetch_one(db).await?;
        return Ok((taken > 0, claimed > 0));
    }
    let claim = claim_where(
        c,
        &format!("{CLAIMED_VALUES} WHERE EXISTS (SELECT 1 FROM change_attempts WHERE subject = ? AND token = ?)"),
    )
    .bind(reservation.subject.as_str())
    .bind(reservation.token);
    let mut batch = super::Batch::new();
    batch.push(take);
    batch.push(claim);
    let ran: super::Ran<(i64,)> = batch.run_then(db, reservation.taken()).await?;
    Ok((ran.rows.first().is_some_and(|(n,)| *n > 0), ran.last_changed == 1))
}

/// The claim's insert, of the values `rows` gives (all eight bound here, in the columns' order).
fn claim_where(c: &Claim<'_>, rows: &str) -> Stmt {
    Stmt::new(format!(
        "INSERT INTO writebacks (msg_id, directory, anchor, op, support_code, agent_id, instance, created_at) \
         {rows} ON CONFLICT DO NOTHING"
    ))
    .bind(c.msg_id)
    .bind(c.directory)
    .bind(c.anchor)
    .bind(c.op)
    .bind(c.support_code)
    .bind(c.agent_id)
    .bind(c.instance)
    .bind(c.now)
}

/// Records a writeback's outcome and, unless an answer is still `awaited` (the request went to
/// an agent that did not answer in time), closes it: no answer is taken for it after this one.
/// `answered_by`: the agent whose answer came in time. Only the instance that holds it records
/// it (one that another carried on meanwhile does not).
pub fn finish(
    msg_id: &str,
    instance: &str,
    outcome: &Outcome,
    (answered_by, awaited): (Option<&str>, bool),
    took_ms: Option<u64>,
    now: i64,
) -> Stmt {
    Stmt::new(
        "UPDATE writebacks SET outcome_code = ?, outcome_json = ?, finished_at = ?, \
         agent_id = COALESCE(agent_id, ?), result_at = COALESCE(result_at, ?), took_ms = COALESCE(took_ms, ?) \
         WHERE msg_id = ? AND COALESCE(instance, ?) = ?",
    )
    .bind(outcome.code().0)
    .bind(serde_json::to_string(&outcome.for_the_record()).unwrap_or_default())
    .bind(now)
    .bind(answered_by)
    .bind((!awaited).then_some(now))
    .bind(took_ms.and_then(|ms| i64::try_from(ms).ok()))
    .bind(msg_id)
    .bind(instance)
    .bind(instance)
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
    Stmt::new(
        "UPDATE writebacks SET result_at = ?, late_outcome_code = ?, late_outcome_json = ? \
         WHERE msg_id = ? AND agent_id = ? AND result_at IS NULL \
         RETURNING msg_id, directory, anchor, op, support_code, agent_id, outcome_code",
    )
    .bind(now)
    .bind(outcome.code().0)
    .bind(serde_json::to_string(outcome).unwrap_or_default())
    .bind(msg_id)
    .bind(agent_id)
    .fetch_optional(db)
    .await
}

/// Keeps the answer of a writeback whose wait ended as it came, beside what the person saw; no
/// other answer is taken for it after this one.
pub async fn note_late_outcome(db: &Db, msg_id: &str, outcome: &Outcome, now: i64) -> sqlx::Result<()> {
    Stmt::new(
        "UPDATE writebacks SET late_outcome_code = ?, late_outcome_json = ?, result_at = COALESCE(result_at, ?) \
         WHERE msg_id = ?",
    )
    .bind(outcome.code().0)
    .bind(serde_json::to_string(outcome).unwrap_or_default())
    .bind(now)
    .bind(msg_id)
    .run(db)
    .await?;
    Ok(())
}

/// Lets go of an unfinished writeback `instance` holds, when the request that claimed it went
/// away before recording it: any instance may then carry it on ([`take_over`] from nobody).
pub async fn release(db: &Db, msg_id: &str, instance: &str) -> sqlx::Result<()> {
    Stmt::new("UPDATE writebacks SET instance = NULL WHERE msg_id = ? AND instance = ? AND finished_at IS NULL")
        .bind(msg_id)
        .bind(instance)
        .run(db)
        .await?;
    Ok(())
}

/// Notes which agent the request goes to, when it is not the one its claim named, so that only
/// that agent's answer is taken later, and an instance that carries it on sends it there too.
/// False when `instance` no longer holds it (another took it over): it must not be sent.
pub async fn set_agent(db: &Db, msg_id: &str, agent_id: &str, instance: &str) -> sqlx::Result<bool> {
    Stmt::new("UPDATE writebacks SET agent_id = ? WHERE msg_id = ? AND instance = ?")
        .bind(agent_id)
        .bind(msg_id)
        .bind(instance)
        .changed_one(db)
        .await
}

/// A writeback claimed before, as a form sent again finds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub directory: String,
    pub anchor: String,
    pub op: String,
    pub support_code: String,
    pub agent_id: Option<String>,
    /// The instance that claimed it (or carried it on since); `None` for one claimed before
    /// instances were recorded.
    pub instance: Option<String>,
    pub created_at: i64,
    pub outcome_json: Option<String>,
    /// The agent's answer, when it came after the person was shown PB-1002.
    pub late_outcome_json: Option<String>,
}

impl Claimed {
    /// The outcome the writeback ended in, when it has ended: the agent's answer that came late
    /// when there is one, as it is the directory's word.
    pub fn outcome(&self) -> Option<Outcome> {
        let shown: Outcome = serde_json::from_str(self.outcome_json.as_deref()?).ok()?;
        let late = self.late_outcome_json.as_deref().and_then(|j| serde_json::from_str(j).ok());
        Some(late.unwrap_or(shown))
    }
}

pub async fn claimed(db: &Db, msg_id: &str) -> sqlx::Result<Option<Claimed>> {
    Stmt::new(
        "SELECT directory, anchor, op, support_code, agent_id, instance, created_at, outcome_json, \
         late_outcome_json FROM writebacks WHERE msg_id = ?",
    )
    .bind(msg_id)
    .fetch_optional(db)
    .await
}

/// Takes over an unfinished writeback from `from`, the instance that claimed it and stopped:
/// the agent it names then (read with the take-over, so that it is the one the stopped instance
/// sent it to, if it sent it); `None` when it has finished meanwhile, or another instance took
/// it over first.
pub async fn take_over(db: &Db, msg_id: &str, from: Option<&str>, to: &str) -> sqlx::Result<Option<Option<String>>> {
    let taken: Option<(Option<String>,)> = Stmt::new(
        "UPDATE writebacks SET instance = ? \
         WHERE msg_id = ? AND finished_at IS NULL AND COALESCE(instance, '') = ? RETURNING agent_id",
    )
    .bind(to)
    .bind(msg_id)
    .bind(from.unwrap_or_default())
    .fetch_optional(db)
    .await?;
    Ok(taken.map(|(agent,)| agent))
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn claimed(db: &Db, msg_id: &str) {
        let c = Claim {
            msg_id,
            directory: "corp",
            anchor: "a-1",
            op: "reset",
            support_code: "S-1",
            agent_id: Some("agent-a"),
            instance: "instance-a",
            now: 100,
        };
        assert!(claim(db, &c).await.unwrap());
        assert!(!claim(db, &c).await.unwrap(), "a key is claimed once");
    }

    #[tokio::test]
    async fn only_a_writeback_still_awaiting_its_answer_takes_one_later_and_only_from_its_agent() {
        let db = super::super::connect("sqlite::memory:", 1).await.unwrap();
        let ok = Outcome::Success;
        // Sent, and no answer in time: the named agent's later answer is taken, once.
        claimed(&db, "m-timeout").await;
        finish("m-timeout", "instance-a", &Outcome::AgentTimeout, (None, true), None, 110).run(&db).await.unwrap();
        assert!(take_late_result(&db, "m-timeout", "agent-b", &ok, 120).await.unwrap().is_none(), "another agent");
        assert!(take_late_result(&db, "m-timeout", "agent-a", &ok, 120).await.unwrap().is_some());
        assert!(take_late_result(&db, "m-timeout", "agent-a", &ok, 121).await.unwrap().is_none(), "a copy");
        // Answered in time, even with "not confirmed": closed.
        claimed(&db, "m-answered").await;
        finish("m-answered", "instance-a", &Outcome::AgentTimeout, (Some("agent-a"), false), None, 110)
            .run(&db)
            .await
            .unwrap();
        assert!(take_late_result(&db, "m-answered", "agent-a", &ok, 120).await.unwrap().is_none());
        // Nothing sent (a refusal of the portal's own): closed too.
        claimed(&db, "m-local").await;
        finish("m-local", "instance-a", &Outcome::Protected, (None, false), None, 110).run(&db).await.unwrap();
        assert!(take_late_result(&db, "m-local", "agent-a", &ok, 120).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_form_sent_again_finds_the_latest_word_on_it_and_is_carried_on_once() {
        let db = super::super::connect("sqlite::memory:", 1).await.unwrap();
        claimed(&db, "m-1").await;
        let row = super::claimed(&db, "m-1").await.unwrap().unwrap();
        assert_eq!((row.instance.as_deref(), row.outcome()), (Some("instance-a"), None), "not answered yet");
        // Its instance stopped: another takes it over, once, and only from that one.
        assert_eq!(take_over(&db, "m-1", Some("instance-x"), "instance-b").await.unwrap(), None);
        assert!(!set_agent(&db, "m-1", "agent-b", "instance-b").await.unwrap(), "not held by that instance");
        assert!(set_agent(&db, "m-1", "agent-b", "instance-a").await.unwrap());
        let taken = take_over(&db, "m-1", Some("instance-a"), "instance-b").await.unwrap();
        assert_eq!(taken, Some(Some("agent-b".into())), "with the agent it went to last");
        assert!(!set_agent(&db, "m-1", "agent-c", "instance-a").await.unwrap(), "taken over: not sent");
        assert_eq!(take_over(&db, "m-1", Some("instance-a"), "instance-c").await.unwrap(), None, "taken over already");
        // Let go of by the request holding it (its client left): carried on from nobody.
        release(&db, "m-1", "instance-c").await.unwrap();
        assert_eq!(super::claimed(&db, "m-1").await.unwrap().unwrap().instance.as_deref(), Some("instance-b"));
        release(&db, "m-1", "instance-b").await.unwrap();
        assert_eq!(super::claimed(&db, "m-1").await.unwrap().unwrap().instance, None);
        assert!(take_over(&db, "m-1", None, "instance-b").await.unwrap().is_some());
        // Answered "not confirmed", then the agent's word came: that is what it came to.
        finish("m-1", "instance-b", &Outcome::AgentTimeout, (None, true), None, 110).run(&db).await.unwrap();
        assert_eq!(super::claimed(&db, "m-1").await.unwrap().unwrap().outcome(), Some(Outcome::AgentTimeout));
        let late = Outcome::InHistory { history: Some(5) };
        take_late_result(&db, "m-1", "agent-b", &late, 120).await.unwrap().unwrap();
        assert_eq!(super::claimed(&db, "m-1").await.unwrap().unwrap().outcome(), Some(late));
        assert_eq!(take_over(&db, "m-1", Some("instance-b"), "instance-c").await.unwrap(), None, "finished");
    }
}
