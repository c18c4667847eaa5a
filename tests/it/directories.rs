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
