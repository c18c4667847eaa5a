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
    let how = Opened { intent: f.intent, passkey: false, note: proof.as_str(), return_to: f.return_to.as_deref() };
    open_flow(&st, &session, client, &support, &login, found, how).await
}

/// How a flow begins: for what, whether a passkey named the person (and so passed already), a
/// note for the audit, and where to lead back at the end.
struct Opened<'a> {
    intent: Intent,
    passkey: bool,
    note: &'a str,
    return_to: Option<&'a str>,
}

/// Starts the flow for whoever `found` is (nobody, for a name that matched nobody: the flow
/// goes on alike), after checking that their directory can be written to now; on to the gates.
async fn open_flow(
    st: &AppState,
    session: &Session,
    client: std::net::SocketAddr,
    support: &SupportCode,
    login: &LoginName,
    found: people::Found,
    how: Opened<'_>,
) -> Result<Response, PortalError> {
    let limited = match &found.target {
        Some(t) => !st.guard.account_allowed(&st.db, &t.person().subject(), st.clock.now()).await?,
        None => false,
    };
    let subject = match &found.target {
        Some(t) => t.person().subject(),
        None => found.audit_name.clone(),
    };
    let mut offers = gates::offers(st, found.target.as_ref(), login, how.intent.purpose()).await?;
    if limited {
        // Over the account's hourly limit: the same pages, but no code is sent anywhere.
        offers.iter_mut().for_each(|o| o.address = None);
    }
    let mut flow = Flow {
        target: found.target,
        audit_name: found.audit_name,
        subject,
        intent: how.intent,
        offers,
        passed: if how.passkey { vec![crate::config::GateMethod::Passkey] } else { Vec::new() },
        failed: 0,
        current: None,
        verified_at: None,
    };
    super::FINAL_FORM.forget(session).await?;
    let attempt = flow.attempt(st, client, support);
    if !people::directory_alive(st, flow.target.as_ref(), login).await? {
        let o = Outcome::NoAgent;
        attempt.audit("reset.identify", &o, "no live agent").await?;
        return Ok(support.tag(outcome_page(st, "password.unavailable_title", &o, support, true)));
    }
    if how.passkey && gates::blocked(st, &flow.subject).await? {
        return super::blocked_page(st, session, &flow, client, "self-service blocked for this account").await;
    }
    let raw = match (&flow.target, found.matched) {
        _ if limited => "identify limit per account and hour reached: no code will be sent",
        (Some(_), _) if how.passkey => "identified by a passkey",
        (Some(_), _) => "identified",
        (None, 0) => "no such account",
        (None, _) => "several or disabled accounts",
    };
    attempt.audit("reset.identify", &Outcome::Success, &format!("{raw}; {}", how.note)).await?;
    if how.passkey {
        attempt.audit("reset.verify.passkey", &Outcome::Success, "passkey accepted").await?;
        if flow.passed.len() >= st.cfg.gates.required as usize {
            flow.verified_at = Some(st.clock.now());
        }
    }
    session.cycle_id().await?;
    FLOW.set(session, &flow).await?;
    if let Some(url) = allowed_return_to(st, how.return_to) {
        crate::portal::RETURN_TO.set(session, &url).await?;
    }
    let next = if flow.verified_at.is_some() { flow.after_gates() } else { paths::RESET_VERIFY };
    Ok(Redirect::to(next).into_response())
}

#[derive(Deserialize)]
pub struct PasskeyForm {
    #[serde(default)]
    credential: String,
    #[serde(default)]
    intent: Intent,
}

/// A passkey used at the first step: it says whose it is (only to someone holding it), and it
/// is the first method passed. A second one follows where two are required. Its owner is then
/// found by their name, as if they had typed it, and must be the one the passkey belongs to.
pub async fn passkey(
    Posted { form: f, session, st, client, .. }: Posted<PasskeyForm>,
) -> Result<Response, PortalError> {
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    let support = SupportCode::new();
    let kind = crate::store::passkeys::Kind::Person;
    let counts = st.cfg.gates.counts_for(f.intent.purpose(), crate::config::GateMethod::Passkey);
    let asserted = crate::portal::passkey::finish_assertion(&st, &session, kind, &f.credential).await?;
    let refused = match asserted {
        Ok(owner) if counts => match owner_found(&st, &support, &owner).await? {
            Some((login, found)) => {
                let how = Opened { intent: f.intent, passkey: true, note: "no name typed", return_to: None };
                return open_flow(&st, &session, client, &support, &login, found, how).await;
            }
            None => "passkey refused: its owner is not found by their name",
        },
        Ok(_) => "passkey refused: passkeys do not count for this",
        Err(refusal) => {
            crate::portal::passkey::tell_owner(&st, client.ip(), &support, &refusal).await?;
            refusal.why.why()
        }
    };
    let attempt = people::Attempt { st: &st, client, audit_name: "passkey", target: None, support: &support };
    attempt.audit("reset.identify.passkey", &Outcome::VerificationFailed, refused).await?;
    let tr = Tr::current();
    let error = format!("{} ({} {})", tr.t("passkey.not_accepted"), tr.t("common.support_code"), support.0);
    let page = page(&st, &session, String::new(), f.intent, Some(error), None).await?;
    Ok(support.tag(page))
}

/// The passkey's owner, found by their name as the first step finds anyone (so a disabled
/// cloud account, or a name that now matches two people, is found no more than when typed).
async fn owner_found(
    st: &AppState,
    support: &SupportCode,
    owner: &crate::portal::passkey::Asserted,
) -> Result<Option<(LoginName, people::Found)>, PortalError> {
    let name = if owner.directory.is_empty() {
        crate::store::cloud::get(&st.db, &owner.anchor).await?.map(|c| c.username)
    } else {
        crate::store::users::get(&st.db, &owner.directory, &owner.anchor).await?.map(|u| u.username)
    };
    let Some(login) = name.and_then(|n| LoginName::parse(&n).ok()) else { return Ok(None) };
    let found = people::resolve(st, &login, support).await?;
    let same = found.target.as_ref().is_some_and(|t| t.directory == owner.directory && t.anchor == owner.anchor);
    Ok(same.then_some((login, found)))
}
