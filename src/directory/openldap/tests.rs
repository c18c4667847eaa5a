//! Tests of [`super`].

use super::*;
use std::collections::HashMap;

fn entry(attrs: &[(&str, &str)]) -> SearchEntry {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in attrs {
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    SearchEntry { dn: "uid=x,ou=people,dc=example,dc=org".into(), attrs: map, bin_attrs: HashMap::new() }
}

#[test]
fn the_time_a_password_was_set_reads_as_unix_seconds() {
    assert_eq!(generalized_time_unix("20261204203000Z"), Some(1_796_416_200));
    assert_eq!(generalized_time_unix("20261204203000.123Z"), Some(1_796_416_200));
    assert_eq!(generalized_time_unix("garbage"), None);
}

#[test]
fn a_person_without_mail_or_display_name_is_still_synced() {
    let e = entry(&[("entryUUID", "0a1b2c3d-0000-1000-8000-00aa00bb00cc"), ("uid", "dave"), ("cn", "Dave Null")]);
    let u = synced_user(&e).unwrap();
    assert_eq!(u.username, "dave");
    assert_eq!(u.display_name, "Dave Null");
    assert_eq!(u.email, None);
    assert!(u.enabled && !u.locked);
}

#[test]
fn an_invalid_mail_becomes_none_and_entries_without_anchor_or_uid_are_skipped() {
    let e = entry(&[("entryUUID", "u-1"), ("uid", "eve"), ("mail", "not an address")]);
    assert_eq!(synced_user(&e).unwrap().email, None);
    assert!(synced_user(&entry(&[("uid", "eve")])).is_none());
    assert!(synced_user(&entry(&[("entryUUID", "u-1")])).is_none());
    assert!(synced_user(&entry(&[("entryUUID", "not/a/uuid"), ("uid", "eve")])).is_none());
}

#[test]
fn a_lockout_is_locked_and_a_permanent_lock_is_also_disabled() {
    let locked = entry(&[("entryUUID", "u-1"), ("uid", "eve"), ("pwdAccountLockedTime", "20260101120000Z")]);
    let u = synced_user(&locked).unwrap();
    assert!(u.locked && u.enabled);
    let forever = entry(&[("entryUUID", "u-1"), ("uid", "eve"), ("pwdAccountLockedTime", PERMANENT_LOCK)]);
    let u = synced_user(&forever).unwrap();
    assert!(u.locked && !u.enabled);
}

#[test]
fn a_lockout_threshold_counts_only_where_ppolicy_locks() {
    let locking = entry(&[("pwdLockout", "TRUE"), ("pwdMaxFailure", "5")]);
    assert_eq!(policy_facts(&locking).lockout_threshold, Some(5));
    let counting = entry(&[("pwdLockout", "FALSE"), ("pwdMaxFailure", "5")]);
    assert_eq!(policy_facts(&counting).lockout_threshold, Some(0), "failures counted, never locked");
}

#[test]
fn policy_numbers_are_read_and_quality_without_a_checker_is_no_complexity_rule() {
    let e = entry(&[
        ("pwdMinLength", "8"),
        ("pwdInHistory", "3"),
        ("pwdMinAge", "3600"),
        ("pwdMaxAge", "86400"),
        ("pwdCheckQuality", "2"),
    ]);
    assert_eq!(
        policy_facts(&e),
        PolicyFacts {
            min_length: Some(8),
            history: Some(3),
            min_age_secs: Some(3600),
            max_age_secs: Some(86_400),
            complexity: Some(false),
            lockout_threshold: None,
            lockout_duration_secs: None,
            history_on_reset: Some(true),
        }
    );
    let with_checker = entry(&[("pwdCheckQuality", "2"), ("pwdCheckModule", "check_password.so")]);
    assert_eq!(policy_facts(&with_checker).complexity, Some(true));
    let nothing_read = PolicyFacts { history_on_reset: Some(true), ..PolicyFacts::default() };
    assert_eq!(policy_facts(&entry(&[])), nothing_read, "nothing read, but the agent's resets keep history");
}

#[test]
fn a_password_expires_its_policys_maximum_age_after_it_was_set_and_never_without_one() {
    let policy = |max: Option<u64>| PolicyFacts { max_age_secs: max, ..Default::default() };
    assert_eq!(expiry(Some(1_000), Some(&policy(Some(86_400)))), Some(87_400));
    assert_eq!(expiry(Some(1_000), Some(&policy(Some(0)))), None, "0: never");
    assert_eq!(expiry(Some(1_000), Some(&policy(None))), None);
    assert_eq!(expiry(Some(1_000), None), None, "no policy");
    assert_eq!(expiry(None, Some(&policy(Some(86_400)))), None, "never set");
    let must_change = Some(crate::domain::PASSWORD_MUST_CHANGE);
    assert_eq!(expiry(must_change, Some(&policy(Some(86_400)))), None, "to be changed now");
}
