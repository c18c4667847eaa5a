//! Which agents are connected to which portal instance (see the `relay_presence` table).

use super::{Batch, Db, Stmt};

/// One live, proven agent connection.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PresenceRow {
    pub instance: String,
    pub conn_id: i64,
    pub agent_id: String,
    /// The agent's last status report, as JSON (the relay reads it).
    pub status_json: String,
    pub connected_at: i64,
    pub last_seen: i64,
}

/// How long an instance may be silent before it counts as stopped: each stamps itself (and
/// renews its agents) every second.
pub const STALE_SECS: i64 = 3;

/// The database's clock, in Unix seconds: the one clock every instance's rows are stamped and
/// judged by, whatever their hosts' clocks say.
fn database_now(db: &Db) -> &'static str {
    if db.is_postgres() {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)"
    } else {
        "CAST(strftime('%s', 'now') AS INTEGER)"
    }
}

/// Stamps `instance` (started at `started_at`) as alive now, by the database's clock.
fn beat(db: &Db, instance: &str, started_at: i64) -> Stmt {
    Stmt::new(format!(
        "INSERT INTO portal_instances (instance, started_at, last_seen) VALUES (?, ?, {}) \
         ON CONFLICT (instance) DO UPDATE SET last_seen = excluded.last_seen",
        database_now(db)
    ))
    .bind(instance)
    .bind(started_at)
}

/// Stamps `instance` as alive now, alone (the one instance on SQLite, which has no agents to
/// share).
pub async fn stamp(db: &Db, instance: &str, started_at: i64) -> sqlx::Result<()> {
    beat(db, instance, started_at).run(db).await.map(|_| ())
}

/// Replaces what `instance` said of its connections with `rows` (stamped now, by the database's
/// clock) and stamps the instance alive, in one transaction.
pub async fn publish(db: &Db, instance: &str, started_at: i64, rows: &[PresenceRow]) -> sqlx::Result<()> {
    let mut b = Batch::new();
    b.push(beat(db, instance, started_at));
    b.push(Stmt::new("DELETE FROM relay_presence WHERE instance = ?").bind(instance));
    let insert = format!(
        "INSERT INTO relay_presence (instance, conn_id, agent_id, status_json, connected_at, last_seen) \
         VALUES (?, ?, ?, ?, ?, {})",
        database_now(db)
    );
    for r in rows {
        b.push(
            Stmt::new(insert.clone())
                .bind(instance)
                .bind(r.conn_id)
                .bind(r.agent_id.as_str())
                .bind(&r.status_json)
                .bind(r.connected_at),
        );
    }
    b.run(db).await
}

/// The connections other instances renewed in the last `stale_secs` seconds.
pub async fn others(db: &Db, instance: &str, stale_secs: i64) -> sqlx::Result<Vec<PresenceRow>> {
    Stmt::new(format!(
        "SELECT instance, conn_id, agent_id, status_json, connected_at, last_seen FROM relay_presence \
         WHERE instance <> $1 AND last_seen >= {} - $2 ORDER BY instance, conn_id",
        database_now(db)
    ))
    .bind(instance)
    .bind(stale_secs)
    .fetch_all(db)
    .await
}

/// One portal instance as it last stamped itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceRow {
    pub instance: String,
    pub started_at: i64,
    pub last_seen: i64,
    /// Whether it stamped itself in the last few seconds (by the database's clock).
    pub alive: bool,
}

/// The instances seen in the last `since_secs` seconds, newest first; alive when seen in the
/// last `stale_secs`.
pub async fn instances(db: &Db, since_secs: i64, stale_secs: i64) -> sqlx::Result<Vec<InstanceRow>> {
    let now = database_now(db);
    let rows: Vec<(String, i64, i64, i64)> = Stmt::new(format!(
        "SELECT instance, started_at, last_seen, {now} FROM portal_instances \
         WHERE last_seen >= {now} - $1 ORDER BY started_at DESC, instance"
    ))
    .bind(since_secs)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(instance, started_at, last_seen, now)| InstanceRow {
            instance,
            started_at,
            last_seen,
            alive: last_seen >= now - stale_secs,
        })
        .collect())
}

/// Whether `instance` stamped itself in the last `stale_secs` seconds.
pub async fn is_alive(db: &Db, instance: &str, stale_secs: i64) -> sqlx::Result<bool> {
    let found: Option<(i64,)> = Stmt::new(format!(
        "SELECT last_seen FROM portal_instances WHERE instance = $1 AND last_seen >= {} - $2",
        database_now(db)
    ))
    .bind(instance)
    .bind(stale_secs)
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}
