//! Writeback health, for administrators: whether every configured directory has a live agent
//! that reaches it, and for each agent its last heartbeat, version, directories, last sync, key
//! age and next rollover. The same facts as JSON for monitoring (a staff session, or the
//! metrics bearer token).

use super::pages::HealthPage;
use super::{require, Administrators, StaffAs};
use crate::config::PolicyProfile;
use crate::i18n::Tr;
use crate::portal::extract::{Only, Posted};
use crate::portal::pages::utc;
use crate::portal::{paths, AppState, PortalError, SupportCode};
use crate::relay::hub::AgentHealth;
use crate::store::{self, staff::Role};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

/// The state of writeback, as the page and the JSON tell it.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Every configured directory has a live agent that reaches it.
    pub ok: bool,
    pub checked_at: i64,
    pub ping_interval_secs: u64,
    pub directories: Vec<DirectoryHealth>,
    pub agents: Vec<AgentView>,
    /// Full syncs held because they would have removed too many people.
    pub sync_holds: Vec<store::users::SyncHold>,
    /// Failed verifications in the last hour, everywhere; the level past which the portal is
    /// under attack; and the proof of work asked now.
    pub failures_last_hour: i64,
    pub attack_level: u32,
    pub under_attack: bool,
    pub pow_bits: u32,
    /// The instance that answered, and every instance seen on this database in the last day:
    /// alive, or since when it is not.
    pub instance: String,
    pub instances: Vec<store::presence::InstanceRow>,
    /// The portal's own password rules: how many terms the organisation banned, and how lookups
    /// of breached passwords go on this instance.
    pub banned_terms: usize,
    pub breached: BreachedHealth,
    /// `default` or `nist-800-63b-4`.
    pub profile: &'static str,
    /// Under SP 800-63B-4: where a directory's own policy (its default, as its agent reported
    /// it) contradicts the profile, and what to change. Information, not a failure.
    pub profile_notes: Vec<ProfileNote>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileNote {
    pub directory: String,
    pub detail: String,
    pub fix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreachedHealth {
    /// `off`, `online` or `offline`.
    pub mode: &'static str,
    /// Whether a password is accepted unchecked when the range API cannot be asked.
    pub fail_open: bool,
    /// Lookups through the range API since this instance started: answered, and failed.
    pub answered: u64,
    pub failed: u64,
    /// The last failure: when, and why.
    pub last_failure: Option<i64>,
    pub last_failure_why: Option<String>,
    /// New passwords are being refused: lookups fail (the last one did) and unchecked passwords
    /// are refused. Writeback is then not working for anyone, and `ok` is false.
    pub blocking: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectoryHealth {
    pub id: String,
    /// A live agent reaches it now.
    pub writeback: bool,
    /// Why not, in words, when it does not.
    pub problem: Option<String>,
    pub last_sync: Option<i64>,
    pub people: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub directories: Vec<String>,
    pub alive: bool,
    pub version: Option<String>,
    pub last_heartbeat: Option<i64>,
    /// When it was last seen going away, if it is not connected now.
    pub down_since: Option<i64>,
    pub key_version: Option<u32>,
    pub key_created_at: Option<i64>,
    pub key_age_days: Option<i64>,
    pub next_rollover: Option<i64>,
    /// Directories it reports it cannot reach, with the error.
    pub unreachable: Vec<(String, String)>,
    /// What it refused for safety lately, per directory (its reset budget ran out).
    pub alerts: Vec<(String, String)>,
}

pub(crate) async fn gather(st: &AppState) -> Result<Health, PortalError> {
    let now = st.clock.now();
    let enrolled = store::agents::enrolled(&st.db).await?;
    // Every directory the portal knows of: configured, served by an enrolled agent, or synced.
    let mut ids: Vec<String> = st.cfg.directories.keys().cloned().collect();
    ids.extend(enrolled.iter().flat_map(|e| e.directories.0.iter().cloned()));
    ids.extend(store::users::directories(&st.db).await?);
    ids.sort();
    ids.dedup();
    // The agents and whether each directory can be written to, as one moment saw them.
    let (heard, writable): (Vec<AgentHealth>, Vec<bool>) = st.hub.health_of(&ids);
    let agents: Vec<AgentView> = enrolled
        .iter()
        .map(|e| {
            let h = heard.iter().find(|h| h.agent_id == e.id);
            let status = h.and_then(|h| h.status.as_ref());
            let key_created_at = status.map(|s| s.key_created_at).filter(|t| *t > 0);
            AgentView {
                id: e.id.clone(),
                name: e.name.clone(),
                directories: e.directories.0.clone(),
                alive: h.is_some_and(|h| h.alive),
                version: status.map(|s| s.version.clone()),
                last_heartbeat: h.and_then(|h| h.last_heard),
                down_since: match h {
                    Some(h) if !h.alive => h.disconnected_at.or(h.last_heard),
                    _ => None,
                },
                key_version: status.map(|s| s.key_version),
                key_created_at,
                key_age_days: key_created_at.map(|t| (now - t) / 86_400),
                next_rollover: key_created_at.zip(status.and_then(|s| s.key_rotation_days)).map(|(t, d)| {
                    t.saturating_add(i64::try_from(d).unwrap_or(i64::MAX / 86_400).saturating_mul(86_400))
                }),
                unreachable: status
                    .map(|s| {
                        s.directories
                            .iter()
                            .filter(|d| !d.reachable)
                            .map(|d| (d.id.to_string(), d.error.clone().unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default(),
                alerts: status
                    .map(|s| {
                        s.directories
                            .iter()
                            .filter_map(|d| d.alert.as_ref().map(|a| (d.id.to_string(), a.clone())))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let mut directories = Vec::new();
    for (id, writeback) in ids.iter().zip(writable) {
        let serving: Vec<&AgentView> = agents.iter().filter(|a| a.directories.contains(id)).collect();
        let problem = if writeback {
            None
        } else if serving.is_empty() {
            Some("no agent is enrolled for this directory".to_string())
        } else if let Some((a, err)) = serving
            .iter()
            .filter(|a| a.alive)
            .find_map(|a| a.unreachable.iter().find(|(d, _)| d == id).map(|(_, e)| (a, e)))
        {
            Some(format!("agent {} cannot reach the directory: {err}", a.name))
        } else {
            let down: Vec<String> = serving
                .iter()
                .map(|a| match a.down_since {
                    Some(t) => format!("{} down since {}", a.name, utc(t)),
                    None => format!("{} not heard from since the portal started", a.name),
                })
                .collect();
            Some(format!("no live agent: {}", down.join("; ")))
        };
        let last_sync = agents
            .iter()
            .filter(|a| a.directories.contains(id))
            .filter_map(|a| heard.iter().find(|h| h.agent_id == a.id))
            .filter_map(|h| h.status.as_ref())
            .flat_map(|s| s.directories.iter().filter(|d| d.id.as_str() == id.as_str()).filter_map(|d| d.last_sync))
            .max();
        let people = store::users::count(&st.db, id).await?;
        directories.push(DirectoryHealth { id: id.clone(), writeback, problem, last_sync, people });
    }
    // Red only while lookups really fail: after a failure, the page asks once more itself.
    st.rules.probe_after_failure(now).await;
    let breached = breached_health(st);
    Ok(Health {
        ok: !directories.is_empty() && directories.iter().all(|d| d.writeback) && !breached.blocking,
        checked_at: now,
        ping_interval_secs: st.cfg.relay.ping_interval_secs,
        directories,
        agents,
        sync_holds: store::users::sync_holds(&st.db).await?,
        failures_last_hour: st.guard.failures_last_hour(),
        attack_level: st.cfg.anti_automation.global_failures_per_hour,
        under_attack: st.guard.under_attack(),
        pow_bits: st.guard.required_bits(),
        instance: st.hub.instance.clone(),
        instances: store::presence::instances(&st.db, 86_400, store::presence::STALE_SECS).await?,
        banned_terms: st.rules.current().custom_terms(),
        breached,
        profile: match st.rules.current().cfg.profile {
            PolicyProfile::Default => "default",
            PolicyProfile::Nist80063b4 => "nist-800-63b-4",
        },
        profile_notes: profile_notes(st, &ids).await?,
    })
}

/// Where the directories' own policies contradict SP 800-63B-4, when the portal applies it.
async fn profile_notes(st: &AppState, directories: &[String]) -> Result<Vec<ProfileNote>, PortalError> {
    use crate::domain::nist::{contradictions, Dialect};
    let mut notes = Vec::new();
    if st.rules.current().cfg.profile != PolicyProfile::Nist80063b4 {
        return Ok(notes);
    }
    for id in directories {
        let Some(policy) = crate::usecase::password::directory_policy(st, id).await? else {
            let detail = "its agent has not reported the directory's policy yet".to_string();
            notes.push(ProfileNote { directory: id.clone(), detail, fix: "run `passback agent doctor`".into() });
            continue;
        };
        for c in contradictions(&policy, Dialect::Either) {
            notes.push(ProfileNote { directory: id.clone(), detail: c.detail, fix: c.fix });
        }
    }
    Ok(notes)
}

fn breached_health(st: &AppState) -> BreachedHealth {
    use crate::config::BreachedMode;
    let rules = st.rules.current();
    let lookups = st.rules.lookups();
    let (last_failure, last_failure_why) = lookups.last_failure.map_or((None, None), |(at, why)| (Some(at), Some(why)));
    let blocking = !lookups.last_ok && !rules.cfg.breached_fail_open && rules.cfg.breached != BreachedMode::Off;
    BreachedHealth {
        mode: match rules.cfg.breached {
            BreachedMode::Off => "off",
            BreachedMode::Online => "online",
            BreachedMode::Offline => "offline",
        },
        fail_open: rules.cfg.breached_fail_open,
        answered: lookups.answered,
        failed: lookups.failed,
        last_failure,
        last_failure_why,
        blocking,
    }
}

pub async fn health_page(
    Only { who: StaffAs(staff, _), session, st }: Only<StaffAs<Administrators>>,
) -> Result<Response, PortalError> {
    let health = gather(&st).await?;
    let page = HealthPage {
        tr: Tr::current(),
        csrf: crate::portal::csrf::token(&session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        health,
    };
    Ok(page.into_response())
}

/// Who may read the health JSON: a monitor presenting the metrics bearer token, or an
/// administrator's session. Anyone else gets 401 with a `Bearer` challenge (not a redirect to a
/// sign-in page a monitor cannot use), or the refusal page for another role.
pub struct AdministratorOrMonitor;

impl axum::extract::FromRequestParts<AppState> for AdministratorOrMonitor {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &AppState) -> Result<Self, PortalError> {
        if crate::portal::metrics_token_ok(st, &parts.headers) {
            return Ok(AdministratorOrMonitor);
        }
        let session = crate::portal::extract::session_of(parts, st).await?;
        match require(st, &session, |r| r == Role::Administrator).await? {
            Ok(_) => Ok(AdministratorOrMonitor),
            Err(r) if r.status().is_redirection() => Err(PortalError::Refused(Box::new(
                (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response(),
            ))),
            Err(r) => Err(PortalError::Refused(Box::new(r))),
        }
    }
}

/// The same facts as JSON, for an administrator's session or a monitor presenting the metrics
/// bearer token. 503 when writeback is down somewhere, so a plain HTTP check can alert on it.
pub async fn health_json(State(st): State<AppState>, _: AdministratorOrMonitor) -> Result<Response, PortalError> {
    let health = gather(&st).await?;
    let status = if health.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, axum::Json(health)).into_response())
}

#[derive(Deserialize)]
pub struct RevokeForm {
    agent: String,
}

/// Revokes an agent from the health page: the same act as `passback agent revoke`, and this
/// instance drops its connections at once.
pub async fn revoke_agent(
    Posted { form: f, who: StaffAs(staff, _), st, .. }: Posted<RevokeForm, StaffAs<Administrators>>,
) -> Result<Response, PortalError> {
    let support = SupportCode::new();
    let now = st.clock.now();
    match crate::relay::revoke::revoke(&st.db, Some(&st.hub), &f.agent, &staff.actor(), &support.0, now).await {
        Ok(_) => Ok(Redirect::to(paths::ADMIN_HEALTH).into_response()),
        Err(e) => Ok(not_there(&staff, &format!("agent {}", f.agent), &format!("{e:#}"))),
    }
}

#[derive(Deserialize)]
pub struct ApplyHoldForm {
    directory: String,
}

/// Applies a held full sync's removals, as an administrator decided after reading the numbers.
pub async fn apply_sync_hold(
    Posted { form: f, who: StaffAs(staff, _), st, .. }: Posted<ApplyHoldForm, StaffAs<Administrators>>,
) -> Result<Response, PortalError> {
    let Some(removed) = store::users::apply_hold(&st.db, &f.directory).await? else {
        return Ok(not_there(&staff, &format!("directory {}", f.directory), "no held sync for this directory"));
    };
    let rec = store::audit::AuditRecord {
        at: st.clock.now(),
        actor: staff.actor(),
        operation: "sync.apply_hold".into(),
        directory: Some(f.directory.clone()),
        outcome_code: crate::domain::Outcome::Success.code().0.into(),
        raw: format!("{removed} people removed as having left the sync scope"),
        support_code: SupportCode::new().0,
        ..Default::default()
    };
    store::audit::record(&st.db, &rec).await?;
    Ok(Redirect::to(paths::ADMIN_HEALTH).into_response())
}

/// A form for something that is not (or no longer) there: audited, with a support code.
fn not_there(staff: &super::Staff, target: &str, raw: &str) -> Response {
    super::refusal(
        staff,
        StatusCode::NOT_FOUND,
        ("health.not_there_title", "health.not_there"),
        "health.refused",
        Some(target.to_string()),
        raw,
    )
}
