//! CSRF protection: a per-session synchronizer token, checked on every POST in constant time.

use super::PortalError;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

const KEY: &str = "csrf";

/// The session's token, made on first use.
pub async fn token(session: &Session) -> Result<String, PortalError> {
    if let Some(t) = session.get::<String>(KEY).await? {
        return Ok(t);
    }
    let t = crate::store::random_token().to_string();
    session.insert(KEY, &t).await?;
    Ok(t)
}

pub async fn check(session: &Session, presented: &str) -> Result<(), PortalError> {
    let expected = session.get::<String>(KEY).await?.unwrap_or_default();
    let ok = !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(PortalError::Csrf)
    }
}
