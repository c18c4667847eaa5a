//! What the reports page counts, read from the records the portal keeps anyway: the audit (acts
//! and their outcomes, blocks), the writebacks (how long the directory took), and what people
//! registered. Every read is over an indexed time range or a table of people, never a password.

use super::{Db, Stmt};

/// The operations a report counts as resets, changes and unlocks (the person's own and the
/// helpdesk's).
pub const RESETS: &[&str] = &["reset.writeback", "reset.cloud", "helpdesk.reset"];
pub const CHANGES: &[&str] = &["change.writeback", "change.cloud", "change.expired"];
pub const UNLOCKS: &[&str] = &["unlock.writeback", "helpdesk.unlock"];
/// Where self-service stopped someone: a block after too many failures, or a limit reached.
pub const BLOCKS: &[&str] = &["reset.blocked", "reset.limit", "change.limit", "signin.limit"];

/// One day's count of one operation's one outcome.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DayCount {
    pub day: i64,
    pub operation: String,
    pub outcome_code: String,
    pub n: i64,
}

fn list(ops: &[&str]) -> String {
    ops.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", ")
}

/// Per day (Unix day number, UTC), operation and outcome: the acts and blocks in `[from, until)`.
pub async fn days(db: &Db, from: i64, until: i64) -> sqlx::Result<Vec<DayCount>> {
    // The operation names are the constants above, never input.
    let ops = list(&[RESETS, CHANGES, UNLOCKS, BLOCKS].concat());
    Stmt::new(format!(
        "SELECT at / 86400 AS day, operation, outcome_code, COUNT(*) AS n FROM audit \
         WHERE at >= ? AND at < ? AND operation IN ({ops}) GROUP BY at / 86400, operation, outcome_code"
    ))
    .bind(from)
    .bind(until)
    .fetch_all(db)
    .await
}

/// The outcome codes of refused and failed acts in `[from, until)`, commonest first.
pub async fn refusals(db: &Db, from: i64, until: i64) -> sqlx::Result<Vec<(String, i64)>> {
    let ops = list(&[RESETS, CHANGES, UNLOCKS].concat());
    Stmt::new(format!(
        "SELECT outcome_code, COUNT(*) AS n FROM audit WHERE at >= ? AND at < ? AND operation IN ({ops}) \
         AND outcome_code NOT IN ('PB-0000', 'PB-0001') GROUP BY outcome_code ORDER BY COUNT(*) DESC, outcome_code"
    ))
    .bind(from)
    .bind(until)
    .fetch_all(db)
    .await
}

/// How long the directory took (the agent's answer, in milliseconds) at the `permille`th
/// permille of the writebacks begun in `[from, until)`, and how many there were.
pub async fn directory_time(db: &Db, from: i64, until: i64, permilles: &[u32]) -> sqlx::Result<(i64, Vec<i64>)> {
    let (n,): (i64,) =
        Stmt::new("SELECT COUNT(*) FROM writebacks WHERE created_at >= ? AND created_at < ? AND took_ms IS NOT NULL")
            .bind(from)
            .bind(until)
            .fetch_one(db)
            .await?;
    let mut out = Vec::new();
    for p in permilles {
        if n == 0 {
            break;
        }
        // The nearest rank: the smallest value with at least p‰ of them at or below it.
        let rank = ((n * i64::from(*p) + 999) / 1000).max(1) - 1;
        let (ms,): (i64,) = Stmt::new(
            "SELECT took_ms FROM writebacks WHERE created_at >= ? AND created_at < ? AND took_ms IS NOT NULL \
             ORDER BY took_ms LIMIT 1 OFFSET ?",
        )
        .bind(from)
        .bind(until)
        .bind(rank)
        .fetch_one(db)
        .await?;
        out.push(ms);
    }
    Ok((n, out))
}

/// What one person registered, for the coverage report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Registered {
    pub directory: String,
    pub protected: bool,
    pub has_email: bool,
    pub alternate: bool,
    pub authenticator: bool,
    pub passkey: bool,
    pub recovery_codes: bool,
    pub answers: i64,
}

/// Every enabled person of the directories, with what they registered.
pub async fn registered(db: &Db) -> sqlx::Result<Vec<Registered>> {
    Stmt::new(
        "SELECT u.directory, u.protected, u.email IS NOT NULL AS has_email, \
         EXISTS (SELECT 1 FROM alternate_emails a WHERE a.directory = u.directory AND a.anchor = u.anchor) AS alternate, \
         EXISTS (SELECT 1 FROM totp_secrets t WHERE t.directory = u.directory AND t.anchor = u.anchor \
                 AND t.confirmed_at IS NOT NULL) AS authenticator, \
         EXISTS (SELECT 1 FROM passkeys p WHERE p.kind = 'person' AND p.directory = u.directory \
                 AND p.anchor = u.anchor) AS passkey, \
         EXISTS (SELECT 1 FROM recovery_codes r WHERE r.directory = u.directory AND r.anchor = u.anchor \
                 AND r.used_at IS NULL) AS recovery_codes, \
         (SELECT COUNT(*) FROM security_answers s WHERE s.directory = u.directory AND s.anchor = u.anchor) AS answers \
         FROM directory_users u WHERE u.enabled = ? ORDER BY u.directory",
    )
    .bind(true)
    .fetch_all(db)
    .await
}

/// Self-service blocks in force at `now`.
pub async fn blocked_now(db: &Db, now: i64) -> sqlx::Result<i64> {
    let (n,): (i64,) =
        Stmt::new("SELECT COUNT(*) FROM self_service_blocks WHERE until > ?").bind(now).fetch_one(db).await?;
    Ok(n)
}
