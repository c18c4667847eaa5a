//! The portal's own password rules, before anything reaches the directory: banned terms, the
//! person's and the organisation's names, breached passwords (through a range API or an offline
//! file), and the command that checks a candidate.

use crate::harness::{passback_bin, spawn_app_with, Options};
use passback::config::{BreachedMode, PasswordPolicyConfig, PolicyProfile};
use passback::sandbox::{TestCa, INITIAL_USER_PASSWORD};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn with_policy(set: impl FnOnce(&mut PasswordPolicyConfig)) -> Options {
    let mut policy = PasswordPolicyConfig::default();
    set(&mut policy);
    Options { password_policy: policy, ..Default::default() }
}

/// A new empty folder of this test's own.
fn scratch(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("passback-{what}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The health facts a monitor reads.
async fn health_json(app: &crate::harness::TestApp) -> serde_json::Value {
    let resp = app.client.get(format!("{}/admin/health.json", app.url)).bearer_auth(crate::harness::METRICS_TOKEN);
    resp.send().await.unwrap().json().await.unwrap()
}

fn sha1_hex(password: &str) -> String {
    hex::encode_upper(passback::breached::sha1(&SecretString::from(password)))
}

/// What the agent took: its journal of message ids (empty or absent when nothing was sent).
fn agent_took_anything(app: &crate::harness::TestApp) -> bool {
    let journal = passback::agent::journal::Journal::path_for(&app.agent_cfg.state_file);
    std::fs::read_to_string(journal).is_ok_and(|t| !t.trim().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_password_is_refused_in_words_before_the_directory_is_asked() {
    let app = spawn_app_with(with_policy(|p| {
        p.banned = vec!["contoso".into(), "blank".into()];
        p.organisation_name = Some("Fabrikam".into());
    }))
    .await;
    let form = app.verified_as("alice", "alice@example.org").await;

    let page = app.submit_password(&form, "C0ntos0Blank12", "C0ntos0Blank12").await;
    assert!(page.contains("PB-2005"), "{page}");
    assert!(page.contains("“contoso”, “blank”") && page.contains("4 points of the 5 needed"), "{page}");
    let page = app.submit_password(&page, "Fabrikam-Rules-2026!", "Fabrikam-Rules-2026!").await;
    assert!(page.contains("PB-2005") && page.contains("“Fabrikam”"), "{page}");
    // Her display name is Alice Liddell.
    let page = app.submit_password(&page, "Liddell-Walks-2026!", "Liddell-Walks-2026!").await;
    assert!(page.contains("PB-2006") && page.contains("your name or user name"), "{page}");

    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await, "nothing was written");
    assert!(!agent_took_anything(&app), "nothing reached the agent");
    let audit = app.audit().await;
    let refused: Vec<_> = audit.iter().filter(|r| r.operation == "reset.writeback").collect();
    assert_eq!(refused.iter().map(|r| r.outcome_code.as_str()).collect::<Vec<_>>(), ["PB-2006", "PB-2005", "PB-2005"]);
    for r in &refused {
        assert!(r.raw.contains("before the directory was asked") && !r.raw.contains("agent="), "{}", r.raw);
    }
    // The form stays, and a password of her own goes through.
    let page = app.submit_password(&page, "ContoS0Bl@nkf9!x", "ContoS0Bl@nkf9!x").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("alice", "ContoS0Bl@nkf9!x").await);
}

/// A server speaking Have I Been Pwned's range API over TLS, from a corpus made here: what it
/// was asked, and whether each request asked for padding.
struct RangeServer {
    url: String,
    ca: TestCa,
    asked: Arc<Mutex<Vec<(String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RangeServer {
    async fn start(dir: &std::path::Path, listed: &[(&str, u64)]) -> RangeServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca = TestCa::create(dir).unwrap();
        let mut corpus: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        let others = (0..2_000).map(|i| (sha1_hex(&format!("someone else's password {i}")), 1 + i));
        for (hash, count) in listed.iter().map(|(p, n)| (sha1_hex(p), *n)).chain(others) {
            corpus.entry(hash[..5].to_string()).or_default().push((hash[5..].to_string(), count));
        }
        let acceptor =
            tokio_rustls::TlsAcceptor::from(passback::tls::server_config(&ca.cert_file, &ca.key_file).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let asked = asked.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { return };
                    let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                    let mut request = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).to_string();
                    let path = text.split_whitespace().nth(1).unwrap_or_default().to_string();
                    let padded = text.lines().any(|l| l.to_ascii_lowercase().starts_with("add-padding: true"));
                    asked.lock().unwrap().push((path.clone(), padded));
                    let prefix = path.strip_prefix("/range/").unwrap_or_default().to_string();
                    let mut body: String = corpus
                        .get(&prefix)
                        .into_iter()
                        .flatten()
                        .map(|(suffix, n)| format!("{suffix}:{n}\r\n"))
                        .collect();
                    // Decoys, as the real service pads with.
                    body.push_str("0000000000000000000000000000000000A:0\r\n");
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = tls.write_all(format!("{head}{body}").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        RangeServer { url, ca, asked, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_password_is_refused_with_how_often_it_was_seen_and_only_a_hash_prefix_leaves() {
    let scratch = scratch("range-api");
    let server = RangeServer::start(&scratch, &[("Summer-Breach-2024-long", 42)]).await;
    let app = spawn_app_with(with_policy(|p| {
        p.breached = BreachedMode::Online;
        p.breached_url = server.url.clone();
        p.breached_ca_file = Some(server.ca.ca_file.clone());
    }))
    .await;
    let form = app.verified_as("alice", "alice@example.org").await;

    let page = app.submit_password(&form, "Summer-Breach-2024-long", "Summer-Breach-2024-long").await;
    assert!(page.contains("PB-2007") && page.contains("in data breaches 42 times"), "{page}");
    assert!(!agent_took_anything(&app), "nothing reached the agent");
    let page = app.submit_password(&page, "Quiet-Harbour-Lantern-7", "Quiet-Harbour-Lantern-7").await;
    assert!(page.contains("Your password has been changed"), "{page}");

    let asked = server.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    for (path, padded) in &asked {
        let prefix = path.strip_prefix("/range/").unwrap();
        assert!(prefix.len() == 5 && prefix.chars().all(|c| c.is_ascii_hexdigit()), "only 5 hex digits: {path}");
        assert!(padded, "padding asked for");
    }
    assert_eq!(asked[0].0, format!("/range/{}", &sha1_hex("Summer-Breach-2024-long")[..5]));

    // The service gone: the default is to accept unchecked, and the health page says lookups fail.
    server.task.abort();
    let _ = server.task.await;
    let form = app.verified_as("bob", "bob@example.org").await;
    let page = app.submit_password(&form, "Quiet-Harbour-Lantern-8", "Quiet-Harbour-Lantern-8").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    let health = health_json(&app).await;
    assert_eq!(health["breached"]["mode"], "online", "{health}");
    assert_eq!(health["breached"]["failed"], 1, "{health}");
    assert_eq!(health["breached"]["answered"], 2, "{health}");
    assert_eq!(health["breached"]["blocking"], false, "failing open: passwords are still accepted");
    assert_eq!(health["ok"], true, "{health}");
    std::fs::remove_dir_all(scratch).ok();
}

/// An offline breached-password file holding `listed` and 20,000 others, built in `scratch` by
/// `passback breached build` from a corpus in the downloadable format.
fn offline_file(scratch: &std::path::Path, listed: &[&str]) -> std::path::PathBuf {
    let mut lines: Vec<String> = listed.iter().map(|p| format!("{}:7", sha1_hex(p))).collect();
    lines.extend((0..20_000).map(|i| format!("{}:1", sha1_hex(&format!("corpus {i}")))));
    lines.sort();
    let corpus = scratch.join("corpus.txt");
    std::fs::write(&corpus, lines.join("\r\n")).unwrap();
    let file = scratch.join("breached.bin");
    let out = std::process::Command::new(passback_bin())
        .args(["breached", "build", "--input"])
        .arg(&corpus)
        .arg("--output")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let expected = format!("{} hashes", listed.len() + 20_000);
    assert!(out.status.success() && said.contains(&expected), "{said}{}", String::from_utf8_lossy(&out.stderr));
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_offline_corpus_is_refused_and_the_file_is_built_by_the_command() {
    let scratch = scratch("breached-offline");
    let listed = ["Autumn-Leak-2023-long", "Winter-Leak-2022-long"];
    let file = offline_file(&scratch, &listed);

    let app = spawn_app_with(with_policy(|p| {
        p.breached = BreachedMode::Offline;
        p.breached_file = Some(file.clone());
    }))
    .await;
    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, listed[1], listed[1]).await;
    assert!(page.contains("PB-2007") && page.contains("has appeared in a data breach"), "{page}");
    // Typed in full-width characters, it is the same password (NFKC), and refused alike.
    let wide: String = listed[1].chars().map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap()).collect();
    let page = app.submit_password(&page, &wide, &wide).await;
    assert!(page.contains("PB-2007"), "{page}");
    let page = app.submit_password(&page, "Quiet-Harbour-Lantern-9", "Quiet-Harbour-Lantern-9").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    std::fs::remove_dir_all(scratch).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_nist_800_63b_4_a_password_used_alone_needs_15_characters_and_the_health_page_says_where_the_directory_differs(
) {
    let scratch = scratch("nist");
    let file = offline_file(&scratch, &["Winter-Leak-2022-long"]);
    let app = spawn_app_with(with_policy(|p| {
        p.profile = PolicyProfile::Nist80063b4;
        p.breached = BreachedMode::Offline;
        p.breached_file = Some(file.clone());
    }))
    .await;

    let form = app.verified_as("alice", "alice@example.org").await;
    assert!(form.contains("At least 15 characters"), "the form states the longer rule: {form}");
    // 14 characters (counted after NFKC: full-width letters are letters): too short, in words,
    // before anything is sent.
    let page = app.submit_password(&form, "Ｑｕｉｅｔ-Lantern9", "Ｑｕｉｅｔ-Lantern9").await;
    assert!(page.contains("PB-2001") && page.contains("at least 15 characters"), "{page}");
    assert!(!agent_took_anything(&app), "refused before the relay");
    // No composition rule of the portal's own: a long phrase of lower-case words will do.
    let page = app.submit_password(&page, "quiet harbour lantern morning", "quiet harbour lantern morning").await;
    assert!(page.contains("Your password has been changed"), "{page}");

    // The directory's own minimum (8) is under 15: said as information, with what to change.
    let health = health_json(&app).await;
    assert_eq!(health["profile"], "nist-800-63b-4", "{health}");
    let notes = health["profile_notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{health}");
    assert!(notes[0]["detail"].as_str().unwrap().contains("8 characters"), "{health}");
    assert!(notes[0]["fix"].as_str().unwrap().contains("pwdMinLength: 15"), "{health}");

    // An authenticator app registered here does not guard the places where the password is
    // used: 15 all the same. Where the organisation says its sign-ins ask for a second factor, 8.
    passback::store::Stmt::new(
        "INSERT INTO totp_secrets (directory, anchor, secret_enc, created_at, confirmed_at) VALUES (?, ?, ?, 0, 0)",
    )
    .bind(crate::harness::DIR_ID)
    .bind(app.anchor_of("bob").await.as_str())
    .bind(vec![0u8; 16])
    .run(&app.db)
    .await
    .unwrap();
    let bob = ["--directory", crate::harness::DIR_ID, "--user", "bob"];
    for (multi_factor, ok, words) in
        [(false, false, "15 for a password used alone"), (true, true, "8 for a password used with a second factor")]
    {
        let config = app.dir.join(format!("nist-{multi_factor}.toml"));
        let policy = format!(
            "[password_policy]\nprofile = \"nist-800-63b-4\"\nbreached = \"offline\"\nbreached_file = {:?}\n\
             multi_factor_sign_in = {multi_factor}\n",
            file.display().to_string()
        );
        app.portal.write_config(&config, &policy);
        let (passed, said) = check_password(&config, "Qz7#kLmW9x", &bob);
        assert_eq!(passed, ok, "{said}");
        assert!(said.contains(words), "{said}");
    }
    std::fs::remove_dir_all(scratch).ok();
}

/// `passback password check` with `candidate` on its standard input: (accepted, what it printed).
fn check_password(config: &std::path::Path, candidate: &str, person: &[&str]) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(passback_bin())
        .args(["password", "--portal-config"])
        .arg(config)
        .arg("check")
        .args(person)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{candidate}").unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_command_gives_entras_verdicts_and_the_persons_own_and_writes_nothing() {
    let app = spawn_app_with(Options::default()).await;
    let config = app.dir.join("check.toml");
    app.portal.write_config(&config, "[password_policy]\nbanned = [\"contoso\", \"blank\", \"abcdef\"]\n");
    let check = |candidate: &str, person: &[&str]| check_password(&config, candidate, person);
    let before = app.audit().await.len();
    crate::harness::until("the directory's rules are reported", async || {
        passback::store::users::policy(&app.db, crate::harness::DIR_ID).await.unwrap().is_some()
    })
    .await;

    for refused in ["Bl@nK", "abcdeg", "abcdefg", "abcde", "C0ntos0Blank12"] {
        let (ok, said) = check(refused, &[]);
        assert!(!ok && said.contains("banned      FAIL") && said.contains("PB-2005"), "{refused}: {said}");
    }
    let (ok, said) = check("C0ntos0Blank12", &[]);
    assert!(!ok && said.contains("4 points of 5 needed; banned terms found: contoso, blank"), "{said}");
    let (ok, said) = check("ContoS0Bl@nkf9!", &[]);
    assert!(ok && said.contains("5 points of 5 needed") && said.contains("accepted"), "{said}");
    // Her names, and her directory's length rule as it last reported it.
    let alice = ["--directory", crate::harness::DIR_ID, "--user", "alice"];
    let (ok, said) = check("Liddell-Walks-2026!", &alice);
    assert!(!ok && said.contains("names       FAIL") && said.contains("PB-2006"), "{said}");
    let (ok, said) = check("Qz7#kLm", &alice);
    assert!(!ok && said.contains("length      FAIL") && said.contains("at least 8"), "{said}");
    let (ok, said) = check("Quiet-Harbour-Lantern-7", &alice);
    assert!(ok && said.contains("length      pass"), "{said}");

    assert_eq!(app.audit().await.len(), before, "the check writes nothing");
    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_change_form_a_banned_password_is_named_only_to_someone_who_proved_the_current_one() {
    let app = spawn_app_with(with_policy(|p| p.banned = vec!["contoso".into()])).await;

    // A wrong current password reads the same whether the new one is banned or not, and as for
    // a name that has no account: nothing tells that bob exists, or that the rules refuse it.
    let wrong = app.change_password("bob", "Not-The-Password1", "C0ntoso1").await;
    assert!(wrong.contains("PB-3005") && !wrong.contains("PB-2005"), "{wrong}");
    let nobody = app.change_password("nobody-here", "Not-The-Password1", "C0ntoso1").await;
    assert!(nobody.contains("PB-3005"), "{nobody}");

    let right = app.change_password("bob", INITIAL_USER_PASSWORD, "C0ntoso1").await;
    assert!(right.contains("PB-2005") && right.contains("“contoso”"), "{right}");
    assert!(app.bind_works("bob", INITIAL_USER_PASSWORD).await, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_lists_every_rule_and_its_live_check_says_strength_and_banned_terms_within_a_limit() {
    let app = spawn_app_with(with_policy(|p| {
        p.banned = vec!["contoso".into()];
        p.organisation_name = Some("Fabrikam".into());
    }))
    .await;
    let form = app.verified_as("alice", "alice@example.org").await;
    // The directory's rules with their numbers, then the portal's, before anything is typed.
    for rule in [
        "At least 8 characters.",
        "Not your current password, nor one of the 3 before it.",
        "Not your user name, nor a part of your name.",
        "Not a commonly used password",
        "Not the name of your organisation (Fabrikam).",
    ] {
        assert!(form.contains(rule), "{rule}: {form}");
    }
    assert!(!form.contains("data breach"), "no breached lookups are configured: {form}");
    // Her own names, for the script's "not your name" tick; nobody else's.
    assert!(form.contains("data-names=\"alice\nAlice Liddell\""), "{form}");
    let csrf = passback::bench::hidden(&form, "csrf").unwrap();
    let ask = async |password: &str| {
        let resp = app.post("/password/check", &[("csrf", csrf.as_str()), ("password", password)]).await;
        let status = resp.status();
        (status, resp.json::<serde_json::Value>().await.unwrap_or_default())
    };

    let (status, weak) = ask("Contoso26").await;
    assert_eq!(status, 200);
    assert_eq!(weak["banned"], true, "{weak}");
    assert!(weak["score"].as_u64().unwrap() <= 2 && !weak["advice"].as_array().unwrap().is_empty(), "{weak}");
    let (_, named) = ask("Liddell-Rabbit-Hole").await;
    assert_eq!(named["banned"], false, "names are the script's tick, and refused when sent: {named}");
    let (_, strong) = ask("quiet harbour lantern morning").await;
    assert_eq!(strong["banned"], false, "{strong}");
    assert_eq!(strong["score"], 4, "{strong}");
    assert_eq!(strong["strength"], "Strength: strong", "{strong}");
    // Without the form's token, nothing is checked.
    let forged = app.post("/password/check", &[("password", "Contoso26")]).await;
    assert_ne!(forged.status(), 200);
    // A minute's allowance per address, then refused (the form is still checked when sent).
    let mut allowed = 3;
    loop {
        let (status, _) = ask("quiet harbour lantern morning").await;
        if status == 429 {
            break;
        }
        allowed += 1;
        assert!(allowed < 200, "never limited");
    }
    assert!(allowed >= 60, "{allowed}");
    assert!(app.audit().await.iter().all(|r| !r.operation.contains("writeback")), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lookups_failing_closed_a_chosen_password_waits_and_a_generated_one_is_never_looked_up() {
    use crate::helpdesk::{act_in, add_staff, client, person_page_in, staff_signin, temporary_password};
    use passback::store::{staff::Role, users::Scope};
    let scratch = scratch("breached-closed");
    let server = RangeServer::start(&scratch, &[]).await;
    let app = spawn_app_with(with_policy(|p| {
        p.breached = BreachedMode::Online;
        p.breached_url = server.url.clone();
        p.breached_ca_file = Some(server.ca.ca_file.clone());
        p.breached_timeout_ms = 500;
        p.breached_fail_open = false;
    }))
    .await;
    // A helpdesk member enrols (choosing a password, looked up) while the service answers...
    let staff = add_staff(&app, "hd-gen", Role::Helpdesk, Scope::everyone(), false).await;
    // ...then it stops answering: every lookup fails, and unchecked passwords are refused.
    server.task.abort();
    let _ = server.task.await;

    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "Quiet-Harbour-Lantern-9", "Quiet-Harbour-Lantern-9").await;
    assert!(page.contains("PB-2008"), "{page}");
    assert!(!agent_took_anything(&app), "nothing was sent to the directory");
    // On the change form, after the current password was proved: refused alike, and not counted
    // as a wrong password (the form's limit stays whole).
    let subject = passback::store::attempts::subject(crate::harness::DIR_ID, &app.anchor_of("bob").await);
    for _ in 0..5 {
        let page = app.change_password("bob", INITIAL_USER_PASSWORD, "Quiet-Harbour-Lantern-9").await;
        assert!(page.contains("PB-2008"), "{page}");
    }
    let counted: i64 = passback::store::Stmt::new("SELECT COUNT(*) FROM change_attempts WHERE subject = ?")
        .bind(subject.as_str())
        .scalar_one(&app.db)
        .await
        .unwrap();
    assert_eq!(counted, 0, "an unchecked password says nothing about the current one");
    let health = health_json(&app).await;
    assert!(health["breached"]["failed"].as_u64().unwrap() >= 6, "{health}");
    // Nobody can set a password: the health check says so, for monitors too (503).
    assert_eq!(health["breached"]["blocking"], true, "{health}");
    assert_eq!(health["ok"], false, "{health}");
    // An answer a monitor polls for, not an error to log at every poll. (The log is every test's
    // in this process: the line looked for is the failed response's own, not any "503" — a
    // timestamp's milliseconds can read so.)
    let log = crate::harness::portal_log();
    let logged = log.lines().find(|l| l.contains("ERROR") && l.contains("503 Service Unavailable"));
    assert!(logged.is_none(), "a 503 logged as an error: {logged:?}");

    // The helpdesk's generated password was chosen by nobody: it is never looked up, and works.
    let c = client(&app);
    staff_signin(&app, &c, &staff, 0).await;
    let (_, page) = person_page_in(&app, &c, crate::harness::DIR_ID, "carol").await;
    let (_, done) =
        act_in(&app, &c, crate::harness::DIR_ID, "carol", &page, &[("act", "reset"), ("mode", "generate")]).await;
    assert!(done.contains("PB-0000"), "{done}");
    assert!(app.bind_works("carol", &temporary_password(&done)).await);
    // (Each look at the health page itself probes the failing service once.)
    let failed = health_json(&app).await["breached"]["failed"].as_u64().unwrap();
    assert_eq!(failed, health["breached"]["failed"].as_u64().unwrap() + 1, "no lookup was tried");
    std::fs::remove_dir_all(scratch).ok();
}
