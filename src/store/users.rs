//! People synchronised from the directories, keyed by (directory, anchor).

use super::{Db, Stmt};
use crate::domain::SyncedUser;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub directory: String,
    pub anchor: String,
    pub dn: String,
    pub username: String,
    pub email: Option<String>,
    /// JSON array of further addresses (AD `otherMailbox`).
    pub other_emails: String,
    pub display_name: String,
    pub enabled: bool,
    pub locked: bool,
    pub protected: bool,
    pub synced_at: i64,
    /// JSON array of the person's groups, lower-cased DNs.
    pub groups: String,
}

impl UserRow {
    /// A cloud-only account as the helpdesk lists it: no directory (the empty id), no DN.
    pub fn cloud(c: &super::cloud::CloudUser) -> UserRow {
        UserRow {
            directory: String::new(),
            anchor: c.id.clone(),
            dn: String::new(),
            username: c.username.clone(),
            email: c.email.clone(),
            other_emails: "[]".into(),
            display_name: c.display_name.clone(),
            enabled: c.enabled,
            locked: false,
            protected: false,
            synced_at: 0,
            groups: "[]".into(),
        }
    }

    pub fn is_cloud(&self) -> bool {
        self.directory.is_empty()
    }

    pub fn other_emails(&self) -> Vec<String> {
        serde_json::from_str(&self.other_emails).unwrap_or_default()
    }

    pub fn groups(&self) -> Vec<String> {
        serde_json::from_str(&self.groups).unwrap_or_default()
    }
}

/// A person whose recovery addresses a sync changed, and the addresses they had before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressChange {
    pub anchor: String,
    pub before: Vec<String>,
}

/// Every address a person can be sent codes at, as stored: the main one, then the others, each
/// once (compared without regard to case).
fn addresses(email: Option<&str>, other_emails: &str) -> Vec<String> {
    let others: Vec<String> = serde_json::from_str(other_emails).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for a in email.map(str::to_string).into_iter().chain(others) {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    }
    out
}

/// Stores what a sync says of these people. Returns those already known whose addresses changed,
/// with their addresses before, so the old ones can be told.
pub async fn upsert(db: &Db, directory: &str, users: &[SyncedUser], now: i64) -> sqlx::Result<Vec<AddressChange>> {
    let mut tx = db.begin().await?;
    let mut changes = Vec::new();
    for u in users {
        let before: Option<(Option<String>, String)> =
            Stmt::new("SELECT email, other_emails FROM directory_users WHERE directory = $1 AND anchor = $2")
                .bind(directory)
                .bind(u.anchor.as_str())
                .fetch_optional_in(&mut tx)
                .await?;
        let other_emails = serde_json::to_string(&u.other_emails).unwrap_or_else(|_| "[]".into());
        if let Some((email, others)) = before {
            let before = addresses(email.as_deref(), &others);
            let mut after = addresses(u.email.as_ref().map(|e| e.as_str()), &other_emails);
            let mut sorted = before.iter().map(|a| a.to_lowercase()).collect::<Vec<_>>();
            sorted.sort();
            after.iter_mut().for_each(|a| *a = a.to_lowercase());
            after.sort();
            if sorted != after && !before.is_empty() {
                changes.push(AddressChange { anchor: u.anchor.as_str().to_string(), before });
            }
        }
        Stmt::new(
            "INSERT INTO directory_users (directory, anchor, dn, username, email, email_lc, other_emails, mobile, \
             display_name, enabled, locked, protected, synced_at, groups, password_changed_at, password_expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (directory, anchor) DO UPDATE SET dn = excluded.dn, username = excluded.username, \
             email = excluded.email, email_lc = excluded.email_lc, other_emails = excluded.other_emails, \
             mobile = excluded.mobile, display_name = excluded.display_name, \
             enabled = excluded.enabled, locked = excluded.locked, protected = excluded.protected, \
             synced_at = excluded.synced_at, groups = excluded.groups, \
             password_changed_at = excluded.password_changed_at, \
             password_expires_at = excluded.password_expires_at",
        )
        .bind(directory)
        .bind(u.anchor.as_str())
        .bind(&u.dn)
        .bind(u.username.to_lowercase())
        .bind(u.email.as_ref().map(|e| e.as_str()))
        .bind(u.email.as_ref().map(|e| e.as_str().to_lowercase()))
        .bind(&other_emails)
        .bind(u.mobile.as_deref())
        .bind(&u.display_name)
        .bind(u.enabled)
        .bind(u.locked)
        .bind(u.protected)
        .bind(now)
        .bind(
            serde_json::to_string(&u.groups.iter().map(|g| normalise_dn(g)).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into()),
        )
        .bind(u.password_changed_at)
        .bind(u.password_expires_at)
        .run_in(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(changes)
}

/// How far the directory's clock may be from the portal's: a directory change within this of
/// the portal's own writeback is taken for that writeback.
pub const PASSWORD_CLOCK_SKEW_SECS: i64 = 300;

/// Drops the portal's copy of a hash-synced password the directory has seen changed since it
/// was stored (a change made directly in the directory): the next sign-in asks the directory.
/// Returns the people whose copy went.
pub async fn drop_outdated_hashes(db: &Db, directory: &str) -> sqlx::Result<Vec<String>> {
    Stmt::new(
        "DELETE FROM password_hashes WHERE directory = $1 AND EXISTS (SELECT 1 FROM directory_users u \
         WHERE u.directory = password_hashes.directory AND u.anchor = password_hashes.anchor \
         AND u.password_changed_at > password_hashes.updated_at + $2) RETURNING anchor",
    )
    .bind(directory)
    .bind(PASSWORD_CLOCK_SKEW_SECS)
    .scalar_all(db)
    .await
}

/// How many of a directory's people a full sync begun at `sync_started` has not seen (they would
/// be removed as having left the scope).
pub async fn count_unseen(db: &Db, directory: &str, sync_started: i64) -> sqlx::Result<i64> {
    Stmt::new("SELECT COUNT(*) FROM directory_users WHERE directory = $1 AND synced_at < $2")
        .bind(directory)
        .bind(sync_started)
        .scalar_one(db)
        .await
}

/// A full sync held back because it would have removed too many people.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct SyncHold {
    pub directory: String,
    pub agent_id: String,
    pub started_at: i64,
    pub would_remove: i64,
    pub total: i64,
    pub held_at: i64,
}

pub async fn hold_sync(db: &Db, h: &SyncHold) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO sync_holds (directory, agent_id, started_at, would_remove, total, held_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (directory) DO UPDATE SET agent_id = excluded.agent_id, \
         started_at = excluded.started_at, would_remove = excluded.would_remove, total = excluded.total, \
         held_at = excluded.held_at",
    )
    .bind(&h.directory)
    .bind(&h.agent_id)
    .bind(h.started_at)
    .bind(h.would_remove)
    .bind(h.total)
    .bind(h.held_at)
    .run(db)
    .await?;
    Ok(())
}

pub async fn sync_holds(db: &Db) -> sqlx::Result<Vec<SyncHold>> {
    Stmt::new("SELECT * FROM sync_holds ORDER BY directory").fetch_all(db).await
}

/// Forgets a directory's hold (a later full sync removed few enough); returns whether there was one.
pub async fn release_hold(db: &Db, directory: &str) -> sqlx::Result<bool> {
    Ok(Stmt::new("DELETE FROM sync_holds WHERE directory = $1").bind(directory).run(db).await? > 0)
}

/// Applies a held removal, as an administrator decided: people not seen since the held sync began
/// are removed (anyone seen by a sync since stays). Returns how many went, or `None` without a hold.
pub async fn apply_hold(db: &Db, directory: &str) -> sqlx::Result<Option<u64>> {
    let mut tx = db.begin().await?;
    let started: Option<(i64,)> = Stmt::new("DELETE FROM sync_holds WHERE directory = $1 RETURNING started_at")
        .bind(directory)
        .fetch_optional_in(&mut tx)
        .await?;
    let Some((started,)) = started else { return Ok(None) };
    let removed = Stmt::new("DELETE FROM directory_users WHERE directory = $1 AND synced_at < $2")
        .bind(directory)
        .bind(started)
        .run_in(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(Some(removed))
}

/// After a complete full sync: people not seen since `sync_started` have left the scope.
pub async fn remove_unseen(db: &Db, directory: &str, sync_started: i64) -> sqlx::Result<u64> {
    Stmt::new("DELETE FROM directory_users WHERE directory = ? AND synced_at < ?")
        .bind(directory)
        .bind(sync_started)
        .run(db)
        .await
}

const COLUMNS: &str =
    "directory, anchor, dn, username, email, other_emails, display_name, enabled, locked, protected, synced_at, groups";

/// Everyone whose user name or e-mail address is `login` (already lower-cased).
pub async fn find_by_login(db: &Db, login: &str) -> sqlx::Result<Vec<UserRow>> {
    Stmt::new(format!("SELECT {COLUMNS} FROM directory_users WHERE username = ? OR email_lc = ? LIMIT 5"))
        .bind(login)
        .bind(login)
        .fetch_all(db)
        .await
}

/// Someone a typed name matches: a synced person (with the kind set for them alone, if any) or a
/// cloud-only account (no directory).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginMatch {
    /// Empty for a cloud-only account.
    pub directory: String,
    /// The directory's anchor, or the cloud-only account's id.
    pub anchor: String,
    pub username: String,
    pub email: Option<String>,
    /// JSON array of further addresses (AD `otherMailbox`).
    pub other_emails: String,
    pub protected: bool,
    pub enabled: bool,
    /// The person's own kind ([`set_kind_override`]).
    pub kind_override: Option<String>,
    pub display_name: String,
}

/// Read on the calling thread ([`find_anywhere`]): its columns in the order of its fields.
impl super::inline::FromFields for LoginMatch {
    fn from_fields(row: Vec<super::inline::Field>) -> sqlx::Result<Self> {
        let (directory, anchor, username, email, other_emails, protected, enabled, kind_override, display_name) =
            super::inline::FromFields::from_fields(row)?;
        Ok(LoginMatch {
            directory,
            anchor,
            username,
            email,
            other_emails,
            protected,
            enabled,
            kind_override,
            display_name,
        })
    }
}

impl LoginMatch {
    pub fn is_cloud(&self) -> bool {
        self.directory.is_empty()
    }
}

/// Everyone, synced or cloud-only, whose user name or e-mail address is `login` (already
/// lower-cased): one query, where a form post used to make three.
pub async fn find_anywhere(db: &Db, login: &str) -> sqlx::Result<Vec<LoginMatch>> {
    Stmt::new(
        "SELECT d.directory, d.anchor, d.username, d.email, d.other_emails, d.protected, d.enabled, \
                o.user_kind AS kind_override, d.display_name \
         FROM directory_users d LEFT JOIN user_kind_overrides o ON o.directory = d.directory AND o.anchor = d.anchor \
         WHERE d.username = $1 OR d.email_lc = $1 \
         UNION ALL \
         SELECT '', c.id, c.username, c.email, '[]', FALSE, c.enabled, NULL, c.display_name \
         FROM cloud_users c WHERE c.username = $1 OR c.email_lc = $1 \
         LIMIT 10",
    )
    .bind(login)
    .fetch_all_brief(db)
    .await
}

/// One person by directory and anchor.
pub use crate::domain::dn::{dn_rdns, dn_within, normalise_dn};
pub use crate::domain::Scope;

/// A scope places a synced person by the row the sync wrote.
impl crate::domain::Placed for UserRow {
    fn directory(&self) -> &str {
        &self.directory
    }
    fn dn(&self) -> &str {
        &self.dn
    }
    fn groups(&self) -> Vec<String> {
        UserRow::groups(self)
    }
    fn is_cloud(&self) -> bool {
        UserRow::is_cloud(self)
    }
}

/// One person by directory and anchor.
pub async fn get(db: &Db, directory: &str, anchor: &str) -> sqlx::Result<Option<UserRow>> {
    Stmt::new(format!("SELECT {COLUMNS} FROM directory_users WHERE directory = ? AND anchor = ?"))
        .bind(directory)
        .bind(anchor)
        .fetch_optional(db)
        .await
}

/// One page of the people a search finds within `scope`: by user name, name or e-mail address
/// (a part of any of them), ordered by user name, among the first matches only.
pub async fn search(db: &Db, scope: &Scope, text: &str, offset: i64, limit: i64) -> sqlx::Result<Vec<UserRow>> {
    if scope.is_nobody() {
        return Ok(Vec::new());
    }
    let like = super::contains_pattern(text);
    let mut q = Stmt::new(format!(
        "SELECT {COLUMNS} FROM directory_users WHERE (username LIKE ? ESCAPE '\\' \
         OR lower(display_name) LIKE ? ESCAPE '\\' OR email_lc LIKE ? ESCAPE '\\')"
    ))
    .bind(like.clone())
    .bind(like.clone())
    .bind(like);
    if !scope.directories.is_empty() {
        q = q.push(&format!(" AND directory IN ({})", placeholders(scope.directories.len())));
        q = scope.directories.iter().fold(q, Stmt::bind);
    }
    if !scope.groups.is_empty() {
        // The person's groups are a JSON array of text, which each database opens its own way.
        let groups = if db.is_postgres() {
            "jsonb_array_elements_text(directory_users.groups::jsonb) AS g(value)"
        } else {
            "json_each(directory_users.groups) AS g"
        };
        let within = placeholders(scope.groups.len());
        q = q.push(&format!(" AND EXISTS (SELECT 1 FROM {groups} WHERE g.value IN ({within}))"));
        q = scope.groups.iter().map(|g| normalise_dn(g)).fold(q, Stmt::bind);
    }
    // The base DNs are checked RDN by RDN, as every act checks them ([`Scope::covers`]), not by
    // a text suffix that an escaped comma in a name could fake.
    let q = q.push(" ORDER BY username, directory LIMIT ?").bind(SEARCH_CAP);
    let rows: Vec<UserRow> = q.fetch_all(db).await?;
    let skip = usize::try_from(offset).unwrap_or(0);
    let take = usize::try_from(limit).unwrap_or(0);
    Ok(rows.into_iter().filter(|p| scope.covers(p)).skip(skip).take(take).collect())
}

/// `n` placeholders, separated by commas.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The most matches a search looks through (a search this broad should be narrowed anyway).
const SEARCH_CAP: i64 = 2000;

/// The mail domain most synced people have, if any has an address.
pub async fn commonest_mail_domain(db: &Db) -> sqlx::Result<Option<String>> {
    // Where the `@` is: each database names that function its own way.
    let at = if db.is_postgres() { "strpos" } else { "instr" };
    Stmt::new(format!(
        "SELECT substr(email_lc, {at}(email_lc, '@') + 1) AS domain FROM directory_users \
         WHERE email_lc LIKE '%@%' GROUP BY domain ORDER BY COUNT(*) DESC, domain LIMIT 1"
    ))
    .scalar(db)
    .await
}

pub async fn directories(db: &Db) -> sqlx::Result<Vec<String>> {
    Stmt::new("SELECT DISTINCT directory FROM directory_users").scalar_all(db).await
}

pub async fn save_policy(db: &Db, directory: &str, policy_json: &str, now: i64) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO directory_policies (directory, policy_json, updated_at) VALUES (?, ?, ?) \
         ON CONFLICT (directory) DO UPDATE SET policy_json = excluded.policy_json, updated_at = excluded.updated_at",
    )
    .bind(directory)
    .bind(policy_json)
    .bind(now)
    .run(db)
    .await?;
    Ok(())
}

pub async fn policy(db: &Db, directory: &str) -> sqlx::Result<Option<String>> {
    Stmt::new("SELECT policy_json FROM directory_policies WHERE directory = ?").bind(directory).scalar(db).await
}

/// The portal's copy of a hash-synced person's password hash.
pub async fn set_password_hash(db: &Db, directory: &str, anchor: &str, hash: &str, now: i64) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO password_hashes (directory, anchor, password_hash, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (directory, anchor) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at",
    )
    .bind(directory)
    .bind(anchor)
    .bind(hash)
    .bind(now)
    .run(db)
    .await?;
    Ok(())
}

pub async fn password_hash(db: &Db, directory: &str, anchor: &str) -> sqlx::Result<Option<String>> {
    Stmt::new("SELECT password_hash FROM password_hashes WHERE directory = ? AND anchor = ?")
        .bind(directory)
        .bind(anchor)
        .scalar(db)
        .await
}

/// This person's kind where it differs from their directory's.
pub async fn kind_override(db: &Db, directory: &str, anchor: &str) -> sqlx::Result<Option<String>> {
    Stmt::new("SELECT user_kind FROM user_kind_overrides WHERE directory = ? AND anchor = ?")
        .bind(directory)
        .bind(anchor)
        .scalar(db)
        .await
}

pub async fn set_kind_override(db: &Db, directory: &str, anchor: &str, kind: &str) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO user_kind_overrides (directory, anchor, user_kind) VALUES (?, ?, ?) \
         ON CONFLICT (directory, anchor) DO UPDATE SET user_kind = excluded.user_kind",
    )
    .bind(directory)
    .bind(anchor)
    .bind(kind)
    .run(db)
    .await?;
    Ok(())
}

pub async fn delete_password_hash(db: &Db, directory: &str, anchor: &str) -> sqlx::Result<()> {
    Stmt::new("DELETE FROM password_hashes WHERE directory = ? AND anchor = ?")
        .bind(directory)
        .bind(anchor)
        .run(db)
        .await?;
    Ok(())
}

/// How many people of a directory the portal knows.
pub async fn count(db: &Db, directory: &str) -> sqlx::Result<i64> {
    Stmt::new("SELECT COUNT(*) FROM directory_users WHERE directory = ?").bind(directory).scalar_one(db).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(dn: &str, groups: &[&str]) -> UserRow {
        UserRow {
            directory: "corp".into(),
            anchor: "a".into(),
            dn: dn.into(),
            username: "x".into(),
            email: None,
            other_emails: "[]".into(),
            display_name: "X".into(),
            enabled: true,
            locked: false,
            protected: false,
            synced_at: 0,
            groups: serde_json::to_string(&groups.iter().map(|g| normalise_dn(g)).collect::<Vec<_>>()).unwrap(),
        }
    }

    #[test]
    fn a_base_dn_covers_what_lies_below_it_rdn_by_rdn() {
        let sales = Scope { base_dns: vec!["OU=Sales, DC=corp,DC=example".into()], ..Default::default() };
        assert!(sales.covers(&person("CN=Ann,OU=Sales,DC=corp,DC=example", &[])));
        assert!(sales.covers(&person("cn=Ann,ou=East,ou=sales,dc=CORP,dc=example", &[])));
        assert!(sales.covers(&person("OU=Sales,DC=corp,DC=example", &[])));
        assert!(!sales.covers(&person("CN=Bob,OU=Presales,DC=corp,DC=example", &[])));
        assert!(!sales.covers(&person("CN=Bob,OU=Sales,DC=corp,DC=example,DC=other", &[])));
        // An escaped comma is part of a name, not a level: this OU sits at the domain root.
        assert!(!sales.covers(&person("CN=Eve,OU=Tier0\\,OU=Sales,DC=corp,DC=example", &[])));
        assert!(!sales.covers(&person("CN=Eve,OU=Tier0\\2COU=Sales,DC=corp,DC=example", &[])));
    }

    #[test]
    fn group_and_directory_scopes_narrow_together() {
        let scope = Scope {
            directories: vec!["corp".into()],
            groups: vec!["CN=Helpdesk Managed,OU=Groups,DC=corp,DC=example".into()],
            ..Default::default()
        };
        assert!(
            scope.covers(&person("CN=Ann,DC=corp,DC=example", &["cn=helpdesk managed,ou=groups,dc=corp,dc=example"]))
        );
        assert!(!scope.covers(&person("CN=Ann,DC=corp,DC=example", &["CN=Other,DC=corp,DC=example"])));
        assert!(Scope::everyone().covers(&person("CN=Anyone", &[])));
        assert!(!Scope::default().covers(&person("CN=Anyone", &[])), "an empty scope covers nobody");
    }
}
