//! Agents, their keys, and one-time enrollment tokens.

use super::{Db, JsonText, Stmt};

/// Who an enrollment token is for: a name, and the directories the agent will be allowed to serve.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Enrollment {
    pub name: String,
    pub directories: JsonText<Vec<String>>,
}

pub async fn create_enrollment_token(
    db: &Db,
    hash: &[u8],
    e: &Enrollment,
    now: i64,
    expires_at: i64,
) -> sqlx::Result<()> {
    Stmt::new(
        "INSERT INTO enrollment_tokens (token_hash, name, directories, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(hash)
    .bind(&e.name)
    .bind(&e.directories)
    .bind(now)
    .bind(expires_at)
    .run(db)
    .await?;
    Ok(())
}

/// Marks a token used and returns what it was for, in one statement so two racing uses cannot
/// both win.
pub async fn consume_enrollment_token(db: &Db, hash: &[u8], now: i64) -> sqlx::Result<Option<Enrollment>> {
    Stmt::new(
        "UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? \
         RETURNING name, directories",
    )
    .bind(now)
    .bind(hash)
    .bind(now)
    .fetch_optional(db)
    .await
}

pub async fn insert_agent(db: &Db, id: &str, e: &Enrollment, secret_hash: &[u8], now: i64) -> sqlx::Result<()> {
    Stmt::new("INSERT INTO agents (id, name, directories, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(id)
        .bind(&e.name)
        .bind(&e.directories)
        .bind(secret_hash)
        .bind(now)
        .run(db)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: String,
    /// The name its administrator enrolled it under (not unique).
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub directories: JsonText<Vec<String>>,
    pub revoked_at: Option<i64>,
}

/// An agent by id, revoked or not (the caller refuses a revoked one, after checking its secret).
pub async fn get(db: &Db, id: &str) -> sqlx::Result<Option<AgentRow>> {
    Stmt::new("SELECT id, name, secret_hash, directories, revoked_at FROM agents WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub agent_id: String,
    pub version: i64,
    pub public_key_pem: String,
    pub package_key_enc: Vec<u8>,
    pub created_at: i64,
}

pub async fn insert_key(db: &Db, agent_id: &str, version: i64, pem: &str, enc: &[u8], now: i64) -> sqlx::Result<bool> {
    Stmt::new(
        "INSERT INTO agent_keys (agent_id, version, public_key_pem, package_key_enc, created_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(agent_id)
    .bind(version)
    .bind(pem)
    .bind(enc)
    .bind(now)
    .changed_one(db)
    .await
}

/// All keys of an agent, newest first.
pub async fn keys(db: &Db, agent_id: &str) -> sqlx::Result<Vec<KeyRow>> {
    Stmt::new("SELECT * FROM agent_keys WHERE agent_id = ? ORDER BY version DESC").bind(agent_id).fetch_all(db).await
}

pub fn key_context(agent_id: &str, version: i64) -> String {
    format!("agent_keys|{agent_id}|{version}")
}

/// An enrolled agent, for the health page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Enrolled {
    pub id: String,
    pub name: String,
    pub directories: JsonText<Vec<String>>,
    pub created_at: i64,
}

/// Every agent enrolled and not revoked.
pub async fn enrolled(db: &Db) -> sqlx::Result<Vec<Enrolled>> {
    Stmt::new("SELECT id, name, directories, created_at FROM agents WHERE revoked_at IS NULL ORDER BY name, id")
        .fetch_all(db)
        .await
}

/// Records a sealed frame's id; false when the agent used it before (a copy). Kept until
/// `expires_at`, after which such a frame is refused as stale anyway.
pub async fn note_frame(db: &Db, agent_id: &str, frame_id: &str, expires_at: i64) -> sqlx::Result<bool> {
    Stmt::new("INSERT INTO relay_frames (agent_id, frame_id, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
        .bind(agent_id)
        .bind(frame_id)
        .bind(expires_at)
        .changed_one(db)
        .await
}

/// Agents whose id or name is `who` (names need not be unique).
pub async fn find(db: &Db, who: &str) -> sqlx::Result<Vec<AgentRow>> {
    Stmt::new("SELECT id, name, secret_hash, directories, revoked_at FROM agents WHERE id = $1 OR name = $1 ORDER BY created_at")
        .bind(who)
        .fetch_all(db)
        .await
}

/// Revokes an agent for good: its credentials stop working and its keys are forgotten, in one
/// transaction. False when it was revoked already (or does not exist).
pub async fn revoke(db: &Db, agent_id: &str, now: i64) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let revoked = Stmt::new("UPDATE agents SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(agent_id)
        .run_in(&mut tx)
        .await?;
    if revoked == 0 {
        return Ok(false);
    }
    Stmt::new("DELETE FROM agent_keys WHERE agent_id = $1").bind(agent_id).run_in(&mut tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// The ids of every revoked agent (few), so each instance can drop their live connections.
pub async fn revoked_ids(db: &Db) -> sqlx::Result<Vec<String>> {
    Stmt::new("SELECT id FROM agents WHERE revoked_at IS NOT NULL").scalar_all(db).await
}
