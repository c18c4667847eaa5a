//! NIST SP 800-63B-4 (section 3.1.1.2) for passwords, as far as the portal applies it with
//! `password_policy.profile = "nist-800-63b-4"`: lengths counted in code points after NFKC
//! normalisation, at least 15 characters for a password used alone and 8 for one used with a
//! second factor, at least 64 allowed, no composition rules, banned and breached passwords
//! refused; and where a directory's own policy contradicts it.

use super::PolicyFacts;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// The fewest characters of a password that is the only thing asked at sign-in.
pub const MIN_ALONE: u32 = 15;
/// The fewest characters of a password asked together with a second factor.
pub const MIN_WITH_SECOND_FACTOR: u32 = 8;

/// The fewest characters allowed, as the password is used.
pub fn min_length(second_factor: bool) -> u32 {
    if second_factor {
        MIN_WITH_SECOND_FACTOR
    } else {
        MIN_ALONE
    }
}

/// The password as it is compared: NFKC, so that a full-width `ｐ` or a ligature `ﬁ` counts as
/// the letters it stands for. Held in a buffer wiped when dropped.
pub fn normalised(password: &str) -> Zeroizing<String> {
    // Reserved up front (NFKC rarely grows a text by much) so that no copy is left behind by
    // a reallocation.
    let mut out = Zeroizing::new(String::with_capacity(password.len() * 3));
    for c in password.nfkc() {
        if out.len() + c.len_utf8() > out.capacity() {
            let mut bigger = Zeroizing::new(String::with_capacity(out.capacity() * 2 + 4));
            bigger.push_str(&out);
            out = bigger;
        }
        out.push(c);
    }
    out
}

/// A password's length as SP 800-63B-4 counts it: code points, after NFKC.
pub fn length(password: &str) -> usize {
    password.nfkc().count()
}

/// Where a directory's own policy contradicts SP 800-63B-4: what it says, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction {
    pub detail: String,
    pub fix: String,
}

/// Which directory a policy is of, for the words of a fix: the portal knows only the numbers
/// its agents report, an agent knows its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Ad,
    OpenLdap,
    Either,
}

impl Dialect {
    fn say(self, ad: &str, openldap: &str) -> String {
        match self {
            Dialect::Ad => ad.to_string(),
            Dialect::OpenLdap => openldap.to_string(),
            Dialect::Either => format!("Active Directory: {ad}. OpenLDAP: {openldap}"),
        }
    }
}

/// How `policy` (a directory's) departs from SP 800-63B-4: composition rules, passwords that
/// expire, a minimum length under 15. Information for an administrator: the portal still
/// applies its own length, banned and breached checks on top.
pub fn contradictions(policy: &PolicyFacts, dialect: Dialect) -> Vec<Contradiction> {
    let mut found = Vec::new();
    if policy.complexity == Some(true) {
        found.push(Contradiction {
            detail: "the directory requires several kinds of character (a composition rule, which SP 800-63B-4 \
                     says not to impose)"
                .into(),
            fix: dialect.say(
                "turn off \"Password must meet complexity requirements\" in the domain's password policy (and \
                 msDS-PasswordComplexityEnabled in fine-grained policies)",
                "remove the policy's pwdCheckModule, or its character-class rules",
            ) + "; the portal's banned and breached checks refuse guessable passwords instead",
        });
    }
    if let Some(days) = policy.max_age_secs.filter(|s| *s > 0).map(|s| s.div_ceil(86_400)) {
        found.push(Contradiction {
            detail: format!(
                "passwords expire after {days} days (SP 800-63B-4: change them only on evidence of compromise)"
            ),
            fix: dialect.say(
                "set \"Maximum password age\" to 0 (never) in the domain's password policy (maxPwdAge), and in \
                 fine-grained policies",
                "set pwdMaxAge: 0 in the password policy entry",
            ),
        });
    }
    match policy.min_length {
        Some(n) if n >= MIN_ALONE => {}
        n => found.push(Contradiction {
            detail: match n {
                Some(n) => format!(
                    "the directory accepts passwords of {n} characters (SP 800-63B-4: at least 15 for a password \
                     used alone)"
                ),
                None => "the directory's minimum length is not known".into(),
            },
            fix: dialect.say(
                "set \"Minimum password length\" (minPwdLength) to 15 or more (over 14 needs \"Relax minimum \
                 password length limits\" on Windows)",
                "set pwdMinLength: 15 or more in the password policy entry",
            ) + "; meanwhile the portal refuses shorter passwords of people without a second factor",
        }),
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_code_points_after_nfkc() {
        assert_eq!(length("password"), 8);
        assert_eq!(length("ｐａｓｓ"), 4, "full-width letters are letters");
        assert_eq!(length("e\u{301}t\u{e9}"), 3, "a letter and its accent are one");
        assert_eq!(length("🦀🦀"), 2, "one each, though two UTF-16 units");
        assert_eq!(&*normalised("ｐａｓｓ\u{fb01}"), "passfi");
        let long = "\u{fdfa}".repeat(10);
        assert_eq!(normalised(&long).chars().count(), 180, "grows past what was reserved");
    }

    #[test]
    fn fifteen_characters_alone_eight_with_a_second_factor() {
        assert_eq!(min_length(false), 15);
        assert_eq!(min_length(true), 8);
    }

    #[test]
    fn a_typical_domain_policy_contradicts_it_three_ways_and_a_nist_one_not_at_all() {
        let typical = PolicyFacts { max_age_secs: Some(42 * 86_400), ..PolicyFacts::typical() };
        let found = contradictions(&typical, Dialect::Ad);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[1].detail.contains("42 days") && found[1].fix.contains("maxPwdAge"));
        assert!(found[2].detail.contains("8 characters") && found[2].fix.contains("minPwdLength"));
        let nist = PolicyFacts {
            min_length: Some(15),
            complexity: Some(false),
            max_age_secs: Some(0),
            ..PolicyFacts::default()
        };
        assert!(contradictions(&nist, Dialect::OpenLdap).is_empty());
        let openldap = contradictions(&PolicyFacts { min_length: Some(8), ..nist.clone() }, Dialect::OpenLdap);
        assert!(openldap[0].fix.contains("pwdMinLength") && !openldap[0].fix.contains("minPwdLength"));
        let either = contradictions(&PolicyFacts { min_length: Some(8), ..nist }, Dialect::Either);
        assert!(either[0].fix.contains("pwdMinLength") && either[0].fix.contains("minPwdLength"));
    }
}
