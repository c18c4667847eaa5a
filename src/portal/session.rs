//! What the portal keeps in a session, each value under one typed key, and the one-use keys of
//! the forms that act. The names are listed here, once, so no two flows can collide: each value
//! is declared (with its type) beside the code that owns it and read and written only through
//! [`Key`]; each form's key is named here and made and taken only through [`FormKey`].

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
/// A passkey being registered: the ceremony's state ([`super::passkey`]).
pub(crate) const PASSKEY_REGISTERING: &str = "passkey_registering";
/// A passkey asked for: the challenge's state ([`super::passkey`]).
pub(crate) const PASSKEY_ASSERTING: &str = "passkey_asserting";
/// A word for the next page of security info (what the step before it did).
pub(crate) const NOTICE: &str = "notice";
/// The person's time zone, as a form's script last reported it ([`super::pages::time_zone`]).
pub(crate) const TIME_ZONE: &str = "time_zone";
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

/// The reset flow's final form (the new password, or the unlock).
pub(crate) const RESET_FORM: FormKey = FormKey("reset");
/// The change form.
pub(crate) const CHANGE_FORM: FormKey = FormKey("change");
/// The expired-password form after a sign-in.
pub(crate) const EXPIRED_FORM: FormKey = FormKey("expired");

/// The name of the forms on the helpdesk's page of one person (one per person: several tabs).
pub(crate) fn helpdesk_form(directory: &str, anchor: &str) -> String {
    format!("helpdesk:{directory}|{anchor}")
}

/// The keys a session keeps at once of one kind of form (several helpdesk tabs); beyond it, the
/// oldest of that kind goes first.
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
        let kind = |p: &str| p.split(':').next().unwrap_or_default().to_string();
        let mine = kind(self.0);
        let mut excess = keys.iter().filter(|(p, _)| kind(p) == mine).count().saturating_sub(KEPT_FORM_KEYS);
        keys.retain(|(p, _)| {
            let evict = excess > 0 && kind(p) == mine;
            excess -= usize::from(evict);
            !evict
        });
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

    /// [`Self::take`], or, while the session holds no key of its own for this form, a key
    /// [`Self::current_or_signed`] signed: only the writeback claim of its message id makes that
    /// one single-use.
    pub(crate) async fn take_or_signed(
        &self,
        session: &Session,
        sent: &str,
        mac: &MacKey,
    ) -> Result<Option<MsgId>, PortalError> {
        let held = ALL_FORM_KEYS.get(session).await?.unwrap_or_default().iter().any(|(p, _)| p == self.0);
        if held {
            return self.take(session, sent).await;
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

    /// [`Self::take`] as `(key, true)`; or else the key as sent, `(key, false)`: a form sent
    /// before (reloaded after its answer was lost, say), which only finds what its first sending
    /// came to and never acts: a key not taken is never claimed.
    pub(crate) async fn take_or_again(
        &self,
        session: &Session,
        sent: &str,
    ) -> Result<Option<(MsgId, bool)>, PortalError> {
        Ok(or_again(self.take(session, sent).await?, sent))
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

/// A key taken now, `(key, true)`, or else the key as sent, `(key, false)` (see
/// [`FormKey::take_or_again`]).
pub(crate) fn or_again(taken: Option<MsgId>, sent: &str) -> Option<(MsgId, bool)> {
    match taken {
        Some(id) => Some((id, true)),
        None => MsgId::parse(sent).ok().map(|id| (id, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new session (nothing is loaded from the store, nor saved to it).
    async fn session() -> Session {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        Session::new(None, std::sync::Arc::new(tower_sessions_sqlx_store::SqliteStore::new(pool)), None)
    }

    #[tokio::test]
    async fn a_form_key_is_taken_once_and_only_for_its_own_form() {
        let s = session().await;
        let key = RESET_FORM.current(&s).await.unwrap();
        assert_eq!(RESET_FORM.current(&s).await.unwrap(), key, "shown again, the same key");
        assert_eq!(CHANGE_FORM.take(&s, &key).await.unwrap(), None, "not another form's");
        assert_eq!(RESET_FORM.take(&s, "a-key-of-nobodys").await.unwrap(), None);
        assert_eq!(
            RESET_FORM.take(&s, &key).await.unwrap().map(String::from),
            Some(key.clone()),
            "a wrong key spent nothing"
        );
        assert_eq!(RESET_FORM.take(&s, &key).await.unwrap(), None, "once");
        assert_ne!(RESET_FORM.current(&s).await.unwrap(), key, "the next form gets a new one");
    }

    #[tokio::test]
    async fn many_helpdesk_pages_never_push_out_another_forms_key() {
        let s = session().await;
        let reset = RESET_FORM.current(&s).await.unwrap();
        let first = helpdesk_form("corp", "person-0");
        let oldest = FormKey(&first).renew(&s).await.unwrap();
        for i in 1..=KEPT_FORM_KEYS {
            FormKey(&helpdesk_form("corp", &format!("person-{i}"))).renew(&s).await.unwrap();
        }
        assert_eq!(FormKey(&first).take(&s, &oldest).await.unwrap(), None, "the oldest person page went");
        assert!(RESET_FORM.take(&s, &reset).await.unwrap().is_some(), "the reset form's key stayed");
    }

    #[tokio::test]
    async fn a_signed_change_key_is_taken_only_while_the_session_holds_none() {
        let mac = crate::crypto::DataKey::from_base64(&crate::crypto::DataKey::generate_base64()).unwrap().derive("t");
        let s = session().await;
        let signed = CHANGE_FORM.current_or_signed(&s, &mac).await.unwrap();
        assert!(signed.contains('.'), "a page view without a session is signed: {signed}");
        let forged = format!("{}.0000000000000000", signed.split_once('.').unwrap().0);
        assert_eq!(CHANGE_FORM.take_or_signed(&s, &forged, &mac).await.unwrap(), None, "a forged signature");
        assert!(CHANGE_FORM.take_or_signed(&s, &signed, &mac).await.unwrap().is_some());
        let own = CHANGE_FORM.current(&s).await.unwrap();
        assert_eq!(CHANGE_FORM.take_or_signed(&s, &signed, &mac).await.unwrap(), None, "the session has its own now");
        assert!(CHANGE_FORM.take_or_signed(&s, &own, &mac).await.unwrap().is_some());
    }
}
