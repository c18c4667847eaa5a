//! Load and verify: 200 people, 32 browsers, each doing reset → change → change through the
//! pages for a minute; then every person's password is checked with an LDAP bind and every
//! answer a browser saw is reconciled with the audit. Then again while processes are killed and
//! the directory is paused for five seconds.
//!
//! On one instance (the default) the agent is killed and restarted twice. With `--instances 2`
//! (on PostgreSQL) the same load runs, one after the other, on SQLite with one instance, on
//! PostgreSQL with one, and on PostgreSQL with two behind a round-robin balancer, two agents each
//! time; then on the last, one instance and one agent are each killed and restarted twice while
//! the directory is paused once, and the time the killed instance's agents take to be connected
//! to another is measured.
//!
//! A browser whose connection drops does what a person would: a form that writes is sent again
//! as it was (the portal answers it with what its first sending came to, or carries it on), and
//! the steps before it start again from the first page.
//!
//! What must hold: no write lost (each person's last confirmed password binds), none applied
//! twice, every request answered with an outcome, and a request answered with a definite failure
//! left the password as it was. "Not confirmed" (PB-1002) answers are resolved by binding: the
//! directory says whether the write happened, and the run reports how many did.

use super::{client, hidden, out_dir, BenchDatabase, Rig, Shape, MONITOR_TOKEN};
use crate::store::Stmt;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PEOPLE: usize = 200;
const CLIENTS: usize = 32;
/// How many times a browser sends a form again after its connection dropped, a quarter of a
/// second apart, and starts a reset again after an earlier step's did.
const TRIES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Reset,
    Change,
}

/// What a round does besides the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chaos {
    None,
    /// The agent killed and restarted twice, the directory paused once.
    Agent,
    /// One instance and one agent each killed and restarted twice, the directory paused once.
    Everything,
}

/// What one request ended in, as the browser saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Success,
    /// A definite failure: nothing was written.
    Failure(String),
    /// PB-1002: sent, answer lost. Resolved afterwards by binding.
    Unconfirmed,
    /// No outcome at all: a transport error or a page without a code. Must never happen.
    Nothing(String),
}

/// One browser's attempt: what it saw, under which support code, how long the form that writes
/// took to be answered (sent again included), and how often it was sent again or begun again.
struct Tried {
    seen: Seen,
    support: Option<String>,
    waited: Duration,
    sent_again: usize,
    started_again: usize,
}

impl Tried {
    fn nothing(why: String) -> Tried {
        Tried { seen: Seen::Nothing(why), support: None, waited: Duration::ZERO, sent_again: 0, started_again: 0 }
    }
}

struct Observation {
    op: Op,
    tried: Tried,
}

#[derive(Default, Debug, serde::Serialize)]
struct Round {
    name: String,
    seconds: f64,
    requests: usize,
    per_second: f64,
    /// How long the form that writes took to be answered, as the browser waited.
    p50_ms: f64,
    p99_ms: f64,
    by_outcome: BTreeMap<String, usize>,
    successes: usize,
    unconfirmed_applied: usize,
    unconfirmed_not_applied: usize,
    /// Forms sent again after a dropped connection, and resets begun again.
    sent_again: usize,
    started_again: usize,
    /// Per instance killed: seconds until its agents were connected to another (`None`: it had
    /// none).
    agents_back_after_secs: Vec<Option<f64>>,
    /// People whose last confirmed password does not bind, and changes refused because the
    /// last confirmed password was not the current one.
    lost_writes: usize,
    /// Support codes with more than one writeback in the audit, and message ids taken by more
    /// than one agent.
    double_writes: usize,
    without_outcome: usize,
    /// Definite failures after which the password was no longer the previous one.
    failures_that_changed_the_password: usize,
    /// Answers whose audit row is missing or says otherwise.
    audit_mismatches: usize,
}

/// The outcome code on an answer page, if it shows one.
fn code_on(page: &str) -> Option<String> {
    let i = page.find("PB-")?;
    let code = page.get(i..i + 7)?;
    code[3..].bytes().all(|b| b.is_ascii_digit()).then(|| code.to_string())
}

fn seen_on(page: &str) -> Seen {
    if page.contains("Your password has been changed") {
        return Seen::Success;
    }
    match code_on(page) {
        Some(c) if c == "PB-1002" => Seen::Unconfirmed,
        Some(c) => Seen::Failure(c),
        None => Seen::Nothing(format!("a page without an outcome: {}", page.chars().take(200).collect::<String>())),
    }
}

fn support_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get("x-support-code").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Posts `form` to `path` until an answer comes whole: sent again as it was after a dropped
/// connection. The page, its support code, and how many times it was sent again.
async fn post_until_answered(
    rig: &Rig,
    c: &reqwest::Client,
    path: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<(String, Option<String>, usize)> {
    let mut last = None;
    for again in 0..TRIES {
        let sent = async {
            let resp = c.post(format!("{}{path}", rig.url)).form(form).send().await?;
            let support = support_of(&resp);
            Ok::<_, reqwest::Error>((resp.text().await?, support))
        };
        match sent.await {
            Ok((page, support)) => return Ok((page, support, again)),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("never sent"), anyhow::Error::from))
}

/// One browser's reset of `person` to `new`, through every page; begun again when a step
/// before the last one loses its connection.
async fn reset(rig: &Rig, c: &reqwest::Client, person: &super::Person, new: &str) -> Tried {
    let mut last = String::new();
    for started_again in 0..TRIES {
        match reset_once(rig, c, person, new).await {
            Ok(mut tried) => {
                tried.started_again = started_again;
                return tried;
            }
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Tried::nothing(last)
}

async fn reset_once(rig: &Rig, c: &reqwest::Client, person: &super::Person, new: &str) -> anyhow::Result<Tried> {
    let page = c.get(format!("{}/reset", rig.url)).send().await?.text().await?;
    let csrf = hidden(&page, "csrf").unwrap_or_default();
    let before = rig.mails_to(&person.email);
    let form = [("csrf", csrf.as_str()), ("login", person.uid.as_str())];
    let resp = c.post(format!("{}/reset", rig.url)).form(&form).send().await?;
    let support = support_of(&resp);
    let page = resp.text().await?;
    let early = |seen, support| Tried { seen, support, waited: Duration::ZERO, sent_again: 0, started_again: 0 };
    let Some(csrf) = hidden(&page, "csrf").filter(|_| page.contains("Check your e-mail")) else {
        // Refused before any code was sent (no agent alive): a definite answer.
        return Ok(early(seen_on(&page), support));
    };
    // No code within 5 s: the instance that was to mail it died (or the directory was paused
    // while it looked the person up). A person asks again.
    let code = rig.code_for(&person.email, before).await.ok_or_else(|| anyhow::anyhow!("no code was mailed"))?;
    let form = [("csrf", csrf.as_str()), ("code", code.as_str())];
    let page = c.post(format!("{}/reset/verify", rig.url)).form(&form).send().await?.text().await?;
    let (Some(csrf), Some(key)) = (hidden(&page, "csrf"), hidden(&page, "form_key")) else {
        return Ok(early(seen_on(&page), None));
    };
    let form = [("csrf", csrf.as_str()), ("form_key", key.as_str()), ("password", new), ("confirm", new)];
    let started = Instant::now();
    let (page, support, sent_again) = post_until_answered(rig, c, "/reset/password", &form).await?;
    Ok(Tried { seen: seen_on(&page), support, waited: started.elapsed(), sent_again, started_again: 0 })
}

/// One browser's change of `person`'s password from `old` to `new`.
async fn change(rig: &Rig, c: &reqwest::Client, person: &super::Person, old: &str, new: &str) -> Tried {
    let step = async {
        let mut page = None;
        for _ in 0..TRIES {
            if let Ok(p) = async { c.get(format!("{}/change", rig.url)).send().await?.text().await }.await {
                page = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let page = page.ok_or_else(|| anyhow::anyhow!("the change form never came"))?;
        let (csrf, key) = (hidden(&page, "csrf").unwrap_or_default(), hidden(&page, "form_key").unwrap_or_default());
        let form = [
            ("csrf", csrf.as_str()),
            ("form_key", key.as_str()),
            ("login", person.uid.as_str()),
            ("current", old),
            ("password", new),
            ("confirm", new),
        ];
        let started = Instant::now();
        let (page, support, sent_again) = post_until_answered(rig, c, "/change", &form).await?;
        Ok::<_, anyhow::Error>(Tried {
            seen: seen_on(&page),
            support,
            waited: started.elapsed(),
            sent_again,
            started_again: 0,
        })
    };
    step.await.unwrap_or_else(|e| Tried::nothing(format!("{e:#}")))
}

async fn binds(rig: &Rig, uid: &str, password: &str) -> bool {
    crate::sandbox::bind_works(
        rig.server.url(),
        &rig.ca.ca_file,
        &rig.server.user_dn(uid),
        &SecretString::from(password.to_string()),
    )
    .await
}

/// The state every browser shares: each person's current password, and what was seen.
struct Shared {
    expected: Vec<Mutex<String>>,
    counter: AtomicUsize,
    seen: Mutex<Vec<Observation>>,
    round: Mutex<Round>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn browser(rig: Arc<Rig>, shared: Arc<Shared>, k: usize, until: Instant) -> anyhow::Result<()> {
    let c = client(&rig.ca)?;
    let mine: Vec<usize> = (k..PEOPLE).step_by(CLIENTS).collect();
    let mut turn = 0usize;
    while Instant::now() < until {
        let n = mine[turn % mine.len()];
        turn += 1;
        for op in [Op::Reset, Op::Change, Op::Change] {
            if Instant::now() >= until {
                break;
            }
            let person = rig.people[n].clone();
            let old = lock(&shared.expected[n]).clone();
            let new = format!("Load-Pass-{:07}!", shared.counter.fetch_add(1, Ordering::Relaxed));
            let tried = match op {
                Op::Reset => reset(&rig, &c, &person, &new).await,
                Op::Change => change(&rig, &c, &person, &old, &new).await,
            };
            // What the directory has now decides the next step; check it where the answer
            // leaves any doubt, or where it must have left the password alone.
            match &tried.seen {
                Seen::Success => *lock(&shared.expected[n]) = new.clone(),
                Seen::Unconfirmed => {
                    let applied = binds(&rig, &person.uid, &new).await;
                    let mut r = lock(&shared.round);
                    if applied {
                        r.unconfirmed_applied += 1;
                        *lock(&shared.expected[n]) = new.clone();
                    } else {
                        r.unconfirmed_not_applied += 1;
                    }
                }
                Seen::Failure(code) => {
                    // A change is sent with the last password confirmed: the directory refusing it
                    // as wrong means a write said "changed" that did not happen (or one said
                    // otherwise that did).
                    if op == Op::Change && code == "PB-3005" {
                        lock(&shared.round).lost_writes += 1;
                    }
                    if binds(&rig, &person.uid, &new).await {
                        lock(&shared.round).failures_that_changed_the_password += 1;
                        *lock(&shared.expected[n]) = new.clone();
                    }
                }
                Seen::Nothing(_) => {}
            }
            lock(&shared.seen).push(Observation { op, tried });
        }
    }
    Ok(())
}

/// The instance the portal at `port` is (each picks its id when it starts).
async fn instance_id(rig: &Rig, port: u16) -> anyhow::Result<String> {
    let c = client(&rig.ca)?;
    let url = format!("https://localhost:{port}/admin/health.json");
    let health: serde_json::Value = c.get(url).bearer_auth(MONITOR_TOKEN).send().await?.json().await?;
    health["instance"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no instance in the health JSON"))
}

/// Kills instance `i` and restarts it 3 s later; returns how long the agents it held took to be
/// connected to another instance (`None`: it held none).
async fn kill_instance(rig: &Rig, db: &crate::store::Db, i: usize) -> anyhow::Result<Option<f64>> {
    let port = super::lock(&rig.instances)[i].port;
    let id = instance_id(rig, port).await?;
    let held: i64 =
        Stmt::new("SELECT COUNT(*) FROM relay_presence WHERE instance = ?").bind(id.as_str()).scalar_one(db).await?;
    eprintln!("bench: killing instance {} ({held} agents connected to it)", i + 1);
    rig.kill_instance(i);
    let killed = Instant::now();
    let agents = i64::try_from(super::lock(&rig.agents).len())?;
    let mut back = None;
    while held > 0 && killed.elapsed() < Duration::from_secs(30) {
        // Another instance writes its agents at once when one connects, and every second.
        let elsewhere: i64 = Stmt::new(
            "SELECT COUNT(DISTINCT agent_id) FROM relay_presence WHERE instance <> ? \
             AND last_seen >= CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT) - 2",
        )
        .bind(id.as_str())
        .scalar_one(db)
        .await?;
        if elsewhere >= agents {
            back = Some(killed.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;
    rig.restart_instance(i)?;
    Ok(back)
}

async fn kill_agent(rig: &Rig, i: usize) -> anyhow::Result<()> {
    eprintln!("bench: killing agent {}", i + 1);
    rig.kill_agent(i);
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.restart_agent(i)
}

async fn pause_directory(rig: &Rig) {
    eprintln!("bench: pausing the directory for 5 s");
    let pid = rig.server.pid();
    signal(pid, "STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal(pid, "CONT");
}

/// What happens during a round besides the load, at its sixths.
async fn make_trouble(rig: &Rig, chaos: Chaos, started: Instant, seconds: u64) -> anyhow::Result<Vec<Option<f64>>> {
    let at = |sixths: u32| tokio::time::sleep_until((started + Duration::from_secs(seconds) * sixths / 6).into());
    let mut back = Vec::new();
    match chaos {
        Chaos::None => {}
        Chaos::Agent => {
            at(1).await;
            kill_agent(rig, 0).await?;
            at(2).await;
            pause_directory(rig).await;
            at(4).await;
            kill_agent(rig, 0).await?;
        }
        Chaos::Everything => {
            let db = crate::store::connect(&rig.database_url, 1).await?;
            at(1).await;
            back.push(kill_instance(rig, &db, 0).await?);
            at(2).await;
            kill_agent(rig, 0).await?;
            at(3).await;
            pause_directory(rig).await;
            at(4).await;
            back.push(kill_instance(rig, &db, 0).await?);
            at(5).await;
            kill_agent(rig, 0).await?;
            db.close().await;
        }
    }
    Ok(back)
}

async fn round(
    rig: Arc<Rig>,
    name: &str,
    expected: Vec<String>,
    seconds: u64,
    chaos: Chaos,
) -> anyhow::Result<(Round, Vec<String>)> {
    eprintln!("bench: load round \"{name}\" for {seconds} s…");
    let shared = Arc::new(Shared {
        expected: expected.into_iter().map(Mutex::new).collect(),
        counter: AtomicUsize::new(if chaos == Chaos::None { 0 } else { 5_000_000 }),
        seen: Mutex::new(Vec::new()),
        round: Mutex::new(Round { name: name.into(), ..Default::default() }),
    });
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let browsers: Vec<_> = (0..CLIENTS).map(|k| tokio::spawn(browser(rig.clone(), shared.clone(), k, until))).collect();
    let agents_back = make_trouble(&rig, chaos, started, seconds).await?;
    for b in browsers {
        b.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    rig.wait_for_agents().await?;

    let mut r = std::mem::take(&mut *lock(&shared.round));
    r.seconds = elapsed;
    r.agents_back_after_secs = agents_back;
    let seen = std::mem::take(&mut *lock(&shared.seen));
    r.requests = seen.len();
    r.per_second = r.requests as f64 / elapsed;
    let waits: Vec<Duration> = seen.iter().map(|o| o.tried.waited).filter(|w| !w.is_zero()).collect();
    let stats = super::Stats::from(name, CLIENTS, waits, 0, Duration::from_secs_f64(elapsed));
    (r.p50_ms, r.p99_ms) = (stats.p50_ms, stats.p99_ms);

    // Every answer against the audit: its row is there, once, with the outcome the browser saw.
    let db = crate::store::connect(&rig.database_url, 1).await?;
    let rows: Vec<(String, String, String)> = Stmt::new(
        "SELECT support_code, operation, outcome_code FROM audit \
         WHERE operation IN ('reset.writeback', 'change.writeback', 'reset.identify', 'change.identify')",
    )
    .fetch_all(&db)
    .await?;
    db.close().await;
    let mut audit: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (support, op, code) in rows {
        audit.entry(support).or_default().push((op, code));
    }
    for o in &seen {
        let t = &o.tried;
        let label = match &t.seen {
            Seen::Success => "PB-0000".to_string(),
            Seen::Failure(c) => c.clone(),
            Seen::Unconfirmed => "PB-1002".to_string(),
            Seen::Nothing(why) => {
                eprintln!("bench: a request without an outcome: {why}");
                "none".to_string()
            }
        };
        *r.by_outcome.entry(format!("{:?} {label}", o.op)).or_default() += 1;
        r.sent_again += t.sent_again;
        r.started_again += t.started_again;
        match &t.seen {
            Seen::Nothing(_) => r.without_outcome += 1,
            Seen::Success => r.successes += 1,
            _ => {}
        }
        let rows = t.support.as_ref().and_then(|s| audit.get(s));
        let writes = rows.map_or(0, |v| v.iter().filter(|(op, _)| op.ends_with(".writeback")).count());
        if writes > 1 {
            r.double_writes += 1;
        }
        let matches = match (&t.seen, rows) {
            (Seen::Nothing(_), _) => true,
            (_, None) => false,
            (seen, Some(rows)) => rows.iter().any(|(_, code)| match seen {
                Seen::Success => code == "PB-0000" || code == "PB-0001",
                Seen::Failure(c) => code == c,
                Seen::Unconfirmed => code == "PB-1002",
                Seen::Nothing(_) => true,
            }),
        };
        if !matches {
            r.audit_mismatches += 1;
        }
    }
    r.double_writes += taken_by_several_agents(&rig);

    // Every person's last confirmed password binds.
    let expected: Vec<String> = shared.expected.iter().map(|m| lock(m).clone()).collect();
    for (n, pw) in expected.iter().enumerate() {
        if !binds(&rig, &rig.people[n].uid, pw).await {
            r.lost_writes += 1;
        }
    }
    Ok((r, expected))
}

/// Message ids that more than one agent took (each agent writes every id it takes into its
/// journal before it touches the directory): each would be a write carried out twice.
fn taken_by_several_agents(rig: &Rig) -> usize {
    let mut taken: HashMap<String, usize> = HashMap::new();
    for a in super::lock(&rig.agents).iter() {
        let journal = crate::agent::journal::Journal::path_for(&a.state_file);
        let entries = crate::agent::journal::Journal::entries(&journal).unwrap_or_default();
        let ids: std::collections::HashSet<String> = entries.into_iter().map(|(id, _)| id).collect();
        for id in ids {
            *taken.entry(id).or_default() += 1;
        }
    }
    taken.values().filter(|n| **n > 1).count()
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").args(["-s", sig, "--", &pid.to_string()]).status();
}

/// One set-up of a run: where the portal keeps its state, and how many of each process.
struct Setup {
    name: String,
    database: BenchDatabase,
    shape: Shape,
    chaos: Chaos,
}

pub async fn run(seconds: u64, database: BenchDatabase, instances: usize) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    anyhow::ensure!(
        instances <= 1 || database == BenchDatabase::Postgres,
        "several instances share a PostgreSQL database: add --database postgres"
    );
    let setups = if instances <= 1 {
        vec![Setup { name: String::new(), database, shape: Shape::ONE, chaos: Chaos::Agent }]
    } else {
        let agents = 2;
        let one = Shape { instances: 1, agents };
        vec![
            Setup {
                name: "SQLite, 1 instance".into(),
                database: BenchDatabase::Sqlite,
                shape: one,
                chaos: Chaos::None,
            },
            Setup {
                name: "PostgreSQL, 1 instance".into(),
                database: BenchDatabase::Postgres,
                shape: one,
                chaos: Chaos::None,
            },
            Setup {
                name: format!("PostgreSQL, {instances} instances"),
                database: BenchDatabase::Postgres,
                shape: Shape { instances, agents },
                chaos: Chaos::Everything,
            },
        ]
    };
    let mut rounds = Vec::new();
    for setup in &setups {
        let rig = Rig::start(&out_dir().join("load-run"), PEOPLE, false, 0, setup.database, setup.shape).await?;
        let rig = Arc::new(rig);
        let start_pw = rig.server.initial_password().to_string();
        let label =
            |what: &str| if setup.name.is_empty() { what.to_string() } else { format!("{}: {what}", setup.name) };
        let (steady, expected) =
            round(rig.clone(), &label("steady"), vec![start_pw; PEOPLE], seconds, Chaos::None).await?;
        rounds.push(steady);
        if setup.chaos != Chaos::None {
            let what = match setup.chaos {
                Chaos::Agent => "with the agent killed twice and the directory paused",
                _ => "with an instance and an agent each killed twice and the directory paused",
            };
            rounds.push(round(rig.clone(), &label(what), expected, seconds, setup.chaos).await?.0);
        }
    }

    println!(
        "\npassback bench --load — {PEOPLE} people, {CLIENTS} browsers, reset → change → change; the wait is for \
         the form that writes\n"
    );
    for r in &rounds {
        println!(
            "round: {} ({:.0} s, {} requests, {:.1}/s, wait p50 {:.1} ms, p99 {:.1} ms)",
            r.name, r.seconds, r.requests, r.per_second, r.p50_ms, r.p99_ms
        );
        for (k, v) in &r.by_outcome {
            println!("  {k:<22} {v:>6}");
        }
        println!(
            "  lost writes {}  ·  double writes {}  ·  without an outcome {}  ·  failures that changed the password {}  ·  audit mismatches {}",
            r.lost_writes, r.double_writes, r.without_outcome, r.failures_that_changed_the_password, r.audit_mismatches
        );
        println!(
            "  not confirmed (PB-1002), resolved by binding: {} applied, {} not applied",
            r.unconfirmed_applied, r.unconfirmed_not_applied
        );
        println!(
            "  forms sent again after a dropped connection: {}  ·  resets begun again: {}",
            r.sent_again, r.started_again
        );
        for (k, back) in r.agents_back_after_secs.iter().enumerate() {
            match back {
                Some(s) => println!("  instance killed ({}): its agents connected to another after {s:.1} s", k + 1),
                None => println!("  instance killed ({}): no agent was connected to it", k + 1),
            }
        }
        println!();
    }
    std::fs::create_dir_all(out_dir())?;
    let path = out_dir().join("load.json");
    std::fs::write(&path, serde_json::to_string_pretty(&serde_json::json!({ "rounds": rounds }))?)?;
    println!("figures written to {}", path.display());
    let bad = rounds.iter().any(|r| {
        r.lost_writes + r.double_writes + r.without_outcome + r.failures_that_changed_the_password + r.audit_mismatches
            > 0
    });
    anyhow::ensure!(!bad, "the load-and-verify run found lost, double or unanswered writes (see above)");
    Ok(())
}
