//! Step 1: who are you, and what do you need? Checks that the person's directory can be written
//! to right now, before anything else happens. The answer reads the same, and takes the same
//! work, whether or not the name matched.

use super::{outcome_page, Flow, Intent, FLOW};
use crate::domain::{LoginName, Outcome};
use crate::i18n::Tr;
use crate::portal::extract::Posted;
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
