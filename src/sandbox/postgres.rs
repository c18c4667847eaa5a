//! A throwaway PostgreSQL cluster on 127.0.0.1, for the tests and the bench: `initdb` into a
//! folder of the caller's, then `postgres` in the foreground on a free port, with password
//! (SCRAM) authentication for one superuser. No system service is touched.
//!
//! PostgreSQL refuses to run as root: run as root, the cluster's folder is given to the
//! `postgres` account that Debian's package creates, and both programs run as it.

use super::process::{free_port, listens_on, log_outputs, log_tail_since, random_password, stop_child_with, Server};
use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HINT: &str = "Install PostgreSQL's server, e.g. on Debian: apt-get install -y postgresql \
                    (no running service is needed: the sandbox starts its own cluster)";
/// The superuser the sandbox creates.
const USER: &str = "passback";
const START_ATTEMPTS: u32 = 3;
/// PostgreSQL's "fast" shutdown: SIGTERM's "smart" one waits for every client to leave.
const STOP_SIGNAL: &str = "INT";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster. Dropping it stops the server; the caller owns (and removes) `dir`.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://passback:…@127.0.0.1:PORT/postgres`: the superuser, on the database every
    /// cluster starts with.
    url: SecretString,
    pub port: u16,
    /// Where the cluster (`data/`) and `postgres.log` live.
    pub dir: PathBuf,
    pub process: Server,
}

impl Postgres {
    /// Creates the folder `dir` (which must not exist yet: run as root, it is given to the
    /// `postgres` account, and its parents must let that account through), a cluster in
    /// `dir/data`, and starts it; returns once it accepts connections.
    pub fn start(dir: &Path) -> anyhow::Result<Postgres> {
        Self::start_inner(dir, false)
    }

    /// [`Postgres::start`], for a cluster that a process shares and never drops (the tests'): the
    /// kernel stops the server when the thread that started it ends, so start it on a thread that
    /// lives as long as the process.
    pub fn start_tied_to_this_thread(dir: &Path) -> anyhow::Result<Postgres> {
        Self::start_inner(dir, true)
    }

    fn start_inner(dir: &Path, tied: bool) -> anyhow::Result<Postgres> {
        let bin = program_folder()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        // A folder of its own, made here: an existing one (or a link) is never given away.
        std::fs::create_dir(dir).with_context(|| format!("creating {} (it must not exist yet)", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let data = dir.join("data");
        let account = Account::current()?;
        let password = random_password();
        let password_file = dir.join("password");
        crate::files::write_private(&password_file, password.expose_secret().as_bytes())?;
        account.give(&dir)?;
        account.give(&password_file)?;

        let out = account
            .command(&bin.join("initdb"), false)
            .args(["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--username", USER])
            .arg(format!("--pwfile={}", password_file.display()))
            .arg("-D")
            .arg(&data)
            .output();
        std::fs::remove_file(&password_file).ok();
        let out = out.context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let log_file = dir.join("postgres.log");
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            // What this attempt logs: the log is appended to, attempt after attempt.
            let from = std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or(0);
            let mut child = spawn(account.command(&bin.join("postgres"), tied), &dir, &data, &log_file, port)?;
            match wait_until_listening(&mut child, port, &log_file, from) {
                Ok(()) => {
                    let url = format!("postgres://{USER}:{}@127.0.0.1:{port}/postgres", password.expose_secret());
                    let process = Server::stopped_by(child, STOP_SIGNAL);
                    return Ok(Postgres { url: url.into(), port, dir, process });
                }
                Err(e) => {
                    stop_child_with(&mut child, STOP_SIGNAL);
                    if !log_tail_since(&log_file, from).contains("could not bind") {
                        return Err(e);
                    }
                    // Someone took the port between our probe and the server's bind.
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
            .context(format!("PostgreSQL could not bind a port in {START_ATTEMPTS} attempts"))
    }

    /// The superuser's URL (it holds the password: never log it).
    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// Creates an empty database named `name` (lower-case letters, digits and `_`, starting with
    /// a letter or `_`, at most 63) and returns its URL: one per test, on one cluster.
    pub async fn database(&self, name: &str) -> anyhow::Result<SecretString> {
        use sqlx::Connection;
        let plain = |c: char| c.is_ascii_lowercase() || c == '_';
        let fits = name.len() <= 63 && name.starts_with(plain) && name.chars().all(|c| plain(c) || c.is_ascii_digit());
        anyhow::ensure!(fits, "{name:?} is not a database name the sandbox makes");
        let mut conn =
            sqlx::PgConnection::connect(self.url.expose_secret()).await.context("connecting to PostgreSQL")?;
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(&create).execute(&mut conn).await.with_context(|| format!("creating {name}"))?;
        conn.close().await.ok();
        let base = self.url.expose_secret();
        let at = base.rfind('/').context("the URL has no database")?;
        Ok(format!("{}/{name}", &base[..at]).into())
    }
}

/// Debian puts PostgreSQL's programs in `/usr/lib/postgresql/<version>/bin`; the newest there,
/// else the folder of `initdb` on PATH.
fn program_folder() -> anyhow::Result<PathBuf> {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok().map(|v| (v, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").is_file())
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin);
    match newest {
        Some(bin) => Ok(bin),
        None => {
            let initdb = super::process::find_program("initdb", HINT)?;
            Ok(initdb.parent().context("initdb's folder")?.to_path_buf())
        }
    }
}

/// Whom the cluster runs as: this process's own user, or `postgres` when this is root.
struct Account {
    /// (uid, gid) of `postgres` when running as root.
    postgres: Option<(u32, u32)>,
}

impl Account {
    fn current() -> anyhow::Result<Account> {
        if id(&["-u"], None)? != 0 {
            return Ok(Account { postgres: None });
        }
        let ids = (id(&["-u"], Some("postgres")), id(&["-g"], Some("postgres")));
        match ids {
            (Ok(uid), Ok(gid)) => Ok(Account { postgres: Some((uid, gid)) }),
            _ => bail!("running as root, PostgreSQL needs the `postgres` account to run as. {HINT}"),
        }
    }

    /// Makes `path` the account's (nothing to do unless this is root).
    fn give(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to postgres", path.display()))?;
        }
        Ok(())
    }

    /// `program`, to be run as the account: as root, through `setpriv`, which then becomes it
    /// (so the child is the program itself, and stopping it stops the server). `tied`, it is
    /// sent SIGINT (a fast shutdown) when the thread that started it ends.
    fn command(&self, program: &Path, tied: bool) -> Command {
        if self.postgres.is_none() && !tied {
            return Command::new(program);
        }
        let mut c = Command::new("setpriv");
        if let Some((uid, gid)) = self.postgres {
            c.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups");
        }
        if tied {
            c.arg(format!("--pdeathsig={STOP_SIGNAL}"));
        }
        c.arg(program);
        c
    }
}

/// `id <flag> [user]` as a number.
fn id(flags: &[&str], user: Option<&str>) -> anyhow::Result<u32> {
    let out = Command::new("id").args(flags).args(user).output().context("running id")?;
    anyhow::ensure!(out.status.success(), "id {flags:?} {user:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn spawn(mut postgres: Command, dir: &Path, data: &Path, log_file: &Path, port: u16) -> anyhow::Result<Child> {
    let (log, log_err) = log_outputs(log_file)?;
    postgres
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        // Its socket in the cluster's own folder (not /var/run/postgresql, which may not exist).
        .arg("-k")
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .context("starting postgres")
}

fn wait_until_listening(child: &mut Child, port: u16, log_file: &Path, from: u64) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("watching PostgreSQL")? {
            bail!("PostgreSQL exited at start ({status}); its log:\n{}", log_tail_since(log_file, from));
        }
        // Its own socket, not merely an answer on the port: another process may hold it.
        if log_tail_since(log_file, from).contains("ready to accept connections")
            && listens_on(child.id(), port)
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "PostgreSQL did not accept connections on {addr} within {} s; its log:\n{}",
                READY_TIMEOUT.as_secs(),
                log_tail_since(log_file, from)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
