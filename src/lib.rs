//! passback: self-service password reset with synchronous writeback to Active Directory / LDAP.
//!
//! `serve` runs the portal and the relay hub; `agent` runs inside the company network, connects
//! out to the hub, and writes passwords into the directory. See DESIGN.md for the boundaries:
//! `portal`/`relay` never import `directory`; `agent`/`directory` never import `store`/`portal`;
//! `envelope` and `domain` import nothing of the application.

pub mod agent;
pub mod bench;
pub mod config;
pub mod demo;
pub mod directory;
pub mod domain;
pub mod envelope;
pub mod files;
pub mod i18n;
pub mod mail;
pub mod portal;
pub mod relay;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod tls;
pub mod usecase;

/// Wall-clock seconds since the Unix epoch, made at the outermost layer and passed down, so that
/// expiry, lockout and rollover can be tested by moving the clock instead of sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Seconds added to the system time; zero except where a test moved the clock.
    offset: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp() + self.offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves this clock (and every copy of it) forward: for tests and rehearsals.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
    }
}
