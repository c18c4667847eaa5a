//! The relay: the wire protocol between portal and agent, and the hub inside `serve` that knows
//! which agents are alive right now and routes sealed requests to them.
//! Nothing here talks to a directory: every directory operation travels sealed to an agent.

pub mod auth;
pub mod enroll;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod revoke;
pub mod server;
pub mod sync;

pub use hub::{Hub, WritebackRequest, WritebackResult};

pub use protocol::{AGENT_PATH, CHECK_PATH, ENROLL_PATH, ROTATE_PATH};
