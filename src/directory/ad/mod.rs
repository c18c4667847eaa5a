//! Active Directory (and Samba AD DC): find a person by `objectGUID`, set passwords through
//! `unicodePwd` so the domain's own policy decides, refuse protected accounts, read the effective
//! policy (domain or fine-grained PSO), and list the people in scope.
//!
//! Only encrypted connections are used (the pool refuses anything else), referrals are never
//! chased, and passwords are sent as AD wants them: UTF-16LE, in double quotes.

mod read;
mod values;

use super::answer;
use super::answer::Failure;
use super::pool::{Conn, Pool, Retry};
use super::{Answer, ResetAs};
use crate::config::{DirectoryConfig, HistoryOnReset};
use crate::domain::{Anchor, EmailAddress, Outcome, PolicyFacts, SyncMark, SyncedUser};
use ldap3::controls::RawControl;
use ldap3::{LdapError, Mod, Scope, SearchEntry};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashSet;
use tokio::sync::OnceCell;
use values::*;
pub use values::{parse_sid, quoted_utf16};

/// `LDAP_SERVER_POLICY_HINTS_OID`: asks the DC to enforce history on a reset too.
pub const POLICY_HINTS_OID: &str = "1.2.840.113556.1.4.2239";
/// The deprecated form of the same control, understood by older DCs.
pub const POLICY_HINTS_DEPRECATED_OID: &str = "1.2.840.113556.1.4.2066";
const USER_ATTRS: [&str; 14] = [
    "objectGUID",
    "pwdLastSet",
    "sAMAccountName",
    "userPrincipalName",
    "mail",
    "otherMailbox",
    "mobile",
    "displayName",
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
    "adminCount",
    "objectSid",
    "memberOf",
    "msDS-UserPasswordExpiryTimeComputed",
];
const DOMAIN_POLICY_ATTRS: [&str; 7] = [
    "minPwdLength",
    "pwdProperties",
    "pwdHistoryLength",
    "minPwdAge",
    "maxPwdAge",
    "lockoutThreshold",
    "lockoutDuration",
];
const PSO_ATTRS: [&str; 7] = [
    "msDS-LockoutThreshold",
    "msDS-LockoutDuration",
    "msDS-MinimumPasswordLength",
    "msDS-PasswordComplexityEnabled",
    "msDS-PasswordHistoryLength",
    "msDS-MinimumPasswordAge",
    "msDS-MaximumPasswordAge",
];
const UF_ACCOUNTDISABLE: u32 = 0x2;
/// In `userAccountControl`: the password never expires.
const UF_DONT_EXPIRE_PASSWD: u32 = 0x1_0000;
const UF_LOCKOUT: u32 = 0x10;
/// In `msDS-User-Account-Control-Computed`: the password has expired.
const UF_PASSWORD_EXPIRED: u32 = 0x0080_0000;
/// `DOMAIN_PASSWORD_COMPLEX` in `pwdProperties`.
const DOMAIN_PASSWORD_COMPLEX: u32 = 0x1;

/// Accounts and groups AD protects (AdminSDHolder): relative ids in the domain…
const PROTECTED_DOMAIN_RIDS: [u32; 9] = [
    500, // Administrator
    502, // krbtgt
    512, // Domain Admins
    516, // Domain Controllers
    518, // Schema Admins
    519, // Enterprise Admins
    521, // Read-only Domain Controllers
    526, // Key Admins
    527, // Enterprise Key Admins
];
/// …and the built-in groups (S-1-5-32-…).
const PROTECTED_BUILTIN_RIDS: [u32; 6] = [
    544, // Administrators
    548, // Account Operators
    549, // Server Operators
    550, // Print Operators
    551, // Backup Operators
    552, // Replicator
];

pub(crate) struct Ad {
    pool: Pool,
    base_dns: Vec<String>,
    person_filter: String,
    history_on_reset: Option<HistoryOnReset>,
    server: OnceCell<ServerFacts>,
    /// The DNs of this domain's protected groups, found once.
    protected_groups: OnceCell<Vec<String>>,
}

/// What the rootDSE says, read once.
#[derive(Debug, Clone)]
struct ServerFacts {
    domain_dn: String,
    /// The policy-hints control this DC supports, if any.
    hints_oid: Option<&'static str>,
}

/// The entry a password operation applies to, with what decides whether it is protected.
struct Person {
    dn: String,
    sam: String,
    /// Looked up only for a reset, the one operation it decides (it costs a search).
    protection: Option<Protection>,
    pso: Option<String>,
    disabled: bool,
    /// Seconds since the password was last set, when AD says.
    password_age_secs: Option<u64>,
    /// When the password was last set (Unix seconds), when AD says.
    password_set_at: Option<i64>,
    /// "Password never expires" is set on the account.
    never_expires: bool,
}

impl Person {
    /// The answer when this account's protection forbids `what` (`resets are`, `Unlock`…), or
    /// its groups could not be read (nobody can tell, so it is refused as a set-up problem);
    /// `None` when it may go on.
    fn refusal(&self, what: &str) -> Option<Answer> {
        let (outcome, raw) = match &self.protection {
            Some(Protection::Protected(why)) => {
                (Outcome::Protected, format!("{} is a protected account ({why}); {what} refused", self.dn))
            }
            Some(Protection::Unknown(why)) => (
                Outcome::InsufficientRights,
                format!("{why}: the service account needs to read tokenGroups to tell administrators apart"),
            ),
            Some(Protection::None) | None => return None,
        };
        Some(Answer { outcome, raw, policy: None })
    }
}

/// Whether an account may have a forgotten password reset here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Protection {
    None,
    Protected(String),
    /// Its groups could not be read: nobody can tell, so resets are refused as a set-up problem.
    Unknown(String),
}

impl Ad {
    /// The DC behind `pool`; a person is a user object that meets `extra` too.
    pub(crate) fn new(cfg: &DirectoryConfig, pool: Pool, extra: &str) -> Ad {
        let person_filter = format!("(&(objectCategory=person)(objectClass=user){extra})");
        let (server, protected_groups) = (OnceCell::new(), OnceCell::new());
        Ad {
            pool,
            base_dns: cfg.base_dns.clone(),
            person_filter,
            history_on_reset: cfg.history_on_reset,
            server,
            protected_groups,
        }
    }

    /// A live round trip as the service account (the rootDSE's update counter), every time: the
    /// heartbeat must say "unreachable" as soon as the DC or the bind stops working.
    pub(crate) async fn check(&self) -> Result<(), Failure> {
        self.server().await?;
        self.update_counter().await.map(|_| ())
    }

    async fn server(&self) -> Result<&ServerFacts, Failure> {
        self.server
            .get_or_try_init(|| async {
                let entry = self
                    .pool
                    .run(Retry::Safe, |mut c: Conn| async move {
                        let (entries, _) = c
                            .op()
                            .search(
                                "",
                                Scope::Base,
                                "(objectClass=*)",
                                vec!["defaultNamingContext", "supportedControl"],
                            )
                            .await?
                            .success()?;
                        Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
                    })
                    .await?
                    .ok_or_else(|| Failure::Internal("the rootDSE is empty".into()))?;
                let domain_dn = first(&entry, "defaultNamingContext")
                    .ok_or_else(|| Failure::Internal("the rootDSE names no defaultNamingContext".into()))?
                    .to_string();
                let controls = all(&entry, "supportedControl");
                let hints_oid = [POLICY_HINTS_OID, POLICY_HINTS_DEPRECATED_OID]
                    .into_iter()
                    .find(|oid| controls.iter().any(|c| c == oid));
                if hints_oid.is_none() && self.history_on_reset.is_none() {
                    tracing::warn!(
                        "this domain controller cannot enforce password history on resets (no policy-hints \
                         control); resets go ahead without it. Set history_on_reset = \"required\" to refuse them"
                    );
                }
                Ok(ServerFacts { domain_dn, hints_oid })
            })
            .await
    }

    /// A reset (`old` is `None`) replaces `unicodePwd`; a change deletes the old value and adds
    /// the new one in one modify, which AD allows anyone to do who knows the old password. A
    /// reset `how` it was asked for: of a protected account when
    /// allowed (a staff role and this agent's configuration both allow it), and only with the
    /// history checked when it stands for the person's own change. The account is read while
    /// `before` is done; nothing is asked of it further until it is.
    pub(crate) async fn set_password_with(
        &self,
        anchor: &Anchor,
        old: Option<&SecretString>,
        new: &SecretString,
        how: ResetAs,
        before: super::BeforeWrite,
    ) -> Answer {
        let read = async { Ok::<_, Failure>((self.server().await?.clone(), self.find(anchor, old.is_none()).await?)) };
        let (read, before) = tokio::join!(read, before);
        let (server, person) = match read {
            Ok((server, Some(person))) => (server, person),
            Ok((_, None)) => return answer::not_found("objectGUID", anchor),
            Err(f) => return answer::failure(&f),
        };
        if let Err(answer) = before {
            return answer;
        }
        let mut notes = Vec::new();
        let mut controls = Vec::new();
        if person.disabled {
            // A change says "disabled" only to someone who knows the password: AD answers a bind
            // with 533 only when the password is right (52e otherwise).
            if let Some(old) = old {
                return match self.pool.bind_as(&person.dn, old, Vec::new()).await {
                    Ok(res) => Answer {
                        // The bind worked: the account was enabled meanwhile, and nothing was
                        // written. The person tries again.
                        outcome: match answer::ad_bind(res.rc, &res.text) {
                            Outcome::Success => Outcome::Refused,
                            other => other,
                        },
                        raw: format!("{} is disabled; bind rc={} text={:?}; not written", person.dn, res.rc, res.text),
                        policy: None,
                    },
                    Err(f) => answer::failure(&f),
                };
            }
            return Answer {
                outcome: Outcome::AccountDisabled,
                raw: format!("{} is disabled (userAccountControl)", person.dn),
                policy: None,
            };
        }
        if old.is_none() {
            match &person.protection {
                Some(Protection::Protected(why)) if how.allow_protected => {
                    notes.push(format!("protected account ({why}) reset as allowed for staff"));
                }
                // `find` looks protection up for every reset; never reset without knowing.
                None => {
                    return Answer { outcome: Outcome::Internal, raw: "protection not checked".into(), policy: None }
                }
                Some(_) => {
                    if let Some(refused) = person.refusal("resets are") {
                        return refused;
                    }
                }
            }
            match (server.hints_oid, self.history_on_reset) {
                (Some(oid), _) => controls.push(policy_hints(oid)),
                (None, Some(HistoryOnReset::Required)) => {
                    return Answer {
                        outcome: Outcome::InsufficientRights,
                        raw: "history_on_reset = \"required\" but this domain controller does not support the \
                              policy-hints control: resets are refused"
                            .into(),
                        policy: None,
                    }
                }
                (None, _) if how.keep_history => {
                    return Answer {
                        outcome: Outcome::InsufficientRights,
                        raw: "a reset in place of the person's own change needs the password history checked, \
                              and this domain controller does not support the policy-hints control: not written"
                            .into(),
                        policy: None,
                    }
                }
                (None, _) => notes.push("history not enforced on reset (no policy-hints control)".to_string()),
            }
        }

        let dn = person.dn.as_str();
        let new_value = quoted_utf16(new.expose_secret());
        let old_value = old.map(|o| quoted_utf16(o.expose_secret()));
        let result = self
            .pool
            .run(Retry::UnlessSent, |mut c: Conn| {
                let mods = match &old_value {
                    None => vec![Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([new_value.clone()]))],
                    Some(old_value) => vec![
                        Mod::Delete(b"unicodePwd".to_vec(), HashSet::from([old_value.clone()])),
                        Mod::Add(b"unicodePwd".to_vec(), HashSet::from([new_value.clone()])),
                    ],
                };
                let controls = controls.clone();
                async move { c.op().with_controls(controls).modify(dn, mods).await }
            })
            .await;
        let right = if old.is_some() { "the Change Password right" } else { "the Reset Password right" };
        let (res, mut raw) = match written(result, right, dn) {
            Ok(r) => r,
            Err(a) => return a,
        };
        for n in notes {
            raw = format!("{raw}; {n}");
        }
        let outcome = match answer::ad(res.rc, &res.text) {
            // AD says "complexity" for a password that holds the account name, too: named as the
            // rule it breaks.
            Outcome::NotComplex => {
                crate::domain::ad_complexity_refusal(new.expose_secret(), &person.sam).unwrap_or(Outcome::NotComplex)
            }
            other => other,
        };
        let unnamed = answer::ad_unnamed_rule(res.rc, &res.text);
        if outcome.is_success() {
            // The policy the new password lives under, so the person is told when it expires;
            // not worth keeping them from the answer, which is final already.
            const POLICY_READ: std::time::Duration = std::time::Duration::from_secs(2);
            let read = self.policy_for(&server, person.pso.as_deref());
            let policy = tokio::time::timeout(POLICY_READ, read).await.ok().flatten();
            return Answer { outcome, raw, policy: policy.map(|p| Box::new(p.for_account(person.never_expires))) };
        }
        if !outcome.is_policy_rule() && !unnamed {
            return Answer { outcome, raw, policy: None };
        }
        let policy = self.policy_for(&server, person.pso.as_deref()).await;
        let outcome = if unnamed {
            // Too recent only if the password really is younger than the minimum age.
            let young = old.is_some()
                && policy
                    .as_ref()
                    .and_then(|p| p.min_age_secs)
                    .zip(person.password_age_secs)
                    .is_some_and(|(min, age)| age < min);
            answer::ad_rule(new.expose_secret(), &person.sam, policy.as_ref(), young)
        } else {
            outcome
        };
        let outcome = answer::with_since(answer::with_policy(outcome, policy.as_ref()), person.password_set_at);
        Answer { outcome, raw, policy: policy.map(Box::new) }
    }

    /// Checks a person's password by binding as them (sign-in); AD says in the bind's `data`
    /// code why it refused (wrong, must change, expired, locked, disabled).
    pub(crate) async fn verify(&self, anchor: &Anchor, password: &SecretString) -> Answer {
        let person = match self.find(anchor, false).await {
            Ok(Some(p)) => p,
            Ok(None) => return answer::not_found("objectGUID", anchor),
            Err(f) => return answer::failure(&f),
        };
        match self.pool.bind_as(&person.dn, password, Vec::new()).await {
            Ok(res) => Answer {
                outcome: answer::ad_bind(res.rc, &res.text),
                raw: format!("bind rc={} text={:?}", res.rc, res.text),
                policy: None,
            },
            Err(f) => answer::failure(&f),
        }
    }

    /// Unlocks, or sets or clears "must change". A protected account is refused unless
    /// `allow_protected` (checked here, live: the portal's copy of group memberships may lag).
    pub(crate) async fn change_account(
        &self,
        anchor: &Anchor,
        change: super::AccountChange,
        allow_protected: bool,
    ) -> Answer {
        let person = match self.find(anchor, !allow_protected).await {
            Ok(Some(p)) => p,
            Ok(None) => return answer::not_found("objectGUID", anchor),
            Err(f) => return answer::failure(&f),
        };
        if let Some(refused) = person.refusal(&format!("{change:?}")) {
            return refused;
        }
        let (attr, value) = match change {
            super::AccountChange::Unlock => ("lockoutTime", "0"),
            super::AccountChange::MustChange(true) => ("pwdLastSet", "0"),
            super::AccountChange::MustChange(false) => ("pwdLastSet", "-1"),
        };
        let dn = person.dn.as_str();
        let result = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                c.op().modify(dn, vec![Mod::Replace(attr, HashSet::from([value]))]).await
            })
            .await;
        let (res, raw) = match written(result, &format!("the right to write {attr}"), dn) {
            Ok(r) => r,
            Err(a) => return a,
        };
        Answer { outcome: answer::ad(res.rc, &res.text), raw, policy: None }
    }
}

#[cfg(test)]
mod tests;
