//! Active Directory (and Samba AD DC): find a person by `objectGUID`, set passwords through
//! `unicodePwd` so the domain's own policy decides, refuse protected accounts, read the effective
//! policy (domain or fine-grained PSO), and list the people in scope.
//!
//! Only encrypted connections are used (the pool refuses anything else), referrals are never
//! chased, and passwords are sent as AD wants them: UTF-16LE, in double quotes.

use super::answer;
use super::answer::Failure;
use super::pool::{Conn, Pool, Retry};
use super::Answer;
use crate::config::{DirectoryConfig, HistoryOnReset};
use crate::domain::{Anchor, EmailAddress, Outcome, PolicyFacts, SyncMark, SyncedUser};
use ldap3::controls::RawControl;
use ldap3::{LdapError, Mod, Scope, SearchEntry};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// `LDAP_SERVER_POLICY_HINTS_OID`: asks the DC to enforce history on a reset too.
pub const POLICY_HINTS_OID: &str = "1.2.840.113556.1.4.2239";
/// The deprecated form of the same control, understood by older DCs.
pub const POLICY_HINTS_DEPRECATED_OID: &str = "1.2.840.113556.1.4.2066";
const USER_ATTRS: [&str; 13] = [
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
];
const DOMAIN_POLICY_ATTRS: [&str; 6] =
    ["minPwdLength", "pwdProperties", "pwdHistoryLength", "minPwdAge", "lockoutThreshold", "lockoutDuration"];
const PSO_ATTRS: [&str; 6] = [
    "msDS-LockoutThreshold",
    "msDS-LockoutDuration",
    "msDS-MinimumPasswordLength",
    "msDS-PasswordComplexityEnabled",
    "msDS-PasswordHistoryLength",
    "msDS-MinimumPasswordAge",
];
const UF_ACCOUNTDISABLE: u32 = 0x2;
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
    pub(crate) fn new(
        cfg: &DirectoryConfig,
        tls: Arc<rustls::ClientConfig>,
        bind_password: SecretString,
    ) -> anyhow::Result<Ad> {
        let pool = Pool::for_directory(cfg, tls, bind_password)?;
        let extra = super::extra_filter(cfg)?;
        Ok(Ad {
            pool,
            base_dns: cfg.base_dns.clone(),
            person_filter: format!("(&(objectCategory=person)(objectClass=user){extra})"),
            history_on_reset: cfg.history_on_reset,
            server: OnceCell::new(),
            protected_groups: OnceCell::new(),
        })
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
    /// the new one in one modify, which AD allows anyone to do who knows the old password.
    pub(crate) async fn set_password(&self, anchor: &Anchor, old: Option<&SecretString>, new: &SecretString) -> Answer {
        self.set_password_with(anchor, old, new, false).await
    }

    /// [`Self::set_password`]; a reset of a protected account goes ahead when `allow_protected`
    /// (a staff role and this agent's configuration both allow it).
    pub(crate) async fn set_password_with(
        &self,
        anchor: &Anchor,
        old: Option<&SecretString>,
        new: &SecretString,
        allow_protected: bool,
    ) -> Answer {
        let server = match self.server().await {
            Ok(s) => s.clone(),
            Err(f) => return answer::failure(&f),
        };
        let person = match self.find(anchor, old.is_none()).await {
            Ok(Some(p)) => p,
            Ok(None) => return answer::not_found("objectGUID", anchor),
            Err(f) => return answer::failure(&f),
        };
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
                Some(Protection::None) => {}
                Some(Protection::Protected(why)) if allow_protected => {
                    notes.push(format!("protected account ({why}) reset as allowed for staff"));
                }
                Some(Protection::Protected(why)) => {
                    return Answer {
                        outcome: Outcome::Protected,
                        raw: format!("{} is a protected account ({why}); resets are refused", person.dn),
                        policy: None,
                    }
                }
                Some(Protection::Unknown(why)) => {
                    return Answer {
                        outcome: Outcome::InsufficientRights,
                        raw: format!(
                            "{why}: the service account needs to read tokenGroups to tell administrators apart"
                        ),
                        policy: None,
                    }
                }
                // `find` looks protection up for every reset; never reset without knowing.
                None => {
                    return Answer { outcome: Outcome::Internal, raw: "protection not checked".into(), policy: None }
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
        let outcome = answer::ad(res.rc, &res.text);
        let unnamed = answer::ad_unnamed_rule(res.rc, &res.text);
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
        Answer { outcome, raw, policy }
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
        match &person.protection {
            Some(Protection::Protected(why)) => {
                return Answer {
                    outcome: Outcome::Protected,
                    raw: format!("{} is a protected account ({why}); {change:?} refused", person.dn),
                    policy: None,
                }
            }
            Some(Protection::Unknown(why)) => {
                return Answer {
                    outcome: Outcome::InsufficientRights,
                    raw: format!("{why}: the service account needs to read tokenGroups to tell administrators apart"),
                    policy: None,
                }
            }
            Some(Protection::None) | None => {}
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

    /// The domain's policy (not a PSO's: those are per person).
    pub(crate) async fn default_policy(&self) -> Option<PolicyFacts> {
        let server = self.server().await.ok()?.clone();
        self.policy_for(&server, None).await
    }

    async fn policy_for(&self, server: &ServerFacts, pso: Option<&str>) -> Option<PolicyFacts> {
        let (dn, attrs) = match pso {
            Some(pso) => (pso, PSO_ATTRS.to_vec()),
            None => (server.domain_dn.as_str(), DOMAIN_POLICY_ATTRS.to_vec()),
        };
        let entry = self
            .pool
            .run(Retry::Safe, |mut c: Conn| {
                let attrs = attrs.clone();
                async move {
                    let (entries, _) = c.op().search(dn, Scope::Base, "(objectClass=*)", attrs).await?.success()?;
                    Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
                }
            })
            .await;
        match entry {
            Ok(Some(e)) if pso.is_some() => Some(pso_policy(&e)),
            Ok(Some(e)) => Some(domain_policy(&e)),
            Ok(None) => None,
            Err(f) => {
                tracing::warn!(%dn, error = %f, "could not read the password policy");
                None
            }
        }
    }

    /// Looks the anchor up under every base DN, within the sync scope; with its protection when
    /// `for_reset`.
    async fn find(&self, anchor: &Anchor, for_reset: bool) -> Result<Option<Person>, Failure> {
        let Some(guid) = guid_bytes(anchor.as_str()) else { return Ok(None) };
        let filter = format!("(&(objectGUID={}){})", escape_bytes(&guid), self.person_filter);
        let attrs =
            ["sAMAccountName", "adminCount", "objectSid", "msDS-ResultantPSO", "userAccountControl", "pwdLastSet"];
        let mut found = self.pool.search_bases(&self.base_dns, &filter, &attrs, false).await?;
        if found.len() > 1 {
            return Err(Failure::Result { rc: 80, text: format!("objectGUID matches {} entries", found.len()) });
        }
        let Some(entry) = found.pop() else { return Ok(None) };
        let protection = if for_reset { Some(self.protection(&entry).await?) } else { None };
        let uac: u32 = number(&entry, "userAccountControl").unwrap_or(0);
        Ok(Some(Person {
            sam: first(&entry, "sAMAccountName").unwrap_or_default().to_string(),
            pso: first(&entry, "msDS-ResultantPSO").map(str::to_string),
            protection,
            disabled: uac & UF_ACCOUNTDISABLE != 0,
            password_age_secs: number::<i64>(&entry, "pwdLastSet").and_then(filetime_age_secs),
            password_set_at: number::<i64>(&entry, "pwdLastSet").and_then(filetime_unix),
            dn: entry.dn,
        }))
    }

    /// The account's state now: enabled, locked out, must change, password expired.
    pub(crate) async fn inspect(&self, anchor: &Anchor) -> Result<Option<crate::domain::AccountState>, Failure> {
        let Some(guid) = guid_bytes(anchor.as_str()) else { return Ok(None) };
        let filter = format!("(&(objectGUID={}){})", escape_bytes(&guid), self.person_filter);
        let attrs = ["userAccountControl", "msDS-User-Account-Control-Computed", "pwdLastSet", "msDS-ResultantPSO"];
        let server = self.server().await?.clone();
        let mut found = self.pool.search_bases(&self.base_dns, &filter, &attrs, false).await?;
        if found.len() > 1 {
            return Err(Failure::Result { rc: 80, text: format!("objectGUID matches {} entries", found.len()) });
        }
        let Some(entry) = found.pop() else { return Ok(None) };
        // A state the service account cannot read is not reported as a good one.
        let (Some(uac), Some(computed)) =
            (number::<u32>(&entry, "userAccountControl"), number::<u32>(&entry, "msDS-User-Account-Control-Computed"))
        else {
            return Err(Failure::Result {
                rc: 50,
                text: "userAccountControl or msDS-User-Account-Control-Computed not readable".into(),
            });
        };
        let last_set = number::<i64>(&entry, "pwdLastSet");
        let must_change = last_set == Some(0);
        let policy = self.policy_for(&server, first(&entry, "msDS-ResultantPSO")).await;
        Ok(Some(crate::domain::AccountState {
            enabled: uac & UF_ACCOUNTDISABLE == 0,
            locked: computed & UF_LOCKOUT != 0,
            must_change,
            // AD also says "expired" for a password that must be changed; that is said already.
            expired: Some(computed & UF_PASSWORD_EXPIRED != 0 && !must_change),
            password_set_at: last_set.and_then(filetime_unix),
            policy,
        }))
    }

    /// Why the account is protected, if it is: `adminCount=1`, a protected well-known account,
    /// or membership (nested too) of a protected group. Samba never sets `adminCount`, so the
    /// membership is what counts; it comes from `tokenGroups`, which follows nesting.
    async fn protection(&self, entry: &SearchEntry) -> Result<Protection, Failure> {
        if first(entry, "adminCount") == Some("1") {
            return Ok(Protection::Protected("adminCount=1".into()));
        }
        let Some((domain_sid, own_rid)) = own_sid(entry) else {
            return Ok(Protection::Unknown(format!("{} has no readable objectSid", entry.dn)));
        };
        if PROTECTED_DOMAIN_RIDS.contains(&own_rid) {
            return Ok(Protection::Protected(format!("well-known account {domain_sid}-{own_rid}")));
        }
        let dn = entry.dn.as_str();
        let groups = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let (entries, _) =
                    c.op().search(dn, Scope::Base, "(objectClass=*)", vec!["tokenGroups"]).await?.success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await?;
        let sids: Vec<String> = groups
            .map(|g| all_bytes(&g, "tokenGroups").iter().filter_map(|b| parse_sid(b)).collect())
            .unwrap_or_default();
        if sids.is_empty() {
            // Every account has at least "Domain Users" in its token: an empty one means we may
            // not read it, and then we cannot tell.
            return Ok(Protection::Unknown(format!("group membership unreadable for {dn}")));
        }
        for sid in sids {
            if is_protected_group(&sid, &domain_sid) {
                return Ok(Protection::Protected(format!("member of {sid}")));
            }
        }
        Ok(Protection::None)
    }

    pub(crate) async fn sync_users(
        &self,
        since: Option<&SyncMark>,
    ) -> Result<(Vec<SyncedUser>, Option<SyncMark>), Failure> {
        // The DC's update counter before the search: whatever changes while it runs is caught
        // next time. Counters are per DC, so a mark from another DC means a full sync.
        let (server, usn) = self.update_counter().await?;
        let filter = match since {
            Some(SyncMark::Usn { server: s, usn: from }) if *s == server => {
                format!("(&{}(uSNChanged>={}))", self.person_filter, from + 1)
            }
            _ => self.person_filter.clone(),
        };
        let entries = self.pool.search_bases(&self.base_dns, &filter, &USER_ATTRS, true).await?;
        // Members (nested too) of the protected groups, in one search: Samba never sets
        // adminCount, so membership is what tells.
        let protected_filter = format!("(&{filter}{})", self.protected_members_filter().await?);
        let protected: HashSet<String> = self
            .pool
            .search_bases(&self.base_dns, &protected_filter, &["objectGUID"], true)
            .await?
            .into_iter()
            .map(|e| e.dn.to_ascii_lowercase())
            .collect();
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for entry in entries {
            match synced_user(&entry) {
                Some(mut user) if seen.insert(user.anchor.clone()) => {
                    user.protected |= protected.contains(&user.dn.to_ascii_lowercase());
                    users.push(user);
                }
                Some(user) => {
                    tracing::warn!(anchor = %user.anchor, dn = %user.dn, "the same objectGUID twice in one sync; kept the first")
                }
                None => tracing::debug!(dn = %entry.dn, "skipping an entry without objectGUID or sAMAccountName"),
            }
        }
        Ok((users, Some(SyncMark::Usn { server, usn })))
    }

    /// `(|(adminCount=1)(memberOf:<in chain>:=<group>)…)` over the protected groups of this
    /// domain, found by their well-known SIDs (names and places of groups can change; SIDs not).
    async fn protected_members_filter(&self) -> Result<String, Failure> {
        let groups = self
            .protected_groups
            .get_or_try_init(|| async {
                let server = self.server().await?.clone();
                let domain_dn = server.domain_dn.as_str();
                let domain = self
                    .pool
                    .run(Retry::Safe, |mut c: Conn| async move {
                        let (e, _) = c
                            .op()
                            .search(domain_dn, Scope::Base, "(objectClass=*)", vec!["objectSid"])
                            .await?
                            .success()?;
                        Ok::<_, LdapError>(e.into_iter().next().map(SearchEntry::construct))
                    })
                    .await?
                    .and_then(|e| bytes(&e, "objectSid"))
                    .ok_or_else(|| Failure::Internal("the domain's objectSid cannot be read".into()))?;
                let mut sids: Vec<Vec<u8>> =
                    PROTECTED_DOMAIN_RIDS.iter().map(|rid| sid_with_rid(&domain, *rid)).collect();
                let builtin = [1u8, 1, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0];
                sids.extend(PROTECTED_BUILTIN_RIDS.iter().map(|rid| sid_with_rid(&builtin, *rid)));
                let by_sid: String = sids.iter().map(|s| format!("(objectSid={})", escape_bytes(s))).collect();
                let filter = format!("(&(objectClass=group)(|{by_sid}))");
                let filter = filter.as_str();
                let found = self
                    .pool
                    .run(Retry::Safe, |mut c: Conn| async move {
                        let (e, _) = c.op().search(domain_dn, Scope::Subtree, filter, vec!["1.1"]).await?.success()?;
                        Ok::<_, LdapError>(
                            e.into_iter()
                                .filter(|e| !e.is_ref())
                                .map(|e| SearchEntry::construct(e).dn)
                                .collect::<Vec<_>>(),
                        )
                    })
                    .await?;
                Ok::<_, Failure>(found)
            })
            .await?;
        let chain: String =
            groups.iter().map(|dn| format!("(memberOf:1.2.840.113556.1.4.1941:={})", ldap_escape_value(dn))).collect();
        Ok(format!("(|(adminCount=1){chain})"))
    }

    /// This DC's name and its `highestCommittedUSN`, read now (not cached).
    async fn update_counter(&self) -> Result<(String, u64), Failure> {
        let entry = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let attrs = vec!["dsServiceName", "highestCommittedUSN"];
                let (entries, _) = c.op().search("", Scope::Base, "(objectClass=*)", attrs).await?.success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await?
            .ok_or_else(|| Failure::Internal("the rootDSE is empty".into()))?;
        let server = first(&entry, "dsServiceName").unwrap_or_default().to_string();
        let usn = number(&entry, "highestCommittedUSN")
            .ok_or_else(|| Failure::Internal("the rootDSE gives no highestCommittedUSN".into()))?;
        Ok((server, usn))
    }
}

/// What `agent doctor` needs to look at; nothing here writes.
impl Ad {
    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The filter that finds the person with this anchor (an `objectGUID`).
    pub(super) fn anchor_filter(&self, anchor: &Anchor) -> Option<String> {
        guid_bytes(anchor.as_str()).map(|g| format!("(objectGUID={})", escape_bytes(&g)))
    }

    /// The configured base DNs and the filter the sync uses under them.
    pub(super) fn scope(&self) -> (&[String], &str) {
        (&self.base_dns, &self.person_filter)
    }

    pub(super) fn history_on_reset(&self) -> Option<HistoryOnReset> {
        self.history_on_reset
    }

    /// The policy-hints control this DC lists in its rootDSE, if any.
    pub(super) async fn policy_hints_oid(&self) -> Result<Option<&'static str>, Failure> {
        Ok(self.server().await?.hints_oid)
    }

    /// How a reset of `dn` would judge it, by the very check a reset runs: `Ok(None)` when it is
    /// not protected, `Ok(Some(why))` when it is, `Err(why)` when that cannot be told (and every
    /// reset would then be refused as a set-up problem).
    pub(super) async fn reset_protection(&self, dn: &str) -> Result<Result<Option<String>, String>, Failure> {
        let entry = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let attrs = vec!["adminCount", "objectSid"];
                let (entries, _) = c.op().search(dn, Scope::Base, "(objectClass=*)", attrs).await?.success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await?
            .ok_or_else(|| Failure::Internal(format!("{dn} cannot be read")))?;
        Ok(match self.protection(&entry).await? {
            Protection::None => Ok(None),
            Protection::Protected(why) => Ok(Some(why)),
            Protection::Unknown(why) => Err(why),
        })
    }
}

/// Asks the DC to apply the whole policy, history included, to a reset. Critical: a DC that does
/// not understand it must refuse rather than quietly skip history.
fn policy_hints(oid: &str) -> RawControl {
    // PolicyHintsRequestValue ::= SEQUENCE { Flags INTEGER } with Flags = 1.
    RawControl { ctype: oid.to_string(), crit: true, val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]) }
}

/// The value AD wants in `unicodePwd`: the password in double quotes, UTF-16LE.
pub fn quoted_utf16(password: &str) -> Vec<u8> {
    format!("\"{password}\"").encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A GUID as text (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) from AD's 16 bytes, whose first three
/// fields are little-endian.
pub(crate) fn guid_text(b: &[u8]) -> Option<String> {
    let b: [u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The inverse of [`guid_text`].
pub(crate) fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut plain = [0u8; 16];
    for (i, byte) in plain.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 16];
    for (i, &from) in order.iter().enumerate() {
        out[i] = plain[from];
    }
    Some(out)
}

/// Forest-wide groups live in the forest root domain, whose SID may differ from the person's.
const PROTECTED_FOREST_RIDS: [u32; 3] = [518, 519, 527];

/// Whether a group SID in a person's token is one of the protected groups.
fn is_protected_group(sid: &str, domain_sid: &str) -> bool {
    let Some((prefix, rid)) = sid.rsplit_once('-') else { return false };
    let Ok(rid) = rid.parse::<u32>() else { return false };
    (prefix == domain_sid && PROTECTED_DOMAIN_RIDS.contains(&rid))
        || (prefix == "S-1-5-32" && PROTECTED_BUILTIN_RIDS.contains(&rid))
        || (prefix.starts_with("S-1-5-21-") && PROTECTED_FOREST_RIDS.contains(&rid))
}

/// How long ago an NT FILETIME (100 ns since 1601) was; `None` for 0 ("must change") or nonsense.
/// An NT FILETIME (100 ns since 1601) as Unix seconds; `None` for 0 (never, or must change).
fn filetime_unix(filetime: i64) -> Option<i64> {
    const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;
    (filetime > 0).then(|| filetime.saturating_sub(UNIX_EPOCH_AS_FILETIME) / 10_000_000)
}

fn filetime_age_secs(filetime: i64) -> Option<u64> {
    const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;
    let set = (filetime.checked_sub(UNIX_EPOCH_AS_FILETIME)? / 10_000_000).max(0);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (filetime > 0).then(|| u64::try_from(now - set).unwrap_or(0))
}

/// A SID (binary) with one more sub-authority, `rid`.
fn sid_with_rid(base: &[u8], rid: u32) -> Vec<u8> {
    let mut sid = base.to_vec();
    if let Some(count) = sid.get_mut(1) {
        *count += 1;
    }
    sid.extend_from_slice(&rid.to_le_bytes());
    sid
}

/// A DN as an assertion value in a filter.
fn ldap_escape_value(dn: &str) -> String {
    ldap3::ldap_escape(dn).into_owned()
}

/// Bytes as an LDAP filter value (`\xx` each), for binary attributes such as `objectGUID`.
fn escape_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

/// A binary SID as `S-1-5-21-…`.
pub fn parse_sid(b: &[u8]) -> Option<String> {
    let revision = *b.first()?;
    let count = usize::from(*b.get(1)?);
    let authority = b.get(2..8)?.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
    let mut s = format!("S-{revision}-{authority}");
    for i in 0..count {
        let sub = b.get(8 + 4 * i..12 + 4 * i)?;
        s.push_str(&format!("-{}", u32::from_le_bytes(sub.try_into().ok()?)));
    }
    (b.len() == 8 + 4 * count).then_some(s)
}

fn first<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e str> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.first()).map(String::as_str)
}

fn all(entry: &SearchEntry, name: &str) -> Vec<String> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Every value of a binary attribute. ldap3 files a value under `attrs` when its bytes happen to
/// be valid UTF-8, so both places are looked at.
fn all_bytes(entry: &SearchEntry, name: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = entry
        .bin_attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.iter().cloned())
        .collect();
    out.extend(all(entry, name).into_iter().map(String::into_bytes));
    out
}

fn bytes(entry: &SearchEntry, name: &str) -> Option<Vec<u8>> {
    all_bytes(entry, name).into_iter().next()
}

fn number<T: std::str::FromStr>(entry: &SearchEntry, name: &str) -> Option<T> {
    first(entry, name).and_then(|v| v.trim().parse().ok())
}

/// AD intervals are negative counts of 100 ns.
fn interval_secs(entry: &SearchEntry, name: &str) -> Option<u64> {
    number::<i64>(entry, name).map(|v| v.unsigned_abs() / 10_000_000)
}

fn domain_policy(e: &SearchEntry) -> PolicyFacts {
    PolicyFacts {
        min_length: number(e, "minPwdLength"),
        history: number(e, "pwdHistoryLength"),
        min_age_secs: interval_secs(e, "minPwdAge"),
        complexity: number::<u32>(e, "pwdProperties").map(|p| p & DOMAIN_PASSWORD_COMPLEX != 0),
        lockout_threshold: number(e, "lockoutThreshold"),
        lockout_duration_secs: interval_secs(e, "lockoutDuration"),
    }
}

fn pso_policy(e: &SearchEntry) -> PolicyFacts {
    PolicyFacts {
        min_length: number(e, "msDS-MinimumPasswordLength"),
        history: number(e, "msDS-PasswordHistoryLength"),
        min_age_secs: interval_secs(e, "msDS-MinimumPasswordAge"),
        complexity: first(e, "msDS-PasswordComplexityEnabled").map(|v| v.eq_ignore_ascii_case("TRUE")),
        lockout_threshold: number(e, "msDS-LockoutThreshold"),
        lockout_duration_secs: interval_secs(e, "msDS-LockoutDuration"),
    }
}

/// A modify's result and its raw text, naming the `right` the service account lacks on `dn` when
/// the DC says so (rc 50); or the answer when no result came.
fn written(
    result: Result<ldap3::LdapResult, Failure>,
    right: &str,
    dn: &str,
) -> Result<(ldap3::LdapResult, String), Answer> {
    let res = result.map_err(|f| answer::failure(&f))?;
    let mut raw = answer::raw(res.rc, &res.text, None);
    if res.rc == 50 {
        raw = format!("{raw} (the service account lacks {right} on {dn})");
    }
    Ok((res, raw))
}

/// The entry's own SID as (domain SID, relative id).
fn own_sid(entry: &SearchEntry) -> Option<(String, u32)> {
    let sid = parse_sid(&bytes(entry, "objectSid")?)?;
    let (domain, rid) = sid.rsplit_once('-')?;
    Some((domain.to_string(), rid.parse().ok()?))
}

/// Whether the entry is one of the well-known protected accounts (Administrator, krbtgt).
fn protected_rid(entry: &SearchEntry) -> bool {
    own_sid(entry).is_some_and(|(_, rid)| PROTECTED_DOMAIN_RIDS.contains(&rid))
}

fn synced_user(entry: &SearchEntry) -> Option<SyncedUser> {
    let anchor = Anchor::parse(&guid_text(&bytes(entry, "objectGUID")?)?).ok()?;
    let username = first(entry, "sAMAccountName")?.to_string();
    let uac: u32 = number(entry, "userAccountControl").unwrap_or(0);
    let computed: u32 = number(entry, "msDS-User-Account-Control-Computed").unwrap_or(0);
    Some(SyncedUser {
        anchor,
        dn: entry.dn.clone(),
        email: first(entry, "mail").and_then(|m| EmailAddress::parse(m).ok()),
        other_emails: all(entry, "otherMailbox").iter().filter_map(|m| EmailAddress::parse(m).ok()).collect(),
        mobile: first(entry, "mobile").map(str::to_string),
        display_name: first(entry, "displayName").unwrap_or(&username).to_string(),
        enabled: uac & UF_ACCOUNTDISABLE == 0,
        locked: computed & UF_LOCKOUT != 0,
        protected: first(entry, "adminCount") == Some("1") || protected_rid(entry),
        groups: all(entry, "memberOf"),
        password_changed_at: match number::<i64>(entry, "pwdLastSet") {
            Some(0) => Some(crate::domain::PASSWORD_MUST_CHANGE),
            set => set.and_then(filetime_unix),
        },
        username,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guid_reads_in_ads_mixed_endian_order_and_back() {
        let raw = [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
        let text = guid_text(&raw).unwrap();
        assert_eq!(text, "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(guid_bytes(&text).unwrap(), raw);
        assert!(guid_bytes("not-a-guid").is_none());
        assert_eq!(escape_bytes(&raw[..2]), "\\33\\22");
    }

    #[test]
    fn a_password_is_quoted_and_utf16_little_endian() {
        assert_eq!(quoted_utf16("a€"), vec![0x22, 0, 0x61, 0, 0xac, 0x20, 0x22, 0]);
    }

    #[test]
    fn forest_wide_admin_groups_are_protected_whatever_the_domain() {
        let mine = "S-1-5-21-1-2-3";
        assert!(is_protected_group("S-1-5-21-1-2-3-512", mine));
        assert!(!is_protected_group("S-1-5-21-9-9-9-512", mine), "another domain's Domain Admins is not ours");
        assert!(is_protected_group("S-1-5-21-9-9-9-519", mine), "Enterprise Admins of the forest root");
        assert!(is_protected_group("S-1-5-32-544", mine));
        assert!(!is_protected_group("S-1-5-21-1-2-3-513", mine), "Domain Users");
    }

    #[test]
    fn a_rid_extends_a_sid() {
        let domain = {
            let mut b = vec![1u8, 4, 0, 0, 0, 0, 0, 5];
            for sub in [21u32, 1, 2, 3] {
                b.extend_from_slice(&sub.to_le_bytes());
            }
            b
        };
        assert_eq!(parse_sid(&sid_with_rid(&domain, 512)).unwrap(), "S-1-5-21-1-2-3-512");
        assert_eq!(parse_sid(&sid_with_rid(&[1u8, 1, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0], 544)).unwrap(), "S-1-5-32-544");
    }

    #[test]
    fn sids_read_as_text() {
        // S-1-5-21-1-2-3-512
        let mut b = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1, 2, 3, 512] {
            b.extend_from_slice(&sub.to_le_bytes());
        }
        assert_eq!(parse_sid(&b).unwrap(), "S-1-5-21-1-2-3-512");
        assert!(parse_sid(&b[..10]).is_none());
        // S-1-5-32-544, Administrators
        let mut builtin = vec![1u8, 2, 0, 0, 0, 0, 0, 5];
        builtin.extend_from_slice(&32u32.to_le_bytes());
        builtin.extend_from_slice(&544u32.to_le_bytes());
        assert_eq!(parse_sid(&builtin).unwrap(), "S-1-5-32-544");
    }

    #[test]
    fn the_domain_policy_numbers_are_read_in_seconds() {
        let mut attrs = std::collections::HashMap::new();
        for (k, v) in
            [("minPwdLength", "7"), ("pwdProperties", "1"), ("pwdHistoryLength", "24"), ("minPwdAge", "-864000000000")]
        {
            attrs.insert(k.to_string(), vec![v.to_string()]);
        }
        let e = SearchEntry { dn: "DC=corp,DC=test".into(), attrs, bin_attrs: Default::default() };
        assert_eq!(
            domain_policy(&e),
            PolicyFacts {
                min_length: Some(7),
                history: Some(24),
                min_age_secs: Some(86_400),
                complexity: Some(true),
                lockout_threshold: None,
                lockout_duration_secs: None,
            }
        );
    }
}
