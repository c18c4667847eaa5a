//! The doctor's Active Directory checks: the policy-hints control, how protected accounts are
//! told apart, and the service account's three rights on a person in each base DN.
//!
//! How each right is probed (measured against Samba 4.17's acl module, which checks access
//! before any module looks at the values):
//! * write `lockoutTime` and `pwdLastSet`: read the person's `allowedAttributesEffective`, the
//!   attributes the bound account may write there. A pure read. With the three delegated ACEs
//!   svc-reset sees exactly `lockoutTime` and `pwdLastSet`; without the `pwdLastSet` ACE only
//!   `lockoutTime`; with none, nothing. (A write of an impossible value is no probe here: Samba
//!   accepts `lockoutTime = 5`.)
//! * Reset password (a control access right, not listed there): `replace unicodePwd` with one
//!   byte, 0x00. AD takes a password only as UTF-16LE in double quotes (an even number of bytes,
//!   at least four), so one byte can never be one, under any policy. Without the right Samba
//!   answers 50 `error in module acl: insufficient access rights during LDB_MODIFY (50)`; with it
//!   53 `00002035: setup_io: it's not allowed to set the NT hash password directly` (an unquoted
//!   value reads as an NT hash, which only the DC itself may set). The person's uSNChanged,
//!   pwdLastSet and badPwdCount stay as they were, and their password still binds.
//!   (A quoted value is never used: Samba reads `"` + a lone surrogate + `"` as a short password,
//!   which a lax policy would accept.)
//! * Change password: granted to Everyone by default. Not probed: a wrong old password counts
//!   as a failed sign-in, and a refused right cannot be told from a refused value without reading
//!   Samba's message text (both are 19 there).

use super::{probe_people, Checks, ProbePerson};
use crate::config::{DirectoryConfig, HistoryOnReset};
use crate::directory::ad::{parse_sid, Ad, POLICY_HINTS_DEPRECATED_OID, POLICY_HINTS_OID};
use crate::directory::answer::Failure;
use crate::directory::pool::{Conn, Retry};
use crate::domain::SyncedUser;
use ldap3::{LdapError, Mod, Scope, SearchEntry};
use std::collections::HashSet;

/// schemaIDGUID of the `user` class: the delegation applies to user objects.
const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
/// The "Reset Password" control access right.
const RESET_PASSWORD_RIGHT: &str = "00299570-246d-11d0-a768-00aa006e0529";
/// The attributes written to unlock and to require a new password, with their schemaIDGUIDs
/// and what fails without them.
const WRITTEN_ATTRIBUTES: [(&str, &str, &str); 2] = [
    ("lockoutTime", "28630ebf-41d5-11d1-a9c1-0000f80367c1", "unlocking an account"),
    ("pwdLastSet", "bf967a0a-0de6-11d0-a285-00aa003049e2", "\"must change at next sign-in\""),
];
/// A `unicodePwd` value that can never be a password (see the module's notes).
const NEVER_A_PASSWORD: [u8; 1] = [0];

pub(super) const RESET_ROW: &str = "right: Reset password";

/// Who the service account is, for the fixes: the name dsacls takes, and its SID for SDDL.
struct Account {
    name: String,
    sid: Option<String>,
}

pub(super) async fn checks(ad: &Ad, cfg: &DirectoryConfig, people: &[SyncedUser], out: &mut Checks) {
    let account = account(ad, &cfg.bind_dn).await;
    policy_hints(ad, out).await;
    let (bases, _) = ad.scope();
    let probes = probe_people(bases, people, &cfg.bind_dn);
    let first = probes.iter().find_map(|(_, p)| p.as_ref());
    protected(ad, people, first, out).await;
    for (base, probe) in &probes {
        match probe {
            Some(p) => rights(ad, p, &account, out).await,
            None => {
                let why = format!("no person under {base} who is not protected, to probe on");
                out.not_checked(RESET_ROW, why.clone());
                for (attr, _, _) in WRITTEN_ATTRIBUTES {
                    out.not_checked(&format!("right: write {attr}"), why.clone());
                }
            }
        }
    }
    out.not_checked(
        "right: Change password",
        "granted to Everyone by default; not probed, because a wrong old password would count as a failed \
         sign-in for the person",
    );
}

async fn account(ad: &Ad, bind_dn: &str) -> Account {
    let fallback = Account { name: bind_dn.to_string(), sid: None };
    if !bind_dn.contains('=') {
        return fallback; // a UPN or DOMAIN\name: dsacls takes it as it is.
    }
    let entry = ad
        .pool()
        .run(Retry::Safe, |mut c: Conn| async move {
            let attrs = vec!["objectSid", "sAMAccountName", "userPrincipalName"];
            let (e, _) = c.op().search(bind_dn, Scope::Base, "(objectClass=*)", attrs).await?.success()?;
            Ok::<_, LdapError>(e.into_iter().next().map(SearchEntry::construct))
        })
        .await;
    let Ok(Some(entry)) = entry else { return fallback };
    let text = |name: &str| entry.attrs.get(name).and_then(|v| v.first()).cloned();
    let sid = entry
        .bin_attrs
        .get("objectSid")
        .and_then(|v| v.first().cloned())
        .or_else(|| text("objectSid").map(String::into_bytes))
        .and_then(|b| parse_sid(&b));
    Account { name: text("userPrincipalName").or_else(|| text("sAMAccountName")).unwrap_or(fallback.name), sid }
}

async fn policy_hints(ad: &Ad, out: &mut Checks) {
    const NAME: &str = "policy hints (history on resets)";
    let oids = format!("{POLICY_HINTS_OID} nor {POLICY_HINTS_DEPRECATED_OID}");
    match (ad.policy_hints_oid().await, ad.history_on_reset()) {
        (Ok(Some(oid)), _) => out.pass(
            NAME,
            format!("the DC supports {oid}: resets are sent with it, so password history applies to resets too"),
        ),
        (Ok(None), Some(HistoryOnReset::Required)) => out.fail(
            NAME,
            format!(
                "the rootDSE lists neither {oids}, and history_on_reset = \"required\": every reset will be \
                 refused (PB-3003)"
            ),
            "set history_on_reset = \"best_effort\" to reset without history, or use domain controllers that \
             support the control (Windows Server 2012 or later)",
        ),
        (Ok(None), _) => out.warn(
            NAME,
            format!(
                "the rootDSE lists neither {oids}: password history is not checked on resets (changes still \
                 check it). Resets go ahead and their audit record says so (history_on_reset is {})",
                ad.history_on_reset().map_or("unset", |h| h.as_str())
            ),
            "to refuse resets instead, set history_on_reset = \"required\"; to have history checked, use domain \
             controllers that support the control (Windows Server 2012 or later; Samba 4.17 does not)",
        ),
        (Err(f), _) => out.fail(NAME, format!("the rootDSE cannot be read: {f}"), "see the error"),
    }
}

async fn protected(ad: &Ad, people: &[SyncedUser], probe: Option<&ProbePerson<'_>>, out: &mut Checks) {
    const NAME: &str = "protected accounts";
    let n = people.iter().filter(|p| p.protected).count();
    let how = format!(
        "{n} of {} people in scope are protected: they may change a password they know but not reset a \
         forgotten one. Recognised by adminCount=1, the accounts Administrator and krbtgt, and membership \
         (nested too) of the groups AD protects, found by their well-known SIDs: Domain Admins, Enterprise \
         Admins, Schema Admins, Administrators, Account, Server, Print and Backup Operators, Domain Controllers, \
         Key Admins, Replicator",
        people.len()
    );
    let Some(p) = probe else {
        out.info(NAME, format!("{how}. A reset also reads the person's tokenGroups: not checked, no one to read"));
        return;
    };
    let dn = p.user.dn.as_str();
    match ad.reset_protection(dn).await {
        Ok(Ok(None)) => out.pass(NAME, format!("{how}. A reset also reads the person's tokenGroups: read on {dn}")),
        Ok(Ok(Some(why))) => out.warn(
            NAME,
            format!("{how}. The sync counts {dn} as not protected, but a reset would refuse it ({why})"),
            "look at the person's group memberships: the sync and the reset disagree about them",
        ),
        Ok(Err(why)) => out.fail(
            NAME,
            format!("{how}. But {why}: the agent cannot tell administrators apart, so every reset would be refused (PB-3003)"),
            "let the service account read tokenGroups: add it to the built-in group \"Windows Authorization Access Group\"",
        ),
        Err(f) => out.fail(NAME, format!("{how}. Reading {dn} failed: {f}"), "see the error"),
    }
}

async fn rights(ad: &Ad, p: &ProbePerson<'_>, account: &Account, out: &mut Checks) {
    let dn = p.user.dn.as_str();
    let on = format!("on {dn}, the first person under {} who is not protected", p.base);
    match reset_probe(ad, dn).await {
        Ok(res) if res.rc == 50 => out.fail(
            RESET_ROW,
            format!("{} lacks Reset password {on}: rc=50 {:?}; resets would fail (PB-3003)", account.name, res.text),
            grant(account, p.base, "CR", RESET_PASSWORD_RIGHT, "CA;Reset Password"),
        ),
        Ok(res) if res.rc == 0 => out.fail(
            RESET_ROW,
            format!("the DC accepted a one-byte unicodePwd {on}: that should be impossible"),
            "check the person's account, and report this DC's version to passback's maintainers",
        ),
        Ok(res) => out.pass(
            RESET_ROW,
            format!(
                "{on}: the DC passed its access check and refused a value that is never a password (rc={} {:?})",
                res.rc, res.text
            ),
        ),
        Err(f) => out.not_checked(RESET_ROW, format!("{on}: no answer to the probe: {f}")),
    }
    let effective = allowed_attributes(ad, dn).await;
    for (attr, guid, needed_for) in WRITTEN_ATTRIBUTES {
        let name = format!("right: write {attr}");
        match &effective {
            Ok(allowed) if allowed.contains(&attr.to_ascii_lowercase()) => {
                out.pass(&name, format!("{on}: allowedAttributesEffective lists {attr}"))
            }
            Ok(_) => out.fail(
                &name,
                format!(
                    "{} may not write {attr} {on} (allowedAttributesEffective does not list it): {needed_for} \
                     would fail (PB-3003)",
                    account.name
                ),
                grant(account, p.base, "WP", guid, &format!("WP;{attr}")),
            ),
            Err(f) => out.not_checked(&name, format!("{on}: allowedAttributesEffective unreadable: {f}")),
        }
    }
}

/// The one write the doctor sends to AD: refused whatever the rights (see the module's notes).
async fn reset_probe(ad: &Ad, dn: &str) -> Result<ldap3::LdapResult, Failure> {
    ad.pool()
        .run(Retry::UnlessSent, |mut c: Conn| async move {
            let never = HashSet::from([NEVER_A_PASSWORD.to_vec()]);
            c.op().modify(dn, vec![Mod::Replace(b"unicodePwd".to_vec(), never)]).await
        })
        .await
}

/// The attributes the service account may write on `dn`, lower-cased.
async fn allowed_attributes(ad: &Ad, dn: &str) -> Result<HashSet<String>, Failure> {
    let entry = ad
        .pool()
        .run(Retry::Safe, |mut c: Conn| async move {
            let attrs = vec!["allowedAttributesEffective"];
            let (e, _) = c.op().search(dn, Scope::Base, "(objectClass=*)", attrs).await?.success()?;
            Ok::<_, LdapError>(e.into_iter().next().map(SearchEntry::construct))
        })
        .await?
        .ok_or_else(|| Failure::Internal(format!("{dn} cannot be read")))?;
    Ok(entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("allowedAttributesEffective"))
        .flat_map(|(_, v)| v.iter().map(|a| a.to_ascii_lowercase()))
        .collect())
}

/// How to delegate one right on user objects below `base`, on Windows and on Samba.
fn grant(account: &Account, base: &str, sddl_right: &str, object: &str, dsacls: &str) -> String {
    let sid = account.sid.as_deref().unwrap_or("<SID of the service account>");
    let what = match sddl_right {
        "CR" => "'Reset password'".to_string(),
        _ => format!("'Write {}'", dsacls.trim_start_matches("WP;")),
    };
    format!(
        "grant {} {what} on descendant User objects of {base}: with the Delegation of Control wizard (Active \
         Directory Users and Computers), or `dsacls \"{base}\" /I:S /G \"{}:{dsacls};user\"`; on Samba: \
         `samba-tool dsacl set --objectdn=\"{base}\" --action=allow --sddl=\"(OA;CIIO;{sddl_right};{object};{USER_CLASS};{sid})\"`",
        account.name, account.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_for_a_missing_right_names_it_the_base_and_the_account() {
        let account = Account { name: "svc-reset@corp.test".into(), sid: Some("S-1-5-21-1-2-3-1104".into()) };
        let fix = grant(&account, "OU=Staff,DC=corp,DC=test", "WP", WRITTEN_ATTRIBUTES[1].1, "WP;pwdLastSet");
        assert!(fix.contains("'Write pwdLastSet' on descendant User objects of OU=Staff,DC=corp,DC=test"), "{fix}");
        assert!(fix.contains("/G \"svc-reset@corp.test:WP;pwdLastSet;user\""), "{fix}");
        assert!(fix.contains("(OA;CIIO;WP;bf967a0a-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;S-1-5-21-1-2-3-1104)"), "{fix}");
        let fix = grant(&account, "OU=Staff,DC=corp,DC=test", "CR", RESET_PASSWORD_RIGHT, "CA;Reset Password");
        assert!(fix.contains("grant svc-reset@corp.test 'Reset password'"), "{fix}");
    }
}
