//! Step 1: who are you, and what do you need? Checks that the person's directory can be written
//! to right now, before anything else happens. The answer reads the same, and takes the same
//! work, whether or not the name matched.

use super::{outcome_page, Flow, Intent, FLOW};
use crate::domain::{LoginName, Outcome};
use crate::i18n::Tr;
use crate::portal::extract::{Button, Posted};
use crate::portal::pages::IdentifyPage;
use crate::portal::Tag;
use crate::portal::{csrf, gates, paths, people, AppState, PortalError, SupportCode};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

pub async fn home() -> Redirect {
    Redirect::to(paths::RESET)
}

#[derive(Deserialize)]
pub struct HintQuery {
    login_hint: Option<String>,
    return_to: Option<String>,
    /// Sent here because the flow in progress was lost.
    expired: Option<String>,
}

/// The first page; an access panel may link here with `login_hint` (pre-filled) and `return_to`
/// (kept only if its origin is allowed, for a link back at the end).
pub async fn identify_form(
    State(st): State<AppState>,
    session: Session,
    Query(q): Query<HintQuery>,
) -> Result<Response, PortalError> {
    // Carried in the form, not the session: a page view writes nothing.
    let return_to = allowed_return_to(&st, q.return_to.as_deref());
    let login = q.login_hint.filter(|h| LoginName::parse(h).is_ok()).map(|h| h.trim().to_string()).unwrap_or_default();
    let mut page = page(&st, &session, login, Intent::Reset, None, return_to).await?;
    page.expired = q.expired.is_some();
    Ok(page.into_response())
}

fn allowed_return_to(st: &AppState, r: Option<&str>) -> Option<String> {
    r.and_then(|r| crate::portal::return_to::allowed(r, &st.cfg.server.allowed_return_origins))
}

async fn page(
    st: &AppState,
    session: &Session,
    login: String,
    intent: Intent,
    error: Option<String>,
    return_to: Option<String>,
) -> Result<IdentifyPage, PortalError> {
    Ok(IdentifyPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        pow: st.challenge(),
        login,
        unlock: intent == Intent::Unlock,
        error,
        return_to,
        expired: false,
        passkey: crate::portal::passkey::available(st)
            && [crate::config::Purpose::Reset, crate::config::Purpose::Unlock]
                .iter()
                .any(|p| st.cfg.gates.counts_for(*p, crate::config::GateMethod::Passkey)),
    })
}

#[derive(Deserialize)]
pub struct IdentifyForm {
    login: String,
    #[serde(default)]
    intent: Intent,
    #[serde(default)]
    pow_token: String,
    #[serde(default)]
    pow: String,
    #[serde(default)]
    return_to: Option<String>,
}

pub async fn identify(
    Posted { form: f, session, st, client, .. }: Posted<IdentifyForm>,
) -> Result<Response, PortalError> {
    let proof = match st.admit(client, &f.pow_token, &f.pow).await? {
        Ok(proof) => proof,
        Err(refused) => return Ok(refused),
    };
    let login = match LoginName::parse(&f.login) {
        Ok(l) => l,
        Err(e) => {
            let error = Some(e.text(Tr::current()));
            let page = page(&st, &session, String::new(), f.intent, error, f.return_to).await?;
            return Ok(page.into_response());
        }
    };
    let support = SupportCode::new();
    let found = people::resolve(&st, &login, &support).await?;
    let limited = match &found.target {
        Some(t) => !st.guard.account_allowed(&st.db, &t.person().subject(), st.clock.now()).await?,
        None => false,
    };
    let subject = match &found.target {
        Some(t) => t.person().subject(),
        None => found.audit_name.clone(),
    };
    let purpose = match f.intent {
        Intent::Reset => crate::config::Purpose::Reset,
        Intent::Unlock => crate::config::Purpose::Unlock,
    };
    let mut offers = gates::offers(&st, found.target.as_ref(), &login, purpose).await?;
    if limited {
        // Over the account's hourly limit: the same pages, but no code is sent anywhere.
        offers.iter_mut().for_each(|o| o.address = None);
    }
    let flow = Flow {
        target: found.target,
        audit_name: found.audit_name,
        subject,
        intent: f.intent,
        offers,
        passed: Vec::new(),
        failed: 0,
        current: None,
        verified_at: None,
    };
    super::FINAL_FORM.forget(&session).await?;
    let attempt = flow.attempt(&st, client, &support);
    if !people::directory_alive(&st, flow.target.as_ref(), &login).await? {
        let o = Outcome::NoAgent;
        attempt.audit("reset.identify", &o, "no live agent").await?;
        return Ok(support.tag(outcome_page(&st, "password.unavailable_title", &o, &support, true)));
    }
    let raw = match (&flow.target, found.matched) {
        _ if limited => "identify limit per account and hour reached: no code will be sent",
        (Some(_), _) => "identified",
        (None, 0) => "no such account",
        (None, _) => "several or disabled accounts",
    };
    attempt.audit("reset.identify", &Outcome::Success, &format!("{raw}; {}", proof.as_str())).await?;
    session.cycle_id().await?;
    FLOW.set(&session, &flow).await?;
    if let Some(url) = allowed_return_to(&st, f.return_to.as_deref()) {
        crate::portal::RETURN_TO.set(&session, &url).await?;
    }
    Ok(Redirect::to(paths::RESET_VERIFY).into_response())
}

/// The options for a passkey used at the first step, in place of a name (JSON, for the page's
/// script). Nothing in them depends on who is asking.
pub async fn passkey_options(Posted { session, st, client, .. }: Posted<Button>) -> Result<Response, PortalError> {
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    match crate::portal::passkey::begin_assertion(&st, &session).await? {
        Some(json) => Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Ok(axum::http::StatusCode::NOT_FOUND.into_response()),
    }
}

#[derive(Deserialize)]
pub struct PasskeyForm {
    #[serde(default)]
    credential: String,
    #[serde(default)]
    intent: Intent,
}

/// A passkey used at the first step: it says whose it is (only to someone holding it), and it
/// is the first method passed. A second one follows where two are required.
pub async fn passkey(
    Posted { form: f, session, st, client, .. }: Posted<PasskeyForm>,
) -> Result<Response, PortalError> {
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    let support = SupportCode::new();
    let purpose = match f.intent {
        Intent::Reset => crate::config::Purpose::Reset,
        Intent::Unlock => crate::config::Purpose::Unlock,
    };
    let kind = crate::store::passkeys::Kind::Person;
    let asserted = crate::portal::passkey::finish_assertion(&st, &session, kind, &f.credential).await?;
    let row = match &asserted {
        Ok(a) => crate::store::users::get(&st.db, &a.directory, &a.anchor).await?,
        Err(_) => None,
    };
    let target = match row {
        Some(row) if st.cfg.gates.counts_for(purpose, crate::config::GateMethod::Passkey) => {
            Some(people::target_of(&st, &row).await?)
        }
        _ => None,
    };
    let Some(target) = target else {
        let why = match asserted {
            Err(refused) => refused.why(),
            Ok(_) if st.cfg.gates.counts_for(purpose, crate::config::GateMethod::Passkey) => {
                "passkey refused: its owner is not among the synced people"
            }
            Ok(_) => "passkey refused: passkeys do not count for this",
        };
        let attempt = people::Attempt { st: &st, client, audit_name: "passkey", target: None, support: &support };
        attempt.audit("reset.identify.passkey", &Outcome::VerificationFailed, why).await?;
        let error = Some(format!(
            "{} ({} {})",
            Tr::current().t("passkey.not_accepted"),
            Tr::current().t("common.support_code"),
            support.0
        ));
        let page = page(&st, &session, String::new(), f.intent, error, None).await?;
        return Ok(support.tag(page));
    };
    let login = LoginName::parse(&target.username).map_err(|e| anyhow::anyhow!("a synced user name: {e:?}"))?;
    let offers = gates::offers(&st, Some(&target), &login, purpose).await?;
    let subject = target.person().subject();
    let mut flow = Flow {
        audit_name: target.username.clone(),
        target: Some(target),
        subject,
        intent: f.intent,
        offers,
        passed: vec![crate::config::GateMethod::Passkey],
        failed: 0,
        current: None,
        verified_at: None,
    };
    super::FINAL_FORM.forget(&session).await?;
    let attempt = flow.attempt(&st, client, &support);
    if !people::directory_alive(&st, flow.target.as_ref(), &login).await? {
        let o = Outcome::NoAgent;
        attempt.audit("reset.identify", &o, "no live agent").await?;
        return Ok(support.tag(outcome_page(&st, "password.unavailable_title", &o, &support, true)));
    }
    if gates::blocked(&st, &flow.subject).await? {
        return super::blocked_page(&st, &session, &flow, client, "self-service blocked for this account").await;
    }
    attempt.audit("reset.identify", &Outcome::Success, "identified by a passkey").await?;
    attempt.audit("reset.verify.passkey", &Outcome::Success, "passkey accepted").await?;
    session.cycle_id().await?;
    if flow.passed.len() >= st.cfg.gates.required as usize {
        flow.verified_at = Some(st.clock.now());
    }
    FLOW.set(&session, &flow).await?;
    let next = if flow.verified_at.is_some() { flow.after_gates() } else { paths::RESET_VERIFY };
    Ok(Redirect::to(next).into_response())
}
