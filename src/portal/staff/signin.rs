//! Staff sign-in: user name, password and an authenticator code, all three checked every time
//! and answered alike whichever was wrong. Wrong attempts per account are limited race-free.

use super::pages::{StaffEnrolPage, StaffSignInPage};
use super::{begin, current, Staff, STAFF};
use crate::domain::Outcome;
use crate::i18n::Tr;
use crate::portal::extract::{Button, Posted};
use crate::portal::gates::totp;
use crate::portal::pages::OutcomeView;
use crate::portal::session::{self, Key};
use crate::portal::Tag;
use crate::portal::{csrf, paths, AppState, PortalError, SupportCode};
use crate::store::{self, audit::AuditRecord};
use crate::usecase::password as passwords;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

/// Wrong sign-ins an account may have from one address per hour and per day before it waits…
const LIMITS: (u32, u32) = (5, 20);
/// …and from all addresses together: higher, so that someone guessing from elsewhere cannot
/// keep the owner out for long, and low enough to stop a spread-out guessing attack.
pub(super) const ACCOUNT_LIMITS: (u32, u32) = (30, 100);
/// Every answer takes at least this long, so a wrong user name is not told apart by its speed.
const MIN_RESPONSE_MS: u64 = 400;

async fn page(st: &AppState, session: &Session, username: &str, outcome: Option<OutcomeView>) -> PageResult {
    let page = StaffSignInPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        username: username.to_string(),
        outcome,
        passkey: crate::portal::passkey::available(st),
    };
    Ok(page.into_response())
}

pub async fn signin_form(State(st): State<AppState>, session: Session) -> PageResult {
    if current(&st, &session).await?.is_some() {
        return Ok(Redirect::to(paths::STAFF_HOME).into_response());
    }
    page(&st, &session, "", None).await
}

#[derive(Deserialize)]
pub struct StaffSignInForm {
    username: String,
    password: SecretString,
    #[serde(default)]
    code: Option<SecretString>,
    /// A passkey's answer, in place of the code.
    #[serde(default)]
    credential: String,
}

/// The second factor: the passkey's answer when there is one, else the authenticator code (used
/// once). Whether it held, and what the audit says when it did not.
async fn second_factor(
    st: &AppState,
    session: &Session,
    client: std::net::IpAddr,
    r: &store::staff::StaffRow,
    f: &StaffSignInForm,
    now: i64,
) -> Result<(bool, &'static str), PortalError> {
    if !f.credential.trim().is_empty() {
        let kind = store::passkeys::Kind::Staff;
        let owner = match crate::portal::passkey::finish_assertion(st, session, kind, &f.credential).await? {
            Ok(a) if a.anchor == r.id => return Ok((true, "")),
            Ok(a) => (a.anchor, "passkey refused: another staff member's"),
            Err(crate::portal::passkey::Refusal { why, owner: Some((_, anchor)) }) => (anchor, why.why()),
            Err(refusal) => return Ok((false, refusal.why.why())),
        };
        // Someone else's passkey, or a copy of one: the audit names whose, for the administrators.
        if let Some(holder) = store::staff::get(&st.db, &owner.0).await? {
            let record = AuditRecord {
                at: now,
                actor: "unauthenticated".into(),
                operation: "staff.passkey_misused".into(),
                target: Some(format!("staff:{}", holder.username)),
                outcome_code: Outcome::VerificationFailed.code().0.into(),
                raw: format!("{} (at a sign-in as staff:{})", owner.1, r.username),
                support_code: SupportCode::new().0,
                client: Some(client.to_string()),
                ..Default::default()
            };
            store::audit::record(&st.db, &record).await?;
        }
        return Ok((false, owner.1));
    }
    let seed = st.secrets.decrypt(&store::staff::totp_context(&r.id), &r.totp_enc)?;
    let typed = f.code.as_ref().map_or("", |c| c.expose_secret());
    let used = match totp::matching_step(&seed, typed, now) {
        // A code is used once: a second sign-in with the same one is refused.
        Some(step) => store::staff::use_totp_step(&st.db, &r.id, step).await?,
        None => false,
    };
    Ok((used, "authenticator code wrong or reused"))
}

pub async fn signin(Posted { form: f, session, st, client, .. }: Posted<StaffSignInForm>) -> PageResult {
    crate::portal::at_least(MIN_RESPONSE_MS, signin_inner(&st, client, &session, f)).await
}

async fn signin_inner(
    st: &AppState,
    client: std::net::SocketAddr,
    session: &Session,
    f: StaffSignInForm,
) -> PageResult {
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    let tr = Tr::current();
    let typed = f.username.trim().to_lowercase();
    let support = SupportCode::new();
    let now = st.clock.now();
    let row = store::staff::by_username(&st.db, &typed).await?;
    let target = match &row {
        Some(r) => format!("staff:{}", r.username),
        None => format!("unmatched:{}", &st.code_key.hash(&[b"audit-name", typed.as_bytes()])[..12]),
    };
    // Until the sign-in succeeds, whoever typed is nobody known: the account is the target.
    let audit = |outcome: Outcome, raw: &str| AuditRecord {
        at: now,
        actor: if outcome.is_success() { target.clone() } else { "unauthenticated".into() },
        operation: "staff.signin".into(),
        target: Some(target.clone()),
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
    let subject = signin_subject(st, &typed);
    let from_here = format!("{subject}|{}", crate::portal::guard::address_key_text(client.ip()));
    let limit_page = || {
        let shown = OutcomeView {
            message: tr.t("staff.signin_limit").into(),
            ..OutcomeView::new(&Outcome::VerificationFailed, &support)
        };
        page(st, session, &typed, Some(shown))
    };
    let Some(here) = store::attempts::reserve(&st.db, &from_here, now, LIMITS).await? else {
        store::audit::record(&st.db, &audit(Outcome::VerificationFailed, "too many wrong sign-ins from this address"))
            .await?;
        return Ok(support.tag(limit_page().await?));
    };
    let Some(reservation) = store::attempts::reserve(&st.db, &subject, now, ACCOUNT_LIMITS).await? else {
        store::attempts::release(here).run(&st.db).await?;
        store::audit::record(&st.db, &audit(Outcome::VerificationFailed, "too many wrong sign-ins for this account"))
            .await?;
        return Ok(support.tag(limit_page().await?));
    };
    // The password is checked even for an unknown or disabled account (against a hash nobody
    // knows), so the time taken does not tell them apart.
    let password_right = passwords::verify(&f.password, row.as_ref().map(|r| r.password_hash.clone())).await;
    let (signed_in, second_wrong) = match &row {
        Some(r) if password_right && r.enabled() && r.role().is_some() => {
            second_factor(st, session, client.ip(), r, &f, now).await?
        }
        _ => (false, "second factor not checked: account disabled or without a role"),
    };
    // A wrong password is also checked against the administrator-made one the owner replaced
    // (always, against a hash nobody knows where there is none, so the time taken says nothing):
    // whoever still holds that one is told it was replaced, and what to do.
    // Checked for every sign-in, right password or not, so both take the same time.
    let given = match &row {
        Some(r) => store::staff::given_password_hash(&st.db, &r.id).await?.filter(|_| r.enabled()),
        None => None,
    };
    let spent = passwords::verify(&f.password, given).await && !password_right;
    let Some(r) = row.filter(|_| signed_in) else {
        if spent {
            let why = "the administrator-made password, replaced by the owner's own at enrolment";
            store::audit::record(&st.db, &audit(Outcome::VerificationFailed, why)).await?;
            let shown = OutcomeView {
                message: tr.t("staff.signin_spent").into(),
                ..OutcomeView::new(&Outcome::VerificationFailed, &support)
            };
            return Ok(support.tag(page(st, session, &typed, Some(shown)).await?));
        }
        let why = if password_right { second_wrong } else { "wrong" };
        store::audit::record(&st.db, &audit(Outcome::VerificationFailed, why)).await?;
        return Ok(support.tag(page(st, session, &typed, Some(wrong(&support))).await?));
    };
    for r in [reservation, here] {
        store::attempts::release(r).run(&st.db).await?;
    }
    store::attempts::clear(&from_here).run(&st.db).await?;
    if r.must_enrol {
        // Administrator-made credentials open one page only: choosing one's own, until that is
        // done (so leaving the page half way locks nobody out for longer than the page lasts).
        // A new start begins afresh: the earlier enrolment session ends, and the authenticator to
        // enrol is made anew. An enrolment in progress is never taken over.
        let started = store::staff::begin_enrolment(&st.db, &r.id, r.session_epoch, now, now - ENROL_SECS).await?;
        let Some(epoch) = started else {
            let why = "administrator-made credentials while their enrolment is in progress: refused";
            store::audit::record(&st.db, &audit(Outcome::VerificationFailed, why)).await?;
            let shown = OutcomeView {
                message: tr.f("staff.enrolment_in_progress", "minutes", ENROL_SECS / 60),
                ..OutcomeView::new(&Outcome::VerificationFailed, &support)
            };
            return Ok(support.tag(page(st, session, &typed, Some(shown)).await?));
        };
        session.clear().await;
        session.cycle_id().await?;
        ENROLLING.set(session, &Enrolling { id: r.id.clone(), epoch, at: now }).await?;
        let why = "administrator-made credentials: enrolment (re)started, any earlier enrolment session ended";
        store::audit::record(&st.db, &audit(Outcome::Success, why)).await?;
        return Ok(Redirect::to(paths::STAFF_ENROL).into_response());
    }
    begin(session, &r, now).await?;
    store::audit::record(&st.db, &audit(Outcome::Success, &format!("role={}", r.role))).await?;
    Ok(Redirect::to(paths::STAFF_HOME).into_response())
}

/// Under what wrong sign-ins of a typed name are counted: a keyed hash, so nothing typed can
/// collide with another name's counters (or with a person's).
pub(crate) fn signin_subject(st: &AppState, typed: &str) -> String {
    crate::usecase::staff::signin_subject(&st.code_key, typed)
}

const ENROLLING: Key<Enrolling> = Key::new(session::STAFF_ENROLLING);
/// How long the enrolment page stays open after the sign-in that led to it.
const ENROL_SECS: i64 = 10 * 60;

/// A staff member half signed in with administrator-made credentials.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Enrolling {
    id: String,
    epoch: i64,
    at: i64,
}

/// The account being enrolled, while the enrolment is still good.
async fn enrolling(
    st: &AppState,
    session: &Session,
) -> Result<Option<(Enrolling, store::staff::StaffRow)>, PortalError> {
    let Some(e) = ENROLLING.get(session).await? else { return Ok(None) };
    let row = store::staff::get(&st.db, &e.id).await?;
    let now = st.clock.now();
    match row {
        Some(r) if r.enabled() && r.must_enrol && r.session_epoch == e.epoch && now - e.at < ENROL_SECS => {
            Ok(Some((e, r)))
        }
        _ => {
            ENROLLING.take(session).await?;
            Ok(None)
        }
    }
}

/// The enrolment page: a new authenticator (its seed made here, in the owner's session, and kept
/// encrypted until confirmed) and a password of one's own.
async fn enrol_page(
    st: &AppState,
    session: &Session,
    row: &store::staff::StaffRow,
    error: Option<String>,
) -> PageResult {
    let context = store::staff::totp_context(&row.id);
    let seed = match &row.pending_totp_enc {
        Some(enc) => st.secrets.decrypt(&context, enc)?,
        None => {
            let seed = totp::new_seed();
            store::staff::set_pending_totp(&st.db, &row.id, &st.secrets.encrypt(&context, &seed)).await?;
            seed
        }
    };
    let issuer = Tr::current().t("staff.brand");
    let page = StaffEnrolPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        username: row.username.clone(),
        seed_text: totp::seed_text(&seed).to_string(),
        qr: totp::qr_data_url(&seed, issuer, &row.username)?.to_string(),
        policy: Some(crate::portal::pages::PolicyView::for_staff(
            st,
            vec![row.username.clone(), row.display_name.clone()],
        )),
        error,
    };
    Ok(page.into_response())
}

pub async fn enrol_form(State(st): State<AppState>, session: Session) -> PageResult {
    match enrolling(&st, &session).await? {
        Some((_, row)) => enrol_page(&st, &session, &row, None).await,
        None => Ok(Redirect::to(paths::STAFF_SIGNIN).into_response()),
    }
}

#[derive(Deserialize)]
pub struct EnrolForm {
    password: SecretString,
    confirm: SecretString,
    code: SecretString,
}

/// Confirms the new authenticator with a code from it and sets the chosen password (under the
/// cloud password policy, and not the administrator-made one); then the staff session begins.
pub async fn enrol(Posted { form: f, session, st, client, .. }: Posted<EnrolForm>) -> PageResult {
    let Some((e, row)) = enrolling(&st, &session).await? else {
        return Ok(Redirect::to(paths::STAFF_SIGNIN).into_response());
    };
    let tr = Tr::current();
    let now = st.clock.now();
    let refused = |why: &str| AuditRecord {
        at: now,
        actor: format!("staff:{}", row.username),
        operation: "staff.enrol".into(),
        target: Some(format!("staff:{}", row.username)),
        outcome_code: Outcome::Refused.code().0.into(),
        raw: why.into(),
        support_code: SupportCode::new().0,
        client: Some(client.ip().to_string()),
        ..Default::default()
    };
    let new = match crate::domain::NewPassword::parse(f.password, &f.confirm) {
        Ok(p) => p,
        Err(err) => return enrol_page(&st, &session, &row, Some(err.text(tr))).await,
    };
    if let Some(rule) = passwords::cloud_rule(&st, &new, &row.username) {
        return enrol_page(&st, &session, &row, Some(rule.message(tr))).await;
    }
    // The portal's own rules, as for everyone's passwords (staff hold the keys to all of them,
    // and always sign in with a second factor).
    let owner = crate::usecase::policy::Owner {
        names: vec![row.username.clone(), row.display_name.clone()],
        second_factor: true,
    };
    if let Some(rule) = st.rules.check(new.as_secret(), owner, now, false).await.refusal {
        return enrol_page(&st, &session, &row, Some(rule.message(tr))).await;
    }
    if passwords::verify(new.as_secret(), Some(row.password_hash.clone())).await {
        store::audit::record(&st.db, &refused("the administrator-made password again")).await?;
        return enrol_page(&st, &session, &row, Some(tr.t("staff.enrol_same_password").into())).await;
    }
    let Some(pending) = row.pending_totp_enc.clone() else {
        return enrol_page(&st, &session, &row, None).await;
    };
    let seed = st.secrets.decrypt(&store::staff::totp_context(&row.id), &pending)?;
    let Some(step) = totp::matching_step(&seed, f.code.expose_secret(), now) else {
        store::audit::record(&st.db, &refused("the new authenticator's code was wrong")).await?;
        return enrol_page(&st, &session, &row, Some(tr.t("staff.enrol_code_wrong").into())).await;
    };
    let hash = passwords::hash(new.as_secret()).await?;
    drop(new);
    if !store::staff::complete_enrolment(&st.db, &row.id, e.epoch, &hash, &pending, step, now).await? {
        return Ok(Redirect::to(paths::STAFF_SIGNIN).into_response());
    }
    let Some(done) = store::staff::get(&st.db, &row.id).await? else {
        return Ok(Redirect::to(paths::STAFF_SIGNIN).into_response());
    };
    begin(&session, &done, now).await?;
    let rec = AuditRecord {
        at: now,
        actor: format!("staff:{}", done.username),
        operation: "staff.enrol".into(),
        target: Some(format!("staff:{}", done.username)),
        outcome_code: Outcome::Success.code().0.into(),
        raw: "own password and authenticator replaced the administrator-made ones".into(),
        support_code: SupportCode::new().0,
        client: Some(client.ip().to_string()),
        ..Default::default()
    };
    store::audit::record(&st.db, &rec).await?;
    Ok(Redirect::to(paths::STAFF_HOME).into_response())
}

/// Ends this session.
pub async fn signout(Posted { session, .. }: Posted<Button>) -> PageResult {
    STAFF.take(&session).await?;
    session.cycle_id().await?;
    Ok(Redirect::to(paths::STAFF_SIGNIN).into_response())
}

/// Ends every session of the signed-in staff member, on every device.
pub async fn signout_everywhere(Posted { session, st, .. }: Posted<Button>) -> PageResult {
    if let Some(Staff { row, .. }) = current(&st, &session).await? {
        store::staff::end_sessions(&st.db, &row.id).await?;
    }
    STAFF.take(&session).await?;
    session.cycle_id().await?;
    Ok(Redirect::to(paths::STAFF_SIGNIN).into_response())
}
