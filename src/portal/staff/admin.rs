//! Staff accounts, for administrators: the list, adding one (its first password and
//! authenticator are shown once), and resetting one's sign-in (which ends its sessions and tells
//! every administrator by e-mail). `passback staff add` makes accounts the same way.

use super::pages::{StaffCreatedPage, StaffListPage, StaffView};
use super::{Administrators, StaffAs};
use crate::i18n::Tr;
use crate::portal::extract::{Only, Posted};
use crate::portal::gates::totp;
use crate::portal::{csrf, AppState, PortalError, SupportCode};
use crate::store::{self, staff::Role, users::Scope};
use crate::usecase::{self, staff::Credentials, staff::StaffSpec};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

async fn list_page(st: &AppState, session: &Session, staff: &super::Staff, error: Option<String>) -> PageResult {
    let rows = store::staff::all(&st.db).await?;
    let view = StaffListPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        members: rows.iter().map(StaffView::from).collect(),
        error,
        own_id: staff.row.id.clone(),
    };
    Ok(view.into_response())
}

pub async fn staff_list(Only { who: StaffAs(staff, _), session, st }: Only<StaffAs<Administrators>>) -> PageResult {
    list_page(&st, &session, &staff, None).await
}

#[derive(Deserialize)]
pub struct AddForm {
    username: String,
    display_name: String,
    #[serde(default)]
    email: String,
    #[serde(flatten)]
    grant: GrantFields,
}

/// What a staff account may do, as the add and edit forms send it.
#[derive(Deserialize)]
pub struct GrantFields {
    #[serde(default)]
    role: String,
    /// Comma- or line-separated lists; empty means no narrowing.
    #[serde(default)]
    directories: String,
    #[serde(default)]
    base_dns: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    may_reset_protected: Option<String>,
    /// The checkbox "everyone" (only when no list narrows the scope).
    #[serde(default)]
    everyone: Option<String>,
}

impl GrantFields {
    /// The role, scope and protected-account permission, or what to say is wrong with them.
    fn read(&self, st: &AppState, tr: Tr) -> Result<(Role, Scope, bool), String> {
        let role = Role::parse(&self.role).ok_or_else(|| tr.t("staff.role_missing").to_string())?;
        let directories: Vec<String> =
            self.directories.split([',', '\n']).map(str::trim).filter(|d| !d.is_empty()).map(str::to_string).collect();
        if let Some(unknown) = directories.iter().find(|d| !st.cfg.directories.contains_key(*d)) {
            return Err(tr.f("staff.unknown_directory", "directory", unknown));
        }
        let scope = Scope {
            directories,
            base_dns: lines(&self.base_dns),
            groups: lines(&self.groups),
            everyone: self.everyone.is_some(),
        };
        if let Some(problem) = scope_problem(role, &scope) {
            return Err(tr.t(problem).into());
        }
        Ok((role, scope, self.may_reset_protected.is_some()))
    }
}

/// What is wrong with a helpdesk scope: it must be narrowed, or be "everyone", not neither and
/// not both (other roles have no scope).
fn scope_problem(role: Role, scope: &Scope) -> Option<&'static str> {
    let narrowed = !scope.is_nobody() && !scope.is_everyone();
    match role {
        Role::Helpdesk if scope.is_nobody() => Some("staff.scope_missing"),
        Role::Helpdesk if narrowed && scope.everyone => Some("staff.scope_both"),
        _ => None,
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

pub async fn add_staff(
    Posted { form: f, session, who: StaffAs(admin, _), st, client, .. }: Posted<AddForm, StaffAs<Administrators>>,
) -> PageResult {
    let tr = Tr::current();
    let (role, scope, may_reset_protected) = match f.grant.read(&st, tr) {
        Ok(g) => g,
        Err(e) => return list_page(&st, &session, &admin, Some(e)).await,
    };
    let spec = StaffSpec {
        username: f.username.trim().to_string(),
        display_name: Some(f.display_name.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| f.username.trim().to_string()),
        email: Some(f.email.trim().to_string()).filter(|e| !e.is_empty()),
        role,
        scope,
        may_reset_protected,
    };
    let by = by_staff(&admin, client);
    if let Some(why) = usecase::staff::refusal(&spec) {
        // The reason goes to the log, not the page.
        tracing::warn!(why, "adding a staff account refused");
        return list_page(&st, &session, &admin, Some(tr.t("staff.invalid").into())).await;
    }
    let Some(creds) = usecase::staff::add(&ctx(&st), &by, &spec).await? else {
        return list_page(&st, &session, &admin, Some(tr.t("staff.username_taken").into())).await;
    };
    shown_once(&st, &session, &admin, &spec.username, &creds, false).await
}

/// The page that shows a new sign-in once.
async fn shown_once(
    st: &AppState,
    session: &Session,
    admin: &super::Staff,
    username: &str,
    creds: &Credentials,
    reset: bool,
) -> PageResult {
    let issuer = format!("{} staff", Tr::current().t("common.brand"));
    let view = StaffCreatedPage {
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        staff: admin.row.display_name.clone(),
        role: admin.role,
        username: username.to_string(),
        password: creds.password.expose_secret().to_string(),
        seed_text: creds.seed_text().to_string(),
        qr: totp::qr_data_url(&creds.seed, &issuer, username)?.to_string(),
        reset,
    };
    let _ = st;
    Ok(view.into_response())
}

/// What the staff use cases need of the portal.
fn ctx(st: &AppState) -> usecase::Ctx<'_> {
    usecase::Ctx { db: &st.db, secrets: &st.secrets, mailer: &st.mailer, now: st.clock.now(), mail_in_background: true }
}

/// A signed-in staff member, as the use cases name who acts.
fn by_staff(staff: &super::Staff, client: std::net::SocketAddr) -> usecase::By {
    usecase::By::Staff { username: staff.row.username.clone(), client: Some(client.ip()) }
}

/// The signed-in administrator and the other staff account `id` they act on; or the refusal: the
/// staff list again, saying why (no such account, or their own: another administrator must act
/// on it, and is then accountable for it), audited.
async fn other_member(
    st: &AppState,
    session: &Session,
    admin: super::Staff,
    id: &str,
) -> Result<(super::Staff, store::staff::StaffRow), PortalError> {
    let tr = Tr::current();
    let problem = match store::staff::get(&st.db, id).await? {
        None => "staff.not_found",
        Some(member) if member.id == admin.row.id => "staff.not_yourself",
        Some(member) => return Ok((admin, member)),
    };
    let page = list_page(st, session, &admin, Some(tr.t(problem).into())).await?;
    Err(PortalError::Refused(Box::new(refused(&admin, id, problem).attach(page))))
}

/// The audit row of an administrator's act that was refused.
fn refused(admin: &super::Staff, target: &str, why: &str) -> crate::portal::error::ErrorAudit {
    crate::portal::error::ErrorAudit {
        support_code: SupportCode::new(),
        operation: "staff.refused",
        outcome: crate::domain::Outcome::Refused,
        raw: why.into(),
        actor: Some(admin.actor()),
        target: Some(format!("staff id {target}")),
    }
}

#[derive(Deserialize)]
pub struct ResetForm {
    id: String,
}

/// A new password and authenticator for a staff member who lost theirs. Their sessions end, and
/// every administrator is told by e-mail.
pub async fn reset_staff(
    Posted { form: f, session, who: StaffAs(admin, _), st, client, .. }: Posted<ResetForm, StaffAs<Administrators>>,
) -> PageResult {
    let (admin, member) = other_member(&st, &session, admin, &f.id).await?;
    let creds = usecase::staff::reset_signin(&ctx(&st), &by_staff(&admin, client), &member).await?;
    shown_once(&st, &session, &admin, &member.username, &creds, true).await
}

#[derive(Deserialize)]
pub struct UpdateForm {
    id: String,
    /// `disable`, `enable`, `end_sessions` or `role`.
    action: String,
    #[serde(flatten)]
    grant: GrantFields,
}

/// Disables or enables an account, ends its sessions, or changes its role and scope (which ends
/// its sessions too, so the next sign-in starts with what it may do now). Administrators cannot
/// do this to themselves: another administrator must, so nobody locks the portal out alone.
pub async fn update_staff(
    Posted { form: f, session, who: StaffAs(admin, _), st, client, .. }: Posted<UpdateForm, StaffAs<Administrators>>,
) -> PageResult {
    let (admin, member) = other_member(&st, &session, admin, &f.id).await?;
    let tr = Tr::current();
    let now = st.clock.now();
    let by = by_staff(&admin, client);
    let (operation, raw) = match f.action.as_str() {
        "disable" | "enable" => {
            usecase::staff::set_enabled(&ctx(&st), &by, &member, f.action == "enable").await?;
            return list_page(&st, &session, &admin, None).await;
        }
        "end_sessions" => {
            store::staff::end_sessions(&st.db, &member.id).await?;
            ("staff.end_sessions", "every session ended".to_string())
        }
        "role" => {
            let (role, scope, protected) = match f.grant.read(&st, tr) {
                Ok(g) => g,
                Err(e) => return list_page(&st, &session, &admin, Some(e)).await,
            };
            store::staff::set_role(&st.db, &member.id, role, &scope, protected, now).await?;
            (
                "staff.set_role",
                format!(
                    "role {}, scope: {scope}, may reset protected accounts: {protected}; sessions ended",
                    role.as_str()
                ),
            )
        }
        _ => {
            let page = list_page(&st, &session, &admin, Some(tr.t("staff.invalid").into())).await?;
            return Ok(refused(&admin, &member.id, "unknown action").attach(page));
        }
    };
    ctx(&st).audit(&by, operation, &member.username, &raw).await?;
    list_page(&st, &session, &admin, None).await
}
