//! Load and verify: 200 people, 32 browsers, each doing reset → change → change through the
//! pages for a minute; then every person's password is checked with an LDAP bind and every
//! answer a browser saw is reconciled with the audit. Then again while the agent is killed and
//! restarted twice and the directory is paused for five seconds.
//!
//! What must hold: no write lost (each person's last confirmed password binds), none applied
//! twice, every request answered with an outcome, and a request answered with a definite failure
//! left the password as it was. "Not confirmed" (PB-1002) answers are resolved by binding: the
//! directory says whether the write happened, and the run reports how many did.

use super::{client, hidden, out_dir, Rig};
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PEOPLE: usize = 200;
const CLIENTS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Reset,
    Change,
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

struct Observation {
    op: Op,
    seen: Seen,
    support_code: Option<String>,
}

#[derive(Default, Debug, serde::Serialize)]
struct Round {
    name: String,
    seconds: f64,
    requests: usize,
    by_outcome: BTreeMap<String, usize>,
    successes: usize,
    unconfirmed_applied: usize,
    unconfirmed_not_applied: usize,
    /// People whose last confirmed password does not bind.
    lost_writes: usize,
    /// Support codes with more than one writeback in the audit, and repeated message ids at the agent.
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

/// One browser's reset of `person` to `new`, through every page.
async fn reset(rig: &Rig, c: &reqwest::Client, person: &super::Person, new: &str) -> (Seen, Option<String>) {
    let step = async {
        let page = c.get(format!("{}/reset", rig.url)).send().await?.text().await?;
        let csrf = hidden(&page, "csrf").unwrap_or_default();
        let before = rig.mails_to(&person.email);
        let form = [("csrf", csrf.as_str()), ("login", person.uid.as_str())];
        let resp = c.post(format!("{}/reset", rig.url)).form(&form).send().await?;
        let support = resp.headers().get("x-support-code").and_then(|v| v.to_str().ok()).map(str::to_string);
        let page = resp.text().await?;
        let Some(csrf) = hidden(&page, "csrf").filter(|_| page.contains("Check your e-mail")) else {
            // Refused before any code was sent (no agent alive): a definite answer.
            return Ok::<_, anyhow::Error>((seen_on(&page), support));
        };
        let Some(code) = rig.code_for(&person.email, before).await else {
            return Ok((Seen::Nothing("no code was mailed".into()), None));
        };
        let form = [("csrf", csrf.as_str()), ("code", code.as_str())];
        let page = c.post(format!("{}/reset/verify", rig.url)).form(&form).send().await?.text().await?;
        let (Some(csrf), Some(key)) = (hidden(&page, "csrf"), hidden(&page, "form_key")) else {
            return Ok((seen_on(&page), None));
        };
        let form = [("csrf", csrf.as_str()), ("form_key", key.as_str()), ("password", new), ("confirm", new)];
        let resp = c.post(format!("{}/reset/password", rig.url)).form(&form).send().await?;
        let support = resp.headers().get("x-support-code").and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok((seen_on(&resp.text().await?), support))
    };
    step.await.unwrap_or_else(|e| (Seen::Nothing(format!("{e:#}")), None))
}

/// One browser's change of `person`'s password from `old` to `new`.
async fn change(
    rig: &Rig,
    c: &reqwest::Client,
    person: &super::Person,
    old: &str,
    new: &str,
) -> (Seen, Option<String>) {
    let step = async {
        let page = c.get(format!("{}/change", rig.url)).send().await?.text().await?;
        let (csrf, key) = (hidden(&page, "csrf").unwrap_or_default(), hidden(&page, "form_key").unwrap_or_default());
        let form = [
            ("csrf", csrf.as_str()),
            ("form_key", key.as_str()),
            ("login", person.uid.as_str()),
            ("current", old),
            ("password", new),
            ("confirm", new),
        ];
        let resp = c.post(format!("{}/change", rig.url)).form(&form).send().await?;
        let support = resp.headers().get("x-support-code").and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok::<_, anyhow::Error>((seen_on(&resp.text().await?), support))
    };
    step.await.unwrap_or_else(|e| (Seen::Nothing(format!("{e:#}")), None))
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

async fn browser(
    rig: Arc<tokio::sync::RwLock<Rig>>,
    shared: Arc<Shared>,
    k: usize,
    until: Instant,
) -> anyhow::Result<()> {
    let c = client(&rig.read().await.ca)?;
    let mine: Vec<usize> = (k..PEOPLE).step_by(CLIENTS).collect();
    let mut turn = 0usize;
    while Instant::now() < until {
        let n = mine[turn % mine.len()];
        turn += 1;
        for op in [Op::Reset, Op::Change, Op::Change] {
            if Instant::now() >= until {
                break;
            }
            let rig = rig.read().await;
            let person = rig.people[n].clone();
            let old = shared.expected[n].lock().map(|s| s.clone()).unwrap_or_default();
            let new = format!("Load-Pass-{:07}!", shared.counter.fetch_add(1, Ordering::Relaxed));
            let (seen, support_code) = match op {
                Op::Reset => reset(&rig, &c, &person, &new).await,
                Op::Change => change(&rig, &c, &person, &old, &new).await,
            };
            // What the directory has now decides the next step; check it where the answer
            // leaves any doubt, or where it must have left the password alone.
            match &seen {
                Seen::Success => {
                    if let Ok(mut e) = shared.expected[n].lock() {
                        *e = new.clone();
                    }
                }
                Seen::Unconfirmed => {
                    let applied = binds(&rig, &person.uid, &new).await;
                    if let Ok(mut r) = shared.round.lock() {
                        if applied {
                            r.unconfirmed_applied += 1;
                        } else {
                            r.unconfirmed_not_applied += 1;
                        }
                    }
                    if applied {
                        if let Ok(mut e) = shared.expected[n].lock() {
                            *e = new.clone();
                        }
                    }
                }
                Seen::Failure(_) => {
                    if binds(&rig, &person.uid, &new).await {
                        if let Ok(mut r) = shared.round.lock() {
                            r.failures_that_changed_the_password += 1;
                        }
                        if let Ok(mut e) = shared.expected[n].lock() {
                            *e = new.clone();
                        }
                    }
                }
                Seen::Nothing(_) => {}
            }
            if let Ok(mut s) = shared.seen.lock() {
                s.push(Observation { op, seen, support_code });
            }
        }
    }
    Ok(())
}

async fn round(
    rig: Arc<tokio::sync::RwLock<Rig>>,
    expected: Vec<String>,
    seconds: u64,
    chaos: bool,
) -> anyhow::Result<(Round, Vec<String>)> {
    let name = if chaos { "with the agent killed twice and the directory paused" } else { "steady" };
    eprintln!("bench: load round \"{name}\" for {seconds} s…");
    let shared = Arc::new(Shared {
        expected: expected.into_iter().map(Mutex::new).collect(),
        counter: AtomicUsize::new(if chaos { 5_000_000 } else { 0 }),
        seen: Mutex::new(Vec::new()),
        round: Mutex::new(Round { name: name.into(), ..Default::default() }),
    });
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let browsers: Vec<_> = (0..CLIENTS).map(|k| tokio::spawn(browser(rig.clone(), shared.clone(), k, until))).collect();
    if chaos {
        let at = |fraction: f64| started + Duration::from_secs_f64(seconds as f64 * fraction);
        tokio::time::sleep_until(at(1.0 / 6.0).into()).await;
        eprintln!("bench: killing the agent");
        rig.write().await.kill_agent();
        tokio::time::sleep(Duration::from_secs(3)).await;
        rig.write().await.restart_agent()?;
        tokio::time::sleep_until(at(0.4).into()).await;
        let slapd = rig.read().await.server.pid();
        eprintln!("bench: pausing the directory for 5 s");
        signal(slapd, "STOP");
        tokio::time::sleep(Duration::from_secs(5)).await;
        signal(slapd, "CONT");
        tokio::time::sleep_until(at(2.0 / 3.0).into()).await;
        eprintln!("bench: killing the agent again");
        rig.write().await.kill_agent();
        tokio::time::sleep(Duration::from_secs(3)).await;
        rig.write().await.restart_agent()?;
    }
    for b in browsers {
        b.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rig_now = rig.read().await;
    rig_now.wait_for_agent().await?;

    let mut r = std::mem::take(&mut *shared.round.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    r.seconds = elapsed;
    let seen = std::mem::take(&mut *shared.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    r.requests = seen.len();

    // Every answer against the audit: its row is there, once, with the outcome the browser saw.
    let db =
        crate::store::connect(&format!("sqlite://{}?mode=ro", rig_now.dir.join("passback.db").display()), 1).await?;
    let rows: Vec<(String, String, String)> = crate::store::Stmt::new(
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
        let label = match &o.seen {
            Seen::Success => "PB-0000".to_string(),
            Seen::Failure(c) => c.clone(),
            Seen::Unconfirmed => "PB-1002".to_string(),
            Seen::Nothing(why) => {
                eprintln!("bench: a request without an outcome: {why}");
                "none".to_string()
            }
        };
        *r.by_outcome.entry(format!("{:?} {label}", o.op)).or_default() += 1;
        match &o.seen {
            Seen::Nothing(_) => r.without_outcome += 1,
            Seen::Success => r.successes += 1,
            _ => {}
        }
        let writes: Vec<&(String, String)> = o
            .support_code
            .as_ref()
            .and_then(|s| audit.get(s))
            .map(|v| v.iter().filter(|(op, _)| op.ends_with(".writeback")).collect())
            .unwrap_or_default();
        if writes.len() > 1 {
            r.double_writes += 1;
        }
        let matches = match (&o.seen, o.support_code.as_ref().and_then(|s| audit.get(s))) {
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
    // The agent never wrote a message twice.
    let log = std::fs::read_to_string(rig_now.dir.join("agent.log")).unwrap_or_default();
    r.double_writes += log.matches("repeated message id").count();

    // Every person's last confirmed password binds.
    let expected: Vec<String> =
        shared.expected.iter().map(|m| m.lock().map(|s| s.clone()).unwrap_or_default()).collect();
    for (n, pw) in expected.iter().enumerate() {
        if !binds(&rig_now, &rig_now.people[n].uid, pw).await {
            r.lost_writes += 1;
        }
    }
    Ok((r, expected))
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").args(["-s", sig, "--", &pid.to_string()]).status();
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let rig = Rig::start(&out_dir().join("load-run"), PEOPLE, false, 0, super::BenchDatabase::Sqlite).await?;
    let start_pw = rig.server.initial_password().to_string();
    let rig = Arc::new(tokio::sync::RwLock::new(rig));
    let (steady, expected) = round(rig.clone(), vec![start_pw; PEOPLE], seconds, false).await?;
    let (chaos, _) = round(rig.clone(), expected, seconds, true).await?;

    println!("\npassback bench --load — {PEOPLE} people, {CLIENTS} browsers, reset → change → change\n");
    for r in [&steady, &chaos] {
        println!(
            "round: {} ({:.0} s, {} requests, {:.1}/s)",
            r.name,
            r.seconds,
            r.requests,
            r.requests as f64 / r.seconds
        );
        for (k, v) in &r.by_outcome {
            println!("  {k:<22} {v:>6}");
        }
        println!(
            "  lost writes {}  ·  double writes {}  ·  without an outcome {}  ·  failures that changed the password {}  ·  audit mismatches {}",
            r.lost_writes, r.double_writes, r.without_outcome, r.failures_that_changed_the_password, r.audit_mismatches
        );
        println!(
            "  not confirmed (PB-1002), resolved by binding: {} applied, {} not applied\n",
            r.unconfirmed_applied, r.unconfirmed_not_applied
        );
    }
    std::fs::create_dir_all(out_dir())?;
    let path = out_dir().join("load.json");
    std::fs::write(&path, serde_json::to_string_pretty(&serde_json::json!({ "rounds": [steady, chaos] }))?)?;
    println!("figures written to {}", path.display());
    let bad = [&steady, &chaos]
        .iter()
        .any(|r| r.lost_writes + r.double_writes + r.without_outcome + r.failures_that_changed_the_password > 0);
    anyhow::ensure!(!bad, "the load-and-verify run found lost, double or unanswered writes (see above)");
    Ok(())
}
