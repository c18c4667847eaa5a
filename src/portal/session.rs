//! What the portal keeps in a session, each value under one typed key. The names are listed
//! here, once, so no two flows can collide; each key is declared (with its value's type) beside
//! the code that owns it, and read and written only through [`Key`].

use super::PortalError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use tower_sessions::Session;

/// The reset flow in progress ([`super::reset`]).
pub(crate) const RESET_FLOW: &str = "reset";
/// The signed-in person ([`super::account`]).
pub(crate) const SIGNED_IN: &str = "signed_in";
/// A person whose password must be changed before they are signed in.
pub(crate) const MUST_CHANGE: &str = "must_change";
/// A step-up in progress, and when the last one passed.
pub(crate) const STEP_UP: &str = "step_up";
/// An address being added, waiting for its code.
pub(crate) const PENDING_EMAIL: &str = "pending_email";
/// The change form's one-use key.
pub(crate) const CHANGE_FORM_KEY: &str = "change_form_key";
/// The session's CSRF token.
pub(crate) const CSRF: &str = "csrf";
/// Where an access panel asked to be sent back to.
pub(crate) const RETURN_TO: &str = "return_to";
/// The signed-in staff member ([`super::staff`]).
pub(crate) const STAFF: &str = "staff";
/// A staff member's first sign-in, enrolling their own authenticator.
pub(crate) const STAFF_ENROLLING: &str = "staff_enrolling";
/// The helpdesk's one-use form keys, per person shown.
pub(crate) const HELPDESK_FORM_KEYS: &str = "helpdesk_form_keys";

/// A session value of type `T` under one of the names above.
pub(crate) struct Key<T> {
    name: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + Send + Sync> Key<T> {
    pub(crate) const fn new(name: &'static str) -> Self {
        Key { name, value: PhantomData }
    }

    pub(crate) async fn get(&self, session: &Session) -> Result<Option<T>, PortalError> {
        Ok(session.get::<T>(self.name).await?)
    }

    pub(crate) async fn set(&self, session: &Session, value: &T) -> Result<(), PortalError> {
        Ok(session.insert(self.name, value).await?)
    }

    /// Removes the value, and returns it if there was one.
    pub(crate) async fn take(&self, session: &Session) -> Result<Option<T>, PortalError> {
        Ok(session.remove::<T>(self.name).await?)
    }
}
