//! The doctor's OpenLDAP checks: the ppolicy overlay, the policy that applies to resets, and the
//! service account's rights on a person in each base DN.
//!
//! Every right is probed by deleting a value the person cannot have. slapd checks access on the
//! modification before it looks for the value, so with the right the answer is 16 (`modify/delete:
//! <attr>: no such value`, or `no such attribute`) and without it 50 (insufficient access), and
//! in neither case does anything change (measured on OpenLDAP 2.5 with ppolicy: entryCSN stays,
//! also on a locked account with `pwdReset: TRUE` and with `pwdSafeModify: TRUE`):
//! * write `userPassword` (what the Password Modify operation writes): a value made up now,
//!   which no stored hash or clear text can equal;
//! * unlock: `pwdAccountLockedTime` and `pwdFailureTime` of 1970-01-01 00:00:01, with the Relax
//!   control, as the unlock itself sends (without it slapd answers 19, "no user modification
//!   allowed", for `pwdFailureTime`);
//! * must change (`pwdReset`): the boolean value the person does not have, with Relax.

use super::{probe_people, Checks, ProbePerson};
use crate::config::DirectoryConfig;
use crate::directory::answer::Failure;
use crate::directory::answer::PPOLICY_OID;
use crate::directory::openldap::{OpenLdap, RELAX_OID};
use crate::directory::pool::{Conn, Retry};
use crate::domain::SyncedUser;
use ldap3::controls::RawControl;
use ldap3::{LdapError, Mod, Scope, SearchEntry};
use std::collections::HashSet;

/// A lock or failure time no real lock has.
const NEVER_LOCKED_AT: &str = "19700101000001Z";

pub(super) const PASSWORD_ROW: &str = "right: write userPassword (password modify)";
pub(super) const UNLOCK_ROW: &str = "right: delete pwdAccountLockedTime and pwdFailureTime (unlock)";
pub(super) const MUST_CHANGE_ROW: &str = "right: write pwdReset (must change)";

pub(super) async fn checks(ol: &OpenLdap, cfg: &DirectoryConfig, people: &[SyncedUser], out: &mut Checks) {
    ppolicy(ol, out).await;
    out.info(
        "protected accounts",
        format!(
            "OpenLDAP has no protected groups: none of the {} people in scope is treated as protected, so any of \
             them may reset a forgotten password. Keep administrators' entries outside base_dns, or leave them \
             out with user_filter",
            people.len()
        ),
    );
    let (bases, _) = ol.scope();
    for (base, probe) in probe_people(bases, people, &cfg.bind_dn) {
        match probe {
            Some(p) => {
                let may_mark = rights(ol, &p, &cfg.bind_dn, out).await;
                policy(ol, &p, may_mark, out).await;
            }
            None => {
                for row in [PASSWORD_ROW, UNLOCK_ROW, MUST_CHANGE_ROW] {
                    out.not_checked(row, format!("no one under {base} to probe on"));
                }
            }
        }
    }
}

async fn ppolicy(ol: &OpenLdap, out: &mut Checks) {
    const NAME: &str = "ppolicy overlay";
    let root = read(ol, "", &["supportedControl"]).await;
    match root {
        Ok(Some(e)) if values(&e, "supportedControl").iter().any(|c| c == PPOLICY_OID) => {
            out.pass(NAME, "the server answers the password policy control: its policy applies to resets and changes")
        }
        Ok(_) => out.warn(
            NAME,
            format!(
                "{PPOLICY_OID} is not in the rootDSE's supportedControl: no password policy is enforced, and \
                     refusals cannot name their rule"
            ),
            "load the ppolicy overlay (olcOverlay=ppolicy) on this database, with a default policy",
        ),
        Err(f) => out.fail(NAME, format!("the rootDSE cannot be read: {f}"), "see the error"),
    }
}

/// Returns whether the service account may write `pwdReset` (what a reset within a policy's
/// minimum age needs).
async fn rights(ol: &OpenLdap, p: &ProbePerson<'_>, bind_dn: &str, out: &mut Checks) -> bool {
    let dn = p.user.dn.as_str();
    let on = format!("on {dn}, the first person under {}", p.base);
    let made_up = format!("{{passback-doctor}}{}", uuid::Uuid::new_v4().simple());
    let password = probe(ol, dn, vec![("userPassword", made_up)], false).await;
    report(
        out,
        PASSWORD_ROW,
        &on,
        password,
        &format!(
            "give {bind_dn} write (=w; =wx to also check old passwords) on userPassword of the people under {}: an \
         olcAccess rule `to dn.subtree=\"{}\" attrs=userPassword by dn.exact=\"{bind_dn}\" =wx`",
            p.base, p.base
        ),
    );
    let unlock = probe(
        ol,
        dn,
        vec![("pwdAccountLockedTime", NEVER_LOCKED_AT.into()), ("pwdFailureTime", NEVER_LOCKED_AT.into())],
        true,
    )
    .await;
    let manage = format!(
        "give {bind_dn} manage on pwdAccountLockedTime, pwdFailureTime and pwdReset of the people under {}: \
         `to dn.subtree=\"{}\" attrs=pwdAccountLockedTime,pwdFailureTime,pwdReset by dn.exact=\"{bind_dn}\" manage` \
         (manage on userPassword would turn off ppolicy's checks on resets)",
        p.base, p.base
    );
    report(out, UNLOCK_ROW, &on, unlock, &manage);
    // The boolean value the person does not have: deleting it can change nothing.
    let current = read(ol, dn, &["pwdReset"]).await.ok().flatten();
    let has_false = current.is_some_and(|e| values(&e, "pwdReset").iter().any(|v| v.eq_ignore_ascii_case("FALSE")));
    let absent = if has_false { "TRUE" } else { "FALSE" };
    let must_change = probe(ol, dn, vec![("pwdReset", absent.into())], true).await;
    let may_mark = must_change.as_ref().is_ok_and(|r| r.rc == 16);
    report(out, MUST_CHANGE_ROW, &on, must_change, &manage);
    may_mark
}

/// Deletes each (attribute, value) in a modify of its own, stopping at the first answer that is
/// not "no such value"; `relax` as the agent's own unlock and must-change send it.
async fn probe(
    ol: &OpenLdap,
    dn: &str,
    values: Vec<(&'static str, String)>,
    relax: bool,
) -> Result<ldap3::LdapResult, Failure> {
    let mut last = None;
    for (attr, value) in values {
        let value = value.as_str();
        let res = ol
            .pool()
            .run(Retry::Safe, |mut c: Conn| async move {
                let controls = if relax {
                    vec![RawControl { ctype: RELAX_OID.to_string(), crit: true, val: None }]
                } else {
                    Vec::new()
                };
                c.op().with_controls(controls).modify(dn, vec![Mod::Delete(attr, HashSet::from([value]))]).await
            })
            .await?;
        if res.rc != 16 {
            return Ok(res);
        }
        last = Some(res);
    }
    last.ok_or_else(|| Failure::Internal("nothing to probe".into()))
}

fn report(out: &mut Checks, name: &str, on: &str, answer: Result<ldap3::LdapResult, Failure>, fix: &str) {
    match answer {
        Ok(res) if res.rc == 16 => {
            out.pass(name, format!("{on}: allowed (rc=16 {:?}; nothing was there to remove)", res.text))
        }
        Ok(res) if res.rc == 50 => out.fail(name, format!("{on}: refused, rc=50 insufficient access"), fix),
        Ok(res) if res.rc == 0 => out.fail(
            name,
            format!("{on}: the directory removed a value that should not exist"),
            "look at the person's entry; report this to passback's maintainers",
        ),
        Ok(res) => out.warn(name, format!("{on}: unexpected answer rc={} {:?}", res.rc, res.text), fix),
        Err(f) => out.not_checked(name, format!("{on}: no answer: {f}")),
    }
}

/// The policy ppolicy applies to the person: a warning when it will refuse the service account's
/// resets for want of the old password, and a failure when its minimum age would block resets of
/// a password changed lately (ppolicy applies `pwdMinAge` to every identity that is not a
/// password administrator; the agent marks the entry `pwdReset` first, which ppolicy exempts,
/// and that needs manage on `pwdReset`).
async fn policy(ol: &OpenLdap, p: &ProbePerson<'_>, may_mark: bool, out: &mut Checks) {
    const NAME: &str = "password policy";
    let dn = p.user.dn.as_str();
    let own = read(ol, dn, &["pwdPolicySubentry"]).await.ok().flatten();
    let own = own.and_then(|e| values(&e, "pwdPolicySubentry").into_iter().next());
    let Some(policy_dn) = own.or_else(|| ol.policy_dn().map(str::to_string)) else {
        out.info(
            NAME,
            format!("{dn} has no pwdPolicySubentry and policy_dn is not set: the overlay's default applies"),
        );
        return;
    };
    const MIN_AGE: &str = "minimum age on resets";
    if let Ok(Some(e)) = read(ol, &policy_dn, &["pwdMinAge"]).await {
        match values(&e, "pwdMinAge").first().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) {
            0 => out.pass(MIN_AGE, format!("{policy_dn} has no minimum age")),
            secs if may_mark => out.pass(
                MIN_AGE,
                format!(
                    "{policy_dn} has pwdMinAge {secs} s, for people's own changes: a forgotten password changed \
                     within it is still reset (the agent marks the entry pwdReset first, which ppolicy exempts)"
                ),
            ),
            secs => out.fail(
                MIN_AGE,
                format!(
                    "{policy_dn} has pwdMinAge {secs} s, and the service account cannot write pwdReset: a \
                     forgotten password changed within the last {secs} s cannot be reset"
                ),
                "give the service account manage on pwdReset (see the must-change row)",
            ),
        }
    }
    match read(ol, &policy_dn, &["pwdSafeModify"]).await {
        Ok(Some(e)) if values(&e, "pwdSafeModify").iter().any(|v| v.eq_ignore_ascii_case("TRUE")) => out.warn(
            NAME,
            format!(
                "{policy_dn} (for {dn}) has pwdSafeModify: TRUE: a reset by an account without manage on \
                     userPassword is refused (mustSupplyOldPassword)"
            ),
            format!("set pwdSafeModify: FALSE in {policy_dn}, so that resets go through ppolicy's checks"),
        ),
        Ok(Some(_)) => out.pass(NAME, format!("{policy_dn} applies to {dn}; resets are checked against it")),
        Ok(None) => out.warn(
            NAME,
            format!("{policy_dn} (for {dn}) cannot be found"),
            "correct policy_dn, or let the service account read the policy entries",
        ),
        Err(f) => out.warn(
            NAME,
            format!("{policy_dn} cannot be read: {f}"),
            "let the service account read the policy entries",
        ),
    }
}

async fn read(ol: &OpenLdap, dn: &str, attrs: &[&str]) -> Result<Option<SearchEntry>, Failure> {
    let attrs = attrs.to_vec();
    ol.pool()
        .run(Retry::Safe, |mut c: Conn| {
            let attrs = attrs.clone();
            async move {
                match c.op().search(dn, Scope::Base, "(objectClass=*)", attrs).await?.success() {
                    Ok((e, _)) => Ok(e.into_iter().next().map(SearchEntry::construct)),
                    Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

fn values(e: &SearchEntry, name: &str) -> Vec<String> {
    e.attrs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v.clone()).collect()
}
