//! Enrollment and key rollover from the agent's side: the RSA key pair is made here and the
//! private key never leaves this host.

use super::state::{new_key_pair, AgentState, StoredKey};
use crate::relay::enroll::{EnrollResponse, RotateRequest, RotateResponse};
use crate::relay::{ENROLL_PATH, ROTATE_PATH};
use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;
use std::time::Duration;

/// An HTTPS-only client that verifies the portal's certificate (web roots + `ca`).
pub fn http_client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let tls = (*crate::tls::client_config(ca)?).clone();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTPS client")
}

fn portal_base(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).context("--portal is not a URL")?;
    if parsed.scheme() != "https" {
        bail!("the portal must be reached over https://");
    }
    Ok(url.trim_end_matches('/').to_string())
}

async fn error_text(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let why = body.get("error").and_then(|e| e.as_str()).unwrap_or("no details").to_string();
    format!("the portal answered {status}: {why}")
}

async fn key_pair() -> anyhow::Result<(SecretString, String)> {
    tokio::task::spawn_blocking(new_key_pair).await.context("key generation task")?
}

/// Enrolls this host as an agent with a one-time token and writes the state file (mode 0600).
pub async fn enroll(
    portal_url: &str,
    token: &SecretString,
    ca: Option<&Path>,
    state_path: &Path,
    now: i64,
) -> anyhow::Result<AgentState> {
    if state_path.exists() {
        bail!("{} already exists: this host is enrolled. Remove it first to enroll again", state_path.display());
    }
    let base = portal_base(portal_url)?;
    let (private_pem, public_pem) = key_pair().await?;
    let client = http_client(ca)?;
    let resp = client
        .post(format!("{base}{ENROLL_PATH}"))
        .json(&serde_json::json!({ "token": token.expose_secret(), "public_key_pem": public_pem }))
        .send()
        .await
        .with_context(|| format!("connecting to {base}"))?;
    if !resp.status().is_success() {
        bail!("enrollment refused: {}", error_text(resp).await);
    }
    let r: EnrollResponse = resp.json().await.context("enrollment answer")?;
    let state = AgentState {
        portal_url: base,
        agent_id: r.agent_id,
        relay_secret: SecretString::from(r.secret),
        keys: vec![StoredKey {
            version: r.key_version,
            created_at: now,
            rsa_private_pem: private_pem,
            package_key: SecretString::from(r.package_key),
        }],
    };
    state.save(state_path)?;
    Ok(state)
}

/// Makes a new RSA pair, has the portal issue a new package key for it, and saves both as the
/// newest version; the previous version stays usable for the grace period.
pub async fn rotate(state: &mut AgentState, state_path: &Path, ca: Option<&Path>, now: i64) -> anyhow::Result<u32> {
    let (private_pem, public_pem) = key_pair().await?;
    let client = http_client(ca)?;
    let resp = client
        .post(format!("{}{ROTATE_PATH}", state.portal_url))
        .header(reqwest::header::AUTHORIZATION, state.bearer().as_str())
        .json(&RotateRequest { public_key_pem: public_pem })
        .send()
        .await
        .with_context(|| format!("connecting to {}", state.portal_url))?;
    if !resp.status().is_success() {
        bail!("key rotation refused: {}", error_text(resp).await);
    }
    let r: RotateResponse = resp.json().await.context("rotation answer")?;
    state.push_key(StoredKey {
        version: r.key_version,
        created_at: now,
        rsa_private_pem: private_pem,
        package_key: SecretString::from(r.package_key),
    });
    state.save(state_path)?;
    Ok(r.key_version)
}
