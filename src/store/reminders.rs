//! Mail the portal sends of itself: who is due a reminder, and the claim that makes each reminder
//! go once, whatever the number of instances (the first to insert its row sends it).

use super::users::UserRow;
use super::{Db, Stmt};

/// A person a reminder may be due to, with what decides it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    #[sqlx(flatten)]
    pub user: UserRow,
    /// The language they last used the portal in (its code), if they ever did.
    pub lang: Option<String>,
    pub password_expires_at: Option<i64>,
    /// When they were last invited to register (the campaign), if ever.
    pub invited_at: Option<i64>,
}

const CANDIDATE: &str = "SELECT u.directory, u.anchor, u.dn, u.username, u.email, u.other_emails, u.display_name, \
     u.enabled, u.locked, u.protected, u.synced_at, u.groups, u.lang, u.password_expires_at, r.sent_at AS invited_at \
     FROM directory_users u LEFT JOIN reminders_sent r \
     ON r.directory = u.directory AND r.anchor = u.anchor AND r.kind = 'campaign' AND r.about = 0";

/// Enabled people whose password expires after `from` and no later than `to` (an indexed range).
pub async fn expiring(db: &Db, from: i64, to: i64) -> sqlx::Result<Vec<Candidate>> {
    Stmt::new(format!(
        "{CANDIDATE} WHERE u.password_expires_at > ? AND u.password_expires_at <= ? AND u.enabled = ? \
         ORDER BY u.password_expires_at"
    ))
    .bind(from)
    .bind(to)
    .bind(true)
    .fetch_all(db)
    .await
}

/// The expiry reminders already sent about expiries after `from` and no later than `to`, as
/// (directory, anchor, kind, about): a round sends only what is not among them.
pub async fn sent_about(db: &Db, from: i64, to: i64) -> sqlx::Result<Vec<(String, String, String, i64)>> {
    Stmt::new("SELECT directory, anchor, kind, about FROM reminders_sent WHERE about > ? AND about <= ?")
        .bind(from)
        .bind(to)
        .fetch_all(db)
        .await
}

/// The next `limit` enabled, unprivileged people after `after` (directory, anchor), in that
/// order: the campaign looks at everyone a page at a time.
pub async fn people_after(db: &Db, after: (&str, &str), limit: i64) -> sqlx::Result<Vec<Candidate>> {
    Stmt::new(format!(
        "{CANDIDATE} WHERE (u.directory > ? OR (u.directory = ? AND u.anchor > ?)) AND u.enabled = ? \
         AND u.protected = ? ORDER BY u.directory, u.anchor LIMIT ?"
    ))
    .bind(after.0)
    .bind(after.0)
    .bind(after.1)
    .bind(true)
    .bind(false)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Claims one reminder: `true` for the one caller that may send it. `again_after`: a reminder
/// sent then or before may be sent again (the campaign's period); `None`: never again.
pub async fn claim(
    db: &Db,
    person: (&str, &str),
    kind: &str,
    about: i64,
    now: i64,
    again_after: Option<i64>,
) -> sqlx::Result<bool> {
    let stmt = Stmt::new(
        "INSERT INTO reminders_sent (directory, anchor, kind, about, sent_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (directory, anchor, kind, about) DO ",
    )
    .bind(person.0)
    .bind(person.1)
    .bind(kind)
    .bind(about)
    .bind(now);
    let stmt = match again_after {
        Some(before) => stmt
            .push("UPDATE SET sent_at = excluded.sent_at WHERE reminders_sent.sent_at <= ? RETURNING anchor")
            .bind(before),
        None => stmt.push("NOTHING RETURNING anchor"),
    };
    Ok(stmt.fetch_optional::<(String,)>(db).await?.is_some())
}

/// Keeps the language a person used the portal in, for the mail it sends them later.
pub fn remember_lang(directory: &str, anchor: &str, lang: crate::i18n::Lang) -> Stmt {
    Stmt::new("UPDATE directory_users SET lang = ? WHERE directory = ? AND anchor = ? AND (lang IS NULL OR lang <> ?)")
        .bind(lang.code())
        .bind(directory)
        .bind(anchor)
        .bind(lang.code())
}

/// After the portal set a person's password: their old expiry no longer holds (the next sync
/// brings the new one, and no reminder goes about the old one meanwhile), and, when they set it
/// themselves, the language they did it in is theirs. A row that would stay as it is (no expiry
/// known, the same language) is not written.
pub fn password_set(directory: &str, anchor: &str, lang: Option<crate::i18n::Lang>) -> Stmt {
    let lang = lang.map(|l| l.code());
    Stmt::new(
        "UPDATE directory_users SET password_expires_at = NULL, lang = COALESCE(?, lang) \
         WHERE directory = ? AND anchor = ? \
         AND (password_expires_at IS NOT NULL OR lang IS DISTINCT FROM COALESCE(?, lang))",
    )
    .bind(lang)
    .bind(directory)
    .bind(anchor)
    .bind(lang)
}
