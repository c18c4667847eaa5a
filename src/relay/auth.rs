//! Who may use the relay: the state its endpoints share, and an agent's bearer credentials,
//! checked in constant time. The WebSocket ([`super::server`]), enrolment and rotation
//! ([`super::enroll`]) and the sync's storage ([`super::sync`]) all start here.

use super::hub::Hub;
use crate::domain::DirectoryId;
use crate::store::{self, DataKey, Db};
use axum::http::HeaderMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct RelayState {
    pub hub: Arc<Hub>,
    pub db: Db,
    pub data_key: DataKey,
    pub clock: crate::Clock,
    /// For telling people of changes a sync brought (their old addresses).
    pub mailer: crate::mail::Mailer,
    pub helpdesk_contact: Option<String>,
}

/// An agent that proved its relay secret, and the directories it was enrolled for.
pub struct AuthenticatedAgent {
    pub id: String,
    pub directories: Vec<DirectoryId>,
}

/// Checks `Authorization: Bearer <agent-id>.<secret>` against the stored hash, in constant time.
pub async fn authenticate(db: &Db, headers: &HeaderMap) -> Option<AuthenticatedAgent> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    let (agent_id, secret) = token.split_once('.')?;
    if agent_id.len() > 64 || secret.len() > 128 {
        return None;
    }
    let stored = store::agents::get(db, agent_id).await.ok().flatten();
    let presented = store::token_hash(secret);
    // Compare against a dummy when the agent is unknown, so both paths cost the same.
    let expected = stored.as_ref().map(|a| a.secret_hash.clone()).unwrap_or_else(|| vec![0u8; presented.len()]);
    if !store::hashes_equal(&expected, &presented) {
        return None;
    }
    let agent = stored?;
    if let Some(at) = agent.revoked_at {
        tracing::warn!(agent = %agent.id, revoked_at = at, "relay: refused a revoked agent's credentials");
        return None;
    }
    let directories = agent.directories.0.iter().filter_map(|d| DirectoryId::parse(d).ok()).collect();
    Some(AuthenticatedAgent { id: agent.id, directories })
}
