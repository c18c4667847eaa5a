//! Registering and removing the methods that prove who a person is: an authenticator app (QR
//! code and the seed as text, confirmed by a first code), security questions, an alternate
//! e-mail address (proved with a code sent there). Removing one needs a fresh sign-in.

use super::{overview_page, Fresh, Person, SignedIn};
use crate::config::GateMethod;
use crate::domain::{EmailAddress, MsgId, OneTimeCode};
use crate::i18n::Tr;
use crate::mail::Notice;
use crate::portal::extract::{Button, Only, Posted};
use crate::portal::gates::{questions, totp};
use crate::portal::pages::{AuthenticatorPage, EmailPage, PasskeyPage, QuestionsPage, RecoveryCodesPage};
use crate::portal::people::{self, Attempt};
use crate::portal::session::{self, Key};
use crate::portal::{csrf, passkey, paths, AppState, PortalError, SupportCode, Tag};
use crate::store::{self, passkeys, security};
use crate::usecase::account;
use crate::usecase::password::{self as passwords, Requester};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

/// Audits a change to the person's security info, ends the person's other sessions (this one
/// carries on), and tells every address on record (and those `before` the change, so a removed
/// address hears of its removal).
async fn changed(
    st: &AppState,
    session: &Session,
    client: std::net::SocketAddr,
    who: &SignedIn,
    notice: Notice,
    raw: &str,
    before: Vec<EmailAddress>,
) -> Result<(), PortalError> {
    let support = SupportCode::new();
    let attempt = Attempt { st, client, audit_name: &who.audit_name, target: Some(&who.target), support: &support };
    let actor = Requester::SELF_SERVICE.actor;
    let epoch = account::methods_changed(&attempt, actor, &who.target, notice, raw, before).await?;
    super::carry_on(session, who.clone(), epoch).await?;
    Ok(())
}

/// Back to security info, when `who` may not register `method` here (it is not enabled, or not
/// for a privileged account).
fn not_for(st: &AppState, who: &SignedIn, method: GateMethod) -> Option<Response> {
    let allowed = st.cfg.gates.may_register(who.target.protected, method);
    (!allowed).then(|| Redirect::to(paths::ACCOUNT).into_response())
}

async fn done(st: &AppState, session: &Session, who: &SignedIn, key: &str) -> PageResult {
    overview_page(st, session, who, Some(Tr::current().t(key).into())).await
}

// ---- authenticator app ----

/// Starts an enrolment: a new seed, kept (encrypted) until the first code confirms it.
pub async fn start_authenticator(Posted { who: Fresh(who), st, .. }: Posted<Button, Fresh>) -> PageResult {
    begin_authenticator(&st, &who).await
}

pub(super) async fn begin_authenticator(st: &AppState, who: &SignedIn) -> PageResult {
    if let Some(not_here) = not_for(st, who, GateMethod::Authenticator) {
        return Ok(not_here);
    }
    let p = who.target.person();
    let seed = totp::new_seed();
    let sealed = st.secrets.encrypt(&p.context("totp"), &seed);
    security::put_pending_totp(&st.db, p, &sealed, st.clock.now()).await?;
    Ok(Redirect::to(paths::ACCOUNT_AUTHENTICATOR).into_response())
}

async fn authenticator_page(st: &AppState, session: &Session, who: &SignedIn, error: Option<String>) -> PageResult {
    let p = who.target.person();
    let Some(row) = security::totp(&st.db, p).await?.filter(|r| !r.confirmed) else {
        return Ok(Redirect::to(paths::ACCOUNT).into_response());
    };
    let seed = st.secrets.decrypt(&p.context("totp"), &row.secret_enc)?;
    let issuer = st.cfg.server.public_url.parse::<url::Url>().ok().and_then(|u| u.host_str().map(str::to_string));
    let issuer = issuer.as_deref().unwrap_or("passback");
    let qr = totp::qr_data_url(&seed, issuer, &who.target.username)?;
    let page = AuthenticatorPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        qr: qr.to_string(),
        secret: totp::seed_text(&seed).to_string(),
        link: totp::otpauth_url(&seed, issuer, &who.target.username)?.to_string(),
        error,
    };
    Ok(page.into_response())
}

pub async fn authenticator_form(Only { who: Fresh(who), session, st }: Only<Fresh>) -> PageResult {
    authenticator_page(&st, &session, &who, None).await
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
}

/// The first code from the app confirms the enrolment (and is itself used up).
pub async fn confirm_authenticator(
    Posted { form: f, session, who: Fresh(who), st, client, .. }: Posted<CodeForm, Fresh>,
) -> PageResult {
    if let Some(not_here) = not_for(&st, &who, GateMethod::Authenticator) {
        return Ok(not_here);
    }
    let p = who.target.person();
    let Some(row) = security::totp(&st.db, p).await?.filter(|r| !r.confirmed) else {
        return Ok(Redirect::to(paths::ACCOUNT).into_response());
    };
    let seed = st.secrets.decrypt(&p.context("totp"), &row.secret_enc)?;
    let now = st.clock.now();
    let confirmed = match totp::matching_step(&seed, &f.code, now) {
        Some(step) => security::use_totp_step(&st.db, p, step, now).await?,
        None => false,
    };
    if !confirmed {
        return authenticator_page(&st, &session, &who, Some(Tr::current().t("gates.wrong_authenticator").into()))
            .await;
    }
    let notice = Notice::MethodAdded(GateMethod::Authenticator);
    changed(&st, &session, client, &who, notice, "authenticator app registered", Vec::new()).await?;
    done(&st, &session, &who, "account.authenticator_added").await
}

// ---- security questions ----

async fn questions_page(st: &AppState, session: &Session, error: Option<String>, chosen: Vec<String>) -> PageResult {
    let tr = Tr::current();
    let n = st.cfg.gates.questions_to_register as usize;
    let mut rows = chosen;
    rows.resize(n, String::new());
    let page = QuestionsPage {
        tr,
        csrf: csrf::token(session).await?,
        offered: questions::offered(tr, &st.cfg.gates.custom_questions),
        rows: rows.into_iter().enumerate().collect(),
        error,
    };
    Ok(page.into_response())
}

pub async fn questions_form(Only { who: Person(who), session, st }: Only<Person>) -> PageResult {
    if !st.cfg.gates.may_register(who.target.protected, GateMethod::Questions) {
        return Ok(Redirect::to(paths::ACCOUNT).into_response());
    }
    questions_page(&st, &session, None, Vec::new()).await
}

/// Saves a whole set of answers (replacing any before), each normalised and argon2id-hashed.
pub async fn save_questions(
    Posted { form: f, session, who: Fresh(who), st, client, .. }: Posted<HashMap<String, SecretString>, Fresh>,
) -> PageResult {
    let field = |name: &str| f.get(name).map(|v| v.expose_secret().to_string()).unwrap_or_default();
    if !st.cfg.gates.may_register(who.target.protected, GateMethod::Questions) {
        return Ok(Redirect::to(paths::ACCOUNT).into_response());
    }
    let n = st.cfg.gates.questions_to_register as usize;
    // The answers stay secrets from the form to their hashes; the question ids are not secret.
    let chosen: Vec<String> = (0..n).map(|i| field(&format!("q{i}"))).collect();
    let pairs: Vec<(String, SecretString)> = (0..n)
        .filter_map(|i| {
            let q = Some(field(&format!("q{i}"))).filter(|q| !q.is_empty())?;
            let a = f.get(&format!("a{i}")).filter(|a| !a.expose_secret().trim().is_empty())?;
            Some((q, a.clone()))
        })
        .collect();
    let normalised = match questions::check_registration(&pairs, n, &st.cfg.gates.custom_questions) {
        Ok(v) => v,
        Err(key) => return questions_page(&st, &session, Some(Tr::current().t(key).into()), chosen).await,
    };
    let mut hashed = Vec::with_capacity(normalised.len());
    for (q, a) in normalised {
        hashed.push((q, passwords::hash(&a).await?));
    }
    security::set_answers(&st.db, who.target.person(), &hashed, st.clock.now()).await?;
    let raw = format!("{n} security questions registered");
    changed(&st, &session, client, &who, Notice::MethodAdded(GateMethod::Questions), &raw, Vec::new()).await?;
    done(&st, &session, &who, "account.questions_saved").await
}

// ---- alternate e-mail ----

/// An address waiting for the person to type the code sent there.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingEmail {
    address: String,
    code_id: String,
}

const PENDING_EMAIL: Key<PendingEmail> = Key::new(session::PENDING_EMAIL);

/// Drops an address waiting for its code (at sign-in: it was someone else's).
pub(super) async fn forget(session: &Session) -> Result<(), PortalError> {
    PENDING_EMAIL.take(session).await?;
    Ok(())
}

async fn email_page(session: &Session, pending: Option<&PendingEmail>, error: Option<String>) -> PageResult {
    let page = EmailPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        sent_to: pending.and_then(|p| EmailAddress::parse(&p.address).ok()).map(|a| a.masked()),
        error,
    };
    Ok(page.into_response())
}

pub async fn email_form(session: Session, _: Only<Person>) -> PageResult {
    let pending = PENDING_EMAIL.get(&session).await?;
    email_page(&session, pending.as_ref(), None).await
}

#[derive(Deserialize)]
pub struct EmailForm {
    email: String,
}

/// Sends a code to the new address; it is registered once the code comes back.
pub async fn add_email(Posted { form: f, session, who: Fresh(who), st, .. }: Posted<EmailForm, Fresh>) -> PageResult {
    if let Some(not_here) = not_for(&st, &who, GateMethod::Email) {
        return Ok(not_here);
    }
    let tr = Tr::current();
    let address = match EmailAddress::parse(&f.email) {
        Ok(a) => a,
        Err(e) => return email_page(&session, None, Some(e.text(tr))).await,
    };
    let now = st.clock.now();
    let code = OneTimeCode::generate(&mut rand::rngs::OsRng);
    let code_id = MsgId::random().to_string();
    let code_hash = st.code_key.hash(&[code_id.as_bytes(), code.expose().as_bytes()]);
    let new = store::codes::NewCode {
        id: &code_id,
        directory: &who.target.directory,
        anchor: &who.target.anchor,
        code_hash: &code_hash,
        now,
        expires_at: now + i64::try_from(st.cfg.reset.code_ttl_secs).unwrap_or(600),
    };
    if !store::codes::insert_within_limit(&st.db, &new, st.cfg.reset.codes_per_hour).await? {
        return email_page(&session, None, Some(tr.t("account.too_many_codes").into())).await;
    }
    let msg = crate::mail::code_message(tr, code.expose(), st.cfg.reset.code_ttl_secs.div_ceil(60))?;
    if let Err(e) = st.mailer.send(&address, msg).await {
        tracing::warn!(error = %format!("{e:#}"), "sending a code to a new alternate address failed");
        return email_page(&session, None, Some(tr.t("account.email_failed").into())).await;
    }
    let pending = PendingEmail { address: address.as_str().to_string(), code_id };
    PENDING_EMAIL.set(&session, &pending).await?;
    email_page(&session, Some(&pending), None).await
}

pub async fn confirm_email(
    Posted { form: f, session, who: Fresh(who), st, client, .. }: Posted<CodeForm, Fresh>,
) -> PageResult {
    if let Some(not_here) = not_for(&st, &who, GateMethod::Email) {
        return Ok(not_here);
    }
    let Some(pending) = PENDING_EMAIL.get(&session).await? else {
        return Ok(Redirect::to(paths::ACCOUNT_EMAIL).into_response());
    };
    let now = st.clock.now();
    let right = match OneTimeCode::parse(&f.code) {
        Ok(code) => {
            let owner = who.target.person();
            let stored =
                store::codes::take_attempt(&st.db, &pending.code_id, owner, now, st.cfg.reset.code_attempts).await?;
            let presented = [pending.code_id.as_bytes(), code.expose().as_bytes()];
            match stored {
                Some(hash) => {
                    st.code_key.matches(&presented, &hash)
                        && store::codes::mark_used(&st.db, &pending.code_id, now).await?
                }
                None => false,
            }
        }
        Err(_) => false,
    };
    if !right {
        return email_page(&session, Some(&pending), Some(Tr::current().t("verify.wrong").into())).await;
    }
    PENDING_EMAIL.take(&session).await?;
    security::set_alternate_email(&st.db, who.target.person(), &pending.address, now).await?;
    let notice = Notice::MethodAdded(GateMethod::Email);
    changed(&st, &session, client, &who, notice, "alternate e-mail address registered", Vec::new()).await?;
    done(&st, &session, &who, "account.email_added").await
}

// ---- recovery codes ----

/// New recovery codes (after a fresh sign-in and step-up, as every change here): any earlier
/// ones stop working, every address on record is told, and the codes are shown once.
pub async fn make_recovery_codes(
    Posted { session, who: Fresh(who), st, client, .. }: Posted<Button, Fresh>,
) -> PageResult {
    new_recovery_codes(&st, &session, client, &who).await
}

pub(super) async fn new_recovery_codes(
    st: &AppState,
    session: &Session,
    client: std::net::SocketAddr,
    who: &SignedIn,
) -> PageResult {
    use crate::portal::gates::recovery;
    use base64::Engine;
    if let Some(not_here) = not_for(st, who, GateMethod::RecoveryCode) {
        return Ok(not_here);
    }
    let (tr, p, now) = (Tr::current(), who.target.person(), st.clock.now());
    let codes = recovery::generate();
    let hashes: Vec<String> = codes.iter().map(|c| recovery::hash_of_shown(&st.code_key, p, c)).collect();
    security::set_recovery_codes(&st.db, p, &hashes, now).await?;
    let notice = Notice::MethodAdded(GateMethod::RecoveryCode);
    changed(st, session, client, who, notice, "recovery codes made; any earlier ones no longer work", Vec::new())
        .await?;
    let mut text = zeroize::Zeroizing::new(tr.f2(
        "recovery.file_head",
        "username",
        &who.target.username,
        "when",
        crate::mail::utc_minutes(now),
    ));
    for (i, c) in codes.iter().enumerate() {
        text.push_str(&format!("\n{:>2}. {}", i + 1, c.as_str()));
    }
    text.push('\n');
    let download = zeroize::Zeroizing::new(format!(
        "data:text/plain;charset=utf-8;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    ));
    let page =
        RecoveryCodesPage { tr, codes: codes.iter().map(|c| c.to_string()).collect(), download: download.to_string() };
    Ok(page.into_response())
}

// ---- removing ----

#[derive(Deserialize)]
pub struct RemoveForm {
    pub(super) method: GateMethod,
}

/// Removes a registered method (after a fresh sign-in, as every change here).
pub async fn remove_method(
    Posted { form: f, session, who: Fresh(who), st, client, .. }: Posted<RemoveForm, Fresh>,
) -> PageResult {
    remove(&st, &session, client, &who, f.method).await
}

pub(super) async fn remove(
    st: &AppState,
    session: &Session,
    client: std::net::SocketAddr,
    who: &SignedIn,
    method: GateMethod,
) -> PageResult {
    let before = people::addresses_on_record(st, &who.target).await?;
    account::remove_method(st, &who.target, method).await?;
    changed(st, session, client, who, Notice::MethodRemovedByOwner(method), "removed by its owner", before).await?;
    done(st, session, who, "account.removed").await
}

// ---- passkeys ----

fn passkey_owner(who: &SignedIn) -> passkeys::Owner<'_> {
    super::passkey_owner(&who.target)
}

/// Starts registering a passkey (after a fresh sign-in and step-up, as every change here): on
/// to the page that asks the browser to make one.
pub async fn start_passkey(_: Posted<Button, Fresh>) -> Redirect {
    Redirect::to(paths::ACCOUNT_PASSKEYS)
}

/// The page that asks the browser to make a passkey, under a name the person chooses (a new
/// challenge each time it is shown).
pub async fn passkey_form(Only { who: Fresh(who), session, st }: Only<Fresh>) -> PageResult {
    begin_passkey(&st, &session, &who, None).await
}

async fn begin_passkey(st: &AppState, session: &Session, who: &SignedIn, error: Option<String>) -> PageResult {
    if let Some(not_here) = not_for(st, who, GateMethod::Passkey) {
        return Ok(not_here);
    }
    let t = &who.target;
    let shown = if t.display_name.is_empty() { &t.username } else { &t.display_name };
    let Some(options) = passkey::begin_registration(st, session, passkey_owner(who), &t.username, shown).await? else {
        return Ok(Redirect::to(paths::ACCOUNT).into_response());
    };
    let tr = Tr::current();
    let page = PasskeyPage { tr, csrf: csrf::token(session).await?, options, error };
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct PasskeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    credential: String,
}

/// What a passkey is called: as the person named it (one line, 60 characters at most), else
/// "Passkey".
pub(crate) fn passkey_name(typed: &str) -> String {
    let one_line: String = typed.split_whitespace().collect::<Vec<_>>().join(" ");
    let name: String = one_line.chars().filter(|c| !c.is_control()).take(60).collect();
    if name.is_empty() {
        Tr::current().t("passkey.default_name").into()
    } else {
        name
    }
}

/// Keeps the passkey the browser made, once its answer checks out against this session's
/// challenge; every address on record hears of it.
pub async fn save_passkey(
    Posted { form: f, session, who: Fresh(who), st, client, .. }: Posted<PasskeyForm, Fresh>,
) -> PageResult {
    if let Some(not_here) = not_for(&st, &who, GateMethod::Passkey) {
        return Ok(not_here);
    }
    let name = passkey_name(&f.name);
    match passkey::finish_registration(&st, &session, passkey_owner(&who), &f.credential, &name).await? {
        Ok(()) => {
            let notice = Notice::MethodAdded(GateMethod::Passkey);
            changed(&st, &session, client, &who, notice, "passkey registered", Vec::new()).await?;
            done(&st, &session, &who, "account.passkey_added").await
        }
        Err(refused) => {
            let support = SupportCode::new();
            let attempt =
                Attempt { st: &st, client, audit_name: &who.audit_name, target: Some(&who.target), support: &support };
            let o = crate::domain::Outcome::VerificationFailed;
            attempt.audit("security.passkey_registration", &o, refused.why()).await?;
            let error = format!(
                "{} ({} {})",
                Tr::current().t("passkey.not_registered"),
                Tr::current().t("common.support_code"),
                support.0
            );
            Ok(support.tag(begin_passkey(&st, &session, &who, Some(error)).await?))
        }
    }
}

#[derive(Deserialize)]
pub struct PasskeyRemoveForm {
    pub(super) id: String,
}

/// Removes one of the person's passkeys (after a fresh sign-in and step-up).
pub async fn remove_passkey(
    Posted { form: f, session, who: Fresh(who), st, client, .. }: Posted<PasskeyRemoveForm, Fresh>,
) -> PageResult {
    remove_one_passkey(&st, &session, client, &who, &f.id).await
}

pub(super) async fn remove_one_passkey(
    st: &AppState,
    session: &Session,
    client: std::net::SocketAddr,
    who: &SignedIn,
    id: &str,
) -> PageResult {
    let before = people::addresses_on_record(st, &who.target).await?;
    if !passkeys::remove(&st.db, passkey_owner(who), id).await? {
        return Ok(Redirect::to(paths::ACCOUNT).into_response());
    }
    let notice = Notice::MethodRemovedByOwner(GateMethod::Passkey);
    changed(st, session, client, who, notice, "a passkey removed by its owner", before).await?;
    done(st, session, who, "account.passkey_removed").await
}
