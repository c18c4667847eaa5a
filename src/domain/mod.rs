//! The shared vocabulary: values parsed once at the edge, and the closed set of outcomes.
//! Nothing in here knows about HTTP, SQL, LDAP or the relay.

mod access;
pub mod banned;
pub mod dn;
mod ids;
pub mod nist;
mod outcome;
mod person;
mod rules;
mod secret;
pub mod strength;

pub use access::{Placed, Role, Scope};
pub use ids::{Anchor, DirectoryId, EmailAddress, LoginName, MsgId, SupportCode};
pub use outcome::{Guessable, Outcome, OutcomeCode, PolicyFacts};
pub use person::{AccountState, SyncMark, SyncedUser, UserKind, PASSWORD_MUST_CHANGE};
pub use rules::{ad_complexity_refusal, meets_ad_complexity};
pub use secret::{NewPassword, OneTimeCode, Secret, MAX_PASSWORD_CHARS};

/// Why a value given by a person or a peer was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.text(crate::i18n::Tr(crate::i18n::Lang::En)))]
pub struct ParseError(pub &'static str);

impl ParseError {
    /// What the person reads. User-facing refusals are keys into the message catalogues; the
    /// others (made for configuration and peers) are English already.
    pub fn text(&self, tr: crate::i18n::Tr) -> String {
        if self.0.starts_with("error.") {
            tr.t(self.0).to_string()
        } else {
            self.0.to_string()
        }
    }
}
