//! Passkeys: each a row of its owner's (a person, or a staff account), found by a keyed hash of
//! its credential id; what checks a signature is sealed (see `crate::portal::passkey`).

use super::{Db, Stmt};

/// Whose passkey: a person (by directory and anchor) or a staff account (by id, directory "").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub kind: Kind,
    pub directory: &'a str,
    pub anchor: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Staff,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Person => "person",
            Kind::Staff => "staff",
        }
    }
}

impl Owner<'_> {
    /// What binds a passkey's sealed part to its row.
    pub fn context(&self, id: &str) -> String {
        format!("passkey|{}|{id}|{}|{}", self.kind.as_str(), self.directory, self.anchor)
    }
}

/// A passkey as stored.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub directory: String,
    pub anchor: String,
    pub sealed: Vec<u8>,
    pub dynamic: Vec<u8>,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const COLUMNS: &str = "id, directory, anchor, sealed, dynamic, name, created_at, last_used_at";

type Tuple = (String, String, String, Vec<u8>, Vec<u8>, String, i64, Option<i64>);

fn row((id, directory, anchor, sealed, dynamic, name, created_at, last_used_at): Tuple) -> Row {
    Row { id, directory, anchor, sealed, dynamic, name, created_at, last_used_at }
}

/// A new passkey; false when its credential is registered already (to anyone).
pub struct New<'a> {
    pub id: &'a str,
    pub lookup: &'a str,
    pub sealed: &'a [u8],
    pub dynamic: &'a [u8],
    pub name: &'a str,
    pub now: i64,
}

pub async fn insert(db: &Db, owner: Owner<'_>, new: &New<'_>) -> sqlx::Result<bool> {
    Stmt::new(
        "INSERT INTO passkeys (id, kind, directory, anchor, lookup, sealed, dynamic, name, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (lookup) DO NOTHING",
    )
    .bind(new.id)
    .bind(owner.kind.as_str())
    .bind(owner.directory)
    .bind(owner.anchor)
    .bind(new.lookup)
    .bind(new.sealed)
    .bind(new.dynamic)
    .bind(new.name)
    .bind(new.now)
    .changed_one(db)
    .await
}

/// The owner's passkeys, oldest first.
pub async fn of(db: &Db, owner: Owner<'_>) -> sqlx::Result<Vec<Row>> {
    let rows: Vec<Tuple> = Stmt::new(format!(
        "SELECT {COLUMNS} FROM passkeys WHERE kind = ? AND directory = ? AND anchor = ? ORDER BY created_at, id"
    ))
    .bind(owner.kind.as_str())
    .bind(owner.directory)
    .bind(owner.anchor)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(row).collect())
}

/// How many passkeys the owner has.
pub async fn count(db: &Db, owner: Owner<'_>) -> sqlx::Result<i64> {
    Stmt::new("SELECT COUNT(*) FROM passkeys WHERE kind = ? AND directory = ? AND anchor = ?")
        .bind(owner.kind.as_str())
        .bind(owner.directory)
        .bind(owner.anchor)
        .scalar_one(db)
        .await
}

/// The passkey of `kind` an authenticator named (by the keyed hash of its credential id).
pub async fn find(db: &Db, kind: Kind, lookup: &str) -> sqlx::Result<Option<Row>> {
    let found: Option<Tuple> = Stmt::new(format!("SELECT {COLUMNS} FROM passkeys WHERE kind = ? AND lookup = ?"))
        .bind(kind.as_str())
        .bind(lookup)
        .fetch_optional(db)
        .await?;
    Ok(found.map(row))
}

/// Records a use: the authenticator's new counter and flags, only if they are still those read
/// before the check (false: another use came in between, as a copied authenticator's would).
/// A passkey that keeps no counter (synced ones keep 0) changes nothing here; its challenge,
/// spent once, is what stops a second use.
pub async fn used(db: &Db, id: &str, before: &[u8], after: &[u8], now: i64) -> sqlx::Result<bool> {
    Stmt::new("UPDATE passkeys SET dynamic = ?, last_used_at = ? WHERE id = ? AND dynamic = ?")
        .bind(after)
        .bind(now)
        .bind(id)
        .bind(before)
        .changed_one(db)
        .await
}

/// Removes one of the owner's passkeys; false when they have none by that id.
pub async fn remove(db: &Db, owner: Owner<'_>, id: &str) -> sqlx::Result<bool> {
    Stmt::new("DELETE FROM passkeys WHERE id = ? AND kind = ? AND directory = ? AND anchor = ?")
        .bind(id)
        .bind(owner.kind.as_str())
        .bind(owner.directory)
        .bind(owner.anchor)
        .changed_one(db)
        .await
}

/// Removes all of the owner's passkeys (an administrator or helpdesk revoking them); how many.
pub async fn remove_all(db: &Db, owner: Owner<'_>) -> sqlx::Result<u64> {
    Stmt::new("DELETE FROM passkeys WHERE kind = ? AND directory = ? AND anchor = ?")
        .bind(owner.kind.as_str())
        .bind(owner.directory)
        .bind(owner.anchor)
        .run(db)
        .await
}

/// How many people have a passkey (for made-up offers, as common as real ones).
pub async fn people_with_one(db: &Db) -> sqlx::Result<i64> {
    Stmt::new("SELECT COUNT(*) FROM (SELECT DISTINCT directory, anchor FROM passkeys WHERE kind = 'person') AS held")
        .scalar_one(db)
        .await
}
