//! The "can't access your account" flow: identify → the gates the policy requires (e-mailed
//! code, authenticator app, security questions; one or two different methods) → a new password
//! or an unlock → sealed writeback → the directory's answer, shown at once.
//!
//! The session says which gates have passed; every step checks it, so no step can be skipped by
//! going straight to a later URL. The first step answers alike whether or not the account exists,
//! and a name that matched nobody walks the same steps, which can never succeed.

mod identify;
mod password;
mod unlock;
mod verify;

pub use identify::{home, identify, identify_form, passkey};
pub use password::{password_form, set_password};
pub use unlock::{unlock, unlock_form};
pub use verify::{choose, verify, verify_form};

use super::gates::{Current, Offer};
use super::pages::{OutcomePage, OutcomeView};
use super::people::{Attempt, Target};
use super::{paths, AppState, PortalError, SupportCode};
use crate::config::GateMethod;
use crate::domain::Outcome;
use crate::portal::session::{FormKey, Key, RESET_FORM};
use crate::portal::Tag;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

const FLOW: Key<Flow> = Key::new(super::session::RESET_FLOW);

/// What the person came for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// A new password.
    #[default]
    Reset,
    /// Keep the password; lift the lockout.
    Unlock,
}

/// What the session knows of this person's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flow {
    /// `None` when the name matched nobody: the flow goes on, identically, and cannot succeed.
    target: Option<Target>,
    /// What the audit calls the person (see [`super::people::Found::audit_name`]).
    audit_name: String,
    /// Under what the limits count: the person, or the unmatched name.
    subject: String,
    intent: Intent,
    /// The ways this person can verify, found at the first step.
    offers: Vec<Offer>,
    /// Methods already passed.
    passed: Vec<GateMethod>,
    /// Wrong answers in this flow, at any gate (for "tries left", which must not read the
    /// account's own record: that would tell real names from made-up ones).
    #[serde(default)]
    failed: u32,
    /// The gate now shown.
    current: Option<Current>,
    verified_at: Option<i64>,
}

/// After a recovery code opened the way, how many the person has left, in words.
async fn recovery_codes_left(st: &AppState, flow: &Flow, target: &Target) -> Result<Option<String>, PortalError> {
    if !flow.passed.contains(&GateMethod::RecoveryCode) {
        return Ok(None);
    }
    let left = crate::store::security::recovery_codes_left(&st.db, target.person()).await?;
    let tr = crate::i18n::Tr::current();
    Ok(Some(match u64::try_from(left).unwrap_or(0) {
        0 => tr.t("recovery.used_none").into(),
        n => tr.plural("recovery.used_left", n),
    }))
}

/// The one-use key of the flow's final form (the new password, or the unlock).
const FINAL_FORM: FormKey = RESET_FORM;

impl Intent {
    /// What the verification is for, as the gates count methods.
    pub(crate) fn purpose(self) -> crate::config::Purpose {
        match self {
            Intent::Reset => crate::config::Purpose::Reset,
            Intent::Unlock => crate::config::Purpose::Unlock,
        }
    }
}

impl Flow {
    fn attempt<'a>(&'a self, st: &'a AppState, client: std::net::SocketAddr, support: &'a SupportCode) -> Attempt<'a> {
        Attempt { st, client, audit_name: &self.audit_name, target: self.target.as_ref(), support }
    }

    /// Offers open now (see [`crate::portal::gates::remaining`]).
    fn remaining(&self) -> Vec<Offer> {
        crate::portal::gates::remaining(&self.offers, &self.passed)
    }

    /// Where the person goes once every gate has passed.
    fn after_gates(&self) -> &'static str {
        match self.intent {
            Intent::Reset => paths::RESET_PASSWORD,
            Intent::Unlock => paths::RESET_UNLOCK,
        }
    }
}

/// Drops a reset in progress (at sign-in).
pub(crate) async fn forget(session: &Session) -> Result<(), PortalError> {
    FLOW.take(session).await?;
    Ok(())
}

async fn load_flow(session: &Session) -> Result<Option<Flow>, PortalError> {
    FLOW.get(session).await
}

fn outcome_page(
    st: &AppState,
    title: &str,
    outcome: &Outcome,
    support: &SupportCode,
    start_again: bool,
) -> OutcomePage {
    let tr = crate::i18n::Tr::current();
    OutcomePage {
        tr,
        title: tr.t(title).into(),
        success: outcome.is_success(),
        outcome: OutcomeView::new(outcome, support),
        helpdesk: st.helpdesk(tr),
        start_again,
        return_to: None,
        expires: None,
        sign_in: crate::portal::pages::sign_in_url(st),
    }
}

/// The page for a person blocked from self-service: the flow ends here.
async fn blocked_page(
    st: &AppState,
    session: &Session,
    flow: &Flow,
    client: std::net::SocketAddr,
    what: &str,
) -> Result<Response, PortalError> {
    let support = SupportCode::new();
    let o = Outcome::VerificationFailed;
    flow.attempt(st, client, &support).audit("reset.blocked", &o, what).await?;
    FLOW.take(session).await?;
    let mut page = outcome_page(st, "gates.blocked_title", &o, &support, false);
    let tr = crate::i18n::Tr::current();
    page.outcome.message = tr.f("gates.blocked", "hours", st.cfg.gates.block_hours);
    // When it ends, in the person's time zone.
    if let Some(until) = crate::store::security::blocked_until(&st.db, &flow.subject, st.clock.now()).await? {
        let offset = crate::portal::pages::time_zone(session, None).await?;
        let when = tr.f("gates.blocked_until", "until", tr.datetime(until, offset));
        page.outcome.message = format!("{} {when}", page.outcome.message);
    }
    Ok(support.tag(page))
}

/// After the gates, for a person whose directory has the account disabled: the page that says
/// so (PB-3006), as a refusal, and the flow ends. The first step answered alike for every name;
/// only someone who proved they hold the account's mailbox or authenticator learns this.
async fn refuse_if_disabled(
    st: &AppState,
    session: &Session,
    flow: &Flow,
    target: &Target,
    client: std::net::SocketAddr,
) -> Result<(), PortalError> {
    let enabled = match crate::usecase::password::live(st, target).await {
        Some(state) => state.enabled,
        // The live state could not be read: what the last sync said.
        None => crate::store::users::get(&st.db, &target.directory, &target.anchor).await?.is_none_or(|r| r.enabled),
    };
    if enabled {
        return Ok(());
    }
    let support = SupportCode::new();
    let o = Outcome::AccountDisabled;
    flow.attempt(st, client, &support).audit("reset.disabled", &o, "the directory has the account disabled").await?;
    FLOW.take(session).await?;
    let page = support.tag(outcome_page(st, "password.disabled_title", &o, &support, false));
    Err(PortalError::Refused(Box::new(page)))
}

/// A flow whose person passed every gate for intent `I`, within the time allowed (a guard:
/// anyone else is sent back to the start, and the flow is forgotten).
pub struct Verified<I>(Flow, Target, std::marker::PhantomData<I>);

/// What a verified flow is for: [`ToReset`] or [`ToUnlock`].
pub trait ForIntent: Send {
    const INTENT: Intent;
}

/// A new password.
pub struct ToReset;
/// The lockout lifted.
pub struct ToUnlock;

impl ForIntent for ToReset {
    const INTENT: Intent = Intent::Reset;
}

impl ForIntent for ToUnlock {
    const INTENT: Intent = Intent::Unlock;
}

/// How long a verified person has to finish.
const VERIFIED_FOR_SECS: i64 = 15 * 60;

/// The person this session's reset flow verified, if it did and they may still set a password
/// (read only: nothing of the flow is changed).
pub(crate) async fn verified_target(st: &AppState, session: &Session) -> Result<Option<Target>, PortalError> {
    let Some(flow) = load_flow(session).await? else { return Ok(None) };
    let fresh = flow.verified_at.is_some_and(|at| st.clock.now() - at < VERIFIED_FOR_SECS);
    Ok(flow.target.filter(|_| fresh && flow.intent == Intent::Reset))
}

impl<I: ForIntent> crate::portal::extract::Guard for Verified<I> {
    async fn admit(st: &AppState, session: &Session) -> Result<Self, PortalError> {
        let back = || PortalError::Refused(Box::new(Redirect::to(paths::RESET_EXPIRED).into_response()));
        let Some(flow) = load_flow(session).await? else { return Err(back()) };
        match (&flow.verified_at, &flow.target) {
            (Some(at), Some(t)) if st.clock.now() - at < VERIFIED_FOR_SECS && flow.intent == I::INTENT => {
                let t = t.clone();
                Ok(Verified(flow, t, std::marker::PhantomData))
            }
            _ => {
                FLOW.take(session).await?;
                Err(back())
            }
        }
    }
}
