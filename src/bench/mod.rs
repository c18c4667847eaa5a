//! `passback bench`: measures what passback adds to the directory's own work, and proves under
//! load that every accepted password landed exactly once. Not part of the tests; it asserts no
//! timings, it prints them (and writes them as JSON under `target/bench/`).
//!
//! One run starts everything on 127.0.0.1 in a folder of its own: OpenLDAP with ppolicy and a
//! few hundred people, an SMTP sink, `passback serve` and `passback agent` as separate processes
//! (so their memory is their own), over real TLS.

mod breached;
mod history;
mod latency;
mod load;

use crate::config::DirectoryConfig;
use crate::mail::sink::Mailbox;
use crate::sandbox::{Slapd, TestCa};
use crate::store::Stmt;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use breached::run as breached;
pub use latency::run as latency;
pub use load::run as load;

pub const DIRECTORY_ID: &str = "example";
/// The monitoring bearer token of the bench's portal (`/healthz/relay`, `/metrics`).
pub const MONITOR_TOKEN: &str = "bench-monitoring-token";

/// The directory a run writes into.
pub enum BenchDirectory {
    OpenLdap(Slapd),
    Ad(crate::sandbox::SambaDc),
}

impl BenchDirectory {
    pub fn pid(&self) -> u32 {
        match self {
            BenchDirectory::OpenLdap(d) => d.process.pid(),
            BenchDirectory::Ad(d) => d.process.pid(),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            BenchDirectory::OpenLdap(d) => &d.url,
            BenchDirectory::Ad(d) => &d.url,
        }
    }

    pub fn user_dn(&self, uid: &str) -> String {
        match self {
            BenchDirectory::OpenLdap(d) => d.user_dn(uid),
            BenchDirectory::Ad(d) => d.user_dn(uid),
        }
    }

    /// Everyone's password at the start.
    pub fn initial_password(&self) -> &'static str {
        match self {
            BenchDirectory::OpenLdap(_) => crate::sandbox::INITIAL_USER_PASSWORD,
            BenchDirectory::Ad(_) => crate::sandbox::INITIAL_AD_PASSWORD,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            BenchDirectory::OpenLdap(_) => "OpenLDAP",
            BenchDirectory::Ad(_) => "Samba AD DC",
        }
    }

    fn stop(&mut self) {
        match self {
            BenchDirectory::OpenLdap(d) => d.process.stop(),
            BenchDirectory::Ad(d) => d.process.stop(),
        }
    }
}

/// Everything a run needs, started and enrolled; stopped when dropped.
pub struct Rig {
    pub dir: PathBuf,
    pub ca: TestCa,
    pub server: BenchDirectory,
    pub mailbox: Mailbox,
    /// Where browsers and agents go: the one instance, or the balancer in front of several.
    pub url: String,
    /// Behind locks of their own: a process is killed while browsers use the rest of the rig.
    pub instances: std::sync::Mutex<Vec<Instance>>,
    pub agents: std::sync::Mutex<Vec<AgentProcess>>,
    /// Spreads connections over the instances, when there are several; and one per agent that
    /// prefers an instance of its own, so that agents are spread over the instances too (as
    /// agents at different sites, each with its nearest balancer, would be). Kept to keep them
    /// running.
    _balancers: Vec<crate::sandbox::Balancer>,
    /// The bench's people: (uid, e-mail, anchor).
    pub people: Vec<Person>,
    pub directory: DirectoryConfig,
    /// The portal's database (its address holds its password on PostgreSQL).
    pub database_url: String,
    /// The portal's PostgreSQL, when the run is on it (stopped after the portal).
    pub postgres: Option<crate::sandbox::Postgres>,
}

/// One `passback serve` process of a run.
pub struct Instance {
    pub process: Child,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
}

/// One `passback agent` process of a run.
pub struct AgentProcess {
    pub process: Child,
    pub state_file: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

/// How many of each process a run starts.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub instances: usize,
    pub agents: usize,
}

impl Shape {
    pub const ONE: Shape = Shape { instances: 1, agents: 1 };
}

/// Which database the bench's portal keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDatabase {
    /// The embedded SQLite file, the default.
    Sqlite,
    /// A PostgreSQL cluster the bench starts in its folder.
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub uid: String,
    pub email: String,
    pub anchor: String,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let agents = self.agents.get_mut().unwrap_or_else(|e| e.into_inner());
        let instances = self.instances.get_mut().unwrap_or_else(|e| e.into_inner());
        let agents = agents.iter_mut().map(|a| &mut a.process);
        for child in agents.chain(instances.iter_mut().map(|i| &mut i.process)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.server.stop();
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Rig {
    /// Starts the directory (Samba AD with `ad`, else OpenLDAP) with `people` people, the portal
    /// and the agent, and waits until the agent is alive and everyone is synced. The portal's
    /// database starts with `history` rows in each table that grows with use.
    pub async fn start(
        dir: &Path,
        people: usize,
        ad: bool,
        history: u64,
        database: BenchDatabase,
        shape: Shape,
    ) -> anyhow::Result<Rig> {
        anyhow::ensure!(
            history == 0 || database == BenchDatabase::Sqlite,
            "--history fills SQLite's tables: not with --database postgres"
        );
        anyhow::ensure!(
            shape.instances == 1 || database == BenchDatabase::Postgres,
            "several instances share a PostgreSQL database: --database postgres"
        );
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let ca = TestCa::create(&dir.join("tls"))?;
        let server = if ad {
            let dc = crate::sandbox::SambaDc::start(&dir.join("ad"), &ca)?;
            eprintln!("bench: adding {people} people to the Samba AD DC…");
            for i in 0..people {
                let (sam, mail) = (format!("bench{i}"), format!("bench{i}@example.org"));
                dc.add_user(&sam, None, Some(&mail), crate::sandbox::INITIAL_AD_PASSWORD).await?;
            }
            BenchDirectory::Ad(dc)
        } else {
            let slapd = Slapd::start(&dir.join("ldap"), &ca)?;
            eprintln!("bench: adding {people} people to OpenLDAP…");
            for i in 0..people {
                slapd.add_person(&format!("bench{i}"), Some(&format!("bench{i}@example.org"))).await?;
            }
            BenchDirectory::OpenLdap(slapd)
        };
        let (smtp, mailbox) = crate::mail::sink::start(0).await?;

        // The portal's configuration: limits out of the way (one client address does all the
        // work here), no proof of work and no minimum answer time, so only the path is measured.
        let ports =
            (0..shape.instances).map(|_| crate::sandbox::process::free_port()).collect::<Result<Vec<_>, _>>()?;
        let balancer = if shape.instances > 1 {
            let backends = ports.iter().map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p))).collect();
            Some(crate::sandbox::Balancer::round_robin(backends).await?)
        } else {
            None
        };
        let url = format!("https://localhost:{}", balancer.as_ref().map_or(ports[0], |b| b.port));
        let mut balancers: Vec<_> = balancer.into_iter().collect();
        let key_file = dir.join("data.key");
        crate::files::write_private(&key_file, crate::store::DataKey::generate_base64().as_bytes())?;
        let postgres = match database {
            BenchDatabase::Sqlite => None,
            BenchDatabase::Postgres => Some(crate::sandbox::Postgres::start(&dir.join("postgres"))?),
        };
        let db_url = match &postgres {
            Some(pg) => secrecy::ExposeSecret::expose_secret(&pg.database("passback").await?).to_string(),
            None => format!("sqlite://{}?mode=rwc", dir.join("passback.db").display()),
        };
        let portal_toml = format!(
            "[server]\nlisten = \"127.0.0.1:@PORT@\"\npublic_url = {url}\ntls_cert_file = {cert}\ntls_key_file = {key}\n\
             metrics_token = {monitor}\n\
             [database]\nurl = {db}\nmax_connections = 8\n[secrets]\ndata_key_file = {data_key}\n\
             [mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp}\nsecurity = \"none\"\nfrom = \"bench <bench@example.org>\"\n\
             [reset]\ncodes_per_hour = 1000000\nchange_attempts_per_hour = 1000000\nchange_attempts_per_day = 1000000\n\
             change_min_response_ms = 0\n\
             [gates]\nfailures_per_hour = 1000000\nresets_per_hour = 1000000\n\
             [anti_automation]\npow_bits = 0\nper_address_per_minute = 100000000\nper_account_per_hour = 100000000\n\
             failures_per_address_per_hour = 100000000\n",
            url = quote(&url),
            cert = quote(&ca.cert_file.display().to_string()),
            key = quote(&ca.key_file.display().to_string()),
            db = quote(&db_url),
            data_key = quote(&key_file.display().to_string()),
            smtp = smtp.port(),
            monitor = quote(MONITOR_TOKEN),
        );
        let mut instances = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let config = dir.join(format!("portal-{}.toml", i + 1));
            // Private: on PostgreSQL, the database's address holds its password.
            crate::files::write_private(&config, portal_toml.replace("@PORT@", &port.to_string()).as_bytes())?;
            instances.push((*port, config, dir.join(format!("serve-{}.log", i + 1))));
        }

        // The enrollment tokens go into the database before the portal starts.
        let db = crate::store::connect(&db_url, 1).await?;
        let now = crate::Clock::default().now();
        let mut tokens = Vec::new();
        for i in 0..shape.agents {
            let name = format!("bench-{}", i + 1);
            tokens.push(crate::server::create_enrollment_token(&db, &name, &[DIRECTORY_ID.into()], 10, now).await?);
        }
        if history > 0 {
            history::preload(&db, history, now).await?;
        }
        db.close().await;

        let mut started = Vec::new();
        for (port, config, log) in instances {
            let process = spawn_serve(&config, &log)?;
            started.push(Instance { process, port, config, log });
        }
        let client = client(&ca)?;
        for instance in &started {
            let url = format!("https://localhost:{}/healthz", instance.port);
            wait_for(Duration::from_secs(30), "the portal to answer", || async {
                client.get(&url).send().await.is_ok_and(|r| r.status().is_success())
            })
            .await?;
        }

        let directory = match &server {
            BenchDirectory::OpenLdap(d) => d.directory_config(DIRECTORY_ID),
            BenchDirectory::Ad(d) => d.directory_config(DIRECTORY_ID),
        };
        let mut agents = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let folder = dir.join(format!("agent-{}", i + 1));
            std::fs::create_dir_all(&folder)?;
            let mut agent_cfg = crate::demo::agent_config(&folder, &ca, &directory);
            agent_cfg.max_concurrent = 64;
            // The agent's safety limit on resets would refuse a benchmark's thousands a minute.
            agent_cfg.resets_per_minute = 1_000_000;
            if let Some(d) = agent_cfg.directories.first_mut() {
                d.pool_size = 16;
            }
            let token = token.as_str().to_string().into();
            crate::agent::enroll::enroll(&url, &token, Some(&ca.ca_file), &agent_cfg.state_file, now).await?;
            if ports.len() > 1 {
                let mut backends: Vec<_> =
                    ports.iter().map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p))).collect();
                backends.rotate_left(i % ports.len());
                let own = crate::sandbox::Balancer::start(backends).await?;
                let mut state = crate::agent::state::AgentState::load(&agent_cfg.state_file)?;
                state.portal_url = format!("https://localhost:{}", own.port);
                state.save(&agent_cfg.state_file)?;
                balancers.push(own);
            }
            let config = crate::demo::write_agent_files(&folder, &agent_cfg)?;
            let log = folder.join("agent.log");
            let process = spawn_agent(&config, &log)?;
            agents.push(AgentProcess { process, state_file: agent_cfg.state_file.clone(), config, log });
        }
        let mut rig = Rig {
            dir: dir.clone(),
            ca,
            server,
            mailbox,
            url,
            instances: started.into(),
            agents: agents.into(),
            _balancers: balancers,
            people: Vec::new(),
            database_url: db_url.clone(),
            postgres,
            directory,
        };
        rig.wait_for_agents().await?;

        // Everyone synced: their anchors, as the portal knows them.
        let db = crate::store::connect(&db_url, 1).await?;
        wait_for(Duration::from_secs(60), "the people to be synced", || async {
            Stmt::new("SELECT COUNT(*) FROM directory_users WHERE username LIKE 'bench%'")
                .scalar_one::<i64>(&db)
                .await
                .is_ok_and(|n| n as usize >= people)
        })
        .await?;
        let rows: Vec<(String, String)> =
            Stmt::new("SELECT username, anchor FROM directory_users WHERE username LIKE 'bench%'")
                .fetch_all(&db)
                .await?;
        db.close().await;
        let mut found: Vec<Person> =
            rows.into_iter().map(|(uid, anchor)| Person { email: format!("{uid}@example.org"), uid, anchor }).collect();
        found.sort_by_key(|p| p.uid.trim_start_matches("bench").parse::<usize>().unwrap_or(usize::MAX));
        rig.people = found;
        Ok(rig)
    }

    /// How many mails went to `address` so far.
    pub fn mails_to(&self, address: &str) -> usize {
        self.mailbox.all().iter().filter(|m| m.to.iter().any(|t| t == address)).count()
    }

    /// The code in the first mail to `address` after the first `before` ones, waiting up to 5 s.
    pub async fn code_for(&self, address: &str, before: usize) -> Option<String> {
        for _ in 0..500 {
            let mails: Vec<_> = self.mailbox.all().into_iter().filter(|m| m.to.iter().any(|t| t == address)).collect();
            // A notice of an earlier act may come in between: the code is in the first mail that
            // has one.
            if let Some(code) = mails.iter().skip(before).find_map(|m| m.code_after("verification code:", 8)) {
                return Some(code);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Waits until a sealed no-op goes through the relay.
    pub async fn wait_for_agent(&self) -> anyhow::Result<()> {
        let client = client(&self.ca)?;
        let url = format!("{}/healthz/relay?directory={DIRECTORY_ID}", self.url);
        wait_for(Duration::from_secs(60), "the agent to be alive", || async {
            client.get(&url).bearer_auth(MONITOR_TOKEN).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await
    }

    /// Waits until every instance counts every agent alive (each knows of those connected to
    /// another only once that one wrote them into the database).
    pub async fn wait_for_agents(&self) -> anyhow::Result<()> {
        let client = client(&self.ca)?;
        let agents = lock(&self.agents).len();
        let ports: Vec<u16> = lock(&self.instances).iter().map(|i| i.port).collect();
        for port in ports {
            let url = format!("https://localhost:{port}/admin/health.json");
            wait_for(Duration::from_secs(60), "every instance to count every agent alive", || async {
                let health = async { client.get(&url).bearer_auth(MONITOR_TOKEN).send().await?.json().await };
                let health: serde_json::Value = health.await.unwrap_or_default();
                let alive = health["agents"].as_array().map_or(0, |a| a.iter().filter(|a| a["alive"] == true).count());
                alive == agents
            })
            .await?;
        }
        Ok(())
    }

    /// Kills agent `i` at once (SIGKILL: nothing is finished), as a crash would.
    pub fn kill_agent(&self, i: usize) {
        if let Some(a) = lock(&self.agents).get_mut(i) {
            let _ = a.process.kill();
            let _ = a.process.wait();
        }
    }

    pub fn restart_agent(&self, i: usize) -> anyhow::Result<()> {
        if let Some(a) = lock(&self.agents).get_mut(i) {
            a.process = spawn_agent(&a.config, &a.log)?;
        }
        Ok(())
    }

    /// Kills instance `i` at once (SIGKILL), as a crash would.
    pub fn kill_instance(&self, i: usize) {
        if let Some(one) = lock(&self.instances).get_mut(i) {
            let _ = one.process.kill();
            let _ = one.process.wait();
        }
    }

    pub fn restart_instance(&self, i: usize) -> anyhow::Result<()> {
        if let Some(one) = lock(&self.instances).get_mut(i) {
            one.process = spawn_serve(&one.config, &one.log)?;
        }
        Ok(())
    }

    /// The first instance's process id (the one measured when there is one).
    pub fn serve_pid(&self) -> u32 {
        lock(&self.instances)[0].process.id()
    }

    /// The first agent's process id.
    pub fn agent_pid(&self) -> u32 {
        lock(&self.agents)[0].process.id()
    }

    /// Resident memory of a process now and at its peak, in MiB (from /proc).
    pub fn memory(pid: u32) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// CPU time a process has used so far (user + system), from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    cpu_time_of(&[pid])
}

/// The CPU time `pid` and the processes it started spent (PostgreSQL does its work in one
/// process per connection, under the one the bench started).
pub fn cpu_time_with_children(pid: u32) -> Duration {
    cpu_time_of(&with_children(pid))
}

fn cpu_time_of(pids: &[u32]) -> Duration {
    let ticks: u64 = pids.iter().map(|p| stat_field(*p, 11) + stat_field(*p, 12)).sum();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis(ticks * 1000 / hz)
}

/// Field `i` of `/proc/<pid>/stat`, counted after the command name (which may hold spaces).
fn stat_field(pid: u32, i: usize) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().nth(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// `pid` and the processes it started that run now.
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(all) = std::fs::read_dir("/proc") {
        let children = all
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| stat_field(*p, 1) == u64::from(pid));
        pids.extend(children);
    }
    pids
}

/// Context switches (voluntary and not) of every thread a process has now, from /proc. Threads
/// that ended since are not counted, so a difference is a floor.
pub fn context_switches(pid: u32) -> u64 {
    thread_switches(pid)
}

/// [`context_switches`] of `pid` and the processes it started.
pub fn context_switches_with_children(pid: u32) -> u64 {
    with_children(pid).into_iter().map(thread_switches).sum()
}

fn thread_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}

fn spawn_agent(config: &Path, log: &Path) -> anyhow::Result<Child> {
    spawn("agent", config, log)
}

fn spawn_serve(config: &Path, log: &Path) -> anyhow::Result<Child> {
    spawn("serve", config, log).context("starting passback serve")
}

/// `passback <command> --config <config>`, logging warnings to `log`.
fn spawn(command: &str, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let file = || std::fs::OpenOptions::new().create(true).append(true).open(log);
    Ok(Command::new(std::env::current_exe()?)
        .args([command, "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file()?)
        .stderr(file()?)
        .spawn()?)
}

/// An HTTPS client that trusts the run's CA and keeps cookies (one per simulated browser).
pub fn client(ca: &TestCa) -> anyhow::Result<reqwest::Client> {
    let tls = (*crate::tls::client_config(Some(&ca.ca_file))?).clone();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .cookie_store(true)
        .timeout(Duration::from_secs(90))
        .build()?)
}

async fn wait_for<F, Fut>(limit: Duration, what: &str, mut ok: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("gave up waiting for {what} after {limit:?}")
}

/// The value of the hidden input `name` in a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// Where the figures go: `target/bench/`.
pub fn out_dir() -> PathBuf {
    PathBuf::from("target/bench")
}

/// Latency figures of one measurement, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub name: String,
    pub concurrency: usize,
    pub ops: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub ops_per_sec: f64,
    /// CPU time per operation, in milliseconds, by process: where the work goes.
    pub cpu_ms_per_op: std::collections::BTreeMap<String, f64>,
    /// Context switches per operation, by process (a floor: see [`context_switches`]).
    pub switches_per_op: std::collections::BTreeMap<String, f64>,
}

impl Stats {
    pub fn from(name: &str, concurrency: usize, mut lat: Vec<Duration>, errors: usize, wall: Duration) -> Stats {
        lat.sort();
        let pick = |q: f64| {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1000.0
        };
        Stats {
            name: name.into(),
            concurrency,
            ops: lat.len(),
            errors,
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            ops_per_sec: lat.len() as f64 / wall.as_secs_f64().max(1e-9),
            cpu_ms_per_op: Default::default(),
            switches_per_op: Default::default(),
        }
    }
}
