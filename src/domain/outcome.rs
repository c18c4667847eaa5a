//! The one closed set of outcomes (DESIGN.md §5). Every attempt ends in exactly one of these;
//! each has a stable code, a message a person can act on, and travels in relay frames as is.

use crate::i18n::Tr;
use serde::{Deserialize, Serialize};

/// The directory's password rules, as far as the agent could read them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFacts {
    /// The fewest characters a password may have.
    pub min_length: Option<u32>,
    /// How many earlier passwords may not come back.
    pub history: Option<u32>,
    /// How long a new password must be kept before it is changed again.
    pub min_age_secs: Option<u64>,
    /// How long a password lasts before it must be changed (`Some(0)`: it never expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Whether three of four kinds of character are needed (and not the account's name).
    pub complexity: Option<bool>,
    /// Wrong passwords after which the directory locks the account (0 or absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_threshold: Option<u32>,
    /// How long a lockout lasts (0: until an administrator lifts it), where the directory says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_duration_secs: Option<u64>,
    /// Whether the agent's resets are checked against `history` too, as a person's own change
    /// is (AD: the DC takes the policy-hints control; OpenLDAP: the service account is no
    /// password administrator). Absent: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_on_reset: Option<bool>,
}

impl PolicyFacts {
    /// This policy as it applies to one account whose password may never expire (AD's
    /// "password never expires"): no maximum age then.
    pub fn for_account(self, never_expires: bool) -> PolicyFacts {
        match never_expires {
            true => PolicyFacts { max_age_secs: Some(0), ..self },
            false => self,
        }
    }
}

#[cfg(test)]
impl PolicyFacts {
    /// A common domain policy, for tests: 8 characters, 24 remembered, kept a day, complex.
    pub(crate) fn typical() -> Self {
        PolicyFacts {
            min_length: Some(8),
            history: Some(24),
            min_age_secs: Some(86_400),
            complexity: Some(true),
            ..Default::default()
        }
    }
}

/// What made a password too easy to guess, where the portal's own check found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guessable {
    /// The banned terms found (as listed), or the organisation's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<String>,
    /// Its points, where it scored too few.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
}

impl Outcome {
    /// Too easy to guess, for a reason nobody gave (a directory's refusal).
    pub fn banned() -> Outcome {
        Outcome::Banned(Box::default())
    }

    /// What may be kept of it: without what a refused password was found to contain or how
    /// often it was seen in breaches, which would narrow down a password close to the person's.
    pub fn for_the_record(&self) -> Outcome {
        match self {
            Outcome::Banned(_) => Outcome::banned(),
            Outcome::Breached { .. } => Outcome::Breached { count: None },
            other => other.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Written back to the directory, but the portal's copy of the hash could not be updated.
    SuccessCloudPending,
    NoAgent,
    AgentTimeout,
    /// The agent holding the request went away before it answered, and another agent found the
    /// new password not in place: nothing was written, and the person may try again.
    NotWritten,
    TooShort {
        min_length: Option<u32>,
    },
    NotComplex,
    InHistory {
        history: Option<u32>,
    },
    TooYoung {
        min_age_secs: Option<u64>,
        /// When the password was last set (Unix seconds), as the directory says: the refusal
        /// then says from when a change is allowed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
    /// Too easy to guess: built on banned terms (as listed, or the organisation's name) with too
    /// little else, as the portal's check scored it (see `domain::banned`); a directory's own
    /// refusal says neither.
    Banned(Box<Guessable>),
    ContainsUserName,
    /// Seen in data breaches (Have I Been Pwned's Pwned Passwords), `count` times where the
    /// source says.
    Breached {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// The breached-password service could not be asked, and the portal is set to refuse
    /// rather than accept unchecked.
    BreachedUnchecked,
    NotFound,
    Protected,
    InsufficientRights,
    DirectoryUnreachable,
    OldPasswordWrong,
    AccountDisabled,
    AccountLocked,
    /// The password works but must be changed before the person may sign in.
    MustChange,
    /// The password has expired and must be changed.
    PasswordExpired,
    /// The new password was set, but the directory still has the account locked (read back
    /// after the act): the person cannot sign in with it yet.
    ChangedStillLocked,
    /// The directory refused for a reason we have no specific mapping for; the raw answer is audited.
    Refused,
    VerificationFailed,
    /// The request could not be carried out by passback itself (bad frame, unusable key…).
    Internal,
}

/// A stable code such as `PB-2001`, for people, logs and the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeCode(pub &'static str);

impl std::fmt::Display for OutcomeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Outcome {
    pub fn code(&self) -> OutcomeCode {
        OutcomeCode(match self {
            Outcome::Success => "PB-0000",
            Outcome::SuccessCloudPending => "PB-0001",
            Outcome::NoAgent => "PB-1001",
            Outcome::AgentTimeout => "PB-1002",
            Outcome::NotWritten => "PB-1003",
            Outcome::TooShort { .. } => "PB-2001",
            Outcome::NotComplex => "PB-2002",
            Outcome::InHistory { .. } => "PB-2003",
            Outcome::TooYoung { .. } => "PB-2004",
            Outcome::Banned(_) => "PB-2005",
            Outcome::ContainsUserName => "PB-2006",
            Outcome::Breached { .. } => "PB-2007",
            Outcome::BreachedUnchecked => "PB-2008",
            Outcome::NotFound => "PB-3001",
            Outcome::Protected => "PB-3002",
            Outcome::InsufficientRights => "PB-3003",
            Outcome::DirectoryUnreachable => "PB-3004",
            Outcome::OldPasswordWrong => "PB-3005",
            Outcome::AccountDisabled => "PB-3006",
            Outcome::AccountLocked => "PB-3007",
            Outcome::MustChange => "PB-3008",
            Outcome::PasswordExpired => "PB-3009",
            Outcome::ChangedStillLocked => "PB-3010",
            Outcome::Refused => "PB-3099",
            Outcome::VerificationFailed => "PB-4001",
            Outcome::Internal => "PB-9000",
        })
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success | Outcome::SuccessCloudPending)
    }

    /// True when the directory (or the portal, for a cloud-only account) now holds the new
    /// password, whether or not the person can sign in with it yet.
    pub fn password_set(&self) -> bool {
        self.is_success() || *self == Outcome::ChangedStillLocked
    }

    /// True when the person can fix it by choosing another password.
    pub fn is_policy_rule(&self) -> bool {
        matches!(
            self,
            Outcome::TooShort { .. }
                | Outcome::NotComplex
                | Outcome::InHistory { .. }
                | Outcome::TooYoung { .. }
                | Outcome::Banned(_)
                | Outcome::ContainsUserName
                | Outcome::Breached { .. }
        )
    }

    /// What the person reads: what happened and what they can do. Plain words, real numbers;
    /// times in UTC.
    pub fn message(&self, tr: Tr) -> String {
        self.message_at(tr, None)
    }

    /// [`Self::message`], with times in the person's time zone: `offset_minutes` east of UTC, as
    /// their browser said (`None`: UTC).
    pub fn message_at(&self, tr: Tr, offset_minutes: Option<i32>) -> String {
        let key = match self {
            Outcome::Success => "outcome.success",
            Outcome::SuccessCloudPending => "outcome.success_cloud_pending",
            Outcome::NoAgent => "outcome.no_agent",
            Outcome::AgentTimeout => "outcome.agent_timeout",
            Outcome::NotWritten => "outcome.not_written",
            Outcome::TooShort { min_length: Some(n) } => return tr.f("outcome.too_short_n", "n", n),
            Outcome::TooShort { min_length: None } => "outcome.too_short",
            Outcome::NotComplex => "outcome.not_complex",
            Outcome::InHistory { history: Some(n) } if *n > 0 => {
                return tr.plural("outcome.in_history_n", u64::from(*n))
            }
            Outcome::InHistory { .. } => "outcome.in_history",
            Outcome::TooYoung { min_age_secs: Some(s), since: Some(at) } => {
                let allowed = at.saturating_add(i64::try_from(*s).unwrap_or(i64::MAX));
                return tr.fill(
                    "outcome.too_young_when",
                    &[("changed", tr.datetime(*at, offset_minutes)), ("allowed", tr.datetime(allowed, offset_minutes))],
                );
            }
            Outcome::TooYoung { min_age_secs: Some(s), .. } => {
                return tr.f("outcome.too_young_d", "duration", tr.duration(*s))
            }
            Outcome::TooYoung { min_age_secs: None, .. } => "outcome.too_young",
            Outcome::Banned(why) if !why.terms.is_empty() => {
                let quoted: Vec<String> = why.terms.iter().map(|t| tr.f("outcome.quoted", "term", t)).collect();
                let terms = quoted.join(", ");
                return match why.score {
                    Some(n) => tr.fill(
                        "outcome.banned_terms_score",
                        &[
                            ("terms", terms),
                            ("score", n.to_string()),
                            ("needed", crate::domain::banned::MIN_SCORE.to_string()),
                        ],
                    ),
                    None => tr.f("outcome.banned_terms", "terms", terms),
                };
            }
            Outcome::Banned(_) => "outcome.banned",
            Outcome::ContainsUserName => "outcome.contains_user_name",
            Outcome::Breached { count: Some(n) } => return tr.f("outcome.breached_n", "n", tr.number(*n)),
            Outcome::Breached { count: None } => "outcome.breached",
            Outcome::BreachedUnchecked => "outcome.breached_unchecked",
            Outcome::NotFound => "outcome.not_found",
            Outcome::Protected => "outcome.protected",
            Outcome::InsufficientRights => "outcome.insufficient_rights",
            Outcome::DirectoryUnreachable => "outcome.directory_unreachable",
            Outcome::OldPasswordWrong => "outcome.old_password_wrong",
            Outcome::AccountDisabled => "outcome.account_disabled",
            Outcome::AccountLocked => "outcome.account_locked",
            Outcome::MustChange => "outcome.must_change",
            Outcome::PasswordExpired => "outcome.password_expired",
            Outcome::ChangedStillLocked => "outcome.changed_still_locked",
            Outcome::Refused => "outcome.refused",
            Outcome::VerificationFailed => "outcome.verification_failed",
            Outcome::Internal => "outcome.internal",
        };
        tr.t(key).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guessable_password_says_what_made_it_so_and_an_older_frame_still_reads() {
        let old: Outcome = serde_json::from_str(r#"{"outcome":"banned"}"#).unwrap();
        assert_eq!(old, Outcome::banned());
        let why =
            Outcome::Banned(Box::new(Guessable { terms: vec!["contoso".into(), "blank".into()], score: Some(4) }));
        let json = serde_json::to_string(&why).unwrap();
        assert_eq!(json, r#"{"outcome":"banned","terms":["contoso","blank"],"score":4}"#);
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), why);
        let words = why.message(Tr::default());
        assert!(words.contains("“contoso”, “blank”") && words.contains("4 points of the 5 needed"), "{words}");
        let seen = Outcome::Breached { count: Some(3_861_493) }.message(Tr::default());
        assert!(seen.contains("3,861,493 times"), "{seen}");
    }

    #[test]
    fn every_outcome_has_its_own_code() {
        let all = [
            Outcome::Success,
            Outcome::SuccessCloudPending,
            Outcome::NoAgent,
            Outcome::AgentTimeout,
            Outcome::NotWritten,
            Outcome::TooShort { min_length: None },
            Outcome::NotComplex,
            Outcome::InHistory { history: None },
            Outcome::TooYoung { min_age_secs: None, since: None },
            Outcome::banned(),
            Outcome::ContainsUserName,
            Outcome::Breached { count: None },
            Outcome::BreachedUnchecked,
            Outcome::NotFound,
            Outcome::Protected,
            Outcome::InsufficientRights,
            Outcome::DirectoryUnreachable,
            Outcome::OldPasswordWrong,
            Outcome::AccountDisabled,
            Outcome::AccountLocked,
            Outcome::MustChange,
            Outcome::PasswordExpired,
            Outcome::ChangedStillLocked,
            Outcome::Refused,
            Outcome::VerificationFailed,
            Outcome::Internal,
        ];
        let mut codes: Vec<_> = all.iter().map(|o| o.code().0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn rules_are_stated_with_the_real_numbers() {
        let tr = Tr::default();
        assert!(Outcome::TooShort { min_length: Some(8) }.message(tr).contains("at least 8 characters"));
        assert!(Outcome::InHistory { history: Some(3) }.message(tr).contains("last 3 passwords"));
        assert!(Outcome::TooYoung { min_age_secs: Some(3600), since: None }.message(tr).contains("1 hour"));
        // Changed 2026-12-04 09:30 UTC, one day's minimum age; seen from UTC+1.
        let young = Outcome::TooYoung { min_age_secs: Some(86_400), since: Some(1_796_376_600) };
        let text = young.message_at(tr, Some(60));
        assert!(text.contains("4 December 2026 at 10:30") && text.contains("5 December 2026 at 10:30"), "{text}");
        assert!(text.contains("UTC+01:00"), "the time zone is named: {text}");
        assert!(young.message(tr).contains("09:30 UTC"), "{}", young.message(tr));
    }

    #[test]
    fn outcomes_survive_the_wire() {
        let o = Outcome::TooShort { min_length: Some(8) };
        let j = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&j).unwrap(), o);
    }
}
