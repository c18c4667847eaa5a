//! Staff accounts: helpdesk, administrators and auditors. Each has a password (argon2id) and an
//! authenticator seed (encrypted under the data key, bound to the account); sessions name the
//! account's epoch, so raising it ends them all.

use super::{Db, Stmt};
use crate::domain::Scope;

pub use crate::domain::Role;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaffRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: String,
    pub scope_json: String,
    pub may_reset_protected: bool,
    pub password_hash: String,
    pub totp_enc: Vec<u8>,
    pub session_epoch: i64,
    /// Signs in with administrator-made credentials: must choose their own first.
    pub must_enrol: bool,
    pub pending_totp_enc: Option<Vec<u8>>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

impl StaffRow {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    /// The people this account may see and act on. An administrator sees everyone; a scope
    /// that does not parse sees no one.
    pub fn scope(&self) -> Option<Scope> {
        match self.role()? {
            Role::Administrator => Some(Scope::everyone()),
            _ => serde_json::from_str(&self.scope_json).ok(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// What is bound to a staff member's encrypted authenticator seed.
pub fn totp_context(id: &str) -> String {
    format!("staff_totp|{id}")
}

const COLUMNS: &str = "id, username, display_name, email, role, scope_json, may_reset_protected, password_hash, \
                       totp_enc, session_epoch, must_enrol, pending_totp_enc, created_at, disabled_at";

pub struct NewStaff<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub display_name: &'a str,
    pub email: Option<&'a str>,
    pub role: Role,
    pub scope: &'a Scope,
    pub may_reset_protected: bool,
    pub password_hash: &'a str,
    pub totp_enc: &'a [u8],
}

/// Adds a staff account; `false` when the user name is taken.
pub async fn add(db: &Db, s: &NewStaff<'_>, now: i64) -> sqlx::Result<bool> {
    Stmt::new(
        "INSERT INTO staff (id, username, display_name, email, role, scope_json, may_reset_protected, \
         password_hash, totp_enc, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(s.id)
    .bind(s.username.to_lowercase())
    .bind(s.display_name)
    .bind(s.email)
    .bind(s.role.as_str())
    .bind(serde_json::to_string(s.scope).unwrap_or_else(|_| "{}".into()))
    .bind(s.may_reset_protected)
    .bind(s.password_hash)
    .bind(s.totp_enc)
    .bind(now)
    .bind(now)
    .changed_one(db)
    .await
}

pub async fn get(db: &Db, id: &str) -> sqlx::Result<Option<StaffRow>> {
    Stmt::new(format!("SELECT {COLUMNS} FROM staff WHERE id = ?")).bind(id).fetch_optional(db).await
}

pub async fn by_username(db: &Db, username: &str) -> sqlx::Result<Option<StaffRow>> {
    Stmt::new(format!("SELECT {COLUMNS} FROM staff WHERE username = ?"))
        .bind(username.to_lowercase())
        .fetch_optional(db)
        .await
}

pub async fn all(db: &Db) -> sqlx::Result<Vec<StaffRow>> {
    Stmt::new(format!("SELECT {COLUMNS} FROM staff ORDER BY username")).fetch_all(db).await
}

/// The addresses of every enabled administrator.
pub async fn administrator_emails(db: &Db) -> sqlx::Result<Vec<String>> {
    Stmt::new("SELECT email FROM staff WHERE role = 'administrator' AND disabled_at IS NULL AND email IS NOT NULL")
        .scalar_all(db)
        .await
}

/// Records that a time step of the account's authenticator was used; `false` if it (or a later
/// one) was used already: a code is never accepted twice.
pub async fn use_totp_step(db: &Db, id: &str, step: i64) -> sqlx::Result<bool> {
    Stmt::new("UPDATE staff SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?")
        .bind(step)
        .bind(id)
        .bind(step)
        .changed_one(db)
        .await
}

/// New administrator-made credentials (a lost phone or password): every session of the account
/// ends, and the owner must enrol their own again at the next sign-in.
pub async fn set_credentials(db: &Db, id: &str, password_hash: &str, totp_enc: &[u8], now: i64) -> sqlx::Result<bool> {
    Stmt::new(
        "UPDATE staff SET password_hash = ?, totp_enc = ?, totp_last_step = 0, must_enrol = TRUE, \
         enrolment_started = FALSE, pending_totp_enc = NULL, given_password_hash = NULL, \
         session_epoch = session_epoch + 1, updated_at = ? WHERE id = ?",
    )
    .bind(password_hash)
    .bind(totp_enc)
    .bind(now)
    .bind(id)
    .changed_one(db)
    .await
}

/// A sign-in with administrator-made credentials starts the enrolment, or starts it again once
/// the earlier one's page has expired (started before `stale_before`): one who left half way is
/// not locked out, yet nobody else holding the credentials can take over an enrolment in
/// progress. Any earlier enrolment session ends and no authenticator seed is left over; only one
/// enrolment ever completes (see [`complete_enrolment`]), and every start is audited. Returns
/// the new epoch; `None` while an enrolment is in progress, or if the account changed meanwhile
/// or no longer waits for enrolment.
pub async fn begin_enrolment(db: &Db, id: &str, epoch: i64, now: i64, stale_before: i64) -> sqlx::Result<Option<i64>> {
    Stmt::new(
        "UPDATE staff SET session_epoch = session_epoch + 1, pending_totp_enc = NULL, enrolment_started = TRUE, \
         updated_at = ? \
         WHERE id = ? AND must_enrol = TRUE AND session_epoch = ? AND (enrolment_started = FALSE OR updated_at < ?) \
         RETURNING session_epoch",
    )
    .bind(now)
    .bind(id)
    .bind(epoch)
    .bind(stale_before)
    .scalar(db)
    .await
}

/// Keeps the authenticator seed being enrolled (encrypted), until it is confirmed.
pub async fn set_pending_totp(db: &Db, id: &str, totp_enc: &[u8]) -> sqlx::Result<()> {
    Stmt::new("UPDATE staff SET pending_totp_enc = ? WHERE id = ?").bind(totp_enc).bind(id).run(db).await?;
    Ok(())
}

/// The owner's own password and authenticator replace the administrator-made ones (whose
/// password's hash is kept as spent: see [`given_password_hash`]); `step` (the confirming
/// code's) is never accepted again. Only while the account still waits for enrolment at `epoch`:
/// two enrolments racing each other cannot both win.
pub async fn complete_enrolment(
    db: &Db,
    id: &str,
    epoch: i64,
    password_hash: &str,
    totp_enc: &[u8],
    step: i64,
    now: i64,
) -> sqlx::Result<bool> {
    Stmt::new(
        "UPDATE staff SET given_password_hash = password_hash, password_hash = ?, totp_enc = ?, \
         totp_last_step = ?, must_enrol = FALSE, pending_totp_enc = NULL, session_epoch = session_epoch + 1, \
         updated_at = ? WHERE id = ? AND must_enrol = TRUE AND session_epoch = ?",
    )
    .bind(password_hash)
    .bind(totp_enc)
    .bind(step)
    .bind(now)
    .bind(id)
    .bind(epoch)
    .changed_one(db)
    .await
}

/// The hash of the administrator-made password the owner replaced at enrolment, if they did.
pub async fn given_password_hash(db: &Db, id: &str) -> sqlx::Result<Option<String>> {
    Ok(Stmt::new("SELECT given_password_hash FROM staff WHERE id = ?")
        .bind(id)
        .scalar::<Option<String>>(db)
        .await?
        .flatten())
}

/// Enables or disables the account; disabling ends its sessions.
pub async fn set_enabled(db: &Db, id: &str, enabled: bool, now: i64) -> sqlx::Result<bool> {
    Stmt::new(
        "UPDATE staff SET disabled_at = CASE WHEN ? THEN NULL ELSE COALESCE(disabled_at, ?) END, \
         session_epoch = session_epoch + 1, updated_at = ? WHERE id = ?",
    )
    .bind(enabled)
    .bind(now)
    .bind(now)
    .bind(id)
    .changed_one(db)
    .await
}

/// Changes what the account may do; its sessions end, so the next sign-in starts afresh.
pub async fn set_role(
    db: &Db,
    id: &str,
    role: Role,
    scope: &Scope,
    may_reset_protected: bool,
    now: i64,
) -> sqlx::Result<bool> {
    Stmt::new(
        "UPDATE staff SET role = ?, scope_json = ?, may_reset_protected = ?, session_epoch = session_epoch + 1, \
         updated_at = ? WHERE id = ?",
    )
    .bind(role.as_str())
    .bind(serde_json::to_string(scope).unwrap_or_else(|_| "{}".into()))
    .bind(may_reset_protected)
    .bind(now)
    .bind(id)
    .changed_one(db)
    .await
}

/// Ends every session of the account ("sign out everywhere").
pub async fn end_sessions(db: &Db, id: &str) -> sqlx::Result<()> {
    Stmt::new("UPDATE staff SET session_epoch = session_epoch + 1 WHERE id = ?").bind(id).run(db).await?;
    Ok(())
}
