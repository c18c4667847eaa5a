//! Staff pages: the helpdesk (search people in scope, reset, unlock, force a change, revoke a
//! method), the audit log, writeback health and staff accounts. Staff sign in with a password and
//! an authenticator code; their sessions are short, end when their role changes, and can be ended
//! everywhere at once. Role and scope are read from the database on every request, never trusted
//! from the session.

mod admin;
mod audit;
mod health;
mod helpdesk;
mod pages;
mod passkeys;
mod reports;
mod signin;

pub use admin::{add_staff, reset_staff, staff_list, update_staff};
pub use audit::{audit_csv, audit_page, AuditQuery};
pub use health::{apply_sync_hold, health_json, health_page, revoke_agent, Health};
pub use helpdesk::{act, person, search};
pub use passkeys::{add_passkey, passkeys_page, remove_passkey};
pub use reports::{reports_csv, reports_page};
pub use signin::{enrol, enrol_form, signin, signin_form, signout, signout_everywhere};

use super::{paths, AppState, PortalError};
use crate::portal::session::Key;
use crate::store::staff::{Role, StaffRow};
use crate::store::users::Scope;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

const STAFF: Key<StaffSession> = Key::new(super::session::STAFF);
/// A staff session ends after this long without a request…
const IDLE_SECS: i64 = 15 * 60;
/// …and this long after sign-in, whatever happens.
const ABSOLUTE_SECS: i64 = 8 * 60 * 60;

/// What a staff session holds: whose it is and which of their epochs (raising the epoch ends it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StaffSession {
    id: String,
    epoch: i64,
    at: i64,
    seen: i64,
}

/// A signed-in staff member, as the database says now.
pub(crate) struct Staff {
    pub row: StaffRow,
    pub role: Role,
    pub scope: Scope,
}

impl Staff {
    /// The actor named in audit rows and sealed requests.
    pub fn actor(&self) -> String {
        format!("staff:{}", self.row.username)
    }
}

/// The staff member signed in on this session, if the session is still good: the account
/// exists, is enabled, its epoch is the session's, and neither time limit has passed. Whatever
/// fails, the session forgets the staff member.
async fn current(st: &AppState, session: &Session) -> Result<Option<Staff>, PortalError> {
    let Some(mut s) = STAFF.get(session).await? else { return Ok(None) };
    let now = st.clock.now();
    let row = crate::store::staff::get(&st.db, &s.id).await?;
    let good = row.filter(|r| {
        r.enabled()
            && !r.must_enrol
            && r.session_epoch == s.epoch
            && now - s.seen < IDLE_SECS
            && now - s.at < ABSOLUTE_SECS
    });
    let staff = good.and_then(|row| Some(Staff { role: row.role()?, scope: row.scope()?, row }));
    match staff {
        Some(staff) => {
            s.seen = now;
            STAFF.set(session, &s).await?;
            Ok(Some(staff))
        }
        None => {
            STAFF.take(session).await?;
            Ok(None)
        }
    }
}

/// The signed-in staff member if their role passes `allowed`; else the sign-in page (nobody
/// signed in) or a plain 403 (signed in, not allowed).
pub(crate) async fn require(
    st: &AppState,
    session: &Session,
    allowed: fn(Role) -> bool,
) -> Result<Result<Staff, Response>, PortalError> {
    match current(st, session).await? {
        Some(staff) if allowed(staff.role) => Ok(Ok(staff)),
        Some(staff) => Ok(Err(forbidden(&staff))),
        None => Ok(Err(Redirect::to(paths::STAFF_SIGNIN).into_response())),
    }
}

/// The staff pages: their own router, every response of which is marked never to be framed.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(paths::STAFF_HOME, get(home))
        .route(paths::STAFF_SIGNIN, get(signin_form).post(signin))
        .route(paths::STAFF_SIGNIN_PASSKEY, post(crate::portal::passkey::options))
        .route(paths::STAFF_PASSKEYS, get(passkeys_page).post(add_passkey))
        .route(paths::STAFF_PASSKEY_REMOVE, post(remove_passkey))
        .route(paths::STAFF_SIGNOUT, post(signout))
        .route(paths::STAFF_ENROL, get(enrol_form).post(enrol))
        .route(paths::STAFF_SIGNOUT_EVERYWHERE, post(signout_everywhere))
        .route(paths::HELPDESK, get(search))
        .route(paths::HELPDESK_PERSON, get(person))
        .route(paths::HELPDESK_ACT, post(act))
        .route(paths::AUDIT, get(audit_page))
        .route(paths::AUDIT_CSV, get(audit_csv))
        .route(paths::ADMIN_REPORTS, get(reports_page))
        .route(paths::ADMIN_REPORTS_CSV, get(reports_csv))
        .route(paths::ADMIN_HEALTH, get(health_page))
        .route(paths::ADMIN_HEALTH_JSON, get(health_json))
        .route(paths::ADMIN_AGENT_REVOKE, post(revoke_agent))
        .route(paths::ADMIN_SYNC_APPLY, post(apply_sync_hold))
        .route(paths::ADMIN_STAFF, get(staff_list).post(add_staff))
        .route(paths::ADMIN_STAFF_RESET, post(reset_staff))
        .route(paths::ADMIN_STAFF_UPDATE, post(update_staff))
        .layer(axum::middleware::map_response(|mut resp: Response| async move {
            resp.extensions_mut().insert(super::NeverFramed);
            resp
        }))
}

/// Which roles a staff page or form admits.
pub trait Rule: Send {
    fn allows(role: Role) -> bool;
}

/// Every role.
pub struct AnyRole;
/// Administrators only.
pub struct Administrators;
/// Roles that act on people (the helpdesk's acts).
pub struct ActsOnPeople;
/// Roles that read the audit log.
pub struct ReadsAudit;

impl Rule for AnyRole {
    fn allows(_: Role) -> bool {
        true
    }
}
impl Rule for Administrators {
    fn allows(role: Role) -> bool {
        role == Role::Administrator
    }
}
impl Rule for ActsOnPeople {
    fn allows(role: Role) -> bool {
        role.acts_on_people()
    }
}
impl Rule for ReadsAudit {
    fn allows(role: Role) -> bool {
        role.reads_audit()
    }
}

/// A signed-in staff member whose role `R` admits: someone not signed in is sent to the staff
/// sign-in, another role gets the refusal page (audited under their name).
pub struct StaffAs<R>(pub(crate) Staff, std::marker::PhantomData<R>);

impl<R: Rule> super::extract::Guard for StaffAs<R> {
    async fn admit(st: &AppState, session: &Session) -> Result<Self, PortalError> {
        match require(st, session, R::allows).await? {
            Ok(staff) => Ok(StaffAs(staff, std::marker::PhantomData)),
            Err(refusal) => Err(PortalError::Refused(Box::new(refusal))),
        }
    }
}

/// A refusal page with its support code, audited under the staff member's name (by the error
/// audit layer, which knows the path and the client).
pub(crate) fn refusal(
    staff: &Staff,
    status: axum::http::StatusCode,
    (title, message): (&str, &str),
    operation: &'static str,
    target: Option<String>,
    raw: &str,
) -> Response {
    let support = super::SupportCode::new();
    let page = super::error::error_page(&support, status, (title, message));
    let audit = super::error::ErrorAudit {
        support_code: support.clone(),
        operation,
        outcome: crate::domain::Outcome::Refused,
        raw: raw.into(),
        actor: Some(staff.actor()),
        target,
    };
    audit.attach(page)
}

fn forbidden(staff: &Staff) -> Response {
    let raw = format!("role {} may not open this page", staff.role.as_str());
    refusal(
        staff,
        axum::http::StatusCode::FORBIDDEN,
        ("staff.forbidden_title", "staff.forbidden"),
        "staff.forbidden",
        None,
        &raw,
    )
}

/// Starts a staff session: a new session id, nothing of a person's flows left in it.
async fn begin(session: &Session, row: &StaffRow, now: i64) -> Result<(), PortalError> {
    session.clear().await;
    session.cycle_id().await?;
    STAFF.set(session, &StaffSession { id: row.id.clone(), epoch: row.session_epoch, at: now, seen: now }).await?;
    Ok(())
}

/// The staff start page: where each role works.
pub async fn home(
    super::extract::Only { who: StaffAs(staff, _), .. }: super::extract::Only<StaffAs<AnyRole>>,
) -> Response {
    let to = match staff.role {
        Role::Administrator => paths::ADMIN_HEALTH,
        Role::Helpdesk => paths::HELPDESK,
        Role::Auditor => paths::AUDIT,
    };
    Redirect::to(to).into_response()
}
