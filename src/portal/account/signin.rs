//! Sign-in, and the expired / must-change form it leads to when the directory says so.
//! Wrong passwords count against the same per-account limits as the change form, and every
//! answer takes at least the same time, so neither page can be used to guess or to learn names.

use crate::domain::{LoginName, NewPassword, Outcome, UserKind};
use crate::i18n::Tr;
use crate::portal::extract::{Button, Posted};
use crate::portal::pages::{ExpiredPage, OutcomeView, PolicyView, SignInPage};
use crate::portal::people::{self, Attempt, Target};
use crate::portal::session::{self, Key, EXPIRED_FORM};
use crate::portal::Tag;
use crate::portal::{csrf, paths, AppState, PortalError, SupportCode};
use crate::store;
use crate::usecase::account::{self, Act, Ask};
use crate::usecase::password::{self as passwords, Requester};
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

/// A person whose directory said their password must be changed before they sign in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MustChange {
    target: Target,
    audit_name: String,
    /// `must_change` or `expired`: what the page says.
    reason: Outcome,
    /// When the sign-in proved the current password (the directory says "must change" only to
    /// the right one); 0 once it no longer stands in for typing it again.
    #[serde(default)]
    proved_at: i64,
}

const MUST_CHANGE: Key<MustChange> = Key::new(session::MUST_CHANGE);

/// For how long after the sign-in its proof of the current password stands in for typing it
/// again on the change form.
const PROOF_FOR_SECS: i64 = 300;

impl MustChange {
    /// Whether the new password may be written on the strength of the sign-in alone (see
    /// [`Ask::ProvenChange`]): shortly after it, where the directory checks a reset against the
    /// password history as it would the person's change. A protected account's is never reset
    /// by self-service, and where that cannot be told the current password is asked for.
    async fn proven(&self, st: &AppState, now: i64) -> Result<bool, PortalError> {
        if self.proved_at == 0 || now < self.proved_at || now - self.proved_at > PROOF_FOR_SECS {
            return Ok(false);
        }
        let target = &self.target;
        Ok(match target.kind {
            // The portal's own account: it keeps no history to check.
            UserKind::CloudOnly => true,
            _ if target.protected => false,
            _ => {
                let facts = passwords::directory_policy(st, &target.directory).await?;
                facts.and_then(|f| f.history_on_reset) == Some(true)
            }
        })
    }
}

/// Ends a forced change left unfinished in this session (and the proof of its sign-in); a
/// session that holds none is not touched (so a look at the sign-in page writes no session).
async fn drop_unfinished(session: &Session) -> Result<(), PortalError> {
    if MUST_CHANGE.get(session).await?.is_some() {
        MUST_CHANGE.take(session).await?;
    }
    Ok(())
}

/// The person whose password the directory said must be changed at this session's sign-in.
pub(crate) async fn must_change_target(session: &Session) -> Result<Option<Target>, PortalError> {
    Ok(MUST_CHANGE.get(session).await?.map(|m| m.target))
}

async fn page(
    st: &AppState,
    session: &Session,
    login: &str,
    error: Option<String>,
    outcome: Option<OutcomeView>,
) -> PageResult {
    let page = SignInPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        pow: st.challenge(),
        login: login.to_string(),
        notice: None,
        error,
        outcome,
        down: people::directories_down(st, None).await?,
    };
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct SignInQuery {
    again: Option<String>,
}

pub async fn signin_form(
    State(st): State<AppState>,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> PageResult {
    // Back at the sign-in page, a forced change left unfinished (and its sign-in's proof) ends.
    drop_unfinished(&session).await?;
    let tr = Tr::current();
    let page = SignInPage {
        tr,
        csrf: csrf::token(&session).await?,
        pow: st.challenge(),
        login: String::new(),
        notice: q.again.map(|_| tr.t("signin.again").to_string()),
        error: None,
        outcome: None,
        down: people::directories_down(&st, None).await?,
    };
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct SignInForm {
    login: String,
    password: SecretString,
    /// Minutes east of UTC, from the page's script: kept for the pages that follow.
    #[serde(default)]
    tz_offset: String,
    #[serde(default)]
    pow_token: String,
    #[serde(default)]
    pow: String,
}

pub async fn signin(Posted { form: f, session, st, client, .. }: Posted<SignInForm>) -> PageResult {
    crate::portal::at_least(st.cfg.reset.change_min_response_ms, signin_inner(&st, client, &session, f)).await
}

async fn signin_inner(st: &AppState, client: std::net::SocketAddr, session: &Session, f: SignInForm) -> PageResult {
    if let Err(refused) = st.admit(client, &f.pow_token, &f.pow).await? {
        return Ok(refused);
    }
    // Whatever this sign-in comes to, a forced change left unfinished here before is over.
    drop_unfinished(session).await?;
    let tr = Tr::current();
    let typed = f.login.trim().to_string();
    let login = match LoginName::parse(&f.login) {
        Ok(l) => l,
        Err(e) => return page(st, session, &typed, Some(e.text(tr)), None).await,
    };
    if f.password.expose_secret().is_empty() {
        return page(st, session, &typed, Some(tr.t("signin.password_missing").into()), None).await;
    }
    let support = SupportCode::new();
    let now = st.clock.now();
    let found = people::resolve(st, &login, &support).await?;
    let attempt =
        Attempt { st, client, audit_name: &found.audit_name, target: found.target.as_ref(), support: &support };
    if !people::directory_alive(st, found.target.as_ref(), &login).await? {
        let o = Outcome::NoAgent;
        attempt.audit("signin", &o, "no live agent").await?;
        let shown = OutcomeView { message: tr.t("signin.down").into(), ..OutcomeView::new(&o, &support) };
        return Ok(support.tag(page(st, session, &typed, None, Some(shown)).await?));
    }
    let subject = match &found.target {
        Some(t) => t.person().subject(),
        None => found.audit_name.clone(),
    };
    let limits = people::wrong_password_limits(st, found.target.as_ref()).await?;
    let Some(reservation) = store::attempts::reserve(&st.db, &subject, now, limits).await? else {
        let o = Outcome::VerificationFailed;
        attempt.audit("signin.limit", &o, "too many wrong passwords in the last hour or day").await?;
        return Ok(support.tag(page(st, session, &typed, None, Some(OutcomeView::new(&o, &support))).await?));
    };
    let result = match &found.target {
        Some(t) => passwords::check_current(st, t, &f.password, now).await?,
        None => {
            // Nobody by that name: the work and the answer of a wrong password.
            let _ = passwords::verify(&f.password, None).await;
            crate::relay::WritebackResult::local(Outcome::OldPasswordWrong, "no such account")
        }
    };
    attempt.audit("signin", &result.outcome, &result.raw).await?;
    // As on the change form: only an answer that proved the password right gives the attempt back.
    // (A disabled account is said only for a right password: AD's 533, or the portal's hash.)
    let proved = matches!(
        result.outcome,
        Outcome::Success | Outcome::MustChange | Outcome::PasswordExpired | Outcome::AccountDisabled
    );
    // The language a person signs in with is the one their reminders come in.
    match found.target.as_ref().filter(|t| proved && !t.directory.is_empty()) {
        Some(t) => {
            let mut batch = store::Batch::new();
            batch.push(store::attempts::release(reservation));
            batch.push(store::reminders::remember_lang(&t.directory, &t.anchor, Tr::current().0));
            batch.run(&st.db).await?;
        }
        None if proved || result.outcome == Outcome::NoAgent => {
            store::attempts::release(reservation).run(&st.db).await?;
        }
        None => {}
    }
    if proved {
        // Kept for the pages that follow, which say when the password expires.
        crate::portal::pages::time_zone(session, Some(&f.tz_offset)).await?;
    }
    let target = found.target.clone();
    match (result.outcome.clone(), target) {
        (Outcome::Success, Some(target)) => {
            store::attempts::clear(&subject).run(&st.db).await?;
            super::begin(st, session, target, found.audit_name).await?;
            Ok(support.tag(Redirect::to(paths::ACCOUNT)))
        }
        (reason @ (Outcome::MustChange | Outcome::PasswordExpired), Some(target)) => {
            session.cycle_id().await?;
            let must = MustChange { target, audit_name: found.audit_name, reason, proved_at: now };
            MUST_CHANGE.set(session, &must).await?;
            EXPIRED_FORM.forget(session).await?;
            Ok(support.tag(Redirect::to(paths::SIGNIN_EXPIRED)))
        }
        (o, _) => {
            // A wrong password, an unknown name and a locked account read alike (the words say
            // what to do if the person is locked out). A disabled account is said as such: the
            // directory says so only to someone who typed the right password.
            let alike = [Outcome::OldPasswordWrong, Outcome::AccountLocked, Outcome::NotFound];
            let shown = if alike.contains(&o) {
                OutcomeView {
                    message: tr.t("signin.wrong").into(),
                    ..OutcomeView::new(&Outcome::OldPasswordWrong, &support)
                }
            } else {
                OutcomeView::new(&o, &support)
            };
            Ok(support.tag(page(st, session, &typed, None, Some(shown)).await?))
        }
    }
}

async fn expired_page(
    st: &AppState,
    session: &Session,
    must: &MustChange,
    error: Option<String>,
    outcome: Option<OutcomeView>,
) -> PageResult {
    let tr = Tr::current();
    let page = ExpiredPage {
        tr,
        csrf: csrf::token(session).await?,
        form_key: EXPIRED_FORM.current(session).await?,
        username: must.target.username.clone(),
        ask_current: !must.proven(st, st.clock.now()).await?,
        reason: must.reason.message(tr),
        policy: PolicyView::of(st, Some(&must.target)).await,
        error,
        outcome,
    };
    Ok(page.into_response())
}

pub async fn expired_form(State(st): State<AppState>, session: Session) -> PageResult {
    let Some(must) = MUST_CHANGE.get(&session).await? else {
        return Ok(Redirect::to(paths::SIGNIN).into_response());
    };
    expired_page(&st, &session, &must, None, None).await
}

#[derive(Deserialize)]
pub struct ExpiredForm {
    form_key: String,
    /// Absent where the sign-in's proof stands in for it.
    #[serde(default)]
    current: Option<SecretString>,
    password: SecretString,
    confirm: SecretString,
    /// Minutes east of UTC, from the form's script.
    #[serde(default)]
    tz_offset: String,
}

/// The new password, written back as a *change*: the directory checks the current one and its
/// history; or, shortly after the sign-in proved the current one, as a reset the directory
/// checks against the history (see [`MustChange::proven`]). On success the person is signed in.
pub async fn expired(Posted { form: f, session, st, client, .. }: Posted<ExpiredForm>) -> PageResult {
    let Some(mut must) = MUST_CHANGE.get(&session).await? else {
        return Ok(Redirect::to(paths::SIGNIN).into_response());
    };
    let tr = Tr::current();
    let Some((msg_id, first)) = EXPIRED_FORM.take_or_again(&session, &f.form_key).await? else {
        return expired_page(&st, &session, &must, Some(tr.t("password.already_sent").into()), None).await;
    };
    let current = f.current.filter(|c| !c.expose_secret().is_empty());
    // A form sent again (its answer lost) only learns what its first sending came to, however
    // long ago the sign-in was: it never acts.
    if first && current.is_none() && !must.proven(&st, st.clock.now()).await? {
        // Asked for on the page, or the sign-in was too long ago for the form sent without it.
        let why = if must.proved_at == 0 { "change.current_missing" } else { "expired.proof_expired" };
        return expired_page(&st, &session, &must, Some(tr.t(why).into()), None).await;
    }
    let new = match NewPassword::parse(f.password, &f.confirm) {
        Ok(p) => p,
        Err(e) => return expired_page(&st, &session, &must, Some(e.text(tr)), None).await,
    };
    let support = SupportCode::new();
    let target = must.target.clone();
    let attempt = Attempt { st: &st, client, audit_name: &must.audit_name, target: Some(&target), support: &support };
    let ask = match &current {
        Some(current) => Ask::Password { new: &new, current: Some(current) },
        None => Ask::ProvenChange { new: &new },
    };
    let by = Requester::SELF_SERVICE;
    let act = Act { target: &target, msg_id: &msg_id, first, by, ask, operation: "change.expired" };
    let Some(account::Done { result, support, .. }) = account::once(&attempt, act).await? else {
        return expired_page(&st, &session, &must, Some(tr.t("password.already_sent").into()), None).await;
    };
    drop(new);
    if current.is_none() && matches!(result.outcome, Outcome::Protected | Outcome::InsufficientRights) {
        // Not written: this account's directory takes no reset in place of the person's change
        // (it would not check the history, or the account is one self-service never resets).
        // As a change, with the current password, it may.
        must.proved_at = 0;
        MUST_CHANGE.set(&session, &must).await?;
        let view =
            support.tag(expired_page(&st, &session, &must, Some(tr.t("expired.type_current").into()), None).await?);
        return Ok(view);
    }
    if !result.outcome.is_success() {
        let offset = crate::portal::pages::time_zone(&session, Some(&f.tz_offset)).await?;
        let view = OutcomeView::new_at(&result.outcome, &support, offset);
        return Ok(support.tag(expired_page(&st, &session, &must, None, Some(view)).await?));
    }
    MUST_CHANGE.take(&session).await?;
    super::begin(&st, &session, target, must.audit_name).await?;
    // Said first, on the page the person lands on: it worked.
    super::NOTICE.set(&session, &tr.t("password.done_title").to_string()).await?;
    Ok(support.tag(Redirect::to(paths::ACCOUNT)))
}

pub async fn signout(Posted { session, .. }: Posted<Button>) -> PageResult {
    session.flush().await?;
    Ok(Redirect::to(paths::SIGNIN).into_response())
}
