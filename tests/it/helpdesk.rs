//! Staff: sign-in with an authenticator code, scoped helpdesk acts written back through the
//! relay, the audit log and its export, writeback health. Real OpenLDAP, real agent, real SMTP.

use crate::harness::{hidden, spawn_app, spawn_app_with, Options, TestApp, DIR_ID, METRICS_TOKEN};
use passback::portal::gates::totp;
use passback::store::staff::Role;
use passback::store::users::Scope;
use passback::store::Stmt;
use std::time::Duration;

const PEOPLE_OU: &str = "ou=people,dc=example,dc=org";

/// A staff account made as `passback staff add` makes it.
pub struct StaffLogin {
    pub username: String,
    pub password: String,
    pub seed: Vec<u8>,
}

impl StaffLogin {
    /// The code the authenticator shows `steps` time steps from now (each code works once).
    pub fn code(&self, app: &TestApp, steps: i64) -> String {
        totp::code_at(&self.seed, app.clock.now() + steps * 30)
    }
}

pub async fn add_staff(
    app: &TestApp,
    username: &str,
    role: Role,
    scope: Scope,
    may_reset_protected: bool,
) -> StaffLogin {
    use secrecy::ExposeSecret;
    let spec = passback::usecase::staff::StaffSpec {
        username: username.into(),
        display_name: format!("{username} (staff)"),
        email: Some(format!("{username}@staff.example.org")),
        role,
        scope,
        may_reset_protected,
    };
    let creds = passback::usecase::staff::create(&app.db, &app.portal.data_key(), &spec, app.clock.now())
        .await
        .unwrap()
        .expect("a new user name");
    let given = StaffLogin {
        username: username.into(),
        password: creds.password.expose_secret().to_string(),
        seed: creds.seed.to_vec(),
    };
    enrol(app, &given).await
}

/// The first sign-in with administrator-made credentials: the owner enrols a new authenticator
/// and chooses a password. Returns the owner's own credentials (the new authenticator's code of
/// the previous time step is used up, so the tests' sign-ins at "now" work).
pub async fn enrol(app: &TestApp, given: &StaffLogin) -> StaffLogin {
    let c = client(app);
    let page = staff_signin(app, &c, given, 0).await;
    assert!(page.contains("Choose your own sign-in"), "{page}");
    let seed_text = page.split("id=\"enrol-seed\">").nth(1).unwrap().split('<').next().unwrap();
    let seed = totp::seed_from_text(seed_text).unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    // The random part is made of the digits that read as no letter (2, 6 and 9): hex letters, or
    // digits read as look-alikes (1057 as "lost"), could spell the user name ("hd-lost"), which
    // the names rule refuses.
    let random: String = (0..10).map(|_| ['2', '6', '9'][usize::from(rand::random::<u8>() % 3)]).collect();
    let password = format!("Own-{random}-pass9");
    let code = totp::code_at(&seed, app.clock.now() - 30);
    let fields = [("csrf", csrf.as_str()), ("password", &password), ("confirm", &password), ("code", &code)];
    let (_, home) = post(app, &c, "/staff/enrol", &fields).await;
    assert!(!home.contains("Choose your own sign-in"), "enrolled: {home}");
    StaffLogin { username: given.username.clone(), password, seed }
}

pub fn client(app: &TestApp) -> reqwest::Client {
    app.new_client()
}

pub async fn get(app: &TestApp, c: &reqwest::Client, path: &str) -> (u16, String) {
    let r = c.get(format!("{}{path}", app.url)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub async fn post(app: &TestApp, c: &reqwest::Client, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = c.post(format!("{}{path}", app.url)).form(form).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Signs `who` in on client `c` with the code `steps` steps from now; returns the page reached.
pub async fn staff_signin(app: &TestApp, c: &reqwest::Client, who: &StaffLogin, steps: i64) -> String {
    staff_signin_with(app, c, who, &who.code(app, steps)).await
}

/// Signs `who` in with this authenticator code.
async fn staff_signin_with(app: &TestApp, c: &reqwest::Client, who: &StaffLogin, code: &str) -> String {
    let (_, form) = get(app, c, "/staff/signin").await;
    let csrf = hidden(&form, "csrf").unwrap();
    let fields = [("csrf", csrf.as_str()), ("username", &who.username), ("password", &who.password), ("code", code)];
    post(app, c, "/staff/signin", &fields).await.1
}

/// The person page's forms, and the one-use key they share.
async fn person_page(app: &TestApp, c: &reqwest::Client, uid: &str) -> (u16, String) {
    person_page_in(app, c, DIR_ID, uid).await
}

pub async fn person_page_in(app: &TestApp, c: &reqwest::Client, directory: &str, uid: &str) -> (u16, String) {
    let anchor = app.anchor_of(uid).await;
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("d", directory)
        .append_pair("a", &anchor)
        .finish();
    get(app, c, &format!("/helpdesk/person?{q}")).await
}

async fn act(app: &TestApp, c: &reqwest::Client, uid: &str, page: &str, extra: &[(&str, &str)]) -> (u16, String) {
    act_in(app, c, DIR_ID, uid, page, extra).await
}

pub async fn act_in(
    app: &TestApp,
    c: &reqwest::Client,
    directory: &str,
    uid: &str,
    page: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let anchor = app.anchor_of(uid).await;
    let csrf = hidden(page, "csrf").unwrap_or_default();
    let key = hidden(page, "form_key").unwrap_or_else(|| "00000000000000000000000000000000".into());
    let mut fields =
        vec![("csrf", csrf.as_str()), ("d", directory), ("a", anchor.as_str()), ("form_key", key.as_str())];
    fields.extend_from_slice(extra);
    post(app, c, "/helpdesk/act", &fields).await
}

/// What the person page says the directory has now.
fn live_state(page: &str) -> String {
    let start = page.find("<dd id=\"live-state\">").expect("a live state") + "<dd id=\"live-state\">".len();
    page[start..start + page[start..].find("</dd>").unwrap()].trim().to_string()
}

pub fn temporary_password(page: &str) -> String {
    let marker = "<p class=\"secret\" id=\"temporary\"><code>";
    let start = page.find(marker).expect("the temporary password is shown") + marker.len();
    let end = page[start..].find("</code>").unwrap() + start;
    html_unescape(&page[start..end])
}

fn html_unescape(s: &str) -> String {
    s.replace("&#43;", "+")
        .replace("&#61;", "=")
        .replace("&#35;", "#")
        .replace("&#37;", "%")
        .replace("&#64;", "@")
        .replace("&#x2b;", "+")
        .replace("&#x3d;", "=")
        .replace("&amp;", "&")
        .replace("&#x23;", "#")
        .replace("&#x40;", "@")
}

fn support_code_of(page: &str) -> String {
    let i = page.find("support code ").expect("a support code on the page") + "support code ".len();
    page[i..i + 11].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_sign_in_needs_the_password_and_an_unused_authenticator_code() {
    let app = spawn_app_with(Options { apps_origin: Some("https://apps.example.org"), ..Default::default() }).await;
    // The access panel may frame self-service pages, never staff pages.
    let headers = |path: &'static str| {
        let (c, url) = (client(&app), format!("{}{path}", app.url));
        async move { c.get(url).send().await.unwrap().headers().clone() }
    };
    let reset = headers("/reset").await;
    assert!(reset["content-security-policy"].to_str().unwrap().contains("frame-ancestors https://apps.example.org"));
    // Every answer of the staff router, refusals and redirects included.
    for path in ["/staff/signin", "/audit.csv", "/admin/health.json"] {
        let staff = headers(path).await;
        assert!(staff["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"), "{staff:?}");
        assert_eq!(staff["x-frame-options"], "DENY", "{path}");
    }
    let who = add_staff(&app, "hd-sign", Role::Helpdesk, Scope::everyone(), false).await;
    let c = client(&app);
    let (status, _) = get(&app, &c, "/helpdesk").await;
    assert_eq!(status, 200, "redirected to the sign-in page");
    let wrong_code = StaffLogin { seed: totp::new_seed().to_vec(), ..who.clone_login() };
    let page = staff_signin(&app, &c, &wrong_code, 0).await;
    assert!(page.contains("The user name, password or code is wrong"), "{page}");
    let wrong_password = StaffLogin { password: "not-it".into(), ..who.clone_login() };
    assert!(staff_signin(&app, &c, &wrong_password, 0).await.contains("is wrong"));
    let code = who.code(&app, 0);
    let page = staff_signin_with(&app, &c, &who, &code).await;
    assert!(page.contains("Find a person"), "signed in, at the helpdesk: {page}");
    // The same code again, on another device: refused (a code works once).
    let other = client(&app);
    assert!(staff_signin_with(&app, &other, &who, &code).await.contains("is wrong"));
    let audit = app.audit().await;
    let signins: Vec<_> = audit.iter().filter(|r| r.operation == "staff.signin").collect();
    let full = signins.iter().filter(|r| r.outcome_code == "PB-0000" && r.raw.starts_with("role=")).count();
    assert_eq!(full, 1);
    assert_eq!(signins.iter().filter(|r| r.raw.contains("enrolment (re)started")).count(), 1, "the enrolment's");
    assert_eq!(signins.iter().filter(|r| r.outcome_code == "PB-4001").count(), 3);
    assert!(signins.iter().all(|r| !r.raw.contains(&who.password)));
}

impl StaffLogin {
    fn clone_login(&self) -> StaffLogin {
        StaffLogin { username: self.username.clone(), password: self.password.clone(), seed: self.seed.clone() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpdesk_resets_a_person_in_scope_who_must_then_choose_their_own_password() {
    let app = spawn_app().await;
    let who = add_staff(
        &app,
        "hd-reset",
        Role::Helpdesk,
        Scope { base_dns: vec![PEOPLE_OU.into()], ..Default::default() },
        false,
    )
    .await;
    let c = client(&app);
    staff_signin(&app, &c, &who, 0).await;
    let (_, found) = get(&app, &c, "/helpdesk?q=alic").await;
    assert!(found.contains(">alice</a>"), "{found}");
    let (status, page) = person_page(&app, &c, "alice").await;
    assert_eq!(status, 200);
    assert!(page.contains("uid=alice,ou=people,dc=example,dc=org"), "{page}");
    // Another person's page opened meanwhile (another tab) leaves this page's forms working.
    assert_eq!(person_page(&app, &c, "bob").await.0, 200);
    let (_, done) =
        act(&app, &c, "alice", &page, &[("act", "reset"), ("mode", "generate"), ("must_change", "on")]).await;
    assert!(done.contains("PB-0000"), "{done}");
    // Words for the helpdesk, about the person.
    assert!(
        done.contains("Alice Liddell&#39;s password was reset") || done.contains("Alice Liddell's password was reset"),
        "{done}"
    );
    assert!(!done.contains("Your password has been changed"), "{done}");
    let temporary = temporary_password(&done);
    assert!(app.bind_works("alice", &temporary).await, "the directory has the temporary password");
    app.wait_for_mail("Your password was reset").await;
    // The same form again (double submit): nothing more is written (a new password is made
    // each time, and the one in place is the first's: it says the form was sent already).
    let (_, again) = act(&app, &c, "alice", &page, &[("act", "reset"), ("mode", "generate")]).await;
    assert!(again.contains("already") && !again.contains(&temporary), "{again}");
    assert!(app.bind_works("alice", &temporary).await);

    // Her alternate address is no longer hers: the helpdesk revokes it, and she is told.
    let anchor = app.anchor_of("alice").await;
    let alice = passback::store::security::Person { directory: DIR_ID, anchor: &anchor };
    passback::store::security::set_alternate_email(&app.db, alice, "old@home.example", 0).await.unwrap();
    let (_, page) = person_page(&app, &c, "alice").await;
    let (_, done) = act(&app, &c, "alice", &page, &[("act", "revoke"), ("method", "email")]).await;
    assert!(done.contains("PB-0000"), "{done}");
    assert_eq!(passback::store::security::alternate_email(&app.db, alice).await.unwrap(), None);
    app.wait_for_mail("A way to prove who you are was removed").await;

    // Alice signs in with it and is made to change it first.
    let person = client(&app);
    let (_, form) = get(&app, &person, "/signin").await;
    let csrf = hidden(&form, "csrf").unwrap();
    let (_, page) =
        post(&app, &person, "/signin", &[("csrf", &csrf), ("login", "alice"), ("password", &temporary)]).await;
    assert!(page.contains("name=\"form_key\""), "the must-change form: {page}");
    let key = hidden(&page, "form_key").unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let mine = "Own-choice-77";
    let fields =
        [("csrf", csrf.as_str()), ("form_key", &key), ("current", &temporary), ("password", mine), ("confirm", mine)];
    let (_, page) = post(&app, &person, "/signin/expired", &fields).await;
    assert!(page.contains("Security info"), "changed, and signed in: {page}");
    assert!(app.bind_works("alice", mine).await, "the directory shows her own password");
    assert!(!app.bind_works("alice", &temporary).await);

    let audit = app.audit().await;
    let reset = audit.iter().find(|r| r.operation == "helpdesk.reset" && r.outcome_code == "PB-0000").unwrap();
    assert_eq!(reset.actor, "staff:hd-reset");
    assert!(
        audit.iter().any(|r| r.operation == "staff.view_person"
            && r.actor == "staff:hd-reset"
            && r.target.as_deref() == Some("alice")),
        "who looked at whom is on record"
    );
    assert_eq!(reset.target.as_deref(), Some("alice"));
    assert!(reset.raw.contains("must_change=true"), "{}", reset.raw);
    assert!(audit.iter().all(|r| !r.raw.contains(&temporary)), "the temporary password is in no audit row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_outside_the_scope_are_not_found_and_protected_or_own_accounts_are_refused() {
    let app = spawn_app().await;
    let narrow = Scope { base_dns: vec!["ou=elsewhere,dc=example,dc=org".into()], ..Default::default() };
    let outsider = add_staff(&app, "hd-narrow", Role::Helpdesk, narrow, false).await;
    let c = client(&app);
    staff_signin(&app, &c, &outsider, 0).await;
    let (_, found) = get(&app, &c, "/helpdesk?q=bob").await;
    assert!(found.contains("Nobody you may act on matches"), "{found}");
    let (status, page) = person_page(&app, &c, "bob").await;
    assert_eq!(status, 404);
    let refused = app.audit().await.into_iter().find(|r| r.operation == "helpdesk.not_found").expect("audited");
    assert_eq!(refused.actor, "staff:hd-narrow");
    assert!(page.contains(&refused.support_code), "the page's support code finds the row");
    // A forged act on bob (no page of his was ever shown): not found, nothing written.
    let (_, any_page) = get(&app, &c, "/helpdesk").await;
    let (status, _) = act(&app, &c, "bob", &any_page, &[("act", "reset"), ("mode", "generate")]).await;
    assert_eq!(status, 404);
    assert!(app.bind_works("bob", passback::sandbox::INITIAL_USER_PASSWORD).await);

    // A helpdesk account whose scope was left empty sees nobody (it fails closed).
    let empty = add_staff(&app, "hd-empty", Role::Helpdesk, Scope::default(), false).await;
    let e = client(&app);
    staff_signin(&app, &e, &empty, 0).await;
    assert!(get(&app, &e, "/helpdesk?q=bob").await.1.contains("Nobody you may act on"));

    // A group scope: bob is in no group.
    let grouped =
        Scope { groups: vec!["cn=helpdesk-managed,ou=groups,dc=example,dc=org".into()], ..Default::default() };
    let by_group = add_staff(&app, "hd-group", Role::Helpdesk, grouped, false).await;
    let g = client(&app);
    staff_signin(&app, &g, &by_group, 0).await;
    assert!(get(&app, &g, "/helpdesk?q=bob").await.1.contains("Nobody you may act on"));

    // Everyone in scope, but bob is a protected account (as a sync of AD marks Domain Admins).
    Stmt::new("UPDATE directory_users SET protected = TRUE WHERE username = 'bob'").run(&app.db).await.unwrap();
    let wide = add_staff(&app, "carol", Role::Helpdesk, Scope::everyone(), false).await;
    let w = client(&app);
    staff_signin(&app, &w, &wide, 0).await;
    let (_, page) = person_page(&app, &w, "bob").await;
    assert!(page.contains("This is a protected account"), "{page}");
    // Every staff form needs the session's CSRF token.
    let (_, alice_page) = person_page(&app, &w, "alice").await;
    let forged = alice_page.replace(&hidden(&alice_page, "csrf").unwrap(), "forged");
    let (status, _) = act(&app, &w, "alice", &forged, &[("act", "reset"), ("mode", "generate")]).await;
    assert_eq!(status, 403);
    assert!(app.bind_works("alice", passback::sandbox::INITIAL_USER_PASSWORD).await, "nothing was written");
    let (_, done) = act(&app, &w, "bob", &page, &[("act", "reset"), ("mode", "generate"), ("must_change", "on")]).await;
    assert!(done.contains("PB-3002"), "{done}");
    assert!(app.bind_works("bob", passback::sandbox::INITIAL_USER_PASSWORD).await, "nothing was written");
    // The staff member "carol" and the person carol are one: not through the helpdesk.
    let (_, page) = person_page(&app, &w, "carol").await;
    assert!(page.contains("This is your own account"), "{page}");
    let (_, done) = act(&app, &w, "carol", &page, &[("act", "unlock")]).await;
    assert!(done.contains("PB-3002"), "{done}");
    let refused = app
        .audit()
        .await
        .into_iter()
        .filter(|r| r.operation.starts_with("helpdesk.") && r.outcome_code == "PB-3002")
        .count();
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_export_holds_every_act_and_a_support_code_finds_its_row() {
    let app = spawn_app().await;
    let hd = add_staff(&app, "hd-audit", Role::Helpdesk, Scope::everyone(), false).await;
    let auditor = add_staff(&app, "auditor", Role::Auditor, Scope::default(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &hd, 0).await;
    // A reset the directory refuses (too short for its policy), one it accepts, an unlock, a
    // forced change.
    let (_, page) = person_page(&app, &c, "dave").await;
    let (_, refused) = act(
        &app,
        &c,
        "dave",
        &page,
        &[("act", "reset"), ("mode", "type"), ("password", "Qz7#kLm"), ("confirm", "Qz7#kLm")],
    )
    .await;
    assert!(refused.contains("PB-2001"), "{refused}");
    let refused_code = support_code_of(&refused);
    let (_, page) = person_page(&app, &c, "dave").await;
    let (_, ok) = act(
        &app,
        &c,
        "dave",
        &page,
        &[("act", "reset"), ("mode", "type"), ("password", "Typed-by-hd-42"), ("confirm", "Typed-by-hd-42")],
    )
    .await;
    assert!(ok.contains("PB-0000"), "{ok}");
    assert!(!ok.contains("Typed-by-hd-42"), "a typed password is not shown back");
    // Locked out after the reset: the live state says so (the last sync may not), and an
    // unlock lets the password work again.
    app.lock_out("dave").await;
    assert!(!app.bind_works("dave", "Typed-by-hd-42").await);
    let (_, page) = person_page(&app, &c, "dave").await;
    assert!(live_state(&page).contains("locked"), "{}", live_state(&page));
    assert!(act(&app, &c, "dave", &page, &[("act", "unlock")]).await.1.contains("PB-0000"));
    assert!(app.bind_works("dave", "Typed-by-hd-42").await, "unlocked");
    let (_, page) = person_page(&app, &c, "dave").await;
    assert_eq!(live_state(&page), "enabled");
    let (_, page) = person_page(&app, &c, "dave").await;
    assert!(act(&app, &c, "dave", &page, &[("act", "require_change")]).await.1.contains("PB-0000"));
    let (_, page) = person_page(&app, &c, "dave").await;
    assert_eq!(live_state(&page), "enabled, must choose a new password");
    // The helpdesk may not read the audit log; the auditor may not act.
    assert_eq!(get(&app, &c, "/audit").await.0, 403);
    let a = client(&app);
    staff_signin(&app, &a, &auditor, 0).await;
    assert_eq!(get(&app, &a, "/helpdesk?q=dave").await.0, 403);

    let (_, found) = get(&app, &a, &format!("/audit?support_code={refused_code}")).await;
    assert!(found.contains("helpdesk.reset") && found.contains("PB-2001"), "{found}");
    let r = a.get(format!("{}/audit.csv?operation=helpdesk.", app.url)).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{csv}");
    for (op, code) in [
        ("helpdesk.reset", "PB-2001"),
        ("helpdesk.reset", "PB-0000"),
        ("helpdesk.unlock", "PB-0000"),
        ("helpdesk.require_change", "PB-0000"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("\"{op}\""))
                && l.contains(&format!("\"{code}\""))
                && l.contains("\"staff:hd-audit\"")),
            "{op} {code} in {csv}"
        );
    }
    assert!(!csv.contains("Typed-by-hd-42"));

    // An error page's support code finds its row too (a form without its CSRF token).
    let forged = [
        ("csrf", "forged"),
        ("form_key", "x"),
        ("login", "dave"),
        ("current", "x"),
        ("password", "x"),
        ("confirm", "x"),
    ];
    let (status, page) = post(&app, &client(&app), "/change", &forged).await;
    assert_eq!(status, 403);
    let i = page.find("<strong>").unwrap() + 8;
    let code = &page[i..i + 11];
    let (_, found) = get(&app, &a, &format!("/audit?support_code={code}")).await;
    assert!(found.contains("error.csrf"), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_agent_turns_the_health_page_red_within_two_heartbeats() {
    let app = spawn_app_with(Options { ping_interval_secs: 2, ..Default::default() }).await;
    let admin = add_staff(&app, "admin", Role::Administrator, Scope::default(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &admin, 0).await;
    let (_, page) = get(&app, &c, "/admin/health").await;
    assert!(page.contains("data-ok=\"true\"") && page.contains("is up and running"), "{page}");
    let json = |token: Option<&'static str>| {
        let (client, url) = (
            reqwest::Client::builder()
                .use_preconfigured_tls((*passback::tls::client_config(Some(&app.ca.ca_file)).unwrap()).clone())
                .build()
                .unwrap(),
            format!("{}/admin/health.json", app.url),
        );
        async move {
            let mut req = client.get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(json(None).await.0, 401, "the JSON needs a session or the token");
    let (status, body) = json(Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["agents"][0]["version"].is_string() && v["agents"][0]["next_rollover"].is_i64(), "{v}");
    // The one instance, alive; the page lists it too.
    assert!(v["instances"][0]["instance"] == v["instance"] && v["instances"][0]["alive"] == true, "{v}");
    assert!(page.contains("id=\"instances\""), "{page}");

    // The agent freezes (its connection stays open, its pongs stop): the page is watched for two
    // ping intervals, and a little more for the page requests themselves.
    app.signal_agent("STOP");
    let mut red = None;
    for _ in 0..25 {
        let (_, page) = get(&app, &c, "/admin/health").await;
        if page.contains("data-ok=\"false\"") {
            red = Some(page);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = red.expect("the page turns red within two heartbeat intervals");
    assert!(page.contains("no live agent") && page.contains("down"), "{page}");
    let (status, body) = json(Some(METRICS_TOKEN)).await;
    assert_eq!(status, 503, "{body}");
    let r = app.client.get(format!("{}/metrics", app.url)).bearer_auth(METRICS_TOKEN).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("passback_live_agents 0"));
    app.signal_agent("CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_account_is_named_on_the_health_page_and_a_corrected_file_brings_it_back() {
    let mut app = spawn_app_with(Options { ping_interval_secs: 2, ..Default::default() }).await;
    let admin = add_staff(&app, "admin-svc", Role::Administrator, Scope::default(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &admin, 0).await;
    // The service account's password file holds a wrong password.
    app.relaunch_agent_with(|cfg| {
        cfg.directories[0].bind_password = Some(secrecy::SecretString::from("not-the-service-password".to_string()));
    })
    .await;
    let file = app.dir.join(format!("ldap-bind-{}.pw", app.agent_cfg.directories[0].id));
    crate::harness::until("the health page names the refusal", async || {
        let (_, page) = get(&app, &c, "/admin/health").await;
        page.contains("service account bind refused: wrong name or password") && page.contains("data-ok=\"false\"")
    })
    .await;

    // Corrected, without restarting the agent: writeback comes back, and the account was never
    // locked by the agent meanwhile.
    let right = secrecy::ExposeSecret::expose_secret(&app.slapd.service_password).to_string();
    passback::files::write_private(&file, right.as_bytes()).unwrap();
    crate::harness::until("the health page turns green", async || {
        get(&app, &c, "/admin/health").await.1.contains("is up and running")
    })
    .await;
    let service = secrecy::SecretString::from(right);
    assert!(passback::sandbox::bind_works(&app.slapd.url, &app.slapd.ca_file, &app.slapd.service_dn, &service).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_everywhere_on_request_and_administrators_hear_of_a_staff_reset() {
    let app = spawn_app().await;
    let admin = add_staff(&app, "admin1", Role::Administrator, Scope::default(), false).await;
    let admin2 = add_staff(&app, "admin2", Role::Administrator, Scope::default(), false).await;
    let hd = add_staff(&app, "hd-lost", Role::Helpdesk, Scope::everyone(), false).await;
    let (phone, laptop) = (client(&app), client(&app));
    staff_signin(&app, &phone, &hd, 0).await;
    staff_signin(&app, &laptop, &hd, 1).await;
    assert!(get(&app, &phone, "/helpdesk").await.1.contains("Find a person"));
    let (_, page) = get(&app, &laptop, "/helpdesk").await;
    let csrf = hidden(&page, "csrf").unwrap();
    post(&app, &laptop, "/staff/signout-everywhere", &[("csrf", &csrf)]).await;
    assert!(get(&app, &phone, "/helpdesk").await.1.contains("Staff sign-in"), "the other session ended too");

    // The helpdesk member lost their phone: an administrator gives them a new sign-in.
    let c = client(&app);
    staff_signin(&app, &c, &admin, 0).await;
    let id: String = Stmt::new("SELECT id FROM staff WHERE username = 'hd-lost'").scalar_one(&app.db).await.unwrap();
    let (_, list) = get(&app, &c, "/admin/staff").await;
    let csrf = hidden(&list, "csrf").unwrap();
    let (_, shown) = post(&app, &c, "/admin/staff/reset", &[("csrf", &csrf), ("id", &id)]).await;
    assert!(shown.contains("staff-password"), "{shown}");
    // One mail to each administrator: wait for both before reading who got one.
    let mails = app.wait_for_mails("Staff sign-in reset: hd-lost", 2).await;
    let to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    assert!(
        to.contains(&"admin1@staff.example.org".to_string()) && to.contains(&"admin2@staff.example.org".to_string()),
        "{to:?}"
    );
    // The old password no longer works; the new one leads to enrolment, not to the helpdesk.
    assert!(staff_signin(&app, &client(&app), &hd, 1).await.contains("is wrong"));
    let given = StaffLogin {
        username: "hd-lost".into(),
        password: html_unescape(shown.split("id=\"staff-password\">").nth(1).unwrap().split('<').next().unwrap()),
        seed: totp::seed_from_text(shown.split("id=\"staff-seed\">").nth(1).unwrap().split('<').next().unwrap())
            .unwrap(),
    };
    let own = enrol(&app, &given).await;
    // The credentials an administrator made work for that one sign-in only, and say so after.
    assert!(staff_signin(&app, &client(&app), &given, 1).await.contains("you replaced them with your own"));
    let again = client(&app);
    assert!(staff_signin(&app, &again, &own, 0).await.contains("Find a person"));

    // A change of role ends their sessions; so does disabling the account, which also stops
    // any further sign-in. Nobody does either to themselves.
    let page = admin_update(&app, &c, &[("id", &id), ("action", "role"), ("role", "helpdesk")]).await;
    assert!(page.contains("A helpdesk account needs a scope"), "no scope, no helpdesk: {page}");
    admin_update(&app, &c, &[("id", &id), ("action", "role"), ("role", "auditor")]).await;
    assert!(get(&app, &again, "/helpdesk").await.1.contains("Staff sign-in"), "signed out by the role change");
    assert_eq!(
        Stmt::new("SELECT role FROM staff WHERE id = ?").bind(&id).scalar_one::<String>(&app.db).await.unwrap(),
        "auditor"
    );
    staff_signin(&app, &again, &own, 1).await;
    assert_eq!(get(&app, &again, "/helpdesk").await.0, 403, "an auditor now");
    admin_update(&app, &c, &[("id", &id), ("action", "disable")]).await;
    assert!(get(&app, &again, "/audit").await.1.contains("Staff sign-in"), "signed out by the disabling");
    let own_id: String = Stmt::new("SELECT id FROM staff WHERE username = 'admin1'").scalar_one(&app.db).await.unwrap();
    let page = admin_update(&app, &c, &[("id", &own_id), ("action", "disable")]).await;
    assert!(page.contains("Another administrator must"), "{page}");
    let ops: Vec<String> = app.audit().await.into_iter().map(|r| r.operation).collect();
    assert!(ops.contains(&"staff.set_role".to_string()) && ops.contains(&"staff.disable".to_string()), "{ops:?}");
    let _ = admin2;
}

/// Posts the staff list's update form as the administrator signed in on `c`.
async fn admin_update(app: &TestApp, c: &reqwest::Client, fields: &[(&str, &str)]) -> String {
    let (_, list) = get(app, c, "/admin/staff").await;
    let csrf = hidden(&list, "csrf").unwrap();
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    post(app, c, "/admin/staff/update", &form).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helpdesk_sets_a_cloud_only_password_that_must_then_be_changed() {
    let app = spawn_app().await;
    let id = passback::store::cloud::add(&app.db, "casey", Some("casey@cloud.example"), "Casey Cloud", app.clock.now())
        .await
        .unwrap();
    // A scope narrowed to a directory does not reach cloud-only accounts; "everyone" does.
    let narrow = add_staff(
        &app,
        "hd-dir",
        Role::Helpdesk,
        Scope { directories: vec![DIR_ID.into()], ..Default::default() },
        false,
    )
    .await;
    let n = client(&app);
    staff_signin(&app, &n, &narrow, 0).await;
    assert!(get(&app, &n, "/helpdesk?q=casey").await.1.contains("Nobody you may act on"));
    let hd = add_staff(&app, "hd-all", Role::Helpdesk, Scope::everyone(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &hd, 0).await;
    let (_, found) = get(&app, &c, "/helpdesk?q=case").await;
    assert!(found.contains(">casey</a>") && found.contains("cloud-only"), "{found}");
    let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("d", "").append_pair("a", &id).finish();
    let (status, page) = get(&app, &c, &format!("/helpdesk/person?{q}")).await;
    assert_eq!(status, 200, "{page}");
    let csrf = hidden(&page, "csrf").unwrap();
    let key = hidden(&page, "form_key").unwrap();
    let fields = [
        ("csrf", csrf.as_str()),
        ("d", ""),
        ("a", id.as_str()),
        ("form_key", key.as_str()),
        ("act", "reset"),
        ("mode", "generate"),
        ("must_change", "on"),
    ];
    let (_, done) = post(&app, &c, "/helpdesk/act", &fields).await;
    assert!(done.contains("PB-0000") && done.contains("must choose a new password"), "{done}");
    let temporary = temporary_password(&done);

    // Casey signs in with it and must choose her own first.
    let person = client(&app);
    let (_, form) = get(&app, &person, "/signin").await;
    let csrf = hidden(&form, "csrf").unwrap();
    let (_, page) =
        post(&app, &person, "/signin", &[("csrf", &csrf), ("login", "casey"), ("password", &temporary)]).await;
    assert!(page.contains("name=\"form_key\""), "the must-change form: {page}");
    let (key, csrf) = (hidden(&page, "form_key").unwrap(), hidden(&page, "csrf").unwrap());
    let mine = "Pink-Lemon-42";
    let fields =
        [("csrf", csrf.as_str()), ("form_key", &key), ("current", &temporary), ("password", mine), ("confirm", mine)];
    let (_, page) = post(&app, &person, "/signin/expired", &fields).await;
    assert!(page.contains("Security info"), "{page}");
    assert!(!passback::store::cloud::must_change(&app.db, &id).await.unwrap(), "her own password stands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_lines_staff_acts_are_audited_and_told_like_the_pages() {
    use passback::usecase::{self, staff::StaffSpec, By};
    let app = spawn_app().await;
    add_staff(&app, "admin-cli", Role::Administrator, Scope::default(), false).await;
    let mailer = app.portal.mailer();
    let key = app.portal.data_key();
    // As the command line makes it: its mail is sent before the act returns.
    let ctx =
        usecase::Ctx { db: &app.db, secrets: &key, mailer: &mailer, now: app.clock.now(), mail_in_background: false };
    let spec = StaffSpec {
        username: "hd-cli".into(),
        display_name: "Helpdesk (command line)".into(),
        email: None,
        role: Role::Helpdesk,
        scope: Scope::everyone(),
        may_reset_protected: false,
    };

    // What `passback staff add`, `reset-signin` and `disable` call.
    usecase::staff::add(&ctx, &By::CommandLine, &spec).await.unwrap().expect("added");
    let row = passback::store::staff::by_username(&app.db, "hd-cli").await.unwrap().unwrap();
    usecase::staff::reset_signin(&ctx, &By::CommandLine, &row).await.unwrap();
    usecase::staff::set_enabled(&ctx, &By::CommandLine, &row, false).await.unwrap();
    // A wrong sign-in is counted; `clear-signin-limits` forgets it (typed in another case).
    let c = client(&app);
    let (_, form) = get(&app, &c, "/staff/signin").await;
    let csrf = hidden(&form, "csrf").unwrap();
    let wrong = [("csrf", csrf.as_str()), ("username", "hd-cli"), ("password", "not-it"), ("code", "000000")];
    post(&app, &c, "/staff/signin", &wrong).await;
    // Counted under the name, and under the name from this address.
    assert_eq!(usecase::staff::clear_signin_limits(&ctx, &By::CommandLine, "HD-cli").await.unwrap(), 2);
    assert_eq!(usecase::staff::clear_signin_limits(&ctx, &By::CommandLine, "hd-cli").await.unwrap(), 0);

    let rows: Vec<_> = app.audit().await.into_iter().filter(|r| r.target.as_deref() == Some("staff:hd-cli")).collect();
    for op in ["staff.add", "staff.reset", "staff.disable", "staff.clear_signin_limits"] {
        let row = rows.iter().find(|r| r.operation == op).unwrap_or_else(|| panic!("{op} audited: {rows:?}"));
        assert_eq!(row.actor, "command-line");
    }
    // Every administrator hears of a new sign-in, as when an administrator gives it on the page.
    let told = app.wait_for_mails("Staff sign-in reset: hd-cli", 1).await;
    assert_eq!(told[0].to, vec!["admin-cli@staff.example.org".to_string()]);
    assert!(told[0].data.contains("command line"), "{}", told[0].data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_member_who_left_enrolment_half_way_signs_in_again_and_finishes_it() {
    use secrecy::ExposeSecret;
    let app = spawn_app().await;
    let spec = passback::usecase::staff::StaffSpec {
        username: "ada".into(),
        display_name: "Ada (staff)".into(),
        email: Some("ada@staff.example.org".into()),
        role: Role::Administrator,
        scope: Scope::everyone(),
        may_reset_protected: false,
    };
    let creds = passback::usecase::staff::create(&app.db, &app.portal.data_key(), &spec, app.clock.now())
        .await
        .unwrap()
        .unwrap();
    let given = StaffLogin {
        username: "ada".into(),
        password: creds.password.expose_secret().to_string(),
        seed: creds.seed.to_vec(),
    };
    // The first sign-in leads to enrolment; she closes the tab.
    let first = client(&app);
    let page = staff_signin(&app, &first, &given, 0).await;
    assert!(page.contains("Choose your own sign-in"), "{page}");

    // Meanwhile, nobody else holding the credentials can take the enrolment over.
    let other = staff_signin(&app, &client(&app), &given, 1).await;
    assert!(other.contains("being used to set up the account right now"), "{other}");
    // Once that page has expired, the same credentials lead back to it (a new code: each is
    // used once).
    app.clock.advance(601);
    let again = client(&app);
    let page = staff_signin(&app, &again, &given, 0).await;
    assert!(page.contains("Choose your own sign-in"), "not refused as wrong: {page}");
    // The enrolment left half way ended: only the latest can finish.
    let (_, stale) = get(&app, &first, "/staff/enrol").await;
    assert!(!stale.contains("Choose your own sign-in"), "{stale}");

    let seed =
        totp::seed_from_text(page.split("id=\"enrol-seed\">").nth(1).unwrap().split('<').next().unwrap()).unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let own = "Own-Sign-In-Phrase-42";
    let code = totp::code_at(&seed, app.clock.now());
    let fields = [("csrf", csrf.as_str()), ("password", own), ("confirm", own), ("code", code.as_str())];
    let (_, home) = post(&app, &again, "/staff/enrol", &fields).await;
    assert!(!home.contains("Choose your own sign-in") && home.contains("Writeback health"), "{home}");
    // Done: the administrator-made password opens nothing any more, and says why.
    let used = staff_signin(&app, &client(&app), &given, 1).await;
    assert!(!used.contains("Choose your own sign-in") && used.contains("PB-4001"), "{used}");
    assert!(used.contains("you replaced them with your own"), "{used}");
    let wrong = StaffLogin {
        password: "Not-The-Given-One-1".into(),
        username: given.username.clone(),
        seed: given.seed.clone(),
    };
    let wrong = staff_signin(&app, &client(&app), &wrong, 2).await;
    assert!(wrong.contains("PB-4001") && !wrong.contains("you replaced them"), "{wrong}");
    let row = app.audit().await.into_iter().find(|r| r.raw.contains("replaced by the owner's own")).unwrap();
    assert_eq!(row.outcome_code, "PB-4001");
    let starts = app.audit().await.into_iter().filter(|r| r.raw.contains("enrolment (re)started")).count();
    assert_eq!(starts, 2, "every start is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_agent_down_the_person_page_says_so_and_offers_no_act_that_writes_to_the_directory() {
    let mut app = spawn_app().await;
    let who = add_staff(&app, "hd-down", Role::Helpdesk, Scope::everyone(), false).await;
    app.stop_agent();
    app.wait_until_alive(false).await;
    let c = client(&app);
    staff_signin(&app, &c, &who, 0).await;

    let (_, page) = person_page(&app, &c, "bob").await;

    assert!(page.contains("id=\"agent-down\"") && page.contains("is not connected"), "{page}");
    let disabled = page.matches(" disabled>").count();
    assert_eq!(disabled, 3, "reset, unlock and require a new password: {page}");
    // Sent anyway (an old tab), the act is refused as the page says, and nothing is written.
    let (_, refused) = act(&app, &c, "bob", &page, &[("act", "unlock")]).await;
    assert!(refused.contains("PB-1001"), "{refused}");
}

/// An act a person did at `at`, as its audit row records it (a history for the reports).
pub async fn seed_act(app: &TestApp, at: i64, operation: &str, outcome: &str) {
    let rec = passback::store::audit::AuditRecord {
        at,
        actor: "self-service".into(),
        operation: operation.into(),
        outcome_code: outcome.into(),
        support_code: "SEEDS-00000".into(),
        ..Default::default()
    };
    passback::store::audit::record(&app.db, &rec).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_a_seeded_history_draw_it_and_export_each_table_for_auditors_only() {
    let app = spawn_app().await;
    // A real reset: the time the directory took is kept with its writeback.
    let form = app.verified_as("alice", "alice@example.org").await;
    let done = app.submit_password(&form, "Reported-Pass-42", "Reported-Pass-42").await;
    assert!(done.contains("Your password has been changed"), "{done}");
    let (took,): (Option<i64>,) =
        Stmt::new("SELECT took_ms FROM writebacks WHERE op = 'reset'").fetch_one(&app.db).await.unwrap();
    assert!(took.is_some_and(|ms| ms >= 0), "{took:?}");
    // Its figure is the machine's; the report's below are of a known history.
    Stmt::new("UPDATE writebacks SET took_ms = 50 WHERE op = 'reset'").run(&app.db).await.unwrap();
    let today = app.clock.now().div_euclid(86_400);
    let day = |d: i64| {
        time::OffsetDateTime::from_unix_timestamp(d * 86_400)
            .unwrap()
            .format(time::macros::format_description!("[year]-[month]-[day]"))
            .unwrap()
    };
    // Three days of history: what people did and what it came to, and one act outside the range.
    let seeded = [
        (today - 2, "reset.writeback", "PB-0000", 3),
        (today - 2, "reset.writeback", "PB-2003", 2),
        (today - 2, "change.writeback", "PB-3005", 1),
        (today - 1, "unlock.writeback", "PB-0000", 1),
        (today - 1, "reset.writeback", "PB-1001", 1),
        (today - 1, "reset.blocked", "PB-4001", 2),
        (today, "helpdesk.reset", "PB-0000", 1),
        (today - 40, "reset.writeback", "PB-2001", 5),
    ];
    for (d, operation, outcome, n) in seeded {
        for i in 0..n {
            seed_act(&app, d * 86_400 + 3600 + i, operation, outcome).await;
        }
    }
    // Ten writebacks the directory answered in 10, 20 … 100 ms.
    for ms in (10..=100).step_by(10) {
        Stmt::new(
            "INSERT INTO writebacks (msg_id, directory, anchor, op, support_code, created_at, took_ms) \
             VALUES (?, ?, 'a', 'reset', 'SEEDS-00000', ?, ?)",
        )
        .bind(format!("seeded-{ms}"))
        .bind(DIR_ID)
        .bind((today - 1) * 86_400 + ms)
        .bind(ms)
        .run(&app.db)
        .await
        .unwrap();
    }
    let anchor = app.anchor_of("bob").await;
    crate::reset::registered_authenticator(
        &app,
        passback::store::security::Person { directory: DIR_ID, anchor: &anchor },
    )
    .await;

    let auditor = add_staff(&app, "audrey", Role::Auditor, Scope::default(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &auditor, 0).await;
    let range = format!("from={}&until={}", day(today - 2), day(today));
    let (status, page) = get(&app, &c, &format!("/admin/reports?{range}")).await;
    assert_eq!(status, 200, "{page}");
    let row = |date: &str| {
        page.split(&format!("<th scope=\"row\" class=\"nowrap\">{date}</th>"))
            .nth(1)
            .unwrap()
            .split("</tr>")
            .next()
            .unwrap()
            .to_string()
    };
    let first = row(&day(today - 2));
    assert!(first.contains("3 done, 2 refused, 0 failed") && first.contains("0 done, 1 refused, 0 failed"), "{first}");
    let second = row(&day(today - 1));
    assert!(second.contains("0 done, 0 refused, 1 failed") && second.contains(">2</td>"), "{second}");
    assert!(!page.contains("PB-2001"), "outside the range: {page}");
    for shown in
        ["Used before (history)", "Wrong current password", "No agent was working", "within 50 ms", "within 100 ms"]
    {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    // Each chart is an image with a title and a description, drawn without script.
    for chart in ["chart-acts", "chart-refusals", "chart-coverage"] {
        assert!(
            page.contains(&format!("id=\"{chart}\""))
                && page.contains(&format!("aria-labelledby=\"{chart}-title {chart}-desc\"")),
            "{chart}"
        );
    }
    assert!(page.matches("<rect class=\"bar-done\"").count() >= 2, "{page}");

    // Each table as CSV, with the same numbers.
    let csv = |table: &str| {
        let (c, url) = (c.clone(), format!("{}/admin/reports.csv?table={table}&{range}", app.url));
        async move {
            let resp = c.get(url).send().await.unwrap();
            assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
            resp.text().await.unwrap()
        }
    };
    let days = csv("days").await;
    assert!(days.starts_with("date,resets_done,resets_refused,resets_failed,changes_done"), "{days}");
    assert!(days.contains(&format!("\"{}\",3,2,0,0,1,0,0,0,0,0\r\n", day(today - 2))), "{days}");
    assert!(days.contains(&format!("\"{}\",0,0,1,0,0,0,1,0,0,2\r\n", day(today - 1))), "{days}");
    assert_eq!(days.lines().count(), 4, "a header and three days: {days}");
    let refusals = csv("refusals").await;
    assert!(refusals.lines().nth(1).unwrap().starts_with("\"PB-2003\",\"Used before (history)\",2,50"), "{refusals}");
    let coverage = csv("coverage").await;
    let all = coverage.lines().nth(1).unwrap().to_string();
    let numbers: Vec<i64> = all.split(',').skip(1).map(|n| n.parse().unwrap()).collect();
    let people = numbers[0];
    assert!(people >= 4 && numbers[2] == 1, "bob's authenticator, of {people}: {coverage}");
    let exports = app.audit().await.into_iter().filter(|r| r.operation == "reports.export").count();
    assert_eq!(exports, 3, "each export is audited, as the audit's own is");

    // The helpdesk reads no reports, and nobody signed out does.
    let helpdesk = add_staff(&app, "hal", Role::Helpdesk, Scope::default(), false).await;
    let h = client(&app);
    staff_signin(&app, &h, &helpdesk, 0).await;
    assert_eq!(get(&app, &h, "/admin/reports").await.0, 403);
    assert_eq!(get(&app, &h, "/admin/reports.csv?table=days").await.0, 403);
    let (_, anonymous) = get(&app, &client(&app), "/admin/reports").await;
    assert!(anonymous.contains("name=\"username\""), "sent to sign in: {anonymous}");
}
