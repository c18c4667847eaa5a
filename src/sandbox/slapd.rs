//! A throwaway OpenLDAP `slapd` with the ppolicy overlay, listening on LDAPS on 127.0.0.1 only,
//! seeded with a few people and a service account (see `slapd/config.ldif` and `slapd/data.ldif`).
//!
//! Start-up takes a fraction of a second, so every test (and `passback demo`) gets its own.

use super::process::{
    connect_as, find_program, free_port, listens_on, log_outputs, log_tail, random_password, stop_child, Server,
};
use super::TestCa;
use anyhow::{bail, Context};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG_LDIF: &str = include_str!("slapd/config.ldif");
const DATA_LDIF: &str = include_str!("slapd/data.ldif");

const BASE_DN: &str = "dc=example,dc=org";
const PEOPLE_DN: &str = "ou=people,dc=example,dc=org";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const SERVICE_DN: &str = "cn=passback,ou=services,dc=example,dc=org";
const POLICY_DN: &str = "cn=default,ou=policies,dc=example,dc=org";
/// Every seeded person starts with this password, readable on purpose: the demo prints it.
const SLAPD_HINT: &str = "Install OpenLDAP's server, e.g. on Debian: echo 'slapd slapd/no_configuration boolean true' \
                          | debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install -y slapd";

pub const INITIAL_USER_PASSWORD: &str = "Initial-Pw-789";

const START_ATTEMPTS: u32 = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running, seeded slapd. Dropping it stops the server; the caller owns (and removes) `dir`.
#[derive(Debug)]
pub struct Slapd {
    /// `ldaps://127.0.0.1:PORT`
    pub url: String,
    /// `dc=example,dc=org`
    pub base_dn: String,
    /// `ou=people,dc=example,dc=org`: alice, bob, carol (all with mail) and dave (no mail).
    pub people_dn: String,
    /// The rootdn: bypasses every ACL and every password policy.
    pub admin_dn: String,
    pub admin_password: SecretString,
    /// passback's service account: may write (not manage) `userPassword` under `people_dn`, so
    /// the password policy applies to its resets.
    pub service_dn: String,
    pub service_password: SecretString,
    /// The initial password of every seeded person ([`INITIAL_USER_PASSWORD`]).
    pub user_password: SecretString,
    /// The default password policy: minimum length 8, history 3, minimum age 0.
    /// carol has her own (`cn=slow`): the same, with a minimum age of one hour.
    pub policy_dn: String,
    /// The CA that signed the server's certificate: what clients must trust.
    pub ca_file: PathBuf,
    /// Where the configuration, database and `slapd.log` live.
    pub dir: PathBuf,
    /// The slapd process.
    pub process: Server,
}

impl Slapd {
    /// Creates `dir/slapd.d` and `dir/db`, loads configuration and data with `slapadd`, starts
    /// slapd on a free port of 127.0.0.1 and returns once it accepts connections.
    /// `dir` must not hold a slapd already.
    pub fn start(dir: &Path, ca: &TestCa) -> anyhow::Result<Slapd> {
        let slapd_bin = find_program("slapd", SLAPD_HINT)?;
        let slapadd_bin = find_program("slapadd", SLAPD_HINT)?;

        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let config_dir = dir.join("slapd.d");
        let db_dir = dir.join("db");
        if config_dir.exists() {
            bail!("{} already exists: start the sandbox slapd in a fresh directory", config_dir.display());
        }
        std::fs::create_dir_all(&config_dir).with_context(|| format!("creating {}", config_dir.display()))?;
        std::fs::create_dir_all(&db_dir).with_context(|| format!("creating {}", db_dir.display()))?;

        let admin_password = random_password();
        let service_password = random_password();
        let user_password = SecretString::from(INITIAL_USER_PASSWORD.to_string());

        let config = render(
            CONFIG_LDIF,
            &[
                ("{{DIR}}", ldif_path(&dir)?),
                ("{{CERT}}", ldif_path(&ca.cert_file)?),
                ("{{KEY}}", ldif_path(&ca.key_file)?),
                ("{{CA}}", ldif_path(&ca.ca_file)?),
                ("{{ADMIN_PW_HASH}}", ssha(&admin_password, random_salt())),
            ],
        );
        let data = render(
            DATA_LDIF,
            &[
                ("{{SVC_PW_HASH}}", ssha(&service_password, random_salt())),
                ("{{USER_PW_HASH}}", ssha(&user_password, random_salt())),
            ],
        );
        let config_file = dir.join("config.ldif");
        let data_file = dir.join("data.ldif");
        std::fs::write(&config_file, config).with_context(|| format!("writing {}", config_file.display()))?;
        std::fs::write(&data_file, data).with_context(|| format!("writing {}", data_file.display()))?;
        slapadd(&slapadd_bin, "0", &config_dir, &config_file)?;
        slapadd(&slapadd_bin, "1", &config_dir, &data_file)?;

        let log_file = dir.join("slapd.log");
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut child = spawn(&slapd_bin, &config_dir, &log_file, port)?;
            match wait_until_listening(&mut child, port, &log_file) {
                Ok(()) => {
                    return Ok(Slapd {
                        url: format!("ldaps://127.0.0.1:{port}"),
                        base_dn: BASE_DN.into(),
                        people_dn: PEOPLE_DN.into(),
                        admin_dn: ADMIN_DN.into(),
                        admin_password,
                        service_dn: SERVICE_DN.into(),
                        service_password,
                        user_password,
                        policy_dn: POLICY_DN.into(),
                        ca_file: ca.ca_file.clone(),
                        dir,
                        process: Server::new(child),
                    });
                }
                Err(StartError::PortTaken(e)) => {
                    // Someone took the port between our probe and slapd's bind: try another.
                    let _ = child.wait();
                    last_error = Some(e);
                }
                Err(StartError::Fatal(e)) => {
                    stop_child(&mut child);
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("slapd did not start")))
            .context(format!("slapd could not bind a port in {START_ATTEMPTS} attempts"))
    }

    /// Adds a person under `ou=people` (as the directory's administrator), with the initial
    /// password and, if given, an e-mail address.
    pub async fn add_person(&self, uid: &str, mail: Option<&str>) -> anyhow::Result<()> {
        let mut attrs = vec![
            ("objectClass", ["inetOrgPerson"].into_iter().collect()),
            ("uid", [uid].into_iter().collect()),
            ("cn", [uid].into_iter().collect()),
            ("sn", [uid].into_iter().collect()),
            ("userPassword", [INITIAL_USER_PASSWORD].into_iter().collect()),
        ];
        if let Some(mail) = mail {
            attrs.push(("mail", [mail].into_iter().collect()));
        }
        let mut ldap = self.as_admin().await?;
        let added = ldap.add(&self.user_dn(uid), attrs).await;
        done(ldap, added).await
    }

    /// Makes a person's password expired (as the directory's administrator): a policy with a
    /// one-day maximum age, and a password last changed long ago. A bind then answers ppolicy's
    /// `passwordExpired`.
    pub async fn expire_password(&self, uid: &str) -> anyhow::Result<()> {
        self.use_policy(uid, "expiring").await?;
        self.password_changed_at(uid, "20000101000000Z").await
    }

    /// Says the person's password was last changed at `when` (LDAP generalized time), as the
    /// directory's administrator.
    pub async fn password_changed_at(&self, uid: &str, when: &str) -> anyhow::Result<()> {
        let mods = vec![ldap3::Mod::Replace("pwdChangedTime", [when].into_iter().collect())];
        let mut ldap = self.as_admin().await?;
        // pwdChangedTime is the overlay's own ("no user modification"): the Relax control lets
        // the administrator set it.
        let relax = ldap3::controls::RawControl { ctype: "1.3.6.1.4.1.4203.666.5.12".into(), crit: true, val: None };
        let modified = ldap.with_controls(relax).modify(&self.user_dn(uid), mods).await;
        done(ldap, modified).await
    }

    /// Puts a person under one of the seeded password policies (`default`, `slow`, `expiring`).
    pub async fn use_policy(&self, uid: &str, policy: &str) -> anyhow::Result<()> {
        let dn = format!("cn={policy},{}", self.people_dn.replacen("ou=people", "ou=policies", 1));
        self.replace(uid, "pwdPolicySubentry", &dn).await
    }

    /// Changes a seeded password policy (`default`, `slow`, `expiring`), as the directory's
    /// administrator: e.g. `[("pwdMinAge", "86400")]`.
    pub async fn set_policy(&self, policy: &str, values: &[(&str, &str)]) -> anyhow::Result<()> {
        let dn = format!("cn={policy},{}", self.people_dn.replacen("ou=people", "ou=policies", 1));
        let mods = values.iter().map(|(a, v)| ldap3::Mod::Replace(*a, [*v].into_iter().collect())).collect();
        let mut ldap = self.as_admin().await?;
        let modified = ldap.modify(&dn, mods).await;
        done(ldap, modified).await
    }

    /// Disables a person as ppolicy does (as the directory's administrator): a permanent lock,
    /// `pwdAccountLockedTime: 000001010000Z`.
    pub async fn disable(&self, uid: &str) -> anyhow::Result<()> {
        self.replace(uid, "pwdAccountLockedTime", "000001010000Z").await
    }

    /// Sets a person's password as the directory's administrator would, outside passback.
    pub async fn set_password(&self, uid: &str, password: &str) -> anyhow::Result<()> {
        self.replace(uid, "userPassword", password).await
    }

    /// Deletes a person (as the directory's administrator).
    pub async fn delete_person(&self, uid: &str) -> anyhow::Result<()> {
        let mut ldap = self.as_admin().await?;
        let deleted = ldap.delete(&self.user_dn(uid)).await;
        done(ldap, deleted).await
    }

    /// Replaces one attribute of a person's entry, as the directory's administrator.
    async fn replace(&self, uid: &str, attribute: &str, value: &str) -> anyhow::Result<()> {
        let mut ldap = self.as_admin().await?;
        let mods = vec![ldap3::Mod::Replace(attribute, [value].into_iter().collect())];
        let modified = ldap.modify(&self.user_dn(uid), mods).await;
        done(ldap, modified).await
    }

    /// A connection bound as the directory's administrator.
    async fn as_admin(&self) -> anyhow::Result<ldap3::Ldap> {
        let (ldap, rc) = connect_as(&self.url, &self.ca_file, &self.admin_dn, &self.admin_password).await?;
        anyhow::ensure!(rc == 0, "administrator bind failed: rc {rc}");
        Ok(ldap)
    }

    /// The DN of a seeded person, e.g. `user_dn("alice")`.
    pub fn user_dn(&self, uid: &str) -> String {
        format!("uid={},{}", ldap3::dn_escape(uid), self.people_dn)
    }

    /// A directory configuration for passback's agent that uses this slapd through the service
    /// account, with the default policy and all of `ou=people` in scope.
    pub fn directory_config(&self, id: &str) -> crate::config::DirectoryConfig {
        let service = (self.service_dn.clone(), self.service_password.clone());
        let ldaps = (self.url.clone(), self.ca_file.clone());
        let cfg = super::process::directory_config(
            id,
            crate::config::DirectoryKind::Openldap,
            ldaps,
            service,
            &self.people_dn,
        );
        crate::config::DirectoryConfig { policy_dn: Some(self.policy_dn.clone()), ..cfg }
    }
}

enum StartError {
    PortTaken(anyhow::Error),
    Fatal(anyhow::Error),
}

fn random_salt() -> [u8; 8] {
    let mut salt = [0u8; 8];
    OsRng.fill_bytes(&mut salt);
    salt
}

/// `{SSHA}` = base64(SHA-1(password ‖ salt) ‖ salt), the scheme slapd checks binds against.
fn ssha(password: &SecretString, salt: [u8; 8]) -> String {
    use base64::Engine;
    let mut hasher = Sha1::new();
    hasher.update(password.expose_secret().as_bytes());
    hasher.update(salt);
    let mut raw = hasher.finalize().to_vec();
    raw.extend_from_slice(&salt);
    format!("{{SSHA}}{}", base64::engine::general_purpose::STANDARD.encode(raw))
}

fn render(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_string(), |text, (placeholder, value)| text.replace(placeholder, value))
}

/// A path as an LDIF value: LDIF's plain values are printable ASCII on one line.
fn ldif_path(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().filter(|s| s.bytes().all(|b| (0x20..0x7f).contains(&b)));
    text.map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{}: the sandbox needs a path of printable ASCII characters", path.display()))
}

fn slapadd(bin: &Path, database: &str, config_dir: &Path, ldif: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("-n")
        .arg(database)
        .arg("-F")
        .arg(config_dir)
        .arg("-l")
        .arg(ldif)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "slapadd -n{database} -l {} failed ({}): {}{}",
            ldif.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn spawn(bin: &Path, config_dir: &Path, log_file: &Path, port: u16) -> anyhow::Result<Child> {
    let (log, log_err) = log_outputs(log_file)?;
    // `-d 0`: stay in the foreground (so the child is slapd itself) and log errors to stderr.
    Command::new(bin)
        .arg("-F")
        .arg(config_dir)
        .arg("-h")
        .arg(format!("ldaps://127.0.0.1:{port}/"))
        .arg("-d")
        .arg("0")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

fn wait_until_listening(child: &mut Child, port: u16, log_file: &Path) -> Result<(), StartError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let tail = log_tail(log_file);
                let err = anyhow::anyhow!("slapd exited at start ({status}); end of its log:\n{tail}");
                return Err(if tail.contains("Address already in use") || tail.contains("bind(") {
                    StartError::PortTaken(err)
                } else {
                    StartError::Fatal(err)
                });
            }
            Ok(None) => {}
            Err(e) => return Err(StartError::Fatal(anyhow::Error::new(e).context("watching slapd"))),
        }
        // Its own socket, not merely an answer on the port: another process may hold it.
        if listens_on(child.id(), port) && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StartError::Fatal(anyhow::anyhow!(
                "slapd did not accept connections on {addr} within {} s; end of its log:\n{}",
                READY_TIMEOUT.as_secs(),
                log_tail(log_file)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Closes an administrator's connection, and says whether its one operation succeeded.
async fn done(mut ldap: ldap3::Ldap, result: ldap3::result::Result<ldap3::LdapResult>) -> anyhow::Result<()> {
    let _ = ldap.unbind().await;
    result?.success()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_salted_sha1_hash_has_the_layout_slapd_expects() {
        let hash = ssha(&SecretString::from("secret".to_string()), *b"12345678");
        assert_eq!(hash, "{SSHA}tCNGqyJLk/uvKpCa4vga5GB2gWoxMjM0NTY3OA==");
    }

    #[test]
    fn every_placeholder_of_the_templates_is_filled() {
        let config = render(
            CONFIG_LDIF,
            &[
                ("{{DIR}}", "/d".into()),
                ("{{CERT}}", "/c".into()),
                ("{{KEY}}", "/k".into()),
                ("{{CA}}", "/a".into()),
                ("{{ADMIN_PW_HASH}}", "{SSHA}x".into()),
            ],
        );
        let data = render(DATA_LDIF, &[("{{SVC_PW_HASH}}", "{SSHA}y".into()), ("{{USER_PW_HASH}}", "{SSHA}z".into())]);
        // The header comments name the placeholders; the entries must not.
        let entries = |t: &str| t.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        assert!(!entries(&config).contains("{{"));
        assert!(!entries(&data).contains("{{"));
    }

    #[test]
    fn random_passwords_differ_and_are_long() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.expose_secret().len(), 24);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
