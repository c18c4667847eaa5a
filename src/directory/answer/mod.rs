//! The one place where a directory's raw answer becomes an [`Outcome`] (DESIGN.md §5), plus the
//! compact, password-free text of that answer that is kept for the administrator.

use super::Answer;
use crate::domain::{Outcome, PolicyFacts};

/// OID of the password policy request and response controls (draft-behera-ldap-password-policy).
pub const PPOLICY_OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

/// The `error` values of the ppolicy response control.
pub mod ppolicy {
    pub const PASSWORD_EXPIRED: u8 = 0;
    pub const ACCOUNT_LOCKED: u8 = 1;
    pub const CHANGE_AFTER_RESET: u8 = 2;
    pub const PASSWORD_MOD_NOT_ALLOWED: u8 = 3;
    pub const MUST_SUPPLY_OLD_PASSWORD: u8 = 4;
    pub const INSUFFICIENT_PASSWORD_QUALITY: u8 = 5;
    pub const PASSWORD_TOO_SHORT: u8 = 6;
    pub const PASSWORD_TOO_YOUNG: u8 = 7;
    pub const PASSWORD_IN_HISTORY: u8 = 8;
}

/// Maps an OpenLDAP answer to a Password Modify (RFC 3062) to an outcome.
///
/// `ppolicy_error` is the `error` of the ppolicy response control, when there was one. It is
/// more precise than the result code, so it wins. The exop answers 49 and "unwilling to verify
/// old password" only when an old password was given, i.e. on a change.
pub fn openldap(rc: u32, text: &str, ppolicy_error: Option<u8>) -> Outcome {
    if rc == 0 {
        return Outcome::Success;
    }
    match ppolicy_error {
        Some(ppolicy::ACCOUNT_LOCKED) => return Outcome::AccountLocked,
        Some(ppolicy::INSUFFICIENT_PASSWORD_QUALITY) => return Outcome::NotComplex,
        Some(ppolicy::PASSWORD_TOO_SHORT) => return Outcome::TooShort { min_length: None },
        Some(ppolicy::PASSWORD_TOO_YOUNG) => return Outcome::TooYoung { min_age_secs: None, since: None },
        Some(ppolicy::PASSWORD_IN_HISTORY) => return Outcome::InHistory { history: None },
        // The service account may not set passwords the way it tries to: a set-up problem.
        Some(ppolicy::PASSWORD_MOD_NOT_ALLOWED | ppolicy::MUST_SUPPLY_OLD_PASSWORD) => {
            return Outcome::InsufficientRights
        }
        // The bound identity's own password state (expired, must change): also not the person's
        // doing, but not a rights problem either; the raw answer tells the administrator.
        Some(ppolicy::PASSWORD_EXPIRED | ppolicy::CHANGE_AFTER_RESET) => return Outcome::Refused,
        _ => {}
    }
    let lower = text.to_ascii_lowercase();
    match rc {
        // constraintViolation without the control (overlay not answering it): use the text,
        // which OpenLDAP words the same in every version we know.
        19 if lower.contains("in history") || lower.contains("not being changed from existing value") => {
            Outcome::InHistory { history: None }
        }
        19 if lower.contains("too young") => Outcome::TooYoung { min_age_secs: None, since: None },
        19 if lower.contains("too short") => Outcome::TooShort { min_length: None },
        32 => Outcome::NotFound,
        49 => Outcome::OldPasswordWrong,
        50 => Outcome::InsufficientRights,
        53 if lower.contains("old password") => Outcome::OldPasswordWrong,
        3 | 51 | 52 | 81 | 85 => Outcome::DirectoryUnreachable,
        _ => Outcome::Refused,
    }
}

/// Maps an Active Directory (or Samba AD) answer to a `unicodePwd` modify to an outcome.
///
/// Samba names the rule in its `0000052D` text; Windows often does not, and then this says
/// [`Outcome::Refused`] and [`ad_unnamed_rule`] is true: the caller works out the rule from the
/// policy (see [`ad_rule`]).
pub fn ad(rc: u32, text: &str) -> Outcome {
    if rc == 0 {
        return Outcome::Success;
    }
    let lower = text.to_ascii_lowercase();
    let code = text.get(..8).unwrap_or("").to_ascii_uppercase();
    match (rc, code.as_str()) {
        (19 | 53, "0000052D") if lower.contains("too short") => {
            Outcome::TooShort { min_length: number_after(&lower, "longer than ") }
        }
        (19 | 53, "0000052D") if lower.contains("complexity") => Outcome::NotComplex,
        (19 | 53, "0000052D") if lower.contains("history") || lower.contains("already used") => {
            Outcome::InHistory { history: None }
        }
        (19 | 53, "0000052D") if lower.contains("too young") => Outcome::TooYoung { min_age_secs: None, since: None },
        (19, "00000056") => Outcome::OldPasswordWrong,
        (19, "00000775") => Outcome::AccountLocked,
        // Refused for want of rights, of authentication, or of an encrypted connection: all
        // set-up problems the administrator must fix.
        (50, _) | (1, "00002020") | (8, _) => Outcome::InsufficientRights,
        (32, _) => Outcome::NotFound,
        (3 | 51 | 52 | 81 | 85, _) => Outcome::DirectoryUnreachable,
        _ => Outcome::Refused,
    }
}

/// A "too recent" refusal that says since when: `set_at`, when the password was last set.
pub fn with_since(outcome: Outcome, set_at: Option<i64>) -> Outcome {
    match outcome {
        Outcome::TooYoung { min_age_secs, since: None } => Outcome::TooYoung { min_age_secs, since: set_at },
        other => other,
    }
}

/// AD's reason for a refused bind: the `data` field of `80090308: LdapErr: …, data 52e, v…`
/// (`None` from OpenLDAP, which gives no reason).
pub fn ad_bind_data(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let data: String = lower.split("data ").nth(1)?.chars().take_while(char::is_ascii_hexdigit).collect();
    (!data.is_empty()).then_some(data)
}

/// Why the directory refused the service account's own bind, in words for the health page.
pub fn service_bind_reason(rc: u32, text: &str) -> &'static str {
    match (rc, ad_bind_data(text).as_deref()) {
        (49, Some("52e")) => "wrong password",
        (49, Some("525")) => "no such account",
        (49, Some("532")) => "its password has expired",
        (49, Some("533")) => "the account is disabled",
        (49, Some("701")) => "the account has expired",
        (49, Some("773")) => "its password must be changed first",
        (49, Some("775")) => "the account is locked out",
        (49, None) if text.contains("ppolicy: account locked") => "the account is locked out",
        (49, _) => "wrong name or password",
        (8 | 13, _) => "the directory wants a stronger connection",
        _ => "refused",
    }
}

/// Maps the answer to a person's own simple bind against AD (sign-in): AD says why in the `data`
/// field of `80090308: LdapErr: …, data 52e, v…`.
pub fn ad_bind(rc: u32, text: &str) -> Outcome {
    if rc == 0 {
        return Outcome::Success;
    }
    match (rc, ad_bind_data(text).as_deref()) {
        (49, Some("773")) => Outcome::MustChange,
        (49, Some("532")) => Outcome::PasswordExpired,
        (49, Some("775")) => Outcome::AccountLocked,
        (49, Some("533")) => Outcome::AccountDisabled,
        (49, _) => Outcome::OldPasswordWrong,
        (8, _) => Outcome::InsufficientRights,
        (3 | 51 | 52 | 81 | 85, _) => Outcome::DirectoryUnreachable,
        _ => Outcome::Refused,
    }
}

/// Maps the answer to a person's own simple bind against OpenLDAP with ppolicy: a bind can
/// succeed and still say the password must be changed (`changeAfterReset`).
pub fn openldap_bind(rc: u32, ppolicy_error: Option<u8>) -> Outcome {
    match (rc, ppolicy_error) {
        (_, Some(ppolicy::ACCOUNT_LOCKED)) => Outcome::AccountLocked,
        (_, Some(ppolicy::PASSWORD_EXPIRED)) => Outcome::PasswordExpired,
        (0, Some(ppolicy::CHANGE_AFTER_RESET)) => Outcome::MustChange,
        (0, _) => Outcome::Success,
        (49, _) => Outcome::OldPasswordWrong,
        (3 | 51 | 52 | 81 | 85, _) => Outcome::DirectoryUnreachable,
        _ => Outcome::Refused,
    }
}

/// True when AD refused a password for its policy without saying which rule.
pub fn ad_unnamed_rule(rc: u32, text: &str) -> bool {
    matches!(rc, 19 | 53)
        && text.get(..8).is_some_and(|c| c.eq_ignore_ascii_case("0000052D"))
        && ad(rc, text) == Outcome::Refused
}

/// Which rule a password breaks, worked out from the policy when the directory did not say:
/// length and complexity can be checked here; what is left is history, unless the caller knows
/// the password is younger than the minimum age (`too_young`, which the directory checks first).
pub fn ad_rule(password: &str, account_name: &str, policy: Option<&PolicyFacts>, too_young: bool) -> Outcome {
    let Some(p) = policy else { return Outcome::Refused };
    if p.min_length.is_some_and(|n| (password.chars().count() as u64) < u64::from(n)) {
        return Outcome::TooShort { min_length: p.min_length };
    }
    if p.complexity == Some(true) {
        if let Some(refusal) = crate::domain::ad_complexity_refusal(password, account_name) {
            return refusal;
        }
    }
    if too_young {
        return Outcome::TooYoung { min_age_secs: p.min_age_secs, since: None };
    }
    Outcome::InHistory { history: p.history }
}

fn number_after(text: &str, marker: &str) -> Option<u32> {
    let rest = &text[text.find(marker)? + marker.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Maps the refusal of the service account's own bind: always a set-up problem or an outage,
/// never something the person did.
pub fn service_bind(rc: u32) -> Outcome {
    match rc {
        3 | 51 | 52 | 81 | 85 => Outcome::DirectoryUnreachable,
        _ => Outcome::InsufficientRights,
    }
}

/// Reads the `error` out of a ppolicy response control value:
///
/// ```text
/// PasswordPolicyResponseValue ::= SEQUENCE {
///     warning [0] CHOICE { timeBeforeExpiration [0] INTEGER, graceAuthNsRemaining [1] INTEGER } OPTIONAL,
///     error   [1] ENUMERATED { passwordExpired (0), ... passwordInHistory (8) } OPTIONAL }
/// ```
///
/// `30 03 81 01 06` gives `Some(6)`, `30 00` gives `None`. Malformed input gives `None`, never a
/// panic: the value comes from the network.
pub fn ppolicy_error(value: &[u8]) -> Option<u8> {
    let (tag, content, _) = read_tlv(value)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = content;
    while !rest.is_empty() {
        let (tag, content, after) = read_tlv(rest)?;
        // [1] primitive, context-specific: the error.
        if tag == 0x81 {
            return enumerated(content);
        }
        rest = after;
    }
    None
}

/// One BER tag-length-value with a single-byte tag: (tag, content, what follows).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur in this control
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None; // indefinite or absurd lengths
        }
        let (bytes, after) = input.split_at(count);
        input = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if input.len() < len {
        return None;
    }
    let (content, after) = input.split_at(len);
    Some((tag, content, after))
}

fn enumerated(content: &[u8]) -> Option<u8> {
    match content {
        [v] if *v < 0x80 => Some(*v),
        // A redundant leading zero is tolerated; negative or large values are not ppolicy errors.
        [0, v] if *v >= 0x80 => Some(*v),
        _ => None,
    }
}

/// The directory's answer as a short line for the audit: `rc=19 text="..." ppolicy=6`.
/// Only the result code, the server's diagnostic text and the ppolicy code go in; never a value
/// that was sent.
pub fn raw(rc: u32, text: &str, ppolicy_error: Option<u8>) -> String {
    let mut out = format!("rc={rc}");
    if !text.is_empty() {
        out.push_str(&format!(" text=\"{}\"", clean(text)));
    }
    if let Some(code) = ppolicy_error {
        out.push_str(&format!(" ppolicy={code}"));
    }
    out
}

/// Fills the directory's real numbers into a policy outcome, so the person reads
/// "at least 8 characters" rather than "longer".
pub fn with_policy(outcome: Outcome, facts: Option<&PolicyFacts>) -> Outcome {
    let Some(f) = facts else { return outcome };
    match outcome {
        Outcome::TooShort { min_length: None } => Outcome::TooShort { min_length: f.min_length },
        Outcome::InHistory { history: None } => Outcome::InHistory { history: f.history },
        Outcome::TooYoung { min_age_secs: None, since: None } => {
            Outcome::TooYoung { min_age_secs: f.min_age_secs, since: None }
        }
        other => other,
    }
}

/// The answer when nobody in scope has this anchor.
pub(crate) fn not_found(attribute: &str, anchor: &crate::domain::Anchor) -> Answer {
    Answer {
        outcome: Outcome::NotFound,
        raw: format!("no person with {attribute}={} in scope", anchor.as_str()),
        policy: None,
    }
}

/// The answer when the operation never got a directory result (connection, TLS, bind…).
pub(crate) fn failure(f: &Failure) -> Answer {
    let (outcome, raw) = match f {
        Failure::Unreachable(detail) => (Outcome::DirectoryUnreachable, format!("error=\"{}\"", clean(detail))),
        // Perhaps written, perhaps not: the person is told it could not be confirmed.
        Failure::Unconfirmed(detail) => {
            (Outcome::AgentTimeout, format!("sent but not answered: error=\"{}\"", clean(detail)))
        }
        Failure::BindRefused { rc, text } => (service_bind(*rc), format!("bind {}", raw(*rc, text, None))),
        Failure::Result { rc, text } => (openldap(*rc, text, None), raw(*rc, text, None)),
        Failure::Internal(detail) => (Outcome::Internal, format!("error=\"{}\"", clean(detail))),
    };
    Answer { outcome, raw, policy: None }
}

/// One line, no quotes to confuse a reader, bounded length.
fn clean(text: &str) -> String {
    const MAX: usize = 300;
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() {
                ' '
            } else if c == '"' {
                '\''
            } else {
                c
            }
        })
        .take(MAX)
        .collect();
    if text.trim().chars().count() > MAX {
        out.push('…');
    }
    out
}

/// Why an operation produced no directory answer of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// Could not connect, TLS failed, the connection broke, or the directory did not answer in time.
    #[error("directory unreachable: {0}")]
    Unreachable(String),
    /// A write was sent, but no answer came: it may or may not have been applied.
    #[error("sent to the directory but not answered: {0}")]
    Unconfirmed(String),
    /// The service account's own bind was refused.
    #[error("service account bind refused: {}: rc={rc} text={text:?}", service_bind_reason(*rc, text))]
    BindRefused { rc: u32, text: String },
    /// An operation (a search) answered with an error result.
    #[error("directory answered rc={rc} text={text:?}")]
    Result { rc: u32, text: String },
    /// passback could not even form the request (for example an invalid configured filter).
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests;
