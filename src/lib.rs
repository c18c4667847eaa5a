//! passback: self-service password reset with synchronous writeback to Active Directory / LDAP.
//!
//! `serve` runs the portal and the relay hub; `agent` runs inside the company network, connects
//! out to the hub, and writes passwords into the directory. Where each module runs:
//!
//! * **Shared by both processes:** `domain` (values parsed at the edge, outcomes, roles and
//!   scopes, DNs), `envelope` (sealed frames and packages), `relay::protocol` (the wire: frames,
//!   paths, epochs), `crypto` (keys and hashes), `config`, `i18n`, `tls`, `files`, `expiring` (maps whose
//!   entries go in time).
//! * **Portal host:** `usecase` (the acts, called by the pages, the command line and the demo
//!   alike: `account` — reset, change, unlock, must-change, the helpdesk's acts and method
//!   changes, each claimed, done, audited and told once; `password` — setting and checking
//!   passwords through the relay or the portal's own hashes; `staff` — staff accounts; all over
//!   `usecase::Host`, the host's services without any web state), `portal` (the web pages: thin
//!   handlers over extractors and use cases), `relay` (the hub and its endpoints), `store` (the
//!   database), `mail`, `server`.
//! * **Agent host:** `agent`, `directory` (AD and OpenLDAP).
//! * **Tools:** `demo`, `bench`, `sandbox` (real slapd and Samba for tests and the demo), `init`
//!   (a first configuration).
//!
//! The lines not to cross (DESIGN.md): `portal`/`relay`/`usecase` never import `directory`;
//! `usecase` never imports `portal`; `agent`/`directory` never import `store`/`portal`/`usecase`,
//! and the agent knows the relay only through `relay::protocol`; `envelope` and `domain` need
//! nothing of the application but `i18n` (and each other). No two sibling modules import each
//! other. These are folders of one crate rather than workspace crates: one crate builds fastest
//! on two cores, and the tests in `layout.rs` keep the lines.

pub mod agent;
pub mod bench;
pub mod breached;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod directory;
pub mod domain;
pub mod envelope;
pub mod expiring;
pub mod files;
pub mod i18n;
pub mod init;
#[cfg(test)]
mod layout;
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
