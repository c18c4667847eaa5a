//! Agent enrollment and key rollover, over HTTPS. The agent makes its RSA key pair itself and
//! sends only the public key; the portal answers with the agent id, the relay secret and the
//! package key, and keeps the secret only as a hash and the package key only encrypted.

use super::server::{authenticate, RelayState};
use crate::envelope::{PackageKey, RSA_BITS};
use crate::store;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Deserialize)]
pub struct EnrollRequest {
    pub token: String,
    pub public_key_pem: String,
}

#[derive(Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: String,
    pub secret: String,
    pub key_version: u32,
    pub package_key: String,
}

#[derive(Serialize, Deserialize)]
pub struct RotateRequest {
    pub public_key_pem: String,
}

#[derive(Serialize, Deserialize)]
pub struct RotateResponse {
    pub key_version: u32,
    pub package_key: String,
}

/// A random 256-bit token as 64 hex digits: safe in URLs, headers and on a command line (a
/// token starting with `-` would be taken for an option).
pub fn random_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(hex::encode(bytes.as_ref()))
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

fn no_store(body: impl Serialize) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `None` when the key is an RSA-2048 public key, else the refusal to send.
fn bad_public_key(pem: &str) -> Option<Response> {
    match rsa::RsaPublicKey::from_public_key_pem(pem) {
        Ok(k) if k.n().bits() == RSA_BITS => None,
        _ => Some(refuse(StatusCode::BAD_REQUEST, "public_key_pem must be an RSA-2048 public key (SPKI PEM)")),
    }
}

pub async fn enroll(State(state): State<RelayState>, Json(req): Json<EnrollRequest>) -> Response {
    if let Some(r) = bad_public_key(&req.public_key_pem) {
        return r;
    }
    let now = state.clock.now();
    let name = match store::agents::consume_enrollment_token(&state.db, &store::token_hash(req.token.trim()), now).await
    {
        Ok(Some(name)) => name,
        Ok(None) => {
            tracing::warn!("enrollment refused: unknown, used or expired token");
            return refuse(StatusCode::UNAUTHORIZED, "the enrollment token is unknown, used or expired");
        }
        Err(e) => {
            tracing::error!(error = %e, "enrollment: database");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    };
    let agent_id = uuid::Uuid::new_v4().simple().to_string();
    let secret = random_token();
    let package = PackageKey::generate(&mut rand::rngs::OsRng);
    let stored = async {
        store::agents::insert_agent(&state.db, &agent_id, &name, &store::token_hash(&secret), now).await?;
        let enc = state.data_key.encrypt(&store::agents::key_context(&agent_id, 1), package.as_bytes());
        store::agents::insert_key(&state.db, &agent_id, 1, &req.public_key_pem, &enc, now).await
    }
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "enrollment: storing the agent");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again");
    }
    tracing::info!(agent = %agent_id, name = %name, "agent enrolled");
    no_store(EnrollResponse {
        agent_id,
        secret: secret.to_string(),
        key_version: 1,
        package_key: package.to_base64().to_string(),
    })
}

pub async fn rotate(State(state): State<RelayState>, headers: HeaderMap, Json(req): Json<RotateRequest>) -> Response {
    let Some(agent_id) = authenticate(&state.db, &headers).await else {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    if let Some(r) = bad_public_key(&req.public_key_pem) {
        return r;
    }
    let now = state.clock.now();
    let package = PackageKey::generate(&mut rand::rngs::OsRng);
    // The newest version + 1; the primary key makes a racing second rotation fail, not overwrite.
    let result = async {
        let newest = store::agents::keys(&state.db, &agent_id).await?.first().map(|k| k.version).unwrap_or(0);
        let version = newest + 1;
        let enc = state.data_key.encrypt(&store::agents::key_context(&agent_id, version), package.as_bytes());
        let inserted = store::agents::insert_key(&state.db, &agent_id, version, &req.public_key_pem, &enc, now).await?;
        anyhow::Ok(inserted.then_some(version))
    }
    .await;
    match result {
        Ok(Some(version)) => {
            state.hub.forget_keys(&agent_id);
            tracing::info!(agent = %agent_id, version, "agent keys rotated");
            no_store(RotateResponse {
                key_version: u32::try_from(version).unwrap_or(u32::MAX),
                package_key: package.to_base64().to_string(),
            })
        }
        Ok(None) => refuse(StatusCode::CONFLICT, "another rotation happened at the same time; try again"),
        Err(e) => {
            tracing::error!(agent = %agent_id, error = %e, "rotation failed");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}
