//! The staff pages' templates: sign-in and enrolment, the helpdesk, the audit log, health and
//! the staff list. Askama escapes every value; nothing here is marked safe.

use crate::i18n::Tr;
use crate::portal::pages::{utc, OutcomeView, PolicyView};
use crate::store::staff::Role;
use askama::Template;
use askama_web::WebTemplate;

#[derive(Template, WebTemplate)]
#[template(path = "staff_signin.html")]
pub struct StaffSignInPage {
    pub tr: Tr,
    pub csrf: String,
    pub username: String,
    pub outcome: Option<OutcomeView>,
    /// A passkey may be used in place of the code.
    pub passkey: bool,
}

/// A person in a list or at the top of their page.
#[derive(Debug, Clone)]
pub struct PersonRow {
    pub directory: String,
    pub anchor: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub dn: String,
    pub enabled: bool,
    pub locked: bool,
    pub protected: bool,
    /// `d=…&a=…` for links to the person's page.
    pub query: String,
}

impl From<&crate::store::users::UserRow> for PersonRow {
    fn from(r: &crate::store::users::UserRow) -> Self {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("d", &r.directory)
            .append_pair("a", &r.anchor)
            .finish();
        Self {
            directory: r.directory.clone(),
            anchor: r.anchor.clone(),
            username: r.username.clone(),
            display_name: r.display_name.clone(),
            email: r.email.clone().unwrap_or_default(),
            dn: r.dn.clone(),
            enabled: r.enabled,
            locked: r.locked,
            protected: r.protected,
            query,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "helpdesk_search.html")]
pub struct HelpdeskSearchPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub q: String,
    pub page: u32,
    pub people: Vec<PersonRow>,
    pub more: bool,
}

/// An audit row as pages show it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub operation: String,
    pub target: String,
    pub directory: String,
    pub outcome: String,
    pub support_code: String,
    pub client: String,
    pub raw: String,
}

impl From<crate::store::audit::AuditRecord> for AuditRow {
    fn from(r: crate::store::audit::AuditRecord) -> Self {
        Self {
            at: utc(r.at),
            actor: r.actor,
            operation: r.operation,
            target: r.target.unwrap_or_default(),
            directory: r.directory.unwrap_or_default(),
            outcome: r.outcome_code,
            support_code: r.support_code,
            client: r.client.unwrap_or_default(),
            raw: r.raw,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "helpdesk_person.html")]
pub struct HelpdeskPersonPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub person: PersonRow,
    pub kind: &'static str,
    pub groups: Vec<String>,
    pub synced_at: String,
    /// The account as the directory has it now, or why that could not be read.
    pub live: Result<crate::domain::AccountState, String>,
    /// "Also unlock" starts ticked: the account is locked now.
    pub unlock_checked: bool,
    /// The rules a typed password must meet: the person's own.
    pub policy: Option<PolicyView>,
    pub form_key: String,
    pub authenticator: bool,
    pub questions: usize,
    /// Recovery codes left.
    pub recovery_codes: i64,
    pub passkeys: i64,
    pub alternate_email: bool,
    /// Protected accounts only for roles that may act on them.
    pub may_reset: bool,
    /// The staff member's own account.
    pub itself: bool,
    pub audit: Vec<AuditRow>,
    pub outcome: Option<OutcomeView>,
    /// No agent serves the person's directory now: the acts that write to it are not offered.
    pub agent_down: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "helpdesk_done.html")]
pub struct HelpdeskDonePage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub title: String,
    pub person: PersonRow,
    pub success: bool,
    pub outcome: OutcomeView,
    /// The generated temporary password, shown this once.
    pub temporary: Option<String>,
    /// "Must change" was asked for and the directory confirms it.
    pub must_change: bool,
    /// The account as the directory has it after the act (so a follow-up that failed shows).
    pub show_live: bool,
    pub live: Result<crate::domain::AccountState, String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub query: super::AuditQuery,
    pub query_string: String,
    pub rows: Vec<AuditRow>,
    pub page: u32,
    pub more: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "health.html")]
pub struct HealthPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub health: super::Health,
}

/// A staff account in the list.
#[derive(Debug, Clone)]
pub struct StaffView {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub role: String,
    pub scope: String,
    pub may_reset_protected: bool,
    pub enabled: bool,
    /// The scope as the edit form shows it.
    pub directories: String,
    pub base_dns: String,
    pub groups: String,
    pub everyone: bool,
}

impl From<&crate::store::staff::StaffRow> for StaffView {
    fn from(r: &crate::store::staff::StaffRow) -> Self {
        let own: crate::store::users::Scope = serde_json::from_str(&r.scope_json).unwrap_or_default();
        let scope = match r.scope() {
            Some(s) if s.is_everyone() => "everyone".to_string(),
            Some(s) if s.is_nobody() => "nobody (no scope chosen)".to_string(),
            Some(s) => {
                let mut parts = Vec::new();
                if !s.directories.is_empty() {
                    parts.push(format!("directories: {}", s.directories.join(", ")));
                }
                if !s.base_dns.is_empty() {
                    parts.push(format!("below: {}", s.base_dns.join(" | ")));
                }
                if !s.groups.is_empty() {
                    parts.push(format!("groups: {}", s.groups.join(" | ")));
                }
                parts.join("; ")
            }
            None => "nobody (unreadable scope)".to_string(),
        };
        Self {
            id: r.id.clone(),
            username: r.username.clone(),
            display_name: r.display_name.clone(),
            email: r.email.clone().unwrap_or_default(),
            role: r.role.clone(),
            scope,
            may_reset_protected: r.may_reset_protected,
            enabled: r.enabled(),
            directories: own.directories.join(", "),
            base_dns: own.base_dns.join("\n"),
            groups: own.groups.join("\n"),
            everyone: own.everyone,
        }
    }
}

/// A staff member's own passkeys, and the form that adds one.
#[derive(Template, WebTemplate)]
#[template(path = "staff_passkeys.html")]
pub struct StaffPasskeysPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub passkeys: Vec<crate::portal::pages::PasskeyView>,
    /// The options for the browser to make one, as JSON (`None`: passkeys cannot be used here).
    pub options: Option<String>,
    pub notice: Option<String>,
    pub error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "staff_list.html")]
pub struct StaffListPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub members: Vec<StaffView>,
    pub error: Option<String>,
    /// The signed-in administrator's own row: no acts are offered on it (another administrator
    /// must act, so nobody locks the portal out alone).
    pub own_id: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "staff_created.html")]
pub struct StaffCreatedPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub username: String,
    pub password: String,
    pub seed_text: String,
    pub qr: String,
    /// A reset of an existing account rather than a new one.
    pub reset: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "staff_enrol.html")]
pub struct StaffEnrolPage {
    pub tr: Tr,
    pub csrf: String,
    pub username: String,
    pub seed_text: String,
    pub qr: String,
    pub policy: Option<PolicyView>,
    pub error: Option<String>,
}
