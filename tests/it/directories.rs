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
    crate::harness::until("erin's sync", async || {
        !passback::store::users::find_by_login(&db, "erin").await.unwrap().is_empty()
    })
    .await;
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
    crate::harness::until("dave's removal", async || {
        passback::store::users::find_by_login(&db, "dave").await.unwrap().is_empty()
    })
    .await;
    let page = app.identify("dave").await;
    assert!(page.contains("Check your e-mail"), "the same answer as for anyone: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_finds_the_openldap_service_accounts_rights_and_a_person_has_none_of_them() {
    use passback::directory::doctor::{check_directory, Status};
    use passback::sandbox::{Slapd, TestCa};
    let dir = std::env::temp_dir().join(format!("passback-test-doctor-{}", uuid::Uuid::new_v4().simple()));
    let slapd = Slapd::start(&dir.join("ldap"), &TestCa::create(&dir.join("tls")).unwrap()).unwrap();
    let alice = slapd.user_dn("alice");
    let before = entry_state(&slapd, &alice).await;
    let rights = ["write userPassword", "pwdAccountLockedTime", "write pwdReset"];

    let checks = check_directory(&slapd.directory_config("ol")).await;

    let row =
        |name: &str| checks.iter().find(|c| c.name.contains(name)).unwrap_or_else(|| panic!("{name}: {checks:#?}"));
    assert!(checks.iter().all(|c| c.status != Status::Fail), "{checks:#?}");
    for right in rights {
        assert_eq!(row(right).status, Status::Pass, "{checks:#?}");
        assert!(row(right).detail.contains(&alice), "the first person in scope is named: {checks:#?}");
    }
    assert_eq!(row("ppolicy overlay").status, Status::Pass);
    assert!(row("base DN").detail.contains("4 people match"), "{checks:#?}");
    // Against SP 800-63B-4, the default policy's 8 characters are too few (information).
    let nist = row("NIST SP 800-63B-4");
    assert_eq!(nist.status, Status::Info, "{checks:#?}");
    assert!(nist.detail.contains("8 characters") && nist.fix.as_deref().unwrap().contains("pwdMinLength: 15"));

    // bob as the service account: he may write his own password, nobody else's.
    let mut as_bob = slapd.directory_config("ol");
    as_bob.bind_dn = slapd.user_dn("bob");
    as_bob.bind_password = Some(slapd.user_password.clone());
    let checks = check_directory(&as_bob).await;
    let row =
        |name: &str| checks.iter().find(|c| c.name.contains(name)).unwrap_or_else(|| panic!("{name}: {checks:#?}"));
    for right in rights {
        assert_eq!(row(right).status, Status::Fail, "{checks:#?}");
        assert!(
            row(right).fix.as_deref().unwrap().contains("olcAccess")
                || row(right).fix.as_deref().unwrap().contains("manage")
        );
    }

    // carol's own policy has a minimum age: resets within it need the right to mark pwdReset.
    for (mut cfg, expected) in [(slapd.directory_config("ol"), Status::Pass), (as_bob, Status::Fail)] {
        cfg.user_filter = Some("(uid=carol)".into());
        let checks = check_directory(&cfg).await;
        let age = checks.iter().find(|c| c.name == "minimum age on resets").expect("checked");
        assert_eq!(age.status, expected, "{checks:#?}");
        assert!(age.detail.contains("pwdMinAge 3600"), "{age:#?}");
    }

    assert_eq!(entry_state(&slapd, &alice).await, before, "nothing was written");
    assert!(passback::sandbox::bind_works(&slapd.url, &slapd.ca_file, &alice, &slapd.user_password).await);
    drop(slapd);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What any write to `dn` would move (entryCSN), and the password state, read as the rootdn.
async fn entry_state(slapd: &passback::sandbox::Slapd, dn: &str) -> Vec<(String, Vec<String>)> {
    let settings =
        ldap3::LdapConnSettings::new().set_config(passback::tls::client_config(Some(&slapd.ca_file)).unwrap());
    let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, &slapd.url).await.unwrap();
    tokio::spawn(conn.drive());
    let password = secrecy::ExposeSecret::expose_secret(&slapd.admin_password);
    ldap.simple_bind(&slapd.admin_dn, password).await.unwrap().success().unwrap();
    let attrs = vec!["entryCSN", "userPassword", "pwdReset", "pwdAccountLockedTime", "pwdFailureTime"];
    let (entries, _) = ldap.search(dn, ldap3::Scope::Base, "(objectClass=*)", attrs).await.unwrap().success().unwrap();
    let _ = ldap.unbind().await;
    let entry = ldap3::SearchEntry::construct(entries.into_iter().next().unwrap());
    let mut state: Vec<_> = entry.attrs.into_iter().collect();
    state.extend(entry.bin_attrs.into_iter().map(|(k, v)| (k, v.into_iter().map(hex::encode).collect())));
    state.sort();
    state
}
