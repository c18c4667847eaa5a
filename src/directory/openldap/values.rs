//! What OpenLDAP answers, read as Rust values: ppolicy's controls, a policy entry, a person
//! entry for the sync, and LDAP generalized time.

use super::*;

/// Asks ppolicy to say which rule refused a password. Not critical: a directory without the
/// overlay still answers, just less precisely.
/// The answer for an account ppolicy locked for good (its way of disabling one).
pub(super) fn disabled(dn: &str) -> Answer {
    Answer {
        outcome: Outcome::AccountDisabled,
        raw: format!("{dn} is locked for good (pwdAccountLockedTime {PERMANENT_LOCK})"),
        policy: None,
    }
}

/// The ppolicy error the directory attached to an answer, if any.
pub(super) fn ppolicy_error(res: &ldap3::LdapResult) -> Option<u8> {
    res.ctrls.iter().find(|c| c.1.ctype == PPOLICY_OID).and_then(|c| c.1.val.as_deref()).and_then(answer::ppolicy_error)
}

pub(super) fn ppolicy_request() -> RawControl {
    RawControl { ctype: PPOLICY_OID.to_string(), crit: false, val: None }
}

/// The first value of an attribute, whatever the case the server spells its name in.
pub(super) fn first<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e str> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first())
        .map(String::as_str)
}

pub(super) fn number<T: std::str::FromStr>(entry: &SearchEntry, name: &str) -> Option<T> {
    first(entry, name).and_then(|v| v.trim().parse().ok())
}

pub(super) fn policy_facts(entry: &SearchEntry) -> PolicyFacts {
    let quality: Option<u32> = number(entry, "pwdCheckQuality");
    // Without a checker module, ppolicy's "quality" only refuses pre-hashed values: no
    // complexity rule a person would have to follow.
    let checker = first(entry, "pwdCheckModule").is_some();
    PolicyFacts {
        min_length: number(entry, "pwdMinLength"),
        history: number(entry, "pwdInHistory"),
        min_age_secs: number(entry, "pwdMinAge"),
        max_age_secs: number(entry, "pwdMaxAge"),
        complexity: quality.map(|q| q > 0 && checker),
        // ppolicy locks only with pwdLockout TRUE; pwdMaxFailure alone just counts.
        // Absent: unknown (not readable), rather than "never locks".
        lockout_duration_secs: number(entry, "pwdLockoutDuration"),
        lockout_threshold: match first(entry, "pwdLockout") {
            Some("TRUE") => Some(number(entry, "pwdMaxFailure").unwrap_or(0)),
            Some(_) => Some(0),
            None => None,
        },
        // Set up as documented (no manage right on userPassword), the service account's resets
        // are checked by ppolicy like a person's change; before a reset that must be, the agent
        // has the directory show it (`OpenLdap::set_password_as`).
        history_on_reset: Some(true),
    }
}

pub(super) fn synced_user(entry: &SearchEntry) -> Option<SyncedUser> {
    let anchor = Anchor::parse(first(entry, "entryUUID")?).ok()?;
    let username = first(entry, "uid")?.to_string();
    let locked_time = first(entry, "pwdAccountLockedTime");
    let display_name = first(entry, "displayName").or_else(|| first(entry, "cn")).unwrap_or(&username).to_string();
    Some(SyncedUser {
        anchor,
        dn: entry.dn.clone(),
        email: first(entry, "mail").and_then(|m| EmailAddress::parse(m).ok()),
        other_emails: Vec::new(),
        mobile: first(entry, "mobile").map(str::to_string),
        display_name,
        enabled: locked_time != Some(PERMANENT_LOCK),
        protected: false,
        locked: locked_time.is_some(),
        groups: entry.attrs.get("memberOf").cloned().unwrap_or_default(),
        password_changed_at: if first(entry, "pwdReset") == Some("TRUE") {
            Some(crate::domain::PASSWORD_MUST_CHANGE)
        } else {
            first(entry, "pwdChangedTime").and_then(generalized_time_unix)
        },
        // Worked out by the sync, which reads the person's policy.
        password_expires_at: None,
        username,
    })
}

/// When a password set at `set_at` expires under `policy`: ppolicy's `pwdMaxAge` after the last
/// change (0 or absent: never). A password that must be changed now
/// ([`crate::domain::PASSWORD_MUST_CHANGE`]) has no later expiry to tell.
pub(super) fn expiry(set_at: Option<i64>, policy: Option<&PolicyFacts>) -> Option<i64> {
    let max_age = policy.and_then(|p| p.max_age_secs).filter(|s| *s > 0)?;
    let set_at = set_at.filter(|at| *at != crate::domain::PASSWORD_MUST_CHANGE)?;
    Some(set_at.saturating_add(i64::try_from(max_age).unwrap_or(i64::MAX)))
}

/// An LDAP GeneralizedTime (`20261204203000Z`, fractions allowed) as Unix seconds.
pub(super) fn generalized_time_unix(s: &str) -> Option<i64> {
    let digits = s.get(..14)?;
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
    Some(time::PrimitiveDateTime::parse(digits, format).ok()?.assume_utc().unix_timestamp())
}
