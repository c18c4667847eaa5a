//! The portal's configuration: its sections, their defaults, and what is refused outside
//! development mode.

use super::{is_loopback_host, load, normalize_origin, PORTAL_ENV_PREFIX};
use anyhow::{bail, Context};
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Production,
    Development,
}

// ---------------------------------------------------------------- portal

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    pub mode: Mode,
    /// `text` (default) or `json`: one JSON object per line, for a log collector.
    pub log_format: super::LogFormat,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub secrets: SecretsConfig,
    pub relay: RelayConfig,
    pub reset: ResetConfig,
    pub mail: MailConfig,
    /// Per directory id: what the portal does with its people's passwords.
    pub directories: std::collections::BTreeMap<String, PortalDirectoryConfig>,
    /// The rules for cloud-only accounts, whose passwords live only in the portal.
    pub cloud_policy: CloudPolicyConfig,
    /// How people prove who they are before a reset or unlock, and the limits on it.
    pub gates: GatesConfig,
    /// Making automated use of the first steps expensive: proof of work, and rate limits.
    pub anti_automation: AntiAutomationConfig,
    /// What the portal checks in every new password before anything is sent to a directory.
    pub password_policy: PasswordPolicyConfig,
    /// Mail that reaches people before they need the portal: expiry reminders, invitations to
    /// register.
    pub reminders: RemindersConfig,
}

/// Mail the portal sends of itself, not in answer to a request. Each mail goes once, whatever
/// the number of instances, and is audited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemindersConfig {
    /// Days before a password expires to remind its owner, each once (empty: no reminders).
    /// A directory can have its own list (`[directories.ID] expiry_reminder_days`).
    pub expiry_days: Vec<u32>,
    /// Tell people once, within a week of it, that their password has expired and how to
    /// choose a new one.
    pub expired_notice: bool,
    /// Invite people who have registered fewer ways to prove who they are than a reset needs,
    /// at most this often (days; 0: never). It stops once they have registered enough.
    pub campaign_days: u32,
    /// The language of mail to people who have never used the portal (after that, the one they
    /// last used it in).
    pub default_language: crate::i18n::Lang,
    /// How often to look for mail that is due, in seconds.
    pub check_every_secs: u64,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        Self {
            expiry_days: vec![14, 7, 3, 1],
            expired_notice: true,
            campaign_days: 14,
            default_language: crate::i18n::Lang::En,
            check_every_secs: 300,
        }
    }
}

impl RemindersConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(d) = self.expiry_days.iter().find(|d| !(1..=90).contains(*d)) {
            bail!("reminders.expiry_days: {d} is not from 1 to 90 days");
        }
        if self.check_every_secs == 0 {
            bail!("reminders.check_every_secs must be at least 1");
        }
        Ok(())
    }
}

/// What the portal checks in every new password (self-service reset and change, an expired
/// password changed, the helpdesk's, cloud accounts), on top of the directory's own rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicyConfig {
    /// The organisation's own banned terms (at most 1,000, of 4 to 16 characters each), on top
    /// of the global list shipped with passback. Reloaded from the file without a restart.
    pub banned: Vec<String>,
    /// The organisation's name: a password containing it is refused.
    pub organisation_name: Option<String>,
    pub profile: PolicyProfile,
    /// Whether new passwords are looked up among breached ones (Have I Been Pwned's Pwned
    /// Passwords): not at all, through its range API, or in a file built by
    /// `passback breached build`.
    pub breached: BreachedMode,
    /// The range API's base URL (`<url>/range/<first 5 hex of the SHA-1>`).
    pub breached_url: String,
    /// The file `passback breached build` made, for `breached = "offline"`.
    pub breached_file: Option<PathBuf>,
    /// A CA certificate (PEM) for the range API's server, besides the public roots: for a copy
    /// of the service inside the organisation.
    pub breached_ca_file: Option<PathBuf>,
    /// How long a lookup through the range API may take.
    pub breached_timeout_ms: u64,
    /// When the range API cannot be asked: accept the password (`true`, the default, and the
    /// health page says lookups fail) or refuse it until it can.
    pub breached_fail_open: bool,
    /// Every sign-in that takes these passwords (the organisation's own: Windows, VPN, mail…)
    /// also asks for a second factor. SP 800-63B-4 then asks for 8 characters, not 15. Staff
    /// always sign in here with one. Off by default: what passback cannot see, it does not assume.
    pub multi_factor_sign_in: bool,
}

impl Default for PasswordPolicyConfig {
    fn default() -> Self {
        Self {
            banned: Vec::new(),
            organisation_name: None,
            profile: PolicyProfile::Default,
            breached: BreachedMode::Off,
            breached_url: "https://api.pwnedpasswords.com".into(),
            breached_file: None,
            breached_ca_file: None,
            breached_timeout_ms: 3000,
            breached_fail_open: true,
            multi_factor_sign_in: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum PolicyProfile {
    #[default]
    #[serde(rename = "default")]
    Default,
    /// NIST SP 800-63B-4 for what the portal itself decides: at least 15 characters for a
    /// password used alone and 8 for one used with a second factor (`multi_factor_sign_in`;
    /// staff), counted in code points after NFKC, on top of every directory's
    /// own rules and in place of the cloud policy's composition rule; banned and breached
    /// passwords refused (so `breached` must be on). The health page and `agent doctor` say
    /// where a directory's own policy contradicts it.
    #[serde(rename = "nist-800-63b-4")]
    Nist80063b4,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachedMode {
    #[default]
    Off,
    Online,
    Offline,
}

impl PasswordPolicyConfig {
    /// The custom list's bounds, and what each way of looking up breached passwords needs.
    pub fn validate(&self) -> anyhow::Result<()> {
        use crate::domain::banned::{MAX_TERM, MIN_TERM};
        if self.profile == PolicyProfile::Nist80063b4 && self.breached == BreachedMode::Off {
            bail!(
                "password_policy.profile = \"nist-800-63b-4\" needs breached = \"online\" or \"offline\": \
                 SP 800-63B-4 asks that new passwords be compared with those known from breaches"
            );
        }
        if self.banned.len() > 1000 {
            bail!("password_policy.banned: {} terms, at most 1000", self.banned.len());
        }
        if let Some(t) = self.banned.iter().find(|t| !(MIN_TERM..=MAX_TERM).contains(&t.trim().chars().count())) {
            bail!("password_policy.banned: {t:?} is not of {MIN_TERM} to {MAX_TERM} characters");
        }
        match self.breached {
            BreachedMode::Offline if self.breached_file.is_none() => {
                bail!("password_policy: breached = \"offline\" needs breached_file (made by `passback breached build`)")
            }
            BreachedMode::Online => {
                let url = url::Url::parse(&self.breached_url).context("password_policy.breached_url")?;
                let local = url.host_str().is_some_and(is_loopback_host);
                if url.scheme() != "https" && !local {
                    bail!("password_policy.breached_url must be https (or on this machine)");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiAutomationConfig {
    /// Leading zero bits the browser's proof of work must find (each bit doubles its work;
    /// 15 is under a second on a desktop, a second or two on a phone). 0 turns it off.
    pub pow_bits: u32,
    /// What a first step sent without a proof (JavaScript off) waits instead.
    pub no_script_delay_ms: u64,
    /// First steps (identify, sign-in, change) per client address per minute.
    pub per_address_per_minute: u32,
    /// Identify steps per account per hour; beyond, the flow goes on as for an unknown name.
    pub per_account_per_hour: u32,
    /// Failed verifications per client address (IPv6: per /64) and hour, whatever the accounts:
    /// guessing spread over many accounts from one place stops here.
    pub failures_per_address_per_hour: u32,
    /// Failed verifications per hour, all addresses together, past which the portal is under
    /// attack: the proof of work costs `attack_extra_bits` more, administrators are e-mailed
    /// (at most hourly), and `/metrics` and the health page say so.
    pub global_failures_per_hour: u32,
    pub attack_extra_bits: u32,
}

impl Default for AntiAutomationConfig {
    fn default() -> Self {
        Self {
            pow_bits: 15,
            no_script_delay_ms: 3000,
            per_address_per_minute: 20,
            per_account_per_hour: 20,
            failures_per_address_per_hour: 10,
            global_failures_per_hour: 200,
            attack_extra_bits: 4,
        }
    }
}

/// A way to prove who you are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMethod {
    /// A one-time code e-mailed to an address on record.
    Email,
    /// A code from an authenticator app (TOTP).
    Authenticator,
    /// Answers to security questions.
    Questions,
    /// One of the single-use recovery codes the person saved.
    RecoveryCode,
    /// A passkey (WebAuthn, with user verification): the strongest, as no site but this one can
    /// ask for it.
    Passkey,
}

impl GateMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            GateMethod::Email => "email",
            GateMethod::Authenticator => "authenticator",
            GateMethod::Questions => "questions",
            GateMethod::RecoveryCode => "recovery_code",
            GateMethod::Passkey => "passkey",
        }
    }
}

/// What a verification is for: each may count only some of the enabled methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A forgotten password.
    Reset,
    /// A locked account.
    Unlock,
    /// Before a change to security info.
    StepUp,
    /// Any enabled method: the step-up's own when none of a person's counts for it (a step-up
    /// is never skipped for someone who has a way to verify).
    Any,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatesConfig {
    /// The methods people may use (and register).
    pub methods: Vec<GateMethod>,
    /// Which of them count for a reset, an unlock, and the step-up before a change to security
    /// info (absent: all of them).
    pub for_reset: Option<Vec<GateMethod>>,
    pub for_unlock: Option<Vec<GateMethod>>,
    pub for_step_up: Option<Vec<GateMethod>>,
    /// Which of them privileged accounts (who may change a password here, never reset it) may
    /// register; security questions never (absent: every other enabled method).
    pub privileged_methods: Option<Vec<GateMethod>>,
    /// How many different methods a reset or unlock needs: 1 or 2.
    pub required: u32,
    /// People who registered a passkey must use it (as their first method, where it counts):
    /// nothing phishable opens the way to their account.
    pub passkey_holders_must_use: bool,
    /// Whether codes may go to the person's main (synced `mail`) address as well as to alternate
    /// ones (registered, or the directory's `otherMailbox`). Off where the main mailbox sits
    /// behind the very password that was forgotten.
    pub email_primary: bool,
    /// Questions a person registers answers to, and how many of them a reset asks.
    pub questions_to_register: u32,
    pub questions_to_ask: u32,
    /// The administrator's own questions, offered beside the predefined ones.
    pub custom_questions: Vec<String>,
    /// Failed verifications of one account in an hour before self-service is blocked for it.
    pub failures_per_hour: u32,
    /// Resets (and unlocks) of one account in an hour before self-service is blocked for it.
    pub resets_per_hour: u32,
    /// How long such a block lasts.
    pub block_hours: u32,
    /// Ask people to review their security info at sign-in every this many days (0: never).
    pub reconfirm_days: u32,
}

impl Default for GatesConfig {
    fn default() -> Self {
        Self {
            // Security questions are off by default: NIST SP 800-63B-4 does not recognise them
            // for recovery. Enabled, they only ever count as a second method.
            methods: vec![GateMethod::Email, GateMethod::Authenticator, GateMethod::RecoveryCode, GateMethod::Passkey],
            for_reset: None,
            for_unlock: None,
            for_step_up: None,
            privileged_methods: None,
            required: 1,
            passkey_holders_must_use: false,
            email_primary: true,
            questions_to_register: 3,
            questions_to_ask: 2,
            custom_questions: Vec::new(),
            failures_per_hour: 5,
            resets_per_hour: 5,
            block_hours: 24,
            reconfirm_days: 0,
        }
    }
}

impl GatesConfig {
    /// Whether `method` counts for `purpose`.
    pub fn counts_for(&self, purpose: Purpose, method: GateMethod) -> bool {
        let listed = match purpose {
            Purpose::Reset => &self.for_reset,
            Purpose::Unlock => &self.for_unlock,
            Purpose::StepUp => &self.for_step_up,
            Purpose::Any => &None,
        };
        self.methods.contains(&method) && listed.as_ref().is_none_or(|l| l.contains(&method))
    }

    /// Whether a person (privileged or not) may register `method`.
    pub fn may_register(&self, privileged: bool, method: GateMethod) -> bool {
        self.methods.contains(&method)
            && (!privileged
                || (method != GateMethod::Questions
                    && self.privileged_methods.as_ref().is_none_or(|l| l.contains(&method))))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalDirectoryConfig {
    /// `federated` (default: write back only), or `hash_synced` (also keep the portal's hash).
    pub user_kind: crate::domain::UserKind,
    /// This directory's days of expiry reminders, in place of `reminders.expiry_days` (empty:
    /// none for its people).
    pub expiry_reminder_days: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudPolicyConfig {
    pub min_length: u32,
    /// Three of: upper case, lower case, digits, symbols; and not the user name.
    pub complexity: bool,
}

impl Default for CloudPolicyConfig {
    fn default() -> Self {
        Self { min_length: 8, complexity: true }
    }
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Production,
            log_format: Default::default(),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            secrets: SecretsConfig::default(),
            relay: RelayConfig::default(),
            reset: ResetConfig::default(),
            mail: MailConfig::default(),
            directories: Default::default(),
            cloud_policy: CloudPolicyConfig::default(),
            gates: GatesConfig::default(),
            anti_automation: AntiAutomationConfig::default(),
            password_policy: PasswordPolicyConfig::default(),
            reminders: RemindersConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address and port the portal listens on.
    pub listen: SocketAddr,
    /// The address people and agents use, e.g. `https://passback.example.org`.
    pub public_url: String,
    /// The portal's certificate chain and key (PEM), when it serves TLS itself.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Serve plain HTTP because a TLS-terminating proxy sits in front. Cookies stay `Secure`.
    pub behind_tls_proxy: bool,
    /// Helpdesk contact shown on error pages.
    pub helpdesk_contact: Option<String>,
    /// Origins (`https://apps.example.org`) that may send people here with `return_to`, and be
    /// sent back to. Any other `return_to` is ignored.
    pub allowed_return_origins: Vec<String>,
    /// Origins that may show the portal in a frame. Empty: no framing at all.
    pub frame_ancestors: Vec<String>,
    /// The bearer token Prometheus presents at `/metrics` (without one, `/metrics` is not served).
    pub metrics_token: Option<SecretString>,
    /// The same token, read from a file (the better way).
    pub metrics_token_file: Option<PathBuf>,
    /// Addresses of proxies in front of the portal whose `X-Forwarded-For` is believed, so that
    /// limits and the audit see each person's address rather than the proxy's.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A person's signed-in session ends this many hours after the sign-in, however busy.
    pub session_max_hours: u64,
    /// Where "Sign in" leads from the pages that end a reset, change or unlock: the
    /// organisation's own sign-in page (`https://myapps.example.org`). Default: this portal's.
    pub done_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: "https://localhost:8443".into(),
            tls_cert_file: None,
            tls_key_file: None,
            behind_tls_proxy: false,
            helpdesk_contact: None,
            allowed_return_origins: Vec::new(),
            frame_ancestors: Vec::new(),
            trusted_proxies: Vec::new(),
            metrics_token: None,
            metrics_token_file: None,
            session_max_hours: 8,
            done_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    /// Connections for statements at once. On a SQLite file, the writes have one more of their
    /// own and take turns on it; these serve the reads.
    pub max_connections: u32,
    /// Flush every commit to the disk (SQLite `synchronous = FULL`; on PostgreSQL the server's own
    /// `synchronous_commit`, which also waits for synchronous standbys). Off, commits are flushed
    /// at checkpoints (SQLite's `NORMAL`, with the write-ahead log) or by PostgreSQL's log writer
    /// within a moment (`synchronous_commit = off` for the portal's connections): never corrupt,
    /// but a power cut, or a crash of PostgreSQL's server, may lose the last moments of records.
    /// The directory, not this database, holds the passwords.
    pub durable_commits: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: "sqlite://passback.db?mode=rwc".into(), max_connections: 8, durable_commits: false }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// 32 random bytes, base64: encrypts package keys at rest in the database.
    pub data_key: Option<SecretString>,
    pub data_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub ping_interval_secs: u64,
    /// How long a sealed request stays valid for the agent.
    pub request_ttl_secs: u64,
    /// How long a person waits for the directory's answer before PB-1002.
    pub result_deadline_secs: u64,
    pub enrollment_token_ttl_mins: u64,
    /// How long the agent keeps accepting the previous key after a rollover.
    pub key_grace_hours: u64,
    /// A full sync that would remove more than one person and more than this share of a
    /// directory's people (in percent) is held and shown on the health page, not applied, until
    /// an administrator applies it.
    pub max_sync_removal_percent: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            ping_interval_secs: 15,
            request_ttl_secs: 120,
            result_deadline_secs: 30,
            enrollment_token_ttl_mins: 60,
            key_grace_hours: 24,
            max_sync_removal_percent: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResetConfig {
    pub code_ttl_secs: u64,
    pub code_attempts: u32,
    /// Codes sent to one account per hour before the flow refuses to send more.
    pub codes_per_hour: u32,
    /// Wrong current passwords on the change form per account per hour before it refuses more.
    pub change_attempts_per_hour: u32,
    /// …and per day, however they are spread (a successful change or reset starts again).
    pub change_attempts_per_day: u32,
    /// The shortest time a change answer takes, so timing does not tell real names from others.
    pub change_min_response_ms: u64,
}

impl Default for ResetConfig {
    fn default() -> Self {
        Self {
            code_ttl_secs: 600,
            code_attempts: 5,
            codes_per_hour: 5,
            change_attempts_per_hour: 5,
            change_attempts_per_day: 20,
            change_min_response_ms: 800,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Implicit TLS (port 465).
    Tls,
    /// STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// No encryption: only to a relay on this host, or in development mode.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The sender people see, e.g. `passback <no-reply@example.org>`.
    pub from: String,
    /// The SMTP server that sends codes and notices.
    pub smtp_host: String,
    pub smtp_port: u16,
    /// How the connection to it is encrypted (STARTTLS by default).
    pub security: SmtpSecurity,
    /// The SMTP account, if the server asks for one.
    pub username: Option<String>,
    /// Its password; better given as `password_file`.
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for the SMTP server.
    pub ca_file: Option<PathBuf>,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            from: "passback <no-reply@localhost>".into(),
            smtp_host: "localhost".into(),
            smtp_port: 587,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
        }
    }
}

/// Which database `database.url` names: PostgreSQL for `postgres://` (or `postgresql://`), the
/// SQLite file otherwise.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Why the link to a PostgreSQL database would not be safe, if it would not: to another host, the
/// password hashes, sessions and audit cross the network, so it must be TLS with the server's
/// certificate checked against a CA and its name (`sslmode=verify-full&sslrootcert=<CA file>`).
/// A socket or this machine's loopback needs none; nor does SQLite, a file.
fn unprotected_database_link(url: &str) -> Option<String> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    if !is_postgres_url(url) {
        return None;
    }
    let opts = match url.parse::<PgConnectOptions>() {
        Ok(opts) => opts,
        Err(e) => return Some(format!("not a PostgreSQL address: {e}")),
    };
    let host = opts.get_host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if opts.get_socket().is_some() || host.starts_with('/') || is_loopback_host(bare) {
        return None;
    }
    let ca_named =
        url::Url::parse(url).is_ok_and(|u| u.query_pairs().any(|(k, v)| k == "sslrootcert" && !v.is_empty()));
    (!matches!(opts.get_ssl_mode(), PgSslMode::VerifyFull) || !ca_named).then(|| {
        format!(
            "the database at {host} would be reached without a verified TLS link: add \
             sslmode=verify-full and sslrootcert=<the CA that signed its certificate> (the name in \
             the address must be the certificate's), or mode = \"development\" on a test machine"
        )
    })
}

impl PortalConfig {
    /// The portal's configuration from `file` and `PASSBACK_…` variables, checked: what the
    /// commands run with.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let cfg: Self = load(file, PORTAL_ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses combinations that would be unsafe in production.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.password_policy.validate()?;
        self.reminders.validate()?;
        for (id, d) in &self.directories {
            let days = d.expiry_reminder_days.as_deref().unwrap_or_default();
            if let Some(day) = days.iter().find(|d| !(1..=90).contains(*d)) {
                bail!("directories.{id}.expiry_reminder_days: {day} is not from 1 to 90 days");
            }
        }
        let dev = self.mode == Mode::Development;
        let tls = self.server.tls_cert_file.is_some() || self.server.tls_key_file.is_some();
        if tls && (self.server.tls_cert_file.is_none() || self.server.tls_key_file.is_none()) {
            bail!("server: tls_cert_file and tls_key_file go together");
        }
        if !tls && !dev && !self.server.behind_tls_proxy {
            bail!(
                "server: no TLS certificate configured. Set server.tls_cert_file and server.tls_key_file, \
                 or server.behind_tls_proxy = true when a TLS-terminating proxy is in front, \
                 or mode = \"development\" on a test machine"
            );
        }
        for (key, list) in [
            ("server.allowed_return_origins", &self.server.allowed_return_origins),
            ("server.frame_ancestors", &self.server.frame_ancestors),
        ] {
            for origin in list {
                if normalize_origin(origin, dev).as_deref() != Some(origin.trim_end_matches('/')) {
                    bail!("{key}: {origin:?} is not an origin such as \"https://apps.example.org\" (https, no path)");
                }
            }
        }
        if let Some(done) = &self.server.done_url {
            let url = url::Url::parse(done).context("server.done_url")?;
            if url.scheme() != "https" && !dev {
                bail!("server.done_url must be an https:// address outside development mode");
            }
        }
        let url = url::Url::parse(&self.server.public_url).context("server.public_url")?;
        if url.scheme() != "https" && !dev {
            bail!("server.public_url must be https:// outside development mode");
        }
        if self.mail.security == SmtpSecurity::None && !dev && !is_loopback_host(&self.mail.smtp_host) {
            bail!("mail.security = \"none\" sends codes in clear: only allowed to a relay on this host or in development mode");
        }
        if let Some(why) = unprotected_database_link(&self.database.url).filter(|_| !dev) {
            bail!("database.url: {why}");
        }
        let a = &self.anti_automation;
        if a.pow_bits > 24 || a.per_address_per_minute == 0 || a.per_account_per_hour == 0 {
            bail!("anti_automation: pow_bits at most 24, and the limits at least 1");
        }
        let g = &self.gates;
        if g.methods.is_empty() {
            bail!("gates.methods: enable at least one method");
        }
        if !(1..=2).contains(&g.required) || g.required as usize > g.methods.len() {
            bail!("gates.required must be 1 or 2, and no more than the methods enabled");
        }
        let lists = [
            ("for_reset", &g.for_reset),
            ("for_unlock", &g.for_unlock),
            ("for_step_up", &g.for_step_up),
            ("privileged_methods", &g.privileged_methods),
        ];
        for (name, list) in lists {
            let Some(list) = list else { continue };
            if let Some(m) = list.iter().find(|m| !g.methods.contains(m)) {
                bail!("gates.{name}: \"{}\" is not in gates.methods", m.as_str());
            }
            if name == "privileged_methods" && list.contains(&GateMethod::Questions) {
                bail!("gates.privileged_methods: privileged accounts never use security questions");
            }
            let counted = list.iter().filter(|m| **m != GateMethod::Questions).count();
            if name.starts_with("for_") && (counted == 0 || list.len() < g.required as usize) {
                bail!(
                    "gates.{name}: list at least gates.required ({}) methods, one of them not security questions",
                    g.required
                );
            }
        }
        if g.passkey_holders_must_use {
            // Else a step-up (or a reset) without the passkey would let someone with the phished
            // password and mailbox remove it, or go round it.
            let missing = [("methods", Some(&g.methods)), ("for_reset", g.for_reset.as_ref())]
                .into_iter()
                .chain([("for_unlock", g.for_unlock.as_ref()), ("for_step_up", g.for_step_up.as_ref())])
                .find(|(_, list)| list.is_some_and(|l| !l.contains(&GateMethod::Passkey)));
            if let Some((name, _)) = missing {
                bail!("gates.passkey_holders_must_use: \"passkey\" must be in gates.{name} too");
            }
        }
        if g.methods.contains(&GateMethod::Questions) && g.required < 2 {
            bail!(
                "gates: security questions only ever count as a second method: with \"questions\" in \
                 gates.methods, set gates.required = 2 (or remove \"questions\")"
            );
        }
        if g.methods.contains(&GateMethod::Questions)
            && (g.questions_to_ask == 0
                || g.questions_to_ask > g.questions_to_register
                || g.questions_to_ask > 5
                || g.questions_to_register > 10)
        {
            bail!("gates: questions_to_ask must be 1..=5 and at most questions_to_register, which is at most 10");
        }
        if g.failures_per_hour == 0 || g.resets_per_hour == 0 {
            bail!("gates: failures_per_hour and resets_per_hour must be at least 1");
        }
        if self.reset.code_attempts == 0 || self.relay.result_deadline_secs == 0 || self.relay.ping_interval_secs == 0 {
            bail!("reset.code_attempts, relay.result_deadline_secs and relay.ping_interval_secs must be positive");
        }
        for (id, d) in &self.directories {
            crate::domain::DirectoryId::parse(id).map_err(|e| anyhow::anyhow!("directories.{id}: {e}"))?;
            if d.user_kind == crate::domain::UserKind::CloudOnly {
                bail!("directories.{id}: a directory's people cannot be cloud_only; use federated or hash_synced");
            }
        }
        if self.relay.request_ttl_secs < self.relay.result_deadline_secs {
            bail!("relay.request_ttl_secs must be at least relay.result_deadline_secs, or requests expire while people wait");
        }
        Ok(())
    }

    pub fn serves_tls(&self) -> bool {
        self.server.tls_cert_file.is_some()
    }
}

// ---------------------------------------------------------------- agent
