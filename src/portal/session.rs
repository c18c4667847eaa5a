//! What the portal keeps in a session, each value under one typed key. The names are listed
//! here, once, so no two flows can collide; each key is declared (with its value's type) beside
//! the code that owns it, and read and written only through [`Key`].

use super::PortalError;
use crate::crypto::MacKey;
use crate::domain::MsgId;
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
/// The session's CSRF token.
pub(crate) const CSRF: &str = "csrf";
/// Where an access panel asked to be sent back to.
pub(crate) const RETURN_TO: &str = "return_to";
/// The signed-in staff member ([`super::staff`]).
pub(crate) const STAFF: &str = "staff";
/// A staff member's first sign-in, enrolling their own authenticator.
pub(crate) const STAFF_ENROLLING: &str = "staff_enrolling";
/// The one-use keys of the forms shown (see [`FormKey`]).
const FORM_KEYS: &str = "form_keys";

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

/// The one-use key of a form that acts (a reset, an unlock, a change, a helpdesk act), by what
/// the form is for: made when the form is first shown, shown again with it, and taken once when
/// it is sent. The key is also the act's relay message id, whose claim in the database makes it
/// one-use across instances and restarts; here it keeps a second submit (a double click, the back
/// button) from acting at all.
pub(crate) struct FormKey<'a>(pub &'a str);

/// The forms whose keys a session keeps at once (several helpdesk tabs); the oldest goes first.
const KEPT_FORM_KEYS: usize = 8;
const ALL_FORM_KEYS: Key<Vec<(String, String)>> = Key::new(FORM_KEYS);

impl FormKey<'_> {
    /// The key of the form now shown: the one made when it was first shown, else a new one.
    pub(crate) async fn current(&self, session: &Session) -> Result<String, PortalError> {
        let keys = ALL_FORM_KEYS.get(session).await?.unwrap_or_default();
        match keys.iter().find(|(p, _)| p == self.0) {
            Some((_, k)) => Ok(k.clone()),
            None => self.renew(session).await,
        }
    }

    /// A new key for this form, in place of any earlier one (the newest page shown counts).
    pub(crate) async fn renew(&self, session: &Session) -> Result<String, PortalError> {
        let key = MsgId::random().to_string();
        let mut keys = ALL_FORM_KEYS.get(session).await?.unwrap_or_default();
        keys.retain(|(p, _)| p != self.0);
        keys.push((self.0.to_string(), key.clone()));
        let excess = keys.len().saturating_sub(KEPT_FORM_KEYS);
        keys.drain(..excess);
        ALL_FORM_KEYS.set(session, &keys).await?;
        Ok(key)
    }

    /// Takes the key when `sent` is it: its message id, once; `None` for a key this session did
    /// not make for this form, or took already (the form was sent before).
    pub(crate) async fn take(&self, session: &Session, sent: &str) -> Result<Option<MsgId>, PortalError> {
        let mut keys = ALL_FORM_KEYS.get(session).await?.unwrap_or_default();
        let Some(i) =
            keys.iter().position(|(p, k)| p == self.0 && crate::crypto::hashes_equal(k.as_bytes(), sent.as_bytes()))
        else {
            return Ok(None);
        };
        keys.remove(i);
        ALL_FORM_KEYS.set(session, &keys).await?;
        Ok(MsgId::parse(sent).ok())
    }

    /// [`Self::current`], or for a page shown to someone without a session yet (a page view
    /// writes none), a key signed with `mac` instead of remembered: `<random>.<keyed hash>`.
    pub(crate) async fn current_or_signed(&self, session: &Session, mac: &MacKey) -> Result<String, PortalError> {
        if session.is_empty().await {
            return Ok(self.signed(mac, &MsgId::random().to_string()));
        }
        self.current(session).await
    }

    /// [`Self::take`], or a key [`Self::current_or_signed`] signed: only the writeback claim of
    /// its message id makes that one single-use.
    pub(crate) async fn take_or_signed(
        &self,
        session: &Session,
        sent: &str,
        mac: &MacKey,
    ) -> Result<Option<MsgId>, PortalError> {
        if let Some(id) = self.take(session, sent).await? {
            return Ok(Some(id));
        }
        let signed = sent.split_once('.').is_some_and(|(random, _)| {
            crate::crypto::hashes_equal(self.signed(mac, random).as_bytes(), sent.as_bytes())
        });
        Ok(if signed { MsgId::parse(sent).ok() } else { None })
    }

    fn signed(&self, mac: &MacKey, random: &str) -> String {
        let hash = mac.hash(&[format!("{}-form-key", self.0).as_bytes(), random.as_bytes()]);
        format!("{random}.{}", &hash[..16])
    }

    /// Forgets this form's key (its flow ended or began again).
    pub(crate) async fn forget(&self, session: &Session) -> Result<(), PortalError> {
        let mut keys = ALL_FORM_KEYS.get(session).await?.unwrap_or_default();
        if keys.iter().any(|(p, _)| p == self.0) {
            keys.retain(|(p, _)| p != self.0);
            ALL_FORM_KEYS.set(session, &keys).await?;
        }
        Ok(())
    }
}
