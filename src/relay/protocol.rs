//! Frames on the relay WebSocket. All are JSON text messages with `v` and `type`.
//! `request` and `result` are sealed ([`crate::envelope::SealedFrame`]); the others carry no secret.

use crate::domain::{DirectoryId, PolicyFacts, SyncedUser};
use crate::envelope::SealedFrame;
use serde::{Deserialize, Serialize};

pub const VERSION: u8 = crate::envelope::VERSION;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryStatus {
    pub id: DirectoryId,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sent by the agent on connect (`hello`) and then every heartbeat interval (`heartbeat`).
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

/// Everything that may travel on the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(AgentStatus),
    Heartbeat(AgentStatus),
    Sync(SyncChunk),
    Request(SealedFrame),
    Result(SealedFrame),
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u8,
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    body: T,
}

/// A frame as it goes on the WebSocket: sealed frames as compact binary messages, the others
/// as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Text(String),
    Binary(Vec<u8>),
}

impl Wire {
    /// Its size on the wire, in bytes.
    pub fn len(&self) -> usize {
        match self {
            Wire::Text(t) => t.len(),
            Wire::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported protocol version")]
    Version,
    #[error("malformed binary frame")]
    Binary,
    #[error("sealed frames travel as binary messages")]
    SealedAsText,
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl Frame {
    pub fn encode(&self) -> Wire {
        fn wrap<T: Serialize>(kind: &str, body: &T) -> Wire {
            Wire::Text(
                serde_json::to_string(&Envelope { v: VERSION, kind: kind.to_string(), body }).unwrap_or_default(),
            )
        }
        match self {
            Frame::Hello(s) => wrap("hello", s),
            Frame::Heartbeat(s) => wrap("heartbeat", s),
            Frame::Sync(c) => wrap("sync", c),
            Frame::Request(f) | Frame::Result(f) => Wire::Binary(f.to_bytes()),
        }
    }

    /// A binary message: a sealed request or result (not yet authenticated: see `envelope`).
    pub fn parse_binary(bytes: &[u8]) -> Result<Frame, FrameError> {
        let sealed = SealedFrame::from_bytes(bytes).ok_or(FrameError::Binary)?;
        if sealed.v != VERSION {
            return Err(FrameError::Version);
        }
        match sealed.kind {
            crate::envelope::FrameKind::Request => Ok(Frame::Request(sealed)),
            crate::envelope::FrameKind::Result => Ok(Frame::Result(sealed)),
            crate::envelope::FrameKind::Rotate => Err(FrameError::Binary),
        }
    }

    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        #[derive(Deserialize)]
        struct Head {
            v: u8,
            #[serde(rename = "type")]
            kind: String,
        }
        let head: Head = serde_json::from_str(text)?;
        if head.v != VERSION {
            return Err(FrameError::Version);
        }
        fn body<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FrameError> {
            Ok(serde_json::from_str::<Envelope<T>>(text)?.body)
        }
        Ok(match head.kind.as_str() {
            "hello" => Frame::Hello(body(text)?),
            "heartbeat" => Frame::Heartbeat(body(text)?),
            "sync" => Frame::Sync(body(text)?),
            "request" | "result" => return Err(FrameError::SealedAsText),
            other => return Err(FrameError::UnknownType(other.chars().take(32).collect())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_unknown_versions_are_refused() {
        let f = Frame::Heartbeat(AgentStatus {
            version: "0.1.0".into(),
            key_version: 1,
            key_created_at: 5,
            key_rotation_days: Some(180),
            directories: vec![DirectoryStatus {
                id: DirectoryId::parse("corp").unwrap(),
                reachable: true,
                last_sync: None,
                error: None,
            }],
        });
        let Wire::Text(json) = f.encode() else { panic!("a heartbeat is text") };
        assert_eq!(Frame::parse(&json).unwrap(), f);
        let v1 = json.replace("\"v\":2", "\"v\":1");
        assert!(matches!(Frame::parse(&v1), Err(FrameError::Version)));
        assert!(matches!(Frame::parse(r#"{"v":2,"type":"shutdown"}"#), Err(FrameError::UnknownType(_))));
        assert!(matches!(Frame::parse(r#"{"v":2,"type":"request"}"#), Err(FrameError::SealedAsText)));
    }
}
