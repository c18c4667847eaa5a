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

/// Replaces what `instance` said of its connections with `rows`, in one transaction.
pub async fn publish(db: &Db, instance: &str, rows: &[PresenceRow]) -> sqlx::Result<()> {
    let mut b = Batch::new();
    b.push(Stmt::new("DELETE FROM relay_presence WHERE instance = ?").bind(instance));
    for r in rows {
        b.push(
            Stmt::new(
                "INSERT INTO relay_presence (instance, conn_id, agent_id, status_json, connected_at, last_seen) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(instance)
            .bind(r.conn_id)
            .bind(r.agent_id.as_str())
            .bind(&r.status_json)
            .bind(r.connected_at)
            .bind(r.last_seen),
        );
    }
    b.run(db).await
}

/// The connections other instances renewed since `since`.
pub async fn others(db: &Db, instance: &str, since: i64) -> sqlx::Result<Vec<PresenceRow>> {
    Stmt::new(
        "SELECT instance, conn_id, agent_id, status_json, connected_at, last_seen FROM relay_presence \
         WHERE instance <> $1 AND last_seen >= $2 ORDER BY instance, conn_id",
    )
    .bind(instance)
    .bind(since)
    .fetch_all(db)
    .await
}
