//! Step 2: the e-mailed code. Attempts are counted in the database, in the statement that reads
//! the stored hash, so parallel guesses cannot exceed the limit; each check costs the same.

use super::{load_flow, outcome_page, Attempt, FLOW};
use crate::domain::{MsgId, OneTimeCode, Outcome};
use crate::i18n::Tr;
use crate::portal::pages::VerifyPage;
use crate::portal::{csrf, paths, AppState, ClientAddr, PortalError, SupportCode};
use crate::store;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use tower_sessions::Session;

pub async fn verify_form(State(st): State<AppState>, session: Session) -> Result<Response, PortalError> {
    let Some(flow) = load_flow(&session).await? else { return Ok(Redirect::to(paths::RESET).into_response()) };
    if flow.verified_at.is_some() {
        return Ok(Redirect::to(paths::RESET_PASSWORD).into_response());
    }
    let minutes = st.cfg.reset.code_ttl_secs.div_ceil(60);
    let page =
        VerifyPage { tr: Tr::current(), csrf: csrf::token(&session).await?, minutes, error: None, support_code: None };
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct VerifyForm {
    csrf: String,
    code: String,
}

pub async fn verify(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
    Form(f): Form<VerifyForm>,
) -> Result<Response, PortalError> {
    csrf::check(&session, &f.csrf).await?;
    let Some(mut flow) = load_flow(&session).await? else { return Ok(Redirect::to(paths::RESET).into_response()) };
    if flow.verified_at.is_some() {
        return Ok(Redirect::to(paths::RESET_PASSWORD).into_response());
    }
    let minutes = st.cfg.reset.code_ttl_secs.div_ceil(60);
    let code = match OneTimeCode::parse(&f.code) {
        Ok(c) => c,
        Err(e) => {
            let page = VerifyPage {
                tr: Tr::current(),
                csrf: csrf::token(&session).await?,
                minutes,
                error: Some(e.text(Tr::current())),
                support_code: None,
            };
            return Ok(page.into_response());
        }
    };
    let now = st.clock.now();
    let max = st.cfg.reset.code_attempts;
    // Spends one attempt and reads the hash in one statement. Without a live code (unknown name,
    // used, expired, no attempts left) a hash is still computed, so every answer costs the same.
    // For a name that matched nobody the code id exists nowhere, and the same query finds nothing.
    let stored = store::codes::take_attempt(&st.db, &flow.code_id, now, max).await?;
    let presented = [flow.code_id.as_bytes(), code.expose().as_bytes()];
    let matched = match &stored {
        Some(hash) => {
            st.code_key.matches(&presented, hash) && store::codes::mark_used(&st.db, &flow.code_id, now).await?
        }
        None => {
            let _ = st.code_key.matches(&presented, "");
            false
        }
    };
    let support = SupportCode::new();
    let attempt =
        Attempt { st: &st, client, audit_name: &flow.audit_name, target: flow.target.as_ref(), support: &support };
    if !matched {
        flow.failed_attempts += 1;
        let o = Outcome::VerificationFailed;
        attempt.audit("reset.verify", &o, "wrong, used or expired code").await?;
        if flow.failed_attempts >= max {
            session.remove::<super::Flow>(FLOW).await?;
            return Ok(support.tag(outcome_page(&st, "verify.failed_title", &o, &support, true)));
        }
        let left = max - flow.failed_attempts;
        session.insert(FLOW, &flow).await?;
        let tr = Tr::current();
        let error = if left == 1 { tr.t("verify.wrong_one").to_string() } else { tr.f("verify.wrong", "left", left) };
        let page = VerifyPage {
            tr,
            csrf: csrf::token(&session).await?,
            minutes,
            error: Some(error),
            support_code: Some(support.0.clone()),
        };
        return Ok(support.tag(page));
    }
    attempt.audit("reset.verify", &Outcome::Success, "code accepted").await?;
    // A gate has passed: a new session id, so an id learnt before cannot ride on it.
    session.cycle_id().await?;
    flow.verified_at = Some(now);
    flow.form_key = Some(MsgId::random().to_string());
    session.insert(FLOW, &flow).await?;
    Ok(Redirect::to(paths::RESET_PASSWORD).into_response())
}
