//! passback: self-service password reset with synchronous writeback to Active Directory / LDAP.
//!
//! `serve` runs the portal and the relay hub; `agent` runs inside the company network, connects
//! out to the hub, and writes passwords into the directory. See DESIGN.md for the boundaries:
//! `portal`/`relay` never import `directory`; `agent`/`directory` never import `store`/`portal`;
//! `envelope` and `domain` import nothing of the application.

pub mod agent;
pub mod config;
pub mod demo;
pub mod directory;
pub mod domain;
pub mod envelope;
pub mod files;
pub mod mail;
pub mod portal;
pub mod relay;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod tls;

/// Wall-clock seconds since the Unix epoch, read at the outermost layer and passed down.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

impl Clock {
    pub fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }
}
