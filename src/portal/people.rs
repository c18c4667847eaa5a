//! The person an attempt is about: found by the name they typed among the synced directories and
//! the cloud-only accounts, never guessed, and named in the audit without echoing what was typed.

use super::{AppState, PortalError, SupportCode};
use crate::domain::{DirectoryId, LoginName, UserKind};
use crate::store;
pub(crate) use crate::usecase::account::{addresses_on_record, Attempt, Target};

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
    let matches = store::users::find_anywhere(&st.db, login.as_str()).await?;
    let matched = matches.len();
    if matched > 1 {
        tracing::warn!(support_code = %support, count = matched, "a name matches several people; not guessing");
    }
    let target = match matches.as_slice() {
        // A disabled person is found too: the reset's gates and the directory's own answer to a
        // right password say "disabled" to them (and only to them).
        [one] if !one.is_cloud() => Some(Target {
            directory: one.directory.clone(),
            anchor: one.anchor.clone(),
            username: one.username.clone(),
            email: one.email.clone(),
            other_emails: serde_json::from_str(&one.other_emails).unwrap_or_default(),
            protected: one.protected,
            kind: kind_of(st, &one.directory, one.kind_override.as_deref()),
            display_name: one.display_name.clone(),
        }),
        [one] if one.enabled => Some(Target {
            directory: String::new(),
            anchor: one.anchor.clone(),
            username: one.username.clone(),
            email: one.email.clone(),
            other_emails: Vec::new(),
            protected: false,
            kind: UserKind::CloudOnly,
            display_name: one.display_name.clone(),
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
        display_name: one.display_name.clone(),
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

/// Whether a form should warn, before anything is typed, that the directory cannot be reached:
/// the person's own directory has no live agent or, before the person is known, none of the
/// directories has one. (A cloud-only account needs none; the form stays, and says so only as a
/// warning.)
pub(crate) async fn directories_down(st: &AppState, target: Option<&Target>) -> Result<bool, PortalError> {
    match target {
        Some(t) if t.kind == UserKind::CloudOnly => Ok(false),
        Some(t) => Ok(!DirectoryId::parse(&t.directory).map(|d| st.hub.is_alive(&d)).unwrap_or(false)),
        // No query per page view: the configured directories, else whether any agent is alive.
        None if st.cfg.directories.is_empty() => Ok(!st.hub.any_alive()),
        None => {
            let known = st.cfg.directories.keys().filter_map(|d| DirectoryId::parse(d).ok());
            Ok(!known.into_iter().any(|d| st.hub.is_alive(&d)))
        }
    }
}

/// A synced person's kind: their own override, else their directory's, else federated.
async fn synced_kind(st: &AppState, directory: &str, anchor: &str) -> Result<UserKind, PortalError> {
    let own = store::users::kind_override(&st.db, directory, anchor).await?;
    Ok(kind_of(st, directory, own.as_deref()))
}

fn kind_of(st: &AppState, directory: &str, own: Option<&str>) -> UserKind {
    own.and_then(UserKind::parse)
        .unwrap_or_else(|| st.cfg.directories.get(directory).map(|d| d.user_kind).unwrap_or_default())
}

/// How many wrong passwords `/signin` and `/change` try against `target`'s directory per hour and
/// per day: as configured, but always below the directory's own lockout threshold (as the agent
/// last read it), so that nobody typing someone's name can lock them out of their account.
pub(crate) async fn wrong_password_limits(st: &AppState, target: Option<&Target>) -> Result<(u32, u32), PortalError> {
    let configured = (st.cfg.reset.change_attempts_per_hour, st.cfg.reset.change_attempts_per_day);
    let Some(t) = target.filter(|t| !t.directory.is_empty()) else { return Ok(configured) };
    let threshold = crate::usecase::password::directory_policy(st, &t.directory)
        .await?
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
