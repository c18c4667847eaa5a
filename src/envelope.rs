//! The sealed envelope (DESIGN.md §3): passwords under a fresh per-message key that travels
//! RSA-2048-OAEP-SHA256-wrapped for the agent (one RSA block, whatever the number of passwords),
//! the whole package under AES-256-GCM with an AAD that binds agent, message, key version and
//! direction. Frames travel as compact binary WebSocket messages (see [`SealedFrame::to_bytes`]).
//! Pure: no I/O, the clock and the random source are parameters.
//!
//! Opening is split in two on purpose: [`open`] authenticates and decodes the AES-GCM layer, and only
//! then may the caller run [`decrypt_secret`] (RSA). The `rsa` crate has an open timing advisory
//! (RUSTSEC-2023-0071), so RSA decryption must only ever see authentic packages.

use crate::domain::{Anchor, DirectoryId, MsgId, Outcome, PolicyFacts};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use rand::{CryptoRng, RngCore};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use secrecy::SecretString;
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

/// A request's passwords: a 256-bit content key wrapped with the agent's RSA key (one OAEP block),
/// and the new and old passwords under it with AES-256-GCM, bound to the message id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// `new` and, for a change, `old`: length-prefixed (2 bytes each), then encrypted.
    #[serde(with = "b64")]
    pub ct: Vec<u8>,
}

fn secrets_aad(msg_id: &MsgId) -> String {
    format!("passback/v{VERSION}|secrets|{msg_id}")
}

/// A content key and its RSA-wrapped form. The portal reuses one for a while (an epoch) for all
/// of an agent's requests, so the agent unwraps it with RSA once per epoch, not once per request;
/// every request still seals its passwords under it with its own nonce, bound to its message id.
#[derive(Clone)]
pub struct ContentKey {
    key: PackageKey,
    wrapped: Vec<u8>,
}

impl ContentKey {
    pub fn new(public: &RsaPublicKey, rng: &mut (impl RngCore + CryptoRng)) -> Result<ContentKey, EnvelopeError> {
        let key = PackageKey::generate(rng);
        let wrapped =
            public.encrypt(rng, Oaep::new::<rsa::sha2::Sha256>(), key.as_bytes()).map_err(|_| EnvelopeError::Rsa)?;
        Ok(ContentKey { key, wrapped })
    }
}

/// Unwraps a content key with the agent's private key (RSA): call only on a package that
/// [`open`] authenticated.
pub fn unwrap_key(private: &RsaPrivateKey, wrapped: &[u8]) -> Result<PackageKey, EnvelopeError> {
    let raw =
        Zeroizing::new(private.decrypt(Oaep::new::<rsa::sha2::Sha256>(), wrapped).map_err(|_| EnvelopeError::Rsa)?);
    PackageKey::from_slice(&raw).ok_or(EnvelopeError::Malformed)
}

/// Seals a request's passwords under `content` (a fresh nonce each time, bound to the message).
pub fn seal_secrets(
    content: &ContentKey,
    msg_id: &MsgId,
    new: &str,
    old: Option<&str>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<SealedSecrets, EnvelopeError> {
    let mut plain = Zeroizing::new(Vec::with_capacity(4 + new.len() + old.map_or(0, str::len)));
    for s in std::iter::once(new).chain(old) {
        let len = u16::try_from(s.len()).map_err(|_| EnvelopeError::Malformed)?;
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(s.as_bytes());
    }
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let aad = secrets_aad(msg_id);
    let ct = Aes256Gcm::new(content.key.as_bytes().into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: aad.as_bytes() })
        .map_err(|_| EnvelopeError::Malformed)?;
    Ok(SealedSecrets { key: content.wrapped.clone(), nonce: nonce.to_vec(), ct })
}

/// Opens what [`seal_secrets`] made, with the content key already unwrapped (see
/// [`unwrap_key`]): the new password, and the old one for a change.
pub fn open_secrets(
    content: &PackageKey,
    msg_id: &MsgId,
    sealed: &SealedSecrets,
) -> Result<(SecretString, Option<SecretString>), EnvelopeError> {
    let nonce: [u8; 12] = sealed.nonce.as_slice().try_into().map_err(|_| EnvelopeError::Malformed)?;
    let aad = secrets_aad(msg_id);
    let plain = Zeroizing::new(
        Aes256Gcm::new(content.as_bytes().into())
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &sealed.ct, aad: aad.as_bytes() })
            .map_err(|_| EnvelopeError::Tampered)?,
    );
    let mut rest: &[u8] = &plain;
    let mut out = Vec::with_capacity(2);
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or(EnvelopeError::Malformed)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (s, tail) = tail.split_at_checked(len).ok_or(EnvelopeError::Malformed)?;
        out.push(SecretString::from(std::str::from_utf8(s).map_err(|_| EnvelopeError::Malformed)?.to_string()));
        rest = tail;
    }
    let mut out = out.into_iter();
    let new = out.next().ok_or(EnvelopeError::Malformed)?;
    Ok((new, out.next()))
}

/// Encrypts a short secret with the agent's public key (RSA-OAEP-SHA256), base64 without padding:
/// how the package key reaches the agent at enrollment and rotation.
pub fn encrypt_secret(
    key: &RsaPublicKey,
    secret: &str,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, EnvelopeError> {
    let ct = key.encrypt(rng, Oaep::new::<rsa::sha2::Sha256>(), secret.as_bytes()).map_err(|_| EnvelopeError::Rsa)?;
    Ok(B64.encode(ct))
}

/// Decrypts what [`encrypt_secret`] made.
pub fn decrypt_secret(key: &RsaPrivateKey, ct_b64: &str) -> Result<SecretString, EnvelopeError> {
    let ct = B64.decode(ct_b64).map_err(|_| EnvelopeError::Malformed)?;
    let pt = Zeroizing::new(key.decrypt(Oaep::new::<rsa::sha2::Sha256>(), &ct).map_err(|_| EnvelopeError::Rsa)?);
    let s = std::str::from_utf8(&pt).map_err(|_| EnvelopeError::Malformed)?;
    Ok(SecretString::from(s.to_string()))
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
mod tests {
    use super::*;
    use rand::rngs::OsRng;
    use secrecy::ExposeSecret;
    use std::sync::OnceLock;

    fn rsa_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, RSA_BITS).unwrap())
    }

    fn request(msg: &MsgId, secrets: Option<SealedSecrets>, expires_at: i64) -> RequestPackage {
        RequestPackage {
            msg_id: msg.clone(),
            op: if secrets.is_some() { Op::Change } else { Op::Unlock },
            directory: DirectoryId::parse("corp").unwrap(),
            anchor: Anchor::parse("5d2b4a4e-8f0b-103f-9a55-7b4f0f3c2a11").unwrap(),
            secrets,
            flags: Flags::default(),
            actor: "self-service".into(),
            issued_at: 1_800_000_000,
            expires_at,
            wait_secs: 30,
        }
    }

    fn sealed(agent: &str, key: &PackageKey, msg: &MsgId, expires_at: i64) -> SealedFrame {
        let content = ContentKey::new(&rsa_key().to_public_key(), &mut OsRng).unwrap();
        let secrets = seal_secrets(&content, msg, "N3w-Passw0rd!", Some("0ld-Passw0rd!"), &mut OsRng).unwrap();
        let pkg = request(msg, Some(secrets), expires_at);
        seal(agent, 1, key, Direction::ToAgent, FrameKind::Request, msg, &pkg, &mut OsRng).unwrap()
    }

    #[test]
    fn a_sealed_request_opens_to_the_same_passwords() {
        let key = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        let frame = sealed("agent-1", &key, &msg, 2_000);
        let pkg = open_request("agent-1", &frame, 1_500, |v| (v == 1).then(|| key.clone())).unwrap();
        let sealed = pkg.secrets.as_ref().unwrap();
        let content = unwrap_key(rsa_key(), &sealed.key).unwrap();
        let (new, old) = open_secrets(&content, &msg, sealed).unwrap();
        assert_eq!(new.expose_secret(), "N3w-Passw0rd!");
        assert_eq!(old.unwrap().expose_secret(), "0ld-Passw0rd!");
        let wire = frame.to_bytes();
        assert!(!String::from_utf8_lossy(&wire).contains("Passw0rd"));
        assert_eq!(SealedFrame::from_bytes(&wire).unwrap(), frame, "the binary form round-trips");
    }

    #[test]
    fn every_frame_is_under_a_kilobyte() {
        let key = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        // A change carries the most: two passwords (24 characters each, longer than most).
        let content = ContentKey::new(&rsa_key().to_public_key(), &mut OsRng).unwrap();
        let secrets = seal_secrets(&content, &msg, &"N".repeat(24), Some(&"O".repeat(24)), &mut OsRng).unwrap();
        let change = seal(
            "agent-1",
            1,
            &key,
            Direction::ToAgent,
            FrameKind::Request,
            &msg,
            &request(&msg, Some(secrets), 2_000),
            &mut OsRng,
        )
        .unwrap();
        let unlock = seal(
            "agent-1",
            1,
            &key,
            Direction::ToAgent,
            FrameKind::Request,
            &msg,
            &request(&msg, None, 2_000),
            &mut OsRng,
        )
        .unwrap();
        let answer = ResultPackage {
            msg_id: msg.clone(),
            outcome: Outcome::InHistory { history: Some(24) },
            raw: "agent=0123456789abcdef0123456789abcdef rc=19 text=\"Password is in history of old passwords\" ppolicy=8".into(),
            policy: Some(PolicyFacts { min_length: Some(8), history: Some(24), min_age_secs: Some(86_400), complexity: Some(true), lockout_threshold: None, lockout_duration_secs: None }),
        };
        let result =
            seal("agent-1", 1, &key, Direction::ToPortal, FrameKind::Result, &msg, &answer, &mut OsRng).unwrap();
        for (what, frame) in [("change", change), ("unlock", unlock), ("result", result)] {
            let n = frame.to_bytes().len();
            assert!(n < 1024, "a {what} frame is {n} bytes");
        }
    }

    #[test]
    fn secrets_sealed_for_one_message_do_not_open_for_another() {
        let msg = MsgId::random();
        let content = ContentKey::new(&rsa_key().to_public_key(), &mut OsRng).unwrap();
        let sealed = seal_secrets(&content, &msg, "N3w-Passw0rd!", None, &mut OsRng).unwrap();
        let key = unwrap_key(rsa_key(), &sealed.key).unwrap();
        assert_eq!(open_secrets(&key, &MsgId::random(), &sealed).unwrap_err(), EnvelopeError::Tampered);
        let (new, old) = open_secrets(&key, &msg, &sealed).unwrap();
        assert_eq!((new.expose_secret(), old.is_none()), ("N3w-Passw0rd!", true));
    }

    #[test]
    fn malformed_binary_frames_are_refused_before_anything_else() {
        let key = PackageKey::generate(&mut OsRng);
        let frame = sealed("agent-1", &key, &MsgId::random(), 2_000);
        let bytes = frame.to_bytes();
        for cut in [0, 1, 5, 7, 20, 40] {
            assert!(SealedFrame::from_bytes(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad_kind = bytes.clone();
        bad_kind[1] = 9;
        assert!(SealedFrame::from_bytes(&bad_kind).is_none());
    }

    #[test]
    fn a_tampered_frame_is_refused() {
        let key = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        let mut frame = sealed("agent-1", &key, &msg, 2_000);
        frame.ciphertext[10] ^= 1;
        let r = open_request("agent-1", &frame, 1_500, |_| Some(key.clone()));
        assert_eq!(r.unwrap_err(), EnvelopeError::Tampered);
    }

    #[test]
    fn a_frame_for_another_agent_or_message_is_refused() {
        let key = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        let frame = sealed("agent-1", &key, &msg, 2_000);
        let r = open_request("agent-2", &frame, 1_500, |_| Some(key.clone()));
        assert_eq!(r.unwrap_err(), EnvelopeError::Tampered);
        let mut moved = frame.clone();
        moved.msg_id = MsgId::random();
        let r = open_request("agent-1", &moved, 1_500, |_| Some(key.clone()));
        assert_eq!(r.unwrap_err(), EnvelopeError::Tampered);
    }

    #[test]
    fn an_expired_frame_is_refused() {
        let key = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        let frame = sealed("agent-1", &key, &msg, 2_000);
        let r = open_request("agent-1", &frame, 2_000, |_| Some(key.clone()));
        assert_eq!(r.unwrap_err(), EnvelopeError::Expired);
    }

    #[test]
    fn a_frame_under_the_wrong_key_or_version_is_refused() {
        let key = PackageKey::generate(&mut OsRng);
        let other = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        let frame = sealed("agent-1", &key, &msg, 2_000);
        assert_eq!(
            open_request("agent-1", &frame, 1_500, |_| Some(other.clone())).unwrap_err(),
            EnvelopeError::Tampered
        );
        assert_eq!(open_request("agent-1", &frame, 1_500, |_| None).unwrap_err(), EnvelopeError::UnknownKey(1));
        let mut relabelled = frame.clone();
        relabelled.key_version = 2;
        assert_eq!(
            open_request("agent-1", &relabelled, 1_500, |_| Some(key.clone())).unwrap_err(),
            EnvelopeError::Tampered
        );
    }

    #[test]
    fn a_frame_sent_back_the_other_way_is_refused() {
        let key = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        let result = ResultPackage { msg_id: msg.clone(), outcome: Outcome::Success, raw: "0".into(), policy: None };
        let frame =
            seal("agent-1", 1, &key, Direction::ToPortal, FrameKind::Result, &msg, &result, &mut OsRng).unwrap();
        assert_eq!(open_result("agent-1", &frame, |_| Some(key.clone())).unwrap(), result);
        let mut as_request = frame.clone();
        as_request.kind = FrameKind::Request;
        assert_eq!(
            open_request("agent-1", &as_request, 0, |_| Some(key.clone())).unwrap_err(),
            EnvelopeError::Tampered
        );
    }

    #[test]
    fn an_unknown_protocol_version_is_refused() {
        let key = PackageKey::generate(&mut OsRng);
        let msg = MsgId::random();
        let mut frame = sealed("agent-1", &key, &msg, 2_000);
        frame.v = 1;
        assert_eq!(
            open_request("agent-1", &frame, 1_500, |_| Some(key.clone())).unwrap_err(),
            EnvelopeError::Version(1)
        );
    }

    #[test]
    fn a_report_opens_only_as_its_own_kind_and_while_fresh() {
        let key = PackageKey::generate(&mut OsRng);
        let id = MsgId::random();
        let report = Report { issued_at: 1_000, body: "status".to_string() };
        let frame =
            seal("agent-1", 1, &key, Direction::ToPortal, FrameKind::Heartbeat, &id, &report, &mut OsRng).unwrap();
        let opened: Report<String> = open_report("agent-1", &frame, 1_100, 300, |_| Some(key.clone())).unwrap();
        assert_eq!(opened, report);
        let mut as_sync = frame.clone();
        as_sync.kind = FrameKind::Sync;
        assert_eq!(
            open_report::<String>("agent-1", &as_sync, 1_100, 300, |_| Some(key.clone())).unwrap_err(),
            EnvelopeError::Tampered,
            "the kind is bound by the AAD"
        );
        assert_eq!(
            open_report::<String>("agent-1", &frame, 1_301, 300, |_| Some(key.clone())).unwrap_err(),
            EnvelopeError::Expired
        );
        let mut as_result = frame;
        as_result.kind = FrameKind::Result;
        assert_eq!(
            open_report::<String>("agent-1", &as_result, 1_100, 300, |_| Some(key.clone())).unwrap_err(),
            EnvelopeError::WrongKind
        );
    }
}
