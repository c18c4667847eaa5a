//! History for the bench to run over: `passback bench --history N` puts N rows into every table
//! that grows with use (audit, writebacks, codes, sessions, gate events, change attempts), as a
//! portal that has served for a long time holds, before the portal starts. The figures then say
//! whether the cost of an operation grows with history.

use anyhow::Context;

/// What goes into each table, for `i` from 1 to N (`$2` is now). Gate events and change attempts
/// fall within the windows their limits count, under names nobody uses; gate events are resets,
/// not failures, which would put the portal on its guard against an attack.
const ROWS: [(&str, &str); 6] = [
    (
        "audit",
        "INSERT INTO audit (at, actor, operation, directory, anchor, target, outcome_code, raw, support_code, client) \
         SELECT $2 - i, 'self-service', 'reset.writeback', 'bench', 'history-' || (i % 10000), \
         'history-' || (i % 10000), 'PB-0000', 'agent=history rc=0', 'H' || i, '127.0.0.1' FROM n",
    ),
    (
        "writebacks",
        "INSERT INTO writebacks (msg_id, directory, anchor, op, support_code, created_at, outcome_code, finished_at, \
         result_at) SELECT 'history-' || i, 'bench', 'history-' || (i % 10000), 'reset', 'H' || i, $2 - i, 'PB-0000', \
         $2 - i, $2 - i FROM n",
    ),
    (
        "verification_codes",
        "INSERT INTO verification_codes (id, directory, anchor, code_hash, created_at, expires_at, used_at) \
         SELECT 'history-' || i, 'bench', 'history-' || (i % 10000), 'x', $2 - i, $2 - i + 600, $2 - i FROM n",
    ),
    (
        "tower_sessions",
        "INSERT INTO tower_sessions (id, data, expiry_date) SELECT 'history-' || i, x'80', $2 + 86400 FROM n",
    ),
    (
        "gate_events",
        "INSERT INTO gate_events (subject, kind, method, at, client) \
         SELECT 'history-' || (i % 10000), 'reset', 'any', $2 - (i % 3500), '10.0.' || (i % 250) || '.1' FROM n",
    ),
    (
        "change_attempts",
        "INSERT INTO change_attempts (subject, at) SELECT 'history-' || (i % 10000), $2 - (i % 86000) FROM n",
    ),
];

/// Puts `rows` rows of history into each growing table of `db`.
pub(super) async fn preload(db: &crate::store::Db, rows: u64, now: i64) -> anyhow::Result<()> {
    crate::store::sessions::Sessions::of(db).await.context("session table")?;
    for (table, insert) in ROWS {
        eprintln!("bench: {rows} rows of history into {table}…");
        let sql = format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) {insert}");
        let n = i64::try_from(rows).context("--history")?;
        let insert = crate::store::Stmt::new(sql).bind(n).bind(now);
        insert.run(db).await.with_context(|| format!("history into {table}"))?;
    }
    Ok(())
}
