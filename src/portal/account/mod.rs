//! Signed-in pages: sign-in (checked by the portal's hash or, for federated people, by the
//! directory through the relay), the expired / must-change form it can lead to, and security
//! info, where people register and remove the methods that later prove who they are.

mod methods;
mod signin;
mod stepup;

pub(crate) use methods::passkey_name;
pub use methods::{
    add_email, authenticator_form, confirm_authenticator, confirm_email, email_form, make_recovery_codes, passkey_form,
    questions_form, remove_method, remove_passkey, save_passkey, save_questions, start_authenticator, start_passkey,
};
pub(crate) use signin::must_change_target;
pub use signin::{expired, expired_form, signin, signin_form, signout};
pub use stepup::{choose as step_up_choose, verify as step_up_verify, verify_form as step_up_form};

use super::pages::AccountPage;
use super::people::Target;
use super::{csrf, paths, AppState, PortalError};
use crate::config::GateMethod;
use crate::i18n::Tr;
use crate::portal::extract::{Button, Posted};
use crate::portal::session::{self, Key};
use crate::store::security;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

const SIGNED_IN: Key<SignedIn> = Key::new(session::SIGNED_IN);
/// Said once, on the next overview (a password changed at sign-in, say).
const NOTICE: Key<String> = Key::new(session::NOTICE);

/// Removing a method needs a sign-in at most this old.
const FRESH_SECS: i64 = 10 * 60;

/// Who is signed in, since when, and under which of their session epochs (see
/// [`crate::usecase::account::end_sessions`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignedIn {
    target: Target,
    audit_name: String,
    at: i64,
    #[serde(default)]
    epoch: i64,
}

impl SignedIn {
    fn fresh(&self, now: i64) -> bool {
        now - self.at < FRESH_SECS
    }
}

/// Starts a signed-in session for `target`: a new session id, the person's current session
/// epoch, and nothing left over from whoever used this browser before (a step-up passed, an
/// address waiting for its code, a reset half done).
async fn begin(st: &AppState, session: &Session, target: Target, audit_name: String) -> Result<(), PortalError> {
    session.cycle_id().await?;
    stepup::forget(session).await?;
    methods::forget(session).await?;
    crate::portal::reset::forget(session).await?;
    let epoch = security::session_epoch(&st.db, target.person()).await?;
    SIGNED_IN.set(session, &SignedIn { target, audit_name, at: st.clock.now(), epoch }).await?;
    Ok(())
}

/// The signed-in person, unless the session has ended: older than `server.session_max_hours`,
/// or signed in before something was done to the account (a reset, a change, an unlock, a
/// security-info change, here or in another session).
async fn signed_in(st: &AppState, session: &Session) -> Result<Option<SignedIn>, PortalError> {
    let Some(who) = SIGNED_IN.get(session).await? else { return Ok(None) };
    let max_age = i64::try_from(st.cfg.server.session_max_hours.saturating_mul(3600)).unwrap_or(i64::MAX);
    let too_old = st.clock.now() - who.at >= max_age;
    if too_old || security::session_epoch(&st.db, who.target.person()).await? > who.epoch {
        SIGNED_IN.take(session).await?;
        return Ok(None);
    }
    Ok(Some(who))
}

/// Who is signed in, for pages outside security info (the change form).
pub(crate) async fn signed_in_target(st: &AppState, session: &Session) -> Result<Option<Target>, PortalError> {
    Ok(signed_in(st, session).await?.map(|who| who.target))
}

/// This session made a change that ended the person's other sessions: it carries on, under
/// the new epoch.
async fn carry_on(session: &Session, mut who: SignedIn, epoch: i64) -> Result<(), PortalError> {
    who.epoch = epoch;
    SIGNED_IN.set(session, &who).await?;
    Ok(())
}

/// The signed-in person, or the way to the sign-in page.
async fn require(st: &AppState, session: &Session) -> Result<Result<SignedIn, Response>, PortalError> {
    Ok(signed_in(st, session).await?.ok_or_else(|| Redirect::to(paths::SIGNIN).into_response()))
}

/// The signed-in person, if they signed in a few minutes ago at most (else they sign in again
/// first) and, when they have a registered method, passed it a few minutes ago at most (else
/// they do that first). Every change to security info needs this: a session left open on a shared computer
/// must not be enough to add someone's own authenticator, or strip the owner's methods.
async fn require_fresh(
    st: &AppState,
    session: &Session,
    then: stepup::Then,
) -> Result<Result<SignedIn, Response>, PortalError> {
    match signed_in(st, session).await? {
        Some(who) if who.fresh(st.clock.now()) => match stepup::needed(st, session, &who, then).await? {
            Some(gate) => Ok(Err(gate)),
            None => Ok(Ok(who)),
        },
        Some(_) => {
            SIGNED_IN.take(session).await?;
            Ok(Err(Redirect::to(&format!("{}?again=1", paths::SIGNIN)).into_response()))
        }
        None => Ok(Err(Redirect::to(paths::SIGNIN).into_response())),
    }
}

/// A signed-in person (else the way to the sign-in page).
pub struct Person(SignedIn);

impl super::extract::Guard for Person {
    async fn admit(st: &AppState, session: &Session) -> Result<Self, PortalError> {
        require(st, session).await?.map(Person).map_err(|r| PortalError::Refused(Box::new(r)))
    }
}

/// A person signed in a few minutes ago who passed a step-up where they have a method (see
/// [`require_fresh`]): what every change to security info needs.
pub struct Fresh(SignedIn);

impl super::extract::Guard for Fresh {
    async fn admit(st: &AppState, session: &Session) -> Result<Self, PortalError> {
        let then = stepup::Then::default();
        require_fresh(st, session, then).await?.map(Fresh).map_err(|r| PortalError::Refused(Box::new(r)))
    }

    /// A step-up on the way takes the person on to what they asked for once they pass it.
    async fn admit_asking(
        st: &AppState,
        session: &Session,
        asked: super::extract::Asked<'_>,
    ) -> Result<Self, PortalError> {
        let then = stepup::Then::of(asked);
        require_fresh(st, session, then).await?.map(Fresh).map_err(|r| PortalError::Refused(Box::new(r)))
    }
}

/// What the person has registered, for the overview.
struct Registered {
    /// Addresses codes can go to (synced and registered).
    emails: Vec<String>,
    alternate: Option<String>,
    authenticator: bool,
    questions: usize,
    recovery_codes: u64,
    passkeys: Vec<crate::store::passkeys::Row>,
}

async fn registered(st: &AppState, t: &Target) -> Result<Registered, PortalError> {
    let mut emails: Vec<String> = Vec::new();
    if st.cfg.gates.email_primary {
        emails.extend(t.email.iter().cloned());
    }
    emails.extend(t.other_emails.iter().cloned());
    let alternate = security::alternate_email(&st.db, t.person()).await?;
    Ok(Registered {
        emails,
        alternate,
        authenticator: security::totp(&st.db, t.person()).await?.is_some_and(|r| r.confirmed),
        questions: security::answers(&st.db, t.person()).await?.len(),
        recovery_codes: u64::try_from(security::recovery_codes_left(&st.db, t.person()).await?).unwrap_or(0),
        passkeys: crate::store::passkeys::of(&st.db, passkey_owner(t)).await?,
    })
}

/// The person's passkeys are kept under this owner.
fn passkey_owner(t: &Target) -> crate::store::passkeys::Owner<'_> {
    crate::store::passkeys::Owner {
        kind: crate::store::passkeys::Kind::Person,
        directory: &t.directory,
        anchor: &t.anchor,
    }
}

/// How many different methods could verify this person now: counted by the gates' own offers,
/// so this page and a reset never disagree.
async fn methods_that_verify(st: &AppState, t: &Target) -> Result<usize, PortalError> {
    let offers = super::gates::real_offers(st, t, crate::config::Purpose::Reset).await?;
    let mut methods: Vec<GateMethod> = offers.into_iter().map(|o| o.method).collect();
    methods.dedup();
    Ok(methods.len())
}

/// The security-info overview.
pub async fn overview(
    super::extract::Only { who: Person(who), session, st }: super::extract::Only<Person>,
) -> Result<Response, PortalError> {
    let notice = NOTICE.take(&session).await?;
    overview_page(&st, &session, &who, notice).await
}

async fn overview_page(
    st: &AppState,
    session: &Session,
    who: &SignedIn,
    notice: Option<String>,
) -> Result<Response, PortalError> {
    let tr = Tr::current();
    let t = &who.target;
    let reg = registered(st, t).await?;
    let g = &st.cfg.gates;
    let have = methods_that_verify(st, t).await?;
    let needed = g.required as usize;
    let now = st.clock.now();
    // The password as the directory has it now: when it expires, and whether it can be changed.
    let offset = crate::portal::pages::time_zone(session, None).await?;
    let state = crate::usecase::password::live(st, t).await;
    let expires = state
        .as_ref()
        .and_then(|s| s.expires_at)
        .and_then(|at| crate::portal::pages::expiry("change.expires", at, now, offset));
    let not_yet = state.as_ref().and_then(|s| crate::portal::pages::not_yet(s, now, offset));
    let stale = g.reconfirm_days > 0
        && security::reviewed_at(&st.db, t.person())
            .await?
            .is_none_or(|at| now - at > i64::from(g.reconfirm_days) * 86_400);
    let page = AccountPage {
        tr,
        csrf: csrf::token(session).await?,
        username: t.username.clone(),
        must_register: (have < needed).then(|| tr.f("account.must_register", "n", needed)),
        reconfirm: have >= needed && stale,
        notice,
        // What may be registered, and whatever was (which may always be removed).
        email_enabled: g.may_register(t.protected, GateMethod::Email) || reg.alternate.is_some(),
        emails: reg.emails,
        alternate: reg.alternate,
        authenticator_enabled: g.may_register(t.protected, GateMethod::Authenticator) || reg.authenticator,
        authenticator: reg.authenticator,
        questions_enabled: g.may_register(t.protected, GateMethod::Questions) || reg.questions > 0,
        questions: reg.questions,
        recovery_codes_enabled: g.may_register(t.protected, GateMethod::RecoveryCode) || reg.recovery_codes > 0,
        recovery_codes: reg.recovery_codes,
        passkeys_enabled: (g.may_register(t.protected, GateMethod::Passkey) && super::passkey::available(st))
            || !reg.passkeys.is_empty(),
        passkeys: reg
            .passkeys
            .into_iter()
            .map(|p| crate::portal::pages::PasskeyView {
                id: p.id,
                name: p.name,
                created: tr.datetime(p.created_at, offset),
                last_used: p.last_used_at.map(|at| tr.datetime(at, offset)),
            })
            .collect(),
        expires,
        not_yet,
    };
    Ok(page.into_response())
}

/// "Yes, these are still right": the person reviewed their security info.
pub async fn confirm(
    Posted { session, who: Fresh(who), st, .. }: Posted<Button, Fresh>,
) -> Result<Response, PortalError> {
    reviewed(&st, &session, &who).await
}

async fn reviewed(st: &AppState, session: &Session, who: &SignedIn) -> Result<Response, PortalError> {
    security::mark_reviewed(&st.db, who.target.person(), st.clock.now()).await?;
    overview_page(st, session, who, Some(Tr::current().t("account.reviewed").into())).await
}
