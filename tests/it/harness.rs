//! `spawn_app()`: each test gets its own slapd, SMTP sink, portal (in-process, HTTPS on a free
//! port, SQLite in a temporary folder) and an enrolled agent process, and a cookie-keeping client.

use passback::config::AgentConfig;
use passback::mail::sink::Mailbox;
use passback::relay::Hub;
use passback::sandbox::{Slapd, TestCa};
use passback::store::{Db, Stmt};
use secrecy::{ExposeSecret, SecretString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub const DIR_ID: &str = passback::demo::DIRECTORY_ID;
const INITIAL_PASSWORD: &str = passback::sandbox::INITIAL_USER_PASSWORD;
/// What the tests' Prometheus presents at `/metrics`.
pub const METRICS_TOKEN: &str = "scrape-token-for-tests";

/// Everything the portal logged during the tests of this binary, to look for leaked secrets.
pub fn portal_log() -> String {
    String::from_utf8_lossy(&LOG.get_or_init(Default::default).lock().unwrap()).to_string()
}

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_once() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        passback::tls::install_crypto_provider();
        let buf = LOG.get_or_init(Default::default).clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,sqlx=warn,hyper=info,h2=info,rustls=info,tungstenite=info,tokio_tungstenite=info")
            .with_ansi(false)
            .with_writer(move || LogWriter(buf.clone()))
            .try_init();
    });
}

/// Which database the portals of this run use: SQLite files, or with
/// `PASSBACK_TEST_DATABASE=postgres`, a database each on one PostgreSQL cluster that the tests
/// start (and the kernel stops when they end).
pub fn shared_postgres() -> Option<&'static passback::sandbox::Postgres> {
    match std::env::var("PASSBACK_TEST_DATABASE").as_deref() {
        Ok("postgres") => Some(postgres_cluster()),
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("PASSBACK_TEST_DATABASE={other}: sqlite or postgres"),
    }
}

/// The tests' PostgreSQL cluster, started by the first test that asks for it.
pub fn postgres_cluster() -> &'static passback::sandbox::Postgres {
    static PG: OnceLock<passback::sandbox::Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("passback-test-pg-{}", uuid::Uuid::new_v4().simple()));
        // The cluster lives as long as the thread that starts it: one that never ends.
        let (started, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            started.send(passback::sandbox::Postgres::start_tied_to_this_thread(&dir)).unwrap();
            loop {
                std::thread::park();
            }
        });
        got.recv().unwrap().expect("starting PostgreSQL for the tests")
    })
}

/// A new, empty database for one portal: on the tests' PostgreSQL cluster (with its name, to
/// drop at the end) when this run is on PostgreSQL or `postgres`, else a SQLite file in `dir`.
pub async fn database_url(dir: &Path, postgres: bool) -> (String, Option<String>) {
    match shared_postgres().or_else(|| postgres.then(postgres_cluster)) {
        Some(pg) => {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            (pg.database(&name).await.unwrap().expose_secret().to_string(), Some(name))
        }
        None => (format!("sqlite://{}?mode=rwc", dir.join("passback.db").display()), None),
    }
}

/// Drops a test's database from the shared cluster, whoever is still connected (from `Drop`:
/// on a thread of its own, which may block).
fn drop_database(name: String) {
    let pg = postgres_cluster();
    let dropped = std::thread::spawn(move || {
        use sqlx::Connection;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(pg.url().expose_secret()).await?;
            sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
            conn.close().await
        })
    })
    .join();
    if !matches!(dropped, Ok(Ok(()))) {
        eprintln!("the test database could not be dropped: {dropped:?}");
    }
}

pub struct Options {
    /// On PostgreSQL whatever the run's database (for several instances).
    pub postgres: bool,
    pub ping_interval_secs: u64,
    pub result_deadline_secs: u64,
    /// An access panel's origin: allowed as `return_to` and as a framing page.
    pub apps_origin: Option<&'static str>,
    /// How many different methods a reset needs (1 or 2).
    pub gates_required: u32,
    /// First steps per client address and minute.
    pub per_address_per_minute: u32,
    /// Believe `X-Forwarded-For` from 127.0.0.1, as behind a proxy.
    pub trusted_proxy: bool,
    /// Ask people to review their security info every this many days.
    pub reconfirm_days: u32,
    /// Identify steps per account and hour.
    pub per_account_per_hour: u32,
    /// Security questions enabled (they count only as a second method: set `gates_required: 2`).
    pub questions: bool,
    /// Failed verifications per address and hour, and everywhere before the portal is under attack.
    pub failures_per_address_per_hour: u32,
    pub global_failures_per_hour: u32,
    /// The portal's own password rules.
    pub password_policy: passback::config::PasswordPolicyConfig,
    /// Any other change to the gates' configuration, made last.
    pub gates: Option<fn(&mut passback::config::GatesConfig)>,
    /// Expiry reminders and the registration campaign; off unless a test asks (their mail
    /// would otherwise mix with what other tests count).
    pub reminders: Option<passback::config::RemindersConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            postgres: false,
            ping_interval_secs: 1,
            result_deadline_secs: 5,
            apps_origin: None,
            gates_required: 1,
            per_address_per_minute: 10_000,
            trusted_proxy: false,
            reconfirm_days: 0,
            per_account_per_hour: 20,
            questions: false,
            failures_per_address_per_hour: 10_000,
            global_failures_per_hour: 10_000,
            password_policy: Default::default(),
            gates: None,
            reminders: None,
        }
    }
}

/// The portal running in this process, stoppable and restartable on the same port.
pub struct Portal {
    pub cfg: passback::config::PortalConfig,
    clock: passback::Clock,
    pub port: u16,
    pub db: Db,
    pub hub: Arc<Hub>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Portal {
    async fn start(mut cfg: passback::config::PortalConfig, clock: passback::Clock) -> Portal {
        // The public URL names the port (a passkey is bound to its origin), so the port is chosen
        // first; another test may take it in the meantime, and then the next one is tried.
        let mut tries = 0;
        let app = loop {
            if cfg.server.listen.port() == 0 || tries > 0 {
                let port = passback::sandbox::free_port().unwrap();
                cfg.server.listen.set_port(port);
                cfg.server.public_url = format!("https://localhost:{port}");
            }
            let extras = passback::server::Extras { clock: clock.clone(), ..Default::default() };
            match passback::server::Application::build(cfg.clone(), extras).await {
                Ok(app) => break app,
                Err(e) if tries < 5 => {
                    tries += 1;
                    eprintln!("starting the portal on {}: {e:#}; another port", cfg.server.listen);
                }
                Err(e) => panic!("starting the portal: {e:#}"),
            }
        };
        let port = app.addr.port();
        cfg.server.listen = app.addr;
        let (db, hub) = (app.db.clone(), app.hub.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Portal { cfg, clock, port, db, hub, stop: Some(stop), task: Some(task) }
    }

    /// Writes this portal's configuration to `path`, as `passback serve` would read it (its
    /// database, keys and certificate), with `more` TOML after it.
    pub fn write_config(&self, path: &Path, more: &str) {
        passback::demo::write_serve_config(path, &self.cfg).unwrap();
        let mut text = std::fs::read_to_string(path).unwrap();
        text.push_str(more);
        std::fs::write(path, text).unwrap();
    }

    /// The portal's data key (to make staff accounts as `passback staff add` does).
    pub fn data_key(&self) -> passback::store::DataKey {
        passback::store::DataKey::from_config(&self.cfg.secrets).unwrap()
    }

    /// A mailer to the portal's mail server (the test's SMTP sink), as the command line makes one.
    pub fn mailer(&self) -> passback::mail::Mailer {
        passback::mail::Mailer::new(&self.cfg.mail).unwrap()
    }

    /// Another instance of this portal as a `passback serve` process of its own (to be killed;
    /// stopped when dropped): the same database, keys and certificate, on a port of its own;
    /// returns once it listens.
    pub async fn another_process(&self, dir: &Path) -> (passback::sandbox::Server, u16) {
        self.another_process_with(dir, &[]).await
    }

    /// [`Self::another_process`], with more environment variables (`PASSBACK__…` settings).
    pub async fn another_process_with(&self, dir: &Path, env: &[(&str, &str)]) -> (passback::sandbox::Server, u16) {
        let port = passback::sandbox::free_port().unwrap();
        let mut cfg = self.cfg.clone();
        cfg.server.listen.set_port(port);
        cfg.server.public_url = format!("https://localhost:{port}");
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("portal.toml");
        passback::demo::write_serve_config(&file, &cfg).unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let mut child = Command::new(passback_bin())
            .args(["serve", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        for _ in 0..300 {
            if passback::sandbox::listens_on(child.id(), port) {
                return (passback::sandbox::Server::new(child), port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the other instance did not start: {}", std::fs::read_to_string(dir.join("serve.log")).unwrap());
    }

    /// Another instance of this portal: the same configuration, database and public URL (as
    /// behind one load balancer), its own port.
    pub async fn another_instance(&self) -> Portal {
        let mut cfg = self.cfg.clone();
        cfg.server.listen.set_port(passback::sandbox::free_port().unwrap());
        Portal::start(cfg, self.clock.clone()).await
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Stops it gracefully (its agents' connections end).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await.expect("portal stopped").unwrap().unwrap();
        }
    }

    /// Shuts down gracefully and starts again on the same port with the same database.
    pub async fn restart(&mut self) {
        self.stop().await;
        *self = Portal::start(self.cfg.clone(), self.clock.clone()).await;
    }
}

pub struct TestApp {
    pub dir: PathBuf,
    pub ca: TestCa,
    pub slapd: Slapd,
    pub mailbox: Mailbox,
    pub url: String,
    pub db: Db,
    pub hub: Arc<Hub>,
    pub portal: Portal,
    /// The portal's clock: move it to reach expiries without waiting.
    pub clock: passback::Clock,
    pub agent_cfg: AgentConfig,
    pub agent_config_file: PathBuf,
    pub agent: Option<Child>,
    /// More directories, when a test adds them.
    pub more_directories: Vec<Slapd>,
    /// The portal's database on the shared PostgreSQL cluster, if it is there.
    pub pg_database: Option<String>,
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
}

pub fn passback_bin() -> &'static str {
    env!("CARGO_BIN_EXE_passback")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    init_once();
    let dir = std::env::temp_dir().join(format!("passback-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::create(&dir.join("tls")).unwrap();
    let slapd = Slapd::start(&dir.join("ldap"), &ca).unwrap();
    let (smtp, mailbox) = passback::mail::sink::start(0).await.unwrap();

    let mut cfg = passback::demo::portal_config(&dir, &ca, 0, smtp.port()).unwrap();
    let (url, pg_database) = database_url(&dir, opts.postgres).await;
    cfg.database.url = url;
    cfg.relay.ping_interval_secs = opts.ping_interval_secs;
    cfg.relay.result_deadline_secs = opts.result_deadline_secs;
    cfg.gates.required = opts.gates_required;
    if opts.questions {
        cfg.gates.methods.push(passback::config::GateMethod::Questions);
    }
    cfg.server.metrics_token = Some(METRICS_TOKEN.to_string().into());
    cfg.gates.reconfirm_days = opts.reconfirm_days;
    if let Some(change) = opts.gates {
        change(&mut cfg.gates);
    }
    // A light proof of work (the browser solves it at once), and a short wait without one, so
    // the tests that post forms without a browser stay quick.
    cfg.anti_automation.pow_bits = 8;
    cfg.anti_automation.no_script_delay_ms = 50;
    cfg.anti_automation.per_address_per_minute = opts.per_address_per_minute;
    cfg.anti_automation.per_account_per_hour = opts.per_account_per_hour;
    cfg.anti_automation.failures_per_address_per_hour = opts.failures_per_address_per_hour;
    cfg.anti_automation.global_failures_per_hour = opts.global_failures_per_hour;
    cfg.password_policy = opts.password_policy;
    cfg.reminders = opts.reminders.unwrap_or(passback::config::RemindersConfig {
        expiry_days: Vec::new(),
        expired_notice: false,
        campaign_days: 0,
        ..Default::default()
    });
    if opts.trusted_proxy {
        cfg.server.trusted_proxies = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    }
    if let Some(origin) = opts.apps_origin {
        cfg.server.allowed_return_origins = vec![origin.into()];
        cfg.server.frame_ancestors = vec![origin.into()];
        // The organisation's own sign-in page, where the done pages lead.
        cfg.server.done_url = Some(format!("{origin}/signin"));
    }
    let clock = passback::Clock::default();
    let portal = Portal::start(cfg, clock.clone()).await;
    let url = format!("https://localhost:{}", portal.port);

    let mut agent_cfg = passback::demo::agent_config(&dir, &ca, &slapd.directory_config(DIR_ID));
    agent_cfg.heartbeat_secs = 1;
    let agent_config_file = passback::demo::write_agent_files(&dir, &agent_cfg).unwrap();

    let tls = (*passback::tls::client_config(Some(&ca.ca_file)).unwrap()).clone();
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::limited(5))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let (db, hub) = (portal.db.clone(), portal.hub.clone());
    let mut app = TestApp {
        dir,
        ca,
        slapd,
        mailbox,
        url,
        db,
        hub,
        portal,
        clock,
        agent_cfg,
        agent_config_file,
        agent: None,
        more_directories: Vec::new(),
        pg_database,
        client,
        jar,
    };
    app.enroll_agent().await;
    app.start_agent().await;
    app
}

impl TestApp {
    pub fn agent_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(passback_bin());
        c.arg("agent").arg("--config").arg(&self.agent_config_file).args(args);
        c.env("RUST_LOG", "debug,rustls=info,tungstenite=info,tokio_tungstenite=info,hyper=info");
        c
    }

    pub async fn new_token(&self) -> String {
        self.token_for(DIR_ID).await
    }

    pub async fn token_for(&self, directory: &str) -> String {
        passback::server::create_enrollment_token(&self.db, "test-agent", &[directory.into()], 5, self.clock.now())
            .await
            .unwrap()
            .to_string()
    }

    /// Starts another slapd, seeded like the first, and has the agent serve it too as `id`.
    /// Returns the new directory's index in `more_directories`.
    pub async fn add_directory(&mut self, id: &str) -> usize {
        let slapd = Slapd::start(&self.dir.join(format!("ldap-{id}")), &self.ca).unwrap();
        self.serve_also(slapd.directory_config(id)).await;
        self.more_directories.push(slapd);
        self.more_directories.len() - 1
    }

    /// Restarts the agent with a changed configuration (same enrollment).
    pub async fn restart_agent_with(&mut self, change: impl FnOnce(&mut AgentConfig)) {
        self.relaunch_agent_with(change).await;
        self.wait_until_ready().await;
    }

    /// [`Self::restart_agent_with`], without waiting for the agent to serve its directories
    /// (for a configuration that keeps it from doing so).
    pub async fn relaunch_agent_with(&mut self, change: impl FnOnce(&mut AgentConfig)) {
        self.stop_agent();
        change(&mut self.agent_cfg);
        self.agent_config_file = passback::demo::write_agent_files(&self.dir, &self.agent_cfg).unwrap();
        self.launch_agent().await;
    }

    /// Has the agent serve one more directory: stops it, rewrites its configuration, and enrolls
    /// it again for all its directories. Start it again with `start_agent`.
    pub async fn serve_also(&mut self, directory: passback::config::DirectoryConfig) {
        self.stop_agent();
        self.agent_cfg.directories.push(directory);
        self.agent_config_file = passback::demo::write_agent_files(&self.dir, &self.agent_cfg).unwrap();
        std::fs::remove_file(&self.agent_cfg.state_file).unwrap();
        let ids: Vec<String> = self.agent_cfg.directories.iter().map(|d| d.id.clone()).collect();
        let token = passback::server::create_enrollment_token(&self.db, "test-agent", &ids, 5, self.clock.now())
            .await
            .unwrap()
            .to_string();
        let out = self.agent_command(&["enroll", "--portal", &self.url, "--token", &token]).output().unwrap();
        assert!(out.status.success(), "enroll failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    async fn enroll_agent(&mut self) {
        let token = self.new_token().await;
        let out = self.agent_command(&["enroll", "--portal", &self.url, "--token", &token]).output().unwrap();
        assert!(out.status.success(), "enroll failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn agent_log_file(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Starts the agent process and waits until the portal sees it alive and has its people.
    pub async fn start_agent(&mut self) {
        self.launch_agent().await;
        self.wait_until_ready().await;
    }

    /// Starts the agent process, once the previous one's connection is gone.
    async fn launch_agent(&mut self) {
        // A process stopped just before may still have its connection open: "alive" later must
        // be the new process's, so wait until the old one's is gone.
        if let Ok(state) = passback::agent::state::AgentState::load(&self.agent_cfg.state_file) {
            for _ in 0..200 {
                if !self.hub.connected_agents().contains(&state.agent_id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.agent_log_file()).unwrap();
        let child =
            self.agent_command(&[]).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        self.agent = Some(child);
    }

    /// Waits until the agent serves its directories and the portal has its people.
    async fn wait_until_ready(&self) {
        self.wait_until_alive(true).await;
        for _ in 0..100 {
            if !passback::store::users::find_by_login(&self.db, "alice").await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let portal: Vec<String> =
            portal_log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).map(String::from).collect();
        panic!(
            "the agent did not sync within 10 s; log:\n{}\nthe portals' warnings:\n{}",
            self.agent_log(),
            portal[portal.len().saturating_sub(30)..].join("\n")
        );
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.agent_log_file()).unwrap_or_default()
    }

    /// Waits until an agent serves directory `id`.
    pub async fn wait_until_alive_for(&self, id: &str) {
        let id = passback::domain::DirectoryId::parse(id).unwrap();
        for _ in 0..150 {
            if self.hub.is_alive(&id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no agent for {id}; agent log:\n{}", self.agent_log());
    }

    pub async fn wait_until_alive(&self, alive: bool) {
        let id = passback::domain::DirectoryId::parse(DIR_ID).unwrap();
        for _ in 0..150 {
            if self.hub.is_alive(&id) == alive {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("agent alive never became {alive}; agent log:\n{}", self.agent_log());
    }

    /// Enrolls and starts a second agent for the same directories, with its own state and log
    /// in `dir/<name>/`; returns its process and its agent id once it serves.
    pub async fn second_agent(&self, name: &str) -> (Child, String) {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = self.agent_cfg.clone();
        cfg.state_file = dir.join("agent.json");
        let config = passback::demo::write_agent_files(&dir, &cfg).unwrap();
        let token = self.new_token().await;
        let command = |args: &[&str]| {
            let mut c = Command::new(passback_bin());
            c.arg("agent").arg("--config").arg(&config).args(args);
            c.env("RUST_LOG", "debug,rustls=info,tungstenite=info,tokio_tungstenite=info,hyper=info");
            c
        };
        let out = command(&["enroll", "--portal", &self.url, "--token", &token]).output().unwrap();
        assert!(out.status.success(), "enroll failed: {}", String::from_utf8_lossy(&out.stderr));
        let id = passback::agent::state::AgentState::load(&cfg.state_file).unwrap().agent_id;
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let child = command(&[]).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let hub = self.hub.clone();
        until("the second agent to serve", async || hub.connected_agents().contains(&id) && hub.live_agents() == 2)
            .await;
        (child, id)
    }

    /// Sends a signal to the agent process (`KILL`, `STOP`, `CONT`).
    pub fn signal_agent(&self, sig: &str) {
        let pid = self.agent.as_ref().expect("agent running").id();
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} {pid}");
    }

    pub fn stop_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts the portal (graceful shutdown, then the same port and database).
    pub async fn restart_portal(&mut self) {
        self.portal.restart().await;
        self.db = self.portal.db.clone();
        self.hub = self.portal.hub.clone();
    }

    /// Another browser: its own cookies, the same trust in the test CA.
    pub fn new_client(&self) -> reqwest::Client {
        let tls = (*passback::tls::client_config(Some(&self.ca.ca_file)).unwrap()).clone();
        reqwest::Client::builder().use_preconfigured_tls(tls).cookie_store(true).build().unwrap()
    }

    /// The session cookie the client holds now.
    pub fn session_cookie(&self) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let header = self.jar.cookies(&self.url.parse().unwrap())?;
        header.to_str().unwrap().split("; ").find(|c| c.starts_with("__Host-passback=")).map(str::to_string)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.url)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.url)).form(form).send().await.unwrap()
    }

    /// `/metrics`, as the configured scraper reads it.
    pub async fn metrics(&self) -> String {
        let resp = self.client.get(format!("{}/metrics", self.url)).bearer_auth(METRICS_TOKEN).send().await.unwrap();
        resp.text().await.unwrap()
    }

    /// Posts a form on client `c` (another browser) and returns the page it leads to.
    pub async fn post_on(&self, c: &reqwest::Client, path: &str, form: &[(&str, &str)]) -> String {
        c.post(format!("{}{path}", self.url)).form(form).send().await.unwrap().text().await.unwrap()
    }

    /// Signs `login` in on client `c` (another browser); the response tells where it led.
    pub async fn sign_in_on(&self, c: &reqwest::Client, login: &str, password: &str) -> reqwest::Response {
        self.sign_in_with(c, login, password, &[]).await
    }

    /// [`Self::sign_in_on`], with more fields (what the page's script adds: `tz_offset`).
    pub async fn sign_in_with(
        &self,
        c: &reqwest::Client,
        login: &str,
        password: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let form = c.get(format!("{}/signin", self.url)).send().await.unwrap().text().await.unwrap();
        let csrf = hidden(&form, "csrf").unwrap();
        let mut fields = vec![("csrf", csrf.as_str()), ("login", login), ("password", password)];
        fields.extend_from_slice(extra);
        c.post(format!("{}/signin", self.url)).form(&fields).send().await.unwrap()
    }

    /// GETs a page and returns (html, csrf token).
    pub async fn page(&self, path: &str) -> (String, String) {
        let html = self.get(path).await.text().await.unwrap();
        let csrf = hidden(&html, "csrf").unwrap_or_default();
        (html, csrf)
    }

    /// Identify step: returns the page the person lands on.
    pub async fn identify(&self, login: &str) -> String {
        let (_, csrf) = self.page("/reset").await;
        self.post("/reset", &[("csrf", &csrf), ("login", login)]).await.text().await.unwrap()
    }

    /// The code last mailed to `address`, waiting up to 5 s for it.
    pub async fn code_for(&self, address: &str, previous: usize) -> String {
        for _ in 0..100 {
            let mails = self.code_mails(address);
            if mails.len() > previous {
                let m = mails.last().unwrap();
                return m.code_after("verification code:", 8).expect("a code in the mail");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no code mailed to {address}");
    }

    /// Waits up to 5 s for a mail with this subject (mail goes out in the background).
    pub async fn wait_for_mail(&self, subject: &str) {
        self.wait_for_mails(subject, 1).await;
    }

    /// Waits up to 5 s until `n` mails with this subject arrived (each goes out in the background,
    /// in no particular order), and returns them all.
    pub async fn wait_for_mails(&self, subject: &str, n: usize) -> Vec<passback::mail::sink::CaughtMail> {
        let mut mails = Vec::new();
        for _ in 0..100 {
            mails = self.mailbox.all().into_iter().filter(|m| m.subject() == subject).collect();
            if mails.len() >= n {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all: Vec<String> = self.mailbox.all().iter().map(|m| format!("{:?} to {:?}", m.subject(), m.to)).collect();
        panic!("{} of {n} mails with subject {subject:?} within 5 s; all mails: {all:#?}", mails.len());
    }

    fn code_mails(&self, address: &str) -> Vec<passback::mail::sink::CaughtMail> {
        self.mailbox
            .all()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == address) && m.subject() == "Your verification code")
            .collect()
    }

    /// How many codes were mailed to `address`.
    pub fn mails_to(&self, address: &str) -> usize {
        self.code_mails(address).len()
    }

    pub async fn verify(&self, code: &str) -> String {
        let (_, csrf) = self.page("/reset/verify").await;
        self.post("/reset/verify", &[("csrf", &csrf), ("code", code)]).await.text().await.unwrap()
    }

    /// Identify + code: leaves the client on the new-password form, whose HTML is returned.
    pub async fn verified_as(&self, login: &str, address: &str) -> String {
        let before = self.mails_to(address);
        let page = self.identify(login).await;
        assert!(page.contains("Check your e-mail"), "identify page: {page}");
        let code = self.code_for(address, before).await;
        let page = self.verify(&code).await;
        assert!(page.contains("Choose a new password"), "verify page: {page}");
        page
    }

    /// Submits the new-password form shown in `form_html`.
    pub async fn submit_password(&self, form_html: &str, password: &str, confirm: &str) -> String {
        let csrf = hidden(form_html, "csrf").unwrap();
        let key = hidden(form_html, "form_key").unwrap();
        self.post(
            "/reset/password",
            &[("csrf", &csrf), ("form_key", &key), ("password", password), ("confirm", confirm)],
        )
        .await
        .text()
        .await
        .unwrap()
    }

    /// Fills in and sends the change form; returns the page the person sees.
    pub async fn change_password(&self, login: &str, current: &str, new: &str) -> String {
        self.change_password_with(login, current, new, &[]).await
    }

    /// [`Self::change_password`], with `extra` fields as the form's script would add them.
    pub async fn change_password_with(&self, login: &str, current: &str, new: &str, extra: &[(&str, &str)]) -> String {
        let (form, csrf) = self.page("/change").await;
        let key = hidden(&form, "form_key").unwrap();
        let mut fields = vec![
            ("csrf", csrf.as_str()),
            ("form_key", &key),
            ("login", login),
            ("current", current),
            ("password", new),
            ("confirm", new),
        ];
        fields.extend_from_slice(extra);
        self.post("/change", &fields).await.text().await.unwrap()
    }

    pub async fn bind_works(&self, uid: &str, password: &str) -> bool {
        passback::sandbox::bind_works(
            &self.slapd.url,
            &self.ca.ca_file,
            &self.slapd.user_dn(uid),
            &SecretString::from(password.to_string()),
        )
        .await
    }

    /// The synced anchor of a seeded person.
    pub async fn anchor_of(&self, uid: &str) -> String {
        Stmt::new("SELECT anchor FROM directory_users WHERE username = ?")
            .bind(uid)
            .scalar_one(&self.db)
            .await
            .unwrap_or_else(|e| panic!("{uid} is not synced: {e}"))
    }

    /// The files that hold the portal's database, as written on the disk: SQLite's file and its
    /// log; or on PostgreSQL, after a checkpoint, this database's files and the cluster's log.
    pub async fn database_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<PathBuf> = Vec::new();
        let add_folder = |dir: &Path, files: &mut Vec<PathBuf>| {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    files.push(path);
                }
            }
        };
        match self.pg_database.as_ref().map(|_| postgres_cluster()) {
            Some(pg) => {
                Stmt::new("CHECKPOINT").run(&self.db).await.unwrap();
                let oid: i64 = Stmt::new("SELECT oid::BIGINT FROM pg_database WHERE datname = current_database()")
                    .scalar_one(&self.db)
                    .await
                    .unwrap();
                add_folder(&pg.dir.join("data").join("base").join(oid.to_string()), &mut files);
                add_folder(&pg.dir.join("data").join("pg_wal"), &mut files);
            }
            None => {
                add_folder(&self.dir, &mut files);
                files.retain(|p| p.file_name().unwrap().to_string_lossy().starts_with("passback.db"));
            }
        }
        assert!(!files.is_empty(), "the database is somewhere");
        files.into_iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect()
    }

    /// Makes every insert into `table` fail from now on: a real failure of the portal's database.
    pub async fn refuse_inserts_into(&self, table: &str) {
        let statements = if self.db.is_postgres() {
            vec![
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END; $$"
                    .to_string(),
                format!("CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()"),
            ]
        } else {
            vec![format!("CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'disk full'); END")]
        };
        for sql in statements {
            Stmt::new(sql).run(&self.db).await.unwrap();
        }
    }

    /// Makes the directory require a new password at `uid`'s next sign-in, through the relay
    /// as the helpdesk will (OpenLDAP: `pwdReset`).
    pub async fn require_change(&self, uid: &str) {
        use passback::domain::{Anchor, DirectoryId, MsgId};
        let (msg_id, anchor) = (MsgId::random(), self.anchor_of(uid).await);
        // Claimed by this instance, as every writeback is before it is sent.
        let claim = passback::store::writebacks::Claim {
            msg_id: msg_id.as_str(),
            directory: DIR_ID,
            anchor: &anchor,
            op: "require_change",
            support_code: "TEST0-CODE0",
            agent_id: None,
            instance: &self.hub.instance,
            now: self.clock.now(),
        };
        assert!(passback::store::writebacks::claim(&self.db, &claim).await.unwrap());
        let request = passback::relay::WritebackRequest {
            msg_id,
            op: passback::envelope::Op::RequireChange,
            directory: DirectoryId::parse(DIR_ID).unwrap(),
            anchor: Anchor::parse(&anchor).unwrap(),
            password: None,
            old_password: None,
            flags: Default::default(),
            actor: "test".into(),
        };
        let result = self.hub.writeback(request, self.clock.now()).await;
        assert!(result.outcome.is_success(), "{result:?}");
    }

    /// Locks `uid` out of the directory with wrong passwords (ppolicy: 5 failures).
    pub async fn lock_out(&self, uid: &str) {
        for _ in 0..6 {
            assert!(!self.bind_works(uid, "not-the-password").await);
        }
        assert!(!self.bind_works(uid, INITIAL_PASSWORD).await, "{uid} is locked: even the right password fails");
    }

    pub async fn audit(&self) -> Vec<passback::store::audit::AuditRecord> {
        passback::store::audit::recent(&self.db, 1000).await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop_agent();
        self.slapd.process.stop();
        for s in &mut self.more_directories {
            s.process.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(name) = self.pg_database.take() {
            drop_database(name);
        }
    }
}

/// Waits up to 10 s until `check` holds; panics naming `what` otherwise (for background work:
/// syncs, dropped connections, held syncs).
pub async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// The value of the hidden input `name` in a page.
pub use passback::bench::hidden;
