//! The forgotten-password flow through the pages, against the real directory.

use crate::harness::{hidden, spawn_app, spawn_app_with, Options};
use passback::sandbox::INITIAL_USER_PASSWORD;
use passback::store::Stmt;
use std::time::Duration;

const NEW_PASSWORD: &str = "Corr3ct-Horse-Battery!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_resets_a_forgotten_password_and_can_then_sign_in_with_it() {
    let app = spawn_app().await;
    let form = app.verified_as("Alice", "alice@example.org").await;
    assert!(form.contains("At least 8 characters"), "the form states the real policy: {form}");

    let page = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;

    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await, "the new password binds");
    assert!(!app.bind_works("alice", INITIAL_USER_PASSWORD).await, "the old password no longer binds");
    let audit = app.audit().await;
    let row = audit.iter().find(|r| r.operation == "reset.writeback").expect("an audit row for the writeback");
    assert_eq!(row.outcome_code, "PB-0000");
    assert_eq!(row.target.as_deref(), Some("alice"));
    // Read just before the write, the account carried no lock: nothing to lift or read back.
    assert!(row.raw.contains("unlock: no lock to lift") && row.raw.contains("not read back"), "{}", row.raw);
    // The person is told by e-mail that the password was reset.
    app.wait_for_mail("Your password was reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_short_password_is_refused_with_the_directorys_real_minimum_and_the_form_stays() {
    let app = spawn_app().await;
    let form = app.verified_as("bob@example.org", "bob@example.org").await;

    let page = app.submit_password(&form, "Qz7#kLm", "Qz7#kLm").await;

    assert!(page.contains("PB-2001"), "{page}");
    assert!(page.contains("at least 8 characters"), "{page}");
    assert!(page.contains("support code"), "{page}");
    assert!(app.bind_works("bob", INITIAL_USER_PASSWORD).await, "nothing was written");
    // The person is still on a form and can try again.
    let page = app.submit_password(&page, NEW_PASSWORD, NEW_PASSWORD).await;
    assert!(page.contains("Your password has been changed"), "{page}");
    // The flow ended with it, after a refusal had kept it: the new-password page sends the
    // person back to the start.
    let again = app.get("/reset/password").await;
    assert!(again.url().path() == "/reset" || again.status().is_redirection(), "{:?}", again.url());
    let audit = app.audit().await;
    let codes: Vec<_> =
        audit.iter().filter(|r| r.operation == "reset.writeback").map(|r| r.outcome_code.as_str()).collect();
    assert_eq!(codes, vec!["PB-0000", "PB-2001"]);
    let refused = audit.iter().find(|r| r.outcome_code == "PB-2001").unwrap();
    assert!(refused.raw.contains("ppolicy=6"), "the raw answer is kept for the administrator: {}", refused.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_history_is_refused_in_plain_words() {
    let app = spawn_app().await;
    let form = app.verified_as("alice", "alice@example.org").await;

    let page = app.submit_password(&form, INITIAL_USER_PASSWORD, INITIAL_USER_PASSWORD).await;

    assert!(page.contains("PB-2003"), "{page}");
    assert!(page.contains("You have used that password recently"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_today_can_be_reset_as_forgotten_but_not_changed_again_before_its_minimum_age() {
    // carol's own policy has a minimum age of one hour: it holds for changes, not for resets.
    let app = spawn_app().await;
    let changed = app.change_password("carol", INITIAL_USER_PASSWORD, NEW_PASSWORD).await;
    assert!(changed.contains("Your password has been changed"), "{changed}");

    let form = app.verified_as("carol", "carol@example.org").await;
    let page = app.submit_password(&form, "An0ther-Fine-Pass", "An0ther-Fine-Pass").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("carol", "An0ther-Fine-Pass").await);

    let young = app.change_password("carol", "An0ther-Fine-Pass", "Third-Fine-Pass9").await;
    assert!(young.contains("PB-2004"), "{young}");
    assert!(young.contains("allow the next change from"), "from when: {young}");
    assert!(app.bind_works("carol", "An0ther-Fine-Pass").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_agent_alive_reset_is_unavailable_before_any_code_is_sent() {
    // People were synced before (the portal remembers them); then the agent goes away.
    let mut app = spawn_app().await;
    app.stop_agent();
    app.wait_until_alive(false).await;

    let page = app.identify("alice").await;

    assert!(page.contains("PB-1001"), "{page}");
    assert!(page.contains("unavailable right now"), "{page}");
    assert_eq!(app.mails_to("alice@example.org"), 0, "no code was sent");
    // An unknown name gets the very same answer.
    let unknown = app.identify("nobody-here").await;
    assert!(unknown.contains("PB-1001"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_answering_after_the_code_gives_a_timeout_within_the_deadline() {
    // A long ping interval keeps the frozen agent "alive" long enough for the request to be sent.
    let app = spawn_app_with(Options { ping_interval_secs: 30, result_deadline_secs: 3, ..Default::default() }).await;
    let form = app.verified_as("alice", "alice@example.org").await;
    app.signal_agent("STOP");

    let started = std::time::Instant::now();
    let page = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;
    let waited = started.elapsed();
    app.signal_agent("CONT");

    assert!(page.contains("PB-1002"), "{page}");
    assert!(page.contains("could not confirm"), "{page}");
    assert!(hidden(&page, "form_key").is_some(), "the person can try again from the form");
    assert!(waited < Duration::from_secs(20), "the portal gave up at its deadline, not later ({waited:?})");
    // The agent wakes up and answers late: the real outcome is still recorded, not lost.
    let mut late = None;
    for _ in 0..100 {
        late = app.audit().await.into_iter().find(|r| r.operation == "reset.late_result");
        if late.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = late.unwrap_or_else(|| panic!("the late result is audited; agent log:\n{}", app.agent_log()));
    assert_eq!(late.outcome_code, "PB-0000");
    let shown = app.audit().await.into_iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert_eq!(late.support_code, shown.support_code, "found by the support code the person was shown");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_account_gets_the_same_answer_as_a_known_one_and_no_mail() {
    let app = spawn_app().await;
    let known = app.identify("alice").await;
    let unknown = app.identify("mallory@example.org").await;
    assert!(unknown.contains("•••@example.org"), "a plausible address is shown: {unknown}");
    assert_eq!(unmasked(&known), unmasked(&unknown));
    app.code_for("alice@example.org", 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.mailbox.all().len(), 1, "only alice got a code");
    // …and no code for the unknown name can pass verification.
    let page = app.verify("12345678").await;
    assert!(page.contains("not right"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_stops_working_after_five_wrong_tries() {
    let app = spawn_app().await;
    let page = app.identify("bob").await;
    assert!(page.contains("Check your e-mail"));
    let code = app.code_for("bob@example.org", 0).await;
    let wrong = if code == "00000000" { "11111111" } else { "00000000" };
    let mut last = String::new();
    for _ in 0..5 {
        last = app.verify(wrong).await;
    }
    assert!(last.contains("PB-4001"), "{last}");
    // The stored code itself is spent: no attempt is left on it, whatever the session says.
    let (id, attempts): (String, i64) =
        Stmt::new("SELECT id, attempts FROM verification_codes").fetch_one(&app.db).await.unwrap();
    assert_eq!(attempts, 5);
    let now = app.clock.now();
    let anchor = app.anchor_of("bob").await;
    let bob = passback::store::security::Person { directory: crate::harness::DIR_ID, anchor: &anchor };
    assert!(passback::store::codes::take_attempt(&app.db, &id, bob, now, 5).await.unwrap().is_none());
    let page = app.verify(&code).await;
    assert!(!page.contains("Choose a new password"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_password_page_cannot_be_reached_without_the_code() {
    let app = spawn_app().await;
    app.identify("alice").await;
    let page = app.get("/reset/password").await.text().await.unwrap();
    assert!(page.contains("Get back into your account"), "sent back to the start: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_its_csrf_token_is_refused() {
    let app = spawn_app().await;
    app.page("/reset").await;
    let resp = app.post("/reset", &[("csrf", "forged"), ("login", "alice")]).await;
    assert_eq!(resp.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(resp.headers().get("x-support-code").is_some());
    assert_eq!(app.mails_to("alice@example.org"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_the_same_form_twice_at_once_writes_once() {
    let app = spawn_app().await;
    let form = app.verified_as("alice", "alice@example.org").await;

    let (first, second) = tokio::join!(
        app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD),
        app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD)
    );

    // Whichever the browser shows, it says what the one write came to.
    let changed = [&first, &second].iter().filter(|p| p.contains("Your password has been changed")).count();
    assert_eq!(changed, 2, "both say what the one write came to:\n{first}\n---\n{second}");
    assert!(!first.contains("PB-2003") && !second.contains("PB-2003"), "no second write reached the directory");
    let writes = app.audit().await.into_iter().filter(|r| r.operation == "reset.writeback").count();
    assert_eq!(writes, 1);
}

/// The browser gives up on the final form while the directory's answer is awaited (the person
/// pressed stop, or sent it again, which drops the first request); sent again, the form is
/// carried on by the same instance under the same message id: the agent, which did it, answers
/// from what it did, and the person sees it under the first sending's support code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_whose_request_was_dropped_while_it_waited_is_carried_on_when_sent_again() {
    let app = spawn_app_with(Options { result_deadline_secs: 20, ..Default::default() }).await;
    let form = app.verified_as("alice", "alice@example.org").await;
    let resets = || app.agent_log().lines().filter(|l| l.contains("request served") && l.contains("op=Reset")).count();
    let served_before = resets();
    let fields = [
        ("csrf", hidden(&form, "csrf").unwrap()),
        ("form_key", hidden(&form, "form_key").unwrap()),
        ("password", NEW_PASSWORD.to_string()),
        ("confirm", NEW_PASSWORD.to_string()),
    ];
    let url = format!("{}/reset/password", app.url);
    app.signal_agent("STOP");
    let dropped = app.client.post(&url).form(&fields).timeout(Duration::from_millis(1500)).send().await;
    assert!(dropped.is_err(), "no answer while the agent holds still");
    app.signal_agent("CONT");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let again = app.client.post(&url).form(&fields).send().await.unwrap();
    let support = again.headers().get("x-support-code").map(|v| v.to_str().unwrap().to_string());
    let page = again.text().await.unwrap();
    assert!(page.contains("Your password has been changed"), "{page}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);
    assert_eq!(resets() - served_before, 1, "written once:\n{}", app.agent_log());
    let rows = app.audit().await;
    let written: Vec<_> = rows.iter().filter(|r| r.operation == "reset.writeback").collect();
    assert!(written.len() == 1 && written[0].outcome_code == "PB-0000", "{written:?}");
    assert_eq!(support.as_deref(), Some(written[0].support_code.as_str()), "under the first sending's code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_form_sent_again_after_a_refusal_is_not_written() {
    let app = spawn_app().await;
    let form = app.verified_as("bob", "bob@example.org").await;
    let refused = app.submit_password(&form, "Qz7#kLm", "Qz7#kLm").await;
    assert!(refused.contains("PB-2001"));

    // The back button: the first form, with its spent key, is sent again with a good password.
    let again = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;

    assert!(again.contains("already sent"), "{again}");
    assert!(app.bind_works("bob", INITIAL_USER_PASSWORD).await, "nothing was written");
    // The form shown now carries a fresh key that works.
    let page = app.submit_password(&again, NEW_PASSWORD, NEW_PASSWORD).await;
    assert!(page.contains("Your password has been changed"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_the_security_headers() {
    let app = spawn_app().await;
    let resp = app.get("/reset").await;
    let h = resp.headers();
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(h.get("cache-control").unwrap(), "no-store");
    assert!(h.get("strict-transport-security").is_some());
    let cookie = h.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        app.get("/demo/mail").await.status() == reqwest::StatusCode::NOT_FOUND,
        "no demo mailbox outside demo mode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_id_changes_at_each_gate() {
    let app = spawn_app().await;
    app.page("/reset").await;
    let anonymous = app.session_cookie();
    assert!(anonymous.is_none(), "no session before a form is posted");

    let page = app.identify("alice").await;
    assert!(page.contains("Check your e-mail"));
    let identified = app.session_cookie();
    let code = app.code_for("alice@example.org", 0).await;
    let page = app.verify(&code).await;
    assert!(page.contains("Choose a new password"));
    let verified = app.session_cookie();

    assert!(identified.is_some() && verified.is_some());
    assert_ne!(identified, verified, "renewed when the code is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_exceed_the_attempt_limit() {
    let app = spawn_app().await;
    app.identify("bob").await;
    let code = app.code_for("bob@example.org", 0).await;
    let wrong = if code == "00000000" { "11111111" } else { "00000000" };
    let (_, csrf) = app.page("/reset/verify").await;

    let form = [("csrf", csrf.as_str()), ("code", wrong)];
    let guesses = (0..12).map(|_| app.post("/reset/verify", &form));
    futures_util::future::join_all(guesses).await;

    let attempts: i64 = Stmt::new("SELECT MAX(attempts) FROM verification_codes").scalar_one(&app.db).await.unwrap();
    assert!(attempts <= 5, "{attempts} attempts were counted");
    // The account's hourly allowance of failures was taken before each check, so no more than
    // five answers were even looked at, and the account is blocked.
    let audit = app.audit().await;
    let checked = audit.iter().filter(|r| r.operation == "reset.verify.email").count();
    assert_eq!(checked, 5, "{audit:#?}");
    let blocks: i64 = Stmt::new("SELECT COUNT(*) FROM self_service_blocks").scalar_one(&app.db).await.unwrap();
    assert_eq!(blocks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_passed_by_one_person_does_not_count_for_the_next_one_to_sign_in() {
    let app = spawn_app().await;
    let sign_in = |login: &'static str| {
        let app = &app;
        async move {
            let (_, csrf) = app.page("/signin").await;
            let fields = [("csrf", csrf.as_str()), ("login", login), ("password", INITIAL_USER_PASSWORD)];
            app.post("/signin", &fields).await.text().await.unwrap()
        }
    };
    // Alice signs in and proves it with the code sent to her address.
    let page = sign_in("alice").await;
    assert!(page.contains("Security info"), "{page}");
    let csrf = hidden(&page, "csrf").unwrap();
    let gate = app.post("/account/authenticator/start", &[("csrf", &csrf)]).await.text().await.unwrap();
    assert!(gate.contains("Check your e-mail"), "a step-up first: {gate}");
    let code = app.code_for("alice@example.org", 0).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let done = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    assert!(done.contains("id=\"secret\""), "on to the enrolment asked for: {done}");

    // Bob signs in in the same browser: Alice's step-up is gone, Bob must pass his own.
    let page = sign_in("bob").await;
    assert!(page.contains("Signed in as bob"), "{page}");
    let csrf = hidden(&page, "csrf").unwrap();
    let resp = app.post("/account/authenticator/start", &[("csrf", &csrf)]).await;
    assert!(resp.url().path().ends_with("/account/verify"), "{}", resp.url());
    let gate = resp.text().await.unwrap();
    assert!(gate.contains("b•••@example.org"), "bob's own address: {gate}");
    let pending: i64 = Stmt::new("SELECT COUNT(*) FROM totp_secrets").scalar_one(&app.db).await.unwrap();
    assert_eq!(pending, 1, "alice's enrolment only: none was started for bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privileged_account_is_never_unlocked_by_self_service() {
    let app = spawn_app().await;
    app.lock_out("alice").await;
    Stmt::new("UPDATE directory_users SET protected = TRUE WHERE username = 'alice'").run(&app.db).await.unwrap();
    let (_, csrf) = app.page("/reset").await;
    app.post("/reset", &[("csrf", csrf.as_str()), ("login", "alice"), ("intent", "unlock")]).await;
    let code = app.code_for("alice@example.org", 0).await;
    let page = app.verify(&code).await;
    assert!(page.contains("Unlock your account"), "{page}");
    let fields = [("csrf", hidden(&page, "csrf").unwrap()), ("form_key", hidden(&page, "form_key").unwrap())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = app.post("/reset/unlock", &fields).await.text().await.unwrap();
    assert!(page.contains("PB-3002"), "{page}");
    assert!(!app.bind_works("alice", INITIAL_USER_PASSWORD).await, "still locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_cannot_get_more_codes_than_the_hourly_limit() {
    let app = spawn_app().await;
    // Twelve people (or one attacker with twelve sessions) ask at the same moment.
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let client = app.new_client();
        let html = client.get(format!("{}/reset", app.url)).send().await.unwrap().text().await.unwrap();
        sessions.push((client, hidden(&html, "csrf").unwrap()));
    }

    let asks = sessions.iter().map(|(client, csrf)| {
        client.post(format!("{}/reset", app.url)).form(&[("csrf", csrf.as_str()), ("login", "carol")]).send()
    });
    for r in futures_util::future::join_all(asks).await {
        assert!(r.unwrap().status().is_success());
    }

    let codes: i64 = Stmt::new("SELECT COUNT(*) FROM verification_codes").scalar_one(&app.db).await.unwrap();
    assert_eq!(codes, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_hint_is_shown_escaped_never_as_markup() {
    let app = spawn_app().await;
    let page = app.get("/reset?login_hint=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E").await.text().await.unwrap();
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(page.contains("&#34;&#62;&#60;script&#62;") || page.contains("&quot;&gt;&lt;script&gt;"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_stops_working_after_ten_minutes() {
    let app = spawn_app().await;
    app.identify("alice").await;
    let code = app.code_for("alice@example.org", 0).await;

    app.clock.advance(601);
    let page = app.verify(&code).await;

    assert!(page.contains("not right, or it has expired"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_person_has_fifteen_minutes_to_choose_the_new_password() {
    let app = spawn_app().await;
    let form = app.verified_as("alice", "alice@example.org").await;

    app.clock.advance(15 * 60 + 1);
    let page = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;

    assert!(page.contains("Get back into your account"), "sent back to the start: {page}");
    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_without_an_email_address_gets_the_same_answer_and_no_code() {
    let app = spawn_app().await;
    let dave = app.identify("dave").await;
    let nobody = app.identify("nobody").await;
    assert_eq!(unmasked(&dave), unmasked(&nobody));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.mailbox.all().is_empty());
    let row = app.audit().await.into_iter().find(|r| r.target.as_deref() == Some("dave")).unwrap();
    assert_eq!(row.raw, "no e-mail address on record", "the administrator learns why");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_stops_answering_is_reported_as_unreachable() {
    let mut app = spawn_app().await;
    let form = app.verified_as("alice", "alice@example.org").await;
    app.slapd.process.stop();

    let page = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;

    // Either the agent already reported it (PB-1001) or the writeback found it down (PB-3004).
    assert!(page.contains("PB-3004") || page.contains("PB-1001"), "{page}");
    assert!(hidden(&page, "form_key").is_some(), "the person can try again later from the form");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_panel_link_fills_in_the_name_and_only_an_allowed_return_to_is_offered_back() {
    let app = spawn_app_with(Options { apps_origin: Some("https://apps.example.org"), ..Default::default() }).await;

    // Sent with foreign return_to values: none is kept, so none is offered at the end.
    for foreign in ["https://evil.example/", "//evil.example/", "https://apps.example.org@evil.example/"] {
        let page = app.get(&format!("/reset?return_to={}", urlencode(foreign))).await.text().await.unwrap();
        assert_eq!(hidden(&page, "return_to"), None, "{foreign}");
    }
    let form = app.verified_as("bob", "bob@example.org").await;
    let done = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;
    assert!(done.contains("Your password has been changed") && !done.contains("Back to where you came from"), "{done}");

    // From the allowed access panel: the name is filled in and the way back is offered.
    let resp = app.get("/reset?login_hint=alice&return_to=https%3A%2F%2Fapps.example.org%2Fhome").await;
    let csp = resp.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("frame-ancestors https://apps.example.org;"), "{csp}");
    assert!(resp.headers().get("x-frame-options").is_none(), "framing by the allowed origin is not blocked");
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"value="alice""#), "{page}");
    // The way back travels in the form (no session before it is posted).
    let (csrf, back) = (hidden(&page, "csrf").unwrap(), hidden(&page, "return_to").unwrap());
    let before = app.mails_to("alice@example.org");
    app.post("/reset", &[("csrf", &csrf), ("login", "alice"), ("return_to", &back)]).await;
    let code = app.code_for("alice@example.org", before).await;
    let form = app.verify(&code).await;
    let done = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;
    assert!(done.contains(r#"href="https://apps.example.org/home""#), "{done}");
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The page with the masked address (`a•••@example.org`) taken out: the one part that differs
/// from person to person, and looks as real for a name that matched nobody.
fn unmasked(page: &str) -> String {
    page.split(' ').map(|w| if w.contains("•••@") { "<masked>" } else { w }).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_steps_are_limited_per_client_address_as_a_trusted_proxy_reports_it() {
    // Without a proof of work (no browser here) a quarter of the allowance applies: 2 a minute.
    let app = spawn_app_with(Options { per_address_per_minute: 8, trusted_proxy: true, ..Default::default() }).await;
    let identify_from = |ip: &'static str| {
        let app = &app;
        async move {
            let (_, csrf) = app.page("/reset").await;
            app.client
                .post(format!("{}/reset", app.url))
                .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
                .form(&[("csrf", csrf.as_str()), ("login", "alice")])
                .send()
                .await
                .unwrap()
        }
    };
    assert!(identify_from("198.51.100.1").await.status().is_success());
    assert!(identify_from("198.51.100.1").await.status().is_success());
    let refused = identify_from("198.51.100.1").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "60");
    assert!(refused.text().await.unwrap().contains("Too many attempts"));
    // Another person behind the same proxy is not held back.
    assert!(identify_from("198.51.100.2").await.status().is_success());
    let audit = app.audit().await;
    let clients: Vec<_> = audit
        .iter()
        .filter(|r| r.operation == "reset.identify")
        .map(|r| r.client.clone().unwrap_or_default())
        .collect();
    assert_eq!(clients.len(), 3, "{audit:#?}");
    assert!(clients.iter().all(|c| c.starts_with("198.51.100.")), "the person's address, not the proxy's: {clients:?}");
    assert!(audit.iter().all(|r| r.operation != "reset.identify" || r.raw.contains("no proof of work: delayed")));
}

/// Gives `uid` answers to three questions (hashes that match nothing typed).
async fn register_questions(app: &crate::harness::TestApp, uid: &str) {
    let anchor = app.anchor_of(uid).await;
    let person = passback::store::security::Person { directory: crate::harness::DIR_ID, anchor: &anchor };
    let answers: Vec<(String, String)> = ["first_pet", "birth_city", "first_school"]
        .iter()
        .map(|q| (q.to_string(), "$argon2id$x".to_string()))
        .collect();
    passback::store::security::set_answers(&app.db, person, &answers, 0).await.unwrap();
}

/// Identifies `uid` and passes the e-mail gate; returns the page after it.
async fn past_the_email_gate(app: &crate::harness::TestApp, uid: &str) -> String {
    let address = format!("{uid}@example.org");
    let before = app.mails_to(&address);
    let page = app.identify(uid).await;
    assert!(page.contains("Check your e-mail") && !page.contains("security questions"), "{page}");
    let code = app.code_for(&address, before).await;
    app.verify(&code).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_questions_count_only_as_a_second_method_and_never_for_a_privileged_account() {
    let app = spawn_app_with(Options { gates_required: 2, questions: true, ..Default::default() }).await;
    register_questions(&app, "bob").await;
    // The e-mail code first, never the questions; then the questions.
    let page = past_the_email_gate(&app, "bob").await;
    assert!(page.contains("answer0"), "the questions are the second gate: {page}");
    // A privileged account is never asked them: with nothing else, it has too few methods.
    Stmt::new("UPDATE directory_users SET protected = TRUE WHERE username = 'bob'").run(&app.db).await.unwrap();
    let page = past_the_email_gate(&app, "bob").await;
    assert!(!page.contains("answer0") && page.contains("not registered enough"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_questions_asked_stay_the_same_for_a_day_and_asking_again_counts_as_a_failure() {
    let app = spawn_app_with(Options { gates_required: 2, questions: true, ..Default::default() }).await;
    register_questions(&app, "bob").await;
    let asked = |page: &str| -> Vec<String> {
        (0..2)
            .map(|i| page.split(&format!("for=\"answer{i}\">")).nth(1).unwrap().split('<').next().unwrap().to_string())
            .collect()
    };
    let first = asked(&past_the_email_gate(&app, "bob").await);
    let failures = || async {
        Stmt::new("SELECT COUNT(*) FROM gate_events WHERE kind = 'failure'").scalar_one::<i64>(&app.db).await.unwrap()
    };
    assert_eq!(failures().await, 0);
    // Starting again to draw other questions: the same ones, and the asking is a failure.
    for round in 1..=2 {
        assert_eq!(asked(&past_the_email_gate(&app, "bob").await), first, "pinned");
        assert_eq!(failures().await, round, "each new asking before an answer counts");
    }
    // A day later, a new draw (not a failure).
    app.clock.advance(86_401);
    // The clock goes on with real time: the draw is made within the request, not at a second
    // known in advance.
    let from = app.clock.now();
    past_the_email_gate(&app, "bob").await;
    let drawn_at: i64 = Stmt::new("SELECT drawn_at FROM question_draws").scalar_one(&app.db).await.unwrap();
    assert!((from..=app.clock.now()).contains(&drawn_at), "drawn anew: at {drawn_at}, the request from {from}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_name_is_offered_what_real_people_here_have_and_the_same_every_time() {
    let app = spawn_app().await;
    // Nobody has an authenticator: a made-up name gets the e-mail gate at once, like alice.
    for login in ["alice", "mallory"] {
        let page = app.identify(login).await;
        assert!(page.contains("Check your e-mail") && !page.contains("choose-method"), "{login}: {page}");
    }
    // Everyone has one (as the portal learns within ten minutes): a made-up name gets the same
    // choice as a real person with both, every time it is tried.
    let people: Vec<String> = Stmt::new("SELECT anchor FROM directory_users").scalar_all(&app.db).await.unwrap();
    for anchor in &people {
        Stmt::new(
            "INSERT INTO totp_secrets (directory, anchor, secret_enc, created_at, confirmed_at) VALUES (?, ?, ?, 0, 0)",
        )
        .bind(crate::harness::DIR_ID)
        .bind(anchor)
        .bind(vec![0_u8])
        .run(&app.db)
        .await
        .unwrap();
    }
    app.clock.advance(601);
    let real = app.identify("alice").await;
    assert!(real.contains("method-authenticator") && real.contains("method-email-0"), "{real}");
    for _ in 0..2 {
        let made_up = app.identify("mallory").await;
        assert!(made_up.contains("method-authenticator") && made_up.contains("method-email-0"), "{made_up}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_asked_to_review_their_security_info_every_so_many_days() {
    let app = spawn_app_with(Options { reconfirm_days: 30, ..Default::default() }).await;
    let sign_in = || async {
        let (_, csrf) = app.page("/signin").await;
        let fields = [("csrf", csrf.as_str()), ("login", "alice"), ("password", INITIAL_USER_PASSWORD)];
        app.post("/signin", &fields).await.text().await.unwrap()
    };
    let page = sign_in().await;
    assert!(page.contains("Are these ways to reach you still right?"), "never reviewed: {page}");
    // Confirming is a change to security info: Alice proves it is her first.
    let gate = app.post("/account/confirm", &[("csrf", &hidden(&page, "csrf").unwrap())]).await.text().await.unwrap();
    let code = app.code_for("alice@example.org", 0).await;
    let page = app.post("/account/verify", &[("csrf", &hidden(&gate, "csrf").unwrap()), ("code", &code)]).await;
    let page = page.text().await.unwrap();
    assert!(page.contains("Your security info is confirmed") && !page.contains("still right?"), "on to it: {page}");
    // A month later, the question comes back.
    app.clock.advance(31 * 86_400);
    let page = sign_in().await;
    assert!(page.contains("Are these ways to reach you still right?"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_hourly_identify_limit_an_account_gets_the_same_pages_and_no_code() {
    let app = spawn_app_with(Options { per_account_per_hour: 2, ..Default::default() }).await;
    for _ in 0..2 {
        assert!(app.identify("alice").await.contains("Check your e-mail"));
    }
    let _ = app.code_for("alice@example.org", 1).await;
    let third = app.identify("alice").await;
    assert!(third.contains("Check your e-mail") && third.contains("a•••@example.org"), "{third}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("alice@example.org"), 2, "no third code");
    let audit = app.audit().await;
    assert!(audit.iter().any(|r| r.operation == "reset.identify" && r.raw.contains("identify limit")), "{audit:#?}");
}

/// Registers an authenticator app for `person`, as if they had confirmed it; returns its seed.
pub(crate) async fn registered_authenticator(
    app: &crate::harness::TestApp,
    person: passback::store::security::Person<'_>,
) -> Vec<u8> {
    let seed = passback::portal::gates::totp::new_seed();
    let sealed = app.portal.data_key().encrypt(&person.context("totp"), &seed);
    passback::store::security::put_pending_totp(&app.db, person, &sealed, 0).await.unwrap();
    Stmt::new("UPDATE totp_secrets SET confirmed_at = 0").run(&app.db).await.unwrap();
    seed.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_methods_required_changing_security_info_takes_two_and_every_address_hears_of_it() {
    use passback::portal::gates::totp;
    let app = spawn_app_with(Options { gates_required: 2, ..Default::default() }).await;
    let anchor = app.anchor_of("bob").await;
    let bob = passback::store::security::Person { directory: crate::harness::DIR_ID, anchor: &anchor };
    let seed = registered_authenticator(&app, bob).await;
    passback::store::security::set_alternate_email(&app.db, bob, "bob.alt@example.org", 0).await.unwrap();

    let (_, csrf) = app.page("/signin").await;
    let fields = [("csrf", csrf.as_str()), ("login", "bob"), ("password", INITIAL_USER_PASSWORD)];
    let page = app.post("/signin", &fields).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let remove = [("csrf", csrf.as_str()), ("method", "email")];
    let chooser = app.post("/account/remove", &remove).await.text().await.unwrap();
    assert!(chooser.contains("method-authenticator") && chooser.contains("method-email-1"), "{chooser}");

    // The main mailbox first: not enough on its own.
    let csrf = hidden(&chooser, "csrf").unwrap();
    let gate = app.post("/account/method", &[("csrf", &csrf), ("method", "email-1")]).await.text().await.unwrap();
    let code = app.code_for("bob@example.org", 0).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let next = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    assert!(!next.contains("You can change your security info now"), "one method is not enough: {next}");
    assert!(next.contains("authenticator") && !next.contains("method-email-0"), "then a different one: {next}");
    let csrf = hidden(&next, "csrf").unwrap();
    let code = totp::code_at(&seed, app.clock.now());
    let removed = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    assert!(removed.contains("The method is removed"), "on to the removal asked for: {removed}");
    assert!(passback::store::security::alternate_email(&app.db, bob).await.unwrap().is_none(), "{removed}");
    let mut told: Vec<String> =
        app.wait_for_mails("Your security info changed", 2).await.into_iter().flat_map(|m| m.to.clone()).collect();
    told.sort();
    assert_eq!(told, ["bob.alt@example.org", "bob@example.org"], "every address, the removed one too");
}

/// Where `/account` leads client `c`: the security info, or the sign-in page.
async fn account_path(app: &crate::harness::TestApp, c: &reqwest::Client) -> String {
    c.get(format!("{}/account", app.url)).send().await.unwrap().url().path().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_or_a_security_info_change_ends_the_persons_other_sessions() {
    let app = spawn_app().await;
    let (laptop, phone) = (app.new_client(), app.new_client());
    for c in [&laptop, &phone] {
        let page = app.sign_in_on(c, "carol", INITIAL_USER_PASSWORD).await.text().await.unwrap();
        assert!(page.contains("Security info"), "{page}");
        assert_eq!(account_path(&app, c).await, "/account");
    }
    // Carol's password changes (here on /change, from a third browser): both sessions end.
    let page = app.change_password("carol", INITIAL_USER_PASSWORD, "Changed-Elsewhere-7").await;
    assert!(page.contains("Your password has been changed"), "{page}");
    for c in [&laptop, &phone] {
        assert_eq!(account_path(&app, c).await, "/signin", "signed out by the change");
    }

    // A security-info change ends the other session, and the one that made it carries on.
    for c in [&laptop, &phone] {
        app.sign_in_on(c, "carol", "Changed-Elsewhere-7").await;
    }
    let overview = laptop.get(format!("{}/account", app.url)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&overview, "csrf").unwrap();
    let gate = app.post_on(&laptop, "/account/authenticator/start", &[("csrf", csrf.as_str())]).await;
    let code = app.code_for("carol@example.org", 0).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let verified = app.post_on(&laptop, "/account/verify", &[("csrf", csrf.as_str()), ("code", code.as_str())]).await;
    let csrf = hidden(&verified, "csrf").unwrap();
    let remove = [("csrf", csrf.as_str()), ("method", "authenticator")];
    laptop.post(format!("{}/account/remove", app.url)).form(&remove).send().await.unwrap();
    assert_eq!(account_path(&app, &laptop).await, "/account", "the session that made the change goes on");
    assert_eq!(account_path(&app, &phone).await, "/signin", "the other one ends");

    // However busy, a session ends eight hours after its sign-in.
    app.clock.advance(8 * 3600);
    assert_eq!(account_path(&app, &laptop).await, "/signin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_at_a_form_writes_no_session_and_its_token_works_only_with_its_own_cookie() {
    let app = spawn_app_with(Options { per_address_per_minute: 40, ..Default::default() }).await;
    let sessions = || async {
        let table = if app.db.is_postgres() { "tower_sessions.session" } else { "tower_sessions" };
        Stmt::new(format!("SELECT COUNT(*) FROM {table}")).scalar_one::<i64>(&app.db).await.unwrap()
    };
    let before = sessions().await;
    for path in ["/reset", "/signin", "/change", "/staff/signin", "/reset?return_to=https://elsewhere.example/"] {
        let resp = app.new_client().get(format!("{}{path}", app.url)).send().await.unwrap();
        let cookies: Vec<_> =
            resp.headers().get_all("set-cookie").iter().map(|c| c.to_str().unwrap().to_string()).collect();
        assert!(cookies.iter().all(|c| !c.starts_with("__Host-passback=")), "{path}: no session cookie: {cookies:?}");
        assert!(cookies.iter().any(|c| c.starts_with("__Host-passback-csrf=")), "{path}: a nonce cookie");
    }
    assert_eq!(sessions().await, before, "page views wrote no session");

    // A token taken from one browser's page does not work from another browser.
    let (page, csrf) = app.page("/reset").await;
    assert!(csrf.starts_with("n."), "{page}");
    let other = app.new_client();
    let forged = other
        .post(format!("{}/reset", app.url))
        .form(&[("csrf", csrf.as_str()), ("login", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    // With its own cookie it does, and only then is there a session.
    let page = app.identify("alice").await;
    assert!(page.contains("Check your e-mail"), "{page}");
    assert_eq!(sessions().await, before + 1);

    // Opening the gate again and again is limited per address like every step.
    let mut refused = false;
    for _ in 0..60 {
        if app.get("/reset/verify").await.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    assert!(refused, "the address limit applies to the gate page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_spread_over_many_accounts_from_one_address_stops_at_the_addresss_budget() {
    let app = spawn_app_with(Options { failures_per_address_per_hour: 3, ..Default::default() }).await;
    let wrong = |login: &'static str, times: usize| {
        let app = &app;
        async move {
            app.identify(login).await;
            let mut statuses = Vec::new();
            for _ in 0..times {
                let (_, csrf) = app.page("/reset/verify").await;
                statuses.push(app.post("/reset/verify", &[("csrf", &csrf), ("code", "00000000")]).await.status());
            }
            statuses
        }
    };
    assert!(wrong("alice", 2).await.iter().all(|s| s.is_success()), "wrong, and told so");
    let bob = wrong("bob", 2).await;
    assert!(bob[0].is_success(), "{bob:?}");
    assert_eq!(bob[1], reqwest::StatusCode::TOO_MANY_REQUESTS, "the address's third failure was its last");
    let blocks: i64 = Stmt::new("SELECT COUNT(*) FROM self_service_blocks").scalar_one(&app.db).await.unwrap();
    assert_eq!(blocks, 0, "no account was blocked by someone else's guessing");
    // The failures are counted under the client's address.
    let client: String = Stmt::new("SELECT DISTINCT client FROM gate_events").scalar_one(&app.db).await.unwrap();
    assert_eq!(client, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_attack_level_the_proof_of_work_costs_more_and_administrators_hear_of_it() {
    let app = spawn_app_with(Options { global_failures_per_hour: 3, ..Default::default() }).await;
    let admin = crate::helpdesk::add_staff(
        &app,
        "watch",
        passback::store::staff::Role::Administrator,
        passback::store::users::Scope::default(),
        false,
    )
    .await;
    let bits = |page: &str| page.split("data-pow=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
    let before = bits(&app.page("/reset").await.0).expect("a proof of work");
    for login in ["alice", "bob", "carol"] {
        app.identify(login).await;
        let (_, csrf) = app.page("/reset/verify").await;
        app.post("/reset/verify", &[("csrf", &csrf), ("code", "00000000")]).await;
    }
    let after = bits(&app.page("/reset").await.0).unwrap();
    assert_eq!(after.parse::<u32>().unwrap(), before.parse::<u32>().unwrap() + 4, "harder while under attack");
    let metrics = app.metrics().await;
    assert!(metrics.contains("passback_under_attack 1") && metrics.contains("passback_gate_failures_last_hour 3"));
    let mails = app.wait_for_mails("passback: many failed verifications", 1).await;
    assert_eq!(mails[0].to, vec!["watch@staff.example.org".to_string()]);
    let c = crate::helpdesk::client(&app);
    crate::helpdesk::staff_signin(&app, &c, &admin, 0).await;
    let health = c.get(format!("{}/admin/health", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(health.contains("Under attack: 3 failed verifications"), "{health}");
    // One more failure sends no second mail within the hour.
    app.identify("dave").await;
    let (_, csrf) = app.page("/reset/verify").await;
    app.post("/reset/verify", &[("csrf", &csrf), ("code", "00000000")]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.mailbox.all().iter().filter(|m| m.subject() == "passback: many failed verifications").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_methods_required_adding_an_authenticator_takes_the_mailbox_and_a_second_method() {
    use passback::portal::gates::{questions, totp};
    let app = spawn_app_with(Options { gates_required: 2, questions: true, ..Default::default() }).await;
    let anchor = app.anchor_of("bob").await;
    let bob = passback::store::security::Person { directory: crate::harness::DIR_ID, anchor: &anchor };
    let mut answers = Vec::new();
    for (q, a) in [("first_pet", "Rex"), ("birth_city", "Leeds"), ("first_school", "Hilltop")] {
        let normalised = secrecy::SecretString::from(questions::normalise(a).unwrap());
        answers.push((q.to_string(), passback::usecase::password::hash(&normalised).await.unwrap()));
    }
    passback::store::security::set_answers(&app.db, bob, &answers, 0).await.unwrap();

    let page = app.sign_in_on(&app.client, "bob", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let gate = app.post("/account/authenticator/start", &[("csrf", &csrf)]).await.text().await.unwrap();
    assert!(gate.contains("Check your e-mail"), "the mailbox first: {gate}");
    let code = app.code_for("bob@example.org", 0).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let asked = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    assert!(asked.contains("answer0") && !asked.contains("You can change"), "then a second method: {asked}");
    let by_text = [("first pet", "rex"), ("born", "leeds"), ("first school", "HILLTOP")];
    let csrf = hidden(&asked, "csrf").unwrap();
    let mut fields = vec![("csrf".to_string(), csrf)];
    for i in 0..2 {
        let label = asked.split(&format!("for=\"answer{i}\">")).nth(1).unwrap().split('<').next().unwrap();
        let (_, a) = by_text.iter().find(|(k, _)| label.contains(k)).unwrap_or_else(|| panic!("asked {label:?}"));
        fields.push((format!("answer{i}"), a.to_string()));
    }
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let enrol = app.post("/account/verify", &fields).await.text().await.unwrap();
    assert!(enrol.contains("id=\"secret\""), "on to the enrolment asked for: {enrol}");
    // The key is shown in groups of four (each its own element, so none breaks across lines).
    let shown = enrol.split("id=\"secret\">").nth(1).unwrap().split("</p>").next().unwrap();
    let seed_text: String = shown.split('<').map(|part| part.split_once('>').map_or(part, |(_, text)| text)).collect();
    assert!(seed_text.trim().len() >= 16, "{shown}");
    let seed = totp::seed_from_text(&seed_text).unwrap();
    let csrf = hidden(&enrol, "csrf").unwrap();
    let code = totp::code_at(&seed, app.clock.now());
    app.post("/account/authenticator", &[("csrf", &csrf), ("code", &code)]).await;
    assert!(passback::store::security::totp(&app.db, bob).await.unwrap().is_some_and(|r| r.confirmed));
    let told = app.wait_for_mails("Your security info changed", 1).await;
    assert_eq!(told[0].to, vec!["bob@example.org".to_string()], "every address on record: bob has one");
    let body = told[0].data.replace("=\r\n", "").replace("=\n", "");
    assert!(body.contains("an authenticator app was added"), "what changed is said: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_malformed_form_gets_the_error_page_with_a_support_code_that_finds_its_audit_row() {
    let app = spawn_app().await;
    let (_, csrf) = app.page("/reset").await;
    let huge = "a".repeat(20 * 1024);
    // Too large; a field missing (behind a valid CSRF token, which is checked first).
    for (body, status) in [(format!("csrf={csrf}&login={huge}"), 413), (format!("csrf={csrf}"), 422)] {
        let resp = app
            .client
            .post(format!("{}/reset", app.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let support = resp.headers().get("x-support-code").expect("a support code").to_str().unwrap().to_string();
        let page = resp.text().await.unwrap();
        assert!(page.contains("The form could not be read") && page.contains(&support), "{page}");
        let row = app.audit().await.into_iter().find(|r| r.support_code == support).expect("an audit row");
        assert_eq!((row.operation.as_str(), row.outcome_code.as_str()), ("error.bad_form", "PB-3099"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_person_resetting_a_forgotten_password_is_told_the_account_is_unlocked_too() {
    let app = spawn_app().await;
    app.lock_out("alice").await;

    let form = app.verified_as("alice", "alice@example.org").await;
    assert!(form.contains("Your account is locked at the moment"), "{form}");
    let page = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;

    assert!(page.contains("changed and your account is unlocked"), "{page}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert!(row.raw.contains("read back: not locked"), "{}", row.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_person_gets_a_code_like_anyone_and_is_told_after_the_gate() {
    let app = spawn_app().await;
    app.slapd.disable("bob").await.unwrap();

    // The first step answers as for anyone; the code arrives; passing the gate tells the owner.
    let before = app.mails_to("bob@example.org");
    let page = app.identify("bob").await;
    assert!(page.contains("Check your e-mail"), "{page}");
    let code = app.code_for("bob@example.org", before).await;
    let page = app.verify(&code).await;
    assert!(page.contains("Your account is disabled") && page.contains("PB-3006"), "{page}");
    assert!(!page.contains("Choose a new password"), "{page}");
    // The flow ended: the new-password page sends the person back to the start.
    let again = app.get("/reset/password").await;
    assert!(again.url().path() == "/reset" || again.status().is_redirection(), "{:?}", again.url());
    assert!(!again.text().await.unwrap().contains("Choose a new password"));

    // On OpenLDAP a locked account's bind answers the same whatever the password, so the change
    // form cannot tell its owner from a stranger: both read what a wrong password reads.
    let unknown = app.change_password("nobody-here", "Not-The-Password-1", NEW_PASSWORD).await;
    assert!(unknown.contains("PB-3005"), "{unknown}");
    for current in [INITIAL_USER_PASSWORD, "Not-The-Password-1"] {
        let page = app.change_password("bob", current, NEW_PASSWORD).await;
        assert!(page.contains("PB-3005") && !page.contains("PB-3006") && !page.contains("PB-3007"), "{page}");
    }
    assert!(!app.bind_works("bob", NEW_PASSWORD).await, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fifth_reset_in_an_hour_blocks_self_service_for_the_account() {
    let app = spawn_app().await;
    for i in 0..5 {
        let form = app.verified_as("alice", "alice@example.org").await;
        let password = format!("Corr3ct-Horse-{i}!");
        let page = app.submit_password(&form, &password, &password).await;
        assert!(page.contains("Your password has been changed"), "reset {i}: {page}");
    }
    let limits = app.audit().await.into_iter().filter(|r| r.operation == "reset.limit").count();
    assert_eq!(limits, 1, "the fifth reset (the configured limit) made the block, once");
    // The next attempt is told at the gate, and no code is sent.
    let before = app.mails_to("alice@example.org");
    let page = app.identify("alice").await;
    assert!(page.contains("Self-service is blocked for now"), "{page}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("alice@example.org"), before, "no code for a blocked account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlocking_an_account_that_is_not_locked_says_so_and_offers_the_ways_that_help() {
    let app = spawn_app().await;
    let (_, csrf) = app.page("/reset").await;
    app.post("/reset", &[("csrf", csrf.as_str()), ("login", "bob"), ("intent", "unlock")]).await;
    let code = app.code_for("bob@example.org", 0).await;

    let page = app.verify(&code).await;

    assert!(page.contains("Your account is not locked"), "{page}");
    assert!(!page.contains("name=\"form_key\""), "nothing to unlock: no form: {page}");
    assert!(page.contains("href=\"/signin\"") && page.contains("href=\"/reset\""), "{page}");
    assert!(app.audit().await.iter().all(|r| r.operation != "unlock.writeback"), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_address_gets_the_portals_own_page_and_a_lost_flow_says_so() {
    let app = spawn_app().await;

    let missing = app.get("/no-such-page").await;
    assert_eq!(missing.status(), 404);
    let body = missing.text().await.unwrap();
    assert!(body.contains("Page not found") && body.contains("href=\"/reset\""), "{body}");

    // A later step without a flow in progress (a bookmark, an expired session).
    for later in ["/reset/password", "/reset/unlock", "/reset/verify"] {
        let resp = app.get(later).await;
        assert_eq!(resp.url().query(), Some("expired=1"), "{later}: {}", resp.url());
        let page = resp.text().await.unwrap();
        assert!(page.contains("Your session has expired") && page.contains("name=\"login\""), "{later}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_code_is_sent_from_the_code_page_after_a_wait_and_replaces_the_first() {
    let app = spawn_app().await;
    let page = app.identify("alice").await;
    let first = app.code_for("alice@example.org", 0).await;
    assert!(page.contains("Send a new code") && page.contains("new code in 60 seconds"), "{page}");
    let csrf = hidden(&page, "csrf").unwrap();
    let resend = [("csrf", csrf.as_str()), ("method", "resend")];

    let early = app.post("/reset/method", &resend).await.text().await.unwrap();
    assert!(early.contains("You can ask for a new code in"), "{early}");
    assert!(!early.contains("role=\"alert\"") && !early.contains("<title>Error:"), "a wait, not an error: {early}");
    // Choosing the same way again is no way round the wait.
    let chosen =
        app.post("/reset/method", &[("csrf", csrf.as_str()), ("method", "email-0")]).await.text().await.unwrap();
    assert!(chosen.contains("You can ask for a new code in"), "{chosen}");
    let sent = app.audit().await.iter().filter(|r| r.operation == "reset.gate.email").count();
    assert_eq!(sent, 1, "nothing sent before the wait");

    app.clock.advance(61);
    let again = app.post("/reset/method", &resend).await.text().await.unwrap();
    assert!(again.contains("new code in 60 seconds"), "the wait starts again: {again}");
    let second = app.code_for("alice@example.org", 1).await;
    if first != second {
        let stale = app.verify(&first).await;
        assert!(stale.contains("not right"), "the first code no longer opens the gate: {stale}");
    }
    let page = app.verify(&second).await;
    assert!(page.contains("Choose a new password"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_finished_long_after_it_was_asked_for_does_not_carry_out_the_act() {
    use passback::portal::gates::totp;
    let app = spawn_app().await;
    let anchor = app.anchor_of("bob").await;
    let bob = passback::store::security::Person { directory: crate::harness::DIR_ID, anchor: &anchor };
    let seed = registered_authenticator(&app, bob).await;

    let page = app.sign_in_on(&app.client, "bob", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let chooser = app.post("/account/remove", &[("csrf", &csrf), ("method", "authenticator")]).await;
    let chooser = chooser.text().await.unwrap();
    let csrf = hidden(&chooser, "csrf").unwrap();
    let gate = app.post("/account/method", &[("csrf", &csrf), ("method", "authenticator")]).await.text().await.unwrap();
    // The page is left open past the time a change to security info may follow a sign-in.
    app.clock.advance(601);
    let code = totp::code_at(&seed, app.clock.now());
    let csrf = hidden(&gate, "csrf").unwrap();
    let page = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    assert!(!page.contains("The method is removed"), "{page}");
    let kept = passback::store::security::totp(&app.db, bob).await.unwrap();
    assert!(kept.is_some_and(|r| r.confirmed), "the authenticator stays");
}

/// The recovery codes on the page that shows them once.
fn shown_recovery_codes(page: &str) -> Vec<String> {
    let list = page.split("id=\"recovery-codes\">").nth(1).unwrap().split("</ol>").next().unwrap();
    list.split("<li>").skip(1).map(|li| li.split("</li>").next().unwrap().trim().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_codes_each_work_once_tell_the_person_and_new_ones_end_the_old() {
    let app = spawn_app().await;
    let make_codes = |password: &'static str, mails_before: usize| {
        let app = &app;
        async move {
            let page = app.sign_in_on(&app.client, "alice", password).await.text().await.unwrap();
            let csrf = hidden(&page, "csrf").unwrap();
            let mut gate = app.post("/account/recovery-codes", &[("csrf", &csrf)]).await.text().await.unwrap();
            if gate.contains("id=\"method-recovery_code\"") {
                // With codes left, they are one of the ways to pass it: the mailbox is chosen.
                let csrf = hidden(&gate, "csrf").unwrap();
                let method = [("csrf", csrf.as_str()), ("method", "email-0")];
                gate = app.post("/account/method", &method).await.text().await.unwrap();
            }
            assert!(gate.contains("Check your e-mail"), "a change to security info: a step-up first: {gate}");
            let code = app.code_for("alice@example.org", mails_before).await;
            let csrf = hidden(&gate, "csrf").unwrap();
            app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap()
        }
    };
    let shown = make_codes(INITIAL_USER_PASSWORD, 0).await;
    let codes = shown_recovery_codes(&shown);
    assert_eq!(codes.len(), 10, "{shown}");
    assert!(codes.iter().all(|c| c.len() == 19), "{codes:?}");
    assert!(
        shown.contains("download=\"recovery-codes.txt\"") && shown.contains("data:text/plain;charset=utf-8;base64,")
    );
    let told = app.wait_for_mails("Your security info changed", 1).await;
    assert!(told[0].data.replace("=\r\n", "").contains("new recovery codes were made"), "{}", told[0].data);

    // A forgotten password, with a recovery code alone (typed loosely: any case, no dashes).
    let chooser = app.identify("alice").await;
    assert!(chooser.contains("Type one of my recovery codes"), "{chooser}");
    let choose = |page: String| {
        let app = &app;
        async move {
            let csrf = hidden(&page, "csrf").unwrap();
            app.post("/reset/method", &[("csrf", &csrf), ("method", "recovery_code")]).await.text().await.unwrap()
        }
    };
    let gate = choose(chooser).await;
    assert!(gate.contains("Type a recovery code"), "{gate}");
    let loose = codes[0].replace('-', "").to_lowercase();
    let form = app.verify(&loose).await;
    assert!(form.contains("name=\"form_key\""), "the new-password form: {form}");
    assert!(form.contains("You used a recovery code: 9 are left"), "{form}");
    let done = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;
    assert!(done.contains("Your password has been changed"), "{done}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);
    let used = app.wait_for_mails("A recovery code was used", 1).await;
    assert!(used[0].data.replace("=\r\n", "").contains("9 codes are left"), "{}", used[0].data);

    // The same code again opens nothing.
    let gate = choose(app.identify("alice").await).await;
    let again = app.verify(&codes[0]).await;
    assert!(again.contains("was used before") && !again.contains("name=\"form_key\""), "{again}");
    drop(gate);

    // New codes end the old ones.
    let shown = make_codes(NEW_PASSWORD, 1).await;
    let fresh = shown_recovery_codes(&shown);
    assert_eq!(fresh.len(), 10);
    choose(app.identify("alice").await).await;
    let old = app.verify(&codes[1]).await;
    assert!(old.contains("was used before") && !old.contains("name=\"form_key\""), "{old}");
    let rows = app.audit().await;
    assert!(
        rows.iter().any(|r| r.operation == "reset.verify.recovery_code" && r.outcome_code == "PB-0000"),
        "{rows:#?}"
    );
    assert!(rows.iter().all(|r| !codes.iter().any(|c| r.raw.contains(c.as_str()))), "no code in any audit row");

    // One code typed in two browsers at once opens one of them.
    let at_a_gate = || async {
        let c = app.new_client();
        let form = c.get(format!("{}/reset", app.url)).send().await.unwrap().text().await.unwrap();
        let csrf = hidden(&form, "csrf").unwrap();
        let chooser = app.post_on(&c, "/reset", &[("csrf", csrf.as_str()), ("login", "alice")]).await;
        let csrf = hidden(&chooser, "csrf").unwrap();
        let gate = app.post_on(&c, "/reset/method", &[("csrf", csrf.as_str()), ("method", "recovery_code")]).await;
        (c, hidden(&gate, "csrf").unwrap())
    };
    let ((one, one_csrf), (other, other_csrf)) = (at_a_gate().await, at_a_gate().await);
    let code = fresh[2].as_str();
    let (one_form, other_form) =
        ([("csrf", one_csrf.as_str()), ("code", code)], [("csrf", other_csrf.as_str()), ("code", code)]);
    let (a, b) =
        tokio::join!(app.post_on(&one, "/reset/verify", &one_form), app.post_on(&other, "/reset/verify", &other_form),);
    let opened = [&a, &b].iter().filter(|p| p.contains("name=\"form_key\"")).count();
    assert_eq!(opened, 1, "{a}\n----\n{b}");

    // No code is kept anywhere as typed: not in the log, nor in the database's files.
    let log = crate::harness::portal_log();
    let files = app.database_files().await;
    for c in codes.iter().chain(&fresh) {
        let plain = c.replace('-', "");
        assert!(!log.contains(c.as_str()) && !log.contains(&plain), "the log holds a code");
        for (file, bytes) in &files {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(c.as_str()) && !text.contains(&plain), "{} holds a code", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_administrator_says_which_methods_count_for_what_and_what_privileged_accounts_register() {
    use passback::config::{GateMethod, GatesConfig};
    fn gates(g: &mut GatesConfig) {
        g.for_unlock = Some(vec![GateMethod::Email]);
        g.privileged_methods = Some(vec![GateMethod::Authenticator]);
        g.for_step_up = Some(vec![GateMethod::RecoveryCode]);
    }
    let app = spawn_app_with(Options { gates: Some(gates), ..Default::default() }).await;
    let anchor = app.anchor_of("bob").await;
    let bob = passback::store::security::Person { directory: crate::harness::DIR_ID, anchor: &anchor };
    registered_authenticator(&app, bob).await;

    // Bob's authenticator counts for a reset; for an unlock only his mailbox does.
    let reset = app.identify("bob").await;
    assert!(reset.contains("method-authenticator") && reset.contains("method-email-0"), "{reset}");
    let (_, csrf) = app.page("/reset").await;
    let unlock = app.post("/reset", &[("csrf", csrf.as_str()), ("login", "bob"), ("intent", "unlock")]).await;
    let unlock = unlock.text().await.unwrap();
    assert!(unlock.contains("Check your e-mail") && !unlock.contains("method-authenticator"), "{unlock}");

    // Bob has no recovery codes, the only method counting for a step-up: his others do, rather
    // than none (a password alone never changes security info).
    let c = app.new_client();
    let page = app.sign_in_on(&c, "bob", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let asked = app.post_on(&c, "/account/recovery-codes", &[("csrf", csrf.as_str())]).await;
    assert!(asked.contains("method-authenticator") && !asked.contains("id=\"recovery-codes\""), "{asked}");

    // A privileged account is offered only what it may register, and is refused the rest.
    Stmt::new("UPDATE directory_users SET protected = TRUE WHERE username = 'carol'").run(&app.db).await.unwrap();
    let page = app.sign_in_on(&app.client, "carol", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    assert!(page.contains("/account/authenticator/start"), "{page}");
    assert!(!page.contains("Make recovery codes") && !page.contains("href=\"/account/email\""), "{page}");
    let csrf = hidden(&page, "csrf").unwrap();
    let gate = app.post("/account/recovery-codes", &[("csrf", &csrf)]).await.text().await.unwrap();
    let code = app.code_for("carol@example.org", 0).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let after = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    assert!(!after.contains("id=\"recovery-codes\""), "{after}");
    let carol_anchor = app.anchor_of("carol").await;
    let carol = passback::store::security::Person { directory: crate::harness::DIR_ID, anchor: &carol_anchor };
    assert_eq!(passback::store::security::recovery_codes_left(&app.db, carol).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_the_step_up_methods_never_lowers_how_many_it_takes() {
    use passback::config::{GateMethod, GatesConfig};
    fn gates(g: &mut GatesConfig) {
        g.for_step_up = Some(vec![GateMethod::Authenticator, GateMethod::RecoveryCode]);
    }
    let app = spawn_app_with(Options { gates_required: 2, gates: Some(gates), ..Default::default() }).await;
    // Bob has only his mailbox: one method is all a step-up can ask, and he makes codes.
    let page = app.sign_in_on(&app.client, "bob", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let gate = app.post("/account/recovery-codes", &[("csrf", &csrf)]).await.text().await.unwrap();
    let code = app.code_for("bob@example.org", 0).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let shown = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    let codes = shown_recovery_codes(&shown);
    assert_eq!(codes.len(), 10, "{shown}");

    // Now he has two methods, only one of which counts for a step-up: it still takes two.
    let c = app.new_client();
    let page = app.sign_in_on(&c, "bob", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let chooser = app.post_on(&c, "/account/recovery-codes", &[("csrf", csrf.as_str())]).await;
    assert!(chooser.contains("method-email-0") && chooser.contains("method-recovery_code"), "{chooser}");
    let csrf = hidden(&chooser, "csrf").unwrap();
    app.post_on(&c, "/account/method", &[("csrf", csrf.as_str()), ("method", "recovery_code")]).await;
    let gate = c.get(format!("{}/account/verify", app.url)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&gate, "csrf").unwrap();
    let next = app.post_on(&c, "/account/verify", &[("csrf", csrf.as_str()), ("code", codes[0].as_str())]).await;
    assert!(!next.contains("id=\"recovery-codes\""), "one method is not enough: {next}");
    assert!(next.contains("Check your e-mail"), "then the mailbox: {next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_name_may_show_either_method_alone_where_email_does_not_count() {
    use passback::config::{GateMethod, GatesConfig};
    fn gates(g: &mut GatesConfig) {
        g.for_reset = Some(vec![GateMethod::Authenticator, GateMethod::RecoveryCode]);
    }
    let app = spawn_app_with(Options { gates: Some(gates), ..Default::default() }).await;
    let (mut authenticator, mut recovery_code) = (0, 0);
    for i in 0..24 {
        let page = app.identify(&format!("nobody-{i}")).await;
        let (a, r) = (page.contains("Enter the code from your app"), page.contains("Type a recovery code"));
        assert!(a != r, "one method, shown at once: {page}");
        authenticator += usize::from(a);
        recovery_code += usize::from(r);
    }
    assert!(authenticator > 0 && recovery_code > 0, "{authenticator} / {recovery_code}");
}
