//! Changing a known password through the portal: the directory checks the current one, and its
//! history and minimum age apply; the form cannot be used to guess passwords.

use crate::harness::{spawn_app, spawn_app_with, Options};
use passback::sandbox::INITIAL_USER_PASSWORD;
use passback::store::Stmt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_changes_a_known_password_and_only_the_new_one_binds() {
    let app = spawn_app().await;

    let page = app.change_password("alice", INITIAL_USER_PASSWORD, "Changed-Pass-2026").await;

    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(page.contains(r#"<a class="button" href="/signin">Sign in</a>"#), "a way on: {page}");
    assert!(app.bind_works("alice", "Changed-Pass-2026").await);
    assert!(!app.bind_works("alice", INITIAL_USER_PASSWORD).await);
    let row = app.audit().await.into_iter().find(|r| r.operation == "change.writeback").unwrap();
    assert_eq!(row.outcome_code, "PB-0000");
    app.wait_for_mail("Your password was changed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_refuses_a_wrong_current_password_and_its_own_rules() {
    let app = spawn_app().await;

    let wrong = app.change_password("bob", "Not-The-Password1", "Changed-Pass-2026").await;
    assert!(wrong.contains("PB-3005") && wrong.contains("current password is not right"), "{wrong}");
    let short = app.change_password("bob", INITIAL_USER_PASSWORD, "Qz7#kLm").await;
    assert!(short.contains("PB-2001") && short.contains("at least 8 characters"), "{short}");
    let same = app.change_password("bob", INITIAL_USER_PASSWORD, INITIAL_USER_PASSWORD).await;
    assert!(same.contains("PB-2003"), "{same}");
    assert!(app.bind_works("bob", INITIAL_USER_PASSWORD).await, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_soon_after_the_last_one_is_refused_as_too_recent() {
    let app = spawn_app().await;
    let first = app.change_password("carol", INITIAL_USER_PASSWORD, "Changed-Pass-2026").await;
    assert!(first.contains("Your password has been changed"), "{first}");

    // The person's browser is an hour east of UTC.
    let second =
        app.change_password_with("carol", "Changed-Pass-2026", "Another-Pass-2027", &[("tz_offset", "60")]).await;

    // From when, in the person's time zone: the last change (now) and one hour after it.
    assert!(second.contains("PB-2004") && second.contains("allow the next change from"), "{second}");
    let times: Vec<i64> = second
        .split(" UTC+01:00")
        .filter_map(|before| before.rsplit("at ").next())
        .filter_map(|hm| hm.split_once(':'))
        .filter_map(|(h, m)| Some(h.trim().parse::<i64>().ok()? * 60 + m.trim().parse::<i64>().ok()?))
        .collect();
    assert_eq!(times.len(), 2, "{second}");
    let now = (app.clock.now() + 3600).rem_euclid(86_400) / 60;
    assert!((times[0] - now).rem_euclid(1440) <= 1 || (now - times[0]).rem_euclid(1440) <= 1, "{times:?} vs {now}");
    assert_eq!((times[1] - times[0]).rem_euclid(1440), 60, "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_person_is_told_when_they_may_change_again_before_typing_a_new_password() {
    let app = spawn_app().await;
    // Carol's policy keeps a new password a day, and lets it live 90 days.
    app.slapd.set_policy("slow", &[("pwdMinAge", "86400"), ("pwdMaxAge", "7776000")]).await.unwrap();
    let east = [("tz_offset", "60")];
    let done = app.change_password_with("carol", INITIAL_USER_PASSWORD, "Changed-Pass-2026", &east).await;
    assert!(done.contains("Your password has been changed"), "{done}");
    assert!(done.contains("Your new password expires on") && done.contains("in 90 days"), "{done}");
    assert!(done.contains("UTC+01:00"), "in the person's time zone: {done}");
    // Within the minimum age, a wrong current password is only that: nothing about her account.
    let wrong = app.change_password("carol", "Not-Her-Password-9", "Another-Pass-2027").await;
    assert!(wrong.contains("PB-3005"), "{wrong}");
    for secret in ["PB-2004", "You can change", "data-names", "Carol Danvers"] {
        assert!(!wrong.contains(secret), "{secret}: {wrong}");
    }
    // With the right one, a password the portal refuses says so, and why no other can be chosen
    // yet (no form to try again with).
    let banned = app.change_password("carol", "Changed-Pass-2026", "password123").await;
    assert!(banned.contains("PB-2005") && banned.contains("You can change your password again from"), "{banned}");
    assert!(!banned.contains(r#"name="password""#), "{banned}");

    // Anyone may open the change form: it says nothing of anybody's password.
    let anonymous = app.new_client();
    let form = anonymous.get(format!("{}/change", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(form.contains(r#"name="current""#) && !form.contains("You can change your password again"), "{form}");

    // Signed in (the browser an hour east of UTC), Carol is told when, with no form to fill.
    let c = app.new_client();
    let signed = app.sign_in_with(&c, "carol", "Changed-Pass-2026", &east).await.text().await.unwrap();
    assert!(signed.contains("Your password expires on") && signed.contains("in 89 days"), "{signed}");
    let change = c.get(format!("{}/change", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(change.contains("You can change your password again from"), "{change}");
    assert!(change.contains("in 23 hours") && change.contains("UTC+01:00"), "{change}");
    for field in [r#"name="current""#, r#"name="password""#, r#"name="confirm""#] {
        assert!(!change.contains(field), "no form to fill: {change}");
    }
    // Where no minimum age holds, a signed-in person's form is there, with their name in it.
    let alice = app.new_client();
    app.sign_in_on(&alice, "alice", INITIAL_USER_PASSWORD).await;
    let form = alice.get(format!("{}/change", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(form.contains(r#"name="password""#) && form.contains(r#"value="alice""#), "{form}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_form_cannot_be_used_to_guess_a_password() {
    let app = spawn_app().await;
    // The directory locks an account after 5 wrong passwords: the portal tries 4 at most.
    for i in 0..4 {
        let page = app.change_password("alice", &format!("Guess-Number-{i}"), "Changed-Pass-2026").await;
        assert!(page.contains("PB-3005"), "{page}");
    }

    // Even the right password is not tried any more this hour.
    let blocked = app.change_password("alice", INITIAL_USER_PASSWORD, "Changed-Pass-2026").await;

    assert!(blocked.contains("PB-4001"), "{blocked}");
    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await, "nothing was written");
    // A name that matches nobody is answered like a wrong password.
    let nobody = app.change_password("nobody-here", "Whatever-123", "Changed-Pass-2026").await;
    assert!(nobody.contains("PB-3005"), "{nobody}");
    // The directory's failures may never age out (OpenLDAP's pwdFailureCountInterval 0), so the
    // day's allowance is held below the threshold too.
    app.clock.advance(3601);
    let hour = app.change_password("alice", INITIAL_USER_PASSWORD, "Changed-Pass-2026").await;
    assert!(hour.contains("PB-4001"), "{hour}");
    app.clock.advance(86_400);
    let later = app.change_password("alice", INITIAL_USER_PASSWORD, "Changed-Pass-2026").await;
    assert!(later.contains("Your password has been changed"), "after a day it works: {later}");
}

/// The change form is admitted as a first step is: past the allowance of its address without a
/// proof of work the answer is "too many" and nothing is tried, not even the right password of a
/// name that exists (looked up while the request was admitted, and left alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_allowance_the_change_form_tries_nothing() {
    // Without a proof of work (no browser here) a quarter of the allowance applies: 2 a minute.
    let app = spawn_app_with(Options { per_address_per_minute: 8, ..Default::default() }).await;
    for _ in 0..2 {
        let page = app.change_password("alice", "Not-The-Password-1", "Changed-Pass-2026").await;
        assert!(page.contains("PB-3005"), "{page}");
    }

    let refused = app.change_password("alice", INITIAL_USER_PASSWORD, "Changed-Pass-2026").await;

    assert!(refused.contains("Too many attempts"), "{refused}");
    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await, "nothing was written");
    let tried = app.audit().await.into_iter().filter(|r| r.operation == "change.writeback").count();
    assert_eq!(tried, 2, "only the two admitted were tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_only_account_changes_its_password_against_the_portal_hash() {
    let app = spawn_app().await;
    let now = app.clock.now();
    passback::store::cloud::add(&app.db, "casey", Some("casey@example.org"), "Casey", now).await.unwrap();
    let form = app.verified_as("casey", "casey@example.org").await;
    let set = app.submit_password(&form, "Quiet-Lantern-2026", "Quiet-Lantern-2026").await;
    assert!(set.contains("Your password has been changed"), "{set}");

    let wrong = app.change_password("casey", "Cloud-Pass-2025", "Quiet-Lantern-2027").await;
    assert!(wrong.contains("PB-3005"), "{wrong}");
    let ok = app.change_password("casey", "Quiet-Lantern-2026", "Quiet-Lantern-2027").await;
    assert!(ok.contains("Your password has been changed"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_someones_name_at_sign_in_never_locks_them_out_of_the_directory() {
    let app = spawn_app().await;
    // The agent reported the directory's lockout threshold with its policy.
    let policy: String = Stmt::new("SELECT policy_json FROM directory_policies").scalar_one(&app.db).await.unwrap();
    assert!(policy.contains("\"lockout_threshold\":5"), "{policy}");
    let sign_in = |password: String| {
        let app = &app;
        async move {
            let (_, csrf) = app.page("/signin").await;
            let fields = [("csrf", csrf.as_str()), ("login", "bob"), ("password", password.as_str())];
            app.post("/signin", &fields).await.text().await.unwrap()
        }
    };
    for i in 0..6 {
        sign_in(format!("Wrong-Guess-{i}")).await;
    }
    let wrong_binds: i64 =
        Stmt::new("SELECT COUNT(*) FROM audit WHERE operation = 'signin' AND outcome_code = 'PB-3005'")
            .scalar_one(&app.db)
            .await
            .unwrap();
    assert_eq!(wrong_binds, 4, "four wrong passwords were tried against the directory, no more");
    assert!(app.bind_works("bob", INITIAL_USER_PASSWORD).await, "bob is not locked out of the directory");
    // The agent checks passwords on connections it keeps for that: after refusals and after
    // someone else's sign-in, each still answers for the person asked about.
    for (login, password, signed_in) in [
        ("carol", INITIAL_USER_PASSWORD, true),
        ("dave", "Not-Daves-Password-1", false),
        ("carol", "Not-Carols-1", false),
    ] {
        let page = app.sign_in_on(&app.new_client(), login, password).await.text().await.unwrap();
        assert_eq!(page.contains("Security info"), signed_in, "{login}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_agent_alive_the_change_and_sign_in_forms_say_so_before_anything_is_typed() {
    let mut app = spawn_app().await;
    let (up, _) = app.page("/change").await;
    assert!(!up.contains("id=\"down\""), "{up}");

    app.stop_agent();
    app.wait_until_alive(false).await;

    let (change, _) = app.page("/change").await;
    assert!(change.contains("id=\"down\"") && change.contains("cannot be reached right now"), "{change}");
    let (signin, _) = app.page("/signin").await;
    assert!(signin.contains("id=\"down\"") && signin.contains("cannot sign in here"), "{signin}");
    // Sent anyway, the answer is the same, in words for that form, not "reset is unavailable".
    let sent = app.change_password("alice", INITIAL_USER_PASSWORD, "Quiet-Harbour-Lantern-9").await;
    assert!(sent.contains("PB-1001") && sent.contains("cannot be changed here"), "{sent}");
    assert!(!sent.contains("reset is unavailable"), "{sent}");
}

/// Sends the forced-change form `form` with a new password (and the current one, if given).
async fn send(
    app: &crate::harness::TestApp,
    c: &reqwest::Client,
    form: &str,
    current: Option<&str>,
    new: &str,
) -> String {
    use crate::harness::hidden;
    let (csrf, key) = (hidden(form, "csrf").unwrap(), hidden(form, "form_key").unwrap());
    let mut fields = vec![("csrf", csrf.as_str()), ("form_key", key.as_str()), ("password", new), ("confirm", new)];
    fields.extend(current.map(|c| ("current", c)));
    app.post_on(c, "/signin/expired", &fields).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_the_directory_answers_with_must_change_proves_the_current_password_for_a_few_minutes() {
    let mut app = spawn_app().await;

    // Signed in with the password the directory wants changed: it is not asked for again.
    app.require_change("alice").await;
    let c = app.new_client();
    let form = app.sign_in_on(&c, "alice", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    assert!(form.contains("need not type it again") && !form.contains(r#"name="current""#), "{form}");
    assert!(form.contains("data-first-field"), "the new password is the first field: {form}");
    // Written as a reset, it is still checked against the history, as a change is.
    let same = send(&app, &c, &form, None, INITIAL_USER_PASSWORD).await;
    assert!(same.contains("PB-2003"), "{same}");
    let page = send(&app, &c, &same, None, "Fresh-Start-2026").await;
    assert!(page.contains("Security info") && page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("alice", "Fresh-Start-2026").await);
    assert!(!app.bind_works("alice", INITIAL_USER_PASSWORD).await);
    let again = app.sign_in_on(&app.new_client(), "alice", "Fresh-Start-2026").await.text().await.unwrap();
    assert!(again.contains("Security info"), "nothing more to change: {again}");
    let rows = app.audit().await;
    let row = rows.iter().find(|r| r.operation == "change.expired" && r.outcome_code == "PB-0000").unwrap();
    assert!(row.raw.contains("asked as a reset in place of the person's change"), "{}", row.raw);
    app.wait_for_mail("Your password was changed").await;

    // An agent bound as a password administrator (here the rootdn), whose writes ppolicy checks
    // for nothing, refuses the reset unwritten; the form then asks for the current password.
    let (admin_dn, admin_password) = (app.slapd.admin_dn.clone(), app.slapd.admin_password.clone());
    app.restart_agent_with(|cfg| {
        let d = &mut cfg.directories[0];
        (d.bind_dn, d.bind_password, d.bind_password_file) = (admin_dn, Some(admin_password), None);
    })
    .await;
    app.require_change("bob").await;
    let c = app.new_client();
    let form = app.sign_in_on(&c, "bob", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    assert!(!form.contains(r#"name="current""#), "the directory's policy says resets keep history: {form}");
    let asked = send(&app, &c, &form, None, "Fresh-Start-2026").await;
    assert!(asked.contains("needs your current password") && asked.contains(r#"name="current""#), "{asked}");
    assert!(!app.bind_works("bob", "Fresh-Start-2026").await, "nothing was written");
    assert!(!app.bind_works("bob", "x").await, "not the probe's either");
    let rows = app.audit().await;
    let row = rows.iter().find(|r| r.target.as_deref() == Some("bob") && r.outcome_code == "PB-3003").unwrap();
    assert!(row.raw.contains("probe: rc=122"), "{}", row.raw);
    let page = send(&app, &c, &asked, Some(INITIAL_USER_PASSWORD), "Fresh-Start-2026").await;
    assert!(page.contains("Security info"), "as a change, with the current password: {page}");
    assert!(app.bind_works("bob", "Fresh-Start-2026").await);

    // Past a few minutes, the sign-in no longer stands in for the current password.
    app.require_change("carol").await;
    let c = app.new_client();
    let form = app.sign_in_on(&c, "carol", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    assert!(!form.contains(r#"name="current""#), "{form}");
    app.clock.advance(301);
    let late = send(&app, &c, &form, None, "Fresh-Start-2026").await;
    assert!(late.contains("too long ago") && late.contains(r#"name="current""#), "{late}");
    let wrong = send(&app, &c, &late, Some("Not-Carols-Password-1"), "Fresh-Start-2026").await;
    assert!(wrong.contains("PB-3005"), "checked by the directory again: {wrong}");
    assert!(!app.bind_works("carol", "Fresh-Start-2026").await);
    let page = send(&app, &c, &wrong, Some(INITIAL_USER_PASSWORD), "Fresh-Start-2026").await;
    assert!(page.contains("Security info"), "{page}");
    let rows = app.audit().await;
    let row = rows
        .iter()
        .find(|r| {
            r.operation == "change.expired" && r.target.as_deref() == Some("carol") && r.outcome_code == "PB-0000"
        })
        .unwrap();
    assert!(!row.raw.contains("on the proof of their sign-in"), "a change: {}", row.raw);

    // Back at the sign-in page, an unfinished forced change (and its proof) is over.
    app.require_change("dave").await;
    let c = app.new_client();
    let form = app.sign_in_on(&c, "dave", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    assert!(form.contains("action=\"/signout\""), "a way out of the form: {form}");
    c.get(format!("{}/signin", app.url)).send().await.unwrap();
    let left = c.get(format!("{}/signin/expired", app.url)).send().await.unwrap();
    assert_eq!(left.url().path(), "/signin");
}
