//! The portal in a real browser (headless Chromium), as people meet it: every flow walked by
//! clicking and typing, with JavaScript on and off, axe-core on every page, screenshots saved.

use crate::harness::{spawn_app, spawn_app_with, Options};
use crate::web::{self, Browser};
use passback::sandbox::INITIAL_USER_PASSWORD;
use passback::store::Stmt;

const NEW_PASSWORD: &str = "Corr3ct-Horse-Battery!";

/// Walks the forgotten-password flow by e-mail code to the end, checking each page.
async fn reset_by_email(app: &crate::harness::TestApp, browser: &Browser, login: &str, address: &str) {
    browser.goto("/reset").await;
    browser.check("identify").await;
    let before = app.mails_to(address);
    browser.fill("login", login).await;
    browser.press("Next").await;
    assert_eq!(browser.path().await, "/reset/verify");
    browser.check("verify").await;
    let code = app.code_for(address, before).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    let text = browser.text().await;
    assert!(text.contains("At least 8 characters"), "the real policy is stated before typing: {text}");
    browser.check("new-password").await;
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_by_email_code_in_a_browser() {
    let app = spawn_app().await;
    let browser = Browser::open(&app, "reset-by-email").await;

    reset_by_email(&app, &browser, "alice", "alice@example.org").await;

    let text = browser.text().await;
    assert!(text.contains("Your password has been changed"), "{text}");
    browser.check("done").await;
    assert!(app.bind_works("alice", NEW_PASSWORD).await, "the directory has the new password");
    assert!(!app.bind_works("alice", INITIAL_USER_PASSWORD).await);
    let identify = app.audit().await.into_iter().find(|r| r.operation == "reset.identify").unwrap();
    assert!(identify.raw.contains("proof of work solved"), "the page's script did the work: {}", identify.raw);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reset_works_the_same_with_javascript_off() {
    let app = spawn_app().await;
    let browser = Browser::open_with(&app, "reset-no-js", web::Options { js: false, ..Default::default() }).await;

    reset_by_email(&app, &browser, "bob@example.org", "bob@example.org").await;

    let text = browser.text().await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("bob", NEW_PASSWORD).await);
    let identify = app.audit().await.into_iter().find(|r| r.operation == "reset.identify").unwrap();
    assert!(identify.raw.contains("no proof of work: delayed"), "{}", identify.raw);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_shows_the_rule_and_the_form_again() {
    let app = spawn_app().await;
    let browser = Browser::open(&app, "reset-refused").await;
    browser.goto("/reset").await;
    browser.fill("login", "alice").await;
    browser.press("Next").await;
    let code = app.code_for("alice@example.org", 0).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;

    // The new-password page starts in its first field.
    assert_eq!(browser.eval("document.activeElement.id").await, "password");
    // As she types, the rules are ticked (her name by the page, banned terms and strength by the
    // portal after a pause), and the ticks are said to screen readers.
    browser.fill("password", "Alice-Password1").await;
    let ticked = async |check: &str| {
        let css = format!("document.querySelector('li[data-check={check}]').className");
        browser.eval(&css).await == "met"
    };
    assert!(!ticked("names").await, "contains her name");
    browser.wait_for("strength-words", "Strength:").await;
    assert!(!ticked("banned").await, "a common password with a name and a digit");
    browser.fill("password", "quiet harbour lantern morning").await;
    browser.fill("confirm", "quiet harbour lantern morning").await;
    browser.wait_for("strength-words", "Strength: strong").await;
    for check in ["length", "names", "banned", "match"] {
        assert!(ticked(check).await, "{check}");
    }
    browser.wait_for("checks-status", "Done:").await;
    browser.check("typing").await;

    browser.fill("password", "Qz7#kLm").await;
    browser.fill("confirm", "Qz7#kLm").await;
    browser.press("Change my password").await;

    let text = browser.text().await;
    assert!(text.contains("PB-2001") && text.contains("at least 8 characters"), "{text}");
    // The title says it, focus is on the message, and the fields are marked.
    assert!(browser.eval("document.title").await.starts_with("Error: "));
    assert_eq!(browser.eval("document.activeElement.getAttribute('role')").await, "alert");
    assert_eq!(browser.prop("password", "aria-invalid").await, "true");
    browser.check("refused").await;
    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await, "nothing was written");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_changed_with_the_current_one_in_a_browser() {
    a_password_is_changed_with_the_current_one_in_a_browser_with(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_changed_with_the_current_one_in_a_browser_without_javascript() {
    a_password_is_changed_with_the_current_one_in_a_browser_with(false).await;
}

async fn a_password_is_changed_with_the_current_one_in_a_browser_with(js: bool) {
    let app = spawn_app().await;
    let label = if js { "change" } else { "change-no-js" };
    let browser = Browser::open_with(&app, label, web::Options { js, ..Default::default() }).await;
    browser.goto("/change").await;
    browser.check("change").await;
    // The script tells the server the person's time zone (minutes east of UTC).
    let tz = browser.value("tz_offset").await;
    assert_eq!(tz.parse::<i32>().is_ok(), js, "{tz:?}");
    // With the script, each password field has a "show password" toggle; without it, none.
    assert_eq!(browser.html().await.contains("aria-controls=\"current\""), js);
    if js {
        browser.run("document.querySelector('button[aria-controls=current]').click()").await;
        assert_eq!(browser.prop("current", "type").await, "text");
        browser.run("document.querySelector('button[aria-controls=current]').id = 'reveal-current'").await;
        assert_eq!(browser.prop("reveal-current", "aria-pressed").await, "true");
        assert_eq!(browser.text_of("reveal-current").await, "Show password", "a toggle keeps its name");
    }
    browser.fill("login", "carol").await;
    browser.fill("current", INITIAL_USER_PASSWORD).await;
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;

    let text = browser.text().await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("carol", NEW_PASSWORD).await);

    // carol's policy has a minimum age of an hour: a second change says from when.
    browser.goto("/change").await;
    browser.fill("login", "carol").await;
    browser.fill("current", NEW_PASSWORD).await;
    browser.fill("password", "Third-Fine-Pass9").await;
    browser.fill("confirm", "Third-Fine-Pass9").await;
    browser.press("Change my password").await;
    let text = browser.text().await;
    assert!(text.contains("PB-2004") && text.contains("allow the next change from"), "{text}");
    browser.check("change-too-young").await;
    // Signed in, the person is told from when before typing anything.
    sign_in(&browser, "carol", NEW_PASSWORD).await;
    browser.goto("/change").await;
    let text = browser.text().await;
    assert!(text.contains("You can change your password again from"), "{text}");
    assert!(!browser.html().await.contains("name=\"current\""), "no form to fill");
    browser.check("change-not-yet").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_wrong_codes_block_the_gate_and_the_block_is_audited() {
    let app = spawn_app().await;
    let browser = Browser::open(&app, "blocked").await;
    browser.goto("/reset").await;
    browser.fill("login", "alice").await;
    browser.press("Next").await;
    let code = app.code_for("alice@example.org", 0).await;
    let wrong = if code == "00000000" { "11111111" } else { "00000000" };
    // Told how many tries are left once two or fewer remain, and what happens then.
    for (i, left) in [None, None, Some("2 tries left"), Some("1 try left"), None].into_iter().enumerate() {
        browser.fill("code", wrong).await;
        browser.press("Verify").await;
        let text = browser.text().await;
        match left {
            Some(left) => {
                assert!(text.contains(&format!("{left}, then self-service is paused for 1 day")), "{i}: {text}")
            }
            None => assert!(!text.contains("tries left") && !text.contains("try left"), "{i}: {text}"),
        }
    }
    let text = browser.text().await;
    assert!(text.contains("blocked") && text.contains("PB-4001"), "the fifth failure blocks: {text}");
    assert!(text.contains("Self-service is paused until"), "and says until when: {text}");
    browser.check("blocked").await;

    // The sixth try, with a fresh start and even the right code, meets the block.
    browser.goto("/reset").await;
    browser.fill("login", "alice").await;
    browser.press("Next").await;
    let text = browser.text().await;
    assert!(text.contains("blocked") && text.contains("PB-4001"), "{text}");
    assert_eq!(app.mails_to("alice@example.org"), 1, "no code is sent to a blocked account");

    let audit = app.audit().await;
    let failures = audit.iter().filter(|r| r.operation == "reset.verify.email" && r.outcome_code == "PB-4001").count();
    assert_eq!(failures, 5, "every wrong code is audited");
    assert!(audit.iter().any(|r| r.operation == "reset.blocked" && r.raw.contains("blocked for 24 h")), "{audit:#?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_panel_entry_fills_in_the_name_and_offers_only_an_allowed_way_back() {
    let app = spawn_app_with(Options { apps_origin: Some("https://apps.example.org"), ..Default::default() }).await;
    let browser = Browser::open(&app, "access-panel").await;

    browser.goto("/reset?login_hint=alice&return_to=https%3A%2F%2Fapps.example.org%2Fhome").await;
    assert_eq!(browser.value("login").await, "alice", "the name is filled in");
    browser.press("Next").await;
    let code = app.code_for("alice@example.org", 0).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;
    let html = browser.html().await;
    assert!(html.contains("href=\"https://apps.example.org/home\""), "the allowed way back is offered: {html}");
    assert!(html.contains("href=\"https://apps.example.org/signin\""), "and the organisation's sign-in: {html}");

    // From a foreign origin, the way back is never offered.
    let other = Browser::open(&app, "access-panel-foreign").await;
    other.goto("/reset?login_hint=bob&return_to=https%3A%2F%2Fevil.example.net%2F").await;
    assert_eq!(other.value("login").await, "bob");
    other.press("Next").await;
    let code = app.code_for("bob@example.org", 0).await;
    other.fill("code", &code).await;
    other.press("Verify").await;
    other.fill("password", NEW_PASSWORD).await;
    other.fill("confirm", NEW_PASSWORD).await;
    other.press("Change my password").await;
    let html = other.html().await;
    assert!(html.contains("Your password has been changed"), "{html}");
    assert!(!html.contains("evil.example.net"), "a foreign return_to is never offered: {html}");
    browser.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_speaks_the_browsers_language_and_the_switch_changes_it() {
    let app = spawn_app().await;
    let browser = Browser::open_with(&app, "languages", web::Options { lang: "fr-FR", ..Default::default() }).await;
    browser.goto("/reset").await;
    assert_eq!(browser.lang().await, "fr");
    assert!(browser.text().await.contains("Nom d'utilisateur"), "{}", browser.text().await);
    browser.check("identify-fr").await;

    browser.press("Deutsch").await;
    assert_eq!(browser.lang().await, "de");
    browser.check("identify-de").await;
    // The choice is remembered on the next page.
    browser.goto("/change").await;
    assert_eq!(browser.lang().await, "de");
    for (name, code) in [("Español", "es"), ("Nederlands", "nl"), ("English", "en")] {
        browser.press(name).await;
        assert_eq!(browser.lang().await, code);
        browser.check(&format!("change-{code}")).await;
    }
    browser.close().await;
}

/// Signs in on the sign-in page; returns the page's text.
async fn sign_in(browser: &Browser, login: &str, password: &str) -> String {
    browser.goto("/signin").await;
    browser.fill("login", login).await;
    browser.fill("password", password).await;
    browser.press("Sign in").await;
    browser.text().await
}

/// When the portal asks to verify before a security-info change (a method is registered), passes
/// it with the code mailed to `address`: it goes on to what was asked for.
async fn step_up_by_email(app: &crate::harness::TestApp, browser: &Browser, address: &str) {
    if browser.path().await != "/account/verify" {
        return;
    }
    let text = browser.text().await;
    assert!(text.contains("Check your e-mail"), "{text}");
    browser.check("step-up").await;
    let code = app.code_for(address, app.mails_to(address) - 1).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    assert_ne!(browser.path().await, "/account/verify", "{}", browser.text().await);
}

/// Registers an authenticator app from the security-info page; returns its seed and the time
/// whose code confirmed it (that code is spent).
async fn register_authenticator(app: &crate::harness::TestApp, browser: &Browser, address: &str) -> (Vec<u8>, i64) {
    browser.press("Set up an authenticator app").await;
    step_up_by_email(app, browser, address).await;
    assert_eq!(browser.path().await, "/account/authenticator", "on to the act asked for");
    browser.check("authenticator").await;
    let seed = totp::seed_from_text(&browser.text_of("secret").await).expect("the key is shown as text");
    // On a phone: a link its own app opens, the key in groups that never break, and (where the
    // browser can copy) a copy button.
    let html = browser.html().await;
    assert!(html.contains("href=\"otpauth://totp/"), "{html}");
    assert!(html.contains("<span class=\"group\">"), "{html}");
    if browser.scripts() {
        let copy_shown = browser.eval("!document.querySelector('button[data-copy=secret]').hidden").await;
        let can_copy = browser.eval("!!navigator.clipboard").await;
        assert_eq!(copy_shown, can_copy, "shown where it works");
    } else {
        assert!(html.contains("data-copy=\"secret\"") && html.contains(" hidden"), "hidden without the script");
    }
    let at = app.clock.now();
    browser.fill("code", &totp::code_at(&seed, at)).await;
    browser.press("Confirm").await;
    let text = browser.text().await;
    assert!(text.contains("The authenticator app is registered"), "{text}");
    (seed, at)
}

/// Starts a reset for `login` and, at the chooser, picks the method with this id.
async fn reset_choosing(browser: &Browser, login: &str, method: &str) {
    browser.goto("/reset").await;
    browser.fill("login", login).await;
    browser.press("Next").await;
    browser.check("choose-method").await;
    browser.choose(&format!("method-{method}")).await;
    browser.press("Next").await;
}

async fn choose_new_password(browser: &Browser) -> String {
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;
    browser.text().await
}

use passback::portal::gates::totp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_an_authenticator_app_and_resets_with_it() {
    a_person_registers_an_authenticator_app_and_resets_with_it_with(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_an_authenticator_app_and_resets_with_it_without_javascript() {
    a_person_registers_an_authenticator_app_and_resets_with_it_with(false).await;
}

async fn a_person_registers_an_authenticator_app_and_resets_with_it_with(js: bool) {
    let app = spawn_app().await;
    let label = if js { "authenticator" } else { "authenticator-no-js" };
    let browser = Browser::open_with(&app, label, web::Options { js, ..Default::default() }).await;
    let text = sign_in(&browser, "alice", INITIAL_USER_PASSWORD).await;
    assert!(text.contains("Security info"), "{text}");
    browser.check("security-info").await;
    let (seed, confirmed_at) = register_authenticator(&app, &browser, "alice@example.org").await;
    // Recovery codes too, shown once (the step-up just passed still holds).
    browser.goto("/account").await;
    browser.press("Make recovery codes").await;
    let codes = browser.text_of("recovery-codes").await;
    assert_eq!(codes.lines().filter(|l| l.len() == 19).count(), 10, "{codes}");
    browser.check("recovery-codes").await;
    browser.press("Back to security info").await;
    assert!(browser.text().await.contains("10 unused recovery codes"), "{}", browser.text().await);
    browser.press("Sign out").await;

    reset_choosing(&browser, "alice", "recovery_code").await;
    assert!(browser.text().await.contains("Type a recovery code"));
    browser.check("recovery-code-gate").await;
    reset_choosing(&browser, "alice", "authenticator").await;
    assert!(browser.text().await.contains("Enter the code from your app"));
    browser.check("authenticator-gate").await;
    // The code used to confirm the app was spent: the same one is refused…
    browser.fill("code", &totp::code_at(&seed, confirmed_at)).await;
    browser.press("Verify").await;
    assert!(browser.text().await.contains("That code is not right"), "{}", browser.text().await);
    // …and the next one works.
    browser.fill("code", &totp::code_at(&seed, confirmed_at + 30)).await;
    browser.press("Verify").await;
    let text = choose_new_password(&browser).await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);
    assert_eq!(app.mails_to("alice@example.org"), 1, "one code, for the step-up; none for the reset");
    let audit = app.audit().await;
    assert!(audit.iter().any(|r| r.operation == "security.authenticator.add"));
    assert!(audit.iter().any(|r| r.operation == "security.step_up.email" && r.outcome_code == "PB-0000"));
    assert!(audit.iter().any(|r| r.operation == "reset.verify.authenticator" && r.raw.contains("already used")));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_security_questions_and_resets_by_answering_them() {
    a_person_registers_security_questions_and_resets_by_answering_them_with(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_security_questions_and_resets_by_answering_them_without_javascript() {
    a_person_registers_security_questions_and_resets_by_answering_them_with(false).await;
}

async fn a_person_registers_security_questions_and_resets_by_answering_them_with(js: bool) {
    // Questions count only as a second method: the reset takes an e-mail code, then them.
    let app = spawn_app_with(Options { gates_required: 2, questions: true, ..Default::default() }).await;
    let label = if js { "questions" } else { "questions-no-js" };
    let browser = Browser::open_with(&app, label, web::Options { js, ..Default::default() }).await;
    sign_in(&browser, "bob", INITIAL_USER_PASSWORD).await;
    browser.press("Set up security questions").await;
    browser.check("questions-register").await;
    let answers = [("first_pet", "Rex"), ("birth_city", "  New   York"), ("first_school", "Hilltop")];
    // Two alike answers are refused, and nothing is kept.
    for (i, (q, _)) in answers.iter().enumerate() {
        browser.select(&format!("q{i}"), q).await;
        browser.fill(&format!("a{i}"), "same answer").await;
    }
    browser.press("Save").await;
    // Bob has an address on record: before a change he proves it is him.
    step_up_by_email(&app, &browser, "bob@example.org").await;
    assert_eq!(browser.path().await, "/account/questions", "on to the form (answers are never kept)");
    for (i, (q, _)) in answers.iter().enumerate() {
        browser.select(&format!("q{i}"), q).await;
        browser.fill(&format!("a{i}"), "same answer").await;
    }
    browser.press("Save").await;
    assert!(browser.text().await.contains("different answer to every question"), "{}", browser.text().await);
    for (i, (q, a)) in answers.iter().enumerate() {
        browser.select(&format!("q{i}"), q).await;
        browser.fill(&format!("a{i}"), a).await;
    }
    browser.press("Save").await;
    assert!(browser.text().await.contains("Your answers are registered"), "{}", browser.text().await);
    browser.press("Sign out").await;

    browser.goto("/reset").await;
    browser.fill("login", "bob").await;
    let before = app.mails_to("bob@example.org");
    browser.press("Next").await;
    // Never the first way in: the e-mail code comes first, with no choice of the questions.
    let text = browser.text().await;
    assert!(text.contains("Check your e-mail") && !text.contains("security questions"), "{text}");
    let code = app.code_for("bob@example.org", before).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    browser.check("questions-gate").await;
    let by_text = [("first pet", "REX"), ("born", "new york"), ("first school", "hilltop ")];
    for i in 0..2 {
        let label = browser.label_of(&format!("answer{i}")).await;
        let (_, answer) = by_text.iter().find(|(k, _)| label.contains(k)).unwrap_or_else(|| panic!("asked {label:?}"));
        browser.fill(&format!("answer{i}"), answer).await;
    }
    browser.press("Verify").await;
    let text = choose_new_password(&browser).await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("bob", NEW_PASSWORD).await);
    let stored: Vec<String> = Stmt::new("SELECT answer_hash FROM security_answers").scalar_all(&app.db).await.unwrap();
    assert_eq!(stored.len(), 3);
    // (A three-letter answer may turn up in base64 by chance: the longer ones may not.)
    assert!(stored.iter().all(|h| h.starts_with("$argon2id$") && !h.contains("new york") && !h.contains("hilltop")));
    // The answers are nowhere in clear: not in the log, the database or its write-ahead log.
    assert!(!crate::harness::portal_log().to_lowercase().contains("hilltop"));
    for (file, bytes) in app.database_files().await {
        assert!(
            !String::from_utf8_lossy(&bytes).to_lowercase().contains("hilltop"),
            "{} holds an answer",
            file.display()
        );
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_methods_required_a_reset_needs_two_different_ones() {
    let app = spawn_app_with(Options { gates_required: 2, ..Default::default() }).await;
    let browser = Browser::open(&app, "two-methods").await;
    let text = sign_in(&browser, "carol", INITIAL_USER_PASSWORD).await;
    assert!(text.contains("register at least 2"), "registration is asked for: {text}");
    let (seed, confirmed_at) = register_authenticator(&app, &browser, "carol@example.org").await;
    assert!(!browser.text().await.contains("register at least 2"));
    browser.press("Sign out").await;

    // The step-up before the registration mailed carol a code already: wait for the next one.
    let before = app.mails_to("carol@example.org");
    reset_choosing(&browser, "carol", "email-0").await;
    let code = app.code_for("carol@example.org", before).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    // The second check is the other method: the only one left, opened at once.
    let text = browser.text().await;
    assert!(text.contains("Enter the code from your app") && text.contains("second of two"), "{text}");
    browser.fill("code", &totp::code_at(&seed, confirmed_at + 30)).await;
    browser.press("Verify").await;
    let text = choose_new_password(&browser).await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("carol", NEW_PASSWORD).await);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_the_directory_answers_with_must_change_leads_to_the_change_form() {
    let app = spawn_app().await;
    app.require_change("carol").await;
    let browser = Browser::open_with(&app, "must-change", web::Options { js: false, ..Default::default() }).await;
    let text = sign_in(&browser, "carol", INITIAL_USER_PASSWORD).await;
    assert_eq!(browser.path().await, "/signin/expired", "{text}");
    assert!(text.contains("must choose a new password"), "{text}");
    assert!(text.contains("need not type it again"), "the sign-in proved it: {text}");
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;
    assert_eq!(browser.path().await, "/account");
    let text = browser.text().await;
    assert!(text.contains("Your password has been changed"), "said first, then security info: {text}");
    assert!(app.bind_works("carol", NEW_PASSWORD).await);
    browser.goto("/account").await;
    assert!(!browser.text().await.contains("Your password has been changed"), "said once");
    // A wrong password is refused in the same words whether or not the name exists.
    let wrong = sign_in(&browser, "carol", "Wrong-Passw0rd!").await;
    let nobody = sign_in(&browser, "nobody-here", "Wrong-Passw0rd!").await;
    assert!(wrong.contains("user name or password is not right"), "{wrong}");
    let without_support_code =
        |t: &str| t.lines().filter(|l| !l.contains("support code")).collect::<Vec<_>>().join("\n");
    assert_eq!(without_support_code(&wrong), without_support_code(&nobody));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_person_unlocks_without_changing_the_password() {
    a_locked_out_person_unlocks_without_changing_the_password_with(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_person_unlocks_without_changing_the_password_without_javascript() {
    a_locked_out_person_unlocks_without_changing_the_password_with(false).await;
}

async fn a_locked_out_person_unlocks_without_changing_the_password_with(js: bool) {
    let app = spawn_app().await;
    let label = if js { "unlock" } else { "unlock-no-js" };
    let browser = Browser::open_with(&app, label, web::Options { js, ..Default::default() }).await;
    app.lock_out("alice").await;
    browser.goto("/reset").await;
    browser.fill("login", "alice").await;
    browser.choose("intent-unlock").await;
    browser.press("Next").await;
    let code = app.code_for("alice@example.org", 0).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    browser.check("unlock").await;
    browser.press("Unlock my account").await;
    let text = browser.text().await;
    assert!(text.contains("Your account is unlocked"), "{text}");
    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await, "the old password works again");
    app.wait_for_mail("Your account was unlocked").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_without_an_address_registers_one_proves_it_and_a_stale_session_cannot_remove_it() {
    let app = spawn_app().await;
    let browser = Browser::open(&app, "alternate-email").await;
    browser.goto("/signin").await;
    browser.check("signin").await;
    // Dave has no e-mail address in the directory, so a reset could not reach him.
    let text = sign_in(&browser, "dave", INITIAL_USER_PASSWORD).await;
    assert!(text.contains("register at least 1"), "{text}");
    browser.press("Add an e-mail address").await;
    browser.check("email-add").await;
    browser.fill("email", "dave.home@example.net").await;
    browser.press("Send a code").await;
    let text = browser.text().await;
    assert!(text.contains("d•••@example.net"), "where the code went, masked: {text}");
    browser.check("email-code").await;
    let code = app.code_for("dave.home@example.net", 0).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    let text = browser.text().await;
    assert!(text.contains("The e-mail address is registered") && !text.contains("register at least"), "{text}");
    browser.check("security-info-complete").await;

    // Eleven minutes later the session is too old to change anything without signing in again.
    app.clock.advance(11 * 60);
    browser.press("Remove this address").await;
    assert!(browser.path().await.starts_with("/signin"), "{}", browser.path().await);
    assert!(browser.text().await.contains("sign in again"));
    let registered: i64 = Stmt::new("SELECT COUNT(*) FROM alternate_emails").scalar_one(&app.db).await.unwrap();
    assert_eq!(registered, 1, "nothing was removed");

    // The registered address now receives reset codes.
    browser.goto("/reset").await;
    browser.fill("login", "dave").await;
    browser.press("Next").await;
    let code = app.code_for("dave.home@example.net", 1).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    let text = choose_new_password(&browser).await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("dave", NEW_PASSWORD).await);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remaining_pages_pass_the_accessibility_checks_too() {
    let app = spawn_app_with(Options { per_address_per_minute: 3, ..Default::default() }).await;
    let browser = Browser::open(&app, "more-pages").await;
    // The change form a "must change" sign-in leads to.
    app.require_change("carol").await;
    sign_in(&browser, "carol", INITIAL_USER_PASSWORD).await;
    assert_eq!(browser.path().await, "/signin/expired");
    browser.check("expired").await;
    // The page of a form whose CSRF token is no longer valid.
    browser.goto("/change").await;
    browser.run("document.querySelector('input[name=csrf]').value = 'stale';").await;
    browser.fill("login", "carol").await;
    browser.fill("current", INITIAL_USER_PASSWORD).await;
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;
    assert!(browser.text().await.contains("This page has expired"), "{}", browser.text().await);
    browser.check("form-expired").await;
    // The page for a client over its rate (one sign-in above, two more first steps here).
    for _ in 0..3 {
        browser.goto("/reset").await;
        browser.fill("login", "nobody").await;
        browser.press("Next").await;
    }
    assert!(browser.text().await.contains("Too many attempts"), "{}", browser.text().await);
    browser.check("too-many").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_shows_in_a_frame_only_on_an_allowed_origin() {
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (allowed_port, other_port) = (allowed.local_addr().unwrap().port(), other.local_addr().unwrap().port());
    let origin: &'static str = Box::leak(format!("https://localhost:{allowed_port}").into_boxed_str());
    let app = spawn_app_with(Options { apps_origin: Some(origin), ..Default::default() }).await;
    web::framing_site(allowed, &app.ca, format!("{}/reset", app.url));
    web::framing_site(other, &app.ca, format!("{}/reset", app.url));
    let browser = Browser::open(&app, "framing").await;

    browser.goto_url(&format!("https://localhost:{allowed_port}/")).await;
    let framed = browser.frame_text().await;
    assert!(framed.contains("Get back into your account"), "the allowed origin shows the portal: {framed:?}");

    browser.goto_url(&format!("https://localhost:{other_port}/")).await;
    let framed = browser.frame_text().await;
    assert!(!framed.contains("Get back into your account"), "another origin is refused: {framed:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_with_an_expired_password_leads_to_the_change_form() {
    let app = spawn_app().await;
    app.slapd.expire_password("bob").await.unwrap();
    assert!(!app.bind_works("bob", INITIAL_USER_PASSWORD).await, "the directory refuses the expired password");
    let browser = Browser::open(&app, "expired").await;
    let text = sign_in(&browser, "bob", INITIAL_USER_PASSWORD).await;
    assert_eq!(browser.path().await, "/signin/expired", "{text}");
    assert!(text.contains("Your password has expired"), "{text}");
    browser.check("expired").await;
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;
    assert_eq!(browser.path().await, "/account", "{}", browser.text().await);
    assert!(app.bind_works("bob", NEW_PASSWORD).await, "the new password is not expired");
    let audit = app.audit().await;
    assert!(audit.iter().any(|r| r.operation == "signin" && r.outcome_code == "PB-3009"), "{audit:#?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpdesk_staff_reset_a_password_in_a_browser_and_the_person_must_change_it() {
    use crate::helpdesk::add_staff;
    use passback::store::{staff::Role, users::Scope};
    let app = spawn_app().await;
    // Helen looks after dave only (a base DN may name one entry).
    let scope = Scope { base_dns: vec!["uid=dave,ou=people,dc=example,dc=org".into()], ..Default::default() };
    let staff = add_staff(&app, "helen", Role::Helpdesk, scope, false).await;
    let browser = Browser::open(&app, "helpdesk").await;
    browser.goto("/helpdesk").await;
    assert_eq!(browser.path().await, "/staff/signin", "staff pages need a sign-in");
    browser.check("staff-signin").await;
    browser.fill("username", "helen").await;
    browser.fill("password", &staff.password).await;
    browser.fill("code", &staff.code(&app, 0)).await;
    browser.press("Sign in").await;
    assert_eq!(browser.path().await, "/helpdesk");
    browser.check("helpdesk-search").await;
    browser.fill("q", "dave").await;
    browser.press("Search").await;
    browser.check("helpdesk-results").await;
    browser.press("dave").await;
    assert!(browser.text().await.contains("uid=dave,ou=people,dc=example,dc=org"));
    browser.check("helpdesk-person").await;
    // Generated password and "must change" are the defaults.
    browser.press("Reset password").await;
    let text = browser.text().await;
    assert!(text.contains("PB-0000"), "{text}");
    browser.check("helpdesk-reset-done").await;
    let temporary = browser.text_of("temporary").await;
    assert_eq!(temporary.len(), 16, "{temporary}");
    assert!(app.bind_works("dave", &temporary).await, "the directory has the temporary password");

    // The person signs in with it and must choose their own first.
    let person = Browser::open(&app, "helpdesk-person-signin").await;
    let text = sign_in(&person, "dave", &temporary).await;
    assert_eq!(person.path().await, "/signin/expired", "{text}");
    person.fill("password", NEW_PASSWORD).await;
    person.fill("confirm", NEW_PASSWORD).await;
    person.press("Change my password").await;
    assert_eq!(person.path().await, "/account");
    assert!(app.bind_works("dave", NEW_PASSWORD).await, "the directory shows the change");
    assert!(!app.bind_works("dave", &temporary).await);
    person.close().await;

    // Bob exists, but outside helen's scope: not found, as if he did not exist.
    browser.goto("/helpdesk?q=bob").await;
    assert!(browser.text().await.contains("Nobody you may act on matches"));
    browser.goto("/helpdesk?q=a").await;
    let text = browser.text().await;
    assert!(text.contains("dave") && !text.contains("alice") && !text.contains("carol"), "{text}");
    browser.goto("/audit").await;
    assert!(browser.text().await.contains("Your staff role does not give access to this page"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_pages_pass_the_accessibility_checks() {
    use crate::helpdesk::add_staff;
    use passback::store::{staff::Role, users::Scope};
    let app = spawn_app().await;
    let admin = add_staff(&app, "ada", Role::Administrator, Scope::default(), false).await;
    // Enough to scroll, on a phone and on a desktop: many rows, a long detail without a space,
    // a colleague with a wide scope.
    let ldap_dn = "uid=someone.with.a.long.name,ou=a-department-with-a-long-name,ou=people,dc=example,dc=org";
    for i in 0..40 {
        let rec = passback::store::audit::AuditRecord {
            at: app.clock.now() - 60 * i,
            actor: "staff:helpdesk-member-with-a-long-name".into(),
            operation: "staff.view_person".into(),
            directory: Some(crate::harness::DIR_ID.into()),
            anchor: Some(format!("anchor-{i}")),
            target: Some(ldap_dn.into()),
            outcome_code: "PB-0000".into(),
            raw: format!("agent=0123456789abcdef0123456789abcdef{i} rc=0 text=\"{}\"", "x".repeat(120)),
            support_code: "ABCDE-FGHIJ".into(),
            client: Some("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".into()),
        };
        passback::store::audit::record(&app.db, &rec).await.unwrap();
    }
    let wide = Scope {
        base_dns: vec![ldap_dn.into(), "ou=another-long-department,dc=example,dc=org".into()],
        ..Default::default()
    };
    add_staff(&app, "helpdesk-member-with-a-long-name", Role::Helpdesk, wide, false).await;
    let browser = Browser::open(&app, "admin").await;
    browser.goto("/staff/signin").await;
    browser.fill("username", "ada").await;
    browser.fill("password", &admin.password).await;
    browser.fill("code", &admin.code(&app, 0)).await;
    browser.press("Sign in").await;
    assert_eq!(browser.path().await, "/admin/health");
    assert!(browser.text().await.contains("is up and running"));
    browser.check("health").await;
    browser.goto("/audit?operation=staff.").await;
    let text = browser.text().await;
    assert!(text.contains("staff.signin") && text.contains("staff.view_person"), "{text}");
    browser.check("audit").await;
    // A history for the reports: a fortnight of resets, some refused, and changes.
    for i in 0..60_i64 {
        let (operation, outcome) = match i % 4 {
            0 => ("change.writeback", "PB-3005"),
            1 => ("reset.writeback", "PB-2003"),
            _ => ("reset.writeback", "PB-0000"),
        };
        crate::helpdesk::seed_act(&app, app.clock.now() - (i % 14) * 86_400, operation, outcome).await;
    }
    browser.goto("/admin/reports").await;
    let text = browser.text().await;
    assert!(text.contains("Resets, changes and unlocks per day") && text.contains("Used before (history)"), "{text}");
    browser.check("reports").await;
    browser.goto("/admin/staff").await;
    browser.check("staff-list").await;
    // No act is offered on one's own row (each would be refused).
    let html = browser.html().await;
    assert!(html.contains("Your own account") && !html.contains("New sign-in for ada<"), "{html}");
    browser.fill("username", "new-hd").await;
    browser.fill("base_dns", "ou=people,dc=example,dc=org").await;
    browser.press("Add").await;
    assert!(browser.text().await.contains("Sign-in details, shown once"));
    browser.check("staff-created").await;
    let given_password = browser.text_of("staff-password").await;
    let given_seed = passback::portal::gates::totp::seed_from_text(&browser.text_of("staff-seed").await).unwrap();

    // The new helpdesk member's first sign-in: their own authenticator and password first.
    let newcomer = Browser::open(&app, "staff-enrol").await;
    newcomer.goto("/staff/signin").await;
    newcomer.fill("username", "new-hd").await;
    newcomer.fill("password", &given_password).await;
    newcomer.fill("code", &passback::portal::gates::totp::code_at(&given_seed, app.clock.now())).await;
    newcomer.press("Sign in").await;
    assert_eq!(newcomer.path().await, "/staff/enrol");
    newcomer.check("staff-enrol").await;
    let own_seed = passback::portal::gates::totp::seed_from_text(&newcomer.text_of("enrol-seed").await).unwrap();
    newcomer.fill("code", &passback::portal::gates::totp::code_at(&own_seed, app.clock.now())).await;
    newcomer.fill("password", NEW_PASSWORD).await;
    newcomer.fill("confirm", NEW_PASSWORD).await;
    newcomer.press("Save and sign in").await;
    assert_eq!(newcomer.path().await, "/helpdesk", "{}", newcomer.text().await);
    newcomer.close().await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_every_step_offers_a_way_on_found_by_its_words_alone() {
    let app = spawn_app().await;
    let phone = Browser::open_with(&app, "phone", web::Options { width: 360, ..Default::default() }).await;
    // Forgotten: the code page offers a new code (after a wait), and says how many tries are left.
    phone.goto("/reset").await;
    phone.fill_labelled("User name or e-mail address", "alice").await;
    phone.press("Next").await;
    let code = app.code_for("alice@example.org", 0).await;
    phone.press("Send a new code").await;
    let text = phone.text().await;
    assert!(text.contains("You can ask for a new code in"), "{text}");
    let wrong = if code == "00000000" { "11111111" } else { "00000000" };
    for _ in 0..3 {
        phone.fill_labelled("Verification code", wrong).await;
        phone.press("Verify").await;
    }
    assert!(phone.text().await.contains("2 tries left"), "{}", phone.text().await);
    phone.check("tries-left").await;
    phone.fill_labelled("Verification code", &code).await;
    phone.press("Verify").await;
    // The new password can be shown while typed.
    phone.fill_labelled("New password", NEW_PASSWORD).await;
    assert_eq!(phone.type_of("New password").await, "password");
    phone.click("Show password").await;
    assert_eq!(phone.type_of("New password").await, "text", "shown");
    phone.fill_labelled("Type it again", NEW_PASSWORD).await;
    phone.press("Change my password").await;
    assert!(phone.text().await.contains("Your password has been changed"), "{}", phone.text().await);
    phone.check("reset-done").await;
    phone.press("Sign in").await;
    assert_eq!(phone.path().await, "/signin", "a way on from the reset");

    // A change, then its way on.
    phone.goto("/change").await;
    phone.fill_labelled("User name or e-mail address", "alice").await;
    phone.fill_labelled("Current password", NEW_PASSWORD).await;
    phone.fill_labelled("New password", "Second-Fine-Pass9").await;
    phone.fill_labelled("Type it again", "Second-Fine-Pass9").await;
    phone.press("Change my password").await;
    assert!(phone.text().await.contains("Your password has been changed"), "{}", phone.text().await);
    phone.press("Sign in").await;
    assert_eq!(phone.path().await, "/signin", "a way on from the change");

    // An unlock, then its way on.
    app.lock_out("bob").await;
    phone.goto("/reset").await;
    phone.fill_labelled("User name or e-mail address", "bob").await;
    phone.click("I know my password, but my account is locked").await;
    phone.press("Next").await;
    let code = app.code_for("bob@example.org", 0).await;
    phone.fill_labelled("Verification code", &code).await;
    phone.press("Verify").await;
    phone.press("Unlock my account").await;
    assert!(phone.text().await.contains("Your account is unlocked"), "{}", phone.text().await);
    phone.check("unlock-done").await;
    phone.press("Sign in").await;
    assert_eq!(phone.path().await, "/signin", "a way on from the unlock");
    phone.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_a_passkey_and_resets_with_it_and_a_copied_one_is_refused() {
    let app = spawn_app().await;
    let browser = Browser::open(&app, "passkey").await;
    let authenticator = browser.add_authenticator().await;
    sign_in(&browser, "alice", INITIAL_USER_PASSWORD).await;
    browser.press("Add a passkey").await;
    step_up_by_email(&app, &browser, "alice@example.org").await;
    assert_eq!(browser.path().await, "/account/passkeys", "on to the act asked for");
    browser.check("passkey-add").await;
    browser.fill("name", "Work laptop").await;
    browser.press("Create passkey").await;
    let text = browser.text().await;
    assert!(text.contains("The passkey is registered") && text.contains("Work laptop"), "{text}");
    assert!(text.contains("not used yet"), "{text}");
    browser.check("security-info-passkey").await;
    assert_eq!(browser.passkeys(&authenticator).await.len(), 1);
    browser.press("Sign out").await;

    // A forgotten password: the passkey alone, chosen among the ways to verify.
    reset_choosing(&browser, "alice", "passkey").await;
    assert!(browser.text().await.contains("Use your passkey"), "{}", browser.text().await);
    browser.check("passkey-gate").await;
    browser.press("Use my passkey").await;
    let text = choose_new_password(&browser).await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);
    assert_eq!(app.mails_to("alice@example.org"), 1, "one code, for the step-up; none for the reset");

    // At the first step, without typing a name: the passkey says whose it is.
    browser.goto("/reset").await;
    browser.check("identify-passkey").await;
    let copy = browser.passkeys(&authenticator).await;
    browser.press("Use a passkey").await;
    assert_eq!(browser.path().await, "/reset/password", "{}", browser.text().await);
    assert!(browser.text().await.contains("Choose a new password"), "{}", browser.text().await);

    // A copy of the passkey made before that use: its counter is behind, and it is refused.
    assert!(copy[0]["signCount"].as_u64().is_some(), "{copy:?}");
    browser.replace_passkeys(&authenticator, copy).await;
    browser.goto("/reset").await;
    browser.press("Use a passkey").await;
    let text = browser.text().await;
    assert!(text.contains("That passkey was not accepted here"), "{text}");
    assert_eq!(browser.path().await, "/reset/passkey");
    let audit = app.audit().await;
    assert!(
        audit.iter().any(|r| r.operation == "reset.identify.passkey" && r.raw.contains("counter went backwards")),
        "{audit:?}"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_member_signs_in_with_a_passkey_in_place_of_the_authenticator_code() {
    use crate::helpdesk::add_staff;
    use passback::store::{staff::Role, users::Scope};
    let app = spawn_app().await;
    let staff = add_staff(&app, "helen", Role::Helpdesk, Scope::default(), false).await;
    let browser = Browser::open(&app, "staff-passkey").await;
    let authenticator = browser.add_authenticator().await;
    let first = staff.code(&app, 0);
    browser.goto("/staff/signin").await;
    browser.fill("username", "helen").await;
    browser.fill("password", &staff.password).await;
    browser.fill("code", &first).await;
    browser.press("Sign in").await;
    browser.press("Your passkeys").await;
    browser.check("staff-passkeys").await;
    // Adding one takes a current authenticator code (one not used before): an open session
    // alone is not enough.
    browser.fill("name", "Desk key").await;
    browser.fill("code", &first).await;
    browser.press("Create passkey").await;
    assert!(browser.text().await.contains("not right, or it was used before"), "{}", browser.text().await);
    browser.fill("name", "Desk key").await;
    browser.fill("code", &staff.code(&app, 1)).await;
    browser.press("Create passkey").await;
    let text = browser.text().await;
    assert!(text.contains("The passkey is registered") && text.contains("Desk key"), "{text}");
    browser.check("staff-passkeys-one").await;
    browser.press("Sign out").await;

    // The password and the passkey: no code typed.
    browser.goto("/staff/signin").await;
    browser.check("staff-signin-passkey").await;
    browser.fill("username", "helen").await;
    browser.fill("password", &staff.password).await;
    browser.press("Sign in with a passkey instead of the code").await;
    assert_eq!(browser.path().await, "/helpdesk", "{}", browser.text().await);
    browser.press("Sign out").await;

    // A wrong password is not rescued by the passkey.
    browser.goto("/staff/signin").await;
    browser.fill("username", "helen").await;
    browser.fill("password", "not-the-password").await;
    browser.press("Sign in with a passkey instead of the code").await;
    assert_eq!(browser.path().await, "/staff/signin");
    assert_eq!(browser.passkeys(&authenticator).await.len(), 1);
    let audit = app.audit().await;
    assert!(audit.iter().any(|r| r.operation == "staff.passkey" && r.raw == "passkey added"), "{audit:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_methods_required_a_passkey_and_a_mailed_code_reset_and_a_removed_passkey_names_nobody() {
    let app = spawn_app_with(Options {
        gates: Some(|g| {
            g.required = 2;
        }),
        ..Default::default()
    })
    .await;
    let browser = Browser::open(&app, "passkey-two").await;
    browser.add_authenticator().await;
    sign_in(&browser, "alice", INITIAL_USER_PASSWORD).await;
    browser.press("Add a passkey").await;
    step_up_by_email(&app, &browser, "alice@example.org").await;
    browser.fill("name", "Phone").await;
    browser.press("Create passkey").await;
    assert!(browser.text().await.contains("The passkey is registered"), "{}", browser.text().await);
    browser.press("Sign out").await;

    // Without JavaScript the passkey is not offered, and the rest works as before.
    let plain = Browser::open_with(&app, "passkey-two-no-js", web::Options { js: false, ..Default::default() }).await;
    plain.goto("/reset").await;
    plain.fill("login", "alice").await;
    plain.press("Next").await;
    assert!(!plain.shown("method-passkey").await, "{}", plain.html().await);
    assert!(!plain.text().await.contains("Use my passkey"));
    plain.choose("method-email-0").await;
    plain.press("Next").await;
    assert!(plain.text().await.contains("Check your e-mail"), "{}", plain.text().await);
    plain.close().await;

    // The passkey, then the mailbox: both, as two are required.
    reset_choosing(&browser, "alice", "passkey").await;
    let before = app.mails_to("alice@example.org");
    browser.press("Use my passkey").await;
    let text = browser.text().await;
    assert!(text.contains("Check your e-mail"), "the second method, by itself: {text}");
    browser.check("passkey-then-email").await;
    let code = app.code_for("alice@example.org", before).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    let text = choose_new_password(&browser).await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);

    // Removed in security info: the passkey names nobody at the first step any more.
    let text = sign_in(&browser, "alice", NEW_PASSWORD).await;
    assert!(text.contains("Phone"), "{text}");
    browser.press("Remove").await;
    // A change to security info: a step-up first, by two methods here (the passkey, then the
    // mailbox); then the removal goes on.
    assert_eq!(browser.path().await, "/account/verify");
    browser.choose("method-passkey").await;
    browser.press("Next").await;
    let before = app.mails_to("alice@example.org");
    browser.press("Use my passkey").await;
    let code = app.code_for("alice@example.org", before).await;
    browser.fill("code", &code).await;
    browser.press("Verify").await;
    let text = browser.text().await;
    assert!(text.contains("The passkey is removed"), "{text}");
    let told = app.wait_for_mails("Your security info changed", 2).await;
    assert!(told.iter().any(|m| m.data.contains("a passkey was removed")), "{told:?}");
    browser.press("Sign out").await;
    browser.goto("/reset").await;
    browser.press("Use a passkey").await;
    let text = browser.text().await;
    assert!(text.contains("That passkey was not accepted here") && !text.contains("alice"), "{text}");
    assert!(app
        .audit()
        .await
        .iter()
        .any(|r| r.operation == "reset.identify.passkey" && r.raw.contains("not registered")));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_arabic_on_a_phone_the_pages_read_right_to_left_and_the_mail_comes_in_arabic() {
    use passback::i18n::{Lang, Tr};
    let app = spawn_app().await;
    let ar = Tr(Lang::Ar);
    let phone = Browser::open_with(&app, "phone-ar", web::Options { width: 360, ..Default::default() }).await;
    // Where a heading's text sits in its card: nearer the right edge than the left?
    let reads_from_right = "(() => { const h = document.querySelector('h1'); const r = document.createRange(); \
        r.selectNodeContents(h); const t = r.getBoundingClientRect(); \
        const c = document.querySelector('.card').getBoundingClientRect(); \
        return (c.right - t.right) < (t.left - c.left); })()";
    phone.goto("/reset").await;
    assert_eq!(phone.eval(reads_from_right).await, "false", "English reads from the left");
    phone.goto("/reset?lang=ar").await;
    assert_eq!(phone.lang().await, "ar");
    assert_eq!(phone.eval("document.documentElement.dir").await, "rtl");
    assert_eq!(
        phone.eval("document.querySelectorAll('nav.langs a[lang]').length").await,
        "12",
        "the switch offers twelve"
    );
    assert_eq!(phone.eval(reads_from_right).await, "true", "Arabic reads from the right");
    assert!(phone.text().await.contains(ar.t("identify.title")), "{}", phone.text().await);
    phone.check("rtl-identify").await;
    // The choice is kept: the next page, and the code's mail, are in Arabic too.
    phone.fill("login", "alice").await;
    phone.press(ar.t("common.next")).await;
    assert_eq!(phone.eval(reads_from_right).await, "true", "{}", phone.text().await);
    phone.check("rtl-verify").await;
    let mail = app.wait_for_mails(ar.t("mail.code_subject"), 1).await.remove(0);
    assert!(mail.html().contains("dir=\"rtl\""), "{}", mail.html());
    assert!(mail.text().contains(ar.t("mail.code_line")), "{}", mail.text());
    phone.close().await;
}
