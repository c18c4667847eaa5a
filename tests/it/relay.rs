//! The relay and the agent under attack and under change: replays, tampering, expiry, stolen
//! credentials, single-use enrollment, key rollover, and secrets kept out of every record.

use crate::harness::spawn_app;
use passback::agent::state::AgentState;
use passback::agent::Agent;
use passback::domain::{Anchor, DirectoryId, MsgId, Outcome};
use passback::envelope::{self, Direction, Flags, FrameKind, Op, RequestPackage, SealedFrame};
use passback::relay::protocol::{self, Wire};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

/// A request sealed exactly as the portal seals one, with the agent's current keys.
fn sealed_reset(state: &AgentState, anchor: &Anchor, password: &str, expires_in: i64) -> SealedFrame {
    sealed_reset_with(state, anchor, password, expires_in, Flags::default())
}

fn sealed_reset_with(
    state: &AgentState,
    anchor: &Anchor,
    password: &str,
    expires_in: i64,
    flags: Flags,
) -> SealedFrame {
    sealed_reset_waiting(state, anchor, password, expires_in, flags, 30)
}

fn sealed_reset_waiting(
    state: &AgentState,
    anchor: &Anchor,
    password: &str,
    expires_in: i64,
    flags: Flags,
    wait_secs: u32,
) -> SealedFrame {
    sealed_request(state, anchor, Op::Reset, Some(password), expires_in, flags, wait_secs)
}

/// A request sealed as the portal seals one; `password` travels under the agent's RSA key.
fn sealed_request(
    state: &AgentState,
    anchor: &Anchor,
    op: Op,
    password: Option<&str>,
    expires_in: i64,
    flags: Flags,
    wait_secs: u32,
) -> SealedFrame {
    let now = passback::Clock::default().now();
    let key = &state.usable_keys(now, 3600).unwrap()[0];
    let msg_id = MsgId::random();
    let content = envelope::ContentKey::new(&key.rsa.to_public_key(), &mut rand::rngs::OsRng).unwrap();
    let secrets = password.map(|p| envelope::seal_secrets(&content, &msg_id, p, None, &mut rand::rngs::OsRng).unwrap());
    let pkg = RequestPackage {
        msg_id: msg_id.clone(),
        op,
        directory: DirectoryId::parse(crate::harness::DIR_ID).unwrap(),
        anchor: anchor.clone(),
        secrets,
        flags,
        actor: "test".into(),
        issued_at: now,
        expires_at: now + expires_in,
        wait_secs,
    };
    envelope::seal(
        &state.agent_id,
        key.version,
        &key.package,
        Direction::ToAgent,
        FrameKind::Request,
        &msg_id,
        &pkg,
        &mut rand::rngs::OsRng,
    )
    .unwrap()
}

/// The agent's answer, opened as the portal opens it.
fn open_answer(state: &AgentState, answer: &Wire) -> envelope::ResultPackage {
    let frame = protocol::parse_binary(&answer.0).unwrap();
    assert_eq!(frame.kind, FrameKind::Result, "{answer:?}");
    let keys = state.usable_keys(passback::Clock::default().now(), 3600).unwrap();
    envelope::open_result(&state.agent_id, &frame, |v| keys.iter().find(|k| k.version == v).map(|k| k.package.clone()))
        .unwrap()
}

fn outcome_of(state: &AgentState, answer: &Wire) -> Outcome {
    open_answer(state, answer).outcome
}

async fn alice_anchor(app: &crate::harness::TestApp) -> Anchor {
    let rows = passback::store::users::find_by_login(&app.db, "alice").await.unwrap();
    Anchor::parse(&rows[0].anchor).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_message_is_answered_from_the_stored_result_and_written_once() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let agent = Agent::new(app.agent_cfg.clone()).unwrap();
    let frame = sealed_reset(&state, &alice_anchor(&app).await, "Replay-Safe-2024!", 60);

    let first = agent.handle_request(frame.clone(), std::time::Instant::now()).await.expect("an answer");
    let second = agent.handle_request(frame, std::time::Instant::now()).await.expect("an answer to the repeat");

    assert_eq!(outcome_of(&state, &first), Outcome::Success);
    // A second write of the same password would have been refused as "in history"; the repeat
    // got the very same sealed answer instead.
    assert_eq!(first, second);
    assert!(app.bind_works("alice", "Replay-Safe-2024!").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_after_the_agent_restarted_is_not_carried_out_twice() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let unlock = sealed_request(&state, &alice_anchor(&app).await, Op::Unlock, None, 60, Flags::default(), 30);
    app.lock_out("alice").await;
    let agent = Agent::new(app.agent_cfg.clone()).unwrap();
    let answer = agent.handle_request(unlock.clone(), std::time::Instant::now()).await.expect("answered");
    assert_eq!(outcome_of(&state, &answer), Outcome::Success);
    assert!(app.bind_works("alice", passback::sandbox::INITIAL_USER_PASSWORD).await, "unlocked");

    // Locked again; the agent restarts (its memory is gone) and a captured copy arrives.
    drop(agent);
    app.lock_out("alice").await;
    let restarted = Agent::new(app.agent_cfg.clone()).unwrap();
    let answer = restarted.handle_request(unlock, std::time::Instant::now()).await.expect("answered at once");

    let pkg = open_answer(&state, &answer);
    assert_eq!(pkg.outcome, Outcome::AgentTimeout, "{}", pkg.raw);
    assert!(pkg.raw.contains("not written again"), "{}", pkg.raw);
    assert!(
        !app.bind_works("alice", passback::sandbox::INITIAL_USER_PASSWORD).await,
        "still locked: not unlocked twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_misdirected_frames_are_refused_by_the_agent() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let agent = Agent::new(app.agent_cfg.clone()).unwrap();
    let anchor = alice_anchor(&app).await;

    // Each is answered at once, sealed for the portal and for that message id, with nothing
    // written: the person waiting gets a definite outcome instead of the deadline's.
    let refused = |answer: Option<Wire>, id: &MsgId, expected: Outcome| {
        let pkg = open_answer(&state, &answer.expect("answered at once"));
        assert_eq!((&pkg.msg_id, &pkg.outcome), (id, &expected), "{}", pkg.raw);
        assert!(pkg.raw.starts_with("not written"), "{}", pkg.raw);
    };
    let genuine = sealed_reset(&state, &anchor, "Tampered-Pass-1!", 60);
    let mut tampered = genuine.clone();
    tampered.ciphertext[20] ^= 0x40;
    let id = tampered.msg_id.clone();
    let refusal = agent.handle_request(tampered, std::time::Instant::now()).await;
    refused(refusal.clone(), &id, Outcome::Internal);
    // The refusal took the id: the genuine request under it, arriving after, is not carried out
    // (what the portal was told, "not written", stays true).
    assert_eq!(agent.handle_request(genuine, std::time::Instant::now()).await, refusal);

    let expired = sealed_reset(&state, &anchor, "Expired-Pass-1!", -1);
    let id = expired.msg_id.clone();
    refused(agent.handle_request(expired, std::time::Instant::now()).await, &id, Outcome::AgentTimeout);

    let mut relabelled = sealed_reset(&state, &anchor, "Relabel-Pass-1!", 60);
    relabelled.msg_id = MsgId::random();
    let id = relabelled.msg_id.clone();
    refused(agent.handle_request(relabelled, std::time::Instant::now()).await, &id, Outcome::Internal);

    let mut reflected = sealed_reset(&state, &anchor, "Reflect-Pass-1!", 60);
    reflected.kind = FrameKind::Result;
    let id = reflected.msg_id.clone();
    refused(agent.handle_request(reflected, std::time::Instant::now()).await, &id, Outcome::Internal);

    assert!(app.bind_works("alice", passback::sandbox::INITIAL_USER_PASSWORD).await, "nothing was written");
    let log = crate::harness::portal_log();
    assert!(log.contains("refused a request frame"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_an_agent_with_a_wrong_secret() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{}", app.url.replace("https://", "wss://"), passback::relay::AGENT_PATH);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {}.{}", state.agent_id, "not-the-secret").parse().unwrap());
    let tls = passback::tls::client_config(Some(&app.ca.ca_file)).unwrap();
    let result = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await;
    let err = result.expect_err("refused").to_string();
    assert!(err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_token_works_only_once() {
    let app = spawn_app().await;
    let token = app.new_token().await;
    let other_state = app.dir.join("second-agent.json");
    let run = |state: &std::path::Path| {
        app.agent_command(&["enroll", "--portal", &app.url, "--token", &token])
            .env("PASSBACK_AGENT__STATE_FILE", state)
            .output()
            .unwrap()
    };
    assert!(run(&other_state).status.success());
    let third = app.dir.join("third-agent.json");
    let again = run(&third);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("unknown, used or expired"));
    assert!(!third.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_used_at_once_without_restarting_the_agent() {
    let app = spawn_app().await;
    let out = app.agent_command(&["rotate-keys"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    assert_eq!(state.keys.iter().map(|k| k.version).collect::<Vec<_>>(), vec![2, 1]);
    let mode = std::fs::metadata(&app.agent_cfg.state_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "After-Rotation-9!", "After-Rotation-9!").await;

    assert!(page.contains("Your password has been changed"), "{page}\n{}", app.agent_log());
    assert!(app.bind_works("alice", "After-Rotation-9!").await);
    assert_eq!(app.hub.keys(&state.agent_id).await.unwrap()[0].version, 2, "the portal seals with the newest");
    // A frame sealed with the previous version is still accepted during the grace period.
    let mut old_state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    old_state.keys.remove(0);
    let agent = Agent::new(app.agent_cfg.clone()).unwrap();
    let frame = sealed_reset(&old_state, &alice_anchor(&app).await, "Old-Key-Still-Ok7!", 60);
    let answer = agent.handle_request(frame, std::time::Instant::now()).await.expect("answered");
    assert_eq!(outcome_of(&old_state, &answer), Outcome::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_to_start_beside_another_with_its_state_file_or_when_others_can_read_it() {
    let mut app = spawn_app().await;
    // A second agent with the running one's state file: it would answer as the same agent and
    // write its journal over the other's.
    let mut second = app.agent_command(&[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut waited = 0;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if waited == 300 {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second agent with the same state file kept running");
        }
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!status.success() && said.contains("another agent is running with the state file"), "{said}");
    app.wait_until_alive(true).await;

    app.stop_agent();
    std::fs::set_permissions(&app.agent_cfg.state_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = app.agent_command(&[]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by others"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_appears_in_logs_database_or_audit() {
    let app = spawn_app().await;
    let secret = "Zebra-Quartz-9147!";
    let short = "Qz9!kw";
    let form = app.verified_as("bob", "bob@example.org").await;
    let page = app.submit_password(&form, short, short).await;
    assert!(page.contains("PB-2001"));
    let page = app.submit_password(&page, secret, secret).await;
    assert!(page.contains("Your password has been changed"));
    assert!(app.bind_works("bob", secret).await);

    let mut haystacks = vec![("portal log", crate::harness::portal_log()), ("agent log", app.agent_log())];
    let database: String =
        app.database_files().await.iter().map(|(_, bytes)| String::from_utf8_lossy(bytes).to_string()).collect();
    // What the search would find: what the portal stored of bob, as it stored it.
    assert!(database.contains("bob@example.org"), "the database's files were read as written");
    haystacks.push(("database", database));
    let audit = format!("{:?}", app.audit().await);
    haystacks.push(("audit", audit));
    for (what, text) in &haystacks {
        assert!(!text.is_empty() || *what == "agent log", "{what} was read");
        for pw in [secret, short, passback::sandbox::INITIAL_USER_PASSWORD] {
            assert!(!text.contains(pw), "{what} contains a password");
        }
    }
    assert!(app.agent_log().contains("request served"), "the agent log was captured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_keys_are_too_old_rotates_them_by_itself() {
    let mut app = spawn_app().await;
    app.stop_agent();
    let mut state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    state.keys[0].created_at -= 181 * 86_400;
    state.save(&app.agent_cfg.state_file).unwrap();

    app.start_agent().await;

    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    assert_eq!(state.keys[0].version, 2, "rotated at start");
    assert_eq!(app.hub.keys(&state.agent_id).await.unwrap()[0].version, 2);
    let form = app.verified_as("bob", "bob@example.org").await;
    let page = app.submit_password(&form, "Rotated-By-Age-5!", "Rotated-By-Age-5!").await;
    assert!(page.contains("Your password has been changed"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_serve_a_directory_it_was_not_enrolled_for() {
    let mut app = spawn_app().await;
    app.stop_agent();
    app.wait_until_alive(false).await;
    // A second agent, enrolled for another directory, but configured (or compromised) to claim ours.
    let token = app.token_for("elsewhere").await;
    let rogue_state = app.dir.join("rogue.json");
    let enrolled = app
        .agent_command(&["enroll", "--portal", &app.url, "--token", &token])
        .env("PASSBACK_AGENT__STATE_FILE", &rogue_state)
        .output()
        .unwrap();
    assert!(enrolled.status.success());
    let mut rogue = app
        .agent_command(&[])
        .env("PASSBACK_AGENT__STATE_FILE", &rogue_state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    for _ in 0..100 {
        if app.hub.live_agents() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let connected = app.hub.live_agents();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let alive = app.hub.is_alive(&DirectoryId::parse(crate::harness::DIR_ID).unwrap());
    let _ = rogue.kill();
    let _ = rogue.wait();

    assert_eq!(connected, 1, "the rogue agent did connect");
    assert!(!alive, "the portal does not route our directory's passwords to it");
    let log = crate::harness::portal_log();
    assert!(log.contains("not enrolled for"), "the attempt is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_relay_secret_alone_cannot_rotate_the_keys() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    // The attacker has the bearer secret but not the package key: they seal with their own.
    let their_key = passback::envelope::PackageKey::generate(&mut rand::rngs::OsRng);
    let msg_id = MsgId::random();
    let payload = passback::relay::protocol::RotatePayload {
        public_key_pem: passback::agent::state::new_key_pair().unwrap().public_pem,
        issued_at: passback::Clock::default().now(),
    };
    let frame = envelope::seal(
        &state.agent_id,
        1,
        &their_key,
        Direction::ToPortal,
        FrameKind::Rotate,
        &msg_id,
        &payload,
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    let resp = app
        .client
        .post(format!("{}{}", app.url, passback::relay::ROTATE_PATH))
        .header("authorization", state.bearer().as_str())
        .json(&frame)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(app.hub.keys(&state.agent_id).await.unwrap().len(), 1, "no key was added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_by_itself_when_the_portal_restarts() {
    let mut app = spawn_app().await;

    app.restart_portal().await;
    app.wait_until_alive(true).await;

    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "After-Restart-42!", "After-Restart-42!").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    let log = app.agent_log();
    assert!(log.matches("connected to the portal").count() >= 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_token_expires() {
    let app = spawn_app().await;
    let token = app.new_token().await;
    app.clock.advance(6 * 60);
    let out = app
        .agent_command(&["enroll", "--portal", &app.url, "--token", &token])
        .env("PASSBACK_AGENT__STATE_FILE", app.dir.join("late.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown, used or expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_can_also_unlock_the_account_and_require_a_change_at_next_sign_in() {
    let app = spawn_app().await;
    app.lock_out("bob").await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let agent = Agent::new(app.agent_cfg.clone()).unwrap();
    let rows = passback::store::users::find_by_login(&app.db, "bob").await.unwrap();
    let bob = Anchor::parse(&rows[0].anchor).unwrap();
    let flags = Flags { unlock: true, must_change: true, ..Flags::default() };
    let frame = sealed_reset_with(&state, &bob, "Temporary-Pass-31", 60, flags);

    let answer = agent.handle_request(frame, std::time::Instant::now()).await.expect("answered");

    let pkg = open_answer(&state, &answer);
    assert_eq!(pkg.outcome, Outcome::Success);
    assert!(pkg.raw.contains("unlock: done") && pkg.raw.contains("must change at next sign-in: done"), "{}", pkg.raw);
    assert!(pkg.raw.contains("read back: not locked"), "the lock that was there is read back: {}", pkg.raw);
    assert!(app.bind_works("bob", "Temporary-Pass-31").await, "no longer locked: the new password binds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waited_longer_than_the_portal_does_is_not_written() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let agent = Agent::new(app.agent_cfg.clone()).unwrap();
    let frame = sealed_reset_waiting(&state, &alice_anchor(&app).await, "Too-Late-Pass-1", 60, Flags::default(), 1);
    let arrived = std::time::Instant::now() - std::time::Duration::from_secs(2);

    let answer = agent.handle_request(frame, arrived).await.expect("answered");

    assert_eq!(outcome_of(&state, &answer), Outcome::AgentTimeout);
    assert!(app.bind_works("alice", passback::sandbox::INITIAL_USER_PASSWORD).await, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_writebacks_by_outcome_and_see_the_agent_go() {
    let mut app = spawn_app().await;
    let (client, url) = (app.client.clone(), format!("{}/metrics", app.url));
    let scrape = |token: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(scrape("wrong-token").await.0, 401, "only the configured scraper may read them");
    let (status, text) = scrape(crate::harness::METRICS_TOKEN).await;
    assert_eq!(status, 200);
    assert!(text.contains("passback_live_agents 1"), "{text}");

    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "Metrics-Pass-2024!", "Metrics-Pass-2024!").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    // The relay check makes a sealed no-op round trip, counted like any other.
    let check = format!("{}/healthz/relay?directory={}", app.url, crate::harness::DIR_ID);
    let anonymous = app.client.get(&check).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "only a monitor may ask, since the answer names directories");
    let body: serde_json::Value =
        app.client.get(&check).bearer_auth(crate::harness::METRICS_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["ok"], true, "{body}");
    let (_, text) = scrape(crate::harness::METRICS_TOKEN).await;
    assert!(text.contains("passback_writebacks_total{op=\"noop\",outcome=\"PB-0000\"} 1"), "{text}");
    assert!(text.contains("passback_writebacks_total{op=\"reset\",outcome=\"PB-0000\"} 1"), "{text}");
    assert!(text.contains("passback_attempts_total{operation=\"reset.writeback\",outcome=\"PB-0000\"} 1"), "{text}");
    // The new-password form read the account's live state and policy once.
    assert!(text.contains("passback_writebacks_total{op=\"inspect\",outcome=\"PB-0000\"} 1"), "{text}");
    assert!(text.contains("passback_writeback_seconds_count 3"), "{text}");

    // The agent stops: within two ping intervals the gauge says so.
    app.stop_agent();
    let mut gone = false;
    for _ in 0..50 {
        if scrape(crate::harness::METRICS_TOKEN).await.1.contains("passback_live_agents 0") {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the metrics show no live agent once it stopped");
    let resp = app.client.get(&check).bearer_auth(crate::harness::METRICS_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 503, "the relay check says writeback is down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_checks_the_portals_certificate_the_agents_credentials_and_the_clock() {
    use passback::agent::doctor::{portal, Status};
    let app = spawn_app().await;
    let status = |checks: &[passback::agent::doctor::Check], name: &str| {
        checks.iter().find(|c| c.name == name).map(|c| c.status).unwrap_or_else(|| panic!("no {name}: {checks:#?}"))
    };

    let checks = portal(&app.agent_cfg).await;
    for name in ["TLS", "agent credentials", "clock"] {
        assert_eq!(status(&checks, name), Status::Pass, "{checks:#?}");
    }
    assert!(app.hub.is_alive(&DirectoryId::parse(crate::harness::DIR_ID).unwrap()), "the running agent is undisturbed");

    // Without the portal's CA, its certificate is not trusted.
    let mut untrusting = app.agent_cfg.clone();
    untrusting.portal_ca_file = None;
    let checks = portal(&untrusting).await;
    assert_eq!(status(&checks, "TLS"), Status::Fail, "{checks:#?}");
    let tls = checks.iter().find(|c| c.name == "TLS").unwrap();
    assert!(tls.detail.contains("not trusted") && tls.fix.as_deref().unwrap().contains("portal_ca_file"), "{tls:#?}");
    assert_eq!(status(&checks, "agent credentials"), Status::NotChecked);

    // A state file whose secret the portal does not know.
    let mut state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    state.relay_secret = secrecy::SecretString::from("f".repeat(64));
    let forged = app.dir.join("forged-state.json");
    state.save(&forged).unwrap();
    let mut forging = app.agent_cfg.clone();
    forging.state_file = forged;
    let checks = portal(&forging).await;
    assert_eq!(status(&checks, "TLS"), Status::Pass);
    assert_eq!(status(&checks, "agent credentials"), Status::Fail, "{checks:#?}");

    // The command prints the table and says by its exit code whether anything failed.
    let out = app.agent_command(&["doctor"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table.contains("right: write userPassword")
            && table.contains("0 failed")
            && table.contains("locks an account after 5 wrong passwords"),
        "{table}"
    );
    let elsewhere = app.dir.join("untrusting");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = passback::demo::write_agent_files(&elsewhere, &untrusting).unwrap();
    let out = std::process::Command::new(crate::harness::passback_bin())
        .args(["agent", "--config"])
        .arg(&config)
        .arg("doctor")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("fix: set portal_ca_file"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_protection_rules_and_budget_refuse_what_the_portal_asks() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let anchor = |uid: &'static str| {
        let app = &app;
        async move { Anchor::parse(&app.anchor_of(uid).await).unwrap() }
    };
    let ask = |agent: std::sync::Arc<Agent>, anchor: Anchor, op: Op| {
        let state = &state;
        async move {
            let password = (op == Op::Reset).then_some("Agent-Rules-Pass-9");
            let frame = sealed_request(state, &anchor, op, password, 60, Flags::default(), 30);
            open_answer(state, &agent.handle_request(frame, std::time::Instant::now()).await.expect("answered"))
        }
    };
    let mut cfg = app.agent_cfg.clone();
    cfg.directories[0].protected_groups = vec!["cn=ldap-admins,ou=groups,dc=example,dc=org".into()];
    cfg.directories[0].protected_filter = Some("(uid=carol)".into());
    let agent = Agent::new(cfg.clone()).unwrap();
    for (uid, op) in [("dave", Op::Reset), ("dave", Op::Unlock), ("carol", Op::Reset), ("carol", Op::RequireChange)] {
        let pkg = ask(agent.clone(), anchor(uid).await, op).await;
        assert_eq!(pkg.outcome, Outcome::Protected, "{uid} {op:?}: {}", pkg.raw);
        assert!(pkg.raw.contains("protected by this agent's configuration"), "{}", pkg.raw);
    }
    assert!(app.bind_works("carol", passback::sandbox::INITIAL_USER_PASSWORD).await, "nothing was written");
    assert_eq!(ask(agent.clone(), anchor("alice").await, Op::Reset).await.outcome, Outcome::Success);

    // A rule that cannot be checked refuses rather than guesses.
    cfg.directories[0].protected_groups = vec!["cn=missing,ou=groups,dc=example,dc=org".into()];
    cfg.directories[0].protected_filter = None;
    let pkg = ask(Agent::new(cfg.clone()).unwrap(), anchor("bob").await, Op::Unlock).await;
    assert_eq!(pkg.outcome, Outcome::Protected, "{}", pkg.raw);
    assert!(pkg.raw.contains("could not be checked"), "{}", pkg.raw);

    // Beyond its budget the agent refuses, and says so in its heartbeat for the health page.
    cfg.directories[0].protected_groups.clear();
    cfg.resets_per_minute = 2;
    let agent = Agent::new(cfg).unwrap();
    for _ in 0..2 {
        assert_eq!(ask(agent.clone(), anchor("bob").await, Op::Unlock).await.outcome, Outcome::Success);
    }
    let pkg = ask(agent.clone(), anchor("bob").await, Op::Unlock).await;
    assert_eq!(pkg.outcome, Outcome::DirectoryUnreachable, "{}", pkg.raw);
    assert!(pkg.raw.contains("more than 2"), "{}", pkg.raw);
    let status = agent.status().await;
    assert!(status.directories[0].alert.as_deref().is_some_and(|a| a.contains("more than 2")), "{status:?}");
}

/// Two agents serve one directory. The one holding a person's reset dies before it could read
/// it: after a few seconds without it, the other agent checks (a bind as the person) whether the
/// new password is in place, and the person is told plainly that it was not changed — not "not
/// confirmed" — while the reset itself never goes to the second agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_agent_holding_a_reset_dies_another_agent_says_whether_it_was_written() {
    use crate::harness::{spawn_app_with, until, Options};
    // Agents count as alive for twice the ping interval after they were last heard: long enough
    // here that both held still stay so from the claim (which names the agent the test reads)
    // to the sending (which would otherwise go to the other one, were the named one's time up).
    // A minute: on a busy machine ten seconds were once not enough. The agent killed is noticed
    // by its connection closing, not by a missed ping.
    let opts = Options { result_deadline_secs: 20, ping_interval_secs: 30, ..Default::default() };
    let app = spawn_app_with(opts).await;
    app.wait_until_alive(true).await;
    let (mut second, second_id) = app.second_agent("agent2").await;
    let first = app.agent.as_ref().unwrap().id();
    let signal = |pid: u32, sig: &str| {
        assert!(std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success())
    };
    let bob = app.anchor_of("bob").await;
    let form = app.verified_as("bob", "bob@example.org").await;

    // Both agents hold still, so the request waits on whichever was chosen; that one dies.
    signal(first, "STOP");
    signal(second.id(), "STOP");
    let (page, ()) = tokio::join!(app.submit_password(&form, "Never-Written-4!", "Never-Written-4!"), async {
        let db = app.db.clone();
        let chosen = async || {
            passback::store::Stmt::new("SELECT agent_id FROM writebacks WHERE op = 'reset' AND anchor = ?")
                .bind(bob.as_str())
                .scalar::<Option<String>>(&db)
                .await
                .unwrap()
                .flatten()
        };
        until("the reset to be sent", async || chosen().await.is_some()).await;
        let (dead, alive) = if chosen().await.as_deref() == Some(second_id.as_str()) {
            (second.id(), first)
        } else {
            (first, second.id())
        };
        signal(dead, "KILL");
        signal(alive, "CONT");
    });
    let _ = second.kill();
    let _ = second.wait();

    assert!(page.contains("PB-1003") && page.contains("was not changed"), "{page}");
    assert!(!app.bind_works("bob", "Never-Written-4!").await, "nothing was written");
    assert!(app.bind_works("bob", passback::sandbox::INITIAL_USER_PASSWORD).await);
    let rows = app.audit().await;
    let row = rows.iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert_eq!(row.outcome_code, "PB-1003", "{row:?}");
    assert!(row.raw.contains("found the new password not in place"), "{}", row.raw);
}
