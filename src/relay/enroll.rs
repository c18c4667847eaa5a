//! Agent enrollment and key rollover, over HTTPS. The agent makes its RSA key pair itself and
//! sends only the public key; the portal answers with the agent id, the relay secret and the
//! package key, and keeps the secret only as a hash and the package key only encrypted.

use super::auth::{authenticate, RelayState};
use super::protocol::{EnrollRequest, EnrollResponse, RotatePayload, RotateResponse};
use crate::envelope::{self, Direction, FrameKind, PackageKey, SealedFrame, RSA_BITS};
use crate::store::{self, random_token};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use serde::Serialize;

/// How far a rotation request's clock may be from ours.
const ROTATE_SKEW_SECS: i64 = 300;

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

fn no_store(body: impl Serialize) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The key, if `pem` is an RSA-2048 public key.
fn public_key(pem: &str) -> Result<RsaPublicKey, Box<Response>> {
    match RsaPublicKey::from_public_key_pem(pem) {
        Ok(k) if k.n().bits() == RSA_BITS => Ok(k),
        _ => Err(Box::new(refuse(StatusCode::BAD_REQUEST, "public_key_pem must be an RSA-2048 public key (SPKI PEM)"))),
    }
}

fn wrap_package_key(key: &RsaPublicKey, package: &PackageKey) -> Result<String, Box<Response>> {
    envelope::encrypt_secret(key, &package.to_base64(), &mut rand::rngs::OsRng).map_err(|e| {
        tracing::error!(error = %e, "wrapping the package key for an agent failed");
        Box::new(refuse(StatusCode::INTERNAL_SERVER_ERROR, "try again"))
    })
}

pub async fn enroll(State(state): State<RelayState>, Json(req): Json<EnrollRequest>) -> Response {
    let key = match public_key(&req.public_key_pem) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let now = state.clock.now();
    let enrollment =
        match store::agents::consume_enrollment_token(&state.db, &store::token_hash(req.token.trim()), now).await {
            Ok(Some(e)) => e,
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
    let package_key_ct = match wrap_package_key(&key, &package) {
        Ok(ct) => ct,
        Err(r) => return *r,
    };
    let stored = async {
        store::agents::insert_agent(&state.db, &agent_id, &enrollment, &store::token_hash(&secret), now).await?;
        let enc = state.data_key.encrypt(&store::agents::key_context(&agent_id, 1), package.as_bytes());
        store::agents::insert_key(&state.db, &agent_id, 1, &req.public_key_pem, &enc, now).await
    }
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "enrollment: storing the agent");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again");
    }
    tracing::info!(agent = %agent_id, name = %enrollment.name, directories = ?enrollment.directories.0, "agent enrolled");
    no_store(EnrollResponse {
        agent_id,
        secret: secret.to_string(),
        directories: enrollment.directories.0,
        key_version: 1,
        package_key_ct,
    })
}

/// Key rollover. The relay secret alone is not enough: the request must be sealed with the
/// agent's newest package key, recently, so a stolen secret cannot swap in an attacker's key.
pub async fn rotate(State(state): State<RelayState>, headers: HeaderMap, Json(frame): Json<SealedFrame>) -> Response {
    let Some(agent) = authenticate(&state.db, &headers).await else {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let agent_id = agent.id;
    let keys = match state.hub.keys(&agent_id).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(agent = %agent_id, error = %e, "rotation: reading keys");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    };
    let Some(newest) = keys.first() else {
        tracing::error!(agent = %agent_id, "rotation: the agent has no key on record");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again");
    };
    let now = state.clock.now();
    // Any version the portal still accepts: an agent that missed the answer to its last rotation
    // can still rotate with the key it has.
    let grace = state.hub.grace_secs();
    let key_for = |v: u32| super::hub::accepted_key(&keys, v, now, grace);
    let payload: RotatePayload =
        match envelope::open(&agent_id, &frame, FrameKind::Rotate, Direction::ToPortal, key_for) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(agent = %agent_id, error = %e, "rotation refused: not sealed with the newest key");
                return refuse(StatusCode::FORBIDDEN, "the request is not sealed with the agent's newest key");
            }
        };
    if (now - payload.issued_at).abs() > ROTATE_SKEW_SECS {
        return refuse(StatusCode::FORBIDDEN, "the request is too old, or the clocks differ by more than 5 minutes");
    }
    // Each rotation request is taken once: a captured copy cannot roll the keys again.
    match store::agents::note_frame(
        &state.db,
        &agent_id,
        frame.msg_id.as_str(),
        payload.issued_at + 2 * ROTATE_SKEW_SECS,
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            state.hub.metrics.refused_frame(super::hub::Refusal::Replayed.reason());
            tracing::warn!(agent = %agent_id, "rotation refused: a copy of an earlier request");
            return refuse(StatusCode::FORBIDDEN, "this rotation request was used before");
        }
        Err(e) => {
            tracing::error!(agent = %agent_id, error = %e, "rotation: recording the request id");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    }
    let key = match public_key(&payload.public_key_pem) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let package = PackageKey::generate(&mut rand::rngs::OsRng);
    let package_key_ct = match wrap_package_key(&key, &package) {
        Ok(ct) => ct,
        Err(r) => return *r,
    };
    // The newest version + 1; the primary key makes a racing second rotation fail, not overwrite.
    let version = i64::from(newest.version) + 1;
    let enc = state.data_key.encrypt(&store::agents::key_context(&agent_id, version), package.as_bytes());
    match store::agents::insert_key(&state.db, &agent_id, version, &payload.public_key_pem, &enc, now).await {
        Ok(true) => {
            state.hub.forget_keys(&agent_id);
            // Every other instance forgets them at once too.
            state.hub.announce(&agent_id, false).await;
            tracing::info!(agent = %agent_id, version, "agent keys rotated");
            no_store(RotateResponse { key_version: u32::try_from(version).unwrap_or(u32::MAX), package_key_ct })
        }
        Ok(false) => refuse(StatusCode::CONFLICT, "another rotation happened at the same time; try again"),
        Err(e) => {
            tracing::error!(agent = %agent_id, error = %e, "rotation failed");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}
