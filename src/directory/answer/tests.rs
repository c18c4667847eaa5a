//! Tests of how raw directory answers become outcomes and audit text.

use super::*;

#[test]
fn samba_names_the_rule_and_the_real_minimum() {
    let short = "0000052D: Constraint violation - check_password_restrictions: the password is too short. \
                 It should be equal or longer than 7 characters!";
    assert_eq!(ad(19, short), Outcome::TooShort { min_length: Some(7) });
    let complex = "0000052D: Constraint violation - check_password_restrictions: the password does not meet \
                   the complexity criteria!";
    assert_eq!(ad(19, complex), Outcome::NotComplex);
    let history = "0000052D: Constraint violation - check_password_restrictions: the password was already used \
                   (in history)!";
    assert_eq!(ad(19, history), Outcome::InHistory { history: None });
    let young = "0000052D: Constraint violation - check_password_restrictions: password is too young to change!";
    assert_eq!(ad(19, young), Outcome::TooYoung { min_age_secs: None, since: None });
    let wrong_old = "00000056: Constraint violation - check_password_restrictions: The old password specified \
                     doesn't match!";
    assert_eq!(ad(19, wrong_old), Outcome::OldPasswordWrong);
    let locked = "00000775: Password change not permitted, account locked out! at ../../source4/dsdb/x.c";
    assert_eq!(ad(19, locked), Outcome::AccountLocked);
}

#[test]
fn ad_set_up_problems_and_outages_are_told_apart() {
    assert_eq!(
        ad(50, "error in module acl: insufficient access rights during LDB_MODIFY (50)"),
        Outcome::InsufficientRights
    );
    assert_eq!(ad(1, "00002020: Operation unavailable without authentication"), Outcome::InsufficientRights);
    assert_eq!(ad(8, "BindSimple: Transport encryption required."), Outcome::InsufficientRights);
    assert_eq!(ad(12, ""), Outcome::Refused);
    assert_eq!(ad(52, ""), Outcome::DirectoryUnreachable);
    assert_eq!(ad(0, "00000000: Success"), Outcome::Success);
}

#[test]
fn sign_in_answers_say_why_a_bind_failed() {
    let bind = |data: &str| {
        format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {data}, v1db1")
    };
    assert_eq!(ad_bind(49, &bind("52e")), Outcome::OldPasswordWrong);
    assert_eq!(ad_bind(49, &bind("773")), Outcome::MustChange);
    assert_eq!(ad_bind(49, &bind("775")), Outcome::AccountLocked);
    assert_eq!(ad_bind(49, &bind("533")), Outcome::AccountDisabled);
    assert_eq!(ad_bind(49, &bind("532")), Outcome::PasswordExpired);
    assert_eq!(ad_bind(8, "BindSimple: Transport encryption required."), Outcome::InsufficientRights);
    assert_eq!(openldap_bind(0, Some(ppolicy::CHANGE_AFTER_RESET)), Outcome::MustChange);
    assert_eq!(openldap_bind(49, Some(ppolicy::ACCOUNT_LOCKED)), Outcome::AccountLocked);
    assert_eq!(openldap_bind(49, None), Outcome::OldPasswordWrong);
    assert_eq!(openldap_bind(0, None), Outcome::Success);
}

#[test]
fn when_windows_does_not_name_the_rule_the_policy_does() {
    let windows = "0000052D: SvcErr: DSID-031A124C, problem 5003 (WILL_NOT_PERFORM), data 0";
    assert!(ad_unnamed_rule(53, windows));
    assert!(!ad_unnamed_rule(19, "0000052D: ... the password is too short. It should be equal or longer than 7"));
    let p = PolicyFacts::typical();
    assert_eq!(ad_rule("Ab1!", "alice", Some(&p), false), Outcome::TooShort { min_length: Some(8) });
    assert_eq!(ad_rule("alllowercase", "alice", Some(&p), false), Outcome::NotComplex);
    assert_eq!(ad_rule("Good-Passw0rd", "alice", Some(&p), false), Outcome::InHistory { history: Some(24) });
    assert_eq!(
        ad_rule("Good-Passw0rd", "alice", Some(&p), true),
        Outcome::TooYoung { min_age_secs: Some(86_400), since: None }
    );
    assert_eq!(ad_rule("x", "alice", None, false), Outcome::Refused);
}

#[test]
fn ppolicy_errors_become_the_matching_rule() {
    let fails = "Password fails quality checking policy";
    assert_eq!(openldap(19, fails, Some(6)), Outcome::TooShort { min_length: None });
    assert_eq!(openldap(19, fails, Some(5)), Outcome::NotComplex);
    assert_eq!(
        openldap(19, "Password is too young to change", Some(7)),
        Outcome::TooYoung { min_age_secs: None, since: None }
    );
    assert_eq!(openldap(19, "Password is in history of old passwords", Some(8)), Outcome::InHistory { history: None });
    assert_eq!(openldap(49, "", Some(1)), Outcome::AccountLocked);
}

#[test]
fn a_service_account_without_the_right_to_set_passwords_is_a_rights_problem() {
    let text = "Must supply old password to be changed as well as new one";
    assert_eq!(openldap(50, text, Some(4)), Outcome::InsufficientRights);
    assert_eq!(openldap(50, "no write access to parent", None), Outcome::InsufficientRights);
    assert_eq!(openldap(19, "", Some(3)), Outcome::InsufficientRights);
}

#[test]
fn a_wrong_old_password_is_recognised_on_a_change() {
    assert_eq!(openldap(53, "unwilling to verify old password", None), Outcome::OldPasswordWrong);
    assert_eq!(openldap(49, "", None), Outcome::OldPasswordWrong);
    assert_eq!(openldap(53, "operation not supported", None), Outcome::Refused);
}

#[test]
fn outages_and_unknown_answers_are_told_apart() {
    assert_eq!(openldap(0, "", None), Outcome::Success);
    assert_eq!(openldap(0, "", Some(2)), Outcome::Success);
    assert_eq!(openldap(32, "", None), Outcome::NotFound);
    for rc in [51, 52, 81, 85] {
        assert_eq!(openldap(rc, "", None), Outcome::DirectoryUnreachable, "rc {rc}");
    }
    assert_eq!(openldap(80, "internal error", None), Outcome::Refused);
    assert_eq!(openldap(8, "only authenticated users may change passwords", None), Outcome::Refused);
    assert_eq!(openldap(19, "Password fails quality checking policy", None), Outcome::Refused);
}

#[test]
fn without_the_control_the_words_of_the_answer_still_name_the_rule() {
    assert_eq!(
        openldap(19, "Password is not being changed from existing value", None),
        Outcome::InHistory { history: None }
    );
    assert_eq!(
        openldap(19, "Password is too young to change", None),
        Outcome::TooYoung { min_age_secs: None, since: None }
    );
}

#[test]
fn a_refused_service_bind_is_a_set_up_problem_not_a_wrong_password() {
    assert_eq!(service_bind(49), Outcome::InsufficientRights);
    assert_eq!(service_bind(52), Outcome::DirectoryUnreachable);
    let a = failure(&Failure::BindRefused { rc: 49, text: String::new() });
    assert_eq!(a.outcome, Outcome::InsufficientRights);
    assert_eq!(a.raw, "bind rc=49");
}

#[test]
fn the_control_value_yields_its_error_code() {
    assert_eq!(ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x06]), Some(6));
    assert_eq!(ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x08]), Some(8));
    assert_eq!(ppolicy_error(&[0x30, 0x00]), None);
}

#[test]
fn a_warning_before_the_error_is_skipped() {
    // warning: graceAuthNsRemaining 2, then error 2 (changeAfterReset)
    let value = [0x30, 0x08, 0xa0, 0x03, 0x81, 0x01, 0x02, 0x81, 0x01, 0x02];
    assert_eq!(ppolicy_error(&value), Some(2));
    // a warning alone is no error
    assert_eq!(ppolicy_error(&[0x30, 0x05, 0xa0, 0x03, 0x80, 0x01, 0x3c]), None);
}

#[test]
fn a_long_form_length_is_understood() {
    assert_eq!(ppolicy_error(&[0x30, 0x81, 0x03, 0x81, 0x01, 0x07]), Some(7));
}

#[test]
fn malformed_control_values_give_no_code_and_no_panic() {
    let bad: [&[u8]; 10] = [
        &[],
        &[0x30],
        &[0x30, 0x05, 0x81, 0x01, 0x06],
        &[0x31, 0x03, 0x81, 0x01, 0x06],
        &[0x30, 0x03, 0x81, 0x00, 0x06],
        &[0x30, 0x02, 0x81, 0x01],
        &[0x30, 0x80, 0x81, 0x01, 0x06, 0x00, 0x00],
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        &[0x30, 0x03, 0x81, 0x01, 0xff],
        &[0x30, 0x04, 0x9f, 0x01, 0x01, 0x06],
    ];
    for value in bad {
        assert_eq!(ppolicy_error(value), None, "{value:02x?}");
    }
}

#[test]
fn the_raw_answer_is_one_compact_line() {
    assert_eq!(
        raw(19, "Password fails quality checking policy", Some(6)),
        "rc=19 text=\"Password fails quality checking policy\" ppolicy=6"
    );
    assert_eq!(raw(0, "", None), "rc=0");
    assert_eq!(raw(53, "a \"quoted\"\nline", None), "rc=53 text=\"a 'quoted' line\"");
    assert!(raw(80, &"x".repeat(1000), None).len() < 330);
}

#[test]
fn the_directorys_numbers_are_filled_into_the_rule() {
    let facts = PolicyFacts {
        min_length: Some(8),
        history: Some(3),
        min_age_secs: Some(3600),
        max_age_secs: None,
        complexity: None,
        lockout_threshold: None,
        lockout_duration_secs: None,
        history_on_reset: None,
    };
    assert_eq!(
        with_policy(Outcome::TooShort { min_length: None }, Some(&facts)),
        Outcome::TooShort { min_length: Some(8) }
    );
    assert_eq!(
        with_policy(Outcome::InHistory { history: None }, Some(&facts)),
        Outcome::InHistory { history: Some(3) }
    );
    assert_eq!(
        with_policy(Outcome::TooYoung { min_age_secs: None, since: None }, Some(&facts)),
        Outcome::TooYoung { min_age_secs: Some(3600), since: None }
    );
    assert_eq!(with_policy(Outcome::NotComplex, Some(&facts)), Outcome::NotComplex);
    assert_eq!(with_policy(Outcome::TooShort { min_length: None }, None), Outcome::TooShort { min_length: None });
}
