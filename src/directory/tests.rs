//! The directory operations against a real slapd with the ppolicy overlay (see `crate::sandbox`).

use super::*;
use crate::sandbox::{bind_works, Slapd, TestCa};
use secrecy::ExposeSecret;
use std::path::PathBuf;

/// A seeded slapd in its own folder and a `Directory` that uses it as the service account.
struct Fixture {
    slapd: Slapd,
    directory: Directory,
    dir: PathBuf,
}

impl Fixture {
    fn start() -> Fixture {
        crate::tls::install_crypto_provider();
        let dir = crate::files::scratch_dir("directory");
        let ca = TestCa::create(&dir).unwrap();
        let slapd = Slapd::start(&dir.join("slapd"), &ca).unwrap();
        let directory = Directory::new(&slapd.directory_config("corp")).unwrap();
        Fixture { slapd, directory, dir }
    }

    async fn anchor(&self, uid: &str) -> Anchor {
        let users = self.directory.sync_users().await.unwrap();
        users.into_iter().find(|u| u.username == uid).unwrap().anchor
    }

    /// The directory as an agent whose password file holds a wrong service password, with
    /// `pool_size` connections; and that file, to correct.
    fn with_wrong_service_password(&self, pool_size: usize) -> (Directory, std::path::PathBuf) {
        let file = self.dir.join("bind.pw");
        crate::files::write_private(&file, b"not-the-service-password").unwrap();
        let mut cfg = self.slapd.directory_config("corp");
        (cfg.bind_password, cfg.bind_password_file, cfg.pool_size) = (None, Some(file.clone()), pool_size);
        (Directory::new(&cfg).unwrap(), file)
    }

    /// Changes `uid`'s password from the one everyone is seeded with to `new`, which must work;
    /// their anchor and the new password.
    async fn changed_from_initial(&self, uid: &str, new: &str) -> (Anchor, SecretString) {
        let (anchor, new) = (self.anchor(uid).await, pw(new));
        let answer = self.directory.change(&anchor, &self.slapd.user_password, &new).await;
        assert_eq!(answer.outcome, Outcome::Success, "{}", answer.raw);
        (anchor, new)
    }

    async fn bind_works_dn(&self, dn: &str, password: &SecretString) -> bool {
        bind_works(&self.slapd.url, &self.slapd.ca_file, dn, password).await
    }

    async fn bind_works(&self, uid: &str, password: &SecretString) -> bool {
        bind_works(&self.slapd.url, &self.slapd.ca_file, &self.slapd.user_dn(uid), password).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.slapd.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

#[tokio::test]
async fn a_reset_sets_a_password_that_then_works_for_binding() {
    let fx = Fixture::start();
    let alice = fx.anchor("alice").await;
    let new = pw("Brand-New-Pw-2026");

    let answer = fx.directory.reset(&alice, &new).await;

    assert_eq!(answer.outcome, Outcome::Success, "{}", answer.raw);
    assert_eq!(answer.raw, "rc=0");
    assert!(fx.bind_works("alice", &new).await);
    assert!(!fx.bind_works("alice", &fx.slapd.user_password).await);
}

#[tokio::test]
async fn a_too_short_password_is_refused_with_the_real_minimum_length() {
    let fx = Fixture::start();
    let bob = fx.anchor("bob").await;

    let answer = fx.directory.reset(&bob, &pw("Ab1!")).await;

    assert_eq!(answer.outcome, Outcome::TooShort { min_length: Some(8) }, "{}", answer.raw);
    assert_eq!(answer.raw, "rc=19 text=\"Password fails quality checking policy\" ppolicy=6");
    assert_eq!(answer.policy.and_then(|p| p.min_length), Some(8));
    assert!(fx.bind_works("bob", &fx.slapd.user_password).await);
}

#[tokio::test]
async fn a_recently_used_password_is_refused_with_the_real_history_length() {
    let fx = Fixture::start();
    let alice = fx.anchor("alice").await;
    assert_eq!(fx.directory.reset(&alice, &pw("Second-Pw-4711")).await.outcome, Outcome::Success);

    let answer = fx.directory.reset(&alice, &fx.slapd.user_password).await;

    assert_eq!(answer.outcome, Outcome::InHistory { history: Some(3) }, "{}", answer.raw);
    assert!(answer.raw.contains("ppolicy=8"), "{}", answer.raw);
    assert!(!answer.raw.contains(fx.slapd.user_password.expose_secret()));
}

#[tokio::test]
async fn a_second_change_within_the_minimum_age_is_refused_with_the_persons_own_number_and_since_when() {
    let fx = Fixture::start();
    let (carol, first) = fx.changed_from_initial("carol", "Carol-First-1").await;
    let changed_at = time::OffsetDateTime::now_utc().unix_timestamp();

    let answer = fx.directory.change(&carol, &first, &pw("Carol-Second-2")).await;

    // carol's own policy (cn=slow), not the default one, gives the number; pwdChangedTime the time.
    let Outcome::TooYoung { min_age_secs, since: Some(since) } = answer.outcome else {
        panic!("{:?} {}", answer.outcome, answer.raw)
    };
    assert_eq!(min_age_secs, Some(3600));
    assert!((since - changed_at).abs() <= 5, "{since} vs {changed_at}");
    assert!(answer.raw.contains("ppolicy=7"), "{}", answer.raw);
    assert!(fx.bind_works("carol", &first).await);
}

#[tokio::test]
async fn an_unknown_anchor_is_not_found() {
    let fx = Fixture::start();
    let nobody = Anchor::parse(&uuid::Uuid::new_v4().to_string()).unwrap();

    let answer = fx.directory.reset(&nobody, &pw("Whatever-Pw-1")).await;

    assert_eq!(answer.outcome, Outcome::NotFound, "{}", answer.raw);
}

#[tokio::test]
async fn a_password_waits_for_what_comes_before_its_write_and_a_refusal_there_writes_nothing() {
    let fx = Fixture::start();
    let bob = fx.anchor("bob").await;
    // Refused only after the account was read: a write made without waiting would be done by then.
    let late_refusal = || -> BeforeWrite {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err(Answer { outcome: Outcome::Internal, raw: "not recorded".into(), policy: None })
        })
    };

    let (reset, _) =
        fx.directory.reset_seeing_lock(&bob, &pw("Bobs-Reset-Pw-1"), ResetAs::default(), late_refusal()).await;
    let change = fx.directory.change_after(&bob, &fx.slapd.user_password, &pw("Bobs-New-Pw-1"), late_refusal()).await;

    for answer in [reset, change] {
        assert_eq!((answer.outcome, answer.raw.as_str()), (Outcome::Internal, "not recorded"));
    }
    assert!(fx.bind_works("bob", &fx.slapd.user_password).await);
    // Once it is done, the same write is made.
    let (reset, _) =
        fx.directory.reset_seeing_lock(&bob, &pw("Bobs-Reset-Pw-1"), ResetAs::default(), write_now()).await;
    assert_eq!(reset.outcome, Outcome::Success, "{}", reset.raw);
    assert!(fx.bind_works("bob", &pw("Bobs-Reset-Pw-1")).await);
}

#[tokio::test]
async fn a_change_with_a_wrong_old_password_is_refused_and_the_password_stays() {
    let fx = Fixture::start();
    let bob = fx.anchor("bob").await;

    let answer = fx.directory.change(&bob, &pw("Not-The-Old-Pw"), &pw("Bobs-New-Pw-1")).await;

    assert_eq!(answer.outcome, Outcome::OldPasswordWrong, "{}", answer.raw);
    assert!(!answer.raw.contains("Not-The-Old-Pw") && !answer.raw.contains("Bobs-New-Pw-1"));
    assert!(fx.bind_works("bob", &fx.slapd.user_password).await);
}

#[tokio::test]
async fn a_change_with_the_right_old_password_succeeds() {
    let fx = Fixture::start();
    let (_, new) = fx.changed_from_initial("bob", "Bobs-New-Pw-1").await;
    assert!(fx.bind_works("bob", &new).await);
}

#[tokio::test]
async fn sync_lists_everyone_in_scope_once_with_their_anchor_and_mail() {
    let fx = Fixture::start();

    let mut users = fx.directory.sync_users().await.unwrap();

    users.sort_by(|a, b| a.username.cmp(&b.username));
    let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
    for u in &users {
        assert!(uuid::Uuid::parse_str(u.anchor.as_str()).is_ok(), "{}", u.anchor);
        assert!(u.enabled && !u.locked);
    }
    assert_eq!(users[0].email.as_ref().map(|e| e.as_str()), Some("alice@example.org"));
    assert_eq!(users[0].display_name, "Alice Liddell");
    assert_eq!(users[0].dn, fx.slapd.user_dn("alice"));
    assert_eq!(users[3].email, None);

    // Two bases, one inside the other: each person is found once (two entries for one anchor
    // would be refused as ambiguous).
    let mut cfg = fx.slapd.directory_config("corp");
    let inner = fx.slapd.user_dn("alice").split_once(',').map(|(_, parent)| parent.to_uppercase()).unwrap();
    cfg.base_dns.push(inner);
    let twice = Directory::new(&cfg).unwrap();
    assert_eq!(twice.sync_users().await.unwrap().len(), users.len());
    let answer = twice.reset(&users[0].anchor, &pw("Nested-Bases-Pass-1")).await;
    assert_eq!(answer.outcome, Outcome::Success, "{}", answer.raw);
}

#[tokio::test]
async fn the_default_policy_is_read_with_its_real_numbers() {
    let fx = Fixture::start();

    assert_eq!(fx.directory.check().await, Ok(()));
    let policy = fx.directory.policy().await.unwrap();

    assert_eq!(
        policy,
        PolicyFacts {
            min_length: Some(8),
            history: Some(3),
            min_age_secs: Some(0),
            max_age_secs: None,
            complexity: Some(false),
            lockout_threshold: Some(5),
            lockout_duration_secs: Some(900),
            history_on_reset: Some(true),
        }
    );
}

#[tokio::test]
async fn a_refused_service_account_is_a_rights_problem_and_not_reachable() {
    let fx = Fixture::start();
    let alice = fx.anchor("alice").await;
    let mut cfg = fx.slapd.directory_config("corp");
    cfg.bind_password = Some(pw("wrong-service-password"));
    let directory = Directory::new(&cfg).unwrap();

    let answer = directory.reset(&alice, &pw("Brand-New-Pw-2026")).await;

    assert_eq!(answer.outcome, Outcome::InsufficientRights, "{}", answer.raw);
    assert!(answer.raw.starts_with("bind rc=49"), "{}", answer.raw);
    assert!(directory.check().await.is_err());
}

#[tokio::test]
async fn a_directory_that_stopped_is_unreachable() {
    let mut fx = Fixture::start();
    let alice = fx.anchor("alice").await;
    fx.slapd.process.stop();

    let answer = fx.directory.reset(&alice, &pw("Brand-New-Pw-2026")).await;

    assert_eq!(answer.outcome, Outcome::DirectoryUnreachable, "{}", answer.raw);
    assert!(fx.directory.check().await.is_err());
}

#[test]
fn directory_operations_can_run_on_any_runtime_thread() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Send + Sync>() {}
    sync::<Directory>();
    let d: Option<&Directory> = None;
    if let Some(d) = d {
        let a = Anchor::parse("x").unwrap();
        let p = pw("x");
        send(&d.reset(&a, &p));
        send(&d.change(&a, &p, &p));
        send(&d.sync_users());
        send(&d.check());
        send(&d.policy());
    }
}

#[tokio::test]
async fn a_locked_account_is_unlocked_and_binds_again() {
    let fx = Fixture::start();
    let bob = fx.anchor("bob").await;
    for _ in 0..5 {
        assert!(!fx.bind_works("bob", &pw("wrong-guess")).await);
    }
    assert!(!fx.bind_works("bob", &fx.slapd.user_password).await, "locked after five failures");

    let answer = fx.directory.change_account(&bob, AccountChange::Unlock).await;

    assert_eq!(answer.outcome, Outcome::Success, "{}", answer.raw);
    assert!(fx.bind_works("bob", &fx.slapd.user_password).await);
    let again = fx.directory.change_account(&bob, AccountChange::Unlock).await;
    assert_eq!(again.outcome, Outcome::Success, "unlocking an unlocked account is fine: {}", again.raw);
}

#[tokio::test]
async fn must_change_at_next_sign_in_is_set_and_cleared() {
    let fx = Fixture::start();
    let carol = fx.anchor("carol").await;
    let pw_reset = |fx: &Fixture| {
        let (url, ca, admin, admin_pw, dn) = (
            fx.slapd.url.clone(),
            fx.slapd.ca_file.clone(),
            fx.slapd.admin_dn.clone(),
            fx.slapd.admin_password.clone(),
            fx.slapd.user_dn("carol"),
        );
        async move {
            let (mut ldap, _) = crate::sandbox::process::connect_as(&url, &ca, &admin, &admin_pw).await.unwrap();
            let (entries, _) = ldap
                .search(&dn, ldap3::Scope::Base, "(objectClass=*)", vec!["pwdReset"])
                .await
                .unwrap()
                .success()
                .unwrap();
            let entry = ldap3::SearchEntry::construct(entries.into_iter().next().unwrap());
            entry.attrs.get("pwdReset").and_then(|v| v.first().cloned())
        }
    };

    let set = fx.directory.change_account(&carol, AccountChange::MustChange(true)).await;
    assert_eq!(set.outcome, Outcome::Success, "{}", set.raw);
    assert_eq!(pw_reset(&fx).await.as_deref(), Some("TRUE"));

    let cleared = fx.directory.change_account(&carol, AccountChange::MustChange(false)).await;
    assert_eq!(cleared.outcome, Outcome::Success, "{}", cleared.raw);
    assert_eq!(pw_reset(&fx).await, None);
    // The manage right on these attributes did not make the service account a password
    // administrator: the policy still applies to its resets.
    assert!(matches!(fx.directory.reset(&carol, &pw("short")).await.outcome, Outcome::TooShort { .. }));
}

#[tokio::test]
async fn a_refused_service_password_is_not_tried_again_and_a_corrected_file_works_without_a_restart() {
    let fx = Fixture::start();
    let (directory, file) = fx.with_wrong_service_password(2);

    // Heartbeats ask again and again; the directory locks the account after 5 failures.
    for _ in 0..8 {
        let error = directory.check().await.unwrap_err();
        assert!(error.contains("rc=49"), "{error}");
    }
    crate::files::write_private(&file, fx.slapd.service_password.expose_secret().as_bytes()).unwrap();

    assert_eq!(directory.check().await, Ok(()), "not locked out, and the corrected file is read");
    assert!(fx.bind_works_dn(&fx.slapd.service_dn, &fx.slapd.service_password).await);
    let alice = fx.anchor("alice").await;
    assert_eq!(directory.reset(&alice, &pw("After-Fixing-It-1")).await.outcome, Outcome::Success);
}

#[tokio::test]
async fn a_password_changed_today_can_be_reset_as_forgotten_under_quality_and_history_but_not_changed_again() {
    // carol's policy (cn=slow) has a minimum age of one hour.
    let fx = Fixture::start();
    let (carol, today) = fx.changed_from_initial("carol", "Changed-Today-1").await;
    let again = fx.directory.change(&carol, &today, &pw("Changed-Again-2")).await;
    assert!(
        matches!(again.outcome, Outcome::TooYoung { min_age_secs: Some(3600), since: Some(_) }),
        "a change still waits: {:?} {}",
        again.outcome,
        again.raw
    );

    // Forgotten the same day: the directory's quality and history rules apply, its age does not.
    let short = fx.directory.reset(&carol, &pw("Ab1!")).await;
    assert_eq!(short.outcome, Outcome::TooShort { min_length: Some(8) }, "{}", short.raw);
    let reused = fx.directory.reset(&carol, &fx.slapd.user_password).await;
    assert_eq!(reused.outcome, Outcome::InHistory { history: Some(3) }, "{}", reused.raw);
    let state = crate::domain::AccountState::from_raw(&fx.directory.inspect(&carol).await.raw).unwrap();
    assert!(!state.must_change, "a refused reset leaves no pwdReset behind");

    let forgotten = pw("Forgot-It-Again-2");
    let reset = fx.directory.reset(&carol, &forgotten).await;
    assert_eq!(reset.outcome, Outcome::Success, "{}", reset.raw);
    assert!(reset.raw.contains("minimum age not applied"), "{}", reset.raw);
    assert!(fx.bind_works("carol", &forgotten).await);
    let state = crate::domain::AccountState::from_raw(&fx.directory.inspect(&carol).await.raw).unwrap();
    assert!(!state.must_change, "not asked to change it at once");
    assert_eq!(state.policy.and_then(|p| p.min_age_secs), Some(3600), "carol's own policy is read");
}

#[tokio::test]
async fn a_locked_service_account_is_named_as_such_and_tried_again_later_not_never() {
    let fx = Fixture::start();
    // Someone else locks the service account out (the default policy: five wrong passwords).
    for _ in 0..6 {
        assert!(!fx.bind_works_dn(&fx.slapd.service_dn, &pw("not-the-service-password")).await);
    }
    let directory = Directory::new(&fx.slapd.directory_config("corp")).unwrap();

    let first = directory.check().await.unwrap_err();
    assert!(first.contains("locked out"), "{first}");
    // The right password of a locked account: an administrator's unlock fixes it, so it is tried
    // again after a wait (no new failure is counted meanwhile), never given up on.
    let second = directory.check().await.unwrap_err();
    assert!(second.contains("tried again in"), "{second}");
}

#[tokio::test]
async fn many_connections_opened_at_once_try_a_wrong_service_password_once_and_lock_nothing() {
    let fx = Fixture::start();
    let (directory, file) = fx.with_wrong_service_password(10);

    // Ten connections at once (more than the 5 failures that lock the account): they are opened
    // side by side, but bind in turn, and after the first refusal none tries again.
    let checks = futures_util::future::join_all((0..10).map(|_| directory.check())).await;
    assert!(checks.iter().all(|c| c.as_ref().is_err_and(|e| e.contains("rc=49"))), "{checks:?}");
    crate::files::write_private(&file, fx.slapd.service_password.expose_secret().as_bytes()).unwrap();
    assert_eq!(directory.check().await, Ok(()), "not locked out");
}
