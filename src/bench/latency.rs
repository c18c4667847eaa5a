//! The side-by-side measurement: the bare directory (the agent's own directory code, called
//! directly: lookup by anchor, then the password operation), the full path (the browser's final
//! form post: session, CSRF, sealing, relay, agent, directory, answer page) and the relay alone
//! (a sealed no-op round trip), at concurrency 1 and 32.

use super::{client, hidden, out_dir, Rig, Stats, DIRECTORY_ID};
use crate::directory::Directory;
use crate::domain::{Anchor, MsgId};
use crate::envelope::{self, Direction, Flags, FrameKind, Op, PackageKey, RequestPackage, ResultPackage};
use secrecy::SecretString;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PEOPLE: usize = 200;
/// Fewer with Samba, where adding a person takes a while.
const PEOPLE_AD: usize = 64;
/// Operations per measurement at concurrency 1, and at 32 (a second or so of work at 32: three
/// times as many moved the throughput as much from run to run, and held three times as many
/// browser sessions open).
const OPS_SERIAL: usize = 200;
const OPS_PARALLEL: usize = 1000;
/// Reset forms made ready at the same time before a measurement.
const PREPARED_AT_ONCE: usize = 16;

/// Each person's current password, as the bench last set it.
struct Passwords {
    current: Vec<tokio::sync::Mutex<String>>,
    counter: AtomicUsize,
}

impl Passwords {
    fn new(n: usize, initial: &str) -> Passwords {
        Passwords {
            current: (0..n).map(|_| tokio::sync::Mutex::new(initial.to_string())).collect(),
            counter: AtomicUsize::new(0),
        }
    }

    /// A password never used before in this run (so history never refuses it).
    fn fresh(&self) -> String {
        format!("Bench-Pass-{:06}!", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Person `i`'s current password, held while an operation on them runs: a slow one may still
    /// be under way when the turn comes round to the same person, and both would start from the
    /// same password. The wait for it is not timed.
    async fn hold(&self, i: usize) -> tokio::sync::MutexGuard<'_, String> {
        self.current[i].lock().await
    }
}

/// The processes whose CPU time is counted: (name, pid).
static PROCESSES: std::sync::OnceLock<Vec<(&'static str, u32)>> = std::sync::OnceLock::new();

/// Times the bare directory over operations `ops`: each sets a new password for one of the
/// people in turn, as a reset, or with `change` as a change that proves the current one.
async fn bare(
    name: &str,
    concurrency: usize,
    ops: Range<usize>,
    (d, a, p): (Arc<Directory>, Arc<Vec<Anchor>>, Arc<Passwords>),
    change: bool,
) -> Stretch {
    stretch(name, concurrency, ops, move |i| {
        let (d, a, p) = (d.clone(), a.clone(), p.clone());
        async move {
            let n = i % a.len();
            let mut current = p.hold(n).await;
            let started = Instant::now();
            let new = p.fresh();
            let secret = SecretString::from(new.clone());
            let answer = if change {
                d.change(&a[n], &SecretString::from(current.clone()), &secret).await
            } else {
                d.reset(&a[n], &secret).await
            };
            if !answer.outcome.is_success() {
                return Err(format!("{} {}", answer.outcome.code(), answer.raw));
            }
            *current = new;
            Ok(started)
        }
    })
    .await
}

/// The bare directory measured in two halves, just before and just after `full` (the full
/// path's measurement): the machine's speed drifts over a run, and the two paths are compared
/// under the same drift.
async fn bracketing<Fut>(
    name: &str,
    concurrency: usize,
    total: usize,
    people: (Arc<Directory>, Arc<Vec<Anchor>>, Arc<Passwords>),
    change: bool,
    full: Fut,
) -> (Stats, Stats)
where
    Fut: std::future::Future<Output = Stats>,
{
    let before = bare(name, concurrency, 0..total / 2, people.clone(), change).await;
    let full = full.await;
    let after = bare(name, concurrency, total / 2..total, people, change).await;
    (stats(name, concurrency, vec![before, after]), full)
}

/// Runs `op(i)` for i in 0..total on `concurrency` workers; times each.
async fn measure<F, Fut>(name: &str, concurrency: usize, total: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Instant, String>> + Send,
{
    stats(name, concurrency, vec![stretch(name, concurrency, 0..total, op).await])
}

/// The CPU time a process of [`PROCESSES`] spent so far: PostgreSQL's with its connections' own
/// processes.
fn cpu_of(name: &str, pid: u32) -> Duration {
    if name == POSTGRES {
        super::cpu_time_with_children(pid)
    } else {
        super::cpu_time(pid)
    }
}

fn switches_of(name: &str, pid: u32) -> u64 {
    if name == POSTGRES {
        super::context_switches_with_children(pid)
    } else {
        super::context_switches(pid)
    }
}

const POSTGRES: &str = "PostgreSQL";

/// One stretch of timed operations, and what each process of [`PROCESSES`] spent on it.
struct Stretch {
    lat: Vec<Duration>,
    errors: usize,
    wall: Duration,
    cpu: Vec<Duration>,
    switches: Vec<u64>,
}

/// Runs `op(i)` for each i of `ops` on `concurrency` workers; times each, from the moment it
/// says it started (after waiting for its person, see [`Passwords::hold`]) to its end.
async fn stretch<F, Fut>(name: &str, concurrency: usize, ops: Range<usize>, op: F) -> Stretch
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Instant, String>> + Send,
{
    // The moment to attach a profiler to a process (`perf record -p`), to see where its time goes.
    eprintln!("bench: measuring {name} at concurrency {concurrency}…");
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(ops.start));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(ops.len())));
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let processes = PROCESSES.get().cloned().unwrap_or_default();
    let cpu_before: Vec<Duration> = processes.iter().map(|(name, pid)| cpu_of(name, *pid)).collect();
    let switches_before: Vec<u64> = processes.iter().map(|(name, pid)| switches_of(name, *pid)).collect();
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next, lat, errors, first_error) =
                (op.clone(), next.clone(), lat.clone(), errors.clone(), first_error.clone());
            let end = ops.end;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    match op(i).await {
                        Ok(started) => {
                            if let Ok(mut l) = lat.lock() {
                                l.push(started.elapsed());
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let wall = start.elapsed();
    if let Some(e) = first_error.lock().ok().and_then(|f| f.clone()) {
        eprintln!("bench: {name} at {concurrency}: first error: {e}");
    }
    let cpu = processes.iter().zip(cpu_before).map(|((name, pid), b)| cpu_of(name, *pid).saturating_sub(b)).collect();
    let switches = processes
        .iter()
        .zip(switches_before)
        .map(|((name, pid), b)| switches_of(name, *pid).saturating_sub(b))
        .collect();
    let lat = lat.lock().map(|l| l.clone()).unwrap_or_default();
    Stretch { lat, errors: errors.load(Ordering::Relaxed), wall, cpu, switches }
}

/// The figures of one measurement made of `stretches`.
fn stats(name: &str, concurrency: usize, stretches: Vec<Stretch>) -> Stats {
    let processes = PROCESSES.get().cloned().unwrap_or_default();
    let (mut lat, mut errors, mut wall) = (Vec::new(), 0, Duration::ZERO);
    let mut cpu = vec![Duration::ZERO; processes.len()];
    let mut switches = vec![0u64; processes.len()];
    for s in stretches {
        lat.extend(s.lat);
        errors += s.errors;
        wall += s.wall;
        cpu.iter_mut().zip(s.cpu).for_each(|(total, used)| *total += used);
        switches.iter_mut().zip(s.switches).for_each(|(total, n)| *total += n);
    }
    let total = (lat.len() + errors).max(1) as f64;
    let mut stats = Stats::from(name, concurrency, lat, errors, wall);
    for (((process, _), used), switched) in processes.iter().zip(cpu).zip(switches) {
        stats.cpu_ms_per_op.insert((*process).to_string(), used.as_secs_f64() * 1000.0 / total);
        stats.switches_per_op.insert((*process).to_string(), switched as f64 / total);
    }
    eprintln!(
        "bench: {:<14} c={:<2} {:>4} ops  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>7.1}/s  ({} errors)",
        stats.name, concurrency, stats.ops, stats.p50_ms, stats.p99_ms, stats.ops_per_sec, stats.errors
    );
    stats
}

/// A browser at the new-password form of a verified reset: its client and the form's fields.
struct ReadyForm {
    client: reqwest::Client,
    csrf: String,
    form_key: String,
}

impl ReadyForm {
    /// Sends the form with `fields` to `url`; an error unless the answer says the password changed.
    async fn send(&self, url: &str, fields: &[(&str, &str)]) -> Result<(), String> {
        let mut all = vec![("csrf", self.csrf.as_str()), ("form_key", self.form_key.as_str())];
        all.extend_from_slice(fields);
        let resp = self.client.post(url).form(&all).send().await;
        let page = resp.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
        if !changed(&page) {
            return Err(format!("the answer page did not say changed: {}", heading(&page)));
        }
        Ok(())
    }
}

/// Walks identify → e-mailed code → verify for person `i` (not timed).
async fn ready_reset(rig: &Rig, i: usize) -> anyhow::Result<ReadyForm> {
    let person = &rig.people[i];
    let client = client(&rig.ca)?;
    let page = client.get(format!("{}/reset", rig.url)).send().await?.text().await?;
    let csrf = hidden(&page, "csrf").ok_or_else(|| anyhow::anyhow!("no csrf"))?;
    let before = rig.mails_to(&person.email);
    let form = [("csrf", csrf.as_str()), ("login", person.uid.as_str())];
    let page = client.post(format!("{}/reset", rig.url)).form(&form).send().await?.text().await?;
    let csrf = hidden(&page, "csrf").ok_or_else(|| anyhow::anyhow!("no gate page: {page}"))?;
    let code = rig
        .code_for(&person.email, before)
        .await
        .ok_or_else(|| anyhow::anyhow!("no code mailed to {}", person.email))?;
    let form = [("csrf", csrf.as_str()), ("code", code.as_str())];
    let page = client.post(format!("{}/reset/verify", rig.url)).form(&form).send().await?.text().await?;
    let (Some(csrf), Some(form_key)) = (hidden(&page, "csrf"), hidden(&page, "form_key")) else {
        anyhow::bail!("no new-password form: {page}")
    };
    Ok(ReadyForm { client, csrf, form_key })
}

/// Whether an answer page says the password was changed.
fn changed(page: &str) -> bool {
    page.contains("Your password has been changed")
}

/// A page's first heading and its outcome code, to say what it said instead.
fn heading(page: &str) -> String {
    let between = |open: &str, close: &str| {
        page.split_once(open).and_then(|(_, rest)| rest.split_once(close)).map(|(text, _)| text.trim().to_string())
    };
    let code = page.find("PB-").map(|i| page[i..].chars().take(7).collect::<String>());
    format!("{} {}", between("<h1", "</h1>").unwrap_or_default(), code.unwrap_or_default())
}

pub async fn run(ad: bool, history: u64, database: super::BenchDatabase) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let dir = out_dir().join("latency-run");
    let people = if ad { PEOPLE_AD } else { PEOPLE };
    let rig = Arc::new(super::Rig::start(&dir, people, ad, history, database, super::Shape::ONE).await?);
    let mut processes = vec![
        ("serve", rig.serve_pid()),
        ("agent", rig.agent_pid()),
        ("directory", rig.server.pid()),
        ("bench client", std::process::id()),
    ];
    if let Some(pg) = &rig.postgres {
        processes.push((POSTGRES, pg.process.pid()));
    }
    let _ = PROCESSES.set(processes);
    let idle_serve = Rig::memory(rig.serve_pid());
    let idle_agent = Rig::memory(rig.agent_pid());
    let directory = Arc::new(Directory::new(&rig.directory)?);
    let passwords = Arc::new(Passwords::new(rig.people.len(), rig.server.initial_password()));
    let anchors: Arc<Vec<Anchor>> =
        Arc::new(rig.people.iter().map(|p| Anchor::parse(&p.anchor)).collect::<Result<_, _>>()?);
    let mut results = Vec::new();

    // Warm both paths up (connections, caches) before anything is counted.
    for i in 0..10 {
        let pw = passwords.fresh();
        let _ = directory.reset(&anchors[i], &SecretString::from(pw.clone())).await;
        *passwords.hold(i).await = pw;
    }

    for (concurrency, total) in [(1, OPS_SERIAL), (32, OPS_PARALLEL)] {
        // The full path: reset. Each form is made ready first (not timed); only the final post is.
        // A browser keeps its connection after a post: every form (and its connection) is kept
        // until the measurement ends, so that closing them is not counted.
        eprintln!("bench: preparing {total} verified reset sessions…");
        let mut ready = Vec::with_capacity(total);
        // Several at a time, each for a different person (a code is told apart by its address).
        let at_once = PREPARED_AT_ONCE.min(rig.people.len());
        for first in (0..total).step_by(at_once) {
            let batch = (first..total.min(first + at_once)).map(|i| ready_reset(&rig, i % rig.people.len()));
            for form in futures_util::future::join_all(batch).await {
                ready.push(Arc::new(form?));
            }
        }
        let ready = Arc::new(Mutex::new(ready));
        let (r, p, url) = (ready.clone(), passwords.clone(), rig.url.clone());
        let people = rig.people.len();
        let full = measure("full reset", concurrency, total, move |i| {
            let (r, p, url) = (r.clone(), p.clone(), url.clone());
            async move {
                let form = r.lock().ok().and_then(|v| v.get(i).cloned()).ok_or("no form")?;
                let mut current = p.hold(i % people).await;
                let started = Instant::now();
                let pw = p.fresh();
                form.send(&format!("{url}/reset/password"), &[("password", &pw), ("confirm", &pw)]).await?;
                *current = pw;
                Ok(started)
            }
        });
        // Beside it, the bare directory: reset.
        let people = (directory.clone(), anchors.clone(), passwords.clone());
        let (bare, full) = bracketing("bare reset", concurrency, total, people, false, full).await;
        results.extend([bare, full]);
        drop(ready);

        // The full path: change. The form (and its one-use key) is fetched first, not timed.
        let mut forms = Vec::with_capacity(total);
        for _ in 0..total {
            let c = client(&rig.ca)?;
            let page = c.get(format!("{}/change", rig.url)).send().await?.text().await?;
            let (Some(csrf), Some(key)) = (hidden(&page, "csrf"), hidden(&page, "form_key")) else {
                anyhow::bail!("no change form")
            };
            forms.push(Arc::new(ReadyForm { client: c, csrf, form_key: key }));
        }
        let forms = Arc::new(Mutex::new(forms));
        let (f, p, url) = (forms.clone(), passwords.clone(), rig.url.clone());
        let uids: Arc<Vec<String>> = Arc::new(rig.people.iter().map(|p| p.uid.clone()).collect());
        let full = measure("full change", concurrency, total, move |i| {
            let (f, p, url, uids) = (f.clone(), p.clone(), url.clone(), uids.clone());
            async move {
                let form = f.lock().ok().and_then(|v| v.get(i).cloned()).ok_or("no form")?;
                let n = i % uids.len();
                let mut current = p.hold(n).await;
                let started = Instant::now();
                let new = p.fresh();
                let fields =
                    [("login", uids[n].as_str()), ("current", &current), ("password", &new), ("confirm", &new)];
                form.send(&format!("{url}/change"), &fields).await?;
                *current = new;
                Ok(started)
            }
        });
        // Beside it, the bare directory: change (the directory checks the current password).
        let people = (directory.clone(), anchors.clone(), passwords.clone());
        let (bare, full) = bracketing("bare change", concurrency, total, people, true, full).await;
        results.extend([bare, full]);
        drop(forms);

        // The relay alone: a sealed no-op round trip, as the portal itself timed it.
        let c = client(&rig.ca)?;
        let url = format!("{}/healthz/relay?directory={DIRECTORY_ID}", rig.url);
        let inside: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
        let ins = inside.clone();
        let http = measure("relay via http", concurrency, total, move |_| {
            let (c, url, ins) = (c.clone(), url.clone(), ins.clone());
            async move {
                let started = Instant::now();
                let resp = c.get(&url).bearer_auth(super::MONITOR_TOKEN).send().await.map_err(|e| e.to_string())?;
                let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
                let us = body["round_trip_us"].as_u64().ok_or("no round trip")?;
                if body["ok"] != serde_json::Value::Bool(true) {
                    return Err(format!("relay check failed: {body}"));
                }
                if let Ok(mut v) = ins.lock() {
                    v.push(Duration::from_micros(us));
                }
                Ok(started)
            }
        })
        .await;
        let inside = inside.lock().map(|v| v.clone()).unwrap_or_default();
        let mut relay = Stats::from("relay alone", concurrency, inside, http.errors, Duration::from_secs(1));
        relay.ops_per_sec = http.ops_per_sec;
        results.push(relay);
        results.push(http);
    }

    let peak_serve = Rig::memory(rig.serve_pid());
    let peak_agent = Rig::memory(rig.agent_pid());
    let frames = frame_sizes()?;
    report((rig.server.name(), history), &results, &frames, (idle_serve, peak_serve), (idle_agent, peak_agent))?;
    Ok(())
}

/// The size of each relay frame, sealed with the same code the portal and the agent use, for
/// the bench's own passwords (16 characters) and ids of real length.
fn frame_sizes() -> anyhow::Result<Vec<(String, usize)>> {
    let mut rng = rand::rngs::OsRng;
    let rsa = rsa::RsaPrivateKey::new(&mut rng, envelope::RSA_BITS)?;
    let package = PackageKey::generate(&mut rng);
    let agent = MsgId::random().to_string();
    let msg = MsgId::random();
    let anchor = Anchor::parse("0f5c6f2e-3d4b-103f-8a5e-5b9a3c1f7e21")?;
    let directory = crate::domain::DirectoryId::parse(DIRECTORY_ID)?;
    let request = |op: Op, secrets| RequestPackage {
        msg_id: msg.clone(),
        op,
        directory: directory.clone(),
        anchor: anchor.clone(),
        secrets,
        flags: Flags::default(),
        actor: "self-service".into(),
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_120,
        wait_secs: 30,
    };
    let content = envelope::ContentKey::new(&rsa.to_public_key(), &mut rng)?;
    let pw = "Bench-Pass-000123!";
    let reset = request(Op::Reset, Some(envelope::seal_secrets(&content, &msg, pw, None, &mut rng)?));
    let change = request(Op::Change, Some(envelope::seal_secrets(&content, &msg, pw, Some(pw), &mut rng)?));
    let noop = request(Op::Noop, None);
    let result = ResultPackage {
        msg_id: msg.clone(),
        outcome: crate::domain::Outcome::Success,
        raw: format!("agent={agent} rc=0 text=\"\""),
        policy: None,
    };
    let seal_req = |p: &RequestPackage| {
        envelope::seal(&agent, 1, &package, Direction::ToAgent, FrameKind::Request, &msg, p, &mut rand::rngs::OsRng)
    };
    Ok(vec![
        ("reset request".into(), seal_req(&reset)?.to_bytes().len()),
        ("change request".into(), seal_req(&change)?.to_bytes().len()),
        ("no-op request".into(), seal_req(&noop)?.to_bytes().len()),
        (
            "result".into(),
            envelope::seal(&agent, 1, &package, Direction::ToPortal, FrameKind::Result, &msg, &result, &mut rng)?
                .to_bytes()
                .len(),
        ),
    ])
}

fn report(
    (directory, history): (&str, u64),
    results: &[Stats],
    frames: &[(String, usize)],
    serve: ((f64, f64), (f64, f64)),
    agent: ((f64, f64), (f64, f64)),
) -> anyhow::Result<()> {
    let find = |name: &str, c: usize| results.iter().find(|s| s.name == name && s.concurrency == c);
    let over =
        if history > 0 { format!(", over {history} rows of history in each growing table") } else { String::new() };
    println!("\npassback bench — {directory}, {}{over}\n", std::env::consts::ARCH);
    println!(
        "{:<16} {:>4} {:>6} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "path", "conc", "ops", "p50 ms", "p90 ms", "p99 ms", "ops/s", "errors"
    );
    for s in results {
        println!(
            "{:<16} {:>4} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>7}",
            s.name, s.concurrency, s.ops, s.p50_ms, s.p90_ms, s.p99_ms, s.ops_per_sec, s.errors
        );
    }
    println!("\nCPU per operation at concurrency 32, ms (2 cores shared by all four; target for serve ≤ 0.9):");
    for s in results.iter().filter(|s| s.concurrency == 32 && !s.cpu_ms_per_op.is_empty()) {
        let parts: Vec<String> = s.cpu_ms_per_op.iter().map(|(p, ms)| format!("{p} {ms:.2}")).collect();
        println!("  {:<16} {}", s.name, parts.join(" · "));
    }
    println!(
        "\ncontext switches per operation at concurrency 32 (a floor: threads that ended are not counted; \
         target for serve ≤ 25):"
    );
    for s in results.iter().filter(|s| s.concurrency == 32 && !s.switches_per_op.is_empty()) {
        let parts: Vec<String> = s.switches_per_op.iter().map(|(p, n)| format!("{p} {n:.0}")).collect();
        println!("  {:<16} {}", s.name, parts.join(" · "));
    }
    let mut ratios = serde_json::Map::new();
    println!("\nfull path against the bare directory:");
    for op in ["reset", "change"] {
        if let (Some(b1), Some(f1), Some(b32), Some(f32)) = (
            find(&format!("bare {op}"), 1),
            find(&format!("full {op}"), 1),
            find(&format!("bare {op}"), 32),
            find(&format!("full {op}"), 32),
        ) {
            let (d50, d99, tput) = (f1.p50_ms - b1.p50_ms, f1.p99_ms - b1.p99_ms, f32.ops_per_sec / b32.ops_per_sec);
            println!(
                "  {op:<6}  c=1: {d50:+.2} ms at p50 (target ≤ +1.5), {d99:+.2} ms at p99 (target ≤ +10); \
                 c=32: {:.0} % of the bare throughput (target ≥ 45 %)",
                tput * 100.0
            );
            ratios.insert(
                op.into(),
                serde_json::json!({ "p50_added_ms": d50, "p99_added_ms": d99, "throughput_ratio_at_32": tput,
                    "p50_ratio": f1.p50_ms / b1.p50_ms.max(1e-9) }),
            );
        }
    }
    println!("\nrelay frames (target < 1024 bytes):");
    for (name, n) in frames {
        println!("  {name:<16} {n:>5} bytes");
    }
    println!(
        "\nmemory: serve {:.1} MiB idle, {:.1} MiB peak (target < 40 idle); agent {:.1} MiB idle, {:.1} MiB peak (target < 20)",
        serve.0 .0, serve.1 .1, agent.0 .0, agent.1 .1
    );
    let json = serde_json::json!({
        "directory": directory,
        "history_rows": history,
        "results": results,
        "full_vs_bare": ratios,
        "frames_bytes": frames.iter().map(|(n, b)| (n.clone(), *b)).collect::<std::collections::BTreeMap<_, _>>(),
        "memory_mib": { "serve_idle": serve.0 .0, "serve_peak": serve.1 .1, "agent_idle": agent.0 .0, "agent_peak": agent.1 .1 },
    });
    std::fs::create_dir_all(out_dir())?;
    let name = if directory == "OpenLDAP" { "latency" } else { "latency-ad" };
    let path = out_dir().join(if history > 0 { format!("{name}-history.json") } else { format!("{name}.json") });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("\nfigures written to {}", path.display());
    Ok(())
}
