//! Integration tests: a real OpenLDAP (ppolicy), a real SMTP conversation, the portal over real
//! TLS, and the real `passback agent` process connected to it. One test binary on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ad;
mod attack;
mod browser;
mod change;
mod demo;
mod directories;
mod harness;
mod helpdesk;
mod instances;
mod kinds;
mod passkeys;
mod policy;
mod postgres;
mod relay;
mod reminders;
mod reset;
mod web;
