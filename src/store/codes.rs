//! E-mailed one-time codes: stored as argon2 hashes, single use, short-lived, attempt-limited.
//! Every limit is enforced inside one SQL statement, so parallel guesses cannot overrun it.

use super::Db;

pub async fn insert(
    db: &Db,
    id: &str,
    directory: &str,
    anchor: &str,
    code_hash: &str,
    now: i64,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO verification_codes (id, directory, anchor, code_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(directory)
    .bind(anchor)
    .bind(code_hash)
    .bind(now)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn sent_since(db: &Db, directory: &str, anchor: &str, since: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM verification_codes WHERE directory = ? AND anchor = ? AND created_at >= ?")
        .bind(directory)
        .bind(anchor)
        .bind(since)
        .fetch_one(db)
        .await
}

/// Spends one attempt and returns the hash to check against, or `None` when the code is used,
/// expired or out of attempts.
pub async fn take_attempt(db: &Db, id: &str, now: i64, max_attempts: u32) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE verification_codes SET attempts = attempts + 1 \
         WHERE id = ? AND used_at IS NULL AND expires_at > ? AND attempts < ? RETURNING code_hash",
    )
    .bind(id)
    .bind(now)
    .bind(max_attempts)
    .fetch_optional(db)
    .await
}

/// Marks the code used; false if another request got there first.
pub async fn mark_used(db: &Db, id: &str, now: i64) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE verification_codes SET used_at = ? WHERE id = ? AND used_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() == 1)
}
