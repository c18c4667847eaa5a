//! Enrollment and key rollover from the agent's side: the RSA key pair is made here and the
//! private key never leaves this host.

use super::state::{new_key_pair, AgentState, NewKeyPair, StoredKey};
use crate::domain::MsgId;
use crate::envelope::{self, Direction, FrameKind};
use crate::relay::protocol::{EnrollRequest, EnrollResponse, RotatePayload, RotateResponse};
use crate::relay::protocol::{ENROLL_PATH, ROTATE_PATH};
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

async fn key_pair() -> anyhow::Result<NewKeyPair> {
    tokio::task::spawn_blocking(new_key_pair).await.context("key generation task")?
}

/// The package key, which the portal sent encrypted to our new public key.
fn unwrap_package_key(pair: &NewKeyPair, ct: &str) -> anyhow::Result<SecretString> {
    let b64 = envelope::decrypt_secret(&pair.key, ct).context("the portal's package key does not open with our key")?;
    anyhow::ensure!(
        envelope::PackageKey::from_base64(b64.expose_secret()).is_some(),
        "the portal sent a package key of the wrong size"
    );
    Ok(b64)
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
    // The token works once: where the state cannot be saved, it is not spent.
    let folder = state_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let probe = folder.join(format!(".passback-enroll-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("{} cannot be written here (run as the user the agent runs as)", folder.display()))?;
    let base = portal_base(portal_url)?;
    let pair = key_pair().await?;
    let client = http_client(ca)?;
    let resp = client
        .post(format!("{base}{ENROLL_PATH}"))
        .json(&EnrollRequest { token: token.expose_secret().to_string(), public_key_pem: pair.public_pem.clone() })
        .send()
        .await
        .with_context(|| format!("connecting to {base}"))?;
    if !resp.status().is_success() {
        bail!("enrollment refused: {}", error_text(resp).await);
    }
    let r: EnrollResponse = resp.json().await.context("enrollment answer")?;
    let package_key = unwrap_package_key(&pair, &r.package_key_ct)?;
    let state = AgentState {
        portal_url: base,
        agent_id: r.agent_id,
        relay_secret: SecretString::from(r.secret),
        keys: vec![StoredKey {
            version: r.key_version,
            created_at: now,
            rsa_private_pem: pair.private_pem,
            package_key,
        }],
    };
    state.save(state_path)?;
    tracing::info!(agent = %state.agent_id, directories = ?r.directories, "enrolled");
    Ok(state)
}

/// Makes a new RSA pair, has the portal issue a new package key for it, and saves both as the
/// newest version; the previous version stays usable for the grace period. The request is sealed
/// with the current package key, proving to the portal that it comes from this agent.
pub async fn rotate(state: &mut AgentState, state_path: &Path, ca: Option<&Path>, now: i64) -> anyhow::Result<u32> {
    let pair = key_pair().await?;
    let current = state.usable_keys(now, 0)?.into_iter().next().context("no current key")?;
    let payload = RotatePayload { public_key_pem: pair.public_pem.clone(), issued_at: now };
    let frame = envelope::seal(
        &state.agent_id,
        current.version,
        &current.package,
        Direction::ToPortal,
        FrameKind::Rotate,
        &MsgId::random(),
        &payload,
        &mut rand::rngs::OsRng,
    )?;
    let client = http_client(ca)?;
    let resp = client
        .post(format!("{}{ROTATE_PATH}", state.portal_url))
        .header(reqwest::header::AUTHORIZATION, state.bearer().as_str())
        .json(&frame)
        .send()
        .await
        .with_context(|| format!("connecting to {}", state.portal_url))?;
    if !resp.status().is_success() {
        bail!("key rotation refused: {}", error_text(resp).await);
    }
    let r: RotateResponse = resp.json().await.context("rotation answer")?;
    let package_key = unwrap_package_key(&pair, &r.package_key_ct)?;
    state.push_key(StoredKey {
        version: r.key_version,
        created_at: now,
        rsa_private_pem: pair.private_pem,
        package_key,
    });
    state.save(state_path)?;
    Ok(r.key_version)
}
