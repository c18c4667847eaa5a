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
use super::people::{Attempt, Target};
use super::{AppState, PortalError, SupportCode};
use crate::domain::Outcome;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

const FLOW: &str = "reset";

/// What the session knows of this person's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flow {
    /// `None` when the name matched nobody: the flow goes on, identically, and cannot succeed.
    target: Option<Target>,
    /// What the audit calls the person (see [`super::people::Found::audit_name`]).
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

fn outcome_page(
    st: &AppState,
    title: &str,
    outcome: &Outcome,
    support: &SupportCode,
    start_again: bool,
) -> OutcomePage {
    let tr = crate::i18n::Tr::current();
    OutcomePage {
        tr,
        title: tr.t(title).into(),
        success: outcome.is_success(),
        outcome: OutcomeView::new(outcome, support),
        helpdesk: st.helpdesk(tr),
        start_again,
        return_to: None,
    }
}
