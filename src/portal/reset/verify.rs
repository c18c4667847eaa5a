//! Step 2: the gates. With more than one way to verify, the person chooses; each gate is then
//! started (a code e-mailed, questions picked) and checked. Failures count against the account's
//! hourly limit, which blocks self-service for a while once reached (audited). With two methods
//! required, the second must be a different method.

use super::{blocked_page, load_flow, outcome_page, Flow, FLOW};
use crate::config::GateMethod;
use crate::domain::Outcome;
use crate::i18n::Tr;
use crate::portal::extract::Posted;
use crate::portal::gates;
use crate::portal::Tag;
use crate::portal::{paths, AppState, ClientAddr, PortalError, SupportCode};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

fn start_again() -> Response {
    Redirect::to(paths::RESET_EXPIRED).into_response()
}

/// Shows the gate now open, or the chooser, or starts the only gate left.
pub async fn verify_form(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
) -> PageResult {
    // It may open a gate (a code mailed, an audit row): limited per address like every step.
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    let Some(mut flow) = load_flow(&session).await? else { return Ok(start_again()) };
    if flow.verified_at.is_some() {
        return Ok(Redirect::to(flow.after_gates()).into_response());
    }
    if gates::blocked(&st, &flow.subject).await? {
        return blocked_page(&st, &session, &flow, client, "self-service blocked for this account").await;
    }
    if flow.current.is_none() {
        let remaining = flow.remaining();
        match remaining.as_slice() {
            [] => return not_enough_methods(&st, &session, &flow, client).await,
            [only] => {
                let only = only.clone();
                open_gate(&st, &session, &mut flow, client, &only).await?;
            }
            _ => return choice_page(&session, &flow, None).await,
        }
    }
    gate_page(&st, &session, &flow, None, None).await
}

const ACTIONS: gates::Actions =
    gates::Actions { verify: paths::RESET_VERIFY, method: paths::RESET_METHOD, back: paths::RESET, resend: true };

async fn choice_page(session: &Session, flow: &Flow, error: Option<String>) -> PageResult {
    gates::choice_page(session, &progress(flow), None, error).await
}

fn progress(flow: &Flow) -> gates::Progress {
    gates::Progress::new(flow.remaining(), &flow.passed, ACTIONS)
}

async fn gate_page(
    st: &AppState,
    session: &Session,
    flow: &Flow,
    error: Option<String>,
    support_code: Option<String>,
) -> PageResult {
    let Some(current) = &flow.current else { return Ok(start_again()) };
    gates::gate_page(st, session, current, &progress(flow), (error, support_code)).await
}

async fn open_gate(
    st: &AppState,
    session: &Session,
    flow: &mut Flow,
    client: std::net::SocketAddr,
    offer: &gates::Offer,
) -> Result<(), PortalError> {
    let support = SupportCode::new();
    let (current, raw) = gates::start(st, client.ip(), flow.target.as_ref(), offer, &support).await?;
    flow.attempt(st, client, &support)
        .audit(&format!("reset.gate.{}", offer.method.as_str()), &Outcome::Success, raw)
        .await?;
    flow.current = Some(current);
    FLOW.set(session, &*flow).await?;
    Ok(())
}

async fn not_enough_methods(st: &AppState, session: &Session, flow: &Flow, client: std::net::SocketAddr) -> PageResult {
    let support = SupportCode::new();
    let o = Outcome::VerificationFailed;
    flow.attempt(st, client, &support)
        .audit("reset.gates", &o, &format!("{} method(s) passed, none left to offer", flow.passed.len()))
        .await?;
    FLOW.take(session).await?;
    let mut page = outcome_page(st, "verify.failed_title", &o, &support, false);
    page.outcome.message = Tr::current().t("gates.not_enough").into();
    Ok(support.tag(page))
}

#[derive(Deserialize)]
pub struct ChoiceForm {
    #[serde(default)]
    method: String,
}

/// The person chose a way to verify (or asked to choose another one).
pub async fn choose(Posted { form: f, session, st, client, .. }: Posted<ChoiceForm>) -> PageResult {
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    let Some(mut flow) = load_flow(&session).await? else { return Ok(start_again()) };
    if flow.verified_at.is_some() {
        return Ok(Redirect::to(flow.after_gates()).into_response());
    }
    if f.method == "resend" {
        // Another code to the same address, in place of the one sent (counted in the same
        // hourly allowance of codes), after a wait.
        let Some(current) = flow.current.clone() else {
            return Ok(Redirect::to(paths::RESET_VERIFY).into_response());
        };
        match current.resend_in(st.clock.now()) {
            Some(0) => {
                if gates::blocked(&st, &flow.subject).await? {
                    return blocked_page(&st, &session, &flow, client, "self-service blocked for this account").await;
                }
                open_gate(&st, &session, &mut flow, client, &current.offer).await?;
                return Ok(Redirect::to(paths::RESET_VERIFY).into_response());
            }
            // Too soon: the page says below the button how long to wait (not an error).
            Some(_) | None => return gate_page(&st, &session, &flow, None, None).await,
        }
    }
    if f.method == "other" {
        // Back to the chooser; the gate left open is abandoned (its code stays single-use).
        flow.current = None;
        FLOW.set(&session, &flow).await?;
        return choice_page(&session, &flow, None).await;
    }
    let Some(offer) = flow.remaining().into_iter().find(|o| o.id == f.method) else {
        return choice_page(&session, &flow, Some(Tr::current().t("gates.choose_one").into())).await;
    };
    // Choosing the gate already open again is a resend: the same wait applies.
    let wait = flow.current.as_ref().filter(|c| c.offer.id == offer.id).and_then(|c| c.resend_in(st.clock.now()));
    if wait.is_some_and(|w| w > 0) {
        return gate_page(&st, &session, &flow, None, None).await;
    }
    if gates::blocked(&st, &flow.subject).await? {
        return blocked_page(&st, &session, &flow, client, "self-service blocked for this account").await;
    }
    open_gate(&st, &session, &mut flow, client, &offer).await?;
    Ok(Redirect::to(paths::RESET_VERIFY).into_response())
}

pub async fn verify(Posted { form: f, session, st, client, .. }: Posted<gates::GateForm>) -> PageResult {
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    let Some(mut flow) = load_flow(&session).await? else { return Ok(start_again()) };
    if flow.verified_at.is_some() {
        return Ok(Redirect::to(flow.after_gates()).into_response());
    }
    let Some(mut current) = flow.current.clone() else { return Ok(Redirect::to(paths::RESET_VERIFY).into_response()) };
    let tr = Tr::current();
    let method = current.offer.method;
    let response = f.response(&current);
    if response.is_empty(method) {
        return gate_page(&st, &session, &flow, Some(tr.t("gates.enter_code").into()), None).await;
    }
    let hours = st.cfg.gates.block_hours;
    let too_many = format!("blocked for {hours} h after too many failures");
    let support = SupportCode::new();
    let operation = format!("reset.verify.{}", method.as_str());
    let raw = match gates::answer(&st, &session, &flow.subject, client.ip(), flow.target.as_ref(), &current, &response)
        .await?
    {
        gates::Answered::Blocked => return blocked_page(&st, &session, &flow, client, &too_many).await,
        gates::Answered::TooManyFromHere => return Ok(crate::portal::error::too_many()),
        gates::Answered::Right(raw) => raw,
        gates::Answered::Wrong { raw, blocked_now } => {
            flow.attempt(&st, client, &support).audit(&operation, &Outcome::VerificationFailed, raw).await?;
            if blocked_now {
                return blocked_page(&st, &session, &flow, client, &too_many).await;
            }
            current.failed += 1;
            let max = st.cfg.reset.code_attempts;
            if method == GateMethod::Email && current.failed >= max {
                // This code is spent; the person may ask for another one.
                flow.current = None;
                FLOW.set(&session, &flow).await?;
                let page = outcome_page(&st, "verify.failed_title", &Outcome::VerificationFailed, &support, true);
                return Ok(support.tag(page));
            }
            flow.failed += 1;
            let left = gates::tries_left(&st, flow.failed, method, current.failed);
            flow.current = Some(current);
            FLOW.set(&session, &flow).await?;
            let error = match left {
                Some(left) => format!("{} {left}", gates::wrong_answer(tr, method)),
                None => gates::wrong_answer(tr, method).to_string(),
            };
            return Ok(support.tag(gate_page(&st, &session, &flow, Some(error), Some(support.0.clone())).await?));
        }
    };
    flow.attempt(&st, client, &support).audit(&operation, &Outcome::Success, raw).await?;
    flow.passed.push(method);
    flow.current = None;
    // A gate has passed: a new session id, so an id learnt before cannot ride on it.
    session.cycle_id().await?;
    if flow.passed.len() >= st.cfg.gates.required as usize {
        flow.verified_at = Some(st.clock.now());
        FLOW.set(&session, &flow).await?;
        return Ok(Redirect::to(flow.after_gates()).into_response());
    }
    FLOW.set(&session, &flow).await?;
    Ok(Redirect::to(paths::RESET_VERIFY).into_response())
}
