//! Mail the portal sends of its own accord: reminders before a password expires and once it
//! has, and the invitation to register, each once whatever the number of instances, in the
//! language the person last used.

use crate::harness::{spawn_app_with, until, Options, DIR_ID};
use passback::sandbox::INITIAL_USER_PASSWORD;
use passback::store::Stmt;
use std::time::Duration;

const DAY: i64 = 86_400;
const INVITE: &str = "Set up password reset before you need it";

fn subjects_to(app: &crate::harness::TestApp, address: &str) -> Vec<String> {
    app.mailbox.all().into_iter().filter(|m| m.to.iter().any(|t| t == address)).map(|m| m.subject()).collect()
}

fn count(subjects: &[String], subject: &str) -> usize {
    subjects.iter().filter(|s| *s == subject).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_moved_clock_each_reminder_goes_once_in_the_persons_language_and_the_invitation_stops_once_registered() {
    let reminders = passback::config::RemindersConfig { check_every_secs: 1, ..Default::default() };
    let mut app = spawn_app_with(Options { gates_required: 2, reminders: Some(reminders), ..Default::default() }).await;
    // Alice's password lasts twenty days from when it was set.
    app.slapd.set_policy("expiring", &[("pwdMaxAge", &(20 * DAY).to_string())]).await.unwrap();
    app.slapd.use_policy("alice", "expiring").await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    app.slapd.password_changed_at("alice", &stamp).await.unwrap();
    // The agent's start is a full sync.
    app.restart_agent_with(|_| {}).await;
    let expiry = || async {
        Stmt::new("SELECT password_expires_at FROM directory_users WHERE username = 'alice'")
            .fetch_one::<(Option<i64>,)>(&app.db)
            .await
            .unwrap()
            .0
    };
    until("alice's expiry synced", async || expiry().await.is_some()).await;
    let left = expiry().await.unwrap() - app.clock.now();
    assert!((19 * DAY..=20 * DAY).contains(&left), "twenty days from the change, not {left} s");

    // Everyone with one way to prove who they are (their mailbox) is invited to add a second.
    app.wait_for_mails(INVITE, 1).await;
    until("alice and bob invited", async || {
        ["alice@example.org", "bob@example.org"].iter().all(|a| count(&subjects_to(&app, a), INVITE) == 1)
    })
    .await;
    // Bob adds an authenticator app: he is not invited again.
    let anchor = app.anchor_of("bob").await;
    let bob = passback::store::security::Person { directory: DIR_ID, anchor: &anchor };
    crate::reset::registered_authenticator(&app, bob).await;

    // Alice uses the portal in French: her reminders come in French.
    let french = {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT_LANGUAGE, "fr-FR, fr;q=0.9".parse().unwrap());
        let tls = (*passback::tls::client_config(Some(&app.ca.ca_file)).unwrap()).clone();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .cookie_store(true)
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let signed_in = app.sign_in_on(&french, "alice", INITIAL_USER_PASSWORD).await;
    assert!(signed_in.status().is_success(), "{:?}", signed_in.status());
    until("alice's language kept", async || {
        Stmt::new("SELECT lang FROM directory_users WHERE username = 'alice'")
            .fetch_one::<(Option<String>,)>(&app.db)
            .await
            .unwrap()
            .0
            .as_deref()
            == Some("fr")
    })
    .await;

    // A second instance looks for the same reminders at the same moments.
    let _other = app.portal.another_instance().await;
    let settle = || tokio::time::sleep(Duration::from_millis(2500));

    // Thirteen and a half days before: the fortnight's reminder, once.
    app.clock.advance(left - 27 * DAY / 2);
    let mails = app.wait_for_mails("Votre mot de passe expire dans 14 jours", 1).await;
    let body = mails[0].text();
    assert!(body.contains(&format!("{}/change", app.url)), "a link to the change page: {body}");
    assert!(body.contains("alice") && body.contains(" UTC"), "whose account, and when: {body}");
    assert!(body.contains("ne vous demande jamais votre mot de passe"), "how to tell it from phishing: {body}");
    settle().await;
    let seen = subjects_to(&app, "alice@example.org");
    assert_eq!(count(&seen, "Votre mot de passe expire dans 14 jours"), 1, "{seen:#?}");

    // Six and a half days before: the week's reminder.
    app.clock.advance(7 * DAY);
    app.wait_for_mails("Votre mot de passe expire dans 7 jours", 1).await;
    // Half a day before: the last day's reminder, and not the three days' one it jumped over.
    // Nineteen days after the first invitation, Alice is invited again, and Bob is not.
    app.clock.advance(6 * DAY);
    app.wait_for_mails("Votre mot de passe expire dans 1 jour", 1).await;
    until("alice invited again", async || {
        count(&subjects_to(&app, "alice@example.org"), "Préparez la réinitialisation avant d'en avoir besoin") == 1
    })
    .await;
    // Expired: told once, at every address on record (the work mailbox may be out of reach), how
    // to choose a new password without the old one.
    let anchor = app.anchor_of("alice").await;
    let alice = passback::store::security::Person { directory: DIR_ID, anchor: &anchor };
    passback::store::security::set_alternate_email(&app.db, alice, "alice.home@example.net", 0).await.unwrap();
    app.clock.advance(DAY);
    let expired = app.wait_for_mails("Votre mot de passe a expiré", 2).await;
    assert!(expired[0].text().contains(&format!("{}/reset", app.url)), "{}", expired[0].text());
    let mut to: Vec<String> = expired.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["alice.home@example.net", "alice@example.org"]);
    settle().await;

    let alice = subjects_to(&app, "alice@example.org");
    for (subject, times) in [
        ("Votre mot de passe expire dans 14 jours", 1),
        ("Votre mot de passe expire dans 7 jours", 1),
        ("Votre mot de passe expire dans 3 jours", 0),
        ("Votre mot de passe expire dans 1 jour", 1),
        ("Votre mot de passe a expiré", 1),
        (INVITE, 1),
        ("Préparez la réinitialisation avant d'en avoir besoin", 1),
    ] {
        assert_eq!(count(&alice, subject), times, "{subject}: {alice:#?}");
    }
    let bob = subjects_to(&app, "bob@example.org");
    assert_eq!(count(&bob, INVITE), 1, "bob registered enough: {bob:#?}");
    let audit = app.audit().await;
    let audited = |op: &str| audit.iter().filter(|r| r.operation == op && r.target.as_deref() == Some("alice")).count();
    assert_eq!((audited("reminder.expiry"), audited("reminder.expired"), audited("reminder.campaign")), (3, 1, 2));
}
