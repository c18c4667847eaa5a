//! `passback init`: a first configuration, from the same text the package ships as its example
//! (`packaging/*.toml`). For the portal, with a fresh data key; for an agent, with its directory,
//! for `passback agent doctor` to check. Files are written readable by the service's group where
//! it exists (`passback` for the portal, `passback-agent` for the agent: neither reads the
//! other's), by their owner alone elsewhere, and never over existing ones unless asked; a data
//! key that exists is never replaced.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

const PORTAL: &str = include_str!("../packaging/portal.toml");
const AGENT: &str = include_str!("../packaging/agent.toml");
/// The system groups the package makes for its services.
const PORTAL_GROUP: &str = "passback";
const AGENT_GROUP: &str = "passback-agent";

/// What the portal's first configuration needs to know.
pub struct Portal<'a> {
    pub dir: &'a Path,
    pub public_url: &'a str,
}

/// What an agent's first configuration needs to know.
pub struct Agent<'a> {
    pub dir: &'a Path,
    pub portal_url: &'a str,
    pub directory: &'a str,
    pub kind: crate::config::DirectoryKind,
    pub url: &'a str,
    pub base_dn: &'a str,
    pub bind_dn: &'a str,
    pub ca_file: Option<&'a Path>,
}

/// The text of a TOML string holding `s`.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `template` with each `"@NAME@"` (a whole TOML string) or bare `@NAME@` (within one) filled in,
/// in one pass (nothing filled in is read again): a whole string as a TOML string of the value,
/// so that no value can end it early; within one, only a value that needs no escaping (a path, a
/// host name).
fn fill(template: &str, values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'scan: while let Some(at) = rest.find('@') {
        for (name, value) in values {
            let token = format!("@{name}@");
            if !rest[at..].starts_with(&token) {
                continue;
            }
            let after = &rest[at + token.len()..];
            if rest[..at].ends_with('"') && after.starts_with('"') {
                out.push_str(&rest[..at - 1]);
                out.push_str(&quoted(value));
                rest = &after[1..];
            } else {
                if value.chars().any(|c| matches!(c, '"' | '\\' | '\'') || c.is_control()) {
                    bail!("{value:?}: quotes, backslashes and control characters cannot go here");
                }
                out.push_str(&rest[..at]);
                out.push_str(value);
                rest = after;
            }
            continue 'scan;
        }
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `path` from the root: a configuration read by a service does not know where it was written.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}", path.display()))
}

impl Portal<'_> {
    /// The configuration's text (checked to read back as what was asked).
    pub fn text(&self) -> anyhow::Result<String> {
        let url = url::Url::parse(self.public_url).context("--public-url")?;
        if url.scheme() != "https" {
            bail!("--public-url must be https:// (people reach the portal over TLS)");
        }
        let host = url.host_str().context("--public-url has no host")?;
        // Mail from the organisation's domain: the public host without its first label.
        let domain = host.split_once('.').map_or(host, |(_, rest)| rest);
        let public = url.origin().ascii_serialization();
        let dir = absolute(self.dir)?;
        let text =
            fill(PORTAL, &[("PUBLIC_URL", &public), ("MAIL_DOMAIN", domain), ("DIR", &dir.display().to_string())])?;
        let back: crate::config::PortalConfig = toml::from_str(&text).context("the configuration written")?;
        anyhow::ensure!(back.server.public_url == public, "the configuration does not read back as written");
        Ok(text)
    }

    /// Writes `portal.toml`, and a new `data.key` unless there is one; returns what it wrote.
    pub fn write(&self, force: bool) -> anyhow::Result<Vec<PathBuf>> {
        let text = self.text()?;
        let (config, key) = (self.dir.join("portal.toml"), self.dir.join("data.key"));
        refuse_existing(&config, force)?;
        std::fs::create_dir_all(self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let mut wrote = Vec::new();
        // The database's secrets are sealed under it: an existing key is kept, always.
        if !key.exists() {
            write(&key, crate::crypto::DataKey::generate_base64().as_bytes(), PORTAL_GROUP)?;
            wrote.push(key);
        }
        write(&config, text.as_bytes(), PORTAL_GROUP)?;
        wrote.insert(0, config);
        Ok(wrote)
    }
}

impl Agent<'_> {
    /// The configuration's text (checked to read back as what was asked).
    pub fn text(&self) -> anyhow::Result<String> {
        let url = url::Url::parse(self.portal_url).context("--portal-url")?;
        if url.scheme() != "https" {
            bail!("--portal-url must be https://");
        }
        if !self.directory.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("--directory: letters, digits, - and _ only (it names a file too)");
        }
        let dir = absolute(self.dir)?.display().to_string();
        let ca = self.ca_file.map(absolute).transpose()?;
        let mut text = fill(
            AGENT,
            &[
                ("PORTAL_URL", &url.origin().ascii_serialization()),
                ("DIRECTORY", self.directory),
                ("KIND", self.kind.as_str()),
                ("URL", self.url),
                ("BASE_DN", self.base_dn),
                ("BIND_DN", self.bind_dn),
                ("DIR", &dir),
            ],
        )?;
        if let Some(ca) = ca {
            // In the one directory's table, which the template ends with.
            text.push_str(&format!("ca_file = {}\n", quoted(&ca.display().to_string())));
        }
        let back: crate::config::AgentConfig = toml::from_str(&text).context("the configuration written")?;
        let d = back.directories.first().context("no directory written")?;
        anyhow::ensure!(
            d.id == self.directory && d.url == self.url && d.bind_dn == self.bind_dn && d.base_dns == [self.base_dn],
            "the configuration does not read back as written"
        );
        crate::config::check_ldap_url(&d.url, d.starttls).map_err(|e| anyhow::anyhow!("--url: {e}"))?;
        Ok(text)
    }

    /// Writes `agent.toml` into the folder; returns it, and the file its service account's
    /// password is to be written to (by the administrator).
    pub fn write(&self, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
        let text = self.text()?;
        let config = self.dir.join("agent.toml");
        refuse_existing(&config, force)?;
        std::fs::create_dir_all(self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        write(&config, text.as_bytes(), AGENT_GROUP)?;
        Ok((config, absolute(self.dir)?.join(format!("{}.pw", self.directory))))
    }
}

fn refuse_existing(path: &Path, force: bool) -> anyhow::Result<()> {
    match path.exists() {
        true if !force => bail!("{} exists: not replaced (--force replaces it)", path.display()),
        _ => Ok(()),
    }
}

/// Writes a file for a service to read: mode 0640 and its `group` where there is one (and this
/// process may give it), else 0600.
fn write(path: &Path, contents: &[u8], group: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    crate::files::write_private(path, contents)?;
    if let Some(gid) = group_id(group) {
        if std::os::unix::fs::chown(path, None, Some(gid)).is_ok() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))?;
        }
    }
    Ok(())
}

/// The id of a system group, from `/etc/group`.
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group").ok()?.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_fills_a_whole_string_as_a_toml_string_and_cannot_end_it() {
        let text = fill("a = \"@X@\"\n", &[("X", "q\"uote\\")]).unwrap();
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["a"].as_str(), Some("q\"uote\\"));
        assert!(fill("b = \"x@@X@\"\n", &[("X", "q\"uote")]).is_err(), "not within a string");
        assert_eq!(fill("b = \"x@@X@\"\n", &[("X", "corp.example")]).unwrap(), "b = \"x@corp.example\"\n");
        let portal = Portal { dir: Path::new("/etc/passback"), public_url: "https://sspr.corp.example.org/x" };
        let text = portal.text().unwrap();
        let cfg: crate::config::PortalConfig = toml::from_str(&text).unwrap();
        assert_eq!(cfg.server.public_url, "https://sspr.corp.example.org");
        assert_eq!(cfg.mail.from, "Password reset <no-reply@corp.example.org>");
        assert_eq!(cfg.secrets.data_key_file.unwrap(), Path::new("/etc/passback/data.key"));
        assert!(Portal { dir: Path::new("/x"), public_url: "http://plain.example.org" }.text().is_err());
    }
}
