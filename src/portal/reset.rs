//! The "can't access your account" flow: identify → (agent alive?) → e-mailed code → new password
//! → sealed writeback → the directory's answer, shown at once.
//!
//! The session says which gates have passed; every step checks it, so no step can be skipped by
//! going straight to a later URL. The first step answers alike whether or not the account exists.

use super::pages::{IdentifyPage, OutcomePage, OutcomeView, PasswordPage, PolicyView, VerifyPage};
use super::{csrf, paths, AppState, ClientAddr, PortalError, SupportCode};
use crate::domain::{
    Anchor, DirectoryId, EmailAddress, LoginName, MsgId, NewPassword, OneTimeCode, Outcome, PolicyFacts,
};
use crate::envelope::{Flags, Op};
use crate::relay::WritebackRequest;
use crate::store::{self, audit::AuditRecord};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tower_sessions::Session;

const FLOW: &str = "reset";
/// How long a verified person has to choose a new password.
const VERIFIED_FOR_SECS: i64 = 15 * 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Target {
    directory: String,
    anchor: String,
    username: String,
    email: Option<String>,
}

/// What the session knows of this person's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flow {
    target: Option<Target>,
    login: String,
    code_id: String,
    failed_attempts: u32,
    verified_at: Option<i64>,
    form_key: Option<String>,
}

type PageResult = Result<Response, PortalError>;

pub async fn home() -> Redirect {
    Redirect::to(paths::RESET)
}

#[derive(Deserialize)]
pub struct HintQuery {
    login_hint: Option<String>,
}

pub async fn identify_form(session: Session, Query(q): Query<HintQuery>) -> PageResult {
    let login = q.login_hint.filter(|h| LoginName::parse(h).is_ok()).map(|h| h.trim().to_string()).unwrap_or_default();
    Ok(IdentifyPage { csrf: csrf::token(&session).await?, login, error: None }.into_response())
}

#[derive(Deserialize)]
pub struct IdentifyForm {
    csrf: String,
    login: String,
}

async fn audit(st: &AppState, rec: AuditRecord) -> Result<(), PortalError> {
    tracing::info!(
        operation = %rec.operation,
        outcome = %rec.outcome_code,
        support_code = %rec.support_code,
        directory = rec.directory.as_deref().unwrap_or(""),
        anchor = rec.anchor.as_deref().unwrap_or(""),
        raw = %rec.raw,
        "audit"
    );
    store::audit::record(&st.db, &rec).await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record(
    st: &AppState,
    op: &str,
    target: Option<&Target>,
    login: &str,
    outcome: &Outcome,
    raw: &str,
    support: &SupportCode,
    client: SocketAddr,
) -> AuditRecord {
    AuditRecord {
        at: st.clock.now(),
        actor: "self-service".into(),
        operation: op.into(),
        directory: target.map(|t| t.directory.clone()),
        anchor: target.map(|t| t.anchor.clone()),
        target: Some(target.map(|t| t.username.clone()).unwrap_or_else(|| login.to_string())),
        outcome_code: outcome.code().0.into(),
        raw: raw.into(),
        support_code: support.0.clone(),
        client: Some(client.ip().to_string()),
    }
}

fn outcome_page(st: &AppState, title: &str, outcome: &Outcome, support: &SupportCode, start_again: bool) -> Response {
    OutcomePage {
        title: title.into(),
        success: outcome.is_success(),
        outcome: OutcomeView {
            code: outcome.code().0.into(),
            message: outcome.message(),
            support_code: support.0.clone(),
        },
        helpdesk: st.cfg.server.helpdesk_contact.clone(),
        start_again,
    }
    .into_response()
}

async fn hash_code(code: OneTimeCode) -> Result<String, PortalError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(code.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("hashing task: {e}"))?
    .map_err(PortalError::from)
}

async fn code_matches(hash: String, code: OneTimeCode) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| Argon2::default().verify_password(code.expose().as_bytes(), &h).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

pub async fn identify(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
    Form(f): Form<IdentifyForm>,
) -> PageResult {
    csrf::check(&session, &f.csrf).await?;
    let login = match LoginName::parse(&f.login) {
        Ok(l) => l,
        Err(e) => {
            let page =
                IdentifyPage { csrf: csrf::token(&session).await?, login: String::new(), error: Some(e.0.into()) };
            return Ok(page.into_response());
        }
    };
    let support = SupportCode::new();
    let now = st.clock.now();
    let matches = store::users::find_by_login(&st.db, login.as_str()).await?;
    if matches.len() > 1 {
        tracing::warn!(support_code = %support, count = matches.len(), "a login matches several people; not guessing");
    }
    let target = match matches.as_slice() {
        [one] if one.enabled => Some(Target {
            directory: one.directory.clone(),
            anchor: one.anchor.clone(),
            username: one.username.clone(),
            email: one.email.clone(),
        }),
        _ => None,
    };

    // Before anything is sent: can this person's directory be written to right now?
    let alive = match &target {
        Some(t) => DirectoryId::parse(&t.directory).map(|d| st.hub.is_alive(&d)).unwrap_or(false),
        None => st.hub.any_alive(),
    };
    if !alive {
        let o = Outcome::NoAgent;
        audit(
            &st,
            record(&st, "reset.identify", target.as_ref(), login.as_str(), &o, "no live agent", &support, client),
        )
        .await?;
        return Ok(outcome_page(&st, "Password reset is unavailable", &o, &support, true));
    }

    // The same work whether or not the account exists: a code is made and hashed either way.
    let code = OneTimeCode::generate(&mut rand::rngs::OsRng);
    let code_text = SecretString::from(code.expose().to_string());
    let hash = hash_code(code).await?;
    let code_id = MsgId::random().to_string();
    let minutes = st.cfg.reset.code_ttl_secs.div_ceil(60);
    let (outcome, raw) = match &target {
        None => (
            Outcome::VerificationFailed,
            if matches.is_empty() { "no such account" } else { "ambiguous or disabled account" },
        ),
        Some(t) => {
            let hour_ago = now - 3600;
            let sent = store::codes::sent_since(&st.db, &t.directory, &t.anchor, hour_ago).await?;
            match t.email.as_deref().map(EmailAddress::parse) {
                Some(Ok(to)) if sent < i64::from(st.cfg.reset.codes_per_hour) => {
                    let ttl = i64::try_from(st.cfg.reset.code_ttl_secs).unwrap_or(600);
                    store::codes::insert(&st.db, &code_id, &t.directory, &t.anchor, &hash, now, now + ttl).await?;
                    send_code(&st, to, code_text, minutes, &support);
                    (Outcome::Success, "code sent")
                }
                Some(Ok(_)) => (Outcome::VerificationFailed, "code limit per hour reached"),
                _ => (Outcome::VerificationFailed, "no e-mail address on record"),
            }
        }
    };
    audit(&st, record(&st, "reset.send_code", target.as_ref(), login.as_str(), &outcome, raw, &support, client))
        .await?;

    session.cycle_id().await?;
    let flow =
        Flow { target, login: login.as_str().into(), code_id, failed_attempts: 0, verified_at: None, form_key: None };
    session.insert(FLOW, &flow).await?;
    Ok(Redirect::to(paths::RESET_VERIFY).into_response())
}

/// Sends in the background, so the answer takes as long whether or not a message goes out.
fn send_code(st: &AppState, to: EmailAddress, code: SecretString, minutes: u64, support: &SupportCode) {
    let mailer = st.mailer.clone();
    let support = support.clone();
    tokio::spawn(async move {
        use secrecy::ExposeSecret;
        let sent = match crate::mail::code_message(code.expose_secret(), minutes) {
            Ok(msg) => mailer.send(&to, msg).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::error!(support_code = %support, error = %format!("{e:#}"), "sending the verification code failed");
        }
    });
}

async fn load_flow(session: &Session) -> Result<Option<Flow>, PortalError> {
    Ok(session.get::<Flow>(FLOW).await?)
}

pub async fn verify_form(State(st): State<AppState>, session: Session) -> PageResult {
    let Some(flow) = load_flow(&session).await? else { return Ok(Redirect::to(paths::RESET).into_response()) };
    if flow.verified_at.is_some() {
        return Ok(Redirect::to(paths::RESET_PASSWORD).into_response());
    }
    let page = VerifyPage {
        csrf: csrf::token(&session).await?,
        minutes: st.cfg.reset.code_ttl_secs.div_ceil(60),
        error: None,
    };
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
) -> PageResult {
    csrf::check(&session, &f.csrf).await?;
    let Some(mut flow) = load_flow(&session).await? else { return Ok(Redirect::to(paths::RESET).into_response()) };
    if flow.verified_at.is_some() {
        return Ok(Redirect::to(paths::RESET_PASSWORD).into_response());
    }
    let minutes = st.cfg.reset.code_ttl_secs.div_ceil(60);
    let code = match OneTimeCode::parse(&f.code) {
        Ok(c) => c,
        Err(e) => {
            let page = VerifyPage { csrf: csrf::token(&session).await?, minutes, error: Some(e.0.into()) };
            return Ok(page.into_response());
        }
    };
    let now = st.clock.now();
    let max = st.cfg.reset.code_attempts;
    let matched = match &flow.target {
        // The attempt is spent in the same statement that reads the hash: parallel guesses
        // cannot exceed the limit.
        Some(_) => match store::codes::take_attempt(&st.db, &flow.code_id, now, max).await? {
            Some(hash) => code_matches(hash, code).await && store::codes::mark_used(&st.db, &flow.code_id, now).await?,
            None => false,
        },
        None => {
            // Same cost as a real check, so timing does not tell.
            let dummy = hash_code(OneTimeCode::generate(&mut rand::rngs::OsRng)).await?;
            let _ = code_matches(dummy, code).await;
            false
        }
    };
    let support = SupportCode::new();
    if !matched {
        flow.failed_attempts += 1;
        let o = Outcome::VerificationFailed;
        audit(
            &st,
            record(
                &st,
                "reset.verify",
                flow.target.as_ref(),
                &flow.login,
                &o,
                "wrong, used or expired code",
                &support,
                client,
            ),
        )
        .await?;
        if flow.failed_attempts >= max {
            session.remove::<Flow>(FLOW).await?;
            return Ok(outcome_page(&st, "We could not verify you", &o, &support, true));
        }
        session.insert(FLOW, &flow).await?;
        let left = max - flow.failed_attempts;
        let error = format!(
            "That code is not right, or it has expired. You can try {left} more time{}.",
            if left == 1 { "" } else { "s" }
        );
        let page = VerifyPage { csrf: csrf::token(&session).await?, minutes, error: Some(error) };
        return Ok(page.into_response());
    }
    audit(
        &st,
        record(
            &st,
            "reset.verify",
            flow.target.as_ref(),
            &flow.login,
            &Outcome::Success,
            "code accepted",
            &support,
            client,
        ),
    )
    .await?;
    // A gate has passed: a new session id, so an id learnt before cannot ride on it.
    session.cycle_id().await?;
    flow.verified_at = Some(now);
    flow.form_key = Some(MsgId::random().to_string());
    session.insert(FLOW, &flow).await?;
    Ok(Redirect::to(paths::RESET_PASSWORD).into_response())
}

/// The flow, if its person is verified and still within the time allowed; else the way back.
async fn verified_flow(st: &AppState, session: &Session) -> Result<Result<(Flow, Target), Response>, PortalError> {
    let back = Redirect::to(paths::RESET).into_response();
    let Some(flow) = load_flow(session).await? else { return Ok(Err(back)) };
    match (&flow.verified_at, &flow.target) {
        (Some(at), Some(t)) if st.clock.now() - at < VERIFIED_FOR_SECS => {
            let t = t.clone();
            Ok(Ok((flow, t)))
        }
        _ => {
            session.remove::<Flow>(FLOW).await?;
            Ok(Err(back))
        }
    }
}

async fn policy_view(st: &AppState, directory: &str) -> Option<PolicyView> {
    let json = store::users::policy(&st.db, directory).await.ok().flatten()?;
    let p: PolicyFacts = serde_json::from_str(&json).ok()?;
    Some(PolicyView { min_length: p.min_length, history: p.history, complexity: p.complexity.unwrap_or(false) })
}

async fn password_page(
    st: &AppState,
    session: &Session,
    flow: &mut Flow,
    target: &Target,
    error: Option<String>,
    outcome: Option<OutcomeView>,
) -> PageResult {
    let form_key = match &flow.form_key {
        Some(k) => k.clone(),
        None => {
            let k = MsgId::random().to_string();
            flow.form_key = Some(k.clone());
            session.insert(FLOW, &*flow).await?;
            k
        }
    };
    let page = PasswordPage {
        csrf: csrf::token(session).await?,
        form_key,
        error,
        outcome,
        policy: policy_view(st, &target.directory).await,
    };
    Ok(page.into_response())
}

pub async fn password_form(State(st): State<AppState>, session: Session) -> PageResult {
    let (mut flow, target) = match verified_flow(&st, &session).await? {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    password_page(&st, &session, &mut flow, &target, None, None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    form_key: String,
    password: SecretString,
    confirm: SecretString,
}

pub async fn set_password(
    State(st): State<AppState>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    session: Session,
    Form(f): Form<PasswordForm>,
) -> PageResult {
    csrf::check(&session, &f.csrf).await?;
    let (mut flow, target) = match verified_flow(&st, &session).await? {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    // A form already submitted (double click, back button): never a second write.
    if flow.form_key.as_deref() != Some(f.form_key.as_str()) {
        let msg = "This form was already sent. If your password was not changed, try again below.";
        return password_page(&st, &session, &mut flow, &target, Some(msg.into()), None).await;
    }
    let password = match NewPassword::parse(f.password, &f.confirm) {
        Ok(p) => p,
        Err(e) => return password_page(&st, &session, &mut flow, &target, Some(e.0.into()), None).await,
    };
    let (Ok(msg_id), Ok(directory), Ok(anchor)) =
        (MsgId::parse(&f.form_key), DirectoryId::parse(&target.directory), Anchor::parse(&target.anchor))
    else {
        return Err(anyhow::anyhow!("stored flow holds malformed ids").into());
    };
    let now = st.clock.now();
    // The form key is spent here, before the write, in one statement.
    flow.form_key = None;
    session.insert(FLOW, &flow).await?;
    let support = SupportCode::new();
    let claim = store::writebacks::Claim {
        msg_id: msg_id.as_str(),
        directory: directory.as_str(),
        anchor: anchor.as_str(),
        op: "reset",
        support_code: &support.0,
        now,
    };
    if !store::writebacks::claim(&st.db, &claim).await? {
        let msg = "This form was already sent. If your password was not changed, try again below.";
        return password_page(&st, &session, &mut flow, &target, Some(msg.into()), None).await;
    }

    let request = WritebackRequest {
        msg_id: msg_id.clone(),
        op: Op::Reset,
        directory,
        anchor,
        password: Some(password.as_secret()),
        old_password: None,
        flags: Flags::default(),
        actor: "self-service".into(),
    };
    let result = st.hub.writeback(request, now).await;
    drop(password);
    store::writebacks::finish(&st.db, msg_id.as_str(), &result.outcome, st.clock.now()).await?;
    let raw = match &result.agent_id {
        Some(a) => format!("agent={a} {}", result.raw),
        None => result.raw.clone(),
    };
    audit(&st, record(&st, "reset.writeback", Some(&target), &flow.login, &result.outcome, &raw, &support, client))
        .await?;
    if let Some(p) = &result.policy {
        if let Ok(json) = serde_json::to_string(p) {
            let _ = store::users::save_policy(&st.db, &target.directory, &json, now).await;
        }
    }

    if result.outcome.is_success() {
        session.remove::<Flow>(FLOW).await?;
        notify_changed(&st, &target, now);
        return Ok(outcome_page(&st, "Your password has been changed", &result.outcome, &support, false));
    }
    let view = OutcomeView {
        code: result.outcome.code().0.into(),
        message: result.outcome.message(),
        support_code: support.0,
    };
    password_page(&st, &session, &mut flow, &target, None, Some(view)).await
}

fn notify_changed(st: &AppState, target: &Target, now: i64) {
    let Some(Ok(to)) = target.email.as_deref().map(EmailAddress::parse) else { return };
    let when = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc2822).ok())
        .unwrap_or_default();
    let mailer = st.mailer.clone();
    let helpdesk = st.cfg.server.helpdesk_contact.clone();
    tokio::spawn(async move {
        let sent = match crate::mail::changed_message(&when, &helpdesk) {
            Ok(msg) => mailer.send(&to, msg).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            // The password change stands; the administrator learns of the mail failure here.
            tracing::error!(error = %format!("{e:#}"), "sending the password-changed notice failed");
        }
    });
}
