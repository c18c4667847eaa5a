//! The sealed envelope (DESIGN.md §3): passwords under a fresh per-message key that travels
//! RSA-2048-OAEP-SHA256-wrapped for the agent (one RSA block, whatever the number of passwords),
//! the whole package under AES-256-GCM with an AAD that binds agent, message, key version and
//! direction. Frames travel as compact binary WebSocket messages (see [`SealedFrame::to_bytes`]).
//! Pure: no I/O, the clock and the random source are parameters.
//!
//! Opening is split in two on purpose: [`open`] authenticates and decodes the AES-GCM layer, and only
//! then may the caller run [`decrypt_secret`] (RSA). The `rsa` crate has an open timing advisory
//! (RUSTSEC-2023-0071), so RSA decryption must only ever see authentic packages.

mod secrets;

use crate::domain::{Anchor, DirectoryId, MsgId, Outcome, PolicyFacts};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use rand::{CryptoRng, RngCore};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use secrecy::SecretString;
pub use secrets::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Protocol version carried by every frame; anything else is refused. Version 2: binary sealed
/// frames, and passwords under a per-message key wrapped once with RSA. Version 3: every frame the
/// agent sends is sealed, with its kind in the AAD.
pub const VERSION: u8 = 3;
pub const RSA_BITS: usize = 2048;

/// Which way a sealed frame travels. Part of the AAD, so a frame cannot be reflected back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToAgent,
    ToPortal,
}

impl Direction {
    fn tag(self) -> &'static str {
        match self {
            Direction::ToAgent => "portal-to-agent",
            Direction::ToPortal => "agent-to-portal",
        }
    }
}

/// A 256-bit AES-GCM package key, zeroized on drop.
#[derive(Clone)]
pub struct PackageKey(Zeroizing<[u8; 32]>);

impl PackageKey {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(k.as_mut());
        Self(k)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    pub fn from_base64(s: &str) -> Option<Self> {
        let bytes = Zeroizing::new(B64.decode(s.trim_end_matches('=')).ok()?);
        Self::from_slice(&bytes)
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_ref()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for PackageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackageKey([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    Request,
    Result,
    /// An agent's key rollover request: proves it holds the current package key.
    Rotate,
    /// The agent's status on connect, and then every heartbeat interval.
    Hello,
    Heartbeat,
    /// One chunk of the people in a directory.
    Sync,
}

/// What travels on the wire. Nothing secret is outside `ciphertext`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedFrame {
    pub v: u8,
    #[serde(rename = "type")]
    pub kind: FrameKind,
    pub msg_id: MsgId,
    pub key_version: u32,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

/// Bytes as base64 in JSON (where a sealed frame travels inside a JSON body, e.g. a rotation).
mod b64 {
    use super::{Engine, B64};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.trim_end_matches('=')).map_err(serde::de::Error::custom)
    }
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            FrameKind::Request => 1,
            FrameKind::Result => 2,
            FrameKind::Rotate => 3,
            FrameKind::Hello => 4,
            FrameKind::Heartbeat => 5,
            FrameKind::Sync => 6,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            FrameKind::Request => "request",
            FrameKind::Result => "result",
            FrameKind::Rotate => "rotate",
            FrameKind::Hello => "hello",
            FrameKind::Heartbeat => "heartbeat",
            FrameKind::Sync => "sync",
        }
    }

    fn from_byte(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Request),
            2 => Some(FrameKind::Result),
            3 => Some(FrameKind::Rotate),
            4 => Some(FrameKind::Hello),
            5 => Some(FrameKind::Heartbeat),
            6 => Some(FrameKind::Sync),
            _ => None,
        }
    }
}

impl SealedFrame {
    /// The binary form: `v | kind | key_version (4, big-endian) | msg_id length | msg_id | nonce (12)
    /// | ciphertext`. A reset request is about 700 bytes this way.
    pub fn to_bytes(&self) -> Vec<u8> {
        let id = self.msg_id.as_str().as_bytes();
        let mut out = Vec::with_capacity(7 + id.len() + self.nonce.len() + self.ciphertext.len());
        out.push(self.v);
        out.push(self.kind.byte());
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&id[..id.len().min(255)]);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Reads what [`SealedFrame::to_bytes`] wrote; `None` for anything malformed. Nothing in it is
    /// trusted until [`open`] authenticated it.
    pub fn from_bytes(bytes: &[u8]) -> Option<SealedFrame> {
        let (&v, rest) = bytes.split_first()?;
        let (&kind, rest) = rest.split_first()?;
        let (version, rest) = rest.split_at_checked(4)?;
        let (&id_len, rest) = rest.split_first()?;
        let (id, rest) = rest.split_at_checked(usize::from(id_len))?;
        let (nonce, ciphertext) = rest.split_at_checked(12)?;
        Some(SealedFrame {
            v,
            kind: FrameKind::from_byte(kind)?,
            msg_id: MsgId::parse(std::str::from_utf8(id).ok()?).ok()?,
            key_version: u32::from_be_bytes(version.try_into().ok()?),
            nonce: nonce.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Set a new password without knowing the old one (forgotten password, helpdesk).
    Reset,
    /// Replace a known password; the directory checks the old one.
    Change,
    /// Lift a lockout; no password travels.
    Unlock,
    /// Require a new password at the next sign-in; no password travels.
    RequireChange,
    /// Check a password by binding as the person (sign-in); nothing is written.
    Verify,
    /// Check the relay itself: the agent answers at once and touches nothing.
    Noop,
    /// Read the account's state now (enabled, locked, must change, expired); nothing is written.
    /// The answer's `raw` is an [`crate::domain::AccountState`] as JSON.
    Inspect,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// After a reset: require a new password at the next sign-in.
    #[serde(default)]
    pub must_change: bool,
    /// After a reset: lift a lockout too (AD does not do so by itself).
    #[serde(default)]
    pub unlock: bool,
    /// A reset by staff whose role may act on protected accounts. The agent honours it only when
    /// its own configuration allows it too (`protected_resets_by_staff`).
    #[serde(default)]
    pub allow_protected: bool,
    /// A reset that stands for the person's own change (their sign-in just proved the current
    /// password): written only where the directory checks it against the password history, as
    /// it would a change; refused unwritten elsewhere.
    #[serde(default)]
    pub keep_history: bool,
}

/// The plaintext of a request package. Passwords inside are still encrypted: under a key of
/// their own that only the agent's private key unwraps (see [`seal_secrets`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPackage {
    pub msg_id: MsgId,
    pub op: Op,
    pub directory: DirectoryId,
    pub anchor: Anchor,
    /// The passwords, sealed for the agent's private key (absent when none travels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SealedSecrets>,
    pub flags: Flags,
    pub actor: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// How long the portal waits for the answer. The agent does not start the write when the
    /// request waited longer than this on its side, so a person told "not confirmed" is not
    /// followed by a write they did not see.
    #[serde(default = "default_wait_secs")]
    pub wait_secs: u32,
}

fn default_wait_secs() -> u32 {
    30
}

/// The plaintext of a result package: the outcome, and the directory's raw answer for the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultPackage {
    pub msg_id: MsgId,
    pub outcome: Outcome,
    pub raw: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyFacts>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unexpected frame type")]
    WrongKind,
    #[error("no key with version {0}")]
    UnknownKey(u32),
    #[error("frame failed authentication")]
    Tampered,
    #[error("frame expired")]
    Expired,
    #[error("malformed package")]
    Malformed,
    #[error("password encryption failed")]
    Rsa,
}

/// What a sealed frame is bound to: the agent, the message (or frame) id, the key version, the
/// direction and the frame's kind, so no frame can be replayed as another kind or the other way.
fn aad(agent_id: &str, msg_id: &MsgId, key_version: u32, direction: Direction, kind: FrameKind) -> String {
    format!("passback/v{VERSION}|{agent_id}|{msg_id}|{key_version}|{}|{}", direction.tag(), kind.tag())
}

/// Seals a package for one agent, one message, one key version and one direction.
#[allow(clippy::too_many_arguments)]
pub fn seal<T: Serialize>(
    agent_id: &str,
    key_version: u32,
    key: &PackageKey,
    direction: Direction,
    kind: FrameKind,
    msg_id: &MsgId,
    package: &T,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<SealedFrame, EnvelopeError> {
    let plain = Zeroizing::new(serde_json::to_vec(package).map_err(|_| EnvelopeError::Malformed)?);
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let aad = aad(agent_id, msg_id, key_version, direction, kind);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: aad.as_bytes() })
        .map_err(|_| EnvelopeError::Malformed)?;
    Ok(SealedFrame { v: VERSION, kind, msg_id: msg_id.clone(), key_version, nonce: nonce.to_vec(), ciphertext: ct })
}

/// Authenticates and decodes a frame. `key_for` gives the package key of a version, if it is
/// still accepted. Nothing in the frame is trusted before this returns `Ok`.
pub fn open<T: DeserializeOwned>(
    agent_id: &str,
    frame: &SealedFrame,
    expected: FrameKind,
    direction: Direction,
    key_for: impl FnOnce(u32) -> Option<PackageKey>,
) -> Result<T, EnvelopeError> {
    if frame.v != VERSION {
        return Err(EnvelopeError::Version(frame.v));
    }
    if frame.kind != expected {
        return Err(EnvelopeError::WrongKind);
    }
    let key = key_for(frame.key_version).ok_or(EnvelopeError::UnknownKey(frame.key_version))?;
    let nonce: [u8; 12] = frame.nonce.as_slice().try_into().map_err(|_| EnvelopeError::Tampered)?;
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let aad = aad(agent_id, &frame.msg_id, frame.key_version, direction, frame.kind);
    let plain = Zeroizing::new(
        cipher
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &frame.ciphertext, aad: aad.as_bytes() })
            .map_err(|_| EnvelopeError::Tampered)?,
    );
    serde_json::from_slice(&plain).map_err(|_| EnvelopeError::Malformed)
}

/// Opens a request for the agent: authentic, for this agent, unexpired, ids consistent.
pub fn open_request(
    agent_id: &str,
    frame: &SealedFrame,
    now: i64,
    key_for: impl FnOnce(u32) -> Option<PackageKey>,
) -> Result<RequestPackage, EnvelopeError> {
    let pkg: RequestPackage = open(agent_id, frame, FrameKind::Request, Direction::ToAgent, key_for)?;
    if pkg.msg_id != frame.msg_id {
        return Err(EnvelopeError::Tampered);
    }
    if pkg.expires_at <= now {
        return Err(EnvelopeError::Expired);
    }
    Ok(pkg)
}

/// Opens a result for the portal.
pub fn open_result(
    agent_id: &str,
    frame: &SealedFrame,
    key_for: impl FnOnce(u32) -> Option<PackageKey>,
) -> Result<ResultPackage, EnvelopeError> {
    let pkg: ResultPackage = open(agent_id, frame, FrameKind::Result, Direction::ToPortal, key_for)?;
    if pkg.msg_id != frame.msg_id {
        return Err(EnvelopeError::Tampered);
    }
    Ok(pkg)
}

/// What an agent reports (`hello`, `heartbeat`, `sync`), with when it was sealed: the portal
/// refuses stale copies, and records each frame's id (the sealed frame's `msg_id`) so that no
/// copy is taken twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report<T> {
    pub issued_at: i64,
    pub body: T,
}

/// Opens an agent's report for the portal: authentic, of the kind it claims, and sealed within
/// `max_skew_secs` of `now`.
pub fn open_report<T: DeserializeOwned>(
    agent_id: &str,
    frame: &SealedFrame,
    now: i64,
    max_skew_secs: i64,
    key_for: impl FnOnce(u32) -> Option<PackageKey>,
) -> Result<Report<T>, EnvelopeError> {
    if !matches!(frame.kind, FrameKind::Hello | FrameKind::Heartbeat | FrameKind::Sync) {
        return Err(EnvelopeError::WrongKind);
    }
    let report: Report<T> = open(agent_id, frame, frame.kind, Direction::ToPortal, key_for)?;
    if (now - report.issued_at).abs() > max_skew_secs {
        return Err(EnvelopeError::Expired);
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
