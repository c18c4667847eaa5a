//! Staff sign-in: user name, password and an authenticator code, all three checked every time
//! and answered alike whichever was wrong. Wrong attempts per account are limited race-free.

use super::{begin, current, Staff, STAFF};
use crate::domain::Outcome;
use crate::i18n::Tr;
use crate::portal::gates::totp;
use crate::portal::pages::{OutcomeView, StaffSignInPage};
use crate::portal::{csrf, passwords, paths, AppState, ClientAddr, PortalError, SupportCode};
use crate::store::{self, audit::AuditRecord};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

/// Wrong sign-ins an account may have from one address per hour and per day before it waits…
const LIMITS: (u32, u32) = (5, 20);
/// …and from all addresses together: higher, so that someone guessing from elsewhere cannot
/// keep the owner out for long, and low enough to stop a spread-out guessing attack.
const ACCOUNT_LIMITS: (u32, u32) = (30, 100);
/// Every answer takes at least this long, so a wrong user name is not told apart by its speed.
const MIN_RESPONSE_MS: u64 = 400;

async fn page(session: &Session, username: &str, outcome: Option<OutcomeView>) -> PageResult {
    let page = StaffSignInPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        username: username.to_string(),
        outcome,
    };
    Ok(page.into_response())
}

pub async fn signin_form(State(st): State<AppState>, session: Session) -> PageResult {
    if current(&st, &session).await?.is_some() {
        return Ok(Redirect::to(paths::STAFF_HOME).into_response());
    }
    page(&session, "", None).await
}

#[derive(Deserialize)]
pub struct StaffSignInForm {
    csrf: String,
    username: String,
    password: SecretString,
    code: SecretString,
}

pub async fn signin(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
    Form(f): Form<StaffSignInForm>,
) -> PageResult {
    crate::portal::at_least(MIN_RESPONSE_MS, signin_inner(&st, client, &session, f)).await
}

async fn signin_inner(
    st: &AppState,
    client: std::net::SocketAddr,
    session: &Session,
    f: StaffSignInForm,
) -> PageResult {
    csrf::check(session, &f.csrf).await?;
    if !st.guard.address_allowed(client.ip()) {
        return Ok(crate::portal::guard::too_many());
    }
    let tr = Tr::current();
    let typed = f.username.trim().to_lowercase();
    let support = SupportCode::new();
    let now = st.clock.now();
    let row = store::staff::by_username(&st.db, &typed).await?;
    let actor = match &row {
        Some(r) => format!("staff:{}", r.username),
        None => format!("unmatched:{}", &st.code_key.hash(&[b"audit-name", typed.as_bytes()])[..12]),
    };
    let audit = |outcome: Outcome, raw: &str| AuditRecord {
        at: now,
        actor: actor.clone(),
        operation: "staff.signin".into(),
        target: Some(actor.clone()),
        outcome_code: outcome.code().0.into(),
        raw: raw.into(),
        support_code: support.0.clone(),
        client: Some(client.ip().to_string()),
        ..Default::default()
    };
    let wrong = |support: &SupportCode| OutcomeView {
        message: tr.t("staff.signin_wrong").into(),
        ..OutcomeView::new(&Outcome::VerificationFailed, support)
    };
    let subject = format!("staff|{typed}");
    let from_here = format!("staff|{typed}|{}", crate::portal::guard::address_key_text(client.ip()));
    let limit_page = || {
        let shown = OutcomeView {
            message: tr.t("staff.signin_limit").into(),
            ..OutcomeView::new(&Outcome::VerificationFailed, &support)
        };
        page(session, &typed, Some(shown))
    };
    let Some(here) = store::attempts::reserve(&st.db, &from_here, now, LIMITS).await? else {
        store::audit::record(&st.db, &audit(Outcome::VerificationFailed, "too many wrong sign-ins from this address"))
            .await?;
        return Ok(support.tag(limit_page().await?));
    };
    let Some(reservation) = store::attempts::reserve(&st.db, &subject, now, ACCOUNT_LIMITS).await? else {
        store::attempts::release(&st.db, here).await?;
        store::audit::record(&st.db, &audit(Outcome::VerificationFailed, "too many wrong sign-ins for this account"))
            .await?;
        return Ok(support.tag(limit_page().await?));
    };
    // The password is checked even for an unknown or disabled account (against a hash nobody
    // knows), so the time taken does not tell them apart.
    let password_right = passwords::verify(&f.password, row.as_ref().map(|r| r.password_hash.clone())).await;
    let step = match &row {
        Some(r) if password_right => {
            let seed = st.secrets.decrypt(&store::staff::totp_context(&r.id), &r.totp_enc)?;
            totp::matching_step(&seed, f.code.expose_secret(), now)
        }
        _ => None,
    };
    let signed_in = match (&row, step) {
        (Some(r), Some(step)) if r.enabled() && r.role().is_some() => {
            // A code is used once: a second sign-in with the same one is refused.
            store::staff::use_totp_step(&st.db, &r.id, step).await?
        }
        _ => false,
    };
    let Some(r) = row.filter(|_| signed_in) else {
        let why = if password_right { "authenticator code wrong or reused, or account disabled" } else { "wrong" };
        store::audit::record(&st.db, &audit(Outcome::VerificationFailed, why)).await?;
        return Ok(support.tag(page(session, &typed, Some(wrong(&support))).await?));
    };
    for r in [reservation, here] {
        store::attempts::release(&st.db, r).await?;
    }
    store::attempts::clear(&st.db, &from_here).await?;
    begin(session, &r, now).await?;
    store::audit::record(&st.db, &audit(Outcome::Success, &format!("role={}", r.role))).await?;
    Ok(Redirect::to(paths::STAFF_HOME).into_response())
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// Ends this session.
pub async fn signout(session: Session, Form(f): Form<CsrfOnly>) -> PageResult {
    csrf::check(&session, &f.csrf).await?;
    session.remove::<super::StaffSession>(STAFF).await?;
    session.cycle_id().await?;
    Ok(Redirect::to(paths::STAFF_SIGNIN).into_response())
}

/// Ends every session of the signed-in staff member, on every device.
pub async fn signout_everywhere(State(st): State<AppState>, session: Session, Form(f): Form<CsrfOnly>) -> PageResult {
    csrf::check(&session, &f.csrf).await?;
    if let Some(Staff { row, .. }) = current(&st, &session).await? {
        store::staff::end_sessions(&st.db, &row.id).await?;
    }
    session.remove::<super::StaffSession>(STAFF).await?;
    session.cycle_id().await?;
    Ok(Redirect::to(paths::STAFF_SIGNIN).into_response())
}
