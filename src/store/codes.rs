//! E-mailed one-time codes: stored as keyed hashes, single use, short-lived, attempt-limited.
//! Every limit is enforced inside one SQL statement, so parallel guesses cannot overrun it.

use super::{Db, Stmt};

pub struct NewCode<'a> {
    pub id: &'a str,
    pub directory: &'a str,
    pub anchor: &'a str,
    pub code_hash: &'a str,
    pub now: i64,
    pub expires_at: i64,
}

/// Stores a code unless `max_per_hour` codes were already made for this person in the last hour.
/// One statement, serialized per person on PostgreSQL (an advisory lock): parallel requests
/// cannot get past the limit together.
pub async fn insert_within_limit(db: &Db, c: &NewCode<'_>, max_per_hour: u32) -> sqlx::Result<bool> {
    Stmt::new(format!(
        "INSERT INTO verification_codes (id, directory, anchor, code_hash, created_at, expires_at) \
         SELECT ?, ?, ?, ?, ?, ? WHERE {} < ?",
        super::batch::CODES_OF.text
    ))
    .serialized_on(&format!("verification_codes:{}|{}", c.directory, c.anchor))
    .bind(c.id)
    .bind(c.directory)
    .bind(c.anchor)
    .bind(c.code_hash)
    .bind(c.now)
    .bind(c.expires_at)
    .bind(c.directory)
    .bind(c.anchor)
    .bind(c.now - 3600)
    .bind(max_per_hour)
    .changed_one(db)
    .await
}

/// Spends one attempt and returns the hash to check against, or `None` when the code is used,
/// expired, out of attempts, or not the code of `owner`.
pub async fn take_attempt(
    db: &Db,
    id: &str,
    owner: super::security::Person<'_>,
    now: i64,
    max_attempts: u32,
) -> sqlx::Result<Option<String>> {
    Stmt::new(
        "UPDATE verification_codes SET attempts = attempts + 1 \
         WHERE id = ? AND directory = ? AND anchor = ? AND used_at IS NULL AND expires_at > ? AND attempts < ? \
         RETURNING code_hash",
    )
    .bind(id)
    .bind(owner.directory)
    .bind(owner.anchor)
    .bind(now)
    .bind(max_attempts)
    .scalar(db)
    .await
}

/// Marks the code used; false if another request got there first.
pub async fn mark_used(db: &Db, id: &str, now: i64) -> sqlx::Result<bool> {
    Stmt::new("UPDATE verification_codes SET used_at = ? WHERE id = ? AND used_at IS NULL")
        .bind(now)
        .bind(id)
        .changed_one(db)
        .await
}
