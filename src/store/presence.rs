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

/// The database's clock, in Unix seconds: the one clock every instance's rows are stamped and
/// judged by, whatever their hosts' clocks say.
fn database_now(db: &Db) -> &'static str {
    if db.is_postgres() {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)"
    } else {
        "CAST(strftime('%s', 'now') AS INTEGER)"
    }
}

/// Replaces what `instance` said of its connections with `rows` (stamped now, by the database's
/// clock), in one transaction.
pub async fn publish(db: &Db, instance: &str, rows: &[PresenceRow]) -> sqlx::Result<()> {
    let mut b = Batch::new();
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
