//! Several portal instances on one PostgreSQL, sharing their agents: an agent holds one
//! WebSocket, to one instance; a person's request may land on any.

use crate::harness::{spawn_app_with, until, Options, DIR_ID};
use passback::agent::state::AgentState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connected_to_one_instance_serves_a_reset_submitted_on_another() {
    let mut app = spawn_app_with(Options { postgres: true, ..Default::default() }).await;
    app.wait_until_alive(true).await;
    let other = app.portal.another_instance().await;
    let directory = passback::domain::DirectoryId::parse(DIR_ID).unwrap();
    let hub = other.hub.clone();
    until("the other instance to see the agent", async || hub.is_alive(&directory)).await;
    assert!(other.hub.connected_agents().is_empty(), "the agent's one connection is to the first instance");
    let health = other.hub.agents_health();
    assert!(health.len() == 1 && health[0].alive, "its health page shows the agent alive: {health:?}");

    // The person's pages and posts all go to the other instance (its sessions are in the database).
    app.url = other.url();
    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "Across-Instances-7!", "Across-Instances-7!").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("alice", "Across-Instances-7!").await);
    let rows = app.audit().await;
    let written = rows.iter().filter(|r| r.operation == "reset.writeback" && r.outcome_code == "PB-0000").count();
    assert_eq!(written, 1, "{rows:?}");

    // Keys rotated through the first instance are honoured by the other at once.
    let out = app.agent_command(&["rotate-keys"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    let form = app.verified_as("bob", "bob@example.org").await;
    let page = app.submit_password(&form, "After-Rotation-8!", "After-Rotation-8!").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    assert_eq!(other.hub.keys(&state.agent_id).await.unwrap()[0].version, 2, "the other seals with the newest");

    // Revoked on the other instance: the first drops its connection at once, and neither takes
    // it back.
    let revoked = passback::relay::revoke::revoke(
        &app.db,
        Some(&other.hub),
        &state.agent_id,
        "staff:ada",
        "TEST0-CODE0",
        app.clock.now(),
    )
    .await;
    assert!(revoked.is_ok(), "{revoked:?}");
    let first = app.hub.clone();
    until("the first instance to drop the agent", async || first.connected_agents().is_empty()).await;
    until("neither to count it alive", async || !hub.is_alive(&directory) && !first.is_alive(&directory)).await;
    for url in [app.portal.url(), other.url()] {
        let check = app
            .client
            .get(format!("{url}{}", passback::relay::CHECK_PATH))
            .header("Authorization", state.bearer().as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(check.status(), 401, "{url} refuses its credentials");
    }
}

/// The instance an agent is connected to is killed while a person's reset, made on another
/// instance, waits for the agent's answer. The agent reconnects through the load balancer to the
/// instance still alive, which sends the same sealed request again: the agent answers it once
/// (from what it did, if it had begun), the person is told the directory's answer, and the
/// directory is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_waiting_on_a_killed_instance_gets_the_directorys_answer_and_is_written_once() {
    let mut app = spawn_app_with(Options { postgres: true, result_deadline_secs: 20, ..Default::default() }).await;
    let (doomed, port) = app.portal.another_process(&app.dir.join("doomed")).await;
    // The agent reaches the portal through a balancer that prefers the instance to be killed.
    let balancer = passback::sandbox::Balancer::start(vec![
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::net::SocketAddr::from(([127, 0, 0, 1], app.portal.port)),
    ])
    .await
    .unwrap();
    let mut state = AgentState::load(&app.agent_cfg.state_file).unwrap();
    state.portal_url = format!("https://localhost:{}", balancer.port);
    state.save(&app.agent_cfg.state_file).unwrap();
    app.restart_agent_with(|_| {}).await;
    let hub = app.hub.clone();
    until("the agent to be connected to the other instance only", async || hub.connected_agents().is_empty()).await;
    app.wait_until_alive(true).await;

    let form = app.verified_as("carol", "carol@example.org").await;
    let served_before = app.agent_log().matches("request served").count();
    // The agent holds still: the request reaches it (or not) while its instance dies.
    app.signal_agent("STOP");
    let (page, ()) = tokio::join!(app.submit_password(&form, "Survived-Kill-5!", "Survived-Kill-5!"), async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let killed = std::process::Command::new("kill").args(["-KILL", &doomed.pid().to_string()]).status();
        assert!(killed.unwrap().success());
        app.signal_agent("CONT");
    });
    assert!(page.contains("Your password has been changed"), "{page}\n{}", app.agent_log());
    assert!(app.bind_works("carol", "Survived-Kill-5!").await);
    let served = app.agent_log().matches("request served").count() - served_before;
    assert_eq!(served, 1, "the directory was written once:\n{}", app.agent_log());
    let rows = app.audit().await;
    let written = rows.iter().filter(|r| r.operation == "reset.writeback").collect::<Vec<_>>();
    assert!(written.len() == 1 && written[0].outcome_code == "PB-0000", "{written:?}");
    assert!(app.hub.connected_agents().len() == 1, "the agent is connected to the instance alive");
    // The answer could only come through the instance alive, asked again.
    let carol = app.anchor_of("carol").await;
    let msg_id: String = passback::store::Stmt::new("SELECT msg_id FROM writebacks WHERE op = 'reset' AND anchor = ?")
        .bind(carol.as_str())
        .scalar_one(&app.db)
        .await
        .unwrap();
    let sent_again = crate::harness::portal_log()
        .lines()
        .any(|l| l.contains("agent back: the request is sent again") && l.contains(msg_id.as_str()));
    assert!(sent_again, "the request {msg_id} was sent again");
}

/// The instance a person's reset waits on is killed: their browser gets no answer, and they
/// send the same form again, which the load balancer takes to the instance alive. That instance
/// finds the form's writeback claimed by an instance that stopped, carries it on under the same
/// message id to the agent the claim named (which answers from what it did), and shows the
/// directory's answer under the first sending's support code. The directory is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_whose_instance_was_killed_while_it_waited_is_carried_on_when_sent_again() {
    let mut app = spawn_app_with(Options { postgres: true, result_deadline_secs: 20, ..Default::default() }).await;
    app.wait_until_alive(true).await;
    let (doomed, port) = app.portal.another_process(&app.dir.join("doomed")).await;
    let alive_url = app.url.clone();
    app.url = format!("https://localhost:{port}");
    let form = app.verified_as("bob", "bob@example.org").await;
    let resets = || app.agent_log().lines().filter(|l| l.contains("request served") && l.contains("op=Reset")).count();
    let served_before = resets();
    // The agent holds still: the request reaches it through the instance alive while the one
    // the person is on dies.
    app.signal_agent("STOP");
    let csrf = crate::harness::hidden(&form, "csrf").unwrap();
    let key = crate::harness::hidden(&form, "form_key").unwrap();
    let fields =
        [("csrf", csrf.as_str()), ("form_key", &key), ("password", "Carried-On-6!"), ("confirm", "Carried-On-6!")];
    let post = app.client.post(format!("{}/reset/password", app.url)).form(&fields).send();
    let (sent, ()) = tokio::join!(post, async {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let killed = std::process::Command::new("kill").args(["-KILL", &doomed.pid().to_string()]).status();
        assert!(killed.unwrap().success());
        app.signal_agent("CONT");
    });
    assert!(sent.is_err(), "the killed instance gave no answer");

    // Sent again, to the instance alive.
    let again = app.client.post(format!("{alive_url}/reset/password")).form(&fields).send().await.unwrap();
    let support = again.headers().get("x-support-code").map(|v| v.to_str().unwrap().to_string());
    let page = again.text().await.unwrap();
    let log = crate::harness::portal_log();
    assert!(page.contains("Your password has been changed"), "{page}\n{log}\n{}", app.agent_log());
    assert!(app.bind_works("bob", "Carried-On-6!").await);
    assert_eq!(resets() - served_before, 1, "the directory was written once:\n{}", app.agent_log());
    let rows = app.audit().await;
    let written = rows.iter().filter(|r| r.operation == "reset.writeback").collect::<Vec<_>>();
    assert!(written.len() == 1 && written[0].outcome_code == "PB-0000", "{written:?}");
    let bob = app.anchor_of("bob").await;
    let (first_code, instance): (String, String) =
        passback::store::Stmt::new("SELECT support_code, instance FROM writebacks WHERE op = 'reset' AND anchor = ?")
            .bind(bob.as_str())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(support.as_deref(), Some(first_code.as_str()), "the first sending's support code");
    assert_eq!(written[0].support_code, first_code);
    assert_eq!(instance, app.hub.instance, "carried on by the instance alive");

    // The health page, on the instance alive, shows which one stopped.
    let health = app.client.get(format!("{alive_url}/admin/health.json")).bearer_auth(crate::harness::METRICS_TOKEN);
    let v: serde_json::Value = health.send().await.unwrap().json().await.unwrap();
    let instances = v["instances"].as_array().unwrap();
    let state = |alive: bool| instances.iter().filter(|i| i["alive"] == alive).count();
    assert!(instances.len() == 2 && state(true) == 1 && state(false) == 1, "{v}");
}

/// A person's browser gives up on the final form on one instance while it waits (the instance
/// stays up); sent again, the balancer takes it to another. The first instance let the form go
/// when its request was dropped, so the other carries it on at once rather than waiting for an
/// instance that is alive but no longer answering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_dropped_on_a_live_instance_is_carried_on_by_another_when_sent_again() {
    let app = spawn_app_with(Options { postgres: true, result_deadline_secs: 20, ..Default::default() }).await;
    app.wait_until_alive(true).await;
    let other = app.portal.another_instance().await;
    let first_url = app.url.clone();
    let form = app.verified_as("carol", "carol@example.org").await;
    let resets = || app.agent_log().lines().filter(|l| l.contains("request served") && l.contains("op=Reset")).count();
    let served_before = resets();
    let csrf = crate::harness::hidden(&form, "csrf").unwrap();
    let key = crate::harness::hidden(&form, "form_key").unwrap();
    let fields =
        [("csrf", csrf.as_str()), ("form_key", &key), ("password", "Let-Go-Of-4!"), ("confirm", "Let-Go-Of-4!")];
    app.signal_agent("STOP");
    let url = format!("{first_url}/reset/password");
    let dropped = app.client.post(&url).form(&fields).timeout(std::time::Duration::from_millis(1500)).send().await;
    assert!(dropped.is_err(), "no answer while the agent holds still");
    app.signal_agent("CONT");

    let again = app.client.post(format!("{}/reset/password", other.url())).form(&fields).send().await.unwrap();
    let page = again.text().await.unwrap();
    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("carol", "Let-Go-Of-4!").await);
    assert_eq!(resets() - served_before, 1, "the directory was written once:\n{}", app.agent_log());
    let rows = app.audit().await;
    let written: Vec<_> = rows.iter().filter(|r| r.operation == "reset.writeback").collect();
    assert!(written.len() == 1 && written[0].outcome_code == "PB-0000", "{written:?}");
}

/// The limits on first steps are one count in the database: spreading requests over instances
/// (as a load balancer would) gets no more through than one instance would let.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_steps_from_one_address_are_counted_once_across_instances() {
    // Without a proof of work (no browser here) a quarter of the allowance applies: 3 a minute.
    let mut app = spawn_app_with(Options { postgres: true, per_address_per_minute: 12, ..Default::default() }).await;
    let other = app.portal.another_instance().await;
    let urls = [app.url.clone(), other.url()];
    let mut through = 0;
    for i in 0..8 {
        app.url = urls[i % 2].clone();
        let (_, csrf) = app.page("/reset").await;
        let answer = app
            .client
            .post(format!("{}/reset", app.url))
            .form(&[("csrf", csrf.as_str()), ("login", "alice")])
            .send()
            .await
            .unwrap();
        match answer.status().as_u16() {
            200 => through += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(through, 3, "3 a minute from this address, whichever instance answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_checks_a_configuration_without_starting_and_logs_one_json_line_per_request() {
    use std::process::Command;
    let app = spawn_app_with(Options::default()).await;
    let dir = app.dir.join("operator");
    std::fs::create_dir_all(&dir).unwrap();
    let check = |more: &str| {
        let file = dir.join("check.toml");
        app.portal.write_config(&file, more);
        Command::new(crate::harness::passback_bin())
            .args(["serve", "--check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let good = check("");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(String::from_utf8_lossy(&good.stdout).contains("The configuration is valid."));
    let bad = check("[reminders]\nexpiry_days = [200]\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("reminders.expiry_days: 200"), "{bad:?}");

    // In JSON, each request is one line with its path, status, duration, support code and outcome.
    let (_serve, port) = app.portal.another_process_with(&dir, &[("PASSBACK__LOG_FORMAT", "json")]).await;
    let url = format!("https://localhost:{port}");
    let form =
        app.client.get(format!("{url}/signin?login_hint=secret-name")).send().await.unwrap().text().await.unwrap();
    let csrf = crate::harness::hidden(&form, "csrf").unwrap();
    let fields = [("csrf", csrf.as_str()), ("login", "alice"), ("password", "Not-Her-Password-1")];
    let refused = app.client.post(format!("{url}/signin")).form(&fields).send().await.unwrap();
    let support = refused.headers()["x-support-code"].to_str().unwrap().to_string();
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("serve.log"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let request = |l: &&serde_json::Value| l["message"] == "request";
    let of_signin = |l: &&serde_json::Value| request(l) && l["support_code"] == support.as_str();
    until("the sign-in's line", async || lines().iter().any(|l| of_signin(&l))).await;
    let all = lines();
    let signin = all.iter().find(of_signin).unwrap();
    assert_eq!(
        (&signin["method"], &signin["path"], &signin["status"]),
        (&"POST".into(), &"/signin".into(), &200.into())
    );
    // The outcome the audit recorded for the same support code (a wrong password, or no agent
    // yet where this new instance has not seen one).
    let audit = app.audit().await;
    let row = audit.iter().find(|r| r.support_code == support).expect("the sign-in's audit row");
    assert!(["PB-3005", "PB-1001"].contains(&row.outcome_code.as_str()), "{row:?}");
    assert_eq!(signin["outcome"], row.outcome_code.as_str(), "{signin}");
    assert!(signin["duration_ms"].as_f64().unwrap() > 0.0, "{signin}");
    let page = all.iter().filter(request).find(|l| l["method"] == "GET" && l["path"] == "/signin").unwrap();
    assert!(!page.to_string().contains("secret-name"), "never the query: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_portal_configuration_that_checks_once_its_certificate_is_there_and_an_agent_one_the_doctor_reads(
) {
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let app = spawn_app_with(Options::default()).await;
    let dir = app.dir.join("etc-passback");
    let passback = |args: &[&str]| Command::new(crate::harness::passback_bin()).args(args).output().unwrap();
    let d = dir.display().to_string();
    let url = app.url.clone();
    let made = passback(&["init", "portal", "--dir", &d, "--public-url", &url]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let key = std::fs::read_to_string(dir.join("data.key")).unwrap();
    assert_eq!(key.trim().len(), 44, "32 bytes, base64");
    for file in ["data.key", "portal.toml"] {
        let mode = std::fs::metadata(dir.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o037, 0, "{file}: {mode:o}, read by owner and group at most");
    }
    let again = passback(&["init", "portal", "--dir", &d, "--public-url", &url]);
    assert_eq!(again.status.code(), Some(1), "not over an existing configuration: {again:?}");
    // Forced, the configuration is written again; the data key never is.
    let other = "https://sspr.example.org";
    let forced = passback(&["init", "portal", "--dir", &d, "--public-url", other, "--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("data.key")).unwrap(), key, "the database's secrets need it");
    assert!(std::fs::read_to_string(dir.join("portal.toml")).unwrap().contains(other));
    let printed = passback(&["init", "portal", "--dir", &d, "--public-url", &url, "--print"]);
    assert!(String::from_utf8_lossy(&printed.stdout).contains(&format!("public_url = \"{url}\"")));
    assert!(std::fs::read_to_string(dir.join("portal.toml")).unwrap().contains(other), "printing writes nothing");
    passback(&["init", "portal", "--dir", &d, "--public-url", &url, "--force"]);

    // It checks once the certificate and key it names are there (this test's, for localhost).
    let config = dir.join("portal.toml").display().to_string();
    let check = || passback(&["serve", "--check-config", "--config", &config]);
    let missing = check();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cert.pem"), "{missing:?}");
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::copy(app.portal.cfg.server.tls_cert_file.as_ref().unwrap(), dir.join("tls/cert.pem")).unwrap();
    std::fs::copy(app.portal.cfg.server.tls_key_file.as_ref().unwrap(), dir.join("tls/key.pem")).unwrap();
    let checked = check();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    // The agent's: the doctor reads it and reaches the directory with it (not yet enrolled).
    let slapd = &app.slapd;
    let ca = slapd.ca_file.display().to_string();
    let made = passback(&[
        "init",
        "agent",
        "--dir",
        &d,
        "--portal-url",
        &url,
        "--directory",
        "corp",
        "--kind",
        "openldap",
        "--url",
        &slapd.url,
        "--base-dn",
        &slapd.people_dn,
        "--bind-dn",
        &slapd.service_dn,
        "--ca-file",
        &ca,
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(dir.join("corp.pw"), slapd.service_password.expose_secret()).unwrap();
    let agent_config = dir.join("agent.toml").display().to_string();
    let doctor = passback(&["agent", "--config", &agent_config, "doctor"]);
    let table = String::from_utf8_lossy(&doctor.stdout);
    assert!(table.contains("right: write userPassword"), "the directory was reached: {table}");
}
