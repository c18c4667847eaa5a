//! `passback demo`: a throwaway OpenLDAP with ppolicy and seeded people, the portal over HTTPS
//! (its own throwaway CA), a built-in SMTP sink shown at `/demo/mail`, and an enrolled agent —
//! all on 127.0.0.1; the portal in this process, the agent as its own process. All of it is gone
//! when the demo stops.

use crate::config::{AgentConfig, Mode, PortalConfig, SmtpSecurity};
use crate::domain::DirectoryId;
use crate::sandbox::{Slapd, TestCa};
use crate::server::{Application, Extras};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DIRECTORY_ID: &str = "example";

/// The portal configuration the demo (and the tests) use: TLS with the throwaway CA, SQLite in
/// `dir`, mail to the local sink.
pub fn portal_config(dir: &Path, ca: &TestCa, port: u16, smtp_port: u16) -> anyhow::Result<PortalConfig> {
    let key_file = dir.join("data.key");
    crate::files::write_private(&key_file, crate::store::DataKey::generate_base64().as_bytes())?;
    let mut cfg = PortalConfig { mode: Mode::Production, ..Default::default() };
    cfg.server.listen = ([127, 0, 0, 1], port).into();
    cfg.server.public_url = format!("https://localhost:{port}");
    cfg.server.tls_cert_file = Some(ca.cert_file.clone());
    cfg.server.tls_key_file = Some(ca.key_file.clone());
    cfg.server.helpdesk_contact = Some("helpdesk@example.org".into());
    cfg.database.url = format!("sqlite://{}?mode=rwc", dir.join("passback.db").display());
    cfg.secrets.data_key_file = Some(key_file);
    cfg.mail.smtp_host = "127.0.0.1".into();
    cfg.mail.smtp_port = smtp_port;
    cfg.mail.security = SmtpSecurity::None;
    cfg.mail.from = "passback demo <no-reply@example.org>".into();
    Ok(cfg)
}

pub fn agent_config(dir: &Path, ca: &TestCa, directory: &crate::config::DirectoryConfig) -> AgentConfig {
    AgentConfig {
        state_file: dir.join("agent.json"),
        portal_ca_file: Some(ca.ca_file.clone()),
        heartbeat_secs: 5,
        sync_interval_secs: 30,
        full_sync_interval_secs: 300,
        directories: vec![directory.clone()],
        ..Default::default()
    }
}

/// Writes what an agent process needs for `cfg`: each directory's bind password in its own file
/// (mode 0600) and a TOML configuration that names those files. Returns the configuration file.
pub fn write_agent_files(dir: &Path, cfg: &AgentConfig) -> anyhow::Result<PathBuf> {
    use secrecy::ExposeSecret;
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path_of = |p: &Path| quote(&p.display().to_string());
    let mut text = format!(
        "state_file = {}\nheartbeat_secs = {}\nsync_interval_secs = {}\nfull_sync_interval_secs = {}\nmax_concurrent = {}\n\
         resets_per_minute = {}\n",
        path_of(&cfg.state_file),
        cfg.heartbeat_secs,
        cfg.sync_interval_secs,
        cfg.full_sync_interval_secs,
        cfg.max_concurrent,
        cfg.resets_per_minute
    );
    if let Some(ca) = &cfg.portal_ca_file {
        text += &format!("portal_ca_file = {}\n", path_of(ca));
    }
    if cfg.protected_resets_by_staff {
        text += "protected_resets_by_staff = true\n";
    }
    for d in &cfg.directories {
        let pw_file = dir.join(format!("ldap-bind-{}.pw", d.id));
        let pw = d.bind_password.as_ref().ok_or_else(|| anyhow::anyhow!("directory {}: no bind password", d.id))?;
        crate::files::write_private(&pw_file, pw.expose_secret().as_bytes())?;
        let base_dns: Vec<String> = d.base_dns.iter().map(|b| quote(b)).collect();
        text += &format!(
            "\n[[directories]]\nid = {}\nkind = {}\nurl = {}\nbind_dn = {}\nbind_password_file = {}\n\
             base_dns = [{}]\npool_size = {}\n",
            quote(&d.id),
            quote(d.kind.as_str()),
            quote(&d.url),
            quote(&d.bind_dn),
            path_of(&pw_file),
            base_dns.join(", "),
            d.pool_size
        );
        if let Some(ca) = &d.ca_file {
            text += &format!("ca_file = {}\n", path_of(ca));
        }
        if let Some(policy) = &d.policy_dn {
            text += &format!("policy_dn = {}\n", quote(policy));
        }
        if let Some(filter) = &d.user_filter {
            text += &format!("user_filter = {}\n", quote(filter));
        }
        if let Some(h) = d.history_on_reset {
            text += &format!("history_on_reset = {}\n", quote(h.as_str()));
        }
        text += &format!("starttls = {}\ntimeout_secs = {}\n", d.starttls, d.timeout_secs);
    }
    let path = dir.join("agent.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The configuration file of a `passback serve` process that runs as `cfg` says (what the demo
/// and the tests set: server, database, secrets, mail, relay). Written private: the database's
/// address may hold its password.
pub fn write_serve_config(path: &Path, cfg: &PortalConfig) -> anyhow::Result<()> {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path_of = |p: &Option<PathBuf>| p.as_ref().map(|p| quote(&p.display().to_string()));
    let mut text = format!(
        "[server]\nlisten = {listen}\npublic_url = {public}\n",
        listen = quote(&cfg.server.listen.to_string()),
        public = quote(&cfg.server.public_url),
    );
    if let (Some(cert), Some(key)) = (path_of(&cfg.server.tls_cert_file), path_of(&cfg.server.tls_key_file)) {
        text += &format!("tls_cert_file = {cert}\ntls_key_file = {key}\n");
    }
    if !cfg.server.trusted_proxies.is_empty() {
        let proxies: Vec<String> = cfg.server.trusted_proxies.iter().map(|p| quote(&p.to_string())).collect();
        text += &format!("trusted_proxies = [{}]\n", proxies.join(", "));
    }
    if let Some(contact) = &cfg.server.helpdesk_contact {
        text += &format!("helpdesk_contact = {}\n", quote(contact));
    }
    text += &format!("[database]\nurl = {}\n", quote(&cfg.database.url));
    if let Some(key) = path_of(&cfg.secrets.data_key_file) {
        text += &format!("[secrets]\ndata_key_file = {key}\n");
    }
    let security = match cfg.mail.security {
        SmtpSecurity::None => "none",
        SmtpSecurity::Starttls => "starttls",
        SmtpSecurity::Tls => "tls",
    };
    text += &format!(
        "[mail]\nsmtp_host = {host}\nsmtp_port = {port}\nsecurity = \"{security}\"\nfrom = {from}\n\
         [relay]\nping_interval_secs = {ping}\nresult_deadline_secs = {deadline}\n",
        host = quote(&cfg.mail.smtp_host),
        port = cfg.mail.smtp_port,
        from = quote(&cfg.mail.from),
        ping = cfg.relay.ping_interval_secs,
        deadline = cfg.relay.result_deadline_secs,
    );
    crate::files::write_private(path, text.as_bytes())
}

/// Starts `passback serve --config <file>` as a child process, logging to `log`.
pub fn spawn_serve(config_file: &Path, log: &Path) -> anyhow::Result<std::process::Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(std::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(config_file)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// Starts `passback agent --config <file>` as a child process, logging to `log`.
pub fn spawn_agent(config_file: &Path, log: &Path) -> anyhow::Result<std::process::Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let exe = std::env::current_exe()?;
    Ok(std::process::Command::new(exe)
        .arg("agent")
        .arg("--config")
        .arg(config_file)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// Which directory the demo writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoDirectory {
    /// OpenLDAP with the ppolicy overlay.
    Openldap,
    /// A Samba Active Directory domain controller (uses ports 389 and 636 of 127.0.0.1).
    Ad,
}

/// The directory the demo started, and what to tell people about it.
struct Started {
    config: crate::config::DirectoryConfig,
    description: String,
    /// Kept alive for as long as the demo runs; dropping it stops the server.
    _server: Box<dyn std::any::Any + Send>,
}

fn start_directory(kind: DemoDirectory, dir: &Path, ca: &TestCa) -> anyhow::Result<Started> {
    Ok(match kind {
        DemoDirectory::Openldap => {
            let slapd = Slapd::start(&dir.join("ldap"), ca)?;
            let description = format!(
                "  Directory:    OpenLDAP {ldap}, base {base}\n  \
                 People:       alice, bob, carol (e-mail <name>@example.org), dave (no e-mail)\n  \
                 Password:     {pw} (for everyone at start)\n  \
                 Policy:       at least 8 characters, not one of the last 3; carol may change only once an hour\n\n  \
                 Check a new password (USER is alice, bob, carol or dave):\n    \
                 LDAPTLS_CACERT={ca} ldapwhoami -x -H {ldap} -D uid=USER,{people} -w 'NEW-PASSWORD'\n",
                ldap = slapd.url,
                base = slapd.base_dn,
                people = slapd.people_dn,
                pw = crate::sandbox::INITIAL_USER_PASSWORD,
                ca = ca.ca_file.display(),
            );
            Started { config: slapd.directory_config(DIRECTORY_ID), description, _server: Box::new(slapd) }
        }
        DemoDirectory::Ad => {
            let dc = crate::sandbox::SambaDc::start(&dir.join("ad"), ca)?;
            let description = format!(
                "  Directory:    Samba AD DC {ldap}, domain {realm}, scope {staff}\n  \
                 People:       alice, bob (e-mail <name>@corp.test), dadmin (a Domain Admin: reset is refused)\n  \
                 Password:     {pw} (for everyone at start)\n  \
                 Policy:       at least 7 characters, complex, not one of the last 24\n\n  \
                 Check a new password (Samba has no \"who am I\"; a search of the root shows the bind worked):\n    \
                 (USER is alice or bob)\n    \
                 LDAPTLS_CACERT={ca} ldapsearch -LLL -x -H {ldap} -D USER@{realm_lc} -w 'NEW-PASSWORD' -b '' -s base dn\n",
                ldap = dc.url,
                realm = dc.realm,
                realm_lc = dc.realm.to_lowercase(),
                staff = dc.staff_dn,
                pw = crate::sandbox::INITIAL_AD_PASSWORD,
                ca = ca.ca_file.display(),
            );
            Started { config: dc.directory_config(DIRECTORY_ID), description, _server: Box::new(dc) }
        }
    })
}

/// What every demo starts with, in `dir` (emptied first): a CA, the directory, the mail sink.
async fn start_common(
    dir: &Path,
    kind: DemoDirectory,
) -> anyhow::Result<(PathBuf, TestCa, Started, std::net::SocketAddr, crate::mail::sink::Mailbox)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let dir: PathBuf = dir.canonicalize()?;
    let ca = TestCa::create(&dir.join("tls"))?;
    let directory = start_directory(kind, &dir, &ca)?;
    let (smtp, mailbox) = crate::mail::sink::start(0).await?;
    Ok((dir, ca, directory, smtp, mailbox))
}

/// What the demo says of its staff account: where to sign in, the pages it opens, and its
/// authenticator key as text, as an `otpauth://` address and as a QR code to scan.
fn staff_lines(url: &str, staff: &crate::usecase::staff::Credentials) -> anyhow::Result<String> {
    use crate::crypto::totp;
    let issuer = "passback demo staff";
    Ok(format!(
        "  Staff:        {url}/staff/signin   user admin (an administrator), password {password}\n                \
         then {url}/helpdesk (people), {url}/audit (audit log),\n                \
         {url}/admin/health (writeback health), {url}/admin/staff (staff accounts)\n                \
         authenticator key {key} (the first sign-in then sets up your own key and password),\n                \
         or open {link}\n                \
         or scan:\n{qr}\n",
        password = secrecy::ExposeSecret::expose_secret(&staff.password),
        key = staff.seed_text().as_str(),
        link = totp::otpauth_url(&staff.seed, issuer, "admin")?.as_str(),
        qr = totp::terminal_qr(&staff.seed, issuer, "admin")?.as_str(),
    ))
}

/// A staff account to try the helpdesk and administration pages with (its first sign-in enrols
/// an authenticator of one's own).
async fn demo_administrator(
    db: &crate::store::Db,
    data_key: &crate::store::DataKey,
    mailer: &crate::mail::Mailer,
) -> anyhow::Result<crate::usecase::staff::Credentials> {
    let admin = crate::usecase::staff::StaffSpec {
        username: "admin".into(),
        display_name: "Demo administrator".into(),
        email: None,
        role: crate::store::staff::Role::Administrator,
        scope: Default::default(),
        may_reset_protected: false,
    };
    let now = crate::Clock::default().now();
    let ctx = crate::usecase::Ctx { db, secrets: data_key, mailer, now, mail_in_background: true };
    crate::usecase::staff::add(&ctx, &crate::usecase::By::CommandLine, &admin)
        .await?
        .context("the demo's staff account")
}

pub async fn run(dir: &Path, port: u16, kind: DemoDirectory) -> anyhow::Result<()> {
    let (dir, ca, directory, smtp, mailbox) = start_common(dir, kind).await?;

    let cfg = portal_config(&dir, &ca, port, smtp.port())?;
    let url = cfg.server.public_url.clone();
    let data_key = crate::store::DataKey::from_config(&cfg.secrets)?;
    let mailer = crate::mail::Mailer::new(&cfg.mail)?;
    let app = Application::build(cfg, Extras { demo_mailbox: Some(mailbox), ..Default::default() }).await?;
    let (db, hub) = (app.db.clone(), app.hub.clone());
    tokio::spawn(app.run_until_stopped());

    let now = crate::Clock::default().now();
    let token = crate::server::create_enrollment_token(&db, "demo-agent", &[DIRECTORY_ID.into()], 10, now).await?;
    let agent_cfg = agent_config(&dir, &ca, &directory.config);
    let token = token.as_str().to_string().into();
    crate::agent::enroll::enroll(&url, &token, Some(&ca.ca_file), &agent_cfg.state_file, now).await?;
    let agent_toml = write_agent_files(&dir, &agent_cfg)?;
    let mut agent = spawn_agent(&agent_toml, &dir.join("agent.log"))?;

    let staff = demo_administrator(&db, &data_key, &mailer).await?;

    let dir_id = DirectoryId::parse(DIRECTORY_ID)?;
    for _ in 0..100 {
        let synced = crate::store::users::find_by_login(&db, "alice").await.map(|u| !u.is_empty()).unwrap_or(false);
        if hub.is_alive(&dir_id) && synced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!(
        "\npassback demo is running.\n\n  \
         Portal:       {url}/reset    forgot a password, or locked out\n                \
         {url}/change   change a password you know\n                \
         {url}/signin   sign in to your security info (ways to prove who you are)\n  \
         Demo mailbox: {url}/demo/mail   (codes and notices arrive here)\n  \
         TLS CA:       {ca}   (the browser will warn: accept the certificate, or import this CA)\n\n\
         {directory}\n  \
         Agent:        process {agent_pid}, log {agent_log}\n                \
         (stop it with `kill {agent_pid}` and the portal says reset is unavailable before sending any code)\n\n\
         {staff}\n\
         Stop the demo with Ctrl-C.\n",
        staff = staff_lines(&url, &staff)?,
        ca = ca.ca_file.display(),
        directory = directory.description,
        agent_pid = agent.id(),
        agent_log = dir.join("agent.log").display(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = agent.kill();
    let _ = agent.wait();
    drop(directory);
    Ok(())
}

/// `passback demo --ha`: the demo as several machines would run it. A PostgreSQL cluster made in
/// the demo's folder; two `passback serve` processes on it; nginx in front of them on `port`
/// (TLS, WebSocket upgrades, `X-Forwarded-For`), all on 127.0.0.1; two agents for the
/// directory, each connected through nginx to whichever instance it chose. Every process can be
/// killed on its own, and the demo prints how. The demo mailbox is served by a third instance
/// in this process, outside the balancer.
pub async fn run_ha(dir: &Path, port: u16, kind: DemoDirectory) -> anyhow::Result<()> {
    let (dir, ca, directory, smtp, mailbox) = start_common(dir, kind).await?;
    eprintln!("demo: starting PostgreSQL in {}…", dir.join("postgres").display());
    let pg = crate::sandbox::Postgres::start(&dir.join("postgres"))?;
    let db_url = secrecy::ExposeSecret::expose_secret(&pg.database("passback").await?).to_string();

    // Every instance: the same database, data key and certificate; the balancer's address is the
    // public one, and the only one whose X-Forwarded-For is believed.
    let mut cfg = portal_config(&dir, &ca, port, smtp.port())?;
    cfg.database.url = db_url;
    cfg.server.trusted_proxies = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    let url = cfg.server.public_url.clone();
    let instance_ports = [port + 1, port + 2];
    let mut instances = Vec::new();
    for (i, p) in instance_ports.iter().enumerate() {
        let mut one = cfg.clone();
        one.server.listen = ([127, 0, 0, 1], *p).into();
        let folder = dir.join(format!("instance-{}", i + 1));
        std::fs::create_dir_all(&folder)?;
        write_serve_config(&folder.join("portal.toml"), &one)?;
        let serve = spawn_serve(&folder.join("portal.toml"), &folder.join("serve.log"))?;
        // Stopped when dropped: also when the demo fails half way.
        instances.push((crate::sandbox::Server::new(serve), folder));
    }
    // The mailbox page, from an instance of this process that the balancer does not know.
    let mut mail_cfg = cfg.clone();
    mail_cfg.server.listen = ([127, 0, 0, 1], port + 3).into();
    let mailer = crate::mail::Mailer::new(&mail_cfg.mail)?;
    let data_key = crate::store::DataKey::from_config(&mail_cfg.secrets)?;
    let app = Application::build(mail_cfg, Extras { demo_mailbox: Some(mailbox), ..Default::default() }).await?;
    let db = app.db.clone();
    tokio::spawn(app.run_until_stopped());
    let nginx = crate::sandbox::Server::new(start_nginx(&dir, &ca, port, &instance_ports)?);

    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*crate::tls::client_config(Some(&ca.ca_file))?).clone())
        .build()?;
    let mut up = false;
    for _ in 0..150 {
        if client.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(up, "the portal did not answer through nginx at {url}; see {}", dir.join("nginx").display());

    // Two agents, each enrolled with a token of its own, through the balancer.
    let mut agents = Vec::new();
    for i in 1..=2 {
        let now = crate::Clock::default().now();
        let name = format!("demo-agent-{i}");
        let token = crate::server::create_enrollment_token(&db, &name, &[DIRECTORY_ID.into()], 10, now).await?;
        let folder = dir.join(format!("agent-{i}"));
        std::fs::create_dir_all(&folder)?;
        let mut agent_cfg = agent_config(&folder, &ca, &directory.config);
        agent_cfg.heartbeat_secs = 2;
        let token = token.as_str().to_string().into();
        crate::agent::enroll::enroll(&url, &token, Some(&ca.ca_file), &agent_cfg.state_file, now).await?;
        let agent_toml = write_agent_files(&folder, &agent_cfg)?;
        agents.push((crate::sandbox::Server::new(spawn_agent(&agent_toml, &folder.join("agent.log"))?), folder));
    }
    let staff = demo_administrator(&db, &data_key, &mailer).await?;
    for _ in 0..100 {
        if crate::store::users::find_by_login(&db, "alice").await.map(|u| !u.is_empty()).unwrap_or(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut kill = String::new();
    for (i, (child, folder)) in instances.iter().enumerate() {
        kill += &format!(
            "  Instance {}:   kill -9 {}   (https://127.0.0.1:{}, log {})\n",
            i + 1,
            child.pid(),
            instance_ports[i],
            folder.join("serve.log").display()
        );
    }
    for (i, (child, folder)) in agents.iter().enumerate() {
        kill += &format!(
            "  Agent {}:      kill -9 {}   (log {})\n",
            i + 1,
            child.pid(),
            folder.join("agent.log").display()
        );
    }
    println!(
        "\npassback demo (high availability) is running.\n\n  Portal:       {url}/reset   (through nginx, pid {nginx_pid})\n  \
         Demo mailbox: https://localhost:{mail_port}/demo/mail\n  TLS CA:       {ca}\n  \
         PostgreSQL:   127.0.0.1:{pg_port}, data in {pg_dir}\n\n{directory}\n\n{staff}\n\
         Kill any of these while resetting a password; the reset completes or says plainly that it did not,\n\
         and the health page ({url}/admin/health) shows what died:\n{kill}\n\
         Stop the demo with Ctrl-C.\n",
        nginx_pid = nginx.pid(),
        mail_port = port + 3,
        ca = ca.ca_file.display(),
        pg_port = pg.port,
        pg_dir = pg.dir.display(),
        directory = directory.description,
        staff = staff_lines(&url, &staff)?,
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Agents first, then the instances and nginx (a TERM, so that its workers go too), then the
    // database.
    drop(agents);
    drop(instances);
    drop(nginx);
    drop(pg);
    drop(directory);
    Ok(())
}

/// nginx in front of the instances on 127.0.0.1:`port`, as README's "High availability" shows
/// it, with its configuration, logs and temporary files in `dir/nginx`. Debian's package
/// (`nginx-light` is enough): `scripts/demo.sh --ha` installs it. Here every client comes from
/// 127.0.0.1, the address the instances trust as their proxy: nginx replaces any
/// `X-Forwarded-For` a client sends (README's example appends, from a balancer of its own).
/// The nginx location for the forms that write: a second sending gets what the first came to and
/// never acts twice, so nginx may send one again to another instance when the one it reached died
/// before it answered (it never does for a POST otherwise). README's example has it too.
const NGINX_FORMS_SENT_AGAIN: &str =
    "location ~ ^/(reset/password|reset/unlock|change|signin/expired)$ {\n            \
     proxy_pass https://passback;\n            proxy_next_upstream error timeout non_idempotent;\n        }";

fn start_nginx(dir: &Path, ca: &TestCa, port: u16, instances: &[u16]) -> anyhow::Result<std::process::Child> {
    let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("nginx is not installed (Debian: apt-get install nginx-light)")?;
    let folder = dir.join("nginx");
    std::fs::create_dir_all(&folder)?;
    let servers: String =
        instances.iter().map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n")).collect();
    let conf = format!(
        "# Made by passback demo --ha.\ndaemon off;\nworker_processes 1;\npid {f}/nginx.pid;\n\
         error_log {f}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n    access_log {f}/access.log;\n    client_body_temp_path {f}/body;\n    proxy_temp_path {f}/proxy;\n\
             fastcgi_temp_path {f}/fastcgi;\n    uwsgi_temp_path {f}/uwsgi;\n    scgi_temp_path {f}/scgi;\n\
             map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
             upstream passback {{\n{servers}    }}\n\
             server {{\n        listen 127.0.0.1:{port} ssl;\n        server_name localhost;\n\
                 ssl_certificate {cert};\n        ssl_certificate_key {key};\n\
                 proxy_ssl_verify on;\n        proxy_ssl_trusted_certificate {cafile};\n\
                 proxy_ssl_name localhost;\n        proxy_ssl_server_name on;\n        proxy_http_version 1.1;\n\
                 proxy_set_header Upgrade $http_upgrade;\n        proxy_set_header Connection $connection_upgrade;\n\
                 proxy_set_header Host $host;\n        proxy_set_header X-Forwarded-For $remote_addr;\n\
                 proxy_read_timeout 120s;\n\
                 location / {{\n            proxy_pass https://passback;\n        }}\n\
                 {forms}\n    }}\n}}\n",
        forms = NGINX_FORMS_SENT_AGAIN,
        f = folder.display(),
        cert = ca.cert_file.display(),
        key = ca.key_file.display(),
        cafile = ca.ca_file.display(),
    );
    let conf_file = folder.join("nginx.conf");
    std::fs::write(&conf_file, conf)?;
    let log = std::fs::File::create(folder.join("nginx.out"))?;
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&conf_file)
        .arg("-p")
        .arg(&folder)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting nginx")?;
    Ok(child)
}
