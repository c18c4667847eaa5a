//! Revoking an agent: its credentials stop working, its keys are forgotten, and its live
//! connections end at once on every portal instance (each drops the connections of revoked
//! agents within a second, see [`drop_revoked`]). The same act from the command line and from
//! the health page, audited alike.

use super::Hub;
use crate::store::{self, agents::AgentRow, Db};
use anyhow::bail;

/// Revokes the agent `who` names: its id, or a name only one agent has. Audited under `actor`
/// with `support_code`; with `hub`, this instance drops its connections at once.
pub async fn revoke(
    db: &Db,
    hub: Option<&Hub>,
    who: &str,
    actor: &str,
    support_code: &str,
    now: i64,
) -> anyhow::Result<AgentRow> {
    let found = store::agents::find(db, who).await?;
    let agent = match found.as_slice() {
        [] => bail!("no agent has the id or name {who:?}"),
        [one] => one.clone(),
        many => match many.iter().find(|a| a.id == who) {
            Some(a) => a.clone(),
            None => bail!("{} agents are named {who:?}: revoke one by its id", many.len()),
        },
    };
    if !store::agents::revoke(db, &agent.id, now).await? {
        bail!("agent {} ({}) was revoked already", agent.name, agent.id);
    }
    let dropped = hub.map(|h| h.drop_agent(&agent.id)).unwrap_or(0);
    // Every other instance drops its connections at once too (without a running portal here,
    // as from the command line, within a second: see [`watch`]).
    if let Some(hub) = hub {
        hub.announce(&agent.id, true).await;
    }
    let rec = store::audit::AuditRecord {
        at: now,
        actor: actor.into(),
        operation: "agent.revoke".into(),
        target: Some(format!("agent:{} ({})", agent.id, agent.name)),
        outcome_code: crate::domain::Outcome::Success.code().0.into(),
        raw: format!("revoked: credentials refused, keys forgotten, {dropped} live connection(s) dropped here"),
        support_code: support_code.into(),
        ..Default::default()
    };
    store::audit::record(db, &rec).await?;
    tracing::warn!(agent = %agent.id, name = %agent.name, actor, "agent revoked");
    Ok(AgentRow { revoked_at: Some(now), ..agent })
}

/// Drops this instance's connections of agents revoked elsewhere (the command line, another
/// instance). Runs every second.
pub async fn watch(db: Db, hub: std::sync::Arc<Hub>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = drop_revoked(&db, &hub).await {
            tracing::warn!(error = %e, "checking for revoked agents failed");
        }
    }
}

async fn drop_revoked(db: &Db, hub: &Hub) -> sqlx::Result<()> {
    let connected = hub.connected_agents();
    if connected.is_empty() {
        return Ok(());
    }
    for id in store::agents::revoked_ids(db).await? {
        if connected.contains(&id) {
            let n = hub.drop_agent(&id);
            tracing::warn!(agent = %id, connections = n, "dropped the connections of a revoked agent");
        }
    }
    Ok(())
}
