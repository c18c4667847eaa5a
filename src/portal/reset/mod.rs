//! The "can't access your account" flow: identify → (agent alive?) → e-mailed code → new password
//! → sealed writeback → the directory's answer, shown at once.
//!
//! The session says which gates have passed; every step checks it, so no step can be skipped by
//! going straight to a later URL. The first step answers alike whether or not the account exists.

mod identify;
mod password;
mod verify;

pub use identify::{home, identify, identify_form};
pub use password::{password_form, set_password};
pub use verify::{verify, verify_form};

use super::pages::{OutcomePage, OutcomeView};
use super::{AppState, PortalError, SupportCode};
use crate::domain::{Outcome, UserKind};
use crate::store::{self, audit::AuditRecord};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tower_sessions::Session;

const FLOW: &str = "reset";

/// The person the flow is about, as synced from their directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Target {
    /// Empty for a cloud-only account (which belongs to no directory).
    directory: String,
    /// The directory's anchor, or the cloud-only account's id.
    anchor: String,
    username: String,
    email: Option<String>,
    kind: UserKind,
}

/// What the session knows of this person's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flow {
    /// `None` when the name matched nobody: the flow goes on, identically, and cannot succeed.
    target: Option<Target>,
    /// What the audit calls the person: their user name, or a keyed hash of unmatched input
    /// (which could be anything, even a password typed into the wrong field).
    audit_name: String,
    code_id: String,
    failed_attempts: u32,
    verified_at: Option<i64>,
    /// The one-use key of the new-password form now shown; also the relay message id.
    form_key: Option<String>,
}

async fn load_flow(session: &Session) -> Result<Option<Flow>, PortalError> {
    Ok(session.get::<Flow>(FLOW).await?)
}

/// One step of one person's attempt, for its audit row and log line.
struct Attempt<'a> {
    st: &'a AppState,
    client: SocketAddr,
    audit_name: &'a str,
    target: Option<&'a Target>,
    support: &'a SupportCode,
}

impl Attempt<'_> {
    async fn audit(&self, operation: &str, outcome: &Outcome, raw: &str) -> Result<(), PortalError> {
        let rec = AuditRecord {
            at: self.st.clock.now(),
            actor: "self-service".into(),
            operation: operation.into(),
            directory: self.target.map(|t| t.directory.clone()),
            anchor: self.target.map(|t| t.anchor.clone()),
            target: Some(self.audit_name.to_string()),
            outcome_code: outcome.code().0.into(),
            raw: raw.into(),
            support_code: self.support.0.clone(),
            client: Some(self.client.ip().to_string()),
        };
        tracing::info!(
            operation = %rec.operation,
            outcome = %rec.outcome_code,
            support_code = %rec.support_code,
            directory = rec.directory.as_deref().unwrap_or(""),
            anchor = rec.anchor.as_deref().unwrap_or(""),
            raw = %rec.raw,
            "audit"
        );
        store::audit::record(&self.st.db, &rec).await?;
        Ok(())
    }
}

fn outcome_page(
    st: &AppState,
    title: &str,
    outcome: &Outcome,
    support: &SupportCode,
    start_again: bool,
) -> OutcomePage {
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
}
