//! Cloud-only accounts: people whose password lives only in the portal (argon2id hashes).

use super::{Db, Stmt};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CloudUser {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: String,
    pub enabled: bool,
}

/// Adds an account without a password (the person sets one through the reset flow).
pub async fn add(db: &Db, username: &str, email: Option<&str>, display_name: &str, now: i64) -> sqlx::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    Stmt::new(
        "INSERT INTO cloud_users (id, username, email, email_lc, display_name, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(username.to_lowercase())
    .bind(email)
    .bind(email.map(str::to_lowercase))
    .bind(display_name)
    .bind(now)
    .bind(now)
    .run(db)
    .await?;
    Ok(id)
}

/// Sets the account's password hash; `must_change` when the helpdesk set it (the owner then
/// chooses their own at the next sign-in), cleared when the owner set it.
pub async fn set_password_hash(db: &Db, id: &str, hash: &str, must_change: bool, now: i64) -> sqlx::Result<bool> {
    Stmt::new("UPDATE cloud_users SET password_hash = ?, must_change = ?, updated_at = ? WHERE id = ?")
        .bind(hash)
        .bind(must_change)
        .bind(now)
        .bind(id)
        .changed_one(db)
        .await
}

pub async fn password_hash(db: &Db, id: &str) -> sqlx::Result<Option<String>> {
    let hash: Option<Option<String>> =
        Stmt::new("SELECT password_hash FROM cloud_users WHERE id = ?").bind(id).scalar(db).await?;
    Ok(hash.flatten())
}

/// Whether the owner must choose a new password at the next sign-in.
pub async fn must_change(db: &Db, id: &str) -> sqlx::Result<bool> {
    let flag: Option<bool> = Stmt::new("SELECT must_change FROM cloud_users WHERE id = ?").bind(id).scalar(db).await?;
    Ok(flag.unwrap_or(false))
}

/// Requires a new password at the next sign-in.
pub async fn require_change(db: &Db, id: &str, now: i64) -> sqlx::Result<bool> {
    Stmt::new("UPDATE cloud_users SET must_change = TRUE, updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .changed_one(db)
        .await
}

pub async fn get(db: &Db, id: &str) -> sqlx::Result<Option<CloudUser>> {
    Stmt::new("SELECT id, username, email, display_name, enabled FROM cloud_users WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Cloud-only accounts whose user name, name or e-mail address contains `text`.
pub async fn search(db: &Db, text: &str, limit: i64) -> sqlx::Result<Vec<CloudUser>> {
    let like = super::contains_pattern(text);
    Stmt::new(
        "SELECT id, username, email, display_name, enabled FROM cloud_users \
         WHERE username LIKE $1 ESCAPE '\\' OR lower(display_name) LIKE $1 ESCAPE '\\' OR email_lc LIKE $1 ESCAPE '\\' \
         ORDER BY username LIMIT $2",
    )
    .bind(like)
    .bind(limit)
    .fetch_all(db)
    .await
}
