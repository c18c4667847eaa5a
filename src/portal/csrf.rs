//! CSRF protection, checked on every POST in constant time. A session that exists carries a
//! synchronizer token. A visitor without one (the first form they see: identify, sign-in, change)
//! gets no session row for a page view: their token is a keyed hash of a random nonce kept in a
//! cookie of its own (a signed double-submit), and the session is made only when a form is posted.

use super::PortalError;
use crate::portal::session::Key;
use crate::store::MacKey;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tower_sessions::Session;

const KEY: Key<String> = Key::new(super::session::CSRF);
/// Tokens bound to the nonce cookie, not to a session, start so.
const SESSIONLESS: &str = "n.";

/// The nonce cookie of one request, and one made for the response.
struct Nonce {
    key: Arc<MacKey>,
    /// Over HTTPS only: a plain-HTTP cookie could be planted by anyone on the path, so without
    /// TLS (development mode) every visitor gets a session token instead.
    secure: bool,
    presented: Option<String>,
    made: Mutex<Option<String>>,
}

tokio::task_local! {
    static NONCE: Nonce;
}

/// Middleware: gives the request's handlers the nonce cookie, and sets one when a page made a
/// sessionless token. `secure` names the cookie `__Host-` (HTTPS only, this host only).
pub async fn layer(key: Arc<MacKey>, secure: bool, req: Request, next: Next) -> Response {
    let name = if secure { "__Host-passback-csrf" } else { "passback-csrf" };
    let presented = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string);
    let nonce = Nonce { key, secure, presented, made: Mutex::new(None) };
    NONCE
        .scope(nonce, async move {
            let mut resp = next.run(req).await;
            let made = NONCE.with(|n| n.made.lock().ok().and_then(|m| m.clone()));
            if let Some(value) = made {
                let cookie =
                    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{}", if secure { "; Secure" } else { "" });
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            resp
        })
        .await
}

/// The token for the forms of this page: the session's own, or, for a visitor without a
/// session, one bound to their nonce cookie (made now if they have none).
pub async fn token(session: &Session) -> Result<String, PortalError> {
    if let Some(t) = KEY.get(session).await? {
        return Ok(t);
    }
    if session.is_empty().await {
        let sessionless = NONCE.try_with(|n| {
            if !n.secure {
                return None;
            }
            let mut made = n.made.lock().unwrap_or_else(|e| e.into_inner());
            let nonce = n
                .presented
                .clone()
                .or_else(|| made.clone())
                .unwrap_or_else(|| made.insert(crate::store::random_token().to_string()).clone());
            Some(format!("{SESSIONLESS}{}", n.key.hash(&[nonce.as_bytes()])))
        });
        if let Ok(Some(t)) = sessionless {
            return Ok(t);
        }
    }
    let t = crate::store::random_token().to_string();
    KEY.set(session, &t).await?;
    Ok(t)
}

pub async fn check(session: &Session, presented: &str) -> Result<(), PortalError> {
    let ok = match KEY.get(session).await? {
        Some(expected) => bool::from(expected.as_bytes().ct_eq(presented.as_bytes())),
        // A form from a page shown before there was a session: bound to the nonce cookie.
        None => presented.strip_prefix(SESSIONLESS).is_some_and(|mac| {
            NONCE
                .try_with(|n| {
                    n.secure && n.presented.as_ref().is_some_and(|nonce| n.key.matches(&[nonce.as_bytes()], mac))
                })
                .unwrap_or(false)
        }),
    };
    if ok {
        Ok(())
    } else {
        Err(PortalError::Csrf)
    }
}
