//! How AD writes its values: quoted UTF-16 passwords, mixed-endian GUIDs, binary SIDs, NT
//! FILETIMEs and negative intervals, and the attributes of an entry read as Rust values.

use super::*;

/// Asks the DC to apply the whole policy, history included, to a reset. Critical: a DC that does
/// not understand it must refuse rather than quietly skip history.
pub(super) fn policy_hints(oid: &str) -> RawControl {
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
pub(super) const PROTECTED_FOREST_RIDS: [u32; 3] = [518, 519, 527];

/// Whether a group SID in a person's token is one of the protected groups.
pub(super) fn is_protected_group(sid: &str, domain_sid: &str) -> bool {
    let Some((prefix, rid)) = sid.rsplit_once('-') else { return false };
    let Ok(rid) = rid.parse::<u32>() else { return false };
    (prefix == domain_sid && PROTECTED_DOMAIN_RIDS.contains(&rid))
        || (prefix == "S-1-5-32" && PROTECTED_BUILTIN_RIDS.contains(&rid))
        || (prefix.starts_with("S-1-5-21-") && PROTECTED_FOREST_RIDS.contains(&rid))
}

/// How long ago an NT FILETIME (100 ns since 1601) was; `None` for 0 ("must change") or nonsense.
/// An NT FILETIME (100 ns since 1601) as Unix seconds; `None` for 0 (never, or must change).
pub(super) fn filetime_unix(filetime: i64) -> Option<i64> {
    const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;
    (filetime > 0).then(|| filetime.saturating_sub(UNIX_EPOCH_AS_FILETIME) / 10_000_000)
}

pub(super) fn filetime_age_secs(filetime: i64) -> Option<u64> {
    const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;
    let set = (filetime.checked_sub(UNIX_EPOCH_AS_FILETIME)? / 10_000_000).max(0);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (filetime > 0).then(|| u64::try_from(now - set).unwrap_or(0))
}

/// A SID (binary) with one more sub-authority, `rid`.
pub(super) fn sid_with_rid(base: &[u8], rid: u32) -> Vec<u8> {
    let mut sid = base.to_vec();
    if let Some(count) = sid.get_mut(1) {
        *count += 1;
    }
    sid.extend_from_slice(&rid.to_le_bytes());
    sid
}

/// A DN as an assertion value in a filter.
pub(super) fn ldap_escape_value(dn: &str) -> String {
    ldap3::ldap_escape(dn).into_owned()
}

/// Bytes as an LDAP filter value (`\xx` each), for binary attributes such as `objectGUID`.
pub(super) fn escape_bytes(b: &[u8]) -> String {
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

pub(super) fn first<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e str> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.first()).map(String::as_str)
}

pub(super) fn all(entry: &SearchEntry, name: &str) -> Vec<String> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Every value of a binary attribute. ldap3 files a value under `attrs` when its bytes happen to
/// be valid UTF-8, so both places are looked at.
pub(super) fn all_bytes(entry: &SearchEntry, name: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = entry
        .bin_attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.iter().cloned())
        .collect();
    out.extend(all(entry, name).into_iter().map(String::into_bytes));
    out
}

pub(super) fn bytes(entry: &SearchEntry, name: &str) -> Option<Vec<u8>> {
    all_bytes(entry, name).into_iter().next()
}

pub(super) fn number<T: std::str::FromStr>(entry: &SearchEntry, name: &str) -> Option<T> {
    first(entry, name).and_then(|v| v.trim().parse().ok())
}

/// AD intervals are negative counts of 100 ns.
pub(super) fn interval_secs(entry: &SearchEntry, name: &str) -> Option<u64> {
    number::<i64>(entry, name).map(|v| v.unsigned_abs() / 10_000_000)
}

/// A maximum password age: `Some(0)` for "never" (0, or the largest interval AD has).
pub(super) fn max_age_secs(entry: &SearchEntry, name: &str) -> Option<u64> {
    number::<i64>(entry, name).map(|v| if v == i64::MIN { 0 } else { v.unsigned_abs() / 10_000_000 })
}

pub(super) fn domain_policy(e: &SearchEntry) -> PolicyFacts {
    PolicyFacts {
        min_length: number(e, "minPwdLength"),
        history: number(e, "pwdHistoryLength"),
        min_age_secs: interval_secs(e, "minPwdAge"),
        max_age_secs: max_age_secs(e, "maxPwdAge"),
        complexity: number::<u32>(e, "pwdProperties").map(|p| p & DOMAIN_PASSWORD_COMPLEX != 0),
        lockout_threshold: number(e, "lockoutThreshold"),
        lockout_duration_secs: interval_secs(e, "lockoutDuration"),
        history_on_reset: None,
    }
}

pub(super) fn pso_policy(e: &SearchEntry) -> PolicyFacts {
    PolicyFacts {
        min_length: number(e, "msDS-MinimumPasswordLength"),
        history: number(e, "msDS-PasswordHistoryLength"),
        min_age_secs: interval_secs(e, "msDS-MinimumPasswordAge"),
        max_age_secs: max_age_secs(e, "msDS-MaximumPasswordAge"),
        complexity: first(e, "msDS-PasswordComplexityEnabled").map(|v| v.eq_ignore_ascii_case("TRUE")),
        lockout_threshold: number(e, "msDS-LockoutThreshold"),
        lockout_duration_secs: interval_secs(e, "msDS-LockoutDuration"),
        history_on_reset: None,
    }
}

/// A modify's result and its raw text, naming the `right` the service account lacks on `dn` when
/// the DC says so (rc 50); or the answer when no result came.
pub(super) fn written(
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
pub(super) fn own_sid(entry: &SearchEntry) -> Option<(String, u32)> {
    let sid = parse_sid(&bytes(entry, "objectSid")?)?;
    let (domain, rid) = sid.rsplit_once('-')?;
    Some((domain.to_string(), rid.parse().ok()?))
}

/// Whether the entry is one of the well-known protected accounts (Administrator, krbtgt).
pub(super) fn protected_rid(entry: &SearchEntry) -> bool {
    own_sid(entry).is_some_and(|(_, rid)| PROTECTED_DOMAIN_RIDS.contains(&rid))
}

/// When the password expires, as the DC works it out (the resultant PSO or the domain's policy,
/// and "password never expires"): its largest value means never, and 0 a password that must be
/// changed now, which has no later expiry.
pub(super) fn password_expiry(entry: &SearchEntry) -> Option<i64> {
    number::<i64>(entry, "msDS-UserPasswordExpiryTimeComputed").filter(|e| *e != i64::MAX).and_then(filetime_unix)
}

pub(super) fn synced_user(entry: &SearchEntry) -> Option<SyncedUser> {
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
        password_expires_at: password_expiry(entry),
        username,
    })
}
