//! The portal's database: sqlx queries behind small repositories. SQLite by default.
//! Only the portal uses this module; the agent never touches the database.

/// Runs `sql` on `db` with each value bound in turn: whether it changed exactly one row.
macro_rules! changed_one {
    ($db:expr, $sql:expr $(, $value:expr)* $(,)?) => {
        async { sqlx::query($sql)$(.bind($value))*.execute($db).await.map(|r| r.rows_affected() == 1) }
    };
}

pub mod agents;
pub mod attempts;
pub mod audit;
pub mod batch;
pub mod cloud;
pub mod codes;
pub mod housekeeping;
pub mod security;
pub mod staff;
pub mod users;
pub mod writebacks;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

pub type Db = SqlitePool;
pub use batch::{Batch, Stmt};

/// Opens (creating if needed) the database and applies `migrations/`.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
    open(url, max_connections, false, false).await
}

/// [`connect`] for `serve`, choosing whether every commit is flushed to the disk (`durable`) or
/// only at checkpoints (see `database.durable_commits`). No request checkpoints the log: the
/// caller runs [`housekeeping::run`], which does.
pub async fn connect_with(url: &str, max_connections: u32, durable: bool) -> anyhow::Result<Db> {
    open(url, max_connections, durable, true).await
}

async fn open(url: &str, max_connections: u32, durable: bool, checkpoints_apart: bool) -> anyhow::Result<Db> {
    let sync = if durable { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
    let mut opts = SqliteConnectOptions::from_str(url)
        .with_context(|| "database.url")?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    if checkpoints_apart {
        // After a checkpoint, a log grown by a burst is cut back to 64 MiB on the disk.
        opts = opts.pragma("wal_autocheckpoint", "0").pragma("journal_size_limit", "67108864");
    }
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory {
        private_database_file(opts.get_filename())?;
    }
    let pool = SqlitePoolOptions::new()
        // An in-memory SQLite database lives in one connection; more would each see their own.
        .max_connections(if in_memory { 1 } else { max_connections.max(1) })
        // A SQLite connection is a file, not a link that can break: no ping (a round trip to
        // its worker thread) before every statement.
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .context("opening the database")?;
    sqlx::migrate!("./migrations").run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

/// Makes the database file readable by its owner only before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the same mode), and a folder made for it 0700. An existing folder is
/// left as it is: it may be shared (say, `/var/lib`).
fn private_database_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the database was readable by others: now 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub use crate::crypto::{hashes_equal, random_token, token_hash, DataKey, MacKey, CODE_KEY_PURPOSE};

/// A `LIKE … ESCAPE '\'` pattern that finds `text` anywhere, lower-cased, with the wildcards
/// in it taken literally.
pub fn contains_pattern(text: &str) -> String {
    format!("%{}%", text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_database_and_a_folder_made_for_it_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("pb-db-{}", uuid::Uuid::new_v4()));
        let file = root.join("state").join("passback.db");
        let db = connect(&format!("sqlite://{}?mode=rwc", file.display()), 1).await.unwrap();
        sqlx::query("INSERT INTO relay_frames VALUES ('a', 'b', 0)").execute(&db).await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("state")), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&root.join("state").join("passback.db-wal")), 0o600, "SQLite's own files follow");
        db.close().await;
        std::fs::remove_dir_all(root).unwrap();
    }
}
