//! The new-password forms' live check, asked by the page's script after a pause in typing:
//! zxcvbn's strength and advice, and whether the portal's banned-password rule refuses the
//! password. It only advises early: the form is checked again, fully, when it is sent. Breached
//! passwords are looked up only then, so that one lookup is made per password chosen, not one
//! per pause (each would send a hash prefix to the range API or read the offline file).

use super::extract::Posted;
use super::{AppState, PortalError};
use crate::domain::strength;
use crate::i18n::Tr;
use crate::usecase::policy::{self, Owner};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

/// Checks a client address may ask for a minute: a pause every second of typing, and more.
const PER_MINUTE: u32 = 60;

#[derive(Deserialize)]
pub struct CheckForm {
    password: SecretString,
    /// The form states a composition rule: advice that symbols are not needed is left out.
    #[serde(default)]
    complexity: String,
}

#[derive(Debug, Serialize)]
struct Answer {
    /// The banned-password rule (or the organisation's name) refuses it.
    banned: bool,
    /// zxcvbn's score, 0 to 4, and its word and advice in the person's language.
    score: u8,
    strength: String,
    advice: Vec<String>,
}

/// The person this session has proved to be (past the reset gates, signed in, or told at sign-in
/// to change their password): their names count against a password; nobody else's ever do.
async fn proved(st: &AppState, session: &Session) -> Result<Option<crate::usecase::Target>, PortalError> {
    if let Some(t) = super::reset::verified_target(st, session).await? {
        return Ok(Some(t));
    }
    if let Some(t) = super::account::signed_in_target(st, session).await? {
        return Ok(Some(t));
    }
    super::account::must_change_target(session).await
}

pub async fn check(Posted { form, session, st, client, .. }: Posted<CheckForm>) -> Result<Response, PortalError> {
    let now = st.clock.now();
    let bucket = format!("password-check:{}", super::guard::address_key_text(client.ip()));
    if !crate::store::security::take_allowance(&st.db, &bucket, 60, PER_MINUTE, now).await? {
        return Ok(StatusCode::TOO_MANY_REQUESTS.into_response());
    }
    // No password longer than any form accepts is worth the work.
    if form.password.expose_secret().chars().count() > crate::domain::MAX_PASSWORD_CHARS {
        return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    let owner = match proved(&st, &session).await? {
        Some(t) => policy::owner_of(&st, &t).await?,
        None => Owner::default(),
    };
    // zxcvbn also knows what the organisation bans: its name and its own terms.
    let rules = st.rules.current();
    let mut known = owner.names.clone();
    known.extend(rules.cfg.organisation_name.iter().cloned());
    known.extend(rules.cfg.banned.iter().cloned());
    let checked = st.rules.check_local(&form.password, owner).await;
    let banned = checked.verdicts.iter().any(|v| v.rule == "banned" && !v.passed);
    let password = crate::domain::nist::normalised(form.password.expose_secret());
    let estimate = tokio::task::spawn_blocking(move || {
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        strength::estimate(&password, &known)
    })
    .await
    .map_err(|e| PortalError::Internal(anyhow::anyhow!("strength estimate: {e}")))?;
    let tr = Tr::current();
    let answer = Answer {
        banned,
        score: estimate.score,
        strength: tr.f("password.strength", "label", tr.t(estimate.label())),
        advice: estimate
            .warning
            .iter()
            .chain(&estimate.suggestions)
            .filter(|k| form.complexity.is_empty() || **k != strength::NO_SYMBOLS_NEEDED)
            .map(|k| tr.t(k).to_string())
            .collect(),
    };
    Ok(axum::Json(answer).into_response())
}
