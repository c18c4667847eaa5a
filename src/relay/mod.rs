//! The relay: the wire protocol between portal and agent, and the hub inside `serve` that knows
//! which agents are alive right now and routes sealed requests to them.
//! Nothing here talks to a directory: every directory operation travels sealed to an agent.

pub mod enroll;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod revoke;
pub mod server;
pub mod sync;

pub use hub::{Hub, WritebackRequest, WritebackResult};

/// URL paths of the relay, used by both ends.
pub const AGENT_PATH: &str = "/relay/v1/agent";
pub const ENROLL_PATH: &str = "/relay/v1/enroll";
pub const ROTATE_PATH: &str = "/relay/v1/rotate";
/// An agent proves its credentials here without opening the relay (`passback agent doctor`).
pub const CHECK_PATH: &str = "/relay/v1/check";
