//! The agent's side of a directory: set and change passwords through the directory's own
//! password API (so its policy decides), read that policy, and list the people in scope.
//!
//! Only the agent uses this module; nothing here knows about the portal or its database.
//! Raw answers become [`Outcome`]s in exactly one place, [`answer`].

pub mod ad;
pub mod answer;
pub mod doctor;
mod openldap;
mod pool;
mod protection;

#[cfg(test)]
mod tests;

use crate::config::{DirectoryConfig, DirectoryKind};
use crate::domain::{Anchor, DirectoryId, Outcome, PolicyFacts};
use crate::domain::{SyncMark, SyncedUser};
use anyhow::Context;
use secrecy::SecretString;

/// What the directory said about one password operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    /// The directory's own answer, compact and untouched in substance, for the audit record
    /// (e.g. `rc=19 text="Password fails quality checking policy" ppolicy=6`). Never holds a
    /// password.
    pub raw: String,
    /// The person's own policy, where it could be read: with a refusal by a rule, the policy
    /// that refused; with a password set, the one it now lives under (for when it expires).
    /// Boxed: most answers have none.
    pub policy: Option<Box<PolicyFacts>>,
}

/// A change to an account's state that is not a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    /// Lift a lockout (AD `lockoutTime=0`; OpenLDAP: remove `pwdAccountLockedTime`).
    Unlock,
    /// Require (or stop requiring) a new password at the next sign-in (AD `pwdLastSet` 0 / -1;
    /// OpenLDAP `pwdReset`).
    MustChange(bool),
}

/// How a reset was asked for, beyond the password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetAs {
    /// A protected account may be reset (staff whose role allows it, on an agent that does).
    pub allow_protected: bool,
    /// It stands for the person's own change: written only where the directory checks it
    /// against the password history, else refused unwritten.
    pub keep_history: bool,
}

/// What must be done before a password is written, awaited alongside the read of the account
/// that comes first (the agent's journal of the request): its refusal is the answer, and
/// nothing is written.
pub type BeforeWrite = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Answer>> + Send>>;

/// Nothing to wait for before a password is written.
pub fn write_now() -> BeforeWrite {
    Box::pin(std::future::ready(Ok(())))
}

/// One configured directory, with its own pool of service-account connections.
pub struct Directory {
    id: DirectoryId,
    backend: Backend,
    /// Protection this agent's administrator configured, beside the built-in.
    protection: protection::Configured,
}

enum Backend {
    OpenLdap(openldap::OpenLdap),
    Ad(ad::Ad),
}

/// The configured `user_filter`, checked and in parentheses (empty when there is none), to be
/// ANDed with the kind's own person filter.
fn extra_filter(cfg: &DirectoryConfig) -> anyhow::Result<String> {
    let extra = match cfg.user_filter.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(f) if f.starts_with('(') => f.to_string(),
        Some(f) => format!("({f})"),
    };
    if !extra.is_empty() {
        ldap3::parse_filter(&extra)
            .map_err(|_| anyhow::anyhow!("directory {}: user_filter {extra:?} is not an LDAP filter", cfg.id))?;
    }
    Ok(extra)
}

impl Directory {
    /// Reads the bind password and prepares TLS; connects only when first used.
    pub fn new(cfg: &DirectoryConfig) -> anyhow::Result<Directory> {
        let id = DirectoryId::parse(&cfg.id).map_err(|e| anyhow::anyhow!("directory id {:?}: {e}", cfg.id))?;
        let what = format!("directory {id}: bind password");
        let bind_password = crate::config::read_secret(&cfg.bind_password, &cfg.bind_password_file, &what)?
            .with_context(|| format!("{what} is missing (set bind_password_file)"))?;
        let tls = crate::tls::client_config(cfg.ca_file.as_deref()).with_context(|| format!("directory {id}: TLS"))?;
        let pool = pool::Pool::for_directory(cfg, tls, bind_password).with_context(|| format!("directory {id}"))?;
        // The administrator's extra condition on who is a person here, if any.
        let extra = extra_filter(cfg).with_context(|| format!("directory {id}"))?;
        let backend = match cfg.kind {
            DirectoryKind::Openldap => Backend::OpenLdap(openldap::OpenLdap::new(cfg, pool, &extra)),
            DirectoryKind::Ad => Backend::Ad(ad::Ad::new(cfg, pool, &extra)),
        };
        let protection = protection::Configured::new(cfg)?;
        Ok(Directory { id, backend, protection })
    }

    /// Whether a password reset lifts a lockout by itself: OpenLDAP's ppolicy removes
    /// `pwdAccountLockedTime` and `pwdFailureTime` when the password is set (AD keeps the lock).
    pub fn reset_lifts_lock(&self) -> bool {
        matches!(self.backend, Backend::OpenLdap(_))
    }

    pub fn id(&self) -> &DirectoryId {
        &self.id
    }

    /// Can the service account bind? For the heartbeat's "reachable". The error is a short
    /// description for the administrator.
    pub async fn check(&self) -> Result<(), String> {
        match &self.backend {
            Backend::OpenLdap(d) => d.check().await.map_err(|f| f.to_string()),
            Backend::Ad(d) => d.check().await.map_err(|f| f.to_string()),
        }
    }

    /// Sets a forgotten password (no old password), subject to the directory's policy.
    pub async fn reset(&self, anchor: &Anchor, new: &SecretString) -> Answer {
        self.reset_seeing_lock(anchor, new, ResetAs::default(), write_now()).await.0
    }

    /// A reset by staff whose role may act on protected accounts, on an agent configured to
    /// allow it: like [`Self::reset`], without the refusal of protected accounts.
    pub async fn reset_protected(&self, anchor: &Anchor, new: &SecretString) -> Answer {
        let how = ResetAs { allow_protected: true, ..ResetAs::default() };
        self.reset_seeing_lock(anchor, new, how, write_now()).await.0
    }

    /// A reset, `how` it was asked for, and whether the account may be locked after it:
    /// OpenLDAP says not when the entry carried no lock as it was read just before the write (a
    /// reset adds none, and one that was there goes with it); otherwise (AD keeps a lock through
    /// a reset) only reading it back can tell. The account is read while `before` is done (the
    /// agent's journal syncs the request to disk meanwhile, a fraction of a millisecond), and the
    /// password written only once it is.
    #[tracing::instrument(skip_all, fields(directory = %self.id, anchor = %anchor))]
    pub async fn reset_seeing_lock(
        &self,
        anchor: &Anchor,
        new: &SecretString,
        how: ResetAs,
        before: BeforeWrite,
    ) -> (Answer, bool) {
        let (answer, lock_seen) = match &self.backend {
            // OpenLDAP has no built-in protected accounts: this agent's own rules were checked
            // first.
            Backend::OpenLdap(d) => d.set_password_as(anchor, None, new, how.keep_history, before).await,
            Backend::Ad(d) => (d.set_password_with(anchor, None, new, how, before).await, true),
        };
        if how.allow_protected {
            tracing::info!(code = %answer.outcome.code(), "reset of a possibly protected account answered");
        } else {
            tracing::debug!(code = %answer.outcome.code(), raw = %answer.raw, "password reset answered");
        }
        (answer, lock_seen)
    }

    /// Changes a password the person knows; the directory checks the old one.
    pub async fn change(&self, anchor: &Anchor, old: &SecretString, new: &SecretString) -> Answer {
        self.change_after(anchor, old, new, write_now()).await
    }

    /// [`Self::change`], written only once `before` is done.
    #[tracing::instrument(skip_all, fields(directory = %self.id, anchor = %anchor))]
    pub async fn change_after(
        &self,
        anchor: &Anchor,
        old: &SecretString,
        new: &SecretString,
        before: BeforeWrite,
    ) -> Answer {
        let answer = match &self.backend {
            Backend::OpenLdap(d) => d.set_password_as(anchor, Some(old), new, false, before).await.0,
            Backend::Ad(d) => d.set_password_with(anchor, Some(old), new, ResetAs::default(), before).await,
        };
        tracing::debug!(code = %answer.outcome.code(), raw = %answer.raw, "password change answered");
        answer
    }

    /// Checks a person's password by binding as them: the sign-in of a federated person.
    #[tracing::instrument(skip_all, fields(directory = %self.id, anchor = %anchor))]
    pub async fn verify(&self, anchor: &Anchor, password: &SecretString) -> Answer {
        let answer = match &self.backend {
            Backend::OpenLdap(d) => d.verify(anchor, password).await,
            Backend::Ad(d) => d.verify(anchor, password).await,
        };
        tracing::debug!(code = %answer.outcome.code(), raw = %answer.raw, "password check answered");
        answer
    }

    /// Unlocks the account, or sets or clears "must change at next sign-in".
    #[tracing::instrument(skip_all, fields(directory = %self.id, anchor = %anchor, ?change))]
    pub async fn change_account(&self, anchor: &Anchor, change: AccountChange) -> Answer {
        self.change_account_with(anchor, change, false).await
    }

    /// [`Self::change_account`]; on a protected account only when `allow_protected` (a staff
    /// role and this agent's configuration both allow it).
    pub async fn change_account_with(&self, anchor: &Anchor, change: AccountChange, allow_protected: bool) -> Answer {
        let answer = match &self.backend {
            Backend::OpenLdap(d) => d.change_account(anchor, change).await,
            Backend::Ad(d) => d.change_account(anchor, change, allow_protected).await,
        };
        tracing::debug!(code = %answer.outcome.code(), raw = %answer.raw, "account change answered");
        answer
    }

    /// A refusal when this agent's own configuration (`protected_groups`, `protected_filter`)
    /// protects the person, checked live; also when it cannot be checked.
    pub async fn refuse_if_protected(&self, anchor: &Anchor) -> Option<Answer> {
        let (pool, (bases, person_filter), anchor_filter) = match &self.backend {
            Backend::OpenLdap(d) => (d.pool(), d.scope(), d.anchor_filter(anchor)),
            Backend::Ad(d) => (d.pool(), d.scope(), d.anchor_filter(anchor)),
        };
        let raw = match self.protection.why(pool, bases, person_filter, &anchor_filter?).await {
            Ok(None) => return None,
            Ok(Some(why)) => format!("protected by this agent's configuration ({why}); refused"),
            Err(f) => format!("this agent's protection rules could not be checked ({f}); refused"),
        };
        Some(Answer { outcome: Outcome::Protected, raw, policy: None })
    }

    /// The account's state now, as [`crate::domain::AccountState`] JSON in `raw`.
    #[tracing::instrument(skip_all, fields(directory = %self.id, anchor = %anchor))]
    pub async fn inspect(&self, anchor: &Anchor) -> Answer {
        let state = match &self.backend {
            Backend::OpenLdap(d) => d.inspect(anchor).await,
            Backend::Ad(d) => d.inspect(anchor).await,
        };
        match state {
            Ok(Some(state)) => Answer { outcome: Outcome::Success, raw: state.to_raw(), policy: None },
            Ok(None) => answer::not_found("anchor", anchor),
            Err(f) => answer::failure(&f),
        }
    }

    /// The directory's default policy (OpenLDAP: `policy_dn`; AD: the domain's), if readable.
    pub async fn policy(&self) -> Option<PolicyFacts> {
        match &self.backend {
            Backend::OpenLdap(d) => d.default_policy().await,
            Backend::Ad(d) => d.default_policy().await,
        }
    }

    /// Everyone in scope (base DNs and user filter), each once.
    pub async fn sync_users(&self) -> anyhow::Result<Vec<SyncedUser>> {
        Ok(self.sync_changes(None).await?.0)
    }

    /// Everyone in scope (`since` = `None`), or only who changed since the mark of an earlier
    /// sync; with the mark to give next time.
    pub async fn sync_changes(&self, since: Option<&SyncMark>) -> anyhow::Result<(Vec<SyncedUser>, Option<SyncMark>)> {
        let users = match &self.backend {
            Backend::OpenLdap(d) => d.sync_users(since).await,
            Backend::Ad(d) => d.sync_users(since).await,
        };
        users.map_err(|f| anyhow::anyhow!("directory {}: sync: {f}", self.id))
    }
}
