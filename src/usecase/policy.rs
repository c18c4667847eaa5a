//! The portal's own checks of a new password, made before anything is sent to a directory (whose
//! own rules still decide after them): banned terms and names (`domain::banned`), and passwords
//! known from data breaches (`crate::breached`). The organisation's list and these settings come
//! from `[password_policy]`, reloaded without a restart (see [`watch`]).

use super::{Host, Target};
use crate::breached::{self, OfflineFile};
use crate::config::{BreachedMode, PasswordPolicyConfig, PolicyProfile, PortalConfig};
use crate::domain::banned::{self, BannedTerms};
use crate::domain::nist;
use crate::domain::{Guessable, Outcome, UserKind};
use crate::store;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

/// The global list shipped with passback (see `data/README.md`).
static GLOBAL: LazyLock<BannedTerms> = LazyLock::new(|| {
    BannedTerms::new(include_str!("../../data/banned-global.txt").lines().filter(|l| !l.starts_with('#')))
});

/// Passwords up to this many characters are checked against the banned terms on the async
/// worker that asked; longer ones on the blocking pool.
const CHECKED_IN_PLACE: usize = 64;

/// The rules in force, and how lookups of breached passwords have gone.
pub struct PasswordRules {
    current: RwLock<Arc<Rules>>,
    client: reqwest::Client,
    lookups: Mutex<Lookups>,
}

/// One set of settings, with the organisation's list normalised and the offline file open.
pub struct Rules {
    pub cfg: PasswordPolicyConfig,
    custom: BannedTerms,
    offline: Option<OfflineFile>,
}

/// How lookups of breached passwords through the range API have gone since the start, for the
/// health page.
#[derive(Debug, Clone)]
pub struct Lookups {
    pub answered: u64,
    pub failed: u64,
    /// The last failure: when (Unix seconds), and why.
    pub last_failure: Option<(i64, String)>,
    /// The last lookup was answered (true until one fails).
    pub last_ok: bool,
}

/// Whose password it is, as the rules need to know it.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    /// Names the password may not contain (user name, display name).
    pub names: Vec<String>,
    /// The password is used with a second factor (SP 800-63B-4 then asks for 8 characters, not
    /// 15): staff, who always sign in with one, or everyone where the organisation says its
    /// sign-ins ask for one (`password_policy.multi_factor_sign_in`).
    pub second_factor: bool,
}

/// One rule's verdict on a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Which rule (`length`, `names`, `banned`, `breached`).
    pub rule: &'static str,
    pub passed: bool,
    /// What it found, in words for an administrator (never the password).
    pub detail: String,
}

/// What the rules say of a password: each rule's verdict, and the refusal (the first rule that
/// refused it), if any.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub verdicts: Vec<Verdict>,
    pub refusal: Option<Outcome>,
}

impl Rules {
    fn load(cfg: &PasswordPolicyConfig) -> anyhow::Result<Rules> {
        cfg.validate()?;
        let offline = match (cfg.breached, &cfg.breached_file) {
            (BreachedMode::Offline, Some(path)) => Some(OfflineFile::open(path)?),
            _ => None,
        };
        Ok(Rules { cfg: cfg.clone(), custom: BannedTerms::new(&cfg.banned), offline })
    }

    /// How many terms the organisation's own list holds.
    pub fn custom_terms(&self) -> usize {
        self.custom.len()
    }
}

impl PasswordRules {
    pub fn new(cfg: &PasswordPolicyConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*crate::tls::client_config(cfg.breached_ca_file.as_deref())?).clone())
            // A redirect could lead the prefix elsewhere, or to plain HTTP.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(PasswordRules { current: RwLock::new(Arc::new(Rules::load(cfg)?)), client, lookups: Mutex::default() })
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<Rules> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `cfg` in force if it differs from what is, or if `anew` (the offline file is opened
    /// again: it may have been rebuilt in its place): whether it did. Settings that cannot be
    /// used (a list too long, an offline file that cannot be read) leave the rules as they were.
    pub fn reload(&self, cfg: &PasswordPolicyConfig, anew: bool) -> anyhow::Result<bool> {
        if self.current().cfg == *cfg && !anew {
            return Ok(false);
        }
        let rules = Arc::new(Rules::load(cfg)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = rules;
        Ok(true)
    }

    pub fn lookups(&self) -> Lookups {
        self.lookups.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every rule's verdict on `password` for `owner`. Unless `every`, it stops at the first
    /// refusal (so that a password already refused is not looked up).
    pub async fn check(&self, password: &SecretString, owner: Owner, now: i64, every: bool) -> Checked {
        let rules = self.current();
        let checked = self.check_here(&rules, password, owner, every).await;
        self.check_breached(&rules, password, now, every, checked).await
    }

    /// The rules checked in the portal alone: length (SP 800-63B-4), names, banned terms. No
    /// lookup of breached passwords (see [`Self::check`]).
    pub async fn check_local(&self, password: &SecretString, owner: Owner) -> Checked {
        self.check_here(&self.current(), password, owner, true).await
    }

    async fn check_here(&self, rules: &Arc<Rules>, password: &SecretString, owner: Owner, every: bool) -> Checked {
        let mut checked = Checked::default();
        if rules.cfg.profile == PolicyProfile::Nist80063b4 {
            let min = nist::min_length(owner.second_factor);
            let length = nist::length(password.expose_secret());
            let passed = length >= usize::try_from(min).unwrap_or(usize::MAX);
            let used = if owner.second_factor { "with a second factor" } else { "alone" };
            let detail =
                format!("{length} characters (after NFKC); SP 800-63B-4 asks for {min} for a password used {used}");
            checked.add(Verdict { rule: "length", passed, detail });
            if !passed {
                checked.refuse(Outcome::TooShort { min_length: Some(min) });
                if !every {
                    return checked;
                }
            }
        }
        // Compared as SP 800-63B-4 says, after NFKC: a full-width or ligature spelling of a
        // banned term is that term. A few pairs of letters are looked up at each place of the
        // password (tens of microseconds; about a millisecond for a 64-character one made of
        // the commonest pairs): on the async worker, unless the password is longer than that.
        let found = {
            let rules = rules.clone();
            let password = nist::normalised(password.expose_secret());
            let names = owner.names;
            let long = password.chars().count() > CHECKED_IN_PLACE;
            let check = move || {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let lists = [&*GLOBAL, &rules.custom];
                banned::check(&password, &lists, &names, rules.cfg.organisation_name.as_deref())
            };
            if long {
                tokio::task::spawn_blocking(check).await
            } else {
                Ok(check())
            }
        };
        let Ok(found) = found else {
            checked.refuse(Outcome::Internal);
            return checked;
        };
        let named = found.name.is_some();
        checked.add(Verdict {
            rule: "names",
            passed: !named,
            detail: match &found.name {
                Some(n) => format!("contains the person's name {n:?}"),
                None => "contains none of the person's names".into(),
            },
        });
        if named {
            checked.refuse(Outcome::ContainsUserName);
        }
        let org = rules.cfg.organisation_name.clone().unwrap_or_default();
        let weak = found.score < banned::MIN_SCORE;
        checked.add(Verdict {
            rule: "banned",
            passed: !found.organisation && !weak,
            detail: if found.organisation {
                format!("contains the organisation's name {org:?}")
            } else {
                format!(
                    "{} points of {} needed; banned terms found: {}",
                    found.score,
                    banned::MIN_SCORE,
                    if found.terms.is_empty() { "none".into() } else { found.terms.join(", ") }
                )
            },
        });
        if found.organisation {
            checked.refuse(Outcome::Banned(Box::new(Guessable { terms: vec![org], score: None })));
        } else if weak {
            checked.refuse(Outcome::Banned(Box::new(Guessable {
                terms: found.terms,
                score: u32::try_from(found.score).ok(),
            })));
        }
        checked
    }

    async fn check_breached(
        &self,
        rules: &Rules,
        password: &SecretString,
        now: i64,
        every: bool,
        mut checked: Checked,
    ) -> Checked {
        if checked.refusal.is_some() && !every {
            return checked;
        }
        if let Some(verdict) = self.breached(rules, password, now).await {
            let (passed, refusal) = verdict;
            let detail = match &refusal {
                Some(Outcome::Breached { count: Some(n) }) => format!("seen in breaches {n} times"),
                Some(Outcome::Breached { count: None }) => "among the breached passwords".into(),
                Some(_) => "could not be looked up, and unchecked passwords are refused".into(),
                None if passed => "not among the breached passwords".into(),
                None => "could not be looked up; accepted unchecked".into(),
            };
            checked.add(Verdict { rule: "breached", passed: refusal.is_none(), detail });
            if let Some(r) = refusal {
                checked.refuse(r);
            }
        }
        checked
    }

    /// The breached-password lookup, if one is set: whether it was checked and found clean, and
    /// the refusal it makes.
    async fn breached(&self, rules: &Rules, password: &SecretString, now: i64) -> Option<(bool, Option<Outcome>)> {
        // As typed and, where it differs, as compared (NFKC): a full-width copy of a breached
        // password is that password, and is stored and checked as it.
        let normalised = nist::normalised(password.expose_secret());
        let mut hashes = vec![breached::sha1(password)];
        if normalised.as_str() != password.expose_secret() {
            hashes.push(breached::sha1_of(&normalised));
        }
        let mut verdict = None;
        for hash in &hashes {
            match self.lookup(rules, hash, now).await? {
                refused @ (_, Some(_)) => return Some(refused),
                clean @ (true, None) => {
                    verdict.get_or_insert(clean);
                }
                unchecked => verdict = Some(unchecked),
            }
        }
        verdict
    }

    /// One lookup of `hash`, the way the settings say (`None`: lookups are off).
    async fn lookup(&self, rules: &Rules, hash: &[u8; 20], now: i64) -> Option<(bool, Option<Outcome>)> {
        match rules.cfg.breached {
            BreachedMode::Off => None,
            BreachedMode::Offline => {
                let file = rules.offline.as_ref()?;
                Some(match file.contains(hash) {
                    Ok(found) => {
                        self.answered();
                        if found {
                            (false, Some(Outcome::Breached { count: None }))
                        } else {
                            (true, None)
                        }
                    }
                    Err(e) => self.failed(rules, now, format!("reading the breached-password file: {e}")),
                })
            }
            BreachedMode::Online => {
                let timeout = Duration::from_millis(rules.cfg.breached_timeout_ms);
                Some(match breached::online(&self.client, &rules.cfg.breached_url, hash, timeout).await {
                    Ok(count) => {
                        self.answered();
                        match count {
                            Some(n) => (false, Some(Outcome::Breached { count: Some(n) })),
                            None => (true, None),
                        }
                    }
                    Err(e) => self.failed(rules, now, format!("{e:#}")),
                })
            }
        }
    }

    /// After a failure that blocks new passwords (fail-closed), whether lookups work again: one
    /// lookup of a random hash (no password's), so that the health page does not stay red until
    /// someone next chooses a password.
    pub async fn probe_after_failure(&self, now: i64) {
        let rules = self.current();
        if self.lookups().last_ok || rules.cfg.breached_fail_open {
            return;
        }
        let random: [u8; 20] = rand::random();
        let _ = self.lookup(&rules, &random, now).await;
    }

    fn answered(&self) {
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        lookups.answered += 1;
        lookups.last_ok = true;
    }

    fn failed(&self, rules: &Rules, now: i64, why: String) -> (bool, Option<Outcome>) {
        tracing::warn!(error = %why, "a breached-password lookup failed");
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        lookups.failed += 1;
        lookups.last_failure = Some((now, why));
        lookups.last_ok = false;
        (false, (!rules.cfg.breached_fail_open).then_some(Outcome::BreachedUnchecked))
    }
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups { answered: 0, failed: 0, last_failure: None, last_ok: true }
    }
}

impl Checked {
    fn add(&mut self, v: Verdict) {
        self.verdicts.push(v);
    }

    fn refuse(&mut self, outcome: Outcome) {
        self.refusal.get_or_insert(outcome);
    }
}

/// Whose password it is: their names, and whether the organisation's sign-ins ask for a second
/// factor with it. (An authenticator app registered here does not count: it proves who someone
/// is to reset a password, it does not guard the places where the password is used.)
pub async fn owner_of(st: &Host, target: &Target) -> anyhow::Result<Owner> {
    let second_factor = st.rules.current().cfg.multi_factor_sign_in;
    Ok(Owner { names: names_of(st, target).await?, second_factor })
}

/// The names a person's password may not contain: their user name and display name (read from
/// the database for a target kept in a session saved before the display name was).
pub async fn names_of(st: &Host, target: &Target) -> anyhow::Result<Vec<String>> {
    let display = if !target.display_name.is_empty() {
        Some(target.display_name.clone())
    } else if target.kind == UserKind::CloudOnly {
        store::cloud::get(&st.db, &target.anchor).await?.map(|u| u.display_name)
    } else {
        store::users::get(&st.db, &target.directory, &target.anchor).await?.map(|u| u.display_name)
    };
    Ok([Some(target.username.clone()), display].into_iter().flatten().collect())
}

/// The portal's refusal of `new` for `target`, if its rules refuse it.
pub async fn refusal(st: &Host, target: &Target, new: &SecretString) -> anyhow::Result<Option<Outcome>> {
    let owner = owner_of(st, target).await?;
    Ok(st.rules.check(new, owner, st.clock.now(), false).await.refusal)
}

/// How often `serve` looks whether its configuration file changed.
pub const WATCH_EVERY: Duration = Duration::from_secs(3);

/// Reloads `[password_policy]` from `file` when it changes (looked at `every` so often) or on
/// SIGHUP, which also opens the offline breached-password file again. Other sections are read
/// at the start only; a file that does not load, or settings that cannot be used, are logged and
/// leave the rules as they were.
pub async fn watch(rules: Arc<PasswordRules>, file: PathBuf, every: Duration) {
    let modified = |f: &PathBuf| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    // Read once at the first tick as well: a change made while the portal started is not missed
    // (putting in force what already is changes nothing).
    let mut seen = None;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut every = tokio::time::interval(every);
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let asked = tokio::select! {
            _ = every.tick() => false,
            got = hangup => {
                if got.is_none() {
                    // The signal stream ended: the timer alone from now on.
                    hangups = None;
                }
                got.is_some()
            }
        };
        let now = modified(&file);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        let loaded = PortalConfig::load(Some(&file)).and_then(|cfg| rules.reload(&cfg.password_policy, asked));
        match loaded {
            Ok(true) => tracing::info!(
                file = %file.display(),
                custom_terms = rules.current().custom_terms(),
                "password policy reloaded"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(file = %file.display(), error = %format!("{e:#}"), "password policy not reloaded")
            }
        }
    }
}

/// `passback password check`: every rule's verdict on `password`, written nowhere. With `person`
/// (a directory id and a user name or address, as synced), their names count, and so do the
/// length and complexity their directory last reported; a directory's history and minimum age
/// can only be known by trying.
pub async fn check_candidate(
    cfg: &PortalConfig,
    db: &store::Db,
    person: Option<(&str, &str)>,
    password: &SecretString,
    now: i64,
) -> anyhow::Result<Checked> {
    let rules = PasswordRules::new(&cfg.password_policy)?;
    let mut owner = Owner { second_factor: cfg.password_policy.multi_factor_sign_in, ..Owner::default() };
    let mut facts = None;
    if let Some((directory, login)) = person {
        let found: Vec<_> =
            store::users::find_by_login(db, login).await?.into_iter().filter(|u| u.directory == directory).collect();
        let [user] = found.as_slice() else {
            anyhow::bail!("{login:?} is not one person of directory {directory:?} in the portal's database");
        };
        let names = vec![user.username.clone(), user.display_name.clone()];
        owner = Owner { names, second_factor: cfg.password_policy.multi_factor_sign_in };
        facts = store::users::policy(db, directory)
            .await?
            .and_then(|json| serde_json::from_str::<crate::domain::PolicyFacts>(&json).ok());
    }
    let mut checked = rules.check(password, owner, now, true).await;
    if let Some(facts) = facts {
        let length = password.expose_secret().chars().count();
        if let Some(min) = facts.min_length {
            let passed = length >= usize::try_from(min).unwrap_or(usize::MAX);
            let detail = format!("{length} characters; the directory asks for at least {min}");
            checked.add(Verdict { rule: "length", passed, detail });
            if !passed {
                checked.refuse(Outcome::TooShort { min_length: Some(min) });
            }
        }
        if facts.complexity == Some(true) {
            let passed = crate::domain::meets_ad_complexity(password.expose_secret(), person.map_or("", |p| p.1));
            let detail = "three kinds of character of five, and not the account's name".to_string();
            checked.add(Verdict { rule: "complexity", passed, detail });
            if !passed {
                checked.refuse(Outcome::NotComplex);
            }
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_organisations_list_is_reloaded_when_its_file_changes_and_a_bad_one_is_not_taken() {
        let dir = crate::files::scratch_dir("policy-reload");
        let file = dir.join("portal.toml");
        let write = |terms: &str| {
            let text = format!("mode = \"development\"\n[password_policy]\nbanned = [{terms}]\n");
            std::fs::write(&file, text).unwrap();
        };
        let refused = |rules: &PasswordRules| {
            let rules = rules.current();
            banned::check("Fabrikam1", &[&GLOBAL, &rules.custom], &[], None).refused()
        };
        write("\"contoso\"");
        let cfg = PortalConfig::load(Some(&file)).unwrap();
        let rules = Arc::new(PasswordRules::new(&cfg.password_policy).unwrap());
        assert!(!refused(&rules));
        let watching = tokio::spawn(watch(rules.clone(), file.clone(), Duration::from_millis(50)));

        write("\"contoso\", \"fabrikam\"");
        for _ in 0..100 {
            if rules.current().custom_terms() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(rules.current().custom_terms(), 2);
        assert!(refused(&rules), "fabrikam and 1 character: 2 points");

        // SP 800-63B-4 without the breached check it asks for is refused, not taken half-applied.
        let nist = PasswordPolicyConfig { profile: PolicyProfile::Nist80063b4, ..Default::default() };
        assert!(rules.reload(&nist, false).is_err());
        // A term too short: the file is refused, and the rules in force stay.
        write("\"abc\"");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rules.current().custom_terms(), 2);
        watching.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
