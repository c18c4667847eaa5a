//! Where a password lives decides what a reset does: cloud-only (the portal's own hash, no
//! directory), hash-synced (write back, then the portal's copy), federated (write back only).

use crate::harness::{spawn_app, TestApp};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use passback::store::Stmt;

fn verifies(hash: &str, password: &str) -> bool {
    argon2::Argon2::default().verify_password(password.as_bytes(), &PasswordHash::new(hash).unwrap()).is_ok()
}

async fn anchor_of(app: &TestApp, login: &str) -> String {
    passback::store::users::find_by_login(&app.db, login).await.unwrap().remove(0).anchor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_only_account_gets_its_password_from_the_portal_with_no_directory_involved() {
    let mut app = spawn_app().await;
    let now = app.clock.now();
    let id =
        passback::store::cloud::add(&app.db, "casey", Some("casey@example.org"), "Casey Cloud", now).await.unwrap();
    app.stop_agent();
    app.wait_until_alive(false).await;

    let form = app.verified_as("casey", "casey@example.org").await;
    assert!(form.contains("At least 8 characters"), "the cloud policy is shown: {form}");
    let short = app.submit_password(&form, "Qz7#kLm", "Qz7#kLm").await;
    assert!(short.contains("PB-2001") && short.contains("at least 8 characters"), "{short}");
    let simple = app.submit_password(&short, "casey-password", "casey-password").await;
    assert!(simple.contains("PB-2002"), "{simple}");
    let page = app.submit_password(&simple, "Quiet-Lantern-2026", "Quiet-Lantern-2026").await;

    assert!(page.contains("Your password has been changed"), "{page}");
    let hash = passback::store::cloud::password_hash(&app.db, &id).await.unwrap().expect("a hash");
    assert!(hash.starts_with("$argon2id$") && verifies(&hash, "Quiet-Lantern-2026"));
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.cloud" && r.outcome_code == "PB-0000");
    assert!(row.is_some(), "audited as a cloud reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_synced_person_gets_the_portal_hash_only_after_the_directory_accepted_the_password() {
    let app = spawn_app().await;
    let alice = anchor_of(&app, "alice").await;
    passback::store::users::set_kind_override(&app.db, "example", &alice, "hash_synced").await.unwrap();

    let form = app.verified_as("alice", "alice@example.org").await;
    let refused = app.submit_password(&form, "Qz7#kLm", "Qz7#kLm").await;
    assert!(refused.contains("PB-2001"));
    assert!(passback::store::users::password_hash(&app.db, "example", &alice).await.unwrap().is_none(), "no hash yet");
    let page = app.submit_password(&refused, "Synced-Pass-2026", "Synced-Pass-2026").await;

    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("alice", "Synced-Pass-2026").await);
    let hash = passback::store::users::password_hash(&app.db, "example", &alice).await.unwrap().unwrap();
    assert!(verifies(&hash, "Synced-Pass-2026"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_person_leaves_no_hash_in_the_portal() {
    let app = spawn_app().await;
    let bob = anchor_of(&app, "bob").await;

    let form = app.verified_as("bob", "bob@example.org").await;
    let page = app.submit_password(&form, "Federated-Pass-1", "Federated-Pass-1").await;

    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(passback::store::users::password_hash(&app.db, "example", &bob).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_portal_copy_cannot_be_updated_after_the_writeback_the_person_is_told() {
    let app = spawn_app().await;
    let alice = anchor_of(&app, "alice").await;
    passback::store::users::set_kind_override(&app.db, "example", &alice, "hash_synced").await.unwrap();
    // A real failure of the portal's database write, after the directory said yes.
    app.refuse_inserts_into("password_hashes").await;

    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "Synced-Pass-2026", "Synced-Pass-2026").await;

    assert!(page.contains("not yet for cloud services"), "{page}");
    assert!(app.bind_works("alice", "Synced-Pass-2026").await, "the directory has the new password");
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert_eq!(row.outcome_code, "PB-0001");
    assert!(row.raw.contains("cloud hash update failed"), "{}", row.raw);
}

/// Where alice's sign-in with `password` leads (in a browser of her own): `/account` when it
/// is right, `/signin/expired` when right but to be changed first, else back to `/signin`.
async fn sign_in_leads_to(app: &TestApp, password: &str) -> String {
    app.sign_in_on(&app.new_client(), "alice", password).await.url().path().to_string()
}

async fn signs_in(app: &TestApp, password: &str) -> bool {
    sign_in_leads_to(app, password).await == "/account"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_synced_copy_honours_the_directorys_lock_and_goes_when_the_directory_changes_the_password() {
    let mut app = spawn_app().await;
    // No sync but the one at each start, so the test decides what the portal has heard.
    app.restart_agent_with(|c| {
        c.sync_interval_secs = 3600;
        c.full_sync_interval_secs = 3600;
    })
    .await;
    let alice = anchor_of(&app, "alice").await;
    passback::store::users::set_kind_override(&app.db, "example", &alice, "hash_synced").await.unwrap();
    let form = app.verified_as("alice", "alice@example.org").await;
    let page = app.submit_password(&form, "Synced-Pass-2026", "Synced-Pass-2026").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(signs_in(&app, "Synced-Pass-2026").await, "the portal's copy is used");

    // The directory says the account is locked: the right password does not sign in.
    Stmt::new("UPDATE directory_users SET locked = TRUE WHERE anchor = ?").bind(&alice).run(&app.db).await.unwrap();
    assert!(!signs_in(&app, "Synced-Pass-2026").await);
    assert!(app.audit().await.iter().any(|r| r.operation == "signin" && r.outcome_code == "PB-3007"));
    Stmt::new("UPDATE directory_users SET locked = FALSE WHERE anchor = ?").bind(&alice).run(&app.db).await.unwrap();

    // The copy is ten minutes old when the directory's administrator sets another password; the
    // next sync tells the portal, which drops its copy and asks the directory from then on.
    Stmt::new("UPDATE password_hashes SET updated_at = updated_at - 600").run(&app.db).await.unwrap();
    app.slapd.set_password("alice", "Set-In-Directory-9").await.unwrap();
    app.restart_agent_with(|_| {}).await;
    let db = app.db.clone();
    crate::harness::until("the portal's copy to be dropped", async || {
        passback::store::users::password_hash(&db, "example", &alice).await.unwrap().is_none()
    })
    .await;
    assert!(!signs_in(&app, "Synced-Pass-2026").await, "the old password no longer signs in");
    // The directory's password is right (set by its administrator, it must be changed first).
    assert_eq!(sign_in_leads_to(&app, "Set-In-Directory-9").await, "/signin/expired", "the directory's is right");
}
