//! A throwaway Samba 4.17 Active Directory domain controller (realm `CORP.TEST`), serving LDAPS on
//! 127.0.0.1:636 with the [`TestCa`]'s certificate, seeded with a few people and a service account
//! that is delegated password resets on `OU=Staff` only.
//!
//! Samba's LDAP ports are hard-coded (389 and 636), so only one DC can run on this machine at a
//! time and tests share one per process. That is why it runs as `samba -i` with a piped stdin:
//! Samba quits when its stdin reaches end of file, so the DC dies with the process that started it
//! even if its handle (for example in a `static`) is never dropped.
//!
//! It runs with `-M single`: one process of about 50 MB (proportional set size), where the
//! default `prefork` model needs 11 processes and about 65 MB for the same answers.

mod setup;

use super::process::{connect_as, find_program, log_tail, random_password, Server};
use super::TestCa;
use anyhow::{bail, Context};
use ldap3::{Ldap, Mod, Scope, SearchEntry};
use secrecy::{ExposeSecret, SecretString};
use setup::*;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Every seeded person (alice, bob, dadmin) starts with this password, readable on purpose: the
/// demo prints it. It meets AD's complexity rules and the minimum length of 7.
pub const INITIAL_AD_PASSWORD: &str = "Initial#Pw789";

const REALM: &str = "CORP.TEST";
const NETBIOS_DOMAIN: &str = "CORP";
const UPN_SUFFIX: &str = "corp.test";
const SAMBA_HINT: &str =
    "Install Samba's AD DC, e.g. on Debian: DEBIAN_FRONTEND=noninteractive apt-get install -y samba samba-ad-dc";
const DOMAIN_DN: &str = "DC=corp,DC=test";
const STAFF_DN: &str = "OU=Staff,DC=corp,DC=test";
const USERS_DN: &str = "CN=Users,DC=corp,DC=test";
const ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=corp,DC=test";
const DOMAIN_ADMINS_DN: &str = "CN=Domain Admins,CN=Users,DC=corp,DC=test";
const SERVICE_SAM: &str = "svc-reset";
const SEEDED_PEOPLE: [&str; 3] = ["alice", "bob", "dadmin"];
/// The seeded member of Domain Admins, inside `OU=Staff` (so inside the delegation).
const SEEDED_ADMIN: &str = "dadmin";

/// `userAccountControl` of an enabled normal account.
const NORMAL_ACCOUNT: &str = "512";
/// The domain policy set at start (minimum age 0 so tests can change passwords back to back).
const DOMAIN_POLICY: [(&str, &str); 5] = [
    ("minPwdAge", "0"),
    ("minPwdLength", "7"),
    ("pwdHistoryLength", "24"),
    ("pwdProperties", "1"),
    ("lockoutThreshold", "5"),
];

/// schemaIDGUID of the `user` class: the delegation applies to user objects only.
const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
/// The "Reset Password" control access right.
const RESET_PASSWORD_RIGHT: &str = "00299570-246d-11d0-a768-00aa006e0529";
/// schemaIDGUID of `lockoutTime` (writing 0 unlocks).
const LOCKOUT_TIME_ATTRIBUTE: &str = "28630ebf-41d5-11d1-a9c1-0000f80367c1";
/// schemaIDGUID of `pwdLastSet` (writing 0 forces a change at next logon).
const PWD_LAST_SET_ATTRIBUTE: &str = "bf967a0a-0de6-11d0-a285-00aa003049e2";

/// The rights the sandbox delegates to a service account on `OU=Staff`, on user objects below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delegated {
    ResetPassword,
    WriteLockoutTime,
    WritePwdLastSet,
}

impl Delegated {
    /// What svc-reset is given.
    pub const ALL: [Delegated; 3] = [Delegated::ResetPassword, Delegated::WriteLockoutTime, Delegated::WritePwdLastSet];
}

/// Samba 4.17 has no `ldap port` parameter: these are fixed.
const LDAP_PORTS: [u16; 2] = [389, 636];
const LDAPS_PORT: u16 = 636;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LDAP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running, seeded Samba AD DC. Dropping it stops the server; the caller owns (and removes)
/// `dir`. If the handle is never dropped, the DC still stops when this process exits.
#[derive(Debug)]
pub struct SambaDc {
    /// `ldaps://127.0.0.1:636`
    pub url: String,
    /// The CA that signed the server's certificate: what clients must trust.
    pub ca_file: PathBuf,
    /// `CORP.TEST`
    pub realm: String,
    /// `DC=corp,DC=test`
    pub domain_dn: String,
    /// `OU=Staff,DC=corp,DC=test`: alice, bob and dadmin (a Domain Admin), each with
    /// `mail = <sam>@corp.test` and the password [`INITIAL_AD_PASSWORD`].
    pub staff_dn: String,
    /// The domain's Administrator. Its resets still meet length and complexity rules, but never
    /// the password history (Samba 4.17 cannot enforce history on a reset).
    pub admin_dn: String,
    pub admin_password: SecretString,
    /// passback's service account `svc-reset` in `CN=Users`, delegated on `OU=Staff` only: Reset
    /// Password, write `lockoutTime` and write `pwdLastSet` on user objects.
    pub service_dn: String,
    pub service_password: SecretString,
    /// The instance's folder: `etc/smb.conf`, the databases under `private/`, and the logs
    /// `provision.log` and `samba.log`.
    pub dir: PathBuf,
    smb_conf: PathBuf,
    samba_tool_bin: PathBuf,
    /// The root samba process.
    pub process: Server,
    /// Held open only: Samba (`-i`) quits when it is closed, i.e. when this process ends.
    _stdin: Option<ChildStdin>,
}

impl SambaDc {
    /// Provisions a domain in `dir` (realm `CORP.TEST`, NetBIOS domain `CORP`, no DNS), restricts
    /// it to LDAP on 127.0.0.1 with the CA's certificate, starts `samba`, sets the domain policy
    /// (minimum age 0, history 24, minimum length 7, complexity on, lockout after 5 bad
    /// passwords), seeds `OU=Staff` and the service account, and returns once all of that is done.
    ///
    /// Takes several seconds, most of it `samba-tool domain provision`. Fails at once if
    /// something already listens on 127.0.0.1:389 or :636 (only one DC fits on a machine).
    /// `dir` must not hold a provisioned domain already.
    pub fn start(dir: &Path, ca: &TestCa) -> anyhow::Result<SambaDc> {
        let samba_bin = find_program("samba", SAMBA_HINT)?;
        let samba_tool_bin = find_program("samba-tool", SAMBA_HINT)?;
        refuse_if_ports_taken()?;

        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let smb_conf = dir.join("etc").join("smb.conf");
        if smb_conf.exists() {
            bail!("{} already exists: start the sandbox Samba DC in a fresh directory", smb_conf.display());
        }
        let admin_password = random_password();
        let service_password = random_password();

        let began = Instant::now();
        provision(&samba_tool_bin, &dir, &admin_password)?;
        let provisioned = began.elapsed();

        let run_dir = dir.join("run");
        let settings = instance_settings(&dir, ca)?;
        let text = std::fs::read_to_string(&smb_conf).with_context(|| format!("reading {}", smb_conf.display()))?;
        let patched = patch_smb_conf(&text, &settings).with_context(|| format!("patching {}", smb_conf.display()))?;
        std::fs::write(&smb_conf, patched).with_context(|| format!("writing {}", smb_conf.display()))?;
        for sub in [&run_dir, &dir.join("log")] {
            std::fs::create_dir_all(sub).with_context(|| format!("creating {}", sub.display()))?;
        }

        let log_file = dir.join("samba.log");
        let mut child = spawn(&samba_bin, &smb_conf, &log_file)?;
        let stdin = child.stdin.take();
        // From here on, dropping `dc` (on any error) stops Samba.
        let mut dc = SambaDc {
            url: format!("ldaps://127.0.0.1:{LDAPS_PORT}"),
            ca_file: ca.ca_file.clone(),
            realm: REALM.into(),
            domain_dn: DOMAIN_DN.into(),
            staff_dn: STAFF_DN.into(),
            admin_dn: ADMIN_DN.into(),
            admin_password,
            service_dn: format!("CN={SERVICE_SAM},{USERS_DN}"),
            service_password,
            dir,
            smb_conf,
            samba_tool_bin,
            process: Server::new(child),
            _stdin: stdin,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        dc.wait_until_listening(deadline)?;
        let listening = began.elapsed();

        let service_sid = dc.seed_over_ldap(deadline)?;
        dc.samba_tool(&[
            "dsacl",
            "set",
            &format!("--objectdn={STAFF_DN}"),
            "--action=allow",
            &delegation_sddl(&service_sid),
        ])
        .context("delegating password resets on OU=Staff to svc-reset")?;
        // Reading the fine-grained policies lets the agent state their real numbers to people.
        dc.samba_tool(&[
            "dsacl",
            "set",
            &format!("--objectdn=CN=Password Settings Container,CN=System,{DOMAIN_DN}"),
            "--action=allow",
            &format!("--sddl=(A;CI;RPLCLORC;;;{service_sid})"),
        ])
        .context("letting svc-reset read the password settings objects")?;
        tracing::info!(
            provision_ms = provisioned.as_millis() as u64,
            listening_ms = (listening - provisioned).as_millis() as u64,
            seed_ms = (began.elapsed() - listening).as_millis() as u64,
            total_ms = began.elapsed().as_millis() as u64,
            "sandbox Samba DC ready"
        );
        Ok(dc)
    }

    /// The DN of a person in `OU=Staff`, e.g. `user_dn("alice")`.
    pub fn user_dn(&self, sam: &str) -> String {
        format!("CN={},{}", ldap3::dn_escape(sam), self.staff_dn)
    }

    /// Runs `samba-tool ARGS --configfile=<this instance's smb.conf>` and returns its standard
    /// output, e.g. `["domain", "passwordsettings", "set", "--min-pwd-age=1"]`. Changes made while
    /// Samba runs take effect at once. Each call costs about 0.3–0.5 s (Python start-up).
    pub fn samba_tool(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.samba_tool_bin)
            .args(args)
            .arg(format!("--configfile={}", path_text(&self.smb_conf)?))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.samba_tool_bin.display()))?;
        if !out.status.success() {
            bail!(
                "samba-tool {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end(),
                String::from_utf8_lossy(&out.stdout).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates an enabled user `CN=<sam>` in `ou_dn` (default `OU=Staff`) over LDAPS as
    /// Administrator, with the UPN `<sam>@corp.test`, `mail` if given, and `password` (which must
    /// satisfy the domain policy). Returns its DN. The DC is shared by every test of a process,
    /// so tests make their own users with names of their own.
    pub async fn add_user(
        &self,
        sam: &str,
        ou_dn: Option<&str>,
        mail: Option<&str>,
        password: &str,
    ) -> anyhow::Result<String> {
        let dn = format!("CN={},{}", ldap3::dn_escape(sam), ou_dn.unwrap_or(&self.staff_dn));
        let mut ldap = self.admin_connection().await?;
        let added = add_user_entry(&mut ldap, &dn, sam, mail, password).await;
        let _ = ldap.unbind().await;
        added?;
        Ok(dn)
    }

    /// Adds `user_dn` to the group `group_dn` (as Administrator).
    pub async fn add_to_group(&self, user_dn: &str, group_dn: &str) -> anyhow::Result<()> {
        let mut ldap = self.admin_connection().await?;
        let added = add_member(&mut ldap, user_dn, group_dn).await;
        let _ = ldap.unbind().await;
        added
    }

    /// Adds an organizational unit `OU=<name>` below `OU=Staff` (so inside svc-reset's
    /// delegation) as Administrator, and returns its DN: a scope of a test's own.
    pub async fn add_ou(&self, name: &str) -> anyhow::Result<String> {
        let dn = format!("OU={},{}", ldap3::dn_escape(name), self.staff_dn);
        let mut ldap = self.admin_connection().await?;
        let added = ldap
            .with_timeout(LDAP_TIMEOUT)
            .add(&dn, vec![("objectClass", HashSet::from(["organizationalUnit"]))])
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.success().map_err(anyhow::Error::from));
        let _ = ldap.unbind().await;
        added.with_context(|| format!("adding {dn}"))?;
        Ok(dn)
    }

    /// Adds another service account `CN=<sam>,CN=Users` delegated on `OU=Staff` with `rights`
    /// only, and returns its DN and password: what a missing right looks like, without touching
    /// svc-reset, which other tests rely on. Its ACEs stay on the OU, harmless to others.
    pub async fn add_service_account(&self, sam: &str, rights: &[Delegated]) -> anyhow::Result<(String, SecretString)> {
        let dn = format!("CN={},{USERS_DN}", ldap3::dn_escape(sam));
        let password = random_password();
        let mut ldap = self.admin_connection().await?;
        let added = async {
            add_user_entry(&mut ldap, &dn, sam, None, password.expose_secret()).await?;
            read_sid(&mut ldap, &dn).await
        }
        .await;
        let _ = ldap.unbind().await;
        let sid = added?;
        // `dsacl set` reads the OU's security descriptor and writes it back with the new entries:
        // two at once (tests sharing the DC) would lose one's. One at a time in this process.
        static DELEGATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = DELEGATING.lock().unwrap_or_else(|e| e.into_inner());
        self.samba_tool(&[
            "dsacl",
            "set",
            &format!("--objectdn={STAFF_DN}"),
            "--action=allow",
            &delegation_sddl_of(&sid, rights),
        ])
        .with_context(|| format!("delegating {rights:?} on OU=Staff to {sam}"))?;
        Ok((dn, password))
    }

    /// A directory configuration for passback's agent that uses this DC through `svc-reset`,
    /// with all of `OU=Staff` in scope.
    pub fn directory_config(&self, id: &str) -> crate::config::DirectoryConfig {
        let service = (self.service_dn.clone(), self.service_password.clone());
        let ldaps = (self.url.clone(), self.ca_file.clone());
        super::process::directory_config(id, crate::config::DirectoryKind::Ad, ldaps, service, &self.staff_dn)
    }

    fn wait_until_listening(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, LDAPS_PORT));
        let log_file = self.dir.join("samba.log");
        loop {
            if let Some(status) = self.process.exited().context("watching samba")? {
                let tail = log_tail(&log_file);
                if tail.contains("ADDRESS_ALREADY_ASSOCIATED") {
                    bail!("another Samba DC is running: samba could not listen on 127.0.0.1:389/636; end of its log:\n{tail}");
                }
                bail!("samba exited at start ({status}); end of its log:\n{tail}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "samba did not accept connections on {addr} within {} s; end of its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    log_tail(&log_file)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets the domain policy and adds `OU=Staff`, the people and the service account over LDAPS
    /// (milliseconds, where each `samba-tool` call would cost about 0.4 s). Returns the service
    /// account's SID, for the delegation. Runs on a thread of its own with its own runtime, so
    /// that `start` works both inside and outside an async context.
    fn seed_over_ldap(&self, deadline: Instant) -> anyhow::Result<String> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building a runtime for seeding")?;
                    runtime.block_on(self.seed(deadline))
                })
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the seeding thread panicked")))
        })
    }

    async fn seed(&self, deadline: Instant) -> anyhow::Result<String> {
        // The port answers a moment before TLS and the database are ready to serve binds.
        let mut ldap = loop {
            match self.admin_connection().await {
                Ok(ldap) => break ldap,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "samba did not answer an LDAPS bind within {} s; end of its log:\n{}",
                        READY_TIMEOUT.as_secs(),
                        log_tail(&self.dir.join("samba.log"))
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let seeded = seed_entries(&mut ldap, &self.service_dn, &self.service_password).await;
        let _ = ldap.unbind().await;
        seeded
    }

    async fn admin_connection(&self) -> anyhow::Result<Ldap> {
        connect(&self.url, &self.ca_file, &self.admin_dn, &self.admin_password).await
    }
}

#[cfg(test)]
mod tests;
