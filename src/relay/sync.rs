//! Storing what agents report of the people in their directories (sealed `sync` reports only).
//! Two safeguards stand between an agent's report and the people the portal knows: a full sync
//! that would remove too many people is held for an administrator, and a person whose recovery
//! addresses changed is told at the addresses they had.

use super::auth::RelayState;
use super::protocol::SyncChunk;
use crate::domain::EmailAddress;
use crate::store::{self, users::SyncHold};

pub async fn store(state: &RelayState, agent_id: &str, chunk: SyncChunk) -> anyhow::Result<()> {
    let now = state.clock.now();
    let dir = chunk.directory.as_str();
    let started = state.hub.sync_progress(agent_id, dir, chunk.full, chunk.seq, now);
    let changed = store::users::upsert(&state.db, dir, &chunk.users, now).await?;
    for change in changed {
        tracing::info!(agent = %agent_id, directory = dir, anchor = %change.anchor, "a person's addresses changed in the directory; telling the old ones");
        tell_old_addresses(state, &change.before, now);
    }
    for anchor in store::users::drop_outdated_hashes(&state.db, dir).await? {
        tracing::info!(directory = dir, %anchor, "the password was changed in the directory: the portal's copy is dropped");
    }
    if let Some(policy) = &chunk.policy {
        store::users::save_policy(&state.db, dir, &serde_json::to_string(policy)?, now).await?;
        state.hub.policies.remove(&dir.to_string());
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
            remove_or_hold(state, agent_id, dir, started, now).await?;
        }
        tracing::info!(agent = %agent_id, directory = dir, chunks = chunk.seq + 1, "full sync stored");
    }
    Ok(())
}

/// Removes the people a complete full sync did not list, unless they are more than one and more
/// than the allowed share of the directory: then nobody is removed, and the health page shows
/// the hold. One person leaving is ordinary; many at once is more often a wrong base DN or filter.
async fn remove_or_hold(state: &RelayState, agent_id: &str, dir: &str, started: i64, now: i64) -> anyhow::Result<()> {
    let total = store::users::count(&state.db, dir).await?;
    let unseen = store::users::count_unseen(&state.db, dir, started).await?;
    let allowed = i64::from(state.hub.cfg.max_sync_removal_percent);
    if unseen > 1 && unseen * 100 > total * allowed {
        let hold = SyncHold {
            directory: dir.into(),
            agent_id: agent_id.into(),
            started_at: started,
            would_remove: unseen,
            total,
            held_at: now,
        };
        store::users::hold_sync(&state.db, &hold).await?;
        tracing::warn!(agent = %agent_id, directory = dir, would_remove = unseen, total, allowed_percent = allowed, "a full sync would remove too many people: held, nobody removed; see the health page");
        return Ok(());
    }
    if store::users::release_hold(&state.db, dir).await? {
        tracing::info!(directory = dir, "a full sync within the removal limit replaced a held one");
    }
    let gone = store::users::remove_unseen(&state.db, dir, started).await?;
    if gone > 0 {
        tracing::info!(directory = dir, gone, "people left the sync scope");
    }
    Ok(())
}

/// Tells each address a person had that their addresses changed (in the background: a mail
/// failure is logged, never fatal to the sync).
fn tell_old_addresses(state: &RelayState, before: &[String], now: i64) {
    let tr = crate::i18n::Tr::default();
    let helpdesk = state.helpdesk_contact.clone().unwrap_or_else(|| tr.t("common.your_helpdesk").to_string());
    let when = crate::mail::utc_minutes(now);
    for address in before {
        let Ok(to) = EmailAddress::parse(address) else { continue };
        let (mailer, helpdesk, when) = (state.mailer.clone(), helpdesk.clone(), when.clone());
        tokio::spawn(async move {
            let sent = match crate::mail::notice_message(tr, crate::mail::Notice::AddressesChanged, &when, &helpdesk) {
                Ok(msg) => mailer.send_in_turn(&to, msg).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::error!(error = %format!("{e:#}"), "telling an old address of a change failed");
            }
        });
    }
}
