//! `/demo/mail`: the demo's caught mail. The route exists only in demo mode.

use super::pages::{DemoMail, DemoMailPage};
use super::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

pub async fn mail(State(st): State<AppState>) -> Response {
    let Some(mb) = &st.demo_mailbox else { return axum::http::StatusCode::NOT_FOUND.into_response() };
    let mails = mb
        .all()
        .into_iter()
        .rev()
        .map(|m| DemoMail { to: m.to.join(", "), subject: m.subject().to_string(), body: text_part(&m.data) })
        .collect();
    DemoMailPage { mails }.into_response()
}

/// The text/plain part of a message as lettre writes it (7bit for our ASCII templates).
fn text_part(data: &str) -> String {
    let Some(start) = data.find("Content-Type: text/plain") else { return data.to_string() };
    let rest = &data[start..];
    let body_start = rest.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let body = &rest[body_start..];
    let end = body.find("\r\n--").unwrap_or(body.len());
    body[..end].to_string()
}
