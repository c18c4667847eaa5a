//! The portal's acts, apart from how they are asked for: the pages, the command line and the
//! demo call the same functions, which take plain inputs (never the web state) and do the whole
//! act, audit row and notices included, in one place.

pub mod account;
pub mod password;
pub mod policy;
pub mod staff;
pub mod trail;

pub use account::{Attempt, Target};

use crate::config::PortalConfig;
use crate::mail::Mailer;
use crate::relay::Hub;
use crate::store::{self, DataKey, Db, MacKey};
use crate::Clock;
use std::sync::Arc;

/// The portal host's services an act on a person's account uses: the database, the relay to the
/// agents, mail, the clock and the keys. The web layer's state holds one; an act never sees a
/// session or a page.
#[derive(Clone)]
pub struct Host {
    pub db: Db,
    pub hub: Arc<Hub>,
    pub cfg: Arc<PortalConfig>,
    pub mailer: Mailer,
    pub clock: Clock,
    /// Keyed hashes of one-time codes (derived from the configured data key).
    pub code_key: MacKey,
    /// Encrypts secrets at rest (authenticator seeds).
    pub secrets: DataKey,
    /// Accounts as their directory had them a moment ago (see [`password::live`]).
    pub live: Arc<password::LiveCache>,
    /// The portal's own checks of new passwords (`[password_policy]`, reloaded as it changes).
    pub rules: Arc<policy::PasswordRules>,
}

impl Host {
    /// Whom people should contact: as configured, else "your helpdesk" in their language.
    pub fn helpdesk(&self, tr: crate::i18n::Tr) -> String {
        self.cfg.server.helpdesk_contact.clone().unwrap_or_else(|| tr.t("common.your_helpdesk").to_string())
    }
}

/// What an act needs of the portal host.
pub struct Ctx<'a> {
    pub db: &'a Db,
    pub secrets: &'a DataKey,
    pub mailer: &'a crate::mail::Mailer,
    pub now: i64,
    /// Mail is sent in the background (a page does not wait on the mail server); `false` for a
    /// command that exits when the act is done, which must wait until it was handed over.
    pub mail_in_background: bool,
}

/// Who asks for an act, as the audit names them.
pub enum By {
    /// A signed-in staff member (their user name), from a client address.
    Staff { username: String, client: Option<std::net::IpAddr> },
    /// Someone on the portal host's command line.
    CommandLine,
}

impl By {
    /// The audit's actor: `staff:<name>` or `command-line`.
    pub fn actor(&self) -> String {
        match self {
            By::Staff { username, .. } => format!("staff:{username}"),
            By::CommandLine => "command-line".into(),
        }
    }

    /// How a notice names them: the staff member's user name, or `passback staff`.
    fn name(&self) -> &str {
        match self {
            By::Staff { username, .. } => username,
            By::CommandLine => "passback staff (command line)",
        }
    }
}

impl Ctx<'_> {
    /// The audit row of a staff act by `by` on the staff account `username`.
    pub(crate) async fn audit(&self, by: &By, operation: &str, username: &str, raw: &str) -> anyhow::Result<()> {
        let client = match by {
            By::Staff { client, .. } => client.map(|c| c.to_string()),
            By::CommandLine => None,
        };
        let rec = store::audit::AuditRecord {
            at: self.now,
            actor: by.actor(),
            operation: operation.into(),
            target: Some(format!("staff:{}", username.to_lowercase())),
            outcome_code: crate::domain::Outcome::Success.code().0.into(),
            raw: raw.into(),
            support_code: crate::domain::SupportCode::new().0,
            client,
            ..Default::default()
        };
        trail::note(&crate::domain::Outcome::Success);
        store::audit::record(self.db, &rec).await?;
        Ok(())
    }
}
