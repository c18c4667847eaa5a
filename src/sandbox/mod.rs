//! Throwaway local services for `passback demo` and for the tests: a certificate authority, an
//! OpenLDAP `slapd` with the ppolicy overlay, a Samba AD domain controller and a PostgreSQL
//! cluster, on 127.0.0.1, in a folder the caller owns.
//!
//! Nothing here is for production: passwords are random or fixed demo values and every
//! server stops when its handle is dropped.

pub mod balancer;
pub mod certs;
pub mod postgres;
pub(crate) mod process;
pub mod samba;
pub mod slapd;

pub use balancer::Balancer;
pub use certs::TestCa;
pub use postgres::Postgres;
pub use process::{bind_works, free_port, listens_on, Server};
pub use samba::{Delegated, SambaDc, INITIAL_AD_PASSWORD};
pub use slapd::{Slapd, INITIAL_USER_PASSWORD};
