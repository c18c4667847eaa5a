//! Tests of [`super`].

use super::*;

#[test]
fn the_delegation_grants_reset_and_two_attribute_writes_on_users_below_the_ou() {
    let sddl = delegation_sddl("S-1-5-21-1-2-3-1103");
    assert_eq!(sddl.matches("(OA;CIIO;").count(), 3);
    assert_eq!(sddl.matches(";bf967aba-0de6-11d0-a285-00aa003049e2;S-1-5-21-1-2-3-1103)").count(), 3);
    assert!(sddl.contains("CR;00299570-246d-11d0-a768-00aa006e0529;"));
}

#[test]
fn patching_smb_conf_replaces_global_settings_and_leaves_shares_alone() {
    let conf = "# Global parameters\n[global]\n\tlog file = /var/log/samba/log.%m\n\tServer  Services = s3fs, rpc\n\
                \trealm = CORP.TEST\n\n[sysvol]\n\tpath = /x\n\tlog file = share-level\n";
    let settings = [("server services", "ldap".to_string()), ("log file", "/d/log".to_string())];

    let patched = patch_smb_conf(conf, &settings).unwrap();

    assert_eq!(
        patched,
        "# Global parameters\n[global]\n\tserver services = ldap\n\tlog file = /d/log\n\trealm = CORP.TEST\n\n\
         [sysvol]\n\tpath = /x\n\tlog file = share-level\n"
    );
    assert!(patch_smb_conf("[homes]\n", &settings).is_err());
}

#[test]
fn random_passwords_meet_ad_complexity_and_differ() {
    let a = random_password();
    let b = random_password();
    assert_eq!(a.expose_secret().len(), 24);
    assert!(a.expose_secret().chars().any(|c| c.is_ascii_uppercase()));
    assert!(a.expose_secret().chars().any(|c| c.is_ascii_lowercase()));
    assert!(a.expose_secret().chars().any(|c| c.is_ascii_digit()));
    assert_ne!(a.expose_secret(), b.expose_secret());
}
