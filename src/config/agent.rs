//! The agent's configuration: the portal it connects to, and the directories it serves.

use super::{check_ldap_url, load, AGENT_ENV_PREFIX};
use anyhow::bail;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `text` (default) or `json`: one JSON object per line, for a log collector.
    pub log_format: super::LogFormat,
    /// Where the agent keeps its identity and keys (mode 0600).
    pub state_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for the portal, besides the system's web roots.
    pub portal_ca_file: Option<PathBuf>,
    pub heartbeat_secs: u64,
    /// How often to send who changed since the last sync (AD `uSNChanged`, OpenLDAP `modifyTimestamp`).
    pub sync_interval_secs: u64,
    /// How often to send everyone instead, so that people who left the scope are noticed.
    pub full_sync_interval_secs: u64,
    pub key_rotation_days: u64,
    pub key_grace_hours: u64,
    pub max_concurrent: usize,
    /// Let staff whose role allows it reset protected (privileged) accounts through this agent.
    /// Off by default: then no request from the portal can reset them, whatever its roles say.
    pub protected_resets_by_staff: bool,
    /// Resets, unlocks and forced changes this agent carries out per directory and minute; beyond
    /// it, it refuses and says so on the portal's health page, so a compromised portal cannot
    /// reset a whole directory.
    pub resets_per_minute: u32,
    pub directories: Vec<DirectoryConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            log_format: Default::default(),
            state_file: PathBuf::from("passback-agent.json"),
            portal_ca_file: None,
            heartbeat_secs: 15,
            sync_interval_secs: 300,
            full_sync_interval_secs: 3600,
            key_rotation_days: 180,
            key_grace_hours: 24,
            max_concurrent: 32,
            protected_resets_by_staff: false,
            resets_per_minute: 60,
            directories: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    Openldap,
    /// Active Directory (or a Samba AD DC).
    Ad,
}

impl DirectoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectoryKind::Openldap => "openldap",
            DirectoryKind::Ad => "ad",
        }
    }
}

/// What an AD agent does when the directory cannot enforce password history on a reset
/// (no `LDAP_SERVER_POLICY_HINTS` control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOnReset {
    /// Refuse resets with a specific outcome for the administrator.
    Required,
    /// Reset anyway, and record that history was not enforced.
    BestEffort,
}

impl HistoryOnReset {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryOnReset::Required => "required",
            HistoryOnReset::BestEffort => "best_effort",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The name the portal knows this directory by (`corp`).
    pub id: String,
    /// `ad` or `openldap`.
    pub kind: DirectoryKind,
    /// `ldaps://host:636` or `ldap://host:389` with `starttls = true`.
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// The CA certificate (PEM) the directory's certificate is checked against, if not a
    /// system-trusted one.
    pub ca_file: Option<PathBuf>,
    /// The service account the agent binds as (docs/directories.md says what it may do).
    pub bind_dn: String,
    /// Its password; better given as `bind_password_file`, which a rotation replaces.
    pub bind_password: Option<SecretString>,
    pub bind_password_file: Option<PathBuf>,
    /// Where the people in scope are: every entry below these DNs.
    pub base_dns: Vec<String>,
    /// Extra LDAP filter ANDed with the person filter, e.g. `(memberOf=cn=staff,ou=groups,dc=…)`.
    pub user_filter: Option<String>,
    /// The default password policy entry (OpenLDAP ppolicy), to state real numbers to people.
    pub policy_dn: Option<String>,
    /// AD only: when unset, `required` if the server supports policy hints, else `best_effort`.
    pub history_on_reset: Option<HistoryOnReset>,
    /// Groups whose members are protected too, beside AD's built-in privileged groups (on AD,
    /// nested membership counts; on OpenLDAP, the group's `member` or `uniqueMember`).
    #[serde(default)]
    pub protected_groups: Vec<String>,
    /// An LDAP filter: the people it matches are protected too.
    pub protected_filter: Option<String>,
    /// Connections kept open to the directory.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long one directory operation may take.
    #[serde(default = "default_ldap_timeout")]
    pub timeout_secs: u64,
}

fn default_pool_size() -> usize {
    4
}
fn default_ldap_timeout() -> u64 {
    10
}

impl AgentConfig {
    /// The agent's configuration from `file` and its variables, checked (`agent doctor` reads it
    /// unchecked instead, to report what is wrong).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let cfg: Self = load(file, AGENT_ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.directories.is_empty() {
            bail!("agent: configure at least one [[directories]] entry");
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.directories {
            crate::domain::DirectoryId::parse(&d.id).map_err(|e| anyhow::anyhow!("directory id {:?}: {e}", d.id))?;
            if !seen.insert(&d.id) {
                bail!("directory {:?} is configured twice", d.id);
            }
            check_ldap_url(&d.url, d.starttls).map_err(|e| anyhow::anyhow!("directory {}: {e}", d.id))?;
            if d.base_dns.is_empty() {
                bail!("directory {}: base_dns is empty", d.id);
            }
            if d.bind_password.is_none() && d.bind_password_file.is_none() {
                bail!("directory {}: bind_password_file is missing", d.id);
            }
            if d.pool_size == 0 {
                bail!("directory {}: pool_size must be at least 1", d.id);
            }
        }
        if self.heartbeat_secs == 0 || self.max_concurrent == 0 || self.key_rotation_days == 0 {
            bail!("agent: heartbeat_secs, max_concurrent and key_rotation_days must be positive");
        }
        if self.sync_interval_secs == 0 || self.full_sync_interval_secs < self.sync_interval_secs {
            bail!("agent: sync_interval_secs must be positive and full_sync_interval_secs at least as long");
        }
        // Beside the state file the agent keeps files named as it is with these extensions.
        if let Some(ext @ ("lock" | "answered")) = self.state_file.extension().and_then(|e| e.to_str()) {
            bail!("agent: state_file must not end in .{ext}, which names a file the agent keeps beside it");
        }
        Ok(())
    }
}
