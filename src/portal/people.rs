//! The person an attempt is about: found by the name they typed among the synced directories and
//! the cloud-only accounts, never guessed, and named in the audit without echoing what was typed.

use super::{AppState, PortalError, SupportCode};
use crate::domain::{DirectoryId, EmailAddress, LoginName, Outcome, UserKind};
use crate::mail::Notice;
use crate::store::{self, audit::AuditRecord};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The person the flow is about, as synced from their directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    /// Empty for a cloud-only account (which belongs to no directory).
    pub directory: String,
    /// The directory's anchor, or the cloud-only account's id.
    pub anchor: String,
    pub username: String,
    pub email: Option<String>,
    /// Further addresses from the directory (AD `otherMailbox`).
    #[serde(default)]
    pub other_emails: Vec<String>,
    /// A privileged account (DESIGN §2): no security questions, no self-service reset.
    #[serde(default)]
    pub protected: bool,
    pub kind: UserKind,
}

impl Target {
    pub fn person(&self) -> crate::store::security::Person<'_> {
        crate::store::security::Person { directory: &self.directory, anchor: &self.anchor }
    }
}

/// Who a typed name is.
pub(crate) struct Found {
    /// The one person it names, if exactly one (a cloud-only account only when enabled).
    pub target: Option<Target>,
    /// How many accounts it matched (0: nobody; more than 1: not guessed).
    pub matched: usize,
    /// What the audit calls them: their user name, or a keyed hash of unmatched input (which could
    /// be anything, even a password typed into the wrong field).
    pub audit_name: String,
}

pub(crate) async fn resolve(st: &AppState, login: &LoginName, support: &SupportCode) -> Result<Found, PortalError> {
    let matches = store::users::find_by_login(&st.db, login.as_str()).await?;
    let cloud = store::cloud::find_by_login(&st.db, login.as_str()).await?;
    let matched = matches.len() + cloud.len();
    if matched > 1 {
        tracing::warn!(support_code = %support, count = matched, "a name matches several people; not guessing");
    }
    let target = match (matches.as_slice(), cloud.as_slice()) {
        // A disabled person is found too: the reset's gates and the directory's own answer to a
        // right password say "disabled" to them (and only to them).
        ([one], []) => Some(target_of(st, one).await?),
        ([], [one]) if one.enabled => Some(Target {
            directory: String::new(),
            anchor: one.id.clone(),
            username: one.username.clone(),
            email: one.email.clone(),
            other_emails: Vec::new(),
            protected: false,
            kind: UserKind::CloudOnly,
        }),
        _ => None,
    };
    let audit_name = match &target {
        Some(t) => t.username.clone(),
        None => format!("unmatched:{}", &st.code_key.hash(&[b"audit-name", login.as_str().as_bytes()])[..12]),
    };
    Ok(Found { target, matched, audit_name })
}

/// A synced person as a flow's target.
pub(crate) async fn target_of(st: &AppState, one: &store::users::UserRow) -> Result<Target, PortalError> {
    let kind = if one.is_cloud() { UserKind::CloudOnly } else { synced_kind(st, &one.directory, &one.anchor).await? };
    Ok(Target {
        directory: one.directory.clone(),
        anchor: one.anchor.clone(),
        username: one.username.clone(),
        email: one.email.clone(),
        other_emails: one.other_emails(),
        protected: one.protected,
        kind,
    })
}

/// Whether the directory behind this name can be written to now. A name that matched nobody is
/// answered for a directory chosen from the name itself, so a partial outage does not tell real
/// names from made-up ones.
pub(crate) async fn directory_alive(
    st: &AppState,
    target: Option<&Target>,
    login: &LoginName,
) -> Result<bool, PortalError> {
    if target.is_some_and(|t| t.kind == UserKind::CloudOnly) {
        return Ok(true); // nothing to write back
    }
    let directory = match target {
        Some(t) => t.directory.clone(),
        None => {
            let mut known = store::users::directories(&st.db).await?;
            known.sort();
            if known.is_empty() {
                return Ok(st.hub.any_alive());
            }
            let h = st.code_key.hash(&[b"directory-of", login.as_str().as_bytes()]);
            let n = u64::from_str_radix(&h[..8], 16).unwrap_or(0) as usize;
            known[n % known.len()].clone()
        }
    };
    Ok(DirectoryId::parse(&directory).map(|d| st.hub.is_alive(&d)).unwrap_or(false))
}

/// A synced person's kind: their own override, else their directory's, else federated.
async fn synced_kind(st: &AppState, directory: &str, anchor: &str) -> Result<UserKind, PortalError> {
    if let Some(kind) =
        store::users::kind_override(&st.db, directory, anchor).await?.as_deref().and_then(UserKind::parse)
    {
        return Ok(kind);
    }
    Ok(st.cfg.directories.get(directory).map(|d| d.user_kind).unwrap_or_default())
}

/// One step of one person's attempt, for its audit row and log line.
pub(crate) struct Attempt<'a> {
    pub st: &'a AppState,
    pub client: SocketAddr,
    pub audit_name: &'a str,
    pub target: Option<&'a Target>,
    pub support: &'a SupportCode,
}

impl Attempt<'_> {
    pub async fn audit(&self, operation: &str, outcome: &Outcome, raw: &str) -> Result<(), PortalError> {
        self.audit_by("self-service", operation, outcome, raw).await
    }

    /// [`Self::audit`], done by `actor` (a staff member) rather than the person.
    pub async fn audit_by(
        &self,
        actor: &str,
        operation: &str,
        outcome: &Outcome,
        raw: &str,
    ) -> Result<(), PortalError> {
        let rec = AuditRecord {
            at: self.st.clock.now(),
            actor: actor.into(),
            operation: operation.into(),
            directory: self.target.map(|t| t.directory.clone()),
            anchor: self.target.map(|t| t.anchor.clone()),
            target: Some(self.audit_name.to_string()),
            outcome_code: outcome.code().0.into(),
            raw: raw.into(),
            support_code: self.support.0.clone(),
            client: Some(self.client.ip().to_string()),
        };
        tracing::info!(
            operation = %rec.operation,
            actor = %rec.actor,
            outcome = %rec.outcome_code,
            support_code = %rec.support_code,
            directory = rec.directory.as_deref().unwrap_or(""),
            anchor = rec.anchor.as_deref().unwrap_or(""),
            raw = %rec.raw,
            "audit"
        );
        self.st.hub.metrics.attempt(operation, outcome);
        store::audit::record(&self.st.db, &rec).await?;
        Ok(())
    }
}

/// After something was done to `target`'s account (a reset, a change, an unlock, a forced change):
/// every session of theirs ends, and they are told at every address on record (in the
/// background: a mail failure never undoes the password, and is logged for the administrator).
pub(crate) async fn acted_on(st: &AppState, target: &Target, now: i64, notice: Notice) -> Result<(), PortalError> {
    end_sessions(st, target).await?;
    notify_all(st, addresses_on_record(st, target).await?, now, notice);
    Ok(())
}

/// Ends every signed-in session of `target` (on every instance): returns the new epoch, under
/// which a session that should go on (the one that made a change) carries on.
pub(crate) async fn end_sessions(st: &AppState, target: &Target) -> Result<i64, PortalError> {
    Ok(crate::store::security::bump_session_epoch(&st.db, target.person()).await?)
}

/// Every address `target` can be reached at: the main one, the directory's others and the
/// alternate one registered here, each once.
pub(crate) async fn addresses_on_record(st: &AppState, target: &Target) -> Result<Vec<EmailAddress>, PortalError> {
    let alternate = crate::store::security::alternate_email(&st.db, target.person()).await?;
    let mut out: Vec<EmailAddress> = Vec::new();
    for a in target.email.iter().chain(&target.other_emails).chain(alternate.iter()) {
        if let Ok(a) = EmailAddress::parse(a) {
            if !out.iter().any(|o| o.as_str().eq_ignore_ascii_case(a.as_str())) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// E-mails a notice to each of `addresses`, in the background (see [`notify`]).
pub(crate) fn notify_all(st: &AppState, addresses: Vec<EmailAddress>, now: i64, notice: Notice) {
    let when = crate::mail::utc_minutes(now);
    let tr = crate::i18n::Tr::current();
    let helpdesk = st.helpdesk(tr);
    for to in addresses {
        let (mailer, when, helpdesk) = (st.mailer.clone(), when.clone(), helpdesk.clone());
        tokio::spawn(async move {
            let sent = match crate::mail::notice_message(tr, notice, &when, &helpdesk) {
                Ok(msg) => mailer.send(&to, msg).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                // The change stands; the administrator learns of the mail failure here.
                tracing::error!(error = %format!("{e:#}"), "sending a notice to the person failed");
            }
        });
    }
}

/// How many wrong passwords `/signin` and `/change` try against `target`'s directory per hour and
/// per day: as configured, but always below the directory's own lockout threshold (as the agent
/// last read it), so that nobody typing someone's name can lock them out of their account.
pub(crate) async fn wrong_password_limits(st: &AppState, target: Option<&Target>) -> Result<(u32, u32), PortalError> {
    let configured = (st.cfg.reset.change_attempts_per_hour, st.cfg.reset.change_attempts_per_day);
    let Some(t) = target.filter(|t| !t.directory.is_empty()) else { return Ok(configured) };
    let threshold = crate::store::users::policy(&st.db, &t.directory)
        .await?
        .and_then(|json| serde_json::from_str::<crate::domain::PolicyFacts>(&json).ok())
        .and_then(|p| p.lockout_threshold)
        .filter(|n| *n > 0);
    Ok(match threshold {
        Some(n) => {
            let below = n.saturating_sub(1).max(1);
            (configured.0.min(below), configured.1.min(below))
        }
        None => configured,
    })
}
