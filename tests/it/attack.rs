//! The relay's trust boundary under attack: a rogue client that holds a real agent's credentials
//! (the bearer secret a TLS-terminating proxy sees, or the whole state file) tries to tell the
//! portal things, to repeat what the agent said, and to keep a revoked agent connected.

use crate::harness::{spawn_app, TestApp, DIR_ID};
use crate::helpdesk::{add_staff, client, staff_signin};
use futures_util::{SinkExt, StreamExt};
use passback::agent::state::AgentState;
use passback::domain::{Anchor, DirectoryId, EmailAddress, MsgId, Outcome, SyncedUser};
use passback::envelope::{self, Direction, FrameKind, PackageKey, Report, ResultPackage, SealedFrame};
use passback::relay::protocol::{SyncChunk, Wire};
use passback::store::Stmt;
use passback::store::{staff::Role, users::Scope};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the relay WebSocket with the agent's own bearer secret; `Err` carries the refusal.
async fn connect(app: &TestApp, state: &AgentState) -> Result<Socket, String> {
    let url = format!("{}{}", app.url.replace("https://", "wss://"), passback::relay::AGENT_PATH);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", state.bearer().as_str().parse().unwrap());
    let tls = passback::tls::client_config(Some(&app.ca.ca_file)).unwrap();
    tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(tokio_tungstenite::Connector::Rustls(tls)))
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| e.to_string())
}

/// A frame sealed with `key` as the agent seals its reports.
fn seal_report<T: serde::Serialize>(
    state: &AgentState,
    key: (u32, &PackageKey),
    kind: FrameKind,
    body: &T,
    issued_at: i64,
) -> SealedFrame {
    let id = MsgId::random();
    let report = Report { issued_at, body };
    envelope::seal(&state.agent_id, key.0, key.1, Direction::ToPortal, kind, &id, &report, &mut rand::rngs::OsRng)
        .unwrap()
}

fn agent_key(state: &AgentState) -> (u32, PackageKey) {
    let key = state.usable_keys(passback::Clock::default().now(), 3600).unwrap().remove(0);
    (key.version, key.package)
}

async fn send(socket: &mut Socket, frame: &SealedFrame) {
    socket.send(Message::Binary(Wire::sealed(frame).0.into())).await.unwrap();
}

/// How many frames the portal refused for `reason`, from `/metrics`.
async fn refused(app: &TestApp, reason: &str) -> u64 {
    let text = app.metrics().await;
    let prefix = format!("passback_relay_frames_refused_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(|n| n.parse().unwrap()).unwrap_or(0)
}

/// Waits until the portal has refused `n` frames for `reason` (frames are handled in order).
async fn wait_refused(app: &TestApp, reason: &str, n: u64) {
    for _ in 0..100 {
        if refused(app, reason).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the portal did not refuse {n} frame(s) as {reason}: {}", refused(app, reason).await);
}

async fn email_of(app: &TestApp, uid: &str) -> Option<String> {
    Stmt::new("SELECT email FROM directory_users WHERE username = ?").bind(uid).scalar_one(&app.db).await.unwrap()
}

async fn wait_for_email(app: &TestApp, uid: &str, expected: &str) {
    for _ in 0..100 {
        if email_of(app, uid).await.as_deref() == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{uid}'s address never became {expected}: {:?}", email_of(app, uid).await);
}

/// A person as the agent would sync them, from what the portal stored.
async fn synced(app: &TestApp, uid: &str, email: &str) -> SyncedUser {
    let row = passback::store::users::find_by_login(&app.db, uid).await.unwrap().remove(0);
    SyncedUser {
        anchor: Anchor::parse(&row.anchor).unwrap(),
        dn: row.dn,
        username: row.username,
        email: Some(EmailAddress::parse(email).unwrap()),
        other_emails: vec![],
        mobile: None,
        display_name: row.display_name,
        enabled: true,
        locked: false,
        protected: false,
        groups: vec![],
        password_changed_at: None,
        password_expires_at: None,
    }
}

/// A delta sync, sealed with `key` at `issued_at`, that gives bob the address `email`.
async fn bob_at(
    app: &TestApp,
    state: &AgentState,
    key: (u32, &PackageKey),
    email: &str,
    issued_at: i64,
) -> SealedFrame {
    let users = vec![synced(app, "bob", email).await];
    seal_report(state, key, FrameKind::Sync, &chunk(users, false), issued_at)
}

fn chunk(users: Vec<SyncedUser>, full: bool) -> SyncChunk {
    SyncChunk { directory: DirectoryId::parse(DIR_ID).unwrap(), full, seq: 0, last: true, users, policy: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_secret_alone_changes_nobody_and_each_sealed_report_is_taken_once() {
    let app = spawn_app().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let mut rogue = connect(&app, &state).await.expect("the bearer secret opens the socket");

    // The old, unsealed sync frame that used to rewrite anyone's address.
    let unsealed = serde_json::json!({
        "v": passback::envelope::VERSION, "type": "sync", "directory": DIR_ID, "full": false, "seq": 0,
        "last": true, "users": [synced(&app, "bob", "attacker@evil.example").await],
    });
    rogue.send(Message::Text(unsealed.to_string().into())).await.unwrap();
    // Sealed, but not with the agent's package key (a proxy that saw only the secret).
    let guessed = PackageKey::generate(&mut rand::rngs::OsRng);
    let users = vec![synced(&app, "bob", "attacker@evil.example").await];
    send(&mut rogue, &seal_report(&state, (1, &guessed), FrameKind::Sync, &chunk(users, false), app.clock.now())).await;
    wait_refused(&app, "unsealed", 1).await;
    wait_refused(&app, "tampered", 1).await;
    assert_eq!(email_of(&app, "bob").await.as_deref(), Some("bob@example.org"), "nothing changed");

    // Sealed with the agent's key: taken, and the address it replaced is told.
    let (version, key) = agent_key(&state);
    let moved = bob_at(&app, &state, (version, &key), "bob.new@example.org", app.clock.now()).await;
    send(&mut rogue, &moved).await;
    wait_for_email(&app, "bob", "bob.new@example.org").await;
    let told: Vec<_> = app
        .wait_for_mails("The addresses on your account changed", 1)
        .await
        .into_iter()
        .flat_map(|m| m.to.clone())
        .collect();
    assert_eq!(told, vec!["bob@example.org".to_string()], "the old address, and only it, is told");

    let back = bob_at(&app, &state, (version, &key), "bob@example.org", app.clock.now()).await;
    send(&mut rogue, &back).await;
    wait_for_email(&app, "bob", "bob@example.org").await;

    // The first frame again: a copy is refused, however authentic.
    send(&mut rogue, &moved).await;
    wait_refused(&app, "replayed", 1).await;
    // One sealed long ago, and a heartbeat relabelled as a sync.
    let stale = bob_at(&app, &state, (version, &key), "stale@evil.example", app.clock.now() - 3600).await;
    send(&mut rogue, &stale).await;
    wait_refused(&app, "stale", 1).await;
    let mut relabelled = seal_report(&state, (version, &key), FrameKind::Heartbeat, &"status", app.clock.now());
    relabelled.kind = FrameKind::Sync;
    send(&mut rogue, &relabelled).await;
    wait_refused(&app, "tampered", 2).await;
    assert_eq!(email_of(&app, "bob").await.as_deref(), Some("bob@example.org"));
    assert!(crate::harness::portal_log().contains("refused a frame: not sealed"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_sent_again_or_changed_afterwards_changes_nothing() {
    let mut app = spawn_app().await;
    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "Final-Answer-2024!", "Final-Answer-2024!").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    let (msg_id, shown): (String, String) =
        Stmt::new("SELECT msg_id, outcome_code FROM writebacks WHERE op = 'reset' AND anchor = ?")
            .bind(app.anchor_of("alice").await)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(shown, "PB-0000");

    // What refuses the copies is in the database: it holds across a restart.
    app.restart_portal().await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let (version, key) = agent_key(&state);
    let msg_id = MsgId::parse(&msg_id).unwrap();
    let other = ResultPackage {
        msg_id: msg_id.clone(),
        outcome: Outcome::InHistory { history: Some(3) },
        raw: "a different answer".into(),
        policy: None,
    };
    let frame = envelope::seal(
        &state.agent_id,
        version,
        &key,
        Direction::ToPortal,
        FrameKind::Result,
        &msg_id,
        &other,
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    let mut rogue = connect(&app, &state).await.unwrap();
    send(&mut rogue, &frame).await;
    send(&mut rogue, &frame).await;
    wait_refused(&app, "answered", 2).await;

    let (code, late): (String, Option<String>) =
        Stmt::new("SELECT outcome_code, late_outcome_code FROM writebacks WHERE msg_id = ?")
            .bind(msg_id.as_str())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((code.as_str(), late), ("PB-0000", None), "a finished writeback is final");
    assert!(!app.audit().await.iter().any(|r| r.operation.ends_with("late_result")), "no audit row for a copy");
    assert!(app.bind_works("alice", "Final-Answer-2024!").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_that_would_remove_too_many_people_waits_for_an_administrator() {
    let app = spawn_app().await;
    let before = passback::store::users::count(&app.db, DIR_ID).await.unwrap();
    assert!(before >= 4, "the seeded people are synced: {before}");
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let (version, key) = agent_key(&state);
    let mut rogue = connect(&app, &state).await.unwrap();
    // A second later than the sync that listed everyone, so "not seen since" is exact.
    app.clock.advance(2);
    let only_alice = chunk(vec![synced(&app, "alice", "alice@example.org").await], true);
    send(&mut rogue, &seal_report(&state, (version, &key), FrameKind::Sync, &only_alice, app.clock.now())).await;
    let db = app.db.clone();
    crate::harness::until("the sync to be held", async || {
        !passback::store::users::sync_holds(&db).await.unwrap().is_empty()
    })
    .await;
    let holds = passback::store::users::sync_holds(&app.db).await.unwrap();
    assert_eq!(holds.len(), 1, "the sync is held");
    assert_eq!((holds[0].would_remove, holds[0].total), (before - 1, before));
    assert_eq!(passback::store::users::count(&app.db, DIR_ID).await.unwrap(), before, "nobody was removed");

    // The administrator reads the numbers on the health page and applies the removal.
    let admin = add_staff(&app, "ada", Role::Administrator, Scope::default(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &admin, 0).await;
    let page = c.get(format!("{}/admin/health", app.url)).send().await.unwrap().text().await.unwrap();
    let said = format!("did not list {} of the {before} people", before - 1);
    assert!(page.contains(&said), "{page}");
    let csrf = crate::harness::hidden(&page, "csrf").unwrap();
    let applied = c
        .post(format!("{}/admin/health/apply-sync", app.url))
        .form(&[("csrf", csrf.as_str()), ("directory", DIR_ID)])
        .send()
        .await
        .unwrap();
    assert!(applied.status().is_success(), "{}", applied.status());
    assert_eq!(passback::store::users::count(&app.db, DIR_ID).await.unwrap(), 1);
    assert!(passback::store::users::sync_holds(&app.db).await.unwrap().is_empty());
    assert!(app.audit().await.iter().any(|r| r.operation == "sync.apply_hold" && r.actor == "staff:ada"));

    // The same page revokes the agent: its connections end at once, and it cannot come back.
    let page = c.get(format!("{}/admin/health", app.url)).send().await.unwrap().text().await.unwrap();
    let csrf = crate::harness::hidden(&page, "csrf").unwrap();
    let revoked = c
        .post(format!("{}/admin/health/revoke", app.url))
        .form(&[("csrf", csrf.as_str()), ("agent", state.agent_id.as_str())])
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert!(app.hub.connected_agents().is_empty(), "dropped at once, before the page came back");
    loop {
        match rogue.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => {
                assert!(
                    matches!(other, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
                    "the socket ends: {other:?}"
                );
                break;
            }
        }
    }
    assert!(connect(&app, &state).await.unwrap_err().contains("401"));
    let keys = passback::store::agents::keys(&app.db, &state.agent_id).await.unwrap();
    assert!(keys.is_empty(), "its keys are forgotten");
    assert!(app.audit().await.iter().any(|r| r.operation == "agent.revoke" && r.actor == "staff:ada"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_revoked_from_the_command_line_is_cut_off_by_the_running_portal() {
    let app = spawn_app().await;
    app.wait_until_alive(true).await;
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    // What `passback agent revoke --name` does, against the portal's database from another
    // process: the running portal notices within a second.
    let name = Stmt::new("SELECT name FROM agents WHERE id = ?")
        .bind(&state.agent_id)
        .scalar_one::<String>(&app.db)
        .await
        .unwrap();
    let revoked =
        passback::relay::revoke::revoke(&app.db, None, &name, "command-line", "TEST0-CODE0", app.clock.now()).await;
    assert_eq!(revoked.unwrap().id, state.agent_id);
    let hub = app.hub.clone();
    crate::harness::until("the live connection to be dropped", async || hub.connected_agents().is_empty()).await;
    assert!(connect(&app, &state).await.unwrap_err().contains("401"), "and it cannot reconnect");
    assert!(crate::harness::portal_log().contains("refused a revoked agent's credentials"));
    let again = passback::relay::revoke::revoke(&app.db, None, &name, "command-line", "TEST0-CODE1", 0).await;
    assert!(again.unwrap_err().to_string().contains("revoked already"));
}
