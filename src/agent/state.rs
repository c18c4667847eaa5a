//! The agent's identity and keys on disk: one JSON file, mode 0600, written atomically.
//! The agent refuses to start when the file can be read by anyone but its owner.

use crate::envelope::{PackageKey, RSA_BITS};
use anyhow::{bail, Context};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

#[derive(Deserialize)]
pub struct StoredKey {
    pub version: u32,
    pub created_at: i64,
    /// PKCS#8 PEM of the RSA private key.
    pub rsa_private_pem: SecretString,
    /// Base64 of the AES-256 package key.
    pub package_key: SecretString,
}

#[derive(Deserialize)]
pub struct AgentState {
    pub portal_url: String,
    pub agent_id: String,
    pub relay_secret: SecretString,
    /// Newest first.
    pub keys: Vec<StoredKey>,
}

/// A key version ready for use: parsed once when the state is loaded.
#[derive(Clone)]
pub struct LoadedKey {
    pub version: u32,
    pub created_at: i64,
    /// `None` for the newest version; for an older one, the end of its grace period.
    pub valid_until: Option<i64>,
    pub rsa: RsaPrivateKey,
    pub package: PackageKey,
}

impl LoadedKey {
    /// Whether frames sealed with this version are still accepted at `now`.
    pub fn usable_at(&self, now: i64) -> bool {
        self.valid_until.is_none_or(|t| now <= t)
    }
}

/// What the running agent holds for as long as it runs: a lock on a file beside its state file,
/// named as it is with `.lock` for its extension (`agent.json`: `agent.lock`; 0600, made if
/// need be). The system lets go of it when the process ends, however it ends.
pub struct Running {
    _file: std::fs::File,
}

impl Running {
    /// Takes the lock, or says that another agent runs with this state file: two would answer
    /// as one agent, and each would write its journal's lines over the other's. (`rotate-keys`
    /// takes no lock: it is meant to run beside the agent, which picks up the new keys.)
    pub fn take(state_file: &Path) -> anyhow::Result<Running> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        enrolled(state_file)?;
        let path = state_file.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock takes only the descriptor, which `file` keeps open for as long as the
        // lock is held.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Running { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "another agent is running with the state file {} (it holds {}): stop it first, or give this \
                 one its own state file and enroll it with its own token",
                state_file.display(),
                path.display()
            );
        }
        Err(e).with_context(|| format!("locking {}", path.display()))
    }
}

/// The state file's metadata, or why the agent cannot start without one.
fn enrolled(path: &Path) -> anyhow::Result<std::fs::Metadata> {
    std::fs::metadata(path)
        .with_context(|| format!("agent state {} not found: enroll first with `passback agent enroll`", path.display()))
}

impl AgentState {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let meta = enrolled(path)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "agent state {} is readable by others (mode {mode:o}); it holds private keys. \
                 Run `chmod 600 {}` and start again",
                path.display(),
                path.display()
            );
        }
        let text =
            Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
        let state: AgentState = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if state.keys.is_empty() {
            bail!("agent state {} holds no keys", path.display());
        }
        Ok(state)
    }

    /// Writes the state to a new 0600 file beside the old one, then renames it over it.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = Zeroizing::new(serde_json::to_vec_pretty(&Exposed(self))?);
        crate::files::replace_private(path, &json)
    }

    pub fn bearer(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("Bearer {}.{}", self.agent_id, self.relay_secret.expose_secret()))
    }

    /// The keys still accepted at `now`, newest first: the newest, and older ones until
    /// `grace_secs` after the version that replaced them was made.
    pub fn usable_keys(&self, now: i64, grace_secs: i64) -> anyhow::Result<Vec<LoadedKey>> {
        let mut out = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let replaced_by = i.checked_sub(1).and_then(|newer| self.keys.get(newer));
            let valid_until = replaced_by.map(|newer| newer.created_at.saturating_add(grace_secs));
            if valid_until.is_some_and(|t| now > t) {
                continue;
            }
            let rsa = RsaPrivateKey::from_pkcs8_pem(k.rsa_private_pem.expose_secret())
                .with_context(|| format!("key version {}", k.version))?;
            let package = PackageKey::from_base64(k.package_key.expose_secret())
                .ok_or_else(|| anyhow::anyhow!("key version {}: bad package key", k.version))?;
            out.push(LoadedKey { version: k.version, created_at: k.created_at, valid_until, rsa, package });
        }
        Ok(out)
    }

    /// Adds a new newest key and drops versions beyond the previous one.
    pub fn push_key(&mut self, key: StoredKey) {
        self.keys.insert(0, key);
        self.keys.truncate(2);
    }
}

/// Serializes secrets in clear — only for writing the 0600 state file.
struct Exposed<'a>(&'a AgentState);

impl Serialize for Exposed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct K<'a> {
            version: u32,
            created_at: i64,
            rsa_private_pem: &'a str,
            package_key: &'a str,
        }
        #[derive(Serialize)]
        struct St<'a> {
            portal_url: &'a str,
            agent_id: &'a str,
            relay_secret: &'a str,
            keys: Vec<K<'a>>,
        }
        St {
            portal_url: &self.0.portal_url,
            agent_id: &self.0.agent_id,
            relay_secret: self.0.relay_secret.expose_secret(),
            keys: self
                .0
                .keys
                .iter()
                .map(|k| K {
                    version: k.version,
                    created_at: k.created_at,
                    rsa_private_pem: k.rsa_private_pem.expose_secret(),
                    package_key: k.package_key.expose_secret(),
                })
                .collect(),
        }
        .serialize(s)
    }
}

/// A fresh RSA-2048 key pair.
pub struct NewKeyPair {
    pub key: RsaPrivateKey,
    /// PKCS#8 PEM of the private key, for the state file.
    pub private_pem: SecretString,
    /// SPKI PEM of the public key, for the portal.
    pub public_pem: String,
}

/// Makes a fresh RSA-2048 key pair. Slow: run it off the async runtime.
pub fn new_key_pair() -> anyhow::Result<NewKeyPair> {
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)?;
    let private = key.to_pkcs8_pem(LineEnding::LF)?;
    let public_pem = key.to_public_key().to_public_key_pem(LineEnding::LF)?;
    Ok(NewKeyPair { key, private_pem: SecretString::from(private.to_string()), public_pem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AgentState {
        let key = |v: u32, at: i64| StoredKey {
            version: v,
            created_at: at,
            rsa_private_pem: SecretString::from(String::new()),
            package_key: SecretString::from(String::new()),
        };
        AgentState {
            portal_url: "https://p".into(),
            agent_id: "a".into(),
            relay_secret: SecretString::from("s".to_string()),
            keys: vec![key(2, 100), key(1, 0)],
        }
    }

    #[test]
    fn the_state_file_is_owner_only_and_a_wider_one_is_refused() {
        let dir = crate::files::scratch_dir("state");
        let path = dir.join("agent.json");
        state().save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(AgentState::load(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(AgentState::load(&path).err().expect("refused").to_string().contains("readable by others"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_older_key_is_accepted_only_during_its_grace_period() {
        let pair = new_key_pair().unwrap();
        let key = |v: u32, at: i64| StoredKey {
            version: v,
            created_at: at,
            rsa_private_pem: pair.private_pem.clone(),
            package_key: SecretString::from(PackageKey::generate(&mut rand::rngs::OsRng).to_base64().to_string()),
        };
        let mut s = state();
        s.keys = vec![key(2, 1_000), key(1, 0)];
        let keys = s.usable_keys(1_500, 3_600).unwrap();
        assert_eq!(keys.iter().map(|k| k.version).collect::<Vec<_>>(), vec![2, 1]);
        assert!(keys[1].usable_at(4_600) && !keys[1].usable_at(4_601), "version 1 ends an hour after version 2");
        assert!(keys[0].usable_at(i64::MAX), "the newest never ends");
        let later = s.usable_keys(5_000, 3_600).unwrap();
        assert_eq!(later.iter().map(|k| k.version).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn only_two_key_versions_are_kept() {
        let mut s = state();
        s.push_key(StoredKey {
            version: 3,
            created_at: 200,
            rsa_private_pem: SecretString::from(String::new()),
            package_key: SecretString::from(String::new()),
        });
        assert_eq!(s.keys.iter().map(|k| k.version).collect::<Vec<_>>(), vec![3, 2]);
    }
}
