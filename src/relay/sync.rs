//! Storing what agents report of the people in their directories.

use super::protocol::SyncChunk;
use super::server::RelayState;
use crate::store;

pub async fn store(state: &RelayState, agent_id: &str, chunk: SyncChunk) -> anyhow::Result<()> {
    let now = state.clock.now();
    let dir = chunk.directory.as_str();
    let started = state.hub.sync_progress(agent_id, dir, chunk.seq, now);
    store::users::upsert(&state.db, dir, &chunk.users, now).await?;
    if let Some(policy) = &chunk.policy {
        store::users::save_policy(&state.db, dir, &serde_json::to_string(policy)?, now).await?;
    }
    if !chunk.full {
        if chunk.last {
            tracing::info!(agent = %agent_id, directory = dir, changed = chunk.users.len(), "delta sync stored");
        }
        return Ok(());
    }
    if chunk.last && chunk.seq == 0 && chunk.users.is_empty() {
        // More likely a wrong base DN or filter than an emptied directory: keep who we know.
        tracing::warn!(agent = %agent_id, directory = dir, "a full sync listed nobody; nobody is removed");
        return Ok(());
    }
    if chunk.last {
        if let Some(started) = started {
            let gone = store::users::remove_unseen(&state.db, dir, started).await?;
            if gone > 0 {
                tracing::info!(directory = dir, gone, "people left the sync scope");
            }
        }
        tracing::info!(agent = %agent_id, directory = dir, chunks = chunk.seq + 1, "full sync stored");
    }
    Ok(())
}
