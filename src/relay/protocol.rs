//! Frames on the relay WebSocket: every one is a sealed frame ([`crate::envelope::SealedFrame`])
//! in a binary message, whichever way it travels; a text message is refused. What the agent
//! reports (status, people) is sealed too, as an [`crate::envelope::Report`], so the relay secret
//! alone (which a TLS-terminating proxy sees) lets nobody tell the portal anything.

use crate::domain::{DirectoryId, PolicyFacts, SyncedUser};
use crate::envelope::SealedFrame;
use serde::{Deserialize, Serialize};

pub const VERSION: u8 = crate::envelope::VERSION;

/// URL paths of the relay, used by both ends.
pub const AGENT_PATH: &str = "/relay/v1/agent";
pub const ENROLL_PATH: &str = "/relay/v1/enroll";
pub const ROTATE_PATH: &str = "/relay/v1/rotate";
/// An agent proves its credentials here without opening the relay (`passback agent doctor`).
pub const CHECK_PATH: &str = "/relay/v1/check";

/// How long one content key seals an agent's passwords before a new one is made (the agent keeps
/// an unwrapped key about twice as long).
pub const CONTENT_KEY_EPOCH: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryStatus {
    pub id: DirectoryId,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Something the agent refused for safety (its reset budget ran out), for the health page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

/// Reported by the agent on connect (`hello`) and then every heartbeat interval (`heartbeat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub key_version: u32,
    pub key_created_at: i64,
    /// How often the agent makes new keys (its `key_rotation_days`), so the portal can say when
    /// the next rollover is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation_days: Option<u64>,
    pub directories: Vec<DirectoryStatus>,
}

/// One chunk of a sync. `seq` starts at 0; the chunk with `last` ends the sync. After a full
/// sync, people the portal has not heard of during it have left the scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncChunk {
    pub directory: DirectoryId,
    /// A full sync lists everyone in scope, so whoever it leaves out has left; a delta lists only
    /// who changed since the last sync, and removes nobody.
    #[serde(default = "full_by_default")]
    pub full: bool,
    pub seq: u32,
    pub last: bool,
    pub users: Vec<SyncedUser>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyFacts>,
}

fn full_by_default() -> bool {
    true
}

// ---- enrollment and key rollover (HTTPS, not the WebSocket)

#[derive(Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token: String,
    pub public_key_pem: String,
}

/// The package key travels RSA-encrypted to the agent's new public key, inside TLS: only the
/// holder of the matching private key can use it, even if the answer were seen.
#[derive(Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: String,
    pub secret: String,
    pub directories: Vec<String>,
    pub key_version: u32,
    pub package_key_ct: String,
}

/// Sealed with the agent's current package key (the proof that the caller holds it).
#[derive(Serialize, Deserialize)]
pub struct RotatePayload {
    pub public_key_pem: String,
    pub issued_at: i64,
}

#[derive(Serialize, Deserialize)]
pub struct RotateResponse {
    pub key_version: u32,
    pub package_key_ct: String,
}

/// A frame as it goes on the WebSocket: a sealed frame as one binary message. Every frame on the
/// relay is sealed, whichever way it travels; its kind says what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire(pub Vec<u8>);

impl Wire {
    pub fn sealed(frame: &SealedFrame) -> Wire {
        Wire(frame.to_bytes())
    }

    /// Its size on the wire, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported protocol version")]
    Version,
    #[error("malformed binary frame")]
    Binary,
    #[error("an unsealed (text) frame; every frame must be sealed")]
    Unsealed,
}

/// A binary message as a sealed frame of this protocol version (not yet authenticated: see
/// [`crate::envelope::open`]).
pub fn parse_binary(bytes: &[u8]) -> Result<SealedFrame, FrameError> {
    let sealed = SealedFrame::from_bytes(bytes).ok_or(FrameError::Binary)?;
    if sealed.v != VERSION {
        return Err(FrameError::Version);
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MsgId;
    use crate::envelope::FrameKind;

    #[test]
    fn sealed_frames_round_trip_and_unknown_versions_are_refused() {
        let frame = SealedFrame {
            v: VERSION,
            kind: FrameKind::Heartbeat,
            msg_id: MsgId::random(),
            key_version: 1,
            nonce: vec![7; 12],
            ciphertext: vec![1, 2, 3],
        };
        let wire = Wire::sealed(&frame);
        assert_eq!(parse_binary(&wire.0).unwrap(), frame);
        let mut old = wire.0.clone();
        old[0] = 2;
        assert!(matches!(parse_binary(&old), Err(FrameError::Version)));
        assert!(matches!(parse_binary(b"{\"v\":3,\"type\":\"sync\"}"), Err(FrameError::Binary)));
    }
}
