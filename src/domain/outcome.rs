//! The one closed set of outcomes (DESIGN.md §5). Every attempt ends in exactly one of these;
//! each has a stable code, a message a person can act on, and travels in relay frames as is.

use serde::{Deserialize, Serialize};

/// The directory's password rules, as far as the agent could read them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFacts {
    pub min_length: Option<u32>,
    pub history: Option<u32>,
    pub min_age_secs: Option<u64>,
    pub complexity: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Written back to the directory, but the portal's copy of the hash could not be updated.
    SuccessCloudPending,
    NoAgent,
    AgentTimeout,
    TooShort {
        min_length: Option<u32>,
    },
    NotComplex,
    InHistory {
        history: Option<u32>,
    },
    TooYoung {
        min_age_secs: Option<u64>,
    },
    Banned,
    ContainsUserName,
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
            Outcome::TooShort { .. } => "PB-2001",
            Outcome::NotComplex => "PB-2002",
            Outcome::InHistory { .. } => "PB-2003",
            Outcome::TooYoung { .. } => "PB-2004",
            Outcome::Banned => "PB-2005",
            Outcome::ContainsUserName => "PB-2006",
            Outcome::NotFound => "PB-3001",
            Outcome::Protected => "PB-3002",
            Outcome::InsufficientRights => "PB-3003",
            Outcome::DirectoryUnreachable => "PB-3004",
            Outcome::OldPasswordWrong => "PB-3005",
            Outcome::AccountDisabled => "PB-3006",
            Outcome::AccountLocked => "PB-3007",
            Outcome::MustChange => "PB-3008",
            Outcome::PasswordExpired => "PB-3009",
            Outcome::Refused => "PB-3099",
            Outcome::VerificationFailed => "PB-4001",
            Outcome::Internal => "PB-9000",
        })
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success | Outcome::SuccessCloudPending)
    }

    /// True when the person can fix it by choosing another password.
    pub fn is_policy_rule(&self) -> bool {
        matches!(
            self,
            Outcome::TooShort { .. }
                | Outcome::NotComplex
                | Outcome::InHistory { .. }
                | Outcome::TooYoung { .. }
                | Outcome::Banned
                | Outcome::ContainsUserName
        )
    }

    /// What the person reads: what happened and what they can do. Plain words, real numbers.
    pub fn message(&self) -> String {
        match self {
            Outcome::Success => "Your password has been changed. Use the new password from now on.".into(),
            Outcome::SuccessCloudPending => "Your password has been changed in your organisation's directory, but not \
                yet for cloud services: signing in to those with it may not work for a while. If it still does not \
                in an hour, contact your helpdesk with the support code."
                .into(),
            Outcome::NoAgent => "Password reset is unavailable right now: your organisation's directory \
                cannot be reached. Try again later, or contact your helpdesk."
                .into(),
            Outcome::AgentTimeout => "We could not confirm that your password was changed: your \
                organisation's directory did not answer in time. Wait a minute, then try your new password \
                or try again."
                .into(),
            Outcome::TooShort { min_length: Some(n) } => {
                format!("That password is too short. It must be at least {n} characters long.")
            }
            Outcome::TooShort { min_length: None } => "That password is too short. Choose a longer one.".into(),
            Outcome::NotComplex => "That password is too simple. Mix upper-case and lower-case letters, \
                digits and symbols."
                .into(),
            Outcome::InHistory { history: Some(n) } => {
                format!("You have used that password recently. Choose one that is not among your last {n} passwords.")
            }
            Outcome::InHistory { history: None } => {
                "You have used that password recently. Choose one you have not used before.".into()
            }
            Outcome::TooYoung { min_age_secs } => match min_age_secs.map(human_duration) {
                Some(d) => format!(
                    "Your password was changed too recently. It can be changed again {d} after the last change."
                ),
                None => "Your password was changed too recently. Try again later.".into(),
            },
            Outcome::Banned => "That password is too easy to guess. Choose another one.".into(),
            Outcome::ContainsUserName => "A password cannot contain your user name. Choose another one.".into(),
            Outcome::NotFound => "We could not find your account in your organisation's directory. \
                Contact your helpdesk and give them the support code."
                .into(),
            Outcome::Protected => "Administrator accounts cannot reset a forgotten password here. \
                Contact another administrator."
                .into(),
            Outcome::InsufficientRights => "Password reset is not set up correctly for your account. \
                Contact your helpdesk and give them the support code."
                .into(),
            Outcome::DirectoryUnreachable => "Your organisation's directory cannot be reached right now. \
                Try again in a few minutes."
                .into(),
            Outcome::OldPasswordWrong => "The current password is not right.".into(),
            Outcome::AccountDisabled => "Your account is disabled. Contact your helpdesk.".into(),
            Outcome::AccountLocked => "Your account is locked. Wait a while or contact your helpdesk.".into(),
            Outcome::MustChange => "You must choose a new password before you can sign in. Change it now.".into(),
            Outcome::PasswordExpired => "Your password has expired. Choose a new one.".into(),
            Outcome::Refused => "Your organisation's directory refused the new password. Contact your \
                helpdesk and give them the support code."
                .into(),
            Outcome::VerificationFailed => "We could not verify your identity. Wait a while and start again, \
                or contact your helpdesk."
                .into(),
            Outcome::Internal => "Something went wrong on our side. Try again, and if it happens again \
                contact your helpdesk with the support code."
                .into(),
        }
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 && s >= 86_400 => plural(s / 86_400, "day"),
        s if s % 3_600 == 0 && s >= 3_600 => plural(s / 3_600, "hour"),
        s if s >= 60 => plural(s.div_ceil(60), "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_code() {
        let all = [
            Outcome::Success,
            Outcome::SuccessCloudPending,
            Outcome::NoAgent,
            Outcome::AgentTimeout,
            Outcome::TooShort { min_length: None },
            Outcome::NotComplex,
            Outcome::InHistory { history: None },
            Outcome::TooYoung { min_age_secs: None },
            Outcome::Banned,
            Outcome::ContainsUserName,
            Outcome::NotFound,
            Outcome::Protected,
            Outcome::InsufficientRights,
            Outcome::DirectoryUnreachable,
            Outcome::OldPasswordWrong,
            Outcome::AccountDisabled,
            Outcome::AccountLocked,
            Outcome::MustChange,
            Outcome::PasswordExpired,
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
        assert!(Outcome::TooShort { min_length: Some(8) }.message().contains("at least 8 characters"));
        assert!(Outcome::InHistory { history: Some(3) }.message().contains("last 3 passwords"));
        assert!(Outcome::TooYoung { min_age_secs: Some(3600) }.message().contains("1 hour"));
    }

    #[test]
    fn outcomes_survive_the_wire() {
        let o = Outcome::TooShort { min_length: Some(8) };
        let j = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&j).unwrap(), o);
    }
}
