//! Active Directory writeback against a real Samba AD DC, through the portal and at the agent's
//! directory layer. Samba's LDAP ports are fixed, so one DC serves every test of this run; each
//! test makes its own people.

use crate::harness::{spawn_app, TestApp};
use passback::config::{DirectoryConfig, HistoryOnReset};
use passback::directory::{write_now, AccountChange, Answer, BeforeWrite, Directory, ResetAs};
use passback::domain::{Anchor, DirectoryId, Outcome};
use passback::sandbox::{SambaDc, TestCa, INITIAL_AD_PASSWORD};
use passback::store::Stmt;
use secrecy::SecretString;
use std::time::Duration;
use tokio::sync::OnceCell;

const AD: &str = "corp";

/// The run's DC. It is never dropped: Samba stops by itself when this process ends (its stdin
/// closes). Its folder is named after the process, and folders of finished runs are removed.
async fn dc() -> &'static SambaDc {
    static DC: OnceCell<SambaDc> = OnceCell::const_new();
    DC.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            passback::tls::install_crypto_provider();
            let tmp = std::env::temp_dir();
            for entry in std::fs::read_dir(&tmp).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix("passback-test-samba-") {
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            let dir = tmp.join(format!("passback-test-samba-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ca = TestCa::create(&dir.join("tls")).unwrap();
            SambaDc::start(&dir.join("dc"), &ca).unwrap()
        })
        .await
        .unwrap()
    })
    .await
}

/// A name no other test uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Creates a fine-grained password policy of its own (`name` is made unique) with `settings`
/// (`samba-tool … pso create` options) and applies it to `sam`.
fn apply_pso(dc: &SambaDc, name: &str, precedence: &str, settings: &[&str], sam: &str) {
    let pso = unique(name);
    let mut create = vec!["domain", "passwordsettings", "pso", "create", &pso, precedence];
    create.extend_from_slice(settings);
    dc.samba_tool(&create).unwrap();
    dc.samba_tool(&["domain", "passwordsettings", "pso", "apply", &pso, sam]).unwrap();
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

/// A fresh person in OU=Staff (or `ou`), with an address; returns (sAMAccountName, DN, mail).
async fn person(dc: &SambaDc, ou: Option<&str>) -> (String, String, String) {
    let sam = unique("t");
    let mail = format!("{sam}@corp.test");
    let dn = dc.add_user(&sam, ou, Some(&mail), INITIAL_AD_PASSWORD).await.unwrap();
    (sam, dn, mail)
}

async fn binds(dc: &SambaDc, dn: &str, password: &str) -> bool {
    passback::sandbox::bind_works(&dc.url, &dc.ca_file, dn, &secret(password)).await
}

/// The portal and an agent serving the OpenLDAP fixture and, as `corp`, the DC.
async fn ad_app(directory: DirectoryConfig) -> TestApp {
    let mut app = spawn_app().await;
    app.serve_also(directory).await;
    app.start_agent().await;
    app.wait_until_alive_for(AD).await;
    app
}

/// Waits until the portal has synced `sam` (the agent syncs at start).
async fn synced(app: &TestApp, sam: &str) {
    for _ in 0..100 {
        if !passback::store::users::find_by_login(&app.db, &sam.to_lowercase()).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sam} was never synced; agent log:\n{}", app.agent_log());
}

/// The agent's view of the DC, and the anchor of `sam` as the sync reports it.
async fn directory_and_anchor(cfg: DirectoryConfig, sam: &str) -> (Directory, Anchor) {
    let dir = Directory::new(&cfg).unwrap();
    let users = dir.sync_users().await.unwrap();
    let user = users.into_iter().find(|u| u.username.eq_ignore_ascii_case(sam)).expect("synced");
    (dir, user.anchor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_password_is_reset_through_the_portal_and_only_the_new_one_binds() {
    let dc = dc().await;
    let (sam, dn, mail) = person(dc, None).await;
    let app = ad_app(dc.directory_config(AD)).await;
    synced(&app, &sam).await;

    let form = app.verified_as(&sam, &mail).await;
    assert!(form.contains("At least 7 characters"), "the domain policy is shown: {form}");
    let page = app.submit_password(&form, "Quiet#Lantern9sky", "Quiet#Lantern9sky").await;

    assert!(page.contains("Your password has been changed"), "{page}\n{}", app.agent_log());
    assert!(binds(dc, &dn, "Quiet#Lantern9sky").await);
    assert!(!binds(dc, &dn, INITIAL_AD_PASSWORD).await, "the old password no longer binds");
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert_eq!((row.outcome_code.as_str(), row.directory.as_deref()), ("PB-0000", Some(AD)));
    assert!(row.raw.contains("history not enforced"), "the audit says Samba could not check history: {}", row.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_policy_refusals_reach_the_person_with_the_real_numbers() {
    let dc = dc().await;
    let (sam, dn, mail) = person(dc, None).await;
    let (pso_sam, _, pso_mail) = person(dc, None).await;
    apply_pso(dc, "pso", "10", &["--min-pwd-length=12", "--complexity=off"], &pso_sam);
    let app = ad_app(dc.directory_config(AD)).await;
    synced(&app, &sam).await;
    synced(&app, &pso_sam).await;

    let form = app.verified_as(&sam, &mail).await;
    let short = app.submit_password(&form, "Ab1#x", "Ab1#x").await;
    assert!(short.contains("PB-2001") && short.contains("at least 7 characters"), "{short}");
    let simple = app.submit_password(&short, "qzmvxtrplkwd", "qzmvxtrplkwd").await;
    assert!(simple.contains("PB-2002"), "{simple}");
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await, "nothing was written");

    // A fine-grained policy (PSO) wins over the domain's, and the person is told its number.
    let form = app.verified_as(&pso_sam, &pso_mail).await;
    let short = app.submit_password(&form, "Abcdef#123", "Abcdef#123").await;
    assert!(short.contains("PB-2001") && short.contains("at least 12 characters"), "{short}");
    let raw: Vec<String> = app.audit().await.into_iter().map(|r| r.raw).collect();
    assert!(raw.iter().any(|r| r.contains("0000052D")), "the DC's own answer is kept: {raw:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_admin_without_admincount_cannot_reset_a_forgotten_password() {
    let dc = dc().await;
    let (sam, dn, mail) = person(dc, None).await;
    dc.add_to_group(&dn, &format!("CN=Domain Admins,CN=Users,{}", dc.domain_dn)).await.unwrap();
    let app = ad_app(dc.directory_config(AD)).await;
    synced(&app, &sam).await;

    let form = app.verified_as(&sam, &mail).await;
    let page = app.submit_password(&form, "Quiet#Lantern9sky", "Quiet#Lantern9sky").await;

    assert!(page.contains("PB-3002"), "{page}");
    assert!(page.contains("Administrator accounts cannot reset"), "{page}");
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_outside_the_delegated_scope_gets_a_set_up_error_that_names_the_missing_right() {
    let dc = dc().await;
    let users_container = format!("CN=Users,{}", dc.domain_dn);
    let (sam, dn, mail) = person(dc, Some(&users_container)).await;
    // In the sync scope, but the service account was given no rights there.
    let mut cfg = dc.directory_config(AD);
    cfg.base_dns.push(users_container);
    let app = ad_app(cfg).await;
    synced(&app, &sam).await;

    let form = app.verified_as(&sam, &mail).await;
    let page = app.submit_password(&form, "Quiet#Lantern9sky", "Quiet#Lantern9sky").await;

    assert!(page.contains("PB-3003"), "{page}");
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert!(row.raw.contains("Reset Password"), "the audit names the missing right: {}", row.raw);
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_changes_are_checked_against_the_old_password_history_and_minimum_age() {
    let dc = dc().await;
    let (sam, dn, _) = person(dc, None).await;
    let (dir, anchor) = directory_and_anchor(dc.directory_config(AD), &sam).await;

    // Nothing is asked of the account until what comes before the write is done, and its
    // refusal is the answer (the agent's journal of the request, refused late here).
    let late_refusal = || -> BeforeWrite {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err(Answer { outcome: Outcome::Internal, raw: "not recorded".into(), policy: None })
        })
    };
    let next = secret("Next#Pass123");
    let refused = dir.change_after(&anchor, &secret(INITIAL_AD_PASSWORD), &next, late_refusal()).await;
    assert_eq!((refused.outcome, refused.raw.as_str()), (Outcome::Internal, "not recorded"));
    let refused = dir.reset_seeing_lock(&anchor, &next, ResetAs::default(), late_refusal()).await.0;
    assert_eq!((refused.outcome, refused.raw.as_str()), (Outcome::Internal, "not recorded"));
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await);

    let wrong = dir.change(&anchor, &secret("Not#The1Password"), &secret("Next#Pass123")).await;
    assert_eq!(wrong.outcome, Outcome::OldPasswordWrong, "{}", wrong.raw);
    let ok = dir.change(&anchor, &secret(INITIAL_AD_PASSWORD), &secret("Next#Pass123")).await;
    assert_eq!(ok.outcome, Outcome::Success, "{}", ok.raw);
    assert!(binds(dc, &dn, "Next#Pass123").await);
    let back = dir.change(&anchor, &secret("Next#Pass123"), &secret(INITIAL_AD_PASSWORD)).await;
    assert_eq!(back.outcome, Outcome::InHistory { history: Some(24) }, "{}", back.raw);

    // A minimum age (one day, from a PSO on this person only): an admin reset still works, a
    // change is too recent.
    apply_pso(dc, "age", "5", &["--min-pwd-age=1", "--min-pwd-length=7"], &sam);
    let young = dir.change(&anchor, &secret("Next#Pass123"), &secret("Third#Pass456")).await;
    let Outcome::TooYoung { min_age_secs: Some(86_400), since: Some(since) } = young.outcome else {
        panic!("{:?} {}", young.outcome, young.raw)
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - since).abs() < 120, "since when: pwdLastSet of the change above ({since} vs {now})");
    // AD applies the minimum age to changes only: a reset of a forgotten password goes ahead.
    let reset = dir.reset(&anchor, &secret("Forgot#Pass789")).await;
    assert_eq!(reset.outcome, Outcome::Success, "{}", reset.raw);
    assert!(binds(dc, &dn, "Forgot#Pass789").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_ad_account_cannot_change_its_password() {
    let dc = dc().await;
    let (sam, dn, _) = person(dc, None).await;
    for _ in 0..6 {
        assert!(!binds(dc, &dn, "Wrong#Guess1").await);
    }
    let (dir, anchor) = directory_and_anchor(dc.directory_config(AD), &sam).await;

    let locked = dir.change(&anchor, &secret(INITIAL_AD_PASSWORD), &secret("Next#Pass123")).await;

    assert_eq!(locked.outcome, Outcome::AccountLocked, "{}", locked.raw);
    let synced = dir.sync_users().await.unwrap().into_iter().find(|u| u.username.eq_ignore_ascii_case(&sam)).unwrap();
    assert!(synced.locked && synced.enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_history_is_required_on_reset_a_dc_that_cannot_enforce_it_refuses_resets() {
    let dc = dc().await;
    let (sam, dn, _) = person(dc, None).await;
    let mut cfg = dc.directory_config(AD);
    cfg.history_on_reset = Some(HistoryOnReset::Required);
    let (dir, anchor) = directory_and_anchor(cfg, &sam).await;

    let answer = dir.reset(&anchor, &secret("Quiet#Lantern9sky")).await;

    assert_eq!(answer.outcome, Outcome::InsufficientRights, "a set-up choice for the administrator");
    assert!(answer.raw.contains("policy-hints"), "{}", answer.raw);
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_sync_reports_anchors_addresses_and_disabled_people() {
    let dc = dc().await;
    let (sam, dn, mail) = person(dc, None).await;
    let dir = Directory::new(&dc.directory_config(AD)).unwrap();

    let users = dir.sync_users().await.unwrap();

    let me = users.iter().find(|u| u.username.eq_ignore_ascii_case(&sam)).unwrap();
    assert_eq!(me.email.as_ref().map(|e| e.as_str()), Some(mail.as_str()));
    assert_eq!(me.dn, dn);
    assert_eq!(me.anchor.as_str().len(), 36, "a GUID: {}", me.anchor);
    assert!(!me.protected);
    // The DC's own expiry: the seeded domain keeps a password 42 days.
    let set = me.password_changed_at.expect("pwdLastSet");
    assert_eq!(me.password_expires_at.map(|at| at - set), Some(42 * 86_400), "{me:?}");
    assert!(users.iter().any(|u| u.username == "dadmin" && u.protected), "a Domain Admin, nested or not, is protected");
    assert!(!users.iter().any(|u| u.username == "svc-reset"), "outside the scope");
    let (admin_sam, admin_dn, _) = person(dc, None).await;
    dc.add_to_group(&admin_dn, &format!("CN=Domain Admins,CN=Users,{}", dc.domain_dn)).await.unwrap();
    let users = dir.sync_users().await.unwrap();
    assert!(users.iter().any(|u| u.username.eq_ignore_ascii_case(&admin_sam) && u.protected));
    let policy = dir.policy().await.unwrap();
    assert_eq!((policy.min_length, policy.history, policy.complexity), (Some(7), Some(24), Some(true)));
    assert_eq!(policy.history_on_reset, Some(false), "Samba takes no policy-hints control");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dc_with_an_untrusted_certificate_is_unreachable_and_nothing_is_sent() {
    let dc = dc().await;
    let (sam, _, _) = person(dc, None).await;
    let (_, anchor) = directory_and_anchor(dc.directory_config(AD), &sam).await;
    // In the run's DC folder, which the next run clears.
    let other_ca = TestCa::create(&dc.dir.join(unique("other-ca-"))).unwrap();
    let mut cfg = dc.directory_config(AD);
    cfg.ca_file = Some(other_ca.ca_file.clone());
    let dir = Directory::new(&cfg).unwrap();

    let answer = dir.reset(&anchor, &secret("Quiet#Lantern9sky")).await;

    assert_eq!(answer.outcome, Outcome::DirectoryUnreachable, "{}", answer.raw);
    assert!(dir.check().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_account_is_unlocked_and_made_to_change_its_password() {
    let dc = dc().await;
    let (sam, dn, _) = person(dc, None).await;
    for _ in 0..6 {
        assert!(!binds(dc, &dn, "Wrong#Guess1").await);
    }
    assert!(!binds(dc, &dn, INITIAL_AD_PASSWORD).await, "locked out");
    let (dir, anchor) = directory_and_anchor(dc.directory_config(AD), &sam).await;

    let unlocked = dir.change_account(&anchor, AccountChange::Unlock).await;
    assert_eq!(unlocked.outcome, Outcome::Success, "{}", unlocked.raw);
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await, "unlocked");

    let must = dir.change_account(&anchor, AccountChange::MustChange(true)).await;
    assert_eq!(must.outcome, Outcome::Success, "{}", must.raw);
    assert!(!binds(dc, &dn, INITIAL_AD_PASSWORD).await, "must change: a plain bind is refused (data 773)");
    let cleared = dir.change_account(&anchor, AccountChange::MustChange(false)).await;
    assert_eq!(cleared.outcome, Outcome::Success, "{}", cleared.raw);
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_delta_sync_lists_only_who_changed_since_the_last_mark() {
    let dc = dc().await;
    let dir = Directory::new(&dc.directory_config(AD)).unwrap();
    let (everyone, mark) = dir.sync_changes(None).await.unwrap();
    assert!(everyone.iter().any(|u| u.username == "dadmin"));

    let (sam, _, mail) = person(dc, None).await;
    let (changed, next) = dir.sync_changes(mark.as_ref()).await.unwrap();

    let me = changed.iter().find(|u| u.username.eq_ignore_ascii_case(&sam)).expect("the new person is in the delta");
    assert_eq!(me.email.as_ref().map(|e| e.as_str()), Some(mail.as_str()));
    assert!(!changed.iter().any(|u| u.username == "dadmin"), "unchanged people are not");
    assert_ne!(next, mark, "the mark moved on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_dc_is_seeded_as_promised_and_a_second_one_is_refused() {
    let dc = dc().await;
    let policy = dc.samba_tool(&["domain", "passwordsettings", "show"]).unwrap();
    for line in [
        "Minimum password length: 7",
        "Minimum password age (days): 0",
        "Password history length: 24",
        "Account lockout threshold (attempts): 5",
    ] {
        assert!(policy.contains(line), "{policy}");
    }
    assert!(binds(dc, &dc.service_dn, secrecy::ExposeSecret::expose_secret(&dc.service_password)).await);
    // The seeded Domain Admin has no adminCount (Samba runs no SDProp): protected all the same.
    let (dir, dadmin) = directory_and_anchor(dc.directory_config(AD), "dadmin").await;
    let answer = dir.reset(&dadmin, &secret("Quiet#Lantern9sky")).await;
    assert_eq!(answer.outcome, Outcome::Protected, "{}", answer.raw);

    let dir = std::env::temp_dir().join(unique("passback-second-dc-"));
    let second = SambaDc::start(&dir.join("dc"), &TestCa::create(&dir.join("tls")).unwrap()).err().unwrap();
    assert!(second.to_string().contains("another Samba DC is running"), "{second:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_changes_through_the_portal_meet_the_domains_checks() {
    let dc = dc().await;
    let (sam, dn, _) = person(dc, None).await;
    let (young_sam, _, _) = person(dc, None).await;
    let (locked_sam, locked_dn, _) = person(dc, None).await;
    apply_pso(dc, "age", "5", &["--min-pwd-age=1", "--max-pwd-age=90", "--min-pwd-length=7"], &young_sam);
    for _ in 0..6 {
        assert!(!binds(dc, &locked_dn, "Wrong#Guess1").await);
    }
    let app = ad_app(dc.directory_config(AD)).await;
    for s in [&sam, &young_sam, &locked_sam] {
        synced(&app, s).await;
    }

    let wrong = app.change_password(&sam, "Not#The1Password", "Next#Pass123").await;
    assert!(wrong.contains("PB-3005"), "{wrong}");
    let ok = app.change_password(&sam, INITIAL_AD_PASSWORD, "Next#Pass123").await;
    assert!(ok.contains("Your password has been changed"), "{ok}");
    // The domain's maximum age (42 days, the default).
    assert!(ok.contains("Your new password expires on") && ok.contains("in 42 days"), "{ok}");
    assert!(binds(dc, &dn, "Next#Pass123").await && !binds(dc, &dn, INITIAL_AD_PASSWORD).await);
    let back = app.change_password(&sam, "Next#Pass123", INITIAL_AD_PASSWORD).await;
    assert!(back.contains("PB-2003") && back.contains("last 24 passwords"), "{back}");

    let wrong_young = app.change_password(&young_sam, "Not#The1Password", "Next#Pass123").await;
    assert!(wrong_young.contains("PB-3005") && !wrong_young.contains("PB-2004"), "{wrong_young}");
    let young = app.change_password(&young_sam, INITIAL_AD_PASSWORD, "Next#Pass123").await;
    assert!(young.contains("PB-2004") && young.contains("allow the next change from"), "{young}");
    assert!(young.contains(" UTC"), "without the form's script, times are in UTC and say so: {young}");
    assert!(!young.contains(r#"name="password""#), "no form to fill until then: {young}");
    // Signed in, the person is told before typing anything: when, and when the password expires
    // (as the DC works it out, under the person's own policy).
    let c = app.new_client();
    let signed = app.sign_in_on(&c, &young_sam, INITIAL_AD_PASSWORD).await.text().await.unwrap();
    assert!(signed.contains("Your password expires on") && signed.contains("in 89 days"), "{signed}");
    assert!(signed.contains("You can change your password again from"), "{signed}");
    let change = c.get(format!("{}/change", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(change.contains("You can change your password again from") && change.contains("in 23 hours"), "{change}");
    assert!(!change.contains(r#"name="password""#), "{change}");
    let locked = app.change_password(&locked_sam, INITIAL_AD_PASSWORD, "Next#Pass123").await;
    assert!(locked.contains("PB-3007"), "{locked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_must_change_and_disabled_people_through_the_portal() {
    let dc = dc().await;
    let (admin_sam, admin_dn, _) = person(dc, None).await;
    dc.add_to_group(&admin_dn, &format!("CN=Domain Admins,CN=Users,{}", dc.domain_dn)).await.unwrap();
    let (must_sam, must_dn, _) = person(dc, None).await;
    let (off_sam, _, off_mail) = person(dc, None).await;
    dc.samba_tool(&["user", "disable", &off_sam]).unwrap();
    let app = ad_app(dc.directory_config(AD)).await;
    for s in [&admin_sam, &must_sam, &off_sam] {
        synced(&app, s).await;
    }
    let (dir, must) = directory_and_anchor(dc.directory_config(AD), &must_sam).await;
    assert_eq!(dir.change_account(&must, AccountChange::MustChange(true)).await.outcome, Outcome::Success);

    // A protected account may change a password it knows (only a reset is refused).
    let changed = app.change_password(&admin_sam, INITIAL_AD_PASSWORD, "Admin#Change42").await;
    assert!(changed.contains("Your password has been changed"), "{changed}");
    assert!(binds(dc, &admin_dn, "Admin#Change42").await);

    // Someone who must change at next sign-in cannot bind, but can change here. Samba cannot
    // check a reset against the history, so the sign-in's proof does not stand in for the
    // current password: it is asked for, and the agent refuses a reset in place of a change.
    assert!(!binds(dc, &must_dn, INITIAL_AD_PASSWORD).await);
    let c = app.new_client();
    let form = app.sign_in_on(&c, &must_sam, INITIAL_AD_PASSWORD).await.text().await.unwrap();
    assert!(form.contains(r#"name="current""#) && form.contains("Type your current password"), "{form}");
    let keep_history = ResetAs { keep_history: true, ..ResetAs::default() };
    let refused = dir.reset_seeing_lock(&must, &secret("Quiet#Lantern9sky"), keep_history, write_now()).await.0;
    assert_eq!(refused.outcome, Outcome::InsufficientRights, "{}", refused.raw);
    assert!(refused.raw.contains("not written"), "{}", refused.raw);
    let changed = app.change_password(&must_sam, INITIAL_AD_PASSWORD, "Fresh#Start42").await;
    assert!(changed.contains("Your password has been changed"), "{changed}");

    // The agent itself refuses a disabled account, even before the portal hears of it.
    let (dir, off) = directory_and_anchor(dc.directory_config(AD), &off_sam).await;
    assert_eq!(dir.reset(&off, &secret("Quiet#Lantern9sky")).await.outcome, Outcome::AccountDisabled);

    // A disabled account gets the answer everyone gets at the first step; once its owner has
    // proved they hold the mailbox, they are told plainly, before typing a new password.
    let before = app.mails_to(&off_mail);
    let page = app.identify(&off_sam).await;
    assert!(page.contains("Check your e-mail"), "{page}");
    let code = app.code_for(&off_mail, before).await;
    let page = app.verify(&code).await;
    assert!(page.contains("Your account is disabled") && page.contains("PB-3006"), "{page}");
    assert!(!page.contains("Choose a new password"), "{page}");
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.disabled").expect("audited");
    assert_eq!(row.outcome_code, "PB-3006");

    // The change form says "disabled" to whoever knows the password (AD's 533), and to nobody else.
    let right = app.change_password(&off_sam, INITIAL_AD_PASSWORD, "Next#Pass123").await;
    assert!(right.contains("PB-3006"), "{right}");
    let wrong = app.change_password(&off_sam, "Not#The1Password", "Next#Pass123").await;
    assert!(wrong.contains("PB-3005") && !wrong.contains("PB-3006"), "{wrong}");
    // Sign-in alike.
    let c = app.new_client();
    let right = app.sign_in_on(&c, &off_sam, INITIAL_AD_PASSWORD).await.text().await.unwrap();
    assert!(right.contains("PB-3006") && right.contains("Your account is disabled"), "{right}");
    let wrong = app.sign_in_on(&c, &off_sam, "Not#The1Password").await.text().await.unwrap();
    assert!(!wrong.contains("PB-3006"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_ad_account_reset_as_forgotten_is_changed_and_unlocked_and_the_new_password_binds() {
    use crate::helpdesk::{add_staff, client, person_page_in, staff_signin};
    let dc = dc().await;
    let (sam, dn, mail) = person(dc, None).await;
    let app = ad_app(dc.directory_config(AD)).await;
    synced(&app, &sam).await;
    // Locked after the sync: only a live read knows.
    for _ in 0..6 {
        assert!(!binds(dc, &dn, "Wrong#Guess1").await);
    }
    assert!(!binds(dc, &dn, INITIAL_AD_PASSWORD).await, "locked out");
    let scope = passback::store::users::Scope { directories: vec![AD.into()], ..Default::default() };
    let hd = add_staff(&app, "hd-lock", passback::store::staff::Role::Helpdesk, scope, false).await;
    let c = client(&app);
    staff_signin(&app, &c, &hd, 0).await;
    let (_, staff_view) = person_page_in(&app, &c, AD, &sam).await;
    assert!(staff_view.contains(r#"name="unlock" value="on" checked"#), "also unlock is ticked: {staff_view}");

    let form = app.verified_as(&sam, &mail).await;
    assert!(form.contains("Your account is locked at the moment"), "the live state is shown: {form}");
    let page = app.submit_password(&form, "Unlocked#New9", "Unlocked#New9").await;

    assert!(page.contains("changed and your account is unlocked"), "{page}\n{}", app.agent_log());
    assert!(binds(dc, &dn, "Unlocked#New9").await, "the new password binds: the account is unlocked");
    let row = app.audit().await.into_iter().find(|r| r.operation == "reset.writeback").unwrap();
    assert_eq!(row.outcome_code, "PB-0000");
    assert!(row.raw.contains("unlock: done") && row.raw.contains("read back: not locked"), "{}", row.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_that_leaves_the_account_locked_never_says_changed() {
    use passback::sandbox::Delegated;
    let dc = dc().await;
    let (sam, dn, _) = person(dc, None).await;
    for _ in 0..6 {
        assert!(!binds(dc, &dn, "Wrong#Guess1").await);
    }
    // An agent whose service account may reset passwords but not write lockoutTime.
    let (account, password) = dc
        .add_service_account(&unique("svcnolock"), &[Delegated::ResetPassword, Delegated::WritePwdLastSet])
        .await
        .unwrap();
    let mut cfg = dc.directory_config(AD);
    cfg.bind_dn = account;
    cfg.bind_password = Some(password);
    let app = ad_app(cfg).await;
    synced(&app, &sam).await;
    let form = app.verified_as(&sam, &format!("{sam}@corp.test")).await;

    let page = app.submit_password(&form, "Still#Locked9", "Still#Locked9").await;

    assert!(page.contains("PB-3010") && page.contains("still locked"), "{page}\n{}", app.agent_log());
    assert!(!page.contains("has been changed"), "{page}");
    assert!(!binds(dc, &dn, "Still#Locked9").await, "indeed locked (775)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_under_a_fine_grained_policy_sees_its_numbers_before_typing() {
    let dc = dc().await;
    let (strict_sam, _, strict_mail) = person(dc, None).await;
    let (plain_sam, _, plain_mail) = person(dc, None).await;
    apply_pso(dc, "len", "7", &["--min-pwd-length=12", "--history-length=2"], &strict_sam);
    let app = ad_app(dc.directory_config(AD)).await;
    synced(&app, &strict_sam).await;
    synced(&app, &plain_sam).await;

    let strict = app.verified_as(&strict_sam, &strict_mail).await;
    assert!(strict.contains("At least 12 characters") && strict.contains("data-min-length=\"12\""), "{strict}");
    let refused = app.submit_password(&strict, "Qz7#kLmW9x", "Qz7#kLmW9x").await;
    assert!(refused.contains("PB-2001") && refused.contains("at least 12 characters"), "{refused}");
    assert!(refused.contains("At least 12 characters") && !refused.contains("At least 7"), "{refused}");

    let plain = app.verified_as(&plain_sam, &plain_mail).await;
    assert!(plain.contains("At least 7 characters"), "{plain}");

    // The change form never states a person's own rules to someone who only typed their name
    // (here, with two directories, it states none), but does once the directory refused a new
    // password by them (it checked the current one first).
    let wrong = app.change_password(&strict_sam, "Not#The1Password", "Qz7#kLmW9x").await;
    assert!(wrong.contains("PB-3005") && !wrong.contains("At least 12"), "{wrong}");
    let short = app.change_password(&strict_sam, INITIAL_AD_PASSWORD, "Qz7#kLmW9x").await;
    assert!(short.contains("PB-2001") && short.contains("At least 12 characters"), "{short}");
    assert!(!short.contains("At least 7 characters"), "{short}");

    // The helpdesk sees each person's own rules beside the typed password.
    use crate::helpdesk::{add_staff, client, person_page_in, staff_signin};
    let scope = passback::store::users::Scope { directories: vec![AD.into()], ..Default::default() };
    let hd = add_staff(&app, "hd-pso", passback::store::staff::Role::Helpdesk, scope, false).await;
    let c = client(&app);
    staff_signin(&app, &c, &hd, 0).await;
    let (_, strict) = person_page_in(&app, &c, AD, &strict_sam).await;
    assert!(strict.contains("At least 12 characters") && !strict.contains("At least 7"), "{strict}");
    let (_, plain) = person_page_in(&app, &c, AD, &plain_sam).await;
    assert!(plain.contains("At least 7 characters"), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dc_whose_certificate_the_agent_does_not_trust_makes_reset_unavailable() {
    let dc = dc().await;
    let (sam, _, _) = person(dc, None).await;
    let mut app = ad_app(dc.directory_config(AD)).await;
    synced(&app, &sam).await;
    // The DC's certificate changes to one from a CA the agent does not trust.
    let other_ca = TestCa::create(&app.dir.join("other-ca")).unwrap();
    app.restart_agent_with(|cfg| {
        if let Some(d) = cfg.directories.iter_mut().find(|d| d.id == AD) {
            d.ca_file = Some(other_ca.ca_file.clone());
        }
    })
    .await;
    let corp = DirectoryId::parse(AD).unwrap();
    for _ in 0..50 {
        if !app.hub.is_alive(&corp) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let page = app.identify(&sam).await;

    assert!(page.contains("PB-1001"), "the agent reports the directory unreachable: {page}");
    assert!(app.agent_log().contains("certificate") || app.agent_log().contains("Certificate"), "the reason is logged");
}

/// What any write to `dn` would move (uSNChanged), and the password state, read as Administrator.
async fn account_state(dc: &SambaDc, dn: &str) -> Vec<(String, Vec<String>)> {
    let settings = ldap3::LdapConnSettings::new().set_config(passback::tls::client_config(Some(&dc.ca_file)).unwrap());
    let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, &dc.url).await.unwrap();
    tokio::spawn(conn.drive());
    ldap.simple_bind(&dc.admin_dn, secrecy::ExposeSecret::expose_secret(&dc.admin_password))
        .await
        .unwrap()
        .success()
        .unwrap();
    let attrs = vec!["uSNChanged", "pwdLastSet", "badPwdCount", "lockoutTime", "unicodePwd"];
    let (entries, _) = ldap.search(dn, ldap3::Scope::Base, "(objectClass=*)", attrs).await.unwrap().success().unwrap();
    let _ = ldap.unbind().await;
    let entry = ldap3::SearchEntry::construct(entries.into_iter().next().unwrap());
    let mut state: Vec<_> = entry.attrs.into_iter().collect();
    state.sort();
    state
}

/// An OU of the test's own below OU=Staff (inside svc-reset's delegation), holding a Domain Admin
/// (added first) and a person; returns (OU, the admin's DN, the person's DN).
async fn doctor_scope(dc: &SambaDc) -> (String, String, String) {
    let ou = dc.add_ou(&unique("doc")).await.unwrap();
    let (_, admin_dn, _) = person(dc, Some(&ou)).await;
    dc.add_to_group(&admin_dn, &format!("CN=Domain Admins,CN=Users,{}", dc.domain_dn)).await.unwrap();
    let (_, dn, _) = person(dc, Some(&ou)).await;
    (ou, admin_dn, dn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_finds_every_right_of_the_delegated_service_account_and_changes_nothing() {
    use passback::agent::doctor::{self, Status};
    let dc = dc().await;
    let (ou, admin_dn, dn) = doctor_scope(dc).await;
    let app = crate::harness::spawn_app().await;
    let mut cfg = app.agent_cfg.clone();
    let mut directory = dc.directory_config(AD);
    directory.base_dns = vec![ou.clone()];
    cfg.directories = vec![directory];
    let before = (account_state(dc, &dn).await, account_state(dc, &admin_dn).await);

    let report = doctor::run(&cfg).await;

    let table = report.render();
    assert!(!report.failed(), "{table}");
    for right in ["Reset password", "write lockoutTime", "write pwdLastSet"] {
        let rows = report.find(AD, right);
        assert_eq!(rows.len(), 1, "{table}");
        assert_eq!(rows[0].status, Status::Pass, "{table}");
        assert!(rows[0].detail.contains(&dn), "probed on the person, never on the Domain Admin: {table}");
    }
    let change = report.find(AD, "Change password")[0];
    assert_eq!(change.status, Status::NotChecked, "{table}");
    let protected = report.find(AD, "protected accounts")[0];
    assert_eq!(protected.status, Status::Pass, "{table}");
    assert!(protected.detail.contains("1 of 2 people in scope are protected"), "{table}");
    let base = report.find(AD, "base DN")[0];
    assert!(base.detail.contains(&format!("{ou} exists; 2 people match")), "{table}");
    let hints = report.find(AD, "policy hints")[0];
    assert_eq!(hints.status, Status::Warn, "Samba 4.17 has no policy-hints control: {table}");
    for check in ["reachable", "TLS", "service account bind"] {
        assert_eq!(report.find(AD, check)[0].status, Status::Pass, "{table}");
    }
    for check in ["TLS", "agent credentials", "clock"] {
        assert_eq!(report.find("portal", check)[0].status, Status::Pass, "{table}");
    }
    assert_eq!((account_state(dc, &dn).await, account_state(dc, &admin_dn).await), before, "nothing was written");
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await, "the person's password is the same");
    assert!(binds(dc, &admin_dn, INITIAL_AD_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_missing_one_right_fails_the_doctor_on_that_right_alone() {
    use passback::directory::doctor::{check_directory, Status};
    use passback::sandbox::Delegated;
    let dc = dc().await;
    let (ou, _, dn) = doctor_scope(dc).await;
    let no_last_set = dc
        .add_service_account(&unique("svcnolast"), &[Delegated::ResetPassword, Delegated::WriteLockoutTime])
        .await
        .unwrap();
    let no_reset = dc
        .add_service_account(&unique("svcnoreset"), &[Delegated::WriteLockoutTime, Delegated::WritePwdLastSet])
        .await
        .unwrap();
    let before = account_state(dc, &dn).await;

    for ((account, password), missing) in [(no_last_set, "write pwdLastSet"), (no_reset, "Reset password")] {
        let mut cfg = dc.directory_config(AD);
        cfg.bind_dn = account.clone();
        cfg.bind_password = Some(password);
        cfg.base_dns = vec![ou.clone()];

        let checks = check_directory(&cfg).await;

        let failed: Vec<_> = checks.iter().filter(|c| c.status == Status::Fail).collect();
        assert_eq!(failed.len(), 1, "only the missing right fails for {account}: {checks:#?}");
        assert!(failed[0].name.contains(missing), "{:#?}", failed[0]);
        assert!(failed[0].detail.contains(&dn), "says which person was probed: {:#?}", failed[0]);
        let fix = failed[0].fix.as_deref().unwrap();
        assert!(
            fix.contains(&format!("on descendant User objects of {ou}")) && fix.contains("samba-tool dsacl"),
            "{fix}"
        );
        // The domain's policy against SP 800-63B-4 (information): complexity, 42 days, 7 characters.
        let nist: Vec<_> = checks.iter().filter(|c| c.name == "NIST SP 800-63B-4").collect();
        assert_eq!(nist.len(), 3, "{checks:#?}");
        assert!(nist.iter().all(|c| c.status == Status::Info), "{nist:#?}");
        assert!(nist[1].detail.contains("42 days") && nist[2].fix.as_deref().unwrap().contains("minPwdLength"));
    }
    assert_eq!(account_state(dc, &dn).await, before, "nothing was written");
    assert!(binds(dc, &dn, INITIAL_AD_PASSWORD).await, "the probed person's password is the same");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_says_when_the_dcs_certificate_is_not_trusted() {
    use passback::directory::doctor::{check_directory, Status};
    let dc = dc().await;
    let other_ca = TestCa::create(&dc.dir.join(unique("other-ca-"))).unwrap();
    let mut cfg = dc.directory_config(AD);
    cfg.ca_file = Some(other_ca.ca_file.clone());

    let checks = check_directory(&cfg).await;

    let row = |name: &str| checks.iter().find(|c| c.name == name).unwrap();
    assert_eq!(row("reachable").status, Status::Pass);
    assert_eq!(row("TLS").status, Status::Fail, "{checks:#?}");
    assert!(row("TLS").detail.contains("not trusted"), "{checks:#?}");
    assert!(row("TLS").fix.as_deref().unwrap().contains("ca_file"), "{checks:#?}");
    assert_eq!(row("service account bind").status, Status::NotChecked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helpdesk_resets_ad_people_in_scope_and_protected_ones_only_where_both_role_and_agent_allow() {
    use crate::helpdesk::{act_in, add_staff, client, person_page_in, staff_signin, temporary_password};
    use passback::store::{staff::Role, users::Scope};
    let dc = dc().await;
    let (sam, dn, _) = person(dc, None).await;
    let (admin_sam, admin_dn, _) = person(dc, None).await;
    dc.add_to_group(&admin_dn, &format!("CN=Domain Admins,CN=Users,{}", dc.domain_dn)).await.unwrap();
    let mut app = ad_app(dc.directory_config(AD)).await;
    synced(&app, &sam).await;
    synced(&app, &admin_sam).await;
    let staff_ou = format!("OU=Staff,{}", dc.domain_dn);
    let scope = Scope { directories: vec![AD.into()], base_dns: vec![staff_ou.clone()], ..Default::default() };

    // A helpdesk role in OU=Staff resets a person there, written by the DC with "must change".
    let hd = add_staff(&app, "hd-ad", Role::Helpdesk, scope.clone(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &hd, 0).await;
    let (_, page) = person_page_in(&app, &c, AD, &sam).await;
    let (_, done) =
        act_in(&app, &c, AD, &sam, &page, &[("act", "reset"), ("mode", "generate"), ("must_change", "on")]).await;
    assert!(done.contains("PB-0000"), "{done}");
    let temporary = temporary_password(&done);
    assert!(!binds(dc, &dn, &temporary).await, "must change first: AD refuses the bind (data 773)");
    let (dir, anchor) = directory_and_anchor(dc.directory_config(AD), &sam).await;
    assert_eq!(dir.verify(&anchor, &secret(&temporary)).await.outcome, Outcome::MustChange);

    // A Domain Admin (protected through its group): refused without touching the DC.
    let (_, page) = person_page_in(&app, &c, AD, &admin_sam).await;
    assert!(page.contains("This is a protected account"), "{page}");
    let (_, done) = act_in(&app, &c, AD, &admin_sam, &page, &[("act", "reset"), ("mode", "generate")]).await;
    assert!(done.contains("PB-3002"), "{done}");

    // The portal's copy of a membership can lag (a delta sync does not see group changes): the
    // agent checks protection itself, also for an unlock.
    Stmt::new("UPDATE directory_users SET protected = FALSE WHERE username = ?")
        .bind(admin_sam.to_lowercase())
        .run(&app.db)
        .await
        .unwrap();
    let (_, page) = person_page_in(&app, &c, AD, &admin_sam).await;
    let (_, done) = act_in(&app, &c, AD, &admin_sam, &page, &[("act", "unlock")]).await;
    assert!(done.contains("PB-3002"), "the agent refuses: {done}");
    Stmt::new("UPDATE directory_users SET protected = TRUE WHERE username = ?")
        .bind(admin_sam.to_lowercase())
        .run(&app.db)
        .await
        .unwrap();

    // A role that may act on protected accounts: the agent still refuses unless configured to.
    let senior = add_staff(&app, "hd-senior", Role::Helpdesk, scope, true).await;
    let s = client(&app);
    staff_signin(&app, &s, &senior, 0).await;
    let (_, page) = person_page_in(&app, &s, AD, &admin_sam).await;
    let (_, done) = act_in(&app, &s, AD, &admin_sam, &page, &[("act", "reset"), ("mode", "generate")]).await;
    assert!(done.contains("PB-3002"), "the agent refuses: {done}");
    assert!(binds(dc, &admin_dn, INITIAL_AD_PASSWORD).await, "nothing was written");
    app.restart_agent_with(|cfg| cfg.protected_resets_by_staff = true).await;
    app.wait_until_alive_for(AD).await;
    let (_, page) = person_page_in(&app, &s, AD, &admin_sam).await;
    let (_, done) = act_in(&app, &s, AD, &admin_sam, &page, &[("act", "reset"), ("mode", "generate")]).await;
    assert!(done.contains("PB-0000"), "{done}");
    assert!(binds(dc, &admin_dn, &temporary_password(&done)).await);
    let audit = app.audit().await;
    let rows: Vec<_> = audit
        .iter()
        .filter(|r| r.operation == "helpdesk.reset")
        .map(|r| (r.actor.as_str(), r.outcome_code.as_str()))
        .collect();
    assert_eq!(
        rows.iter().filter(|(a, o)| *a == "staff:hd-senior" && *o == "PB-3002").count()
            + rows.iter().filter(|(a, o)| *a == "staff:hd-ad" && *o == "PB-3002").count(),
        2,
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_protected_group_counts_on_ad_through_nested_groups_too() {
    let dc = dc().await;
    let (outer, inner) = (unique("tier0-"), unique("tier0-inner-"));
    for g in [&outer, &inner] {
        dc.samba_tool(&["group", "add", g]).unwrap();
    }
    let group_dn = |g: &str| format!("CN={g},CN=Users,{}", dc.domain_dn);
    dc.samba_tool(&["group", "addmembers", &outer, &inner]).unwrap();
    let (member_sam, member_dn, _) = person(dc, None).await;
    dc.add_to_group(&member_dn, &group_dn(&inner)).await.unwrap();
    let (other_sam, _, _) = person(dc, None).await;

    let mut cfg = dc.directory_config(AD);
    cfg.protected_groups = vec![group_dn(&outer)];
    let (dir, member) = directory_and_anchor(cfg.clone(), &member_sam).await;
    let refused = dir.refuse_if_protected(&member).await.expect("a member of a nested group is protected");
    assert_eq!(refused.outcome, passback::domain::Outcome::Protected, "{}", refused.raw);
    assert!(refused.raw.contains(&outer), "{}", refused.raw);
    let (_, other) = directory_and_anchor(cfg, &other_sam).await;
    assert!(dir.refuse_if_protected(&other).await.is_none(), "someone outside it is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_service_account_password_never_locks_the_account_and_a_corrected_file_brings_it_back() {
    use passback::sandbox::Delegated;
    let dc = dc().await;
    let sam = unique("svcpw");
    let (account, _) = dc.add_service_account(&sam, &Delegated::ALL).await.unwrap();
    // Someone changes the service account's password in AD, and the new one reaches the agent's
    // file with a typo. (With the previous password AD would not lock: a wrong password that
    // matches one of the last two does not count. A typo does.)
    let changed = "Svc#Changed-2026x";
    dc.samba_tool(&["user", "setpassword", &sam, &format!("--newpassword={changed}")]).unwrap();
    let file = dc.dir.join(format!("{sam}.pw"));
    passback::files::write_private(&file, b"Svc#Changed-2026y").unwrap();
    let mut cfg = dc.directory_config(AD);
    cfg.bind_dn = account.clone();
    cfg.bind_password = None;
    cfg.bind_password_file = Some(file.clone());
    let directory = Directory::new(&cfg).unwrap();

    // Heartbeats every few seconds, far beyond the domain's lockout threshold of 5.
    for _ in 0..8 {
        let error = directory.check().await.unwrap_err();
        assert!(error.contains("wrong password"), "the reason in words: {error}");
    }
    assert!(binds(dc, &account, changed).await, "the service account is not locked out");

    passback::files::write_private(&file, changed.as_bytes()).unwrap();
    assert_eq!(directory.check().await, Ok(()), "the corrected file works without a restart");
    let (person_sam, _, _) = person(dc, None).await;
    let (_, anchor) = directory_and_anchor(dc.directory_config(AD), &person_sam).await;
    assert_eq!(directory.reset(&anchor, &secret("After#Fixing1")).await.outcome, Outcome::Success);
}
