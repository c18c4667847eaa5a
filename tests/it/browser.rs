//! The portal in a real browser (headless Chromium), as people meet it: every flow walked by
//! clicking and typing, with JavaScript on and off, axe-core on every page, screenshots saved.

use crate::harness::{spawn_app, spawn_app_with, Options};
use crate::web::{self, Browser};
use passback::sandbox::INITIAL_USER_PASSWORD;

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

    browser.fill("password", "Sh0rt!").await;
    browser.fill("confirm", "Sh0rt!").await;
    browser.press("Change my password").await;

    let text = browser.text().await;
    assert!(text.contains("PB-2001") && text.contains("at least 8 characters"), "{text}");
    browser.check("refused").await;
    assert!(app.bind_works("alice", INITIAL_USER_PASSWORD).await, "nothing was written");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_changed_with_the_current_one_in_a_browser() {
    let app = spawn_app().await;
    let browser = Browser::open(&app, "change").await;
    browser.goto("/change").await;
    browser.check("change").await;
    browser.fill("login", "carol").await;
    browser.fill("current", INITIAL_USER_PASSWORD).await;
    browser.fill("password", NEW_PASSWORD).await;
    browser.fill("confirm", NEW_PASSWORD).await;
    browser.press("Change my password").await;

    let text = browser.text().await;
    assert!(text.contains("Your password has been changed"), "{text}");
    assert!(app.bind_works("carol", NEW_PASSWORD).await);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_wrong_codes_block_the_gate_and_the_block_is_audited() {
    let app = spawn_app().await;
    let browser = Browser::open(&app, "blocked").await;
    browser.goto("/reset").await;
    browser.fill("login", "alice").await;
    browser.press("Next").await;
    let _ = app.code_for("alice@example.org", 0).await;
    for _ in 0..5 {
        browser.fill("code", "00000000").await;
        browser.press("Verify").await;
    }
    let text = browser.text().await;
    assert!(text.contains("We could not verify you") && text.contains("PB-4001"), "{text}");
    browser.check("blocked").await;
    let failures = app.audit().await.into_iter().filter(|r| r.operation == "reset.verify").count();
    assert_eq!(failures, 5, "every wrong code is audited");
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
