//! A person as a directory describes them to the portal.

use super::{Anchor, EmailAddress};
use serde::{Deserialize, Serialize};

/// One person in a directory's sync scope: what the portal needs to find them and reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedUser {
    pub anchor: Anchor,
    pub dn: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    /// More addresses the person can be reached at (AD `otherMailbox`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_emails: Vec<EmailAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    pub display_name: String,
    pub enabled: bool,
    pub locked: bool,
    /// A privileged account (AD protected groups): it may change a known password, never reset a
    /// forgotten one here.
    #[serde(default)]
    pub protected: bool,
    /// The groups the person is a direct member of (`memberOf`), for helpdesk scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// When the directory last saw the password set (AD `pwdLastSet`, OpenLDAP `pwdChangedTime`),
    /// Unix seconds: a change made elsewhere outdates the portal's copy of a hash-synced password.
    /// [`PASSWORD_MUST_CHANGE`] when the directory requires a new one at the next sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_changed_at: Option<i64>,
    /// When the password expires, Unix seconds, as the directory computes it (AD
    /// `msDS-UserPasswordExpiryTimeComputed`; OpenLDAP `pwdChangedTime` + the policy's
    /// `pwdMaxAge`). `None`: never, or not known (a password that must change now has no expiry
    /// to remind anyone of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_expires_at: Option<i64>,
}

/// `password_changed_at` of a person the directory requires to choose a new password: newer
/// than any copy the portal holds, which then never stands in for the directory's answer.
pub const PASSWORD_MUST_CHANGE: i64 = i64::MAX;

/// Where a directory's last sync got to, so that the next one asks only for what changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMark {
    /// AD: the DC's `highestCommittedUSN` when the sync began, valid on that DC only.
    Usn { server: String, usn: u64 },
    /// OpenLDAP: the newest `modifyTimestamp` seen (the server's own clock).
    Timestamp(String),
}

/// Where a person's password lives (DESIGN.md §2), and so what a reset or change does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// Only in the portal: its own argon2 hash, its own policy, no writeback.
    CloudOnly,
    /// In a directory, with a copy of the hash in the portal: write back first, and only when
    /// that succeeded replace the portal's hash.
    HashSynced,
    /// In a directory only: write back; the portal keeps no hash.
    #[default]
    Federated,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::CloudOnly => "cloud_only",
            UserKind::HashSynced => "hash_synced",
            UserKind::Federated => "federated",
        }
    }

    pub fn parse(s: &str) -> Option<UserKind> {
        [UserKind::CloudOnly, UserKind::HashSynced, UserKind::Federated].into_iter().find(|k| k.as_str() == s)
    }
}

/// A person's account as the directory has it right now (the helpdesk's live view). Read by
/// the agent for an `inspect` request; travels as JSON in the sealed answer's `raw` text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub enabled: bool,
    pub locked: bool,
    /// Must choose a new password at the next sign-in (AD `pwdLastSet=0`, ppolicy `pwdReset`).
    pub must_change: bool,
    /// The password has expired, where the directory says so (AD); `None` where it is not known.
    #[serde(default)]
    pub expired: Option<bool>,
    /// When the password was last set (Unix seconds: AD `pwdLastSet`, ppolicy `pwdChangedTime`),
    /// where the directory says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_set_at: Option<i64>,
    /// The person's own, resultant password policy (AD: their PSO, else the domain's; OpenLDAP:
    /// their `pwdPolicySubentry`, else the default), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::PolicyFacts>,
    /// When the password expires (Unix seconds), where the directory says it does: AD's own
    /// `msDS-UserPasswordExpiryTimeComputed`, or ppolicy's `pwdChangedTime` + `pwdMaxAge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl AccountState {
    pub fn to_raw(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_raw(raw: &str) -> Option<AccountState> {
        serde_json::from_str(raw).ok()
    }

    /// When the person may next change their password themself, if that is later than `now`:
    /// the last change plus the policy's minimum age. Never for a password that must be changed
    /// (the directories skip the minimum age then), nor where the time or the age is not known.
    pub fn changeable_at(&self, now: i64) -> Option<i64> {
        if self.must_change {
            return None;
        }
        let min_age = self.policy.as_ref()?.min_age_secs.filter(|s| *s > 0)?;
        let at = self.password_set_at?.saturating_add(i64::try_from(min_age).unwrap_or(i64::MAX));
        (at > now).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PolicyFacts;

    fn state(set_at: i64, min_age: u64, max_age: u64) -> AccountState {
        AccountState {
            enabled: true,
            password_set_at: Some(set_at),
            policy: Some(PolicyFacts {
                min_age_secs: Some(min_age),
                max_age_secs: Some(max_age),
                ..PolicyFacts::default()
            }),
            ..AccountState::default()
        }
    }

    #[test]
    fn a_password_younger_than_the_minimum_age_can_be_changed_from_its_end() {
        let now = 1_800_000_000;
        let s = state(now - 60, 86_400, 0);
        assert_eq!(s.changeable_at(now), Some(now - 60 + 86_400));
        assert_eq!(s.changeable_at(now + 86_400), None, "old enough by then");
        assert_eq!(state(now - 60, 0, 0).changeable_at(now), None, "no minimum age");
        let must = AccountState { must_change: true, ..s.clone() };
        assert_eq!(must.changeable_at(now), None, "a password that must be changed can be, at once");
        let unknown = AccountState { password_set_at: None, ..s };
        assert_eq!(unknown.changeable_at(now), None);
    }
}
