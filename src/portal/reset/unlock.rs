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

async fn page(session: &Session, outcome: Option<OutcomeView>) -> PageResult {
    let form_key = super::FINAL_FORM.current(session).await?;
    Ok(UnlockPage { tr: Tr::current(), csrf: csrf::token(session).await?, form_key, outcome, error: None }
        .into_response())
}

pub async fn unlock_form(
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    Only { who: Verified(flow, target, _), session, st }: Only<Verified<ToUnlock>>,
) -> PageResult {
    super::refuse_if_disabled(&st, &session, &flow, &target, client).await?;
    page(&session, None).await
}

#[derive(Deserialize)]
pub struct UnlockForm {
    form_key: String,
}

pub async fn unlock(
    Posted { form: f, session, st, client, who: Verified(flow, target, _) }: Posted<UnlockForm, Verified<ToUnlock>>,
) -> PageResult {
    let Some((msg_id, first)) = super::FINAL_FORM.take_or_again(&session, &f.form_key).await? else {
        return page(&session, None).await;
    };
    let support = SupportCode::new();
    let attempt = flow.attempt(&st, client, &support);
    let (by, ask) = (Requester::SELF_SERVICE, Ask::Unlock);
    let act = Act { target: &target, msg_id: &msg_id, first, by, ask, operation: "unlock.writeback" };
    let Some(account::Done { result, support, earlier, .. }) = account::once(&attempt, act).await? else {
        return page(&session, None).await;
    };
    if !result.outcome.is_success() {
        let view = OutcomeView::new(&result.outcome, &support);
        return Ok(support.tag(page(&session, Some(view)).await?));
    }
    FLOW.take(&session).await?;
    if !earlier && gates::count_reset(&st, &flow.subject).await? {
        attempt.audit("reset.limit", &Outcome::VerificationFailed, "too many resets in an hour: blocked").await?;
    }
    let tr = Tr::current();
    let mut done = outcome_page(&st, "unlock.done_title", &result.outcome, &support, false);
    done.outcome.message = tr.t("unlock.done").into();
    done.return_to = crate::portal::RETURN_TO.get(&session).await?;
    Ok(support.tag(done))
}
