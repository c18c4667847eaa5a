//! Step 3, for a person who knows their password but is locked out: after the same gates as a
//! reset, the lockout is lifted in the directory (no password travels) and the page says so.
//! The form's one-use key is the relay message id, so a double submit cannot act twice.

use super::{outcome_page, Flow, Intent, Target, FLOW};
use crate::domain::{MsgId, Outcome, UserKind};
use crate::envelope::Op;
use crate::i18n::Tr;
use crate::mail::Notice;
use crate::portal::extract::Posted;
use crate::portal::pages::{OutcomeView, UnlockPage};
use crate::portal::writeback::{self, Act};
use crate::portal::Tag;
use crate::portal::{csrf, gates, AppState, ClientAddr, PortalError, SupportCode};
use crate::relay::WritebackResult;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

async fn page(session: &Session, flow: &mut Flow, outcome: Option<OutcomeView>) -> PageResult {
    let form_key = super::form_key(session, flow).await?;
    Ok(UnlockPage { tr: Tr::current(), csrf: csrf::token(session).await?, form_key, outcome, error: None }
        .into_response())
}

pub async fn unlock_form(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
) -> PageResult {
    let (mut flow, target) = match super::verified_flow(&st, &session, Intent::Unlock).await? {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    if let Some(page) = super::disabled_page(&st, &session, &flow, &target, client).await? {
        return Ok(page);
    }
    page(&session, &mut flow, None).await
}

#[derive(Deserialize)]
pub struct UnlockForm {
    form_key: String,
}

pub async fn unlock(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    Posted { form: f, session, .. }: Posted<UnlockForm>,
) -> PageResult {
    let (mut flow, target) = match super::verified_flow(&st, &session, Intent::Unlock).await? {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    let (Some(key), Ok(msg_id)) = (flow.form_key.take(), MsgId::parse(&f.form_key)) else {
        return page(&session, &mut flow, None).await;
    };
    if key != f.form_key {
        flow.form_key = Some(key);
        return page(&session, &mut flow, None).await;
    }
    FLOW.set(&session, &flow).await?;
    let support = SupportCode::new();
    let now = st.clock.now();
    let attempt = flow.attempt(&st, client, &support);
    let act = Act {
        target: &target,
        msg_id: &msg_id,
        kind: "unlock",
        operation: "unlock.writeback",
        notice: Notice::Unlocked,
    };
    let Some(result) = writeback::once(&attempt, act, unlock_account(&st, &target, msg_id.clone(), now)).await? else {
        return page(&session, &mut flow, None).await;
    };
    if !result.outcome.is_success() {
        let view = OutcomeView::new(&result.outcome, &support);
        return Ok(support.tag(page(&session, &mut flow, Some(view)).await?));
    }
    FLOW.take(&session).await?;
    if gates::count_reset(&st, &flow.subject).await? {
        attempt.audit("reset.limit", &Outcome::VerificationFailed, "too many resets in an hour: blocked").await?;
    }
    let tr = Tr::current();
    let mut done = outcome_page(&st, "unlock.done_title", &result.outcome, &support, false);
    done.outcome.message = tr.t("unlock.done").into();
    done.return_to = crate::portal::RETURN_TO.get(&session).await?;
    Ok(support.tag(done))
}

/// Lifts the lockout in the person's directory, through the relay. A cloud-only account is
/// never locked by a directory: there is nothing to lift.
async fn unlock_account(
    st: &AppState,
    target: &Target,
    msg_id: MsgId,
    now: i64,
) -> Result<WritebackResult, PortalError> {
    if target.protected {
        // A privileged account's lockout stands between an attacker and a guessed password:
        // it is lifted by the helpdesk, never by self-service.
        return Ok(WritebackResult {
            outcome: Outcome::Protected,
            raw: "privileged account: self-service unlock refused".into(),
            policy: None,
            agent_id: None,
        });
    }
    if target.kind == UserKind::CloudOnly {
        return Ok(WritebackResult {
            outcome: Outcome::Success,
            raw: "cloud-only account: nothing to unlock".into(),
            policy: None,
            agent_id: None,
        });
    }
    crate::portal::passwords::relay(
        st,
        crate::portal::passwords::By::SELF_SERVICE,
        target,
        msg_id,
        Op::Unlock,
        (None, None),
        now,
    )
    .await
}
