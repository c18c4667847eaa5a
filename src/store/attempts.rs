//! Limits on attempts that could be used to guess a password (the change form).

use super::{Db, Stmt};

/// Reserves an attempt for `subject` unless `limits` (per hour, per day) are already counted in
/// the last hour or the last day. One statement, serialized per subject on PostgreSQL (an advisory
/// lock): parallel attempts cannot get past the limit together.
/// Returns the reservation. Rows older than a day go by [`super::housekeeping`].
pub async fn reserve(db: &Db, subject: &str, now: i64, limits: (u32, u32)) -> sqlx::Result<Option<i64>> {
    taking(subject, None, now, limits).push(" RETURNING id").scalar(db).await
}

/// The statement that takes an attempt for `subject` (with `token`, see [`Reservation`]), or
/// nothing once `per_hour` or `per_day` are spent.
fn taking(subject: &str, token: Option<i64>, now: i64, (per_hour, per_day): (u32, u32)) -> Stmt {
    let count = super::batch::ATTEMPTS_OF.text;
    Stmt::new(format!(
        "INSERT INTO change_attempts (subject, at, token) SELECT ?, ?, ? WHERE {count} < ? AND {count} < ?"
    ))
    .serialized_on(&format!("change_attempts:{subject}"))
    .bind(subject)
    .bind(now)
    .bind(token)
    .bind(subject)
    .bind(now - 3600)
    .bind(per_hour)
    .bind(subject)
    .bind(now - 86_400)
    .bind(per_day)
}

/// An attempt taken in a transaction with other statements (see
/// [`super::writebacks::claim_counted`]), known by a number drawn for the request rather
/// than by its row: the statements that take it, tell whether it was taken and give it back are
/// all known before it runs.
pub struct Reservation {
    pub(super) subject: String,
    pub(super) token: i64,
}

impl Reservation {
    pub fn new(subject: &str) -> Reservation {
        Reservation { subject: subject.to_string(), token: rand::random() }
    }

    /// Takes an attempt, as [`reserve`] does, or nothing once the allowance is spent.
    pub(super) fn take(&self, now: i64, limits: (u32, u32)) -> Stmt {
        taking(&self.subject, Some(self.token), now, limits)
    }

    /// A read: one row, 1 if the attempt was taken, else 0.
    pub(super) fn taken(&self) -> Stmt {
        Stmt::new("SELECT COUNT(*) FROM change_attempts WHERE subject = ? AND token = ?")
            .bind(self.subject.as_str())
            .bind(self.token)
    }

    /// Takes an attempt on its own: whether it was.
    pub async fn take_alone(&self, db: &Db, now: i64, limits: (u32, u32)) -> sqlx::Result<bool> {
        Ok(self.take(now, limits).push(" RETURNING id").fetch_optional::<(i64,)>(db).await?.is_some())
    }

    /// Gives it back (see [`release`]).
    pub fn release(&self) -> Stmt {
        Stmt::new("DELETE FROM change_attempts WHERE subject = ? AND token = ?")
            .bind(self.subject.as_str())
            .bind(self.token)
    }
}

/// Gives a reservation back: the attempt did not reveal anything about the current password.
pub fn release(id: i64) -> Stmt {
    Stmt::new("DELETE FROM change_attempts WHERE id = ?").bind(id)
}

/// Forgets a subject's attempts: its password was just changed or reset by its owner.
pub fn clear(subject: &str) -> Stmt {
    Stmt::new("DELETE FROM change_attempts WHERE subject = ?").bind(subject)
}

/// The subject under which a person's attempts are counted.
pub fn subject(directory: &str, anchor: &str) -> String {
    format!("{directory}|{anchor}")
}

/// Forgets a subject's attempts and those of its narrower subjects (`subject|…`).
pub async fn clear_all_under(db: &Db, subject: &str) -> sqlx::Result<u64> {
    let narrower = format!("{subject}|");
    Stmt::new("DELETE FROM change_attempts WHERE subject = ? OR substr(subject, 1, length(?)) = ?")
        .bind(subject)
        .bind(narrower.clone())
        .bind(narrower)
        .run(db)
        .await
}
