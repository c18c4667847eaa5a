//! Tests of [`super`].

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
    for (k, v) in [
        ("minPwdLength", "7"),
        ("pwdProperties", "1"),
        ("pwdHistoryLength", "24"),
        ("minPwdAge", "-864000000000"),
        ("maxPwdAge", "-36288000000000"),
    ] {
        attrs.insert(k.to_string(), vec![v.to_string()]);
    }
    let e = SearchEntry { dn: "DC=corp,DC=test".into(), attrs, bin_attrs: Default::default() };
    assert_eq!(
        domain_policy(&e),
        PolicyFacts {
            min_length: Some(7),
            history: Some(24),
            min_age_secs: Some(86_400),
            max_age_secs: Some(42 * 86_400),
            complexity: Some(true),
            lockout_threshold: None,
            lockout_duration_secs: None,
            history_on_reset: None,
        }
    );
    // "Never" is the most negative interval there is (and 0).
    let mut never = e.clone();
    never.attrs.insert("maxPwdAge".into(), vec![i64::MIN.to_string()]);
    assert_eq!(domain_policy(&never).max_age_secs, Some(0));
}

#[test]
fn a_password_expiry_is_the_dcs_own_and_never_for_its_largest_value_or_a_password_to_change_now() {
    let entry = |value: &str| SearchEntry {
        dn: "cn=alice".into(),
        attrs: [("msDS-UserPasswordExpiryTimeComputed".to_string(), vec![value.to_string()])].into(),
        bin_attrs: Default::default(),
    };
    // 2027-01-01T00:00:00Z as a FILETIME.
    assert_eq!(password_expiry(&entry("134432352000000000")), Some(1_798_761_600));
    assert_eq!(password_expiry(&entry(&i64::MAX.to_string())), None, "never expires");
    assert_eq!(password_expiry(&entry("0")), None, "must change now: no later expiry");
}
