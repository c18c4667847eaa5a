//! What every request is checked for, once, before a handler runs: a posted form's CSRF token
//! (before anything reads the session on the form's behalf), then who may post it. A refusal is a
//! [`PortalError`]: an unreadable form or a missing token gets the error page with a support
//! code and an audit row; a guard's refusal is its own page (audited) or a redirect to sign in.
//! A form body is read up to [`MAX_FORM_BYTES`], the portal's only body limit.

use super::{csrf, AppState, PortalError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use std::future::Future;
use tower_sessions::Session;

/// A form posted with a valid CSRF token, the session it belongs to, and who posted it as the
/// guard `G` admits them (anyone, by default). The token is checked first; the guard runs only
/// for a form that passed. The client's address comes from the connection (the server serves
/// with `ConnectInfo<ClientAddr>`; a request without it is an internal error).
pub struct Posted<T, G = Anyone> {
    pub form: T,
    pub session: Session,
    pub who: G,
    pub st: AppState,
    /// The client's address (see [`super::ClientAddr`]).
    pub client: std::net::SocketAddr,
}

/// A form with nothing in it but its CSRF token (a button).
#[derive(serde::Deserialize)]
pub struct Button {}

/// Who may post a form or open a page; a refusal is an error page or a redirect.
pub trait Guard: Sized + Send {
    fn admit(st: &AppState, session: &Session) -> impl Future<Output = Result<Self, PortalError>> + Send;

    /// [`Self::admit`], knowing what the request asks for: a guard that sends the person through
    /// another step first (a step-up) may take them on to it afterwards.
    fn admit_asking(
        st: &AppState,
        session: &Session,
        _asked: Asked<'_>,
    ) -> impl Future<Output = Result<Self, PortalError>> + Send {
        Self::admit(st, session)
    }
}

/// What a request asks for, as a guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// A form posted (with a valid CSRF token), rather than a page opened.
    pub posted: bool,
    pub path: &'a str,
    /// The posted form's body (empty for a page).
    pub form: &'a [u8],
}

/// Anyone: the forms of people not signed in (identify, sign-in, change).
pub struct Anyone;

impl Guard for Anyone {
    async fn admit(_: &AppState, _: &Session) -> Result<Self, PortalError> {
        Ok(Anyone)
    }
}

/// A form's body larger than this is refused (413, the error page) before it is decoded.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

impl<T, G> FromRequest<AppState> for Posted<T, G>
where
    T: DeserializeOwned + Send,
    G: Guard,
{
    type Rejection = PortalError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, PortalError> {
        let (mut parts, body) = req.into_parts();
        let session = session_of(&mut parts, st).await?;
        let client = client_of(&parts)?;
        let form_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim() == "application/x-www-form-urlencoded"));
        if !form_type {
            return Err(bad_form(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not a form (application/x-www-form-urlencoded)"));
        }
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|e| bad_form(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()))?;
        csrf::check(&session, &token(&bytes)?).await?;
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| bad_form(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()))?;
        let asked = Asked { posted: true, path: parts.uri.path(), form: &bytes };
        let who = G::admit_asking(st, &session, asked).await?;
        Ok(Posted { form, session, who, st: st.clone(), client })
    }
}

/// The client's address, as the connection (and any trusted proxy) gave it.
fn client_of(parts: &axum::http::request::Parts) -> Result<std::net::SocketAddr, PortalError> {
    match parts.extensions.get::<axum::extract::ConnectInfo<super::ClientAddr>>() {
        Some(axum::extract::ConnectInfo(super::ClientAddr(client))) => Ok(*client),
        None => Err(anyhow::anyhow!("a request without its client's address").into()),
    }
}

/// The `csrf` field of a form body (empty when there is none: the check refuses it).
fn token(body: &Bytes) -> Result<String, PortalError> {
    #[derive(serde::Deserialize)]
    struct Token {
        #[serde(default)]
        csrf: String,
    }
    let t: Token = serde_urlencoded::from_bytes(body).map_err(|e| bad_form(StatusCode::BAD_REQUEST, &e.to_string()))?;
    Ok(t.csrf)
}

/// The request's session (the session layer always provides one).
pub(crate) async fn session_of(parts: &mut axum::http::request::Parts, st: &AppState) -> Result<Session, PortalError> {
    Session::from_request_parts(parts, st)
        .await
        .map_err(|(_, why)| PortalError::Internal(anyhow::anyhow!("session: {why}")))
}

fn bad_form(status: StatusCode, why: &str) -> PortalError {
    PortalError::BadForm { status, why: why.chars().take(200).collect() }
}

/// A page (not a form) that only some may open: who the guard `G` admitted, their session, and
/// the portal state.
pub struct Only<G> {
    pub who: G,
    pub session: Session,
    pub st: AppState,
}

impl<G: Guard> FromRequestParts<AppState> for Only<G> {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &AppState) -> Result<Self, PortalError> {
        let session = session_of(parts, st).await?;
        let who = G::admit_asking(st, &session, Asked { posted: false, path: parts.uri.path(), form: &[] }).await?;
        Ok(Only { who, session, st: st.clone() })
    }
}
