//! The portal's error type: internal detail goes to the log with a support code; the person sees
//! the support code and a sentence they can act on, never internal error text.

use super::pages::ErrorPage;
pub use crate::domain::SupportCode;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Puts a support code on a response, in the `x-support-code` header (for logs and proxies).
pub trait Tag {
    fn tag(&self, page: impl IntoResponse) -> Response;
}

impl Tag for SupportCode {
    fn tag(&self, page: impl IntoResponse) -> Response {
        let mut resp = page.into_response();
        if let Ok(v) = HeaderValue::from_str(&self.0) {
            resp.headers_mut().insert("x-support-code", v);
        }
        resp
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("the form has expired")]
    Csrf,
    /// A body or field the portal would not read (too large, malformed): the framework's own
    /// refusal, turned into the normal error page.
    #[error("a form the portal could not read ({status}): {why}")]
    BadForm { status: StatusCode, why: String },
    /// A guard's refusal, already rendered: a redirect to sign in, a 401 for a monitor, or the
    /// refusal page of a role that may not (which carries its own audit row).
    #[error("refused by a guard")]
    Refused(Box<Response>),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<tower_sessions::session::Error> for PortalError {
    fn from(e: tower_sessions::session::Error) -> Self {
        Self::Internal(anyhow::anyhow!("session: {e}"))
    }
}

impl From<sqlx::Error> for PortalError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::anyhow!("database: {e}"))
    }
}

/// What an error page asks to be audited (by [`super::audit_errors`], which has the database):
/// so the support code on any error page finds its row.
#[derive(Debug, Clone)]
pub struct ErrorAudit {
    pub support_code: SupportCode,
    pub operation: &'static str,
    pub outcome: crate::domain::Outcome,
    pub raw: String,
    /// Who was refused, when known (a signed-in staff member); else the row says `portal`.
    pub actor: Option<String>,
    /// The person it was about, when known.
    pub target: Option<String>,
}

impl ErrorAudit {
    /// Attaches this row to a response, for [`super::audit_errors`] to write.
    pub fn attach(self, mut resp: Response) -> Response {
        resp.extensions_mut().insert(self);
        resp
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        use crate::domain::Outcome;
        let support = SupportCode::new();
        // (operation, outcome, raw, status, title key, message key)
        let (operation, outcome, raw, status, title, message) = match self {
            PortalError::Refused(resp) => return *resp,
            PortalError::Csrf => {
                tracing::warn!(support_code = %support, "refused a form without a valid CSRF token");
                let raw = "form without a valid CSRF token".to_string();
                ("error.csrf", Outcome::Refused, raw, StatusCode::FORBIDDEN, "error.expired_title", "error.expired")
            }
            PortalError::BadForm { status, why } => {
                tracing::warn!(support_code = %support, status = status.as_u16(), why, "refused a form the portal could not read");
                let raw = format!("{} {why}", status.as_u16());
                ("error.bad_form", Outcome::Refused, raw, status, "error.bad_form_title", "error.bad_form")
            }
            PortalError::Internal(e) => {
                tracing::error!(support_code = %support, error = %format!("{e:#}"), "internal error");
                // The first line only: enough to find the log line, which has the rest.
                let raw = format!("{e}").lines().next().unwrap_or_default().chars().take(200).collect();
                let status = StatusCode::INTERNAL_SERVER_ERROR;
                ("error.internal", Outcome::Internal, raw, status, "error.internal_title", "error.internal")
            }
        };
        let audit = ErrorAudit { support_code: support.clone(), operation, outcome, raw, actor: None, target: None };
        audit.attach(error_page(&support, status, (title, message)))
    }
}

/// The error page, with `support`'s code on it and in its header: a title and a sentence, as
/// keys into the message catalogues. Every refusal and failure page is made here.
pub fn error_page(support: &SupportCode, status: StatusCode, (title, message): (&str, &str)) -> Response {
    let tr = crate::i18n::Tr::current();
    let page =
        ErrorPage { tr, title: tr.t(title).into(), message: tr.t(message).into(), support_code: support.0.clone() };
    support.tag((status, page))
}

/// Too many attempts from this address: try again in a minute.
pub fn too_many() -> Response {
    let mut resp =
        error_page(&SupportCode::new(), StatusCode::TOO_MANY_REQUESTS, ("guard.too_many_title", "guard.too_many"));
    resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("60"));
    resp
}
