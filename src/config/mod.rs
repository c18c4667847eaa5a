//! Layered configuration: defaults, then a TOML file, then environment variables
//! (`PASSBACK__SECTION__KEY` for the portal, `PASSBACK_AGENT__…` for the agent).
//! Unknown keys are an error; secrets may be given as `*_file` paths; unsafe choices are refused
//! outside development mode, loudly. Validated once, here.

use anyhow::{bail, Context};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

mod agent;
mod layers;
mod portal;

pub use agent::*;
pub use portal::*;

/// How log lines are written: for a person reading a terminal, or one JSON object per line for
/// a log collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub const PORTAL_ENV_PREFIX: &str = "PASSBACK__";
pub const AGENT_ENV_PREFIX: &str = "PASSBACK_AGENT__";

/// Loads `T` from its defaults, an optional TOML file and the environment.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> anyhow::Result<T> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_from(file, env_prefix, &vars)
}

pub fn load_from<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    vars: &[(String, String)],
) -> anyhow::Result<T> {
    let base = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            text.parse::<toml::Table>().with_context(|| format!("parsing {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut tree = layers::Node::Toml(toml::Value::Table(base));
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(env_prefix) else { continue };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            bail!("environment variable {name}: empty key segment");
        }
        tree.set(&path, raw);
    }
    T::deserialize(tree).map_err(|e| anyhow::anyhow!("configuration: {}", e.message()))
}

/// A secret given inline or, better, as a file (whose trailing newline is ignored).
pub fn read_secret(
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<SecretString>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("{what}: give either the value or the file, not both"),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{what}: reading {}", path.display()))?;
            Ok(Some(SecretString::from(text.trim_end_matches(['\n', '\r']).to_string())))
        }
        (None, None) => Ok(None),
    }
}

/// `scheme://host[:port]` of an https URL (http too in development), if `raw` is nothing more.
pub fn normalize_origin(raw: &str, allow_http: bool) -> Option<String> {
    let url = url::Url::parse(raw).ok()?;
    let scheme_ok = url.scheme() == "https" || (allow_http && url.scheme() == "http");
    let bare = matches!(url.path(), "" | "/") && url.query().is_none() && url.fragment().is_none();
    let plain_host = url.username().is_empty() && url.password().is_none() && url.host().is_some();
    (scheme_ok && bare && plain_host).then(|| url.origin().ascii_serialization())
}

/// A directory URL that can only ever be used encrypted: `ldaps://`, or `ldap://` with StartTLS.
pub fn check_ldap_url(url: &str, starttls: bool) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("url {url:?}: {e}"))?;
    match (parsed.scheme(), starttls) {
        ("ldaps", false) | ("ldap", true) => Ok(()),
        ("ldaps", true) => bail!("url {url}: ldaps:// is already encrypted; remove starttls"),
        _ => bail!(
            "url {url}: passwords are never sent over an unencrypted connection; \
             use ldaps://, or ldap:// with starttls = true"
        ),
    }
}

fn is_loopback_host(host: &str) -> bool {
    // A URL writes an IPv6 address in brackets (`[::1]`).
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_known_in_every_spelling() {
        for host in ["localhost", "127.0.0.1", "::1", "[::1]", "127.0.0.53"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["example.org", "10.0.0.1", "[2001:db8::1]", "localhost.example.org"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn environment_overrides_the_file_and_defaults_fill_the_rest() {
        let dir = crate::files::scratch_dir("cfg");
        let file = dir.join("p.toml");
        std::fs::write(&file, "mode = \"development\"\n[relay]\nping_interval_secs = 5\nresult_deadline_secs = 9\n")
            .unwrap();
        let cfg: PortalConfig = load_from(
            Some(&file),
            PORTAL_ENV_PREFIX,
            &vars(&[("PASSBACK__RELAY__PING_INTERVAL_SECS", "2"), ("PASSBACK__MAIL__SMTP_HOST", "mail.test")]),
        )
        .unwrap();
        assert_eq!(cfg.relay.ping_interval_secs, 2);
        assert_eq!(cfg.relay.result_deadline_secs, 9);
        assert_eq!(cfg.mail.smtp_host, "mail.test");
        assert_eq!(cfg.reset.code_attempts, 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_secret_made_of_digits_is_read_as_text() {
        let cfg: PortalConfig = load_from(
            None,
            PORTAL_ENV_PREFIX,
            &vars(&[
                ("PASSBACK__MAIL__PASSWORD", "123456"),
                ("PASSBACK__MAIL__SMTP_PORT", "2525"),
                ("PASSBACK__SERVER__HELPDESK_CONTACT", "5550100"),
            ]),
        )
        .unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(cfg.mail.password.unwrap().expose_secret(), "123456");
        assert_eq!(cfg.server.helpdesk_contact.as_deref(), Some("5550100"));
        assert_eq!(cfg.mail.smtp_port, 2525);
    }

    #[test]
    fn environment_text_is_read_as_the_type_its_key_expects() {
        let cfg: PortalConfig = load_from(
            None,
            PORTAL_ENV_PREFIX,
            &vars(&[
                ("PASSBACK__SERVER__BEHIND_TLS_PROXY", "true"),
                ("PASSBACK__SERVER__TRUSTED_PROXIES", r#"["127.0.0.1", "::1"]"#),
                ("PASSBACK__DIRECTORIES__CORP__USER_KIND", "hash_synced"),
                ("PASSBACK__MAIL__FROM", "true"),
                ("PASSBACK__SERVER__HELPDESK_CONTACT", r#""Ext. \"5550\"""#),
                ("PASSBACK__RELAY__PING_INTERVAL_SECS", "1_0"),
            ]),
        )
        .unwrap();
        assert!(cfg.server.behind_tls_proxy);
        assert_eq!(cfg.server.trusted_proxies.len(), 2);
        assert_eq!(cfg.directories["corp"].user_kind, crate::domain::UserKind::HashSynced);
        assert_eq!(cfg.mail.from, "true");
        assert_eq!(cfg.server.helpdesk_contact.as_deref(), Some(r#"Ext. "5550""#), "a TOML string, read as one");
        assert_eq!(cfg.relay.ping_interval_secs, 10, "a TOML number, read as one");
        let wrong =
            load_from::<PortalConfig>(None, PORTAL_ENV_PREFIX, &vars(&[("PASSBACK__MAIL__SMTP_PORT", "twenty")]));
        let wrong = format!("{:#}", wrong.err().unwrap());
        assert!(wrong.contains("\"twenty\"") && wrong.contains("u16"), "{wrong}");
    }

    #[test]
    fn a_directory_kind_is_read_and_cloud_only_is_not_a_directory_kind() {
        let mut cfg: PortalConfig = toml::from_str("[directories.corp]\nuser_kind = \"hash_synced\"\n").unwrap();
        assert_eq!(cfg.directories["corp"].user_kind, crate::domain::UserKind::HashSynced);
        cfg.server.behind_tls_proxy = true;
        assert!(cfg.validate().is_ok());
        cfg.directories.get_mut("corp").unwrap().user_kind = crate::domain::UserKind::CloudOnly;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn allowed_origins_must_be_bare_https_origins() {
        let mut cfg = PortalConfig::default();
        cfg.server.behind_tls_proxy = true;
        cfg.server.allowed_return_origins = vec!["https://apps.example.org".into()];
        cfg.server.frame_ancestors = vec!["https://apps.example.org/".into()];
        assert!(cfg.validate().is_ok());
        for bad in [
            "https://apps.example.org/home",
            "http://apps.example.org",
            "apps.example.org",
            "*",
            "https://u@apps.example.org",
        ] {
            cfg.server.frame_ancestors = vec![bad.into()];
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_count_for_what_the_administrator_says_and_privileged_accounts_register_only_what_is_allowed() {
        use crate::config::{GateMethod as M, Purpose};
        let mut cfg: PortalConfig = toml::from_str(
            "[gates]\nmethods = [\"email\", \"authenticator\", \"recovery_code\"]\n\
             for_unlock = [\"email\"]\nprivileged_methods = [\"authenticator\"]\n",
        )
        .unwrap();
        cfg.server.behind_tls_proxy = true;
        assert!(cfg.validate().is_ok());
        let g = &cfg.gates;
        assert!(g.counts_for(Purpose::Reset, M::RecoveryCode) && g.counts_for(Purpose::StepUp, M::Authenticator));
        assert!(g.counts_for(Purpose::Unlock, M::Email) && !g.counts_for(Purpose::Unlock, M::Authenticator));
        assert!(!g.counts_for(Purpose::Reset, M::Questions), "not enabled");
        assert!(g.may_register(false, M::Email) && g.may_register(true, M::Authenticator));
        assert!(!g.may_register(true, M::Email) && !g.may_register(true, M::RecoveryCode));
        for bad in [
            "for_reset = [\"questions\"]",
            "for_unlock = []",
            "for_step_up = [\"email\", \"questions\"]",
            "privileged_methods = [\"questions\"]",
        ] {
            let mut cfg: PortalConfig =
                toml::from_str(&format!("[gates]\nmethods = [\"email\", \"authenticator\"]\n{bad}\n")).unwrap();
            cfg.server.behind_tls_proxy = true;
            assert!(cfg.validate().is_err(), "{bad}");
        }
        // Passkey holders must use it only where it counts everywhere: else a step-up (or a
        // reset) without it would go round it.
        let must = |more: &str| {
            let text = format!("[gates]\npasskey_holders_must_use = true\n{more}");
            let mut cfg: PortalConfig = toml::from_str(&text).unwrap();
            cfg.server.behind_tls_proxy = true;
            cfg.validate()
        };
        assert!(must("").is_ok());
        assert!(must("for_step_up = [\"email\", \"authenticator\"]").is_err());
        assert!(must("methods = [\"email\", \"authenticator\"]").is_err());
    }

    #[test]
    fn unknown_keys_are_an_error() {
        let r: anyhow::Result<PortalConfig> =
            load_from(None, PORTAL_ENV_PREFIX, &vars(&[("PASSBACK__RELAY__PING_INTERVAL", "2")]));
        assert!(r.unwrap_err().to_string().contains("ping_interval"));
    }

    #[test]
    fn production_refuses_plain_http_and_clear_text_mail() {
        let mut cfg = PortalConfig::default();
        assert!(cfg.validate().is_err());
        cfg.server.behind_tls_proxy = true;
        assert!(cfg.validate().is_ok());
        cfg.mail.security = SmtpSecurity::None;
        cfg.mail.smtp_host = "mail.example.org".into();
        assert!(cfg.validate().is_err());
        cfg.mail.smtp_host = "127.0.0.1".into();
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn production_reaches_a_postgresql_elsewhere_only_over_verified_tls() {
        let mut cfg = PortalConfig::default();
        cfg.server.behind_tls_proxy = true;
        let with = |cfg: &mut PortalConfig, url: &str| {
            cfg.database.url = url.into();
            cfg.validate().map_err(|e| e.to_string())
        };
        let refused = with(&mut cfg, "postgres://passback:pw@db.example.org/passback").unwrap_err();
        assert!(refused.contains("sslmode=verify-full"), "{refused}");
        assert!(!refused.contains("pw@"), "the password is not repeated: {refused}");
        assert!(with(&mut cfg, "postgres://passback:pw@db.example.org/passback?sslmode=require").is_err());
        let verified =
            "postgres://passback@db.example.org/passback?sslmode=verify-full&sslrootcert=/etc/passback/db-ca.pem";
        assert!(with(&mut cfg, verified).is_ok());
        let no_ca = "postgres://passback@db.example.org/passback?sslmode=verify-full";
        assert!(with(&mut cfg, no_ca).is_err(), "the CA is named: not whatever the system trusts");
        assert!(with(&mut cfg, "postgres://passback@[::1]:5432/passback").is_ok(), "this machine, by IPv6");
        assert!(with(&mut cfg, "postgres://passback@127.0.0.1:5432/passback").is_ok(), "this machine");
        assert!(with(&mut cfg, "postgresql://passback@localhost/passback?host=/run/postgresql").is_ok(), "a socket");
        cfg.mode = Mode::Development;
        assert!(with(&mut cfg, "postgres://passback:pw@db.example.org/passback").is_ok(), "a test machine");
    }

    /// An agent's configuration with one directory at `url`.
    fn an_agent(url: &str) -> AgentConfig {
        let text = format!(
            r#"
            [[directories]]
            id = "corp"
            kind = "openldap"
            url = "{url}"
            bind_dn = "cn=passback"
            bind_password_file = "/dev/null"
            base_dns = ["ou=people,dc=example,dc=org"]
            "#
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn an_agent_refuses_a_directory_without_encryption() {
        let cfg = an_agent("ldap://127.0.0.1:389");
        assert!(cfg.validate().unwrap_err().to_string().contains("unencrypted"));
    }

    #[test]
    fn an_agent_refuses_a_state_file_named_as_the_files_it_keeps_beside_it() {
        let mut cfg = an_agent("ldaps://127.0.0.1:636");
        assert!(cfg.validate().is_ok(), "{:?}", cfg.validate());
        for (name, refused) in [("agent.lock", true), ("agent.answered", true), ("agent.json", false), ("agent", false)]
        {
            cfg.state_file = name.into();
            assert_eq!(cfg.validate().is_err(), refused, "{name}: {:?}", cfg.validate());
        }
    }
}
