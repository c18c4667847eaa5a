//! Limits on attempts that could be used to guess a password (the change form).

use super::Db;

/// Reserves an attempt for `subject` unless `max_per_hour` are already counted in the last hour.
/// One statement: parallel attempts cannot get past the limit together. Returns the reservation.
pub async fn reserve(db: &Db, subject: &str, now: i64, max_per_hour: u32) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO change_attempts (subject, at) SELECT ?, ? \
         WHERE (SELECT COUNT(*) FROM change_attempts WHERE subject = ? AND at > ?) < ? RETURNING id",
    )
    .bind(subject)
    .bind(now)
    .bind(subject)
    .bind(now - 3600)
    .bind(max_per_hour)
    .fetch_optional(db)
    .await
}

/// Gives a reservation back: the attempt did not reveal anything about the current password.
pub async fn release(db: &Db, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM change_attempts WHERE id = ?").bind(id).execute(db).await?;
    Ok(())
}
