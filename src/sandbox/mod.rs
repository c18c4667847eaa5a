//! Throwaway local services for `passback demo` and for the tests: a certificate authority and
//! an OpenLDAP `slapd` with the ppolicy overlay, on 127.0.0.1, in a folder the caller owns.
//!
//! Nothing here is for production: passwords are random or fixed demo values and every
//! server stops when its handle is dropped.

pub mod certs;
pub mod slapd;

pub use certs::TestCa;
pub use slapd::{bind_works, Slapd, INITIAL_USER_PASSWORD};
