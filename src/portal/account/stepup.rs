//! Step-up before changing security info: a person who already has a registered way to verify
//! must pass as many different methods as a reset needs (`gates.required`, or all they have when
//! they have fewer) before adding or removing one, so a password alone (phished, or typed on a
//! shared computer), or a password and the mailbox behind it, cannot swap someone's recovery
//! methods for the attacker's. Security questions count only as a second method, as at a reset.
//! Someone with nothing registered yet needs only the sign-in to register a first.

use super::{overview_page, SignedIn, FRESH_SECS};
use crate::config::GateMethod;
use crate::domain::Outcome;
use crate::i18n::Tr;
use crate::portal::extract::{Asked, Posted};
use crate::portal::gates::{self, Current, Offer};
use crate::portal::people::Attempt;
use crate::portal::session::{self, Key};
use crate::portal::Tag;
use crate::portal::{paths, AppState, ClientAddr, PortalError, SupportCode};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

const STEP_UP: Key<StepUp> = Key::new(session::STEP_UP);
const ACTIONS: gates::Actions = gates::Actions {
    verify: paths::ACCOUNT_VERIFY,
    method: paths::ACCOUNT_METHOD,
    back: paths::ACCOUNT,
    resend: false,
};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct StepUp {
    /// Whose step-up this is: it counts for nobody else.
    subject: String,
    offers: Vec<Offer>,
    /// Methods passed so far, and how many different ones it takes.
    #[serde(default)]
    passed: Vec<GateMethod>,
    #[serde(default)]
    needs: usize,
    current: Option<Current>,
    passed_at: Option<i64>,
    /// What the person asked for when the step-up came first, and when.
    #[serde(default)]
    then: Then,
    #[serde(default)]
    asked_at: i64,
}

/// What a person asked for when a step-up came first: where passing it takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Then {
    /// Security info, which says they may change it now.
    #[default]
    Overview,
    /// The form to add an alternate address (an address posted before is typed again).
    EmailForm,
    /// The security questions form (answers posted before are never kept).
    QuestionsForm,
    /// The authenticator enrolment under way.
    AuthenticatorForm,
    /// A new authenticator enrolment.
    StartAuthenticator,
    /// A registered method removed.
    Remove(GateMethod),
    /// "These are still right".
    Confirm,
    /// New recovery codes.
    RecoveryCodes,
    /// The page that registers a passkey.
    PasskeyForm,
    /// One passkey removed (by the id of its row).
    RemovePasskey(uuid::Uuid),
}

impl Then {
    pub(crate) fn of(asked: Asked<'_>) -> Then {
        match (asked.posted, asked.path) {
            (_, paths::ACCOUNT_EMAIL) => Then::EmailForm,
            (_, paths::ACCOUNT_QUESTIONS) => Then::QuestionsForm,
            (_, paths::ACCOUNT_AUTHENTICATOR) => Then::AuthenticatorForm,
            (true, paths::ACCOUNT_AUTHENTICATOR_START) => Then::StartAuthenticator,
            (true, paths::ACCOUNT_CONFIRM) => Then::Confirm,
            (true, paths::ACCOUNT_RECOVERY_CODES) => Then::RecoveryCodes,
            (true, paths::ACCOUNT_PASSKEY_START) | (_, paths::ACCOUNT_PASSKEYS) => Then::PasskeyForm,
            (true, paths::ACCOUNT_PASSKEY_REMOVE) => {
                serde_urlencoded::from_bytes::<super::methods::PasskeyRemoveForm>(asked.form)
                    .ok()
                    .and_then(|f| f.id.parse().ok())
                    .map_or(Then::Overview, Then::RemovePasskey)
            }
            (true, paths::ACCOUNT_REMOVE) => serde_urlencoded::from_bytes::<super::methods::RemoveForm>(asked.form)
                .map_or(Then::Overview, |f| Then::Remove(f.method)),
            _ => Then::Overview,
        }
    }
}

impl StepUp {
    /// Offers open now: methods not passed yet, questions only after another, unless the
    /// questions are all the person has (then they are asked rather than nothing).
    fn remaining(&self) -> Vec<Offer> {
        let open = gates::remaining(&self.offers, &self.passed);
        if open.is_empty() && self.passed.is_empty() {
            return self.offers.clone();
        }
        open
    }

    fn progress(&self) -> gates::Progress {
        gates::Progress::new(self.remaining(), &self.passed, ACTIONS)
    }
}

/// `Some(way to the gate)` when the person must verify before changing their security info.
pub(super) async fn needed(
    st: &AppState,
    session: &Session,
    who: &SignedIn,
    then: Then,
) -> Result<Option<Response>, PortalError> {
    let subject = who.target.person().subject();
    let step = STEP_UP.get(session).await?.unwrap_or_default();
    if step.subject == subject && step.passed_at.is_some_and(|at| st.clock.now() - at < FRESH_SECS) {
        return Ok(None);
    }
    // As many different methods as a reset needs, counted from all the person has: the
    // administrator's list of those that count for a step-up narrows the choice, never what it
    // takes. Where it leaves too few (or only security questions, never a first method), any of
    // the person's methods count.
    let all = gates::real_offers(st, &who.target, crate::config::Purpose::Any).await?;
    if all.is_empty() {
        return Ok(None);
    }
    let distinct = |offers: &[gates::Offer]| {
        let mut methods: Vec<GateMethod> = offers.iter().map(|o| o.method).collect();
        methods.sort_unstable();
        methods.dedup();
        methods.len()
    };
    let needs = distinct(&all).min(st.cfg.gates.required as usize);
    let counting = gates::real_offers(st, &who.target, crate::config::Purpose::StepUp).await?;
    let enough = distinct(&counting) >= needs && counting.iter().any(|o| o.method != GateMethod::Questions);
    let offers = if enough { counting } else { all };
    let asked_at = st.clock.now();
    let step = StepUp { subject, offers, passed: Vec::new(), needs, current: None, passed_at: None, then, asked_at };
    STEP_UP.set(session, &step).await?;
    Ok(Some(Redirect::to(paths::ACCOUNT_VERIFY).into_response()))
}

/// Drops any step-up state (at sign-in: it was someone else's).
pub(super) async fn forget(session: &Session) -> Result<(), PortalError> {
    STEP_UP.take(session).await?;
    Ok(())
}

async fn load(st: &AppState, session: &Session) -> Result<Option<(SignedIn, StepUp)>, PortalError> {
    let who = super::signed_in(st, session).await?;
    let step = STEP_UP.get(session).await?;
    Ok(who.zip(step).filter(|(w, s)| s.subject == w.target.person().subject()))
}

fn back() -> Response {
    Redirect::to(paths::ACCOUNT).into_response()
}

async fn open(
    st: &AppState,
    session: &Session,
    who: &SignedIn,
    step: &mut StepUp,
    offer: &Offer,
    client: std::net::SocketAddr,
) -> Result<(), PortalError> {
    let support = SupportCode::new();
    let (current, raw) = gates::start(st, client.ip(), Some(&who.target), offer, &support).await?;
    let attempt = Attempt { st, client, audit_name: &who.audit_name, target: Some(&who.target), support: &support };
    attempt.audit(&format!("security.step_up.gate.{}", offer.method.as_str()), &Outcome::Success, raw).await?;
    step.current = Some(current);
    STEP_UP.set(session, &*step).await?;
    Ok(())
}

async fn lead() -> Option<String> {
    Some(Tr::current().t("account.step_up").into())
}

pub async fn verify_form(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
) -> PageResult {
    let Some((who, mut step)) = load(&st, &session).await? else { return Ok(back()) };
    if step.passed_at.is_some() {
        return Ok(back());
    }
    if step.current.is_none() {
        match step.remaining().as_slice() {
            [] => return Ok(back()),
            [only] => open(&st, &session, &who, &mut step, only, client).await?,
            _ => return gates::choice_page(&session, &step.progress(), lead().await, None).await,
        }
    }
    let Some(current) = &step.current else { return Ok(back()) };
    gates::gate_page(&st, &session, current, &step.progress(), (None, None)).await
}

#[derive(Deserialize)]
pub struct ChoiceForm {
    #[serde(default)]
    method: String,
}

pub async fn choose(Posted { form: f, session, st, client, .. }: Posted<ChoiceForm>) -> PageResult {
    let Some((who, mut step)) = load(&st, &session).await? else { return Ok(back()) };
    if f.method == "other" {
        step.current = None;
        STEP_UP.set(&session, &step).await?;
        return gates::choice_page(&session, &step.progress(), lead().await, None).await;
    }
    let Some(offer) = step.remaining().into_iter().find(|o| o.id == f.method) else {
        return gates::choice_page(&session, &step.progress(), lead().await, None).await;
    };
    open(&st, &session, &who, &mut step, &offer, client).await?;
    Ok(Redirect::to(paths::ACCOUNT_VERIFY).into_response())
}

pub async fn verify(Posted { form: f, session, st, client, .. }: Posted<gates::GateForm>) -> PageResult {
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    let Some((who, mut step)) = load(&st, &session).await? else { return Ok(back()) };
    let Some(current) = step.current.clone() else { return Ok(Redirect::to(paths::ACCOUNT_VERIFY).into_response()) };
    let subject = who.target.person().subject();
    let support = SupportCode::new();
    let attempt =
        Attempt { st: &st, client, audit_name: &who.audit_name, target: Some(&who.target), support: &support };
    let response = f.response(&current);
    let method = current.offer.method;
    let operation = format!("security.step_up.{}", method.as_str());
    let raw = match gates::answer(&st, &session, &subject, client.ip(), Some(&who.target), &current, &response).await? {
        gates::Answered::Blocked => {
            let why = "blocked after too many failures";
            attempt.audit("security.step_up", &Outcome::VerificationFailed, why).await?;
            STEP_UP.take(&session).await?;
            return Ok(support.tag(blocked(&st, &support)));
        }
        gates::Answered::TooManyFromHere => return Ok(crate::portal::error::too_many()),
        gates::Answered::Right(raw) => raw,
        gates::Answered::Wrong { raw, blocked_now } => {
            attempt.audit(&operation, &Outcome::VerificationFailed, raw).await?;
            if blocked_now {
                STEP_UP.take(&session).await?;
                return Ok(support.tag(blocked(&st, &support)));
            }
            let error = gates::wrong_answer(Tr::current(), method).to_string();
            let shown = (Some(error), Some(support.0.clone()));
            let page = gates::gate_page(&st, &session, &current, &step.progress(), shown).await?;
            return Ok(support.tag(page));
        }
    };
    attempt.audit(&operation, &Outcome::Success, raw).await?;
    session.cycle_id().await?;
    step.current = None;
    step.passed.push(method);
    if step.passed.len() < step.needs.max(1) {
        // Another, different method to go.
        STEP_UP.set(&session, &step).await?;
        return Ok(Redirect::to(paths::ACCOUNT_VERIFY).into_response());
    }
    let now = st.clock.now();
    step.passed_at = Some(now);
    STEP_UP.set(&session, &step).await?;
    // On to what was asked for: a form posted then (its token was checked) is carried out now,
    // while the sign-in is still fresh and the asking recent, as the form itself required; a
    // page asked for checks that again as it opens.
    let recent = who.fresh(now) && now - step.asked_at < FRESH_SECS;
    let then = match step.then {
        Then::StartAuthenticator | Then::Remove(_) | Then::RemovePasskey(_) | Then::Confirm | Then::RecoveryCodes
            if !recent =>
        {
            Then::Overview
        }
        then => then,
    };
    match then {
        Then::Overview => overview_page(&st, &session, &who, Some(Tr::current().t("account.verified").into())).await,
        Then::EmailForm => Ok(Redirect::to(paths::ACCOUNT_EMAIL).into_response()),
        Then::QuestionsForm => Ok(Redirect::to(paths::ACCOUNT_QUESTIONS).into_response()),
        Then::AuthenticatorForm => Ok(Redirect::to(paths::ACCOUNT_AUTHENTICATOR).into_response()),
        Then::StartAuthenticator => super::methods::begin_authenticator(&st, &who).await,
        Then::Remove(method) => super::methods::remove(&st, &session, client, &who, method).await,
        Then::RemovePasskey(id) => {
            super::methods::remove_one_passkey(&st, &session, client, &who, &id.to_string()).await
        }
        Then::Confirm => super::reviewed(&st, &session, &who).await,
        Then::RecoveryCodes => super::methods::new_recovery_codes(&st, &session, client, &who).await,
        Then::PasskeyForm => Ok(Redirect::to(paths::ACCOUNT_PASSKEYS).into_response()),
    }
}

fn blocked(st: &AppState, support: &SupportCode) -> Response {
    let tr = Tr::current();
    let o = Outcome::VerificationFailed;
    let mut page = crate::portal::pages::OutcomePage {
        tr,
        title: tr.t("gates.blocked_title").into(),
        success: false,
        outcome: crate::portal::pages::OutcomeView::new(&o, support),
        helpdesk: st.helpdesk(tr),
        start_again: false,
        return_to: None,
        expires: None,
        sign_in: crate::portal::pages::sign_in_url(st),
    };
    page.outcome.message = tr.f("gates.blocked", "hours", st.cfg.gates.block_hours);
    page.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_asked_for_is_read_from_the_request_alone() {
        let asked = |posted, path, form: &'static str| Then::of(Asked { posted, path, form: form.as_bytes() });
        assert_eq!(asked(true, paths::ACCOUNT_REMOVE, "csrf=x&method=email"), Then::Remove(GateMethod::Email));
        assert_eq!(asked(true, paths::ACCOUNT_REMOVE, "csrf=x&method=nonsense"), Then::Overview);
        assert_eq!(asked(false, paths::ACCOUNT_REMOVE, ""), Then::Overview, "only a posted form acts");
        assert_eq!(asked(false, paths::ACCOUNT_AUTHENTICATOR_START, ""), Then::Overview);
        assert_eq!(asked(true, paths::ACCOUNT_AUTHENTICATOR_START, "csrf=x"), Then::StartAuthenticator);
        assert_eq!(asked(true, paths::ACCOUNT_CONFIRM, "csrf=x"), Then::Confirm);
        assert_eq!(asked(true, paths::ACCOUNT_RECOVERY_CODES, "csrf=x"), Then::RecoveryCodes);
        assert_eq!(asked(false, paths::ACCOUNT_RECOVERY_CODES, ""), Then::Overview);
        assert_eq!(asked(true, paths::ACCOUNT_PASSKEY_START, "csrf=x"), Then::PasskeyForm);
        assert_eq!(asked(false, paths::ACCOUNT_PASSKEYS, ""), Then::PasskeyForm);
        let id = uuid::Uuid::new_v4();
        let form = format!("csrf=x&id={id}");
        let remove = Asked { posted: true, path: paths::ACCOUNT_PASSKEY_REMOVE, form: form.as_bytes() };
        assert_eq!(Then::of(remove), Then::RemovePasskey(id));
        assert_eq!(asked(true, paths::ACCOUNT_PASSKEY_REMOVE, "csrf=x&id=nonsense"), Then::Overview);
        assert_eq!(asked(false, paths::ACCOUNT_QUESTIONS, ""), Then::QuestionsForm);
        assert_eq!(asked(true, paths::ACCOUNT_EMAIL, "csrf=x&address=a%40b.example"), Then::EmailForm);
        assert_eq!(asked(true, "/somewhere/else", ""), Then::Overview);
    }
}
