//! One agent serving several directories, and people who cannot be told apart.

use crate::harness::spawn_app;
use passback::domain::DirectoryId;
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_writes_each_persons_password_into_their_own_directory() {
    let mut app = spawn_app().await;
    let second = app.add_directory("second").await;
    app.more_directories[second].add_person("erin", Some("erin@example.org")).await.unwrap();
    app.start_agent().await;
    let id = DirectoryId::parse("second").unwrap();
    for _ in 0..100 {
        if app.hub.is_alive(&id) && !passback::store::users::find_by_login(&app.db, "erin").await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let form = app.verified_as("erin", "erin@example.org").await;
    let page = app.submit_password(&form, "Second-Directory-7!", "Second-Directory-7!").await;

    assert!(page.contains("Your password has been changed"), "{page}");
    let slapd = &app.more_directories[second];
    let new = SecretString::from("Second-Directory-7!".to_string());
    assert!(passback::sandbox::bind_works(&slapd.url, &slapd.ca_file, &slapd.user_dn("erin"), &new).await);
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert_eq!(row.directory.as_deref(), Some("second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_found_in_two_directories_is_not_guessed() {
    let mut app = spawn_app().await;
    app.add_directory("second").await;
    app.start_agent().await;
    for _ in 0..100 {
        if passback::store::users::find_by_login(&app.db, "alice").await.unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let page = app.identify("alice").await;

    assert!(page.contains("Check your e-mail"), "the same answer as ever: {page}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("alice@example.org"), 0, "no code to either alice");
    assert!(crate::harness::portal_log().contains("matches several people"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_suddenly_lists_nobody_removes_nobody() {
    let mut app = spawn_app().await;
    app.stop_agent();
    // A filter that matches nobody: what a mistyped base DN or filter looks like from the portal.
    app.agent_cfg.directories[0].user_filter = Some("(uid=nobody-at-all)".into());
    app.agent_config_file = passback::demo::write_agent_files(&app.dir, &app.agent_cfg).unwrap();
    let log = app.agent_log_file();
    let mut agent = app
        .agent_command(&[])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if crate::harness::portal_log().contains("a full sync listed nobody") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();

    assert!(crate::harness::portal_log().contains("a full sync listed nobody"));
    assert_eq!(passback::store::users::find_by_login(&app.db, "alice").await.unwrap().len(), 1);
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_added_to_the_directory_arrives_with_the_next_delta_sync() {
    let mut app = spawn_app().await;
    app.restart_agent_with(|cfg| {
        cfg.sync_interval_secs = 1;
        cfg.full_sync_interval_secs = 3600;
    })
    .await;

    app.slapd.add_person("erin", Some("erin@example.org")).await.unwrap();

    let db = app.db.clone();
    until("erin's sync", async || !passback::store::users::find_by_login(&db, "erin").await.unwrap().is_empty()).await;
    let log = app.agent_log();
    assert!(log.contains("full=false"), "erin came with a delta sync: {log}");
    assert_eq!(
        passback::store::users::find_by_login(&app.db, "alice").await.unwrap().len(),
        1,
        "a delta removes nobody"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_deleted_from_the_directory_leaves_the_portal_with_the_next_full_sync() {
    let mut app = spawn_app().await;
    app.restart_agent_with(|cfg| {
        cfg.sync_interval_secs = 1;
        cfg.full_sync_interval_secs = 2;
    })
    .await;
    assert_eq!(passback::store::users::find_by_login(&app.db, "dave").await.unwrap().len(), 1);

    app.slapd.delete_person("dave").await.unwrap();

    let db = app.db.clone();
    until("dave's removal", async || passback::store::users::find_by_login(&db, "dave").await.unwrap().is_empty())
        .await;
    let page = app.identify("dave").await;
    assert!(page.contains("Check your e-mail"), "the same answer as for anyone: {page}");
}
