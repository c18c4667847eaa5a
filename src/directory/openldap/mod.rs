//! OpenLDAP with the ppolicy overlay: find a person by `entryUUID`, set passwords with the
//! Password Modify extended operation (RFC 3062) so that the directory's own policy decides,
//! read `pwdPolicy` entries, and list the people in scope for the portal.

mod values;

use super::answer::Failure;
use super::answer::{self, PPOLICY_OID};
use super::pool::{Conn, Pool, Retry};
use super::Answer;
use crate::config::DirectoryConfig;
use crate::domain::{Anchor, EmailAddress, Outcome, PolicyFacts};
use crate::domain::{SyncMark, SyncedUser};
use ldap3::controls::RawControl;
use ldap3::exop::PasswordModify;
use ldap3::{ldap_escape, LdapError, Scope, SearchEntry};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, HashSet};
use values::*;

/// ppolicy's mark of an account locked by an administrator for good (no lockout duration).
const PERMANENT_LOCK: &str = "000001010000Z";
/// The Relax Rules control (draft-zeilenga-ldap-relax), which OpenLDAP implements.
pub(super) const RELAX_OID: &str = "1.3.6.1.4.1.4203.666.5.12";
const POLICY_ATTRS: [&str; 9] = [
    "pwdMinLength",
    "pwdInHistory",
    "pwdMinAge",
    "pwdMaxAge",
    "pwdCheckQuality",
    "pwdCheckModule",
    "pwdLockout",
    "pwdMaxFailure",
    "pwdLockoutDuration",
];
const SYNC_ATTRS: [&str; 12] = [
    "entryUUID",
    "pwdChangedTime",
    "pwdReset",
    "uid",
    "mail",
    "mobile",
    "displayName",
    "cn",
    "pwdAccountLockedTime",
    "pwdPolicySubentry",
    "modifyTimestamp",
    // Present where the memberof overlay runs.
    "memberOf",
];

pub(crate) struct OpenLdap {
    pool: Pool,
    base_dns: Vec<String>,
    /// `(objectClass=inetOrgPerson)` ANDed with the configured filter.
    person_filter: String,
    policy_dn: Option<String>,
    /// Policy entries read lately, by DN: a form, its refusal and a reset read the same one.
    policies: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, PolicyFacts)>>,
}

/// The entry a password operation applies to.
struct Person {
    dn: String,
    policy_subentry: Option<String>,
    /// Locked by an administrator for good: ppolicy's way of disabling an account.
    disabled: bool,
    /// `pwdReset` is TRUE: the password must be changed at the next sign-in.
    must_change: bool,
    /// `pwdChangedTime`, as Unix seconds.
    changed_at: Option<i64>,
    /// `pwdAccountLockedTime` is there, whatever its value (a lock that ran out stays until
    /// the next bind).
    lock_seen: bool,
}

/// How long a policy entry read is reused.
const POLICY_CACHE: std::time::Duration = std::time::Duration::from_secs(60);

impl OpenLdap {
    /// The directory behind `pool`; a person is an `inetOrgPerson` that meets `extra` too.
    pub(crate) fn new(cfg: &DirectoryConfig, pool: Pool, extra: &str) -> OpenLdap {
        let person_filter = format!("(&(objectClass=inetOrgPerson){extra})");
        let (base_dns, policy_dn) = (cfg.base_dns.clone(), cfg.policy_dn.clone());
        OpenLdap { pool, base_dns, person_filter, policy_dn, policies: Default::default() }
    }

    /// Binds (or reuses a bound connection) and asks who we are: proves the directory answers.
    pub(crate) async fn check(&self) -> Result<(), Failure> {
        self.pool
            .run(Retry::Safe, |mut c: Conn| async move { c.op().extended(ldap3::exop::WhoAmI).await?.success() })
            .await
            .map(|_| ())
    }

    /// Sets the password (a reset when `old` is `None`, else a change the directory checks
    /// `old` for), and whether the entry carried a lock (`pwdAccountLockedTime`)
    /// when it was read just before the write (without one, a password set leaves none). A reset
    /// that must be checked against the history (`keep_history`) is written only once the
    /// directory has shown that ppolicy checks this account's writes of the person's password
    /// (see [`Self::checked_like_a_person`]). The entry is read while `before` is done; nothing
    /// is written until it is.
    pub(crate) async fn set_password_as(
        &self,
        anchor: &Anchor,
        old: Option<&SecretString>,
        new: &SecretString,
        keep_history: bool,
        before: super::BeforeWrite,
    ) -> (Answer, bool) {
        let (person, before) = tokio::join!(self.find_enabled(anchor, old.is_some()), before);
        let person = match person {
            Ok(person) => person,
            Err(answer) => return (answer, true),
        };
        if let Err(answer) = before {
            return (answer, person.lock_seen);
        }
        if keep_history && old.is_none() {
            if let Err(answer) = self.checked_like_a_person(&person.dn).await {
                return (answer, person.lock_seen);
            }
        }
        (self.write_password(&person, old, new).await, person.lock_seen)
    }

    /// Whether ppolicy checks this service account's writes of `dn`'s password (quality and
    /// history) as it checks a person's own: not where the account *manages* `userPassword` (a
    /// password administrator, whose writes ppolicy lets through unchecked). The directory itself
    /// is asked, and nothing is written either way: a one-character password under an assertion
    /// that never holds. ppolicy refuses it for a person (too short, or the old password is
    /// missing) before the assertion is looked at; for an administrator it reaches the database,
    /// whose assertion check refuses it (122). Any other answer is taken as "not checked".
    async fn checked_like_a_person(&self, dn: &str) -> Result<(), Answer> {
        let result = self
            .pool
            .run(Retry::Safe, |mut c: Conn| {
                let m = ldap3::Mod::Replace("userPassword", HashSet::from(["x"]));
                let never = ldap3::controls::Assertion::new("(objectClass=passbackNeverThis)");
                let never = RawControl { crit: true, ..never };
                async move { c.op().with_controls(vec![never, ppolicy_request()]).modify(dn, vec![m]).await }
            })
            .await;
        let res = match result {
            Ok(res) => res,
            Err(f) => return Err(answer::failure(&f)),
        };
        let refused_by_ppolicy = ppolicy_error(&res);
        match (res.rc, refused_by_ppolicy) {
            (19, Some(_)) | (50, Some(4)) => Ok(()),
            _ => Err(Answer {
                outcome: Outcome::InsufficientRights,
                raw: format!(
                    "a reset in place of the person's change needs the password history checked, and ppolicy does \
                     not check this service account's writes of {dn} (it manages userPassword there, or the policy \
                     has no rule a one-character password breaks; probe: {}): not written",
                    answer::raw(res.rc, &res.text, refused_by_ppolicy)
                ),
                policy: None,
            }),
        }
    }

    async fn write_password(&self, person: &Person, old: Option<&SecretString>, new: &SecretString) -> Answer {
        // ppolicy's minimum age is for a person's own changes; it applies to this service account's
        // resets too (it is not a password administrator, so that quality and history apply).
        // ppolicy skips the age check for an entry marked pwdReset, and a change that is not an
        // administrator's removes that mark: so a forgotten password set today is marked first.
        let unmark = old.is_none() && self.too_young_to_reset(person).await;
        if unmark {
            if let Err(answer) = self.mark_reset(&person.dn, true).await {
                return answer;
            }
        }
        let dn = person.dn.as_str();
        let old_pass = old.map(|s| s.expose_secret());
        let new_pass = new.expose_secret();
        let result = self
            .pool
            .run(Retry::UnlessSent, |mut c: Conn| async move {
                let request = PasswordModify { user_id: Some(dn), old_pass, new_pass: Some(new_pass) };
                c.op().with_controls(ppolicy_request()).extended(request).await
            })
            .await;
        let ldap3::result::ExopResult(_, res) = match result {
            Ok(r) => r,
            Err(f) => {
                // Unknown whether it was written. Either way the mark may go: a change that was
                // written removed it already.
                // (Should the agent stop between the mark and the write, the mark stays: the person
                // is asked for a new password at the next sign-in, which is safe.)
                let mut answer = answer::failure(&f);
                if unmark {
                    if let Err(a) = self.mark_reset(&person.dn, false).await {
                        answer.raw = format!("{}; removing pwdReset again failed: {}", answer.raw, a.raw);
                    }
                }
                return answer;
            }
        };

        let ppolicy = ppolicy_error(&res);
        let outcome = answer::openldap(res.rc, &res.text, ppolicy);
        let mut raw = answer::raw(res.rc, &res.text, ppolicy);
        if unmark {
            raw = format!("{raw}; minimum age not applied to a reset (pwdReset set first)");
            if res.rc != 0 {
                // Refused: the mark goes again, or the person would have to change at sign-in.
                if let Err(a) = self.mark_reset(&person.dn, false).await {
                    raw = format!("{raw}; removing pwdReset again failed: {}", a.raw);
                }
            }
        }
        // A refusal by a rule tells when the password was last changed and what the person's
        // policy is: only for the right old password. slapd 2.5 checks the old password first,
        // but the order of ppolicy's checks is no documented promise (and differs between
        // versions), so a refusal of a change is told only once a bind of its own proved the old
        // password (counted as a failure where it is wrong, as a wrong old password should be).
        if let (Some(old), true) = (old, outcome.is_policy_rule()) {
            let proof = match self.pool.bind_as(&person.dn, old, vec![ppolicy_request()]).await {
                Ok(res) => {
                    let ppolicy = ppolicy_error(&res);
                    (answer::openldap_bind(res.rc, ppolicy), answer::raw(res.rc, &res.text, ppolicy))
                }
                Err(f) => {
                    let failed = answer::failure(&f);
                    (failed.outcome, failed.raw)
                }
            };
            if !matches!(proof.0, Outcome::Success | Outcome::MustChange | Outcome::PasswordExpired) {
                let raw = format!("{raw}; the old password, checked by a bind: {}", proof.1);
                return Answer { outcome: proof.0, raw, policy: None };
            }
        }
        // With a password set, the policy it now lives under (for when it expires); with a
        // refusal by a rule, the policy that refused it.
        if !outcome.is_policy_rule() && !outcome.is_success() {
            return Answer { outcome, raw, policy: None };
        }
        let policy_dn = person.policy_subentry.as_deref().or(self.policy_dn.as_deref());
        let policy = match policy_dn {
            Some(dn) => self.read_policy(dn).await,
            None => None,
        };
        if outcome.is_success() {
            return Answer { outcome, raw, policy: policy.map(Box::new) };
        }
        let outcome = answer::with_since(answer::with_policy(outcome, policy.as_ref()), person.changed_at);
        Answer { outcome, raw, policy: policy.map(Box::new) }
    }

    /// Checks a person's password by binding as them (sign-in), asking ppolicy why a bind fails
    /// or whether the password must be changed first.
    pub(crate) async fn verify(&self, anchor: &Anchor, password: &SecretString) -> Answer {
        let person = match self.find_enabled(anchor, true).await {
            Ok(person) => person,
            Err(answer) => return answer,
        };
        let res = match self.pool.bind_as(&person.dn, password, vec![ppolicy_request()]).await {
            Ok(r) => r,
            Err(f) => return answer::failure(&f),
        };
        let ppolicy = ppolicy_error(&res);
        Answer {
            outcome: answer::openldap_bind(res.rc, ppolicy),
            raw: answer::raw(res.rc, &res.text, ppolicy),
            policy: None,
        }
    }

    pub(crate) async fn change_account(&self, anchor: &Anchor, change: super::AccountChange) -> Answer {
        let person = match self.find(anchor).await {
            Ok(Some(p)) => p,
            Ok(None) => return answer::not_found("entryUUID", anchor),
            Err(f) => return answer::failure(&f),
        };
        if person.disabled && change == super::AccountChange::Unlock {
            // A permanent lock is how ppolicy disables an account: lifting it would enable it.
            return disabled(&person.dn);
        }
        let dn = person.dn.as_str();
        let none = || HashSet::<&str>::new();
        let mods: Vec<Vec<ldap3::Mod<&str>>> = match change {
            // Each attribute in its own modify: one that is absent must not stop the other.
            super::AccountChange::Unlock => vec![
                vec![ldap3::Mod::Delete("pwdAccountLockedTime", none())],
                vec![ldap3::Mod::Delete("pwdFailureTime", none())],
            ],
            super::AccountChange::MustChange(true) => {
                vec![vec![ldap3::Mod::Replace("pwdReset", HashSet::from(["TRUE"]))]]
            }
            super::AccountChange::MustChange(false) => vec![vec![ldap3::Mod::Delete("pwdReset", none())]],
        };
        let mut raws = Vec::new();
        for m in mods {
            let result = self
                .pool
                .run(Retry::Safe, |mut c: Conn| {
                    let m = m.clone();
                    // pwdFailureTime is "no user modification": removing it needs the Relax
                    // control (with manage), as ppolicy itself does when a lock is lifted.
                    let relax = RawControl { ctype: RELAX_OID.to_string(), crit: true, val: None };
                    async move { c.op().with_controls(relax).modify(dn, m).await }
                })
                .await;
            let res = match result {
                Ok(r) => r,
                Err(f) => return answer::failure(&f),
            };
            // 16 noSuchAttribute: it was not set, which is what we wanted.
            if res.rc != 0 && res.rc != 16 {
                let raw = format!(
                    "{} (the service account needs manage on pwdAccountLockedTime, pwdFailureTime and pwdReset)",
                    answer::raw(res.rc, &res.text, None)
                );
                return Answer { outcome: answer::openldap(res.rc, &res.text, None), raw, policy: None };
            }
            raws.push(answer::raw(res.rc, &res.text, None));
        }
        Answer { outcome: Outcome::Success, raw: raws.join("; "), policy: None }
    }

    /// Whether the person's policy would refuse a reset now for its minimum age alone.
    async fn too_young_to_reset(&self, person: &Person) -> bool {
        if person.must_change {
            return false;
        }
        let Some(changed_at) = person.changed_at else { return false };
        let policy = match person.policy_subentry.as_deref().or(self.policy_dn.as_deref()) {
            Some(dn) => self.read_policy(dn).await,
            None => None,
        };
        let min_age = policy.and_then(|p| p.min_age_secs).unwrap_or(0);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        min_age > 0 && now - changed_at < i64::try_from(min_age).unwrap_or(i64::MAX)
    }

    /// Sets (or removes) `pwdReset` on `dn`, with the Relax control ppolicy wants for it.
    async fn mark_reset(&self, dn: &str, on: bool) -> Result<(), Answer> {
        let m = if on {
            ldap3::Mod::Replace("pwdReset", HashSet::from(["TRUE"]))
        } else {
            ldap3::Mod::Delete("pwdReset", HashSet::new())
        };
        let result = self
            .pool
            .run(Retry::Safe, |mut c: Conn| {
                let m = m.clone();
                let relax = RawControl { ctype: RELAX_OID.to_string(), crit: true, val: None };
                async move { c.op().with_controls(relax).modify(dn, vec![m]).await }
            })
            .await;
        match result {
            Ok(res) if res.rc == 0 || (!on && res.rc == 16) => Ok(()),
            Ok(res) => Err(Answer {
                outcome: answer::openldap(res.rc, &res.text, None),
                raw: format!(
                    "{} (setting pwdReset before a reset within the minimum age: the service account needs manage on pwdReset)",
                    answer::raw(res.rc, &res.text, None)
                ),
                policy: None,
            }),
            Err(f) => Err(answer::failure(&f)),
        }
    }

    /// The configured default policy.
    pub(crate) async fn default_policy(&self) -> Option<PolicyFacts> {
        let dn = self.policy_dn.as_deref()?;
        self.read_policy(dn).await
    }

    /// Everyone in scope, each once, from every base DN.
    pub(crate) async fn sync_users(
        &self,
        since: Option<&SyncMark>,
    ) -> Result<(Vec<SyncedUser>, Option<SyncMark>), Failure> {
        let filter = match since {
            // Server timestamps are plain digits and a Z: safe in a filter as they are.
            Some(SyncMark::Timestamp(t)) if t.bytes().all(|b| b.is_ascii_digit() || b == b'Z' || b == b'.') => {
                format!("(&{}(modifyTimestamp>={t}))", self.person_filter)
            }
            _ => self.person_filter.clone(),
        };
        let entries = self.pool.search_bases(&self.base_dns, &filter, &SYNC_ATTRS, true).await?;
        // The newest change seen, by the server's own clock; the next delta asks from there (the
        // boundary entries come again, which does no harm).
        let newest = entries.iter().filter_map(|e| first(e, "modifyTimestamp")).max().map(str::to_string);
        let mark = newest.map(SyncMark::Timestamp).or_else(|| since.cloned());
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        // Each policy is read once per sync, as it is now (not from the cache that the writes'
        // answers use: a sync must not make them state an older policy).
        let mut policies: HashMap<String, Option<PolicyFacts>> = HashMap::new();
        for entry in entries {
            match synced_user(&entry) {
                Some(mut user) if seen.insert(user.anchor.clone()) => {
                    // ppolicy: pwdMaxAge after the last change (0 or absent: never), under the
                    // person's own policy or the default one.
                    let policy = match first(&entry, "pwdPolicySubentry").or(self.policy_dn.as_deref()) {
                        Some(dn) => match policies.get(dn) {
                            Some(p) => p.clone(),
                            None => {
                                let p = self.read_policy_now(dn).await;
                                policies.insert(dn.to_string(), p.clone());
                                p
                            }
                        },
                        None => None,
                    };
                    user.password_expires_at = expiry(user.password_changed_at, policy.as_ref());
                    users.push(user);
                }
                Some(_) => {}
                None => tracing::debug!(dn = %entry.dn, "skipping an entry without a usable entryUUID or uid"),
            }
        }
        Ok((users, mark))
    }

    /// The person, or the answer to give when there is none or their account is disabled.
    /// `with_password`: the person typed a password. ppolicy answers a bind to a locked account
    /// the same whether or not it is right, and a change would lift the lock, so whether the
    /// password is right cannot be told: the answer is that of a wrong one (a stranger must not
    /// learn that the account is disabled; its owner learns it after the reset flow's gate).
    async fn find_enabled(&self, anchor: &Anchor, with_password: bool) -> Result<Person, Answer> {
        match self.find(anchor).await {
            Ok(Some(person)) if person.disabled && with_password => Err(Answer {
                outcome: Outcome::OldPasswordWrong,
                raw: format!(
                    "{} is locked for good (pwdAccountLockedTime {PERMANENT_LOCK}); whether the password is right \
                     cannot be told, so it is answered as wrong",
                    person.dn
                ),
                policy: None,
            }),
            Ok(Some(person)) if person.disabled => Err(disabled(&person.dn)),
            Ok(Some(person)) => Ok(person),
            Ok(None) => Err(answer::not_found("entryUUID", anchor)),
            Err(f) => Err(answer::failure(&f)),
        }
    }

    /// The account's state now (ppolicy): locked (or disabled by a permanent lock), must change,
    /// and when the password expires (`pwdChangedTime` + the policy's `pwdMaxAge`).
    pub(crate) async fn inspect(&self, anchor: &Anchor) -> Result<Option<crate::domain::AccountState>, Failure> {
        let filter = format!("(&(entryUUID={}){})", ldap_escape(anchor.as_str()), self.person_filter);
        let attrs = ["pwdAccountLockedTime", "pwdReset", "pwdChangedTime", "pwdPolicySubentry"];
        let mut found = self.pool.search_bases(&self.base_dns, &filter, &attrs, false).await?;
        if found.len() > 1 {
            return Err(Failure::Result { rc: 80, text: format!("entryUUID matches {} entries", found.len()) });
        }
        let Some(entry) = found.pop() else { return Ok(None) };
        let policy = match first(&entry, "pwdPolicySubentry").or(self.policy_dn.as_deref()) {
            Some(dn) => self.read_policy(dn).await,
            None => None,
        };
        let locked_time = first(&entry, "pwdAccountLockedTime");
        // A lock ends by itself after the policy's pwdLockoutDuration (0: never), though the
        // attribute stays until the next bind.
        let duration = policy.as_ref().and_then(|p| p.lockout_duration_secs).unwrap_or(0);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let locked = match locked_time {
            None => false,
            Some(PERMANENT_LOCK) => true,
            Some(_) if duration == 0 => true,
            Some(t) => generalized_time_unix(t)
                .is_none_or(|at| now < at.saturating_add(i64::try_from(duration).unwrap_or(i64::MAX))),
        };
        let must_change = first(&entry, "pwdReset") == Some("TRUE");
        let password_set_at = first(&entry, "pwdChangedTime").and_then(generalized_time_unix);
        let expires_at = expiry(password_set_at.filter(|_| !must_change), policy.as_ref());
        Ok(Some(crate::domain::AccountState {
            enabled: locked_time != Some(PERMANENT_LOCK),
            locked,
            must_change,
            expired: expires_at.map(|at| at <= now),
            password_set_at,
            policy,
            expires_at,
        }))
    }

    /// Looks the anchor up under every base DN, within the same scope as the sync.
    async fn find(&self, anchor: &Anchor) -> Result<Option<Person>, Failure> {
        let filter = format!("(&(entryUUID={}){})", ldap_escape(anchor.as_str()), self.person_filter);
        let attrs = ["pwdPolicySubentry", "pwdAccountLockedTime", "pwdReset", "pwdChangedTime"];
        let mut found = self.pool.search_bases(&self.base_dns, &filter, &attrs, false).await?;
        if found.len() > 1 {
            // entryUUID is unique in one directory; two answers mean two naming contexts were
            // configured that the server fills from different places. Refuse rather than guess.
            return Err(Failure::Result { rc: 80, text: format!("entryUUID matches {} entries", found.len()) });
        }
        Ok(found.pop().map(|entry| Person {
            policy_subentry: first(&entry, "pwdPolicySubentry").map(str::to_string),
            disabled: first(&entry, "pwdAccountLockedTime") == Some(PERMANENT_LOCK),
            lock_seen: first(&entry, "pwdAccountLockedTime").is_some(),
            must_change: first(&entry, "pwdReset") == Some("TRUE"),
            changed_at: first(&entry, "pwdChangedTime").and_then(generalized_time_unix),
            dn: entry.dn,
        }))
    }

    async fn read_policy(&self, dn: &str) -> Option<PolicyFacts> {
        let cached = {
            let mut map = self.policies.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, (at, _)| at.elapsed() < POLICY_CACHE);
            map.get(dn).map(|(_, p)| p.clone())
        };
        if cached.is_some() {
            return cached;
        }
        let policy = self.read_policy_now(dn).await;
        if let Some(p) = &policy {
            let mut map = self.policies.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(dn.to_string(), (std::time::Instant::now(), p.clone()));
        }
        policy
    }

    async fn read_policy_now(&self, dn: &str) -> Option<PolicyFacts> {
        let result = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let (entries, _) = c
                    .op()
                    .search(dn, Scope::Base, "(objectClass=pwdPolicy)", POLICY_ATTRS.to_vec())
                    .await?
                    .success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await;
        match result {
            Ok(Some(entry)) => Some(policy_facts(&entry)),
            Ok(None) => {
                tracing::warn!(%dn, "password policy entry not found");
                None
            }
            Err(f) => {
                tracing::warn!(%dn, error = %f, "could not read the password policy");
                None
            }
        }
    }
}

/// What `agent doctor` needs to look at; nothing here writes.
impl OpenLdap {
    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The filter that finds the person with this anchor.
    pub(super) fn anchor_filter(&self, anchor: &Anchor) -> Option<String> {
        Some(format!("(entryUUID={})", ldap_escape(anchor.as_str())))
    }

    /// The configured base DNs and the filter the sync uses under them.
    pub(super) fn scope(&self) -> (&[String], &str) {
        (&self.base_dns, &self.person_filter)
    }

    pub(super) fn policy_dn(&self) -> Option<&str> {
        self.policy_dn.as_deref()
    }
}

#[cfg(test)]
mod tests;
