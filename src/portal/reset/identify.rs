//! Step 1: who are you? Checks that the person's directory can be written to right now, before
//! anything is sent, then e-mails a code. The answer reads the same whether or not the name matched.

use super::{outcome_page, Attempt, Flow, FLOW};
use crate::domain::{EmailAddress, LoginName, MsgId, OneTimeCode, Outcome};
use crate::i18n::Tr;
use crate::portal::pages::IdentifyPage;
use crate::portal::{csrf, paths, people, AppState, ClientAddr, PortalError, SupportCode};
use crate::store;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use tower_sessions::Session;

pub async fn home() -> Redirect {
    Redirect::to(paths::RESET)
}

#[derive(Deserialize)]
pub struct HintQuery {
    login_hint: Option<String>,
    return_to: Option<String>,
}

/// The first page; an access panel may link here with `login_hint` (pre-filled) and `return_to`
/// (kept only if its origin is allowed, for a link back at the end).
pub async fn identify_form(
    State(st): State<AppState>,
    session: Session,
    Query(q): Query<HintQuery>,
) -> Result<Response, PortalError> {
    if let Some(url) =
        q.return_to.and_then(|r| crate::portal::return_to::allowed(&r, &st.cfg.server.allowed_return_origins))
    {
        session.insert(crate::portal::RETURN_TO, url).await?;
    }
    let login = q.login_hint.filter(|h| LoginName::parse(h).is_ok()).map(|h| h.trim().to_string()).unwrap_or_default();
    Ok(IdentifyPage { tr: Tr::current(), csrf: csrf::token(&session).await?, login, error: None }.into_response())
}

#[derive(Deserialize)]
pub struct IdentifyForm {
    csrf: String,
    login: String,
}

pub async fn identify(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
    Form(f): Form<IdentifyForm>,
) -> Result<Response, PortalError> {
    csrf::check(&session, &f.csrf).await?;
    let login = match LoginName::parse(&f.login) {
        Ok(l) => l,
        Err(e) => {
            let page = IdentifyPage {
                tr: Tr::current(),
                csrf: csrf::token(&session).await?,
                login: String::new(),
                error: Some(e.text(Tr::current())),
            };
            return Ok(page.into_response());
        }
    };
    let support = SupportCode::new();
    let now = st.clock.now();
    let found = people::resolve(&st, &login, &support).await?;
    let (target, audit_name) = (found.target, found.audit_name);
    let attempt = Attempt { st: &st, client, audit_name: &audit_name, target: target.as_ref(), support: &support };

    if !people::directory_alive(&st, target.as_ref(), &login).await? {
        let o = Outcome::NoAgent;
        attempt.audit("reset.identify", &o, "no live agent").await?;
        return Ok(support.tag(outcome_page(&st, "password.unavailable_title", &o, &support, true)));
    }

    // The same work whether or not the name matched: a code is made, hashed, and offered to the
    // same statement, which stores it only for a person with an address and under the hourly limit.
    let code = OneTimeCode::generate(&mut rand::rngs::OsRng);
    let code_id = MsgId::random().to_string();
    let code_hash = st.code_key.hash(&[code_id.as_bytes(), code.expose().as_bytes()]);
    let address = target.as_ref().and_then(|t| t.email.as_deref()).and_then(|e| EmailAddress::parse(e).ok());
    let ttl = i64::try_from(st.cfg.reset.code_ttl_secs).unwrap_or(600);
    let new = store::codes::NewCode {
        id: &code_id,
        directory: target.as_ref().map_or("", |t| t.directory.as_str()),
        anchor: target.as_ref().map_or("", |t| t.anchor.as_str()),
        code_hash: &code_hash,
        now,
        expires_at: now + ttl,
    };
    let limit = if address.is_some() { st.cfg.reset.codes_per_hour } else { 0 };
    let stored = store::codes::insert_within_limit(&st.db, &new, limit).await?;
    let raw = match (&target, address) {
        (Some(_), Some(to)) if stored => {
            send_code(&st, to, code, &support);
            "code sent"
        }
        (Some(_), Some(_)) => "code limit per hour reached",
        (Some(_), None) => "no e-mail address on record",
        (None, _) if found.matched == 0 => "no such account",
        (None, _) => "several or disabled accounts",
    };
    let outcome = if stored { Outcome::Success } else { Outcome::VerificationFailed };
    attempt.audit("reset.send_code", &outcome, raw).await?;

    session.cycle_id().await?;
    let flow = Flow { target, audit_name, code_id, failed_attempts: 0, verified_at: None, form_key: None };
    session.insert(FLOW, &flow).await?;
    Ok(Redirect::to(paths::RESET_VERIFY).into_response())
}

/// Sends in the background, so the answer takes as long whether or not a message goes out.
fn send_code(st: &AppState, to: EmailAddress, code: OneTimeCode, support: &SupportCode) {
    let mailer = st.mailer.clone();
    let support = support.clone();
    let minutes = st.cfg.reset.code_ttl_secs.div_ceil(60);
    let tr = Tr::current();
    tokio::spawn(async move {
        let sent = match crate::mail::code_message(tr, code.expose(), minutes) {
            Ok(msg) => mailer.send(&to, msg).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::error!(support_code = %support, error = %format!("{e:#}"), "sending the verification code failed");
        }
    });
}
