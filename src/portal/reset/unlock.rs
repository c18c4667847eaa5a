//! Step 3, for a person who knows their password but is locked out: after the same gates as a
//! reset, the lockout is lifted in the directory (no password travels) and the page says so.
//! The form's one-use key is the relay message id, so a double submit cannot act twice.

use super::{outcome_page, ToUnlock, Verified, FLOW};
use crate::domain::Outcome;
use crate::i18n::Tr;
use crate::portal::extract::Only;
use crate::portal::extract::Posted;
use crate::portal::pages::{OutcomeView, UnlockPage};
use crate::portal::Tag;
use crate::portal::{csrf, gates, ClientAddr, PortalError, SupportCode};
use crate::usecase::account::{self, Act, Ask};
use crate::usecase::password::Requester;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

async fn page(session: &Session, outcome: Option<OutcomeView>, not_locked: bool) -> PageResult {
    page_saying(session, outcome, not_locked, None).await
}

/// [`page`], with a word on what the last step did (a recovery code used).
async fn page_saying(
    session: &Session,
    outcome: Option<OutcomeView>,
    not_locked: bool,
    notice: Option<String>,
) -> PageResult {
    let form_key = super::FINAL_FORM.current(session).await?;
    let csrf = csrf::token(session).await?;
    Ok(UnlockPage { tr: Tr::current(), csrf, form_key, outcome, error: None, not_locked, notice }.into_response())
}

/// The unlock page; where the directory says the account is not locked, it says so instead of
/// offering to unlock it (the person's trouble is elsewhere: the password, most often).
pub async fn unlock_form(
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    Only { who: Verified(flow, target, _), session, st }: Only<Verified<ToUnlock>>,
) -> PageResult {
    super::refuse_if_disabled(&st, &session, &flow, &target, client).await?;
    let not_locked = crate::usecase::password::live(&st, &target).await.is_some_and(|s| !s.locked);
    let notice = super::recovery_codes_left(&st, &flow, &target).await?;
    page_saying(&session, None, not_locked, notice).await
}

#[derive(Deserialize)]
pub struct UnlockForm {
    form_key: String,
}

pub async fn unlock(
    Posted { form: f, session, st, client, who: Verified(flow, target, _) }: Posted<UnlockForm, Verified<ToUnlock>>,
) -> PageResult {
    let Some((msg_id, first)) = super::FINAL_FORM.take_or_again(&session, &f.form_key).await? else {
        return page(&session, None, false).await;
    };
    let support = SupportCode::new();
    let attempt = flow.attempt(&st, client, &support);
    // Whether there was a lock to lift, as the page the person sent read it from the directory.
    let was_locked = crate::usecase::password::kept(&st, &target).map(|s| s.locked);
    let (by, ask) = (Requester::SELF_SERVICE, Ask::Unlock);
    let act = Act { target: &target, msg_id: &msg_id, first, by, ask, operation: "unlock.writeback" };
    let Some(account::Done { result, support, earlier, .. }) = account::once(&attempt, act).await? else {
        return page(&session, None, false).await;
    };
    if !result.outcome.is_success() {
        let view = OutcomeView::new(&result.outcome, &support);
        return Ok(support.tag(page(&session, Some(view), false).await?));
    }
    FLOW.take(&session).await?;
    if !earlier && gates::count_reset(&st, &flow.subject).await? {
        attempt.audit("reset.limit", &Outcome::VerificationFailed, "too many resets in an hour: blocked").await?;
    }
    let tr = Tr::current();
    let not_locked = was_locked == Some(false);
    let title = if not_locked { "unlock.not_locked_title" } else { "unlock.done_title" };
    let mut done = outcome_page(&st, title, &result.outcome, &support, false);
    done.outcome.message = tr.t(if not_locked { "unlock.not_locked" } else { "unlock.done" }).into();
    done.return_to = crate::portal::RETURN_TO.get(&session).await?;
    Ok(support.tag(done))
}
