//! Change a password you know: user name, current password, new password. The directory checks
//! the current one (a *change*, so its history and minimum age apply too); a cloud-only account
//! is checked by the portal. Wrong current passwords are limited per account, race-free, so the
//! form cannot be used to guess; a name that matches nobody gets the same answer as a wrong
//! password, after the same work.

use super::pages::{new_expiry, not_yet, time_zone, ChangePage, OutcomeView, PolicyView};
use super::people::{self, Attempt};
use super::{csrf, AppState, PortalError, SupportCode};
use crate::domain::{LoginName, NewPassword, Outcome};
use crate::i18n::Tr;
use crate::portal::extract::Posted;
use crate::portal::session::CHANGE_FORM;
use crate::portal::Tag;
use crate::store;
use crate::usecase::account::{self, Act, Ask};
use crate::usecase::password::{self as passwords, Requester};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

const ALREADY_SENT: &str = "password.already_sent";

/// The change form. It states the policy of the only directory, if there is one: never the
/// person's own, which would tell whether a name exists, until they proved who they are
/// (`target`: signed in, or the directory refused a new password by a rule, which it checks
/// only after the current password). Then, if the directory's minimum age forbids a change now,
/// it says from when instead of showing a form to fill.
async fn page(
    st: &AppState,
    target: Option<&people::Target>,
    session: &Session,
    login: &str,
    error: Option<String>,
    outcome: Option<OutcomeView>,
) -> Result<Response, PortalError> {
    let form_key = CHANGE_FORM.current_or_signed(session, &st.code_key).await?;
    let policy = PolicyView::of(st, target).await;
    let not_yet = match target {
        // Read (or kept) by the policy's look-up just above.
        Some(t) => match passwords::live(st, t).await {
            Some(state) => not_yet(&state, st.clock.now(), time_zone(session, None).await?),
            None => None,
        },
        None => None,
    };
    // The form is not shown until then; why is said once (a "too recent" refusal says it).
    let closed = not_yet.is_some();
    let said =
        outcome.as_ref().is_some_and(|o| o.code == Outcome::TooYoung { min_age_secs: None, since: None }.code().0);
    let not_yet = not_yet.filter(|_| !said);
    let page = ChangePage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        pow: st.challenge(),
        form_key,
        login: login.to_string(),
        error,
        outcome,
        policy,
        not_yet,
        closed,
        down: people::directories_down(st, target).await?,
    };
    Ok(page.into_response())
}

/// The change form; for a signed-in person, their own, with their name filled in.
pub async fn change_form(State(st): State<AppState>, session: Session) -> Result<Response, PortalError> {
    match super::account::signed_in_target(&st, &session).await? {
        Some(t) => page(&st, Some(&t), &session, &t.username, None, None).await,
        None => page(&st, None, &session, "", None, None).await,
    }
}

#[derive(Deserialize)]
pub struct ChangeForm {
    form_key: String,
    login: String,
    current: SecretString,
    password: SecretString,
    confirm: SecretString,
    #[serde(default)]
    pow_token: String,
    #[serde(default)]
    pow: String,
    /// Minutes east of UTC, from the form's script (see [`super::pages::tz_offset`]).
    #[serde(default)]
    tz_offset: String,
}

pub async fn change(Posted { form: f, session, st, client, .. }: Posted<ChangeForm>) -> Result<Response, PortalError> {
    super::at_least(st.cfg.reset.change_min_response_ms, change_inner(st.clone(), client, session, f)).await
}

async fn change_inner(
    st: AppState,
    client: std::net::SocketAddr,
    session: Session,
    f: ChangeForm,
) -> Result<Response, PortalError> {
    let support = SupportCode::new();
    // The name is looked up while the request is admitted (one wait fewer); nothing is done with
    // what is found unless it is.
    let lookup = async {
        match LoginName::parse(&f.login) {
            Ok(login) => people::resolve(&st, &login, &support).await.map(|found| Ok((login, found))),
            Err(e) => Ok(Err(e)),
        }
    };
    let looked_up = match st.admit_with(client, (&f.pow_token, &f.pow), lookup).await? {
        Ok(looked_up) => looked_up?,
        Err(refused) => return Ok(refused),
    };
    let typed = f.login.trim().to_string();
    // The key is spent here; the writeback claim below makes it single-use even for racing
    // submits (and is all that does for a key signed before the session began).
    let taken = CHANGE_FORM.take_or_signed(&session, &f.form_key, &st.code_key).await?;
    let Some((msg_id, first)) = crate::portal::session::or_again(taken, &f.form_key) else {
        return page(&st, None, &session, &typed, Some(Tr::current().t(ALREADY_SENT).into()), None).await;
    };
    let (login, found) = match looked_up {
        Ok(l) => l,
        Err(e) => return page(&st, None, &session, &typed, Some(e.text(Tr::current())), None).await,
    };
    if f.current.expose_secret().is_empty() {
        return page(&st, None, &session, &typed, Some(Tr::current().t("change.current_missing").into()), None).await;
    }
    let new = match NewPassword::parse(f.password, &f.confirm) {
        Ok(p) => p,
        Err(e) => return page(&st, None, &session, &typed, Some(e.text(Tr::current())), None).await,
    };
    let now = st.clock.now();
    let attempt =
        Attempt { st: &st, client, audit_name: &found.audit_name, target: found.target.as_ref(), support: &support };
    let offset = time_zone(&session, Some(&f.tz_offset)).await?;
    let outcome_view = |o: &Outcome| OutcomeView::new_at(o, &support, offset);

    if !people::directory_alive(&st, found.target.as_ref(), &login).await? {
        let o = Outcome::NoAgent;
        attempt.audit("change.identify", &o, "no live agent").await?;
        let shown = OutcomeView { message: Tr::current().t("change.down").into(), ..outcome_view(&o) };
        return Ok(support.tag(page(&st, None, &session, &typed, None, Some(shown)).await?));
    }
    let subject = match &found.target {
        Some(t) => store::attempts::subject(&t.directory, &t.anchor),
        None => found.audit_name.clone(),
    };
    let limits = people::wrong_password_limits(&st, found.target.as_ref()).await?;
    // Taken with the claim of the form's key, in one transaction.
    let reservation = store::attempts::Reservation::new(&subject);

    let done = match &found.target {
        Some(target) => {
            let cloud = target.kind == crate::domain::UserKind::CloudOnly;
            let operation = if cloud { "change.cloud" } else { "change.writeback" };
            let ask = Ask::Password { new: &new, current: Some(&f.current) };
            let act = Act { target, msg_id: &msg_id, first, by: Requester::SELF_SERVICE, ask, operation };
            let counted = |r: &crate::relay::WritebackResult, batch: &mut store::Batch| {
                if let Some(s) = count_attempt(&r.outcome, &subject, &reservation) {
                    batch.push_together(s);
                }
            };
            match account::once_counted(&attempt, act, (&reservation, limits), counted).await? {
                Err(account::Spent) => None,
                Ok(None) => {
                    // Kept, as a wrong current password is: a used form sent again with another
                    // password is checked against the account (is it the one in place?), and
                    // must not be a way to try passwords without limit.
                    let already = Some(Tr::current().t(ALREADY_SENT).into());
                    return page(&st, None, &session, &typed, already, None).await;
                }
                Ok(Some(done)) => {
                    if done.earlier {
                        // Counted when it was first sent.
                        reservation.release().run(&st.db).await?;
                    }
                    Some((done.result, done.support))
                }
            }
        }
        None if reservation.take_alone(&st.db, now, limits).await? => {
            // Nobody by that name: the answer and the work of a wrong current password.
            let _ = passwords::verify(&f.current, None).await;
            let result = crate::relay::WritebackResult::local(Outcome::OldPasswordWrong, "no such account");
            attempt.audit("change.writeback", &result.outcome, &result.raw).await?;
            Some((result, support.clone()))
        }
        None => None,
    };
    let Some((result, shown)) = done else {
        let o = Outcome::VerificationFailed;
        attempt.audit("change.limit", &o, "too many wrong current passwords in the last hour or day").await?;
        return Ok(support.tag(page(&st, None, &session, &typed, None, Some(outcome_view(&o))).await?));
    };
    // A form sent again answers under its first sending's support code.
    let support = shown;
    let outcome_view = |o: &Outcome| OutcomeView::new_at(o, &support, offset);
    drop(new);
    if result.outcome.is_success() {
        let expires = new_expiry(&result, st.clock.now(), offset);
        let done = super::pages::OutcomePage {
            tr: Tr::current(),
            title: Tr::current().t("password.done_title").into(),
            success: true,
            outcome: outcome_view(&result.outcome),
            helpdesk: st.helpdesk(Tr::current()),
            start_again: false,
            return_to: super::RETURN_TO.get(&session).await?,
            expires,
            sign_in: super::pages::sign_in_url(&st),
        };
        return Ok(support.tag(done));
    }
    // A rule refused the new password, so the current one was right: the form may now state the
    // person's own rules (the ones that refused it), not the domain's.
    let proved = found.target.as_ref().filter(|_| result.outcome.is_policy_rule());
    Ok(support.tag(page(&st, proved, &session, &typed, None, Some(outcome_view(&result.outcome))).await?))
}

/// What an answer does to the count of attempts: an attempt counts unless it proved the current
/// password right (a success, a rule the directory checks only after the current password, the
/// portal's own rules, which refuse a change only once it is proved, or AD's "disabled") or was
/// never sent. An unconfirmed one might have been a right guess, so it counts too.
fn count_attempt(outcome: &Outcome, subject: &str, reservation: &store::attempts::Reservation) -> Option<store::Stmt> {
    if outcome.is_success() {
        Some(store::attempts::clear(subject))
    } else if outcome.is_policy_rule()
        || matches!(outcome, Outcome::NoAgent | Outcome::AccountDisabled | Outcome::BreachedUnchecked)
    {
        Some(reservation.release())
    } else {
        None
    }
}
