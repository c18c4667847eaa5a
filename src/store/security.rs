//! Security info: the methods a person registered (authenticator seed as ciphertext, question
//! answers as argon2id hashes, an alternate e-mail address), and the self-service limits: failed
//! verifications and resets per hour, and the blocks they lead to.

use super::{Batch, Db, Stmt};

/// A person, as every table here keys them.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    pub directory: &'a str,
    pub anchor: &'a str,
}

impl Person<'_> {
    /// The subject under which the person's limits are counted.
    pub fn subject(&self) -> String {
        super::attempts::subject(self.directory, self.anchor)
    }

    /// What binds an encrypted secret to its row.
    pub fn context(&self, what: &str) -> String {
        format!("{what}|{}|{}", self.directory, self.anchor)
    }
}

// ---- authenticator app ----

pub struct TotpRow {
    pub secret_enc: Vec<u8>,
    pub confirmed: bool,
    pub last_step: i64,
}

/// Starts (or restarts) an enrolment: the seed waits for its first code before it counts.
pub async fn put_pending_totp(db: &Db, p: Person<'_>, secret_enc: &[u8], now: i64) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO totp_secrets (directory, anchor, secret_enc, created_at, confirmed_at, last_step) \
         VALUES (?, ?, ?, ?, NULL, 0) ON CONFLICT (directory, anchor) DO UPDATE SET \
         secret_enc = excluded.secret_enc, created_at = excluded.created_at, confirmed_at = NULL, last_step = 0 \
         WHERE totp_secrets.confirmed_at IS NULL",
    )
    .bind(p.directory)
    .bind(p.anchor)
    .bind(secret_enc)
    .bind(now)
    .run(db)
    .await?;
    Ok(())
}

pub async fn totp(db: &Db, p: Person<'_>) -> sqlx::Result<Option<TotpRow>> {
    let row: Option<(Vec<u8>, Option<i64>, i64)> =
        Stmt::new("SELECT secret_enc, confirmed_at, last_step FROM totp_secrets WHERE directory = ? AND anchor = ?")
            .bind(p.directory)
            .bind(p.anchor)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(secret_enc, confirmed_at, last_step)| TotpRow {
        secret_enc,
        confirmed: confirmed_at.is_some(),
        last_step,
    }))
}

/// Records that the code of time step `step` was used, and confirms a pending enrolment. False
/// when that step (or a later one) was used already: a code never works twice, even for two
/// requests racing each other.
pub async fn use_totp_step(db: &Db, p: Person<'_>, step: i64, now: i64) -> sqlx::Result<bool> {
    Stmt::new(
        "UPDATE totp_secrets SET last_step = ?, confirmed_at = COALESCE(confirmed_at, ?) \
         WHERE directory = ? AND anchor = ? AND last_step < ?",
    )
    .bind(step)
    .bind(now)
    .bind(p.directory)
    .bind(p.anchor)
    .bind(step)
    .changed_one(db)
    .await
}

pub async fn remove_totp(db: &Db, p: Person<'_>) -> sqlx::Result<()> {
    Stmt::new("DELETE FROM totp_secrets WHERE directory = ? AND anchor = ?")
        .bind(p.directory)
        .bind(p.anchor)
        .run(db)
        .await?;
    Ok(())
}

// ---- security questions ----

/// Replaces the person's answers with these (question id, argon2id hash) pairs, all at once.
pub async fn set_answers(db: &Db, p: Person<'_>, answers: &[(String, String)], now: i64) -> sqlx::Result<()> {
    let mut replaced = Batch::new();
    replaced.push(
        Stmt::new("DELETE FROM security_answers WHERE directory = ? AND anchor = ?").bind(p.directory).bind(p.anchor),
    );
    for (question, hash) in answers {
        replaced.push(
            Stmt::new(
                "INSERT INTO security_answers (directory, anchor, question, answer_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(p.directory)
            .bind(p.anchor)
            .bind(question)
            .bind(hash)
            .bind(now),
        );
    }
    replaced.run(db).await
}

/// The person's (question id, answer hash) pairs.
pub async fn answers(db: &Db, p: Person<'_>) -> sqlx::Result<Vec<(String, String)>> {
    Stmt::new("SELECT question, answer_hash FROM security_answers WHERE directory = ? AND anchor = ? ORDER BY question")
        .bind(p.directory)
        .bind(p.anchor)
        .fetch_all(db)
        .await
}

/// The person's session epoch (0 until something was first done to their account).
pub async fn session_epoch(db: &Db, p: Person<'_>) -> sqlx::Result<i64> {
    Stmt::new("SELECT COALESCE((SELECT epoch FROM person_epochs WHERE directory = $1 AND anchor = $2), 0)")
        .bind(p.directory)
        .bind(p.anchor)
        .scalar_one(db)
        .await
}

/// Raises the person's session epoch: sessions signed in under an older one end. Returns it.
pub async fn bump_session_epoch(db: &Db, p: Person<'_>) -> sqlx::Result<i64> {
    Stmt::new(
        "INSERT INTO person_epochs (directory, anchor, epoch) VALUES ($1, $2, 1) \
         ON CONFLICT (directory, anchor) DO UPDATE SET epoch = person_epochs.epoch + 1 RETURNING epoch",
    )
    .bind(p.directory)
    .bind(p.anchor)
    .scalar_one(db)
    .await
}

/// [`bump_session_epoch`], as a statement to run with others (the new epoch unread).
pub fn next_session_epoch(p: Person<'_>) -> Stmt {
    Stmt::new(
        "INSERT INTO person_epochs (directory, anchor, epoch) VALUES (?, ?, 1) \
         ON CONFLICT (directory, anchor) DO UPDATE SET epoch = person_epochs.epoch + 1",
    )
    .bind(p.directory)
    .bind(p.anchor)
}

/// How many people the portal knows (synced and cloud-only), how many of them have a confirmed
/// authenticator app, and how many have recovery codes left.
pub async fn method_shares(db: &Db) -> sqlx::Result<(i64, i64, i64)> {
    Stmt::new(
        "SELECT (SELECT COUNT(*) FROM directory_users) + (SELECT COUNT(*) FROM cloud_users), \
         (SELECT COUNT(*) FROM totp_secrets WHERE confirmed_at IS NOT NULL), \
         (SELECT COUNT(*) FROM (SELECT DISTINCT directory, anchor FROM recovery_codes WHERE used_at IS NULL) AS held)",
    )
    .fetch_one(db)
    .await
}

/// How long the questions drawn for a person stay the ones asked.
pub const QUESTION_DRAW_SECS: i64 = 86_400;

/// The questions to ask `p`, `ask` of those `registered`: the ones drawn for them within the
/// last day, else a new draw (by `shuffle`). Also whether they were drawn before and have not
/// been answered right since (asking again: counted as a failure by the caller).
pub async fn draw_questions(
    db: &Db,
    p: Person<'_>,
    registered: &[String],
    ask: usize,
    now: i64,
    shuffle: impl FnOnce(&mut Vec<String>),
) -> sqlx::Result<(Vec<String>, bool)> {
    Stmt::new("DELETE FROM question_draws WHERE directory = $1 AND anchor = $2 AND drawn_at <= $3")
        .bind(p.directory)
        .bind(p.anchor)
        .bind(now - QUESTION_DRAW_SECS)
        .run(db)
        .await?;
    let mut fresh = registered.to_vec();
    shuffle(&mut fresh);
    fresh.truncate(ask);
    let json = serde_json::to_string(&fresh).unwrap_or_else(|_| "[]".into());
    // One statement decides between racing first draws: the row that exists is the draw.
    let inserted = Stmt::new(
        "INSERT INTO question_draws (directory, anchor, questions, drawn_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(p.directory)
    .bind(p.anchor)
    .bind(&json)
    .bind(now)
    .run(db)
    .await?;
    if inserted == 1 {
        return Ok((fresh, false));
    }
    let (drawn, answered_at): (String, Option<i64>) =
        Stmt::new("SELECT questions, answered_at FROM question_draws WHERE directory = $1 AND anchor = $2")
            .bind(p.directory)
            .bind(p.anchor)
            .fetch_one(db)
            .await?;
    let drawn: Vec<String> = serde_json::from_str(&drawn).unwrap_or_default();
    if drawn.len() == ask && drawn.iter().all(|q| registered.contains(q)) {
        return Ok((drawn, answered_at.is_none()));
    }
    // The person registered other questions since: their new ones are drawn.
    Stmt::new(
        "UPDATE question_draws SET questions = $1, drawn_at = $2, answered_at = NULL \
         WHERE directory = $3 AND anchor = $4",
    )
    .bind(&json)
    .bind(now)
    .bind(p.directory)
    .bind(p.anchor)
    .run(db)
    .await?;
    Ok((fresh, false))
}

/// The questions drawn for `p` were answered right: asking them again is no longer a re-draw.
pub async fn questions_answered(db: &Db, p: Person<'_>, now: i64) -> sqlx::Result<()> {
    Stmt::new("UPDATE question_draws SET answered_at = $1 WHERE directory = $2 AND anchor = $3")
        .bind(now)
        .bind(p.directory)
        .bind(p.anchor)
        .run(db)
        .await?;
    Ok(())
}

pub async fn remove_answers(db: &Db, p: Person<'_>) -> sqlx::Result<()> {
    set_answers(db, p, &[], 0).await
}

// ---- recovery codes ----

/// Replaces the person's recovery codes with these (keyed hashes of the new codes), all at once.
pub async fn set_recovery_codes(db: &Db, p: Person<'_>, hashes: &[String], now: i64) -> sqlx::Result<()> {
    let mut replaced = Batch::new();
    replaced.push(
        Stmt::new("DELETE FROM recovery_codes WHERE directory = ? AND anchor = ?").bind(p.directory).bind(p.anchor),
    );
    for hash in hashes {
        replaced.push(
            Stmt::new("INSERT INTO recovery_codes (directory, anchor, code_hash, created_at) VALUES (?, ?, ?, ?)")
                .bind(p.directory)
                .bind(p.anchor)
                .bind(hash)
                .bind(now),
        );
    }
    replaced.run(db).await
}

/// Spends the person's unused recovery code with this keyed hash: true once, for the first to
/// spend it (two at once cannot both).
pub async fn use_recovery_code(db: &Db, p: Person<'_>, hash: &str, now: i64) -> sqlx::Result<bool> {
    Stmt::new(
        "UPDATE recovery_codes SET used_at = ? \
         WHERE directory = ? AND anchor = ? AND code_hash = ? AND used_at IS NULL",
    )
    .bind(now)
    .bind(p.directory)
    .bind(p.anchor)
    .bind(hash)
    .changed_one(db)
    .await
}

/// How many of the person's recovery codes are still unused.
pub async fn recovery_codes_left(db: &Db, p: Person<'_>) -> sqlx::Result<i64> {
    Stmt::new("SELECT COUNT(*) FROM recovery_codes WHERE directory = ? AND anchor = ? AND used_at IS NULL")
        .bind(p.directory)
        .bind(p.anchor)
        .scalar_one(db)
        .await
}

pub async fn remove_recovery_codes(db: &Db, p: Person<'_>) -> sqlx::Result<()> {
    set_recovery_codes(db, p, &[], 0).await
}

// ---- alternate e-mail ----

pub async fn set_alternate_email(db: &Db, p: Person<'_>, email: &str, now: i64) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO alternate_emails (directory, anchor, email, verified_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (directory, anchor) DO UPDATE SET email = excluded.email, verified_at = excluded.verified_at",
    )
    .bind(p.directory)
    .bind(p.anchor)
    .bind(email)
    .bind(now)
    .run(db)
    .await?;
    Ok(())
}

pub async fn alternate_email(db: &Db, p: Person<'_>) -> sqlx::Result<Option<String>> {
    Stmt::new("SELECT email FROM alternate_emails WHERE directory = ? AND anchor = ?")
        .bind(p.directory)
        .bind(p.anchor)
        .scalar(db)
        .await
}

/// [`alternate_email`], as the read that ends a [`super::Batch`]: one row, the address or NULL.
pub fn alternate_email_after(p: Person<'_>) -> Stmt {
    Stmt::new("SELECT (SELECT email FROM alternate_emails WHERE directory = ? AND anchor = ?)")
        .bind(p.directory)
        .bind(p.anchor)
}

pub async fn remove_alternate_email(db: &Db, p: Person<'_>) -> sqlx::Result<()> {
    Stmt::new("DELETE FROM alternate_emails WHERE directory = ? AND anchor = ?")
        .bind(p.directory)
        .bind(p.anchor)
        .run(db)
        .await?;
    Ok(())
}

// ---- re-confirmation ----

pub async fn mark_reviewed(db: &Db, p: Person<'_>, now: i64) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO security_info_reviews (directory, anchor, reviewed_at) VALUES (?, ?, ?) \
         ON CONFLICT (directory, anchor) DO UPDATE SET reviewed_at = excluded.reviewed_at",
    )
    .bind(p.directory)
    .bind(p.anchor)
    .bind(now)
    .run(db)
    .await?;
    Ok(())
}

pub async fn reviewed_at(db: &Db, p: Person<'_>) -> sqlx::Result<Option<i64>> {
    Stmt::new("SELECT reviewed_at FROM security_info_reviews WHERE directory = ? AND anchor = ?")
        .bind(p.directory)
        .bind(p.anchor)
        .scalar(db)
        .await
}

// ---- limits and blocks ----

/// The end of the person's block, if they are blocked now.
pub async fn blocked_until(db: &Db, subject: &str, now: i64) -> sqlx::Result<Option<i64>> {
    Stmt::new("SELECT until FROM self_service_blocks WHERE subject = ? AND until > ?")
        .bind(subject)
        .bind(now)
        .scalar(db)
        .await
}

/// Why no failure could be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// The account's allowance (or it is blocked).
    Subject,
    /// The client address's allowance, whatever the account.
    Address,
    /// Neither, but answers being checked from the client address hold all of its allowance
    /// for a moment, try after try.
    Busy,
}

/// A failed verification, recorded only while the person's and the address's allowances last.
/// The counts by address and across everyone name the condition of their partial index
/// (`client = …`, `kind = 'failure'`), which a reset's event is left out of.
const RECORD_FAILURE: &str = "INSERT INTO gate_events (subject, kind, method, at, client) \
     SELECT $1, 'failure', $2, $3, $4 \
     WHERE (SELECT COUNT(*) FROM gate_events WHERE subject = $1 AND kind = 'failure' AND at > $5) < $6 \
     AND (SELECT COUNT(*) FROM gate_events WHERE client = $4 AND kind = 'failure' AND at > $5) < $7 \
     AND NOT EXISTS (SELECT 1 FROM self_service_blocks WHERE subject = $1 AND until > $3) RETURNING id";
/// Which allowance a refused failure found spent.
const WHICH_SPENT: &str =
    "SELECT (SELECT COUNT(*) FROM gate_events WHERE subject = $1 AND kind = 'failure' AND at > $3) >= $4 \
     OR EXISTS (SELECT 1 FROM self_service_blocks WHERE subject = $1 AND until > $5), \
     (SELECT COUNT(*) FROM gate_events WHERE client = $2 AND kind = 'failure' AND at > $3)";
const FAILURES_LAST_HOUR: &str = "SELECT COUNT(*) FROM gate_events WHERE kind = 'failure' AND at > $1";

/// Takes one failed verification of `subject`'s and of `client`'s hourly allowances in one
/// statement, serialized per subject and per client address on PostgreSQL (advisory locks), so
/// race-free: parallel guesses cannot each find them unspent. It runs before an answer is
/// checked; its id, to give back ([`release_event`]) if the answer was right.
///
/// Answers being checked hold their reservation, so many people verifying at once from one
/// address (an office behind one gateway) can find the address's allowance taken for a moment,
/// then free again: the reservation is tried again, a moment later, rather than blaming an
/// account that has nothing against it ([`Spent::Busy`] if it is still taken). The account's own
/// answers in flight count against it as failures until they prove right, as they must: that is
/// what stops parallel guesses.
pub async fn reserve_failure(
    db: &Db,
    subject: &str,
    client: &str,
    method: &str,
    now: i64,
    (per_subject, per_client): (u32, u32),
) -> sqlx::Result<Result<i64, Spent>> {
    const TRIES: usize = 3;
    /// Long enough for an answer in flight to be checked (a code: well under a millisecond).
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        let id: Option<i64> = Stmt::new(RECORD_FAILURE)
            .serialized_on(&gate_events_of(subject))
            .serialized_on(&format!("gate_events:client:{client}"))
            .bind(subject)
            .bind(method)
            .bind(now)
            .bind(client)
            .bind(now - 3600)
            .bind(per_subject)
            .bind(per_client)
            .scalar(db)
            .await?;
        if let Some(id) = id {
            return Ok(Ok(id));
        }
        // Which allowance was spent, read in one statement.
        let (subject_spent, from_client): (bool, i64) = Stmt::new(WHICH_SPENT)
            .bind(subject)
            .bind(client)
            .bind(now - 3600)
            .bind(per_subject)
            .bind(now)
            .fetch_one(db)
            .await?;
        if from_client >= i64::from(per_client) {
            return Ok(Err(Spent::Address));
        }
        if subject_spent {
            return Ok(Err(Spent::Subject));
        }
    }
    Ok(Err(Spent::Busy))
}

/// Takes one request of `bucket`'s allowance of `limit` per `window_secs` (all of them at once,
/// then one more each `window_secs / limit`), unless it is spent: true when it is allowed. A
/// generic cell rate algorithm, as the in-process limiters do, kept in one row per bucket and
/// moved in one statement, race-free on both databases (the row is locked by the update): every
/// instance and every restart sees one allowance, and there is no window edge to burst across.
pub async fn take_allowance(db: &Db, bucket: &str, window_secs: i64, limit: u32, now: i64) -> sqlx::Result<bool> {
    // In microseconds: a large allowance still has an interval of its own.
    let interval = (window_secs.max(1).saturating_mul(1_000_000) / i64::from(limit.max(1))).max(1);
    // What the allowance may run ahead of now: the whole of it, exactly `limit` intervals.
    let burst = interval.saturating_mul(i64::from(limit.max(1)));
    let now_us = now.saturating_mul(1_000_000);
    // A row inserted or moved is one changed; a spent allowance's update is not made.
    let moved = Stmt::new(
        "INSERT INTO rate_limits (bucket, tat) VALUES ($1, $2 + $3) \
         ON CONFLICT (bucket) DO UPDATE \
         SET tat = (CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END) + $3 \
         WHERE (CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END) + $3 - $2 <= $4",
    )
    .bind(bucket)
    .bind(now_us)
    .bind(interval)
    .bind(burst)
    .run_brief(db)
    .await?;
    Ok(moved == 1)
}

/// Marks a proof-of-work challenge spent until it expires; false if it was spent before. Expired
/// ones go by [`super::housekeeping`].
pub async fn spend_challenge(db: &Db, nonce: &str, expires_at: i64) -> sqlx::Result<bool> {
    Stmt::new("INSERT INTO spent_challenges (nonce, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
        .bind(nonce)
        .bind(expires_at)
        .changed_one(db)
        .await
}

/// Failed verifications in the last hour, from everywhere.
pub async fn failures_last_hour(db: &Db, now: i64) -> sqlx::Result<i64> {
    Stmt::new(FAILURES_LAST_HOUR).bind(now - 3600).scalar_one(db).await
}

/// True for the one caller that may send an alert of `kind` now (none was sent in `every`
/// seconds, on any instance).
pub async fn claim_alert(db: &Db, kind: &str, now: i64, every: i64) -> sqlx::Result<bool> {
    let claimed: Option<String> = Stmt::new(
        "INSERT INTO alerts_sent (kind, at) VALUES ($1, $2) \
         ON CONFLICT (kind) DO UPDATE SET at = excluded.at WHERE alerts_sent.at <= $3 RETURNING kind",
    )
    .bind(kind)
    .bind(now)
    .bind(now - every)
    .scalar(db)
    .await?;
    Ok(claimed.is_some())
}

pub async fn release_event(db: &Db, id: i64) -> sqlx::Result<()> {
    Stmt::new("DELETE FROM gate_events WHERE id = ?").bind(id).run(db).await?;
    Ok(())
}

/// Records a completed reset or unlock. (Rows older than an hour go by [`super::housekeeping`].)
pub fn record_reset(subject: &str, now: i64) -> Stmt {
    Stmt::new("INSERT INTO gate_events (subject, kind, method, at) VALUES (?, 'reset', 'any', ?)")
        .bind(subject)
        .bind(now)
}

/// Blocks `subject` until `block_until` when its events of `kind` in the last hour reached
/// `limit`; true when this made a new block.
pub async fn block_if_reached(
    db: &Db,
    subject: &str,
    kind: &str,
    now: i64,
    limit: u32,
    block_until: i64,
) -> sqlx::Result<bool> {
    Ok(block_when_reached(subject, kind, now, limit, block_until).run(db).await? == 1)
}

/// [`block_if_reached`], as a statement to run with others. In a batch after the event it
/// counts ([`record_reset`]), it serializes the batch per subject on PostgreSQL (an advisory
/// lock taken before the event is written): two resets at once cannot each count only
/// themselves and the ones before, and so miss the block.
pub fn block_when_reached(subject: &str, kind: &str, now: i64, limit: u32, block_until: i64) -> Stmt {
    blocking(subject, kind, (now, block_until), limit, 0)
}

/// [`block_when_reached`] for one more event than those written: pushed together with the
/// event it counts, before it ([`super::Batch::push_together_counted`]), it counts the events
/// written before and this one, on either database, under the same lock.
pub fn block_when_this_reaches(subject: &str, kind: &str, now: i64, limit: u32, block_until: i64) -> Stmt {
    blocking(subject, kind, (now, block_until), limit, 1)
}

fn blocking(subject: &str, kind: &str, (now, block_until): (i64, i64), limit: u32, more: i64) -> Stmt {
    Stmt::new(format!(
        "INSERT INTO self_service_blocks (subject, until, reason, at) \
         SELECT ?, ?, ?, ? WHERE {} + ? >= ? \
         ON CONFLICT (subject) DO UPDATE SET until = excluded.until, reason = excluded.reason, at = excluded.at \
         WHERE self_service_blocks.until <= excluded.at",
        super::batch::EVENTS_OF.text
    ))
    .serialized_on(&gate_events_of(subject))
    .bind(subject)
    .bind(block_until)
    .bind(format!("{limit} {kind}s in an hour"))
    .bind(now)
    .bind(subject)
    .bind(kind)
    .bind(now - 3600)
    .bind(more)
    .bind(limit)
}

/// The advisory lock under which a subject's events are counted (see [`Stmt::serialized_on`]).
fn gate_events_of(subject: &str) -> String {
    format!("gate_events:{subject}")
}

/// Lifts a block (the helpdesk's act, or a test's).
pub async fn unblock(db: &Db, subject: &str) -> sqlx::Result<()> {
    Stmt::new("DELETE FROM self_service_blocks WHERE subject = ?").bind(subject).run(db).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_count_of_gate_events_finds_its_index() {
        let db = crate::store::connect("sqlite::memory:", 1).await.unwrap();
        let expected = [
            (RECORD_FAILURE, &["gate_events_subject", "gate_events_client"][..]),
            (WHICH_SPENT, &["gate_events_subject", "gate_events_client"]),
            (FAILURES_LAST_HOUR, &["gate_events_failures"]),
        ];
        for (sql, indexes) in expected {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(db.sqlite()).await.unwrap();
            let plan: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
            for index in indexes {
                assert!(plan.iter().any(|p| p.contains(&format!("INDEX {index} "))), "{index}: {plan:?}");
            }
            assert!(!plan.iter().any(|p| p.starts_with("SCAN gate_events")), "{plan:?}");
        }
    }

    #[tokio::test]
    async fn an_allowance_is_taken_at_once_then_comes_back_one_request_at_a_time() {
        let db = crate::store::connect("sqlite::memory:", 1).await.unwrap();
        let take = |at: i64| {
            let db = db.clone();
            async move { take_allowance(&db, "address:192.0.2.1", 60, 3, at).await.unwrap() }
        };
        let t = 1_000_000;
        assert_eq!([take(t).await, take(t).await, take(t).await, take(t).await], [true, true, true, false]);
        // An allowance that does not divide the window: exactly the limit, not one more.
        let seven = |at: i64| {
            let db = db.clone();
            async move { take_allowance(&db, "account:x", 60, 7, at).await.unwrap() }
        };
        let mut taken = 0;
        for _ in 0..10 {
            taken += usize::from(seven(t).await);
        }
        assert_eq!(taken, 7);
        assert!(!take(t + 19).await, "one comes back after 20 s, not before");
        assert!(take(t + 20).await);
        assert!(!take(t + 20).await);
        // No window edge to burst across: a minute on, three again, not six.
        let later = [take(t + 80).await, take(t + 80).await, take(t + 80).await, take(t + 80).await];
        assert_eq!(later, [true, true, true, false]);
        assert!(take_allowance(&db, "address:192.0.2.2", 60, 3, t).await.unwrap(), "each bucket its own");
    }

    #[tokio::test]
    async fn a_reservation_refused_is_put_on_the_allowance_that_was_spent() {
        let db = crate::store::connect("sqlite::memory:", 1).await.unwrap();
        let (now, limits) = (1_000_000, (5, 2));
        let reserve = |subject: &'static str, client: &'static str| {
            let db = db.clone();
            async move { reserve_failure(&db, subject, client, "email", now, limits).await.unwrap() }
        };
        // Two answers in flight from one address hold its allowance: a third person there is
        // told the address is busy, never that their account is blocked.
        let first = reserve("a", "office").await.unwrap();
        reserve("b", "office").await.unwrap();
        assert_eq!(reserve("c", "office").await, Err(Spent::Address));
        release_event(&db, first).await.unwrap();
        reserve("c", "office").await.expect("free again once an answer proved right");

        Stmt::new("INSERT INTO self_service_blocks VALUES ('d', $1, 'failure', $2)")
            .bind(now + 3600)
            .bind(now)
            .run(&db)
            .await
            .unwrap();
        assert_eq!(reserve("d", "home").await, Err(Spent::Subject), "a blocked account");
        for _ in 0..2 {
            reserve("e", "cafe").await.unwrap();
            release_event(&db, reserve("e", "home").await.unwrap()).await.unwrap();
        }
        for client in ["library", "train", "hotel"] {
            reserve("e", client).await.unwrap();
        }
        assert_eq!(reserve("e", "airport").await, Err(Spent::Subject), "five failures of the account's own");
    }

    #[tokio::test]
    async fn people_verifying_at_once_from_one_address_are_never_told_their_account_is_blocked() {
        let root = std::env::temp_dir().join(format!("pb-reserve-{}", uuid::Uuid::new_v4()));
        let db = crate::store::connect(&format!("sqlite://{}/p.db?mode=rwc", root.display()), 8).await.unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let subject = format!("person{i}");
                    let got = reserve_failure(&db, &subject, "office", "email", 1_000_000, (5, 10)).await.unwrap();
                    if let Ok(id) = got {
                        // The code was right: the reservation is given back.
                        release_event(&db, id).await.unwrap();
                    }
                    got
                })
            })
            .collect();
        for task in tasks {
            assert_ne!(task.await.unwrap(), Err(Spent::Subject), "nobody here has a failure against them");
        }
        db.close().await;
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn parallel_failures_never_get_past_either_allowance() {
        let root = std::env::temp_dir().join(format!("pb-limits-{}", uuid::Uuid::new_v4()));
        let db = crate::store::connect(&format!("sqlite://{}/p.db?mode=rwc", root.display()), 8).await.unwrap();
        let race = |who: fn(usize) -> (String, String)| {
            let db = db.clone();
            async move {
                let tasks: Vec<_> = (0..64)
                    .map(|i| {
                        let (db, (subject, client)) = (db.clone(), who(i));
                        tokio::spawn(async move {
                            reserve_failure(&db, &subject, &client, "email", 1_000_000, (5, 10)).await.unwrap()
                        })
                    })
                    .collect();
                let mut through = 0;
                for task in tasks {
                    through += usize::from(task.await.unwrap().is_ok());
                }
                through
            }
        };
        // Wrong answers all (nothing is given back): from one address to many accounts, and to
        // one account from many addresses.
        assert_eq!(race(|i| (format!("person{i}"), "office".into())).await, 10, "the address's ten");
        assert_eq!(race(|i| ("bob".into(), format!("10.0.0.{i}"))).await, 5, "the account's five");
        db.close().await;
        std::fs::remove_dir_all(root).unwrap();
    }
}
