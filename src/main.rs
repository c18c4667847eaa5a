//! The `passback` command: parses arguments, loads configuration, and calls into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use passback::config::{self, AgentConfig, PortalConfig};
use secrecy::SecretString;
use std::path::PathBuf;

/// mimalloc, not the C library's allocator: a request allocates and frees many small buffers on
/// several threads, which glibc's arenas served at about a tenth of the portal's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "passback", version, about = "Self-service password reset with synchronous writeback")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the portal and the relay hub.
    Serve {
        /// Portal configuration (TOML). PASSBACK__SECTION__KEY variables override it.
        #[arg(long, env = "PASSBACK_CONFIG")]
        config: Option<PathBuf>,
        /// Check the configuration (and the files it names) and exit: 0 if the portal would
        /// start with it, 1 with the reason if not. Nothing is listened on or written.
        #[arg(long)]
        check_config: bool,
    },
    /// Run the writeback agent (inside the company network), or manage its enrollment.
    Agent {
        /// Agent configuration (TOML). PASSBACK_AGENT__KEY variables override it.
        #[arg(long, env = "PASSBACK_AGENT_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: Option<AgentCmd>,
    },
    /// On the portal host: manage people's accounts and kinds.
    User {
        /// The portal's configuration (TOML), to reach its database.
        #[arg(long = "portal-config", env = "PASSBACK_CONFIG", global = true)]
        portal_config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// On the portal host: manage staff accounts (helpdesk, administrators, auditors).
    Staff {
        /// The portal's configuration (TOML), to reach its database.
        #[arg(long = "portal-config", env = "PASSBACK_CONFIG", global = true)]
        portal_config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: StaffCmd,
    },
    /// On the portal host: what the portal's password rules say of a candidate password.
    Password {
        /// The portal's configuration (TOML): its `[password_policy]`, and its database.
        #[arg(long = "portal-config", env = "PASSBACK_CONFIG", global = true)]
        portal_config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: PasswordCmd,
    },
    /// Write a first configuration: the portal's (with a fresh data key), or an agent's.
    Init {
        #[command(subcommand)]
        cmd: InitCmd,
    },
    /// Passwords known from data breaches (Have I Been Pwned's Pwned Passwords).
    Breached {
        #[command(subcommand)]
        cmd: BreachedCmd,
    },
    /// Start a throwaway demo: OpenLDAP with ppolicy, the portal and an enrolled agent, on 127.0.0.1.
    Demo {
        /// Folder for the demo's files (wiped at start).
        #[arg(long, default_value = "target/demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// The directory to write into.
        #[arg(long, value_enum, default_value = "openldap")]
        directory: passback::demo::DemoDirectory,
        /// As several machines would run it: PostgreSQL, two portal instances behind nginx, two
        /// agents (each can be killed on its own).
        #[arg(long)]
        ha: bool,
    },
    /// Measure the writeback path against the bare directory (prints a table, writes
    /// target/bench/latency.json), or with --load prove under load that nothing is lost.
    Bench {
        /// Load and verify instead: 200 people, 32 browsers, then again with the agent killed (with
        /// --instances, instances and agents killed).
        #[arg(long)]
        load: bool,
        /// How long each load round lasts.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Measure against a Samba AD DC instead of OpenLDAP (needs root, ports 389 and 636).
        #[arg(long, conflicts_with = "load")]
        ad: bool,
        /// Start the portal's database with this many rows in every table that grows with use
        /// (audit, writebacks, codes, sessions, gate events, change attempts).
        #[arg(long, default_value_t = 0, conflicts_with = "load")]
        history: u64,
        /// Where the portal keeps its state: the SQLite file, or a PostgreSQL cluster the bench
        /// starts in its folder.
        #[arg(long, value_enum, default_value = "sqlite")]
        database: passback::bench::BenchDatabase,
        /// With --load: this many portal instances behind a balancer, on PostgreSQL; the same load
        /// runs first on SQLite and on PostgreSQL with one instance, to compare.
        #[arg(long, default_value_t = 1, requires = "load")]
        instances: usize,
        /// Measure the offline breached-password file instead, on a generated corpus of this
        /// many hashes (build time, size, lookup time, passwords found by chance).
        #[arg(long, conflicts_with_all = ["load", "ad"])]
        breached: Option<u64>,
    },
}

#[derive(Subcommand)]
enum PasswordCmd {
    /// Reads a candidate password from standard input and prints every rule's verdict and the
    /// outcome, writing nothing: exits 0 when it would be accepted, 1 when it would be refused.
    Check {
        /// The person's directory (with --user): their names and their directory's length and
        /// complexity rules count too.
        #[arg(long, requires = "user")]
        directory: Option<String>,
        /// Their user name or e-mail address, as synced.
        #[arg(long, requires = "directory")]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum BreachedCmd {
    /// Builds the file that `breached = "offline"` looks passwords up in, from the downloadable
    /// corpus of SHA-1 hashes (lines `<hash>:<count>`; in hash order it needs least memory).
    Build {
        /// The corpus ("-": standard input).
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a cloud-only account (its password lives only in the portal; the person sets it with
    /// "forgot my password").
    AddCloud {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Set one synced person's kind (`hash_synced` or `federated`), overriding their directory's.
    SetKind {
        #[arg(long)]
        directory: String,
        /// Their user name or e-mail address.
        #[arg(long)]
        login: String,
        #[arg(long)]
        kind: String,
    },
}

#[derive(Subcommand)]
enum StaffCmd {
    /// Add a staff account. Its first password and authenticator key are printed once.
    Add {
        #[arg(long)]
        username: String,
        /// administrator, helpdesk or auditor.
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: Option<String>,
        /// Where notices for administrators go.
        #[arg(long)]
        email: Option<String>,
        /// Helpdesk scope: a directory id (repeat for several). None: all.
        #[arg(long = "directory")]
        directories: Vec<String>,
        /// Helpdesk scope: people below this base DN (repeat for several).
        #[arg(long = "base-dn")]
        base_dns: Vec<String>,
        /// Helpdesk scope: members of this group DN (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// May reset, unlock and force a change for protected (privileged) accounts.
        #[arg(long)]
        may_reset_protected: bool,
        /// Helpdesk scope: everyone in every directory (otherwise name a directory, base DN or group).
        #[arg(long)]
        everyone: bool,
    },
    /// List staff accounts and their roles.
    List,
    /// Disable a staff account (its sessions end at once; it can no longer sign in).
    Disable {
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled staff account again.
    Enable {
        #[arg(long)]
        username: String,
    },
    /// Forget the wrong sign-ins counted against a staff user name (after someone else's guessing
    /// kept its owner out).
    ClearSigninLimits {
        #[arg(long)]
        username: String,
    },
    /// Give a staff account new credentials for one sign-in (a lost phone or password); the
    /// owner enrols their own at that sign-in. Its sessions end.
    ResetSignin {
        #[arg(long)]
        username: String,
    },
}

#[derive(Subcommand)]
enum InitCmd {
    /// Write portal.toml and a new data.key (check it with `passback serve --check-config`).
    Portal {
        /// The address people and agents will use, e.g. https://passback.example.org.
        #[arg(long)]
        public_url: String,
        /// Where to write (and where the configuration says its files are).
        #[arg(long, default_value = "/etc/passback")]
        dir: PathBuf,
        #[command(flatten)]
        out: InitOut,
    },
    /// Write agent.toml for one directory (check it with `passback agent doctor`), by default in
    /// /etc/passback-agent.
    Agent {
        /// The portal's public address.
        #[arg(long)]
        portal_url: String,
        /// The name the portal knows the directory by.
        #[arg(long)]
        directory: String,
        #[arg(long, value_enum)]
        kind: DirectoryKindArg,
        /// ldaps://dc1.corp.example.org:636
        #[arg(long)]
        url: String,
        /// Where the people in scope are, e.g. OU=Staff,DC=corp,DC=example,DC=org.
        #[arg(long)]
        base_dn: String,
        /// The service account the agent binds as.
        #[arg(long)]
        bind_dn: String,
        /// The CA certificate the directory's certificate is checked against, if not a public one.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Where to write (and where the configuration says its files are).
        #[arg(long, default_value = "/etc/passback-agent")]
        dir: PathBuf,
        #[command(flatten)]
        out: InitOut,
    },
}

/// How `init` writes.
#[derive(clap::Args)]
struct InitOut {
    /// Replace a configuration that exists (never a data key: the database's secrets need it).
    #[arg(long)]
    force: bool,
    /// Print the configuration instead of writing anything.
    #[arg(long)]
    print: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DirectoryKindArg {
    Ad,
    Openldap,
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Enroll this host with a one-time token made on the portal (`passback agent token`).
    Enroll {
        /// The portal's address, https://…
        #[arg(long)]
        portal: String,
        /// The one-time enrollment token.
        #[arg(long, env = "PASSBACK_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Make a new key pair and package key now; the previous ones stay valid for the grace period.
    RotateKeys,
    /// Check everything the agent depends on (directories, TLS, rights, the portal, the clock) and
    /// print a table; exits non-zero if anything fails. Changes no password and no account.
    Doctor,
    /// On the portal host: make a one-time, short-lived enrollment token for a new agent.
    Token {
        /// The portal's configuration (TOML), to reach its database.
        #[arg(long = "portal-config", env = "PASSBACK_CONFIG")]
        portal_config: PathBuf,
        /// A name for the agent, shown to administrators.
        #[arg(long, default_value = "agent")]
        name: String,
        /// A directory id the agent will serve (repeat for several). It may serve no other.
        #[arg(long = "directory", required = true)]
        directories: Vec<String>,
    },
    /// On the portal host: revoke an agent for good. Its credentials are refused from now on, its
    /// keys are forgotten, and a running portal drops its connections within a second.
    Revoke {
        /// The portal's configuration (TOML), to reach its database.
        #[arg(long = "portal-config", env = "PASSBACK_CONFIG")]
        portal_config: PathBuf,
        /// The agent's name, as given to `passback agent token` (must name one agent).
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        name: Option<String>,
        /// The agent's id, as the health page shows it.
        #[arg(long)]
        id: Option<String>,
    },
}

fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_sessions=warn"));
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // One object per line, the event's fields at its top level.
        config::LogFormat::Json => log.json().flatten_event(true).with_current_span(false).init(),
        // Colours only on a terminal: log files and journals get plain text.
        config::LogFormat::Text => log.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

/// The log format the command's configuration asks for (text where it has none, or where it does
/// not load: the command itself then says why).
fn log_format(cmd: &Cmd) -> config::LogFormat {
    match cmd {
        Cmd::Serve { config, .. } => PortalConfig::load(config.as_deref()).map(|c| c.log_format).unwrap_or_default(),
        Cmd::Agent { config, cmd: None } => {
            AgentConfig::load(config.as_deref()).map(|c| c.log_format).unwrap_or_default()
        }
        _ => config::LogFormat::Text,
    }
}

fn main() -> anyhow::Result<()> {
    passback::tls::install_crypto_provider();
    let cli = Cli::parse();
    init_logging(log_format(&cli.cmd));
    // The running agent waits on the portal and the directory, with a few microseconds of
    // sealing and opening between: on one thread it spares the wake-ups of one thread by another
    // (measured with `passback bench`: a fifth less of the agent's CPU per operation, and half
    // its context switches). What blocks for longer than a moment (the journal's sync, unwrapping
    // a request's key, making a key pair) runs on tokio's blocking threads.
    let runtime = match cli.cmd {
        Cmd::Agent { cmd: None, .. } => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let now = passback::Clock::default().now();
    match cli.cmd {
        Cmd::Serve { config, check_config: true } => {
            let cfg = PortalConfig::load(config.as_deref())?;
            for note in passback::server::check(&cfg)? {
                println!("{note}");
            }
            println!("The configuration is valid.");
        }
        Cmd::Serve { config, check_config: false } => {
            let cfg = PortalConfig::load(config.as_deref())?;
            let extras = passback::server::Extras { config_file: config.clone(), ..Default::default() };
            let app = passback::server::Application::build(cfg, extras).await?;
            app.run_until_stopped().await?;
        }
        Cmd::Agent { config, cmd: None } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            let _running = passback::agent::state::Running::take(&cfg.state_file)?;
            passback::agent::Agent::new(cfg)?.run().await?;
        }
        Cmd::Agent { config, cmd: Some(AgentCmd::Enroll { portal, token }) } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            let token = SecretString::from(token);
            let state =
                passback::agent::enroll::enroll(&portal, &token, cfg.portal_ca_file.as_deref(), &cfg.state_file, now)
                    .await?;
            println!(
                "Enrolled as agent {}. State written to {} (mode 0600).",
                state.agent_id,
                cfg.state_file.display()
            );
        }
        Cmd::Agent { config, cmd: Some(AgentCmd::RotateKeys) } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            let mut state = passback::agent::state::AgentState::load(&cfg.state_file)?;
            let v = passback::agent::enroll::rotate(&mut state, &cfg.state_file, cfg.portal_ca_file.as_deref(), now)
                .await?;
            println!(
                "Keys rotated: version {v} is now used; the previous version stays valid for {} hours.",
                cfg.key_grace_hours
            );
        }
        Cmd::Agent { config, cmd: Some(AgentCmd::Doctor) } => {
            // Unchecked: the doctor reports what is wrong with it.
            let cfg: AgentConfig = config::load(config.as_deref(), config::AGENT_ENV_PREFIX)?;
            let report = passback::agent::doctor::run(&cfg).await;
            print!("{}", report.render());
            std::io::Write::flush(&mut std::io::stdout())?;
            if report.failed() {
                std::process::exit(1);
            }
        }
        Cmd::Agent { cmd: Some(AgentCmd::Token { portal_config, name, directories }), .. } => {
            let cfg = PortalConfig::load(Some(&portal_config))?;
            let db = passback::store::connect(&cfg.database.url, 1).await?;
            let ttl = cfg.relay.enrollment_token_ttl_mins;
            let token = passback::server::create_enrollment_token(&db, &name, &directories, ttl, now).await?;
            println!("{}", token.as_str());
            eprintln!("One-time enrollment token for {name:?}, valid for {ttl} minutes. Use it once with `passback agent enroll`.");
        }
        Cmd::Agent { cmd: Some(AgentCmd::Revoke { portal_config, name, id }), .. } => {
            let cfg = PortalConfig::load(Some(&portal_config))?;
            let db = passback::store::connect(&cfg.database.url, 1).await?;
            let who = id.or(name).context("--name or --id is required")?;
            let support = passback::domain::SupportCode::new().0;
            let agent = passback::relay::revoke::revoke(&db, None, &who, "command-line", &support, now).await?;
            println!(
                "Agent {} ({}) is revoked: its credentials are refused and its keys forgotten.",
                agent.name, agent.id
            );
            println!("A running portal drops its connections within a second. Enroll a new agent with a new token.");
        }
        Cmd::User { portal_config, cmd } => {
            let path = portal_config.context("--portal-config is required")?;
            let cfg = PortalConfig::load(Some(&path))?;
            let db = passback::store::connect(&cfg.database.url, 1).await?;
            user_command(&db, cmd, now).await?;
        }
        Cmd::Staff { portal_config, cmd } => {
            let path = portal_config.context("--portal-config is required")?;
            let cfg = PortalConfig::load(Some(&path))?;
            let db = passback::store::connect(&cfg.database.url, 1).await?;
            staff_command(&db, &cfg, cmd, now).await?;
        }
        Cmd::Password { portal_config, cmd: PasswordCmd::Check { directory, user } } => {
            let path = portal_config.context("--portal-config is required")?;
            let cfg = PortalConfig::load(Some(&path))?;
            let db = passback::store::connect(&cfg.database.url, 1).await?;
            let candidate = read_secret_line("Password to check (not shown): ")?;
            let person = directory.as_deref().zip(user.as_deref());
            let checked = passback::usecase::policy::check_candidate(&cfg, &db, person, &candidate, now).await?;
            for v in &checked.verdicts {
                println!("{:<11} {:<5} {}", v.rule, if v.passed { "pass" } else { "FAIL" }, v.detail);
            }
            let tr = passback::i18n::Tr::default();
            match &checked.refusal {
                None => println!("outcome: accepted by the portal's rules (the directory still decides)"),
                Some(o) => {
                    println!("outcome: {} {}", o.code(), o.message(tr));
                    std::process::exit(1);
                }
            }
        }
        Cmd::Breached { cmd: BreachedCmd::Build { input, output } } => {
            let started = std::time::Instant::now();
            let built = if input.as_os_str() == "-" {
                passback::breached::build(std::io::stdin().lock(), &output)?
            } else {
                passback::breached::build_from_file(&input, &output)?
            };
            println!(
                "{}: {} hashes, {} bytes, in {:.1} s{}",
                output.display(),
                built.hashes,
                built.bytes,
                started.elapsed().as_secs_f64(),
                if built.sorted_here { " (the input was not in hash order: it was sorted in memory)" } else { "" }
            );
        }
        Cmd::Init { cmd: InitCmd::Portal { public_url, dir, out: InitOut { force, print } } } => {
            let portal = passback::init::Portal { dir: &dir, public_url: &public_url };
            if print {
                print!("{}", portal.text()?);
            } else {
                for file in portal.write(force)? {
                    println!("Wrote {}", file.display());
                }
                let config = dir.join("portal.toml");
                println!(
                    "Next: put the TLS certificate and key where it says, set [mail], then check it:\n  \
                     passback serve --check-config --config {}",
                    config.display()
                );
            }
        }
        Cmd::Init {
            cmd:
                InitCmd::Agent {
                    portal_url,
                    directory,
                    kind,
                    url,
                    base_dn,
                    bind_dn,
                    ca_file,
                    dir,
                    out: InitOut { force, print },
                },
        } => {
            let kind = match kind {
                DirectoryKindArg::Ad => config::DirectoryKind::Ad,
                DirectoryKindArg::Openldap => config::DirectoryKind::Openldap,
            };
            let agent = passback::init::Agent {
                dir: &dir,
                portal_url: &portal_url,
                directory: &directory,
                kind,
                url: &url,
                base_dn: &base_dn,
                bind_dn: &bind_dn,
                ca_file: ca_file.as_deref(),
            };
            if print {
                print!("{}", agent.text()?);
            } else {
                let (config, password) = agent.write(force)?;
                println!("Wrote {}", config.display());
                println!(
                    "Next: write the service account's password to {} (mode 0640, group passback-agent), then \
                     check everything:\n  sudo -u passback-agent passback agent --config {} doctor",
                    password.display(),
                    config.display()
                );
            }
        }
        Cmd::Demo { dir, port, directory, ha: false } => {
            passback::demo::run(&dir, port, directory).await.context("demo")?;
        }
        Cmd::Demo { dir, port, directory, ha: true } => {
            passback::demo::run_ha(&dir, port, directory).await.context("demo --ha")?;
        }
        Cmd::Bench { load, seconds, ad, history, database, instances, breached } => {
            if let Some(hashes) = breached {
                passback::bench::breached(hashes).context("bench --breached")?;
            } else if load {
                passback::bench::load(seconds, database, instances).await.context("bench --load")?;
            } else {
                passback::bench::latency(ad, history, database).await.context("bench")?;
            }
        }
    }
    Ok(())
}

async fn user_command(db: &passback::store::Db, cmd: UserCmd, now: i64) -> anyhow::Result<()> {
    use passback::domain::{EmailAddress, LoginName, UserKind};
    match cmd {
        UserCmd::AddCloud { username, email, name } => {
            let username = LoginName::parse(&username).map_err(|e| anyhow::anyhow!("--username: {e}"))?;
            let email =
                email.map(|e| EmailAddress::parse(&e)).transpose().map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            let display = name.unwrap_or_else(|| username.as_str().to_string());
            let id =
                passback::store::cloud::add(db, username.as_str(), email.as_ref().map(|e| e.as_str()), &display, now)
                    .await
                    .context("adding the account (is the user name taken?)")?;
            println!(
                "Cloud-only account {} added ({id}). The person sets a password with \"forgot my password\".",
                username.as_str()
            );
        }
        UserCmd::SetKind { directory, login, kind } => {
            let kind = UserKind::parse(&kind)
                .filter(|k| *k != UserKind::CloudOnly)
                .context("--kind must be hash_synced or federated")?;
            let login = LoginName::parse(&login).map_err(|e| anyhow::anyhow!("--login: {e}"))?;
            let people: Vec<_> = passback::store::users::find_by_login(db, login.as_str())
                .await?
                .into_iter()
                .filter(|u| u.directory == directory)
                .collect();
            let [person] = people.as_slice() else {
                anyhow::bail!(
                    "{} people match {:?} in directory {directory}: name exactly one",
                    people.len(),
                    login.as_str()
                );
            };
            passback::store::users::set_kind_override(db, &directory, &person.anchor, kind.as_str()).await?;
            println!("{} in {directory} is now {}.", person.username, kind.as_str());
        }
    }
    Ok(())
}

async fn staff_command(db: &passback::store::Db, cfg: &PortalConfig, cmd: StaffCmd, now: i64) -> anyhow::Result<()> {
    use passback::store::staff::Role;
    use passback::usecase::{self, By};
    if let StaffCmd::List = cmd {
        for s in passback::store::staff::all(db).await? {
            let state = if s.enabled() { "" } else { " (disabled)" };
            println!("{}\t{}\t{}{state}", s.username, s.role, s.scope_json);
        }
        return Ok(());
    }
    let secrets = passback::store::DataKey::from_config(&cfg.secrets)?;
    let mailer = passback::mail::Mailer::new(&cfg.mail)?;
    // The process ends with the command: its mail is sent before it does.
    let ctx = usecase::Ctx { db, secrets: &secrets, mailer: &mailer, now, mail_in_background: false };
    match cmd {
        StaffCmd::Add { username, role, name, email, directories, base_dns, groups, may_reset_protected, everyone } => {
            let role = Role::parse(&role).context("--role must be administrator, helpdesk or auditor")?;
            let narrowed = !(directories.is_empty() && base_dns.is_empty() && groups.is_empty());
            if role == Role::Helpdesk && narrowed == everyone {
                anyhow::bail!(
                    "a helpdesk account needs --directory, --base-dn or --group, or else --everyone (not both)"
                );
            }
            if let Some(d) = directories.iter().find(|d| !cfg.directories.contains_key(*d)) {
                anyhow::bail!("--directory {d}: no such directory in the portal's configuration");
            }
            let spec = usecase::staff::StaffSpec {
                display_name: name.unwrap_or_else(|| username.clone()),
                username,
                email,
                role,
                scope: passback::store::users::Scope { directories, base_dns, groups, everyone },
                may_reset_protected,
            };
            let creds = usecase::staff::add(&ctx, &By::CommandLine, &spec).await?.context("that user name is taken")?;
            println!("Staff account {} ({}) added as {}.", spec.username, creds.id, role.as_str());
            println!("Password:          {}", secrecy::ExposeSecret::expose_secret(&creds.password));
            println!("Authenticator key: {}", creds.seed_text().as_str());
            eprintln!(
                "Shown once. Give them to the owner over a trusted channel: they work for one sign-in at \
                 /staff/signin, where the owner sets up their own authenticator and password."
            );
        }
        StaffCmd::Disable { ref username } | StaffCmd::Enable { ref username } => {
            let enable = matches!(cmd, StaffCmd::Enable { .. });
            let row = passback::store::staff::by_username(db, username).await?.context("no such staff account")?;
            usecase::staff::set_enabled(&ctx, &By::CommandLine, &row, enable).await?;
            println!("{} is now {}.", row.username, if enable { "enabled" } else { "disabled; its sessions ended" });
        }
        StaffCmd::ClearSigninLimits { username } => {
            let n = usecase::staff::clear_signin_limits(&ctx, &By::CommandLine, &username).await?;
            println!("{n} counted sign-ins forgotten for {username}.");
        }
        StaffCmd::ResetSignin { username } => {
            let row = passback::store::staff::by_username(db, &username).await?.context("no such staff account")?;
            let creds = usecase::staff::reset_signin(&ctx, &By::CommandLine, &row).await?;
            println!("Password:          {}", secrecy::ExposeSecret::expose_secret(&creds.password));
            println!("Authenticator key: {}", creds.seed_text().as_str());
            eprintln!("Shown once; they work for one sign-in, where {} enrols their own.", row.username);
        }
        StaffCmd::List => {}
    }
    Ok(())
}

/// One line of standard input, as a secret. At a terminal, `prompt` is shown and what is typed
/// is not (echo is turned off, and back on whatever happens).
fn read_secret_line(prompt: &str) -> anyhow::Result<SecretString> {
    use std::io::{IsTerminal, Write};
    use zeroize::Zeroize;
    let stdin = std::io::stdin();
    let echo_off = stdin.is_terminal().then(|| {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        EchoOff::new()
    });
    // Reserved up front, so that no copy of the password is left behind by a reallocation.
    let mut line = String::with_capacity(4096);
    let read = stdin.read_line(&mut line).context("reading the candidate from standard input");
    // (ECHONL: the Enter key still moves to a new line.)
    drop(echo_off);
    read?;
    let secret = SecretString::from(line.trim_end_matches(['\r', '\n']).to_string());
    line.zeroize();
    Ok(secret)
}

/// The terminal on standard input with echo off, until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails (then it is not used), and
        // tcsetattr only reads it. File descriptor 0 stays open for the life of the process.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            // TCSAFLUSH: anything typed before echo went off is dropped, not read as the password.
            (libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) == 0).then_some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: as above; the settings saved before are put back.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}
