//! What keeps the database's cost flat as history grows, off the request path: rows past every
//! window that counts them go once a minute, by indexed time ranges (rate limits, which keep no
//! history, by reading them all), and the write-ahead log is checkpointed once a second by this
//! task rather than by whichever request crosses SQLite's threshold (PostgreSQL checkpoints by
//! itself). Every instance runs it; the work is idempotent.

use super::{Db, Stmt};
use std::time::Duration;

/// How long failed verifications and completed resets count (every limit on them is per hour).
const GATE_EVENTS_FOR_SECS: i64 = 3600;
/// How long wrong current passwords count (the change form's limits are per hour and per day).
const CHANGE_ATTEMPTS_FOR_SECS: i64 = 86_400;

/// Runs for as long as the portal does.
pub async fn run(db: Db, clock: crate::Clock) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        every.tick().await;
        if let Err(e) = checkpoint(&db).await {
            tracing::warn!(error = %e, "checkpointing the database's log failed");
        }
        if ticks % 60 == 0 {
            if let Err(e) = expire(&db, clock.now()).await {
                tracing::warn!(error = %e, "deleting expired rows failed");
            }
        }
        ticks += 1;
    }
}

/// Deletes the rows no limit counts any more, and frame ids and proof-of-work challenges that
/// can no longer be replayed (an expired one is refused before it is looked up); how many went.
pub async fn expire(db: &Db, now: i64) -> sqlx::Result<u64> {
    let mut gone = 0;
    for (sql, before) in [
        ("DELETE FROM gate_events WHERE at <= $1", now - GATE_EVENTS_FOR_SECS),
        ("DELETE FROM change_attempts WHERE at <= $1", now - CHANGE_ATTEMPTS_FOR_SECS),
        ("DELETE FROM relay_frames WHERE expires_at < $1", now),
        // What instances that died long ago said of their agents.
        ("DELETE FROM relay_presence WHERE last_seen < $1", now - 3600),
        // Instances that stopped over a day ago (the health page shows a day).
        ("DELETE FROM portal_instances WHERE last_seen < $1", now - 86_400),
        // Rate limits whose allowance is whole again (their time, in microseconds, is past): the
        // whole table is read, a row per client address or account of the last hour at most (an
        // index on the time would cost every request it counts a page written).
        ("DELETE FROM rate_limits WHERE tat < $1", now.saturating_mul(1_000_000)),
        ("DELETE FROM spent_challenges WHERE expires_at < $1", now),
        // Expiry reminders about passwords that expired over a month ago (the campaign's one
        // row per person stays: it says when they were last invited).
        ("DELETE FROM reminders_sent WHERE about > 0 AND about < $1", now - 30 * 86_400),
    ] {
        gone += Stmt::new(sql).bind(before).run(db).await?;
    }
    Ok(gone)
}

/// Copies what the write-ahead log holds into the database where no reader needs it any more
/// (it never waits for readers or writers).
async fn checkpoint(db: &Db) -> sqlx::Result<()> {
    checkpoint_past(db, CUT_LOG_PAST_FRAMES).await
}

/// A log this long (in 4 KiB frames: 16 MiB) is started again from its beginning once
/// checkpointed (see [`checkpoint_past`]).
const CUT_LOG_PAST_FRAMES: i64 = 4_096;

/// [`checkpoint`]. Under steady load some connection is always reading from the log, so SQLite
/// never starts it again from its beginning by itself, and it grows without end (1.7 GB in a
/// minute of the load bench), slowing every read that must search it. Once it is `past` frames
/// long and all copied into the database, the checkpoint waits for the readers of the moment to
/// finish (writers wait meanwhile, for as long as the last of those reads takes), and the next
/// write starts the log again from its beginning. The file keeps its length (at most the
/// `journal_size_limit`, 64 MiB): the writes go over pages the system already holds, where a
/// file emptied (`TRUNCATE`) had each of them allocated again (which took a fifth of the time
/// `serve` spent writing the log, in a profile of the bench).
async fn checkpoint_past(db: &Db, past: i64) -> sqlx::Result<()> {
    if db.is_postgres() {
        return Ok(());
    }
    let (_busy, frames, copied): (i64, i64, i64) = Stmt::new("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(db).await?;
    if frames > 0 && copied == frames {
        db.after_checkpoint();
    }
    // Only once all of it is copied: then the wait is for the reads of the moment alone.
    if frames >= past && copied == frames {
        Stmt::new("PRAGMA wal_checkpoint(RESTART)").run(db).await?;
        db.after_checkpoint();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_long_log_is_started_again_once_checkpointed_and_a_short_one_is_left_as_it_is() {
        let root = std::env::temp_dir().join(format!("pb-checkpoint-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join("passback.db");
        let db = crate::store::connect_with(&format!("sqlite://{}?mode=rwc", file.display()), 2, false).await.unwrap();
        let log = || std::fs::metadata(root.join("passback.db-wal")).map_or(0, |m| m.len());
        for at in 0..50_i64 {
            Stmt::new("INSERT INTO gate_events (subject, kind, method, at) VALUES ('s', 'failure', 'email', $1)")
                .bind(at)
                .run(&db)
                .await
                .unwrap();
        }
        checkpoint_past(&db, 1_000_000).await.unwrap();
        assert!(log() > 0, "a short log stays");
        let frames = || async {
            let (_, frames, _): (i64, i64, i64) =
                Stmt::new("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&db).await.unwrap();
            frames
        };
        assert!(frames().await >= 50, "a log of every write");
        checkpoint_past(&db, 10).await.unwrap();
        let length = log();
        Stmt::new("INSERT INTO gate_events (subject, kind, method, at) VALUES ('s', 'failure', 'email', 50)")
            .run(&db)
            .await
            .unwrap();
        assert!(frames().await < 10, "a long one is started again from its beginning by the next write");
        assert_eq!(log(), length, "over what the file held: it does not grow");
        db.close().await;
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn rows_past_every_window_go_and_the_rest_stay_and_the_deletes_use_an_index() {
        let db = crate::store::connect("sqlite::memory:", 1).await.unwrap();
        let now = 1_000_000;
        for at in [now - GATE_EVENTS_FOR_SECS, now - GATE_EVENTS_FOR_SECS + 1] {
            Stmt::new("INSERT INTO gate_events (subject, kind, method, at) VALUES ('s', 'failure', 'email', $1)")
                .bind(at)
                .run(&db)
                .await
                .unwrap();
        }
        for at in [now - CHANGE_ATTEMPTS_FOR_SECS, now - 3600] {
            Stmt::new("INSERT INTO change_attempts (subject, at) VALUES ('s', $1)").bind(at).run(&db).await.unwrap();
        }
        for (id, expires) in [("old", now - 1), ("live", now + 60)] {
            Stmt::new("INSERT INTO relay_frames (agent_id, frame_id, expires_at) VALUES ('a', $1, $2)")
                .bind(id)
                .bind(expires)
                .run(&db)
                .await
                .unwrap();
        }
        for (nonce, expires) in [("old", now - 1), ("live", now + 60)] {
            Stmt::new("INSERT INTO spent_challenges (nonce, expires_at) VALUES ($1, $2)")
                .bind(nonce)
                .bind(expires)
                .run(&db)
                .await
                .unwrap();
        }
        for (bucket, tat) in [("old", now - 1), ("live", now + 60)] {
            Stmt::new("INSERT INTO rate_limits (bucket, tat) VALUES ($1, $2)")
                .bind(bucket)
                .bind(tat * 1_000_000)
                .run(&db)
                .await
                .unwrap();
        }
        assert_eq!(expire(&db, now).await.unwrap(), 5);
        for table in ["gate_events", "change_attempts", "relay_frames", "spent_challenges", "rate_limits"] {
            let left: i64 =
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(db.sqlite()).await.unwrap();
            assert_eq!(left, 1, "{table}");
        }
        // A range on an index, not a scan of everything kept (which grows with history).
        let ranges = [
            ("gate_events", "at"),
            ("change_attempts", "at"),
            ("relay_frames", "expires_at"),
            ("spent_challenges", "expires_at"),
        ];
        for (table, column) in ranges {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN DELETE FROM {table} WHERE {column} <= 1"))
                    .fetch_all(db.sqlite())
                    .await
                    .unwrap();
            let plan: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
            assert!(plan.iter().any(|p| p.contains("USING") && p.contains("INDEX")), "{table}: {plan:?}");
        }
    }
}
