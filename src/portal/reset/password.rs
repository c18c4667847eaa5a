//! Step 3: the new password. Sealed and sent to a live agent of the person's directory; the page
//! waits for the directory's answer and shows it. The form's one-use key is the relay message id,
//! so a second submit of the same form can never write twice.

use super::{outcome_page, Attempt, Target, ToReset, Verified, FLOW};
use crate::domain::{NewPassword, Outcome, UserKind};
use crate::i18n::Tr;
use crate::portal::extract::Only;
use crate::portal::extract::Posted;
use crate::portal::pages::{OutcomeView, PasswordPage, PolicyView};
use crate::portal::Tag;
use crate::portal::{csrf, AppState, ClientAddr, PortalError, SupportCode};
use crate::store;
use crate::usecase::account::{self, Act, Ask};
use crate::usecase::password::{self as passwords, Requester};
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use tower_sessions::Session;

const ALREADY_SENT: &str = "password.already_sent";

type PageResult = Result<Response, PortalError>;

async fn password_page(
    st: &AppState,
    session: &Session,
    target: &Target,
    error: Option<String>,
    outcome: Option<OutcomeView>,
) -> PageResult {
    password_page_saying(st, session, target, error, outcome, None).await
}

/// [`password_page`], with a word on what the last step did (a recovery code used).
async fn password_page_saying(
    st: &AppState,
    session: &Session,
    target: &Target,
    error: Option<String>,
    outcome: Option<OutcomeView>,
    notice: Option<String>,
) -> PageResult {
    let form_key = super::FINAL_FORM.current(session).await?;
    let page = PasswordPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        form_key,
        error,
        outcome,
        policy: PolicyView::of(st, Some(target)).await,
        locked: passwords::live(st, target).await.is_some_and(|s| s.locked),
        notice,
    };
    Ok(page.into_response())
}

pub async fn password_form(
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    Only { who: Verified(flow, target, _), session, st }: Only<Verified<ToReset>>,
) -> PageResult {
    super::refuse_if_disabled(&st, &session, &flow, &target, client).await?;
    let notice = super::recovery_codes_left(&st, &flow, &target).await?;
    password_page_saying(&st, &session, &target, None, None, notice).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    form_key: String,
    password: SecretString,
    confirm: SecretString,
    /// Minutes east of UTC, from the form's script.
    #[serde(default)]
    tz_offset: String,
}

pub async fn set_password(
    Posted { form: f, session, st, client, who: Verified(flow, target, _) }: Posted<PasswordForm, Verified<ToReset>>,
) -> PageResult {
    // A form already submitted (double click, back button, a reload after a lost answer): never
    // a second write; what the first came to, when that can be told.
    let Some((msg_id, first)) = super::FINAL_FORM.take_or_again(&session, &f.form_key).await? else {
        return password_page(&st, &session, &target, Some(Tr::current().t(ALREADY_SENT).into()), None).await;
    };
    let password = match NewPassword::parse(f.password, &f.confirm) {
        Ok(p) => p,
        Err(e) => return password_page(&st, &session, &target, Some(e.text(Tr::current())), None).await,
    };
    // The form key left the session above; the database claim below is what makes it
    // single-use, even for two submits racing each other.
    let support = SupportCode::new();
    let attempt = Attempt { st: &st, client, audit_name: &flow.audit_name, target: Some(&target), support: &support };
    // Whether the lock this reset also lifts was there, as the form the person sent said (the
    // words of the answer say so). Only a read kept from that page counts: asking the directory
    // again here would cost a trip to it on every reset, for the wording alone.
    let was_locked = passwords::kept(&st, &target).is_some_and(|s| s.locked);
    let operation = if target.kind == UserKind::CloudOnly { "reset.cloud" } else { "reset.writeback" };
    let ask = Ask::Password { new: &password, current: None };
    let act = Act { target: &target, msg_id: &msg_id, first, by: Requester::FORGOTTEN, ask, operation };
    // Once the password is set the flow ends: the session as it will be then is written with
    // the outcome, not on its own after it (one trip fewer). It is put back if it does not end.
    let offset = crate::portal::pages::time_zone(&session, Some(&f.tz_offset)).await?;
    FLOW.take(&session).await?;
    let mut ended = store::sessions::stage(&session).await?;
    // A password set by its owner clears the count of wrong ones tried on the change form, and
    // counts as one of the resets an hour allows (its counted statement: did it block?).
    let counted = |r: &crate::relay::WritebackResult, batch: &mut store::Batch| {
        if r.outcome.password_set() {
            batch.push_together(store::attempts::clear(&target.person().subject()));
            ended.push_into(batch);
            crate::portal::gates::push_reset_count(&st, &flow.subject, batch);
        }
    };
    let Some(account::Done { result, changed: blocked, support, .. }) =
        account::once_then(&attempt, act, counted).await?
    else {
        FLOW.set(&session, &flow).await?;
        return password_page(&st, &session, &target, Some(Tr::current().t(ALREADY_SENT).into()), None).await;
    };
    drop(password);
    if result.outcome.password_set() {
        ended.committed();
        if blocked {
            attempt.audit("reset.limit", &Outcome::VerificationFailed, "too many resets in an hour: blocked").await?;
        }
        let title = if result.outcome.is_success() { "password.done_title" } else { "password.set_title" };
        let mut done = outcome_page(&st, title, &result.outcome, &support, false);
        // "Unlocked" only as the directory has it now (the agent read it back; here it is read
        // again, since the copy kept was of before the reset).
        if result.outcome == Outcome::Success
            && was_locked
            && passwords::live(&st, &target).await.is_some_and(|s| !s.locked)
        {
            done.outcome.message = Tr::current().t("outcome.success_unlocked").into();
        }
        done.return_to = crate::portal::RETURN_TO.get(&session).await?;
        done.expires = crate::portal::pages::new_expiry(&result, st.clock.now(), offset);
        return Ok(support.tag(done));
    }
    FLOW.set(&session, &flow).await?;
    let view = OutcomeView::new(&result.outcome, &support);
    Ok(support.tag(password_page(&st, &session, &target, None, Some(view)).await?))
}
