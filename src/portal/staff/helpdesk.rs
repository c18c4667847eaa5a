//! The helpdesk: find a person within one's scope, see their state and methods, and reset,
//! unlock, force a change or revoke a method. Every act goes through the relay like a
//! self-service one, ends in one outcome, is audited with the staff member as actor, and is
//! refused for people outside the scope (who are not even found), for protected accounts
//! (unless the role allows them) and for the staff member's own account.

use super::pages::{HelpdeskDonePage, HelpdeskPersonPage, HelpdeskSearchPage, PersonRow};
use super::{ActsOnPeople, Staff, StaffAs};
use crate::config::GateMethod;
use crate::crypto::temporary_password;
use crate::domain::{AccountState, NewPassword, Outcome};
use crate::envelope::Flags;
use crate::i18n::Tr;
use crate::mail::Notice;
use crate::portal::extract::{Only, Posted};
use crate::portal::pages::{OutcomeView, PolicyView};
use crate::portal::people::{self, Attempt, Target};
use crate::portal::session::{helpdesk_form, FormKey};
use crate::portal::Tag;
use crate::portal::{csrf, AppState, ClientAddr, PortalError, SupportCode};
use crate::store::{self, audit::AuditRecord, users::UserRow};
use crate::usecase::account::{self, Act, Ask};
use crate::usecase::password::{self as passwords, Requester};
use axum::extract::{ConnectInfo, Query};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

const PAGE_SIZE: i64 = 20;
#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: u32,
}

pub async fn search(
    Only { who: StaffAs(staff, _), session, st }: Only<StaffAs<ActsOnPeople>>,
    Query(sq): Query<SearchQuery>,
) -> PageResult {
    let text = sq.q.trim().chars().take(100).collect::<String>();
    let page = i64::from(sq.page.min(10_000));
    let mut people = Vec::new();
    let mut more = false;
    if !text.is_empty() {
        // Synced people and, for a scope of everyone, cloud-only accounts, in one list by name.
        let upto = (page + 1) * PAGE_SIZE + 1;
        let mut rows = store::users::search(&st.db, &staff.scope, &text, 0, upto).await?;
        if staff.scope.is_everyone() {
            rows.extend(store::cloud::search(&st.db, &text, upto).await?.iter().map(UserRow::cloud));
            rows.sort_by(|a, b| (&a.username, &a.directory).cmp(&(&b.username, &b.directory)));
        }
        let rows: Vec<UserRow> = rows.into_iter().skip((page * PAGE_SIZE) as usize).collect();
        more = rows.len() as i64 > PAGE_SIZE;
        people = rows.iter().take(PAGE_SIZE as usize).map(PersonRow::from).collect();
    }
    let view = HelpdeskSearchPage {
        tr: Tr::current(),
        csrf: csrf::token(&session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        q: text,
        page: page as u32,
        people,
        more,
    };
    Ok(view.into_response())
}

#[derive(Deserialize)]
pub struct PersonQuery {
    d: String,
    a: String,
}

/// The person, if they exist and are within the staff member's scope (anyone else is "not
/// found", exactly like someone who does not exist).
async fn in_scope(st: &AppState, staff: &Staff, directory: &str, anchor: &str) -> Result<Option<UserRow>, PortalError> {
    let row = if directory.is_empty() {
        store::cloud::get(&st.db, anchor).await?.as_ref().map(UserRow::cloud)
    } else {
        store::users::get(&st.db, directory, anchor).await?
    };
    Ok(row.filter(|p| staff.scope.covers(p)))
}

/// "Not found", for someone who does not exist and for someone out of scope alike; audited.
fn not_found(staff: &Staff, directory: &str, anchor: &str) -> Response {
    let (words, whom) = (("helpdesk.not_found_title", "helpdesk.not_found"), Some(format!("{directory}/{anchor}")));
    let raw = "no such person within this staff member's scope";
    super::refusal(staff, axum::http::StatusCode::NOT_FOUND, words, "helpdesk.not_found", whom, raw)
}

/// A form the pages never send (a made-up act or method); audited.
fn bad_form(staff: &Staff, row: &UserRow, what: &str) -> Response {
    let (words, whom) = (("error.expired_title", "error.expired"), Some(row.username.clone()));
    super::refusal(staff, axum::http::StatusCode::BAD_REQUEST, words, "helpdesk.bad_form", whom, what)
}

pub async fn person(
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    Only { who: StaffAs(staff, _), session, st }: Only<StaffAs<ActsOnPeople>>,
    Query(pq): Query<PersonQuery>,
) -> PageResult {
    let Some(row) = in_scope(&st, &staff, &pq.d, &pq.a).await? else { return Ok(not_found(&staff, &pq.d, &pq.a)) };
    // Who looked at whom (the page shows addresses, groups and the account's state) is on record.
    let rec = AuditRecord {
        at: st.clock.now(),
        actor: staff.actor(),
        operation: "staff.view_person".into(),
        directory: Some(row.directory.clone()),
        anchor: Some(row.anchor.clone()),
        target: Some(row.username.clone()),
        outcome_code: Outcome::Success.code().0.into(),
        raw: String::new(),
        support_code: SupportCode::new().0,
        client: Some(client.ip().to_string()),
    };
    store::audit::record(&st.db, &rec).await?;
    person_page(&st, &session, &staff, &row, None).await
}

async fn person_page(
    st: &AppState,
    session: &Session,
    staff: &Staff,
    row: &UserRow,
    outcome: Option<OutcomeView>,
) -> PageResult {
    let target = people::target_of(st, row).await?;
    let p = target.person();
    let form_key = FormKey(&helpdesk_form(&row.directory, &row.anchor)).renew(session).await?;
    let totp = store::security::totp(&st.db, p).await?.is_some_and(|t| t.confirmed);
    let questions = store::security::answers(&st.db, p).await?.len();
    let recovery_codes = store::security::recovery_codes_left(&st.db, p).await?;
    let alternate = store::security::alternate_email(&st.db, p).await?;
    let owner =
        store::passkeys::Owner { kind: store::passkeys::Kind::Person, directory: p.directory, anchor: p.anchor };
    let passkeys = store::passkeys::count(&st.db, owner).await?;
    let audit = store::audit::for_person(&st.db, &row.directory, &row.anchor, 10).await?;
    let live = live_state(st, staff, &target).await;
    // "Also unlock" is ticked when the directory has the account locked now (or, unread, when
    // the last sync said so).
    let unlock_checked = live.as_ref().map_or(row.locked, |s| s.locked);
    // The person's own rules for a typed password (the live read above is reused).
    let policy = PolicyView::of(st, Some(&target)).await;
    let view = HelpdeskPersonPage {
        unlock_checked,
        policy,
        tr: Tr::current(),
        csrf: csrf::token(session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        person: PersonRow::from(row),
        kind: target.kind.as_str(),
        groups: row.groups(),
        synced_at: crate::portal::pages::utc(row.synced_at),
        live,
        form_key,
        authenticator: totp,
        questions,
        recovery_codes,
        passkeys,
        alternate_email: alternate.is_some(),
        may_reset: !row.protected || staff.row.may_reset_protected,
        itself: is_self(staff, &target),
        audit: audit.into_iter().map(Into::into).collect(),
        outcome,
        agent_down: crate::portal::people::directories_down(st, Some(&target)).await?,
    };
    Ok(view.into_response())
}

/// The account as the directory has it now, read for `staff` (never from the cache: the
/// helpdesk acts on what it sees).
async fn live_state(st: &AppState, staff: &Staff, target: &Target) -> Result<AccountState, String> {
    passwords::live_state(st, &staff.actor(), target).await
}

/// Whether the person is the staff member themself (same user name or address): staff do not
/// act on their own account through the helpdesk.
fn is_self(staff: &Staff, target: &Target) -> bool {
    let same_mail = match (&staff.row.email, &target.email) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    staff.row.username.eq_ignore_ascii_case(&target.username) || same_mail
}

#[derive(Deserialize)]
pub struct ActForm {
    d: String,
    a: String,
    form_key: String,
    /// `reset`, `unlock`, `require_change` or `revoke`.
    act: String,
    /// For a reset: `generate` (the default) or `type`.
    #[serde(default)]
    mode: String,
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    confirm: Option<SecretString>,
    /// Checkboxes: present when ticked.
    #[serde(default)]
    must_change: Option<String>,
    #[serde(default)]
    unlock: Option<String>,
    /// For a revoke: `authenticator`, `questions` or `email`.
    #[serde(default)]
    method: String,
}

/// What an act did (audited already), for its page.
struct Done {
    operation: &'static str,
    outcome: Outcome,
    temporary: Option<SecretString>,
    /// The support code its audit row has (a form sent again: its first sending's).
    support: SupportCode,
}

pub async fn act(
    Posted { form: f, session, who: StaffAs(staff, _), st, client, .. }: Posted<ActForm, StaffAs<ActsOnPeople>>,
) -> PageResult {
    let Some(row) = in_scope(&st, &staff, &f.d, &f.a).await? else { return Ok(not_found(&staff, &f.d, &f.a)) };
    let target = people::target_of(&st, &row).await?;
    let tr = Tr::current();
    let support = SupportCode::new();
    let attempt =
        people::Attempt { st: &st, client, audit_name: &row.username, target: Some(&target), support: &support };
    let done = match decide(&st, &session, &staff, &row, &f, &attempt).await? {
        Ok(done) => done,
        Err(page) => return Ok(page),
    };
    let title = match done.operation {
        "helpdesk.reset" => "helpdesk.reset_title",
        "helpdesk.unlock" => "helpdesk.unlock_title",
        "helpdesk.require_change" => "helpdesk.require_change_title",
        _ => "helpdesk.revoke_title",
    };
    // What the directory has now: a follow-up of a reset (unlock, must change) can fail while
    // the password was set, and the helpdesk must see that, not what it asked for.
    let show_live = done.outcome.password_set() && done.operation != "helpdesk.revoke";
    let live = if show_live { live_state(&st, &staff, &target).await } else { Err(String::new()) };
    let must_change =
        f.must_change.is_some() && done.operation == "helpdesk.reset" && live.as_ref().is_ok_and(|l| l.must_change);
    // Words for the helpdesk, about the person (the person's own words are for the person).
    let mut outcome = OutcomeView::new(&done.outcome, &done.support);
    if done.outcome == crate::domain::Outcome::Success && target.kind != crate::domain::UserKind::CloudOnly {
        let said = match done.operation {
            "helpdesk.reset" => Some("helpdesk.done_reset"),
            "helpdesk.unlock" => Some("helpdesk.done_unlock"),
            "helpdesk.require_change" => Some("helpdesk.done_require_change"),
            _ => None,
        };
        if let Some(key) = said {
            outcome.message = tr.f(key, "name", &row.display_name);
        }
    }
    let view = HelpdeskDonePage {
        tr,
        csrf: csrf::token(&session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        title: tr.t(title).into(),
        person: PersonRow::from(&row),
        success: done.outcome.is_success(),
        outcome,
        temporary: done
            .temporary
            .as_ref()
            .filter(|_| done.outcome.password_set())
            .map(|t| t.expose_secret().to_string()),
        must_change,
        show_live,
        live,
    };
    Ok(support.tag(view))
}

/// Runs the act the form asks for (through the use case, which audits and notifies), or refuses
/// it. `Err` is a page to show instead (the form had a mistake to correct; nothing was done).
async fn decide(
    st: &AppState,
    session: &Session,
    staff: &Staff,
    row: &UserRow,
    f: &ActForm,
    attempt: &Attempt<'_>,
) -> Result<Result<Done, Response>, PortalError> {
    let Some(target) = attempt.target else { return Err(anyhow::anyhow!("an act without its person").into()) };
    let actor = &staff.actor();
    let operation = match f.act.as_str() {
        "reset" => "helpdesk.reset",
        "unlock" => "helpdesk.unlock",
        "require_change" => "helpdesk.require_change",
        "revoke" => "helpdesk.revoke",
        _ => return Ok(Err(bad_form(staff, row, "unknown act"))),
    };
    let refusal = if is_self(staff, target) {
        Some("staff may not act on their own account through the helpdesk")
    } else if row.protected && !staff.row.may_reset_protected {
        Some("a protected account, and this role may not act on protected accounts")
    } else {
        None
    };
    if let Some(raw) = refusal {
        attempt.audit_by(actor, operation, &Outcome::Protected, raw).await?;
        return Ok(Ok(Done {
            operation,
            outcome: Outcome::Protected,
            temporary: None,
            support: attempt.support.clone(),
        }));
    }
    // The form is used once: a double submit (or the back button) never acts twice.
    let form = FormKey(&helpdesk_form(&row.directory, &row.anchor));
    let Some((msg_id, first)) = form.take_or_again(session, &f.form_key).await? else {
        return Ok(Err(already_sent(st, session, staff, row).await?));
    };
    let flags = Flags {
        must_change: f.must_change.is_some(),
        unlock: f.unlock.is_some(),
        // Only reached for a protected account when the role allows it (checked above).
        allow_protected: row.protected,
        keep_history: false,
    };
    let (password, temporary) = match f.act.as_str() {
        "revoke" => {
            let method = match f.method.as_str() {
                "authenticator" => GateMethod::Authenticator,
                "questions" => GateMethod::Questions,
                "recovery_code" => GateMethod::RecoveryCode,
                "passkey" => GateMethod::Passkey,
                "email" => GateMethod::Email,
                _ => return Ok(Err(bad_form(staff, row, "unknown method to revoke"))),
            };
            let before = people::addresses_on_record(st, target).await?;
            let removed = account::remove_method(st, target, method).await?;
            let raw = format!("revoked: {removed}");
            account::methods_changed(attempt, actor, target, Notice::MethodRemoved, &raw, before).await?;
            return Ok(Ok(Done {
                operation,
                outcome: Outcome::Success,
                temporary: None,
                support: attempt.support.clone(),
            }));
        }
        "reset" if f.mode == "type" => {
            let (Some(p), Some(c)) = (f.password.clone(), f.confirm.as_ref()) else {
                return Ok(Err(bad_form(staff, row, "a typed password without its confirmation")));
            };
            match NewPassword::parse(p, c) {
                Ok(p) => (Some(p), None),
                Err(e) => {
                    let shown = OutcomeView {
                        message: e.text(Tr::current()),
                        ..OutcomeView::new(&Outcome::Refused, attempt.support)
                    };
                    return Ok(Err(person_page(st, session, staff, row, Some(shown)).await?));
                }
            }
        }
        "reset" => {
            let t = temporary_password();
            (Some(NewPassword::generated(t.clone())), Some(t))
        }
        _ => (None, None),
    };
    let ask = match (&password, f.act.as_str()) {
        (Some(new), _) => Ask::Password { new, current: None },
        (None, "unlock") => Ask::Unlock,
        (None, _) => Ask::RequireChange,
    };
    let act = Act { target, msg_id: &msg_id, first, by: Requester { actor, flags }, ask, operation };
    let Some(done) = account::once(attempt, act).await? else {
        return Ok(Err(already_sent(st, session, staff, row).await?));
    };
    // A form sent again shows what its first sending came to, but never the password it made
    // (that was shown once, to whoever got the first answer).
    let temporary = temporary.filter(|_| !done.earlier);
    Ok(Ok(Done { operation, outcome: done.result.outcome, temporary, support: done.support }))
}

/// The person page again, saying the form was sent already (nothing more was done).
async fn already_sent(st: &AppState, session: &Session, staff: &Staff, row: &UserRow) -> PageResult {
    let support = SupportCode::new();
    let shown = OutcomeView {
        message: Tr::current().t("password.already_sent").into(),
        ..OutcomeView::new(&Outcome::Refused, &support)
    };
    let page = person_page(st, session, staff, row, Some(shown)).await?;
    let audit = crate::portal::error::ErrorAudit {
        support_code: support,
        operation: "helpdesk.already_sent",
        outcome: Outcome::Refused,
        raw: "a form already sent, or not from this session: nothing done".into(),
        actor: Some(staff.actor()),
        target: Some(row.username.clone()),
    };
    Ok(audit.attach(page))
}
