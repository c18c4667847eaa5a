//! The portal's database: sqlx queries behind small repositories. SQLite by default.
//! Only the portal uses this module; the agent never touches the database.

pub mod agents;
pub mod attempts;
pub mod audit;
pub mod cloud;
pub mod codes;
pub mod security;
pub mod staff;
pub mod users;
pub mod writebacks;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use rand::RngCore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;
use zeroize::Zeroizing;

pub type Db = SqlitePool;

/// Opens (creating if needed) the database and applies `migrations/`.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
    connect_with(url, max_connections, false).await
}

/// [`connect`], choosing whether every commit is flushed to the disk (`durable`) or only at
/// checkpoints (see `database.durable_commits`).
pub async fn connect_with(url: &str, max_connections: u32, durable: bool) -> anyhow::Result<Db> {
    let sync = if durable { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
    let opts = SqliteConnectOptions::from_str(url)
        .with_context(|| "database.url")?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory {
        private_database_file(opts.get_filename())?;
    }
    let pool = SqlitePoolOptions::new()
        // An in-memory SQLite database lives in one connection; more would each see their own.
        .max_connections(if in_memory { 1 } else { max_connections.max(1) })
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

/// What the keyed hashes of one-time codes (and of typed names in counters) are derived for.
pub const CODE_KEY_PURPOSE: &str = "passback/one-time-codes/v1";

/// The key from configuration that encrypts secrets at rest (package keys).
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_base64(s: &str) -> anyhow::Result<Self> {
        use base64::Engine;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD.decode(s.trim()).context("secrets.data_key is not base64")?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("secrets.data_key must be 32 bytes (44 base64 characters)"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The portal's data key, as its configuration gives it (`secrets.data_key[_file]`).
    pub fn from_config(cfg: &crate::config::SecretsConfig) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        let key = crate::config::read_secret(&cfg.data_key, &cfg.data_key_file, "secrets.data_key")?
            .ok_or_else(|| anyhow::anyhow!("secrets.data_key_file is required (32 random bytes, base64)"))?;
        Self::from_base64(key.expose_secret())
    }

    pub fn generate_base64() -> Zeroizing<String> {
        use base64::Engine;
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(k.as_ref()))
    }

    /// Encrypts `plain`, bound to `context` (which row it belongs to): nonce ‖ ciphertext.
    pub fn encrypt(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new(self.0.as_ref().into());
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: context.as_bytes() })
            .unwrap_or_default();
        [nonce.as_slice(), &ct].concat()
    }

    pub fn decrypt(&self, context: &str, sealed: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        anyhow::ensure!(sealed.len() > 12, "stored secret is truncated");
        let (nonce, ct) = sealed.split_at(12);
        let cipher = Aes256Gcm::new(self.0.as_ref().into());
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("stored secret does not open with the configured data key"))
    }
}

impl DataKey {
    /// A separate key for one purpose, derived from the data key (HMAC-SHA256 of the purpose).
    pub fn derive(&self, purpose: &str) -> MacKey {
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&hmac_sha256(self.0.as_ref(), &[purpose.as_bytes()]));
        MacKey(k)
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new(&Default::default()));
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A keyed hash (HMAC-SHA256) for short secrets such as one-time codes: without the key, a copy
/// of the database does not let anyone try all the codes. Cheap, so it cannot be used to exhaust
/// the server, and compared in constant time.
#[derive(Clone)]
pub struct MacKey(Zeroizing<[u8; 32]>);

impl MacKey {
    /// The keyed hash of `parts` (each length-prefixed, so they cannot run into each other), hex.
    pub fn hash(&self, parts: &[&[u8]]) -> String {
        hex::encode(hmac_sha256(self.0.as_ref(), parts))
    }

    pub fn matches(&self, parts: &[&[u8]], stored_hex: &str) -> bool {
        hashes_equal(self.hash(parts).as_bytes(), stored_hex.as_bytes())
    }
}

/// A random 256-bit token as 64 hex digits: safe in URLs, headers and on a command line (a
/// token starting with `-` would be taken for an option).
pub fn random_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(hex::encode(bytes.as_ref()))
}

/// A `LIKE … ESCAPE '\'` pattern that finds `text` anywhere, lower-cased, with the wildcards
/// in it taken literally.
pub fn contains_pattern(text: &str) -> String {
    format!("%{}%", text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

/// SHA-256, for high-entropy tokens that are stored only as hashes.
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time comparison of two hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
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

    #[test]
    fn keyed_hashes_depend_on_the_key_and_on_where_the_parts_split() {
        let key = DataKey::from_base64(&DataKey::generate_base64()).unwrap();
        let codes = key.derive("codes");
        let h = codes.hash(&[b"id", b"12345678"]);
        assert!(codes.matches(&[b"id", b"12345678"], &h));
        assert!(!codes.matches(&[b"id1", b"2345678"], &h));
        assert!(!key.derive("other").matches(&[b"id", b"12345678"], &h));
    }

    #[test]
    fn data_key_round_trips_and_binds_its_context() {
        let key = DataKey::from_base64(&DataKey::generate_base64()).unwrap();
        let sealed = key.encrypt("agent_keys|a|1", b"secret");
        assert_eq!(key.decrypt("agent_keys|a|1", &sealed).unwrap().as_slice(), b"secret");
        assert!(key.decrypt("agent_keys|b|1", &sealed).is_err());
    }
}
