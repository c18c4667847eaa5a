//! What the sandbox's servers share: finding their programs, reading the end of their logs,
//! stopping them, passwords for their accounts, and LDAPS connections to them.

use anyhow::{bail, Context};
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
const LDAP_TIMEOUT: Duration = Duration::from_secs(10);

/// `name` on PATH or in the usual system folders; else an error that says how to install it.
pub(crate) fn find_program(name: &str, install_hint: &str) -> anyhow::Result<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback =
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin"].iter().map(|d| Path::new(d).join(name));
    from_path
        .into_iter()
        .chain(fallback)
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("`{name}` was not found on PATH nor in /usr/sbin or /usr/bin. {install_hint}"))
}

/// The last few kilobytes of a log, for error messages.
pub(crate) fn log_tail(log_file: &Path) -> String {
    log_tail_since(log_file, 0)
}

/// [`log_tail`], of only what the log gained after its first `from` bytes (a server started
/// again appends to the log of the one before).
pub(crate) fn log_tail_since(log_file: &Path, from: u64) -> String {
    const TAIL: u64 = 4000;
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log_file) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL).max(from)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    if text.trim().is_empty() {
        "(empty)".into()
    } else {
        text
    }
}

/// A port of 127.0.0.1 that was free a moment ago. The server binds it itself, so another
/// process may take it first: callers try again on another.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr().context("reading the probe port")?.port())
}

/// Whether process `pid` itself listens on TCP `port` (its open sockets against the kernel's
/// table of listening ones). A connection to the port proves less: between the probe for a free
/// port and the server's own bind, another process may take the port, and would answer.
pub fn listens_on(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let listening = u16::from_str_radix(local_port, 16).ok()? == port && fields.get(3)? == &LISTEN;
                    listening.then(|| fields.get(9).map(|i| i.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|target| {
        let target = target.to_string_lossy();
        inodes.iter().any(|inode| target == format!("socket:[{inode}]"))
    })
}

/// A server's standard output and error, both appended to `log_file`.
pub(crate) fn log_outputs(log_file: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("opening {}", log_file.display()))?;
    let log_err = log.try_clone().context("duplicating the log handle")?;
    Ok((log.into(), log_err.into()))
}

/// A server process the sandbox started: stopped (SIGTERM, then SIGKILL if it lingers) and
/// waited for once, when asked or when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    stopped: bool,
    /// The signal that asks it to stop.
    stop_signal: &'static str,
}

impl Server {
    pub fn new(child: Child) -> Self {
        Server { child, stopped: false, stop_signal: "TERM" }
    }

    /// A server that `signal` (say, `INT`) stops, not SIGTERM.
    pub(crate) fn stopped_by(child: Child, signal: &'static str) -> Self {
        Server { child, stopped: false, stop_signal: signal }
    }

    /// Its process id, e.g. to tell a person how to stop a demo by hand.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if !self.stopped {
            stop_child_with(&mut self.child, self.stop_signal);
            self.stopped = true;
        }
    }

    /// How it ended, if it has.
    pub(crate) fn exited(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        let status = self.child.try_wait()?;
        self.stopped |= status.is_some();
        Ok(status)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM (so the server closes its databases; std only offers SIGKILL, hence `kill`), then
/// SIGKILL if it is still there after the grace period.
pub(crate) fn stop_child(child: &mut Child) {
    stop_child_with(child, "TERM");
}

/// [`stop_child`] with `signal` (a name `kill` knows) in place of SIGTERM.
pub(crate) fn stop_child_with(child: &mut Child, signal: &str) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let termed = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if termed {
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A random 24-character password with upper case, lower case and digits (enough for AD's
/// complexity rule too).
pub(crate) fn random_password() -> SecretString {
    loop {
        let pw: String = OsRng.sample_iter(&Alphanumeric).take(24).map(char::from).collect();
        let classes = [char::is_ascii_uppercase, char::is_ascii_lowercase, char::is_ascii_digit];
        if classes.iter().all(|class| pw.chars().any(|c| class(&c))) {
            return SecretString::from(pw);
        }
    }
}

/// A connection over LDAPS bound as `dn`, with the bind's result code.
pub(crate) async fn connect_as(
    url: &str,
    ca_file: &Path,
    dn: &str,
    password: &SecretString,
) -> anyhow::Result<(ldap3::Ldap, u32)> {
    if !url.starts_with("ldaps://") {
        bail!("only ldaps:// URLs are used here");
    }
    crate::tls::install_crypto_provider();
    let settings = ldap3::LdapConnSettings::new()
        .set_config(crate::tls::client_config(Some(ca_file))?)
        .set_conn_timeout(LDAP_TIMEOUT);
    let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, url).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "sandbox LDAP connection ended");
        }
    });
    let result = ldap.with_timeout(LDAP_TIMEOUT).simple_bind(dn, password.expose_secret()).await?;
    Ok((ldap, result.rc))
}

/// Whether `password` binds as `dn` over LDAPS: how tests prove a new password works.
pub async fn bind_works(url: &str, ca_file: &Path, dn: &str, password: &SecretString) -> bool {
    match connect_as(url, ca_file, dn, password).await {
        Ok((mut ldap, rc)) => {
            let _ = ldap.unbind().await;
            rc == 0
        }
        Err(e) => {
            tracing::debug!(%url, %dn, error = %e, "sandbox bind failed");
            false
        }
    }
}

/// The agent's configuration of a sandbox directory: LDAPS to `url` trusting `ca_file`, bound as
/// the service account, with everyone below `base_dn` in scope and the directory's own defaults.
pub(crate) fn directory_config(
    id: &str,
    kind: crate::config::DirectoryKind,
    (url, ca_file): (String, PathBuf),
    (bind_dn, bind_password): (String, SecretString),
    base_dn: &str,
) -> crate::config::DirectoryConfig {
    crate::config::DirectoryConfig {
        id: id.to_string(),
        kind,
        url,
        starttls: false,
        ca_file: Some(ca_file),
        bind_dn,
        bind_password: Some(bind_password),
        bind_password_file: None,
        base_dns: vec![base_dn.to_string()],
        user_filter: None,
        policy_dn: None,
        history_on_reset: None,
        protected_groups: Vec::new(),
        protected_filter: None,
        pool_size: 2,
        timeout_secs: 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_counts_as_listened_on_only_by_the_process_that_holds_it() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        // Another process does not hold it (pid 1 is never this test).
        assert!(!listens_on(1, port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port), "once closed, nobody does");
    }
}
