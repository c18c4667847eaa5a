//! Passkeys, on the relying party's side (WebAuthn Level 3, through `webauthn_rp`): registering
//! one, and checking one at a gate or at the first step of a reset. Rows have a kind (person or
//! staff) so a staff member's passkey can never stand in for a person's.
//!
//! * The relying party id is `server.public_url`'s host; the only origin accepted is that URL's.
//!   A portal reached by an IP address has no passkeys (browsers refuse them there).
//! * Every ceremony asks for user verification and no attestation.
//! * A challenge lives in this session only, for five minutes, and is spent once. The first
//!   answer takes it out of the session, and the database remembers it as spent, so a second
//!   answer fails even when two instances get it at once.
//! * Signature counters only go up. A passkey whose counter goes back (a copied authenticator)
//!   is refused, as is one used twice at once.
//! * The credential id and public key are sealed per row; a row is found by a keyed hash of the
//!   credential id. Neither is ever logged.
//! * Every failure has a reason in words for the audit ([`Refused::why`]); the person is only
//!   told it did not work.

use super::session::{self, Key};
use super::{AppState, PortalError};
use crate::store::passkeys::{self, Kind, Owner};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use webauthn_rp::bin::{Decode, Encode};
use webauthn_rp::request::auth::{AuthenticationVerificationOptions, DiscoverableCredentialRequestOptions};
use webauthn_rp::request::register::{
    CredProtect, Nickname, PublicKeyCredentialUserEntity, RegistrationVerificationOptions, UserHandle16, Username,
};
use webauthn_rp::request::{AsciiDomain, ExtensionInfo, PublicKeyCredentialDescriptor, RpId};
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::register::error::RegCeremonyErr;
use webauthn_rp::response::register::{DynamicState, StaticState};
use webauthn_rp::response::{AuthTransports, CredentialId};
use webauthn_rp::{
    AuthenticatedCredential, DiscoverableAuthentication16, DiscoverableAuthenticationServerState,
    PublicKeyCredentialCreationOptions, Registration, RegistrationServerState,
};

/// How long a challenge may be answered (the browser is told the same).
const CEREMONY_SECS: i64 = 300;

/// A ceremony under way in this session: its state, and when it began (by the portal's clock).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ceremony {
    state: String,
    at: i64,
}

const REGISTERING: Key<Ceremony> = Key::new(session::PASSKEY_REGISTERING);
const ASSERTING: Key<Ceremony> = Key::new(session::PASSKEY_ASSERTING);

/// Why a passkey was not accepted, for the audit (the person only hears that it did not work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No challenge waits in this session: never asked, answered before, or from another one.
    NoChallenge,
    /// The challenge was older than five minutes.
    Expired,
    /// The challenge was spent before (by another answer, on any instance).
    Replayed,
    /// The answer was for another challenge than the one this session was given.
    OtherChallenge,
    /// Made on another site (or for another relying party id).
    WrongOrigin,
    /// The signature counter did not go up: a copied authenticator.
    CounterWentBack,
    /// Two uses of the same passkey at once.
    UsedAtOnce,
    /// The authenticator did not verify the person (no PIN or biometric).
    NotVerified,
    /// No passkey here has this credential id (removed, or never registered), or it is someone
    /// else's.
    Unknown,
    /// Registered already.
    AlreadyRegistered,
    /// Not a well-formed answer, or a wrong signature.
    Invalid,
    /// This portal cannot use passkeys (reached by an IP address, or passkeys are off).
    Unavailable,
}

impl Refused {
    pub(crate) fn why(self) -> &'static str {
        match self {
            Refused::NoChallenge => "passkey refused: no challenge waits in this session",
            Refused::Expired => "passkey refused: the challenge expired",
            Refused::Replayed => "passkey refused: the challenge was used before",
            Refused::OtherChallenge => "passkey refused: signed for another challenge",
            Refused::WrongOrigin => "passkey refused: made for another origin",
            Refused::CounterWentBack => {
                "passkey refused: its signature counter went backwards (a copied authenticator?)"
            }
            Refused::UsedAtOnce => "passkey refused: used twice at once",
            Refused::NotVerified => "passkey refused: the authenticator did not verify the person",
            Refused::Unknown => "passkey refused: not registered here",
            Refused::AlreadyRegistered => "passkey refused: registered already",
            Refused::Invalid => "passkey refused: malformed or wrong signature",
            Refused::Unavailable => "passkeys are not available on this portal",
        }
    }
}

/// A refused passkey, and whose it was when that is known (never shown: for the audit).
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub why: Refused,
    /// The owner's (directory, anchor), once the passkey was found.
    pub owner: Option<(String, String)>,
}

impl From<Refused> for Refusal {
    fn from(why: Refused) -> Refusal {
        Refusal { why, owner: None }
    }
}

/// A copy of someone's passkey was refused: their own audit says so (where the helpdesk looks),
/// whoever was being verified at the time.
pub(crate) async fn tell_owner(
    st: &AppState,
    client: std::net::IpAddr,
    support: &super::SupportCode,
    refusal: &Refusal,
) -> Result<(), PortalError> {
    let (Refused::CounterWentBack, Some((directory, anchor))) = (refusal.why, &refusal.owner) else {
        return Ok(());
    };
    let Some(row) = crate::store::users::get(&st.db, directory, anchor).await? else { return Ok(()) };
    let target = super::people::target_of(st, &row).await?;
    let client = std::net::SocketAddr::new(client, 0);
    let attempt = super::people::Attempt { st, client, audit_name: &target.username, target: Some(&target), support };
    let raw = "a copy of one of this person's passkeys was refused: its signature counter went backwards";
    attempt.audit("security.passkey_copied", &crate::domain::Outcome::VerificationFailed, raw).await?;
    Ok(())
}

fn from_auth(e: &AuthCeremonyErr) -> Refused {
    match e {
        AuthCeremonyErr::Timeout => Refused::Expired,
        AuthCeremonyErr::ChallengeMismatch => Refused::OtherChallenge,
        AuthCeremonyErr::OriginMismatch
        | AuthCeremonyErr::CrossOrigin
        | AuthCeremonyErr::TopOriginMismatch
        | AuthCeremonyErr::RpIdHashMismatch => Refused::WrongOrigin,
        AuthCeremonyErr::SignatureCounter => Refused::CounterWentBack,
        AuthCeremonyErr::UserNotVerified => Refused::NotVerified,
        AuthCeremonyErr::UserHandleMismatch | AuthCeremonyErr::CredentialIdMismatch => Refused::Unknown,
        _ => Refused::Invalid,
    }
}

fn from_reg(e: &RegCeremonyErr) -> Refused {
    match e {
        RegCeremonyErr::Timeout => Refused::Expired,
        RegCeremonyErr::ChallengeMismatch => Refused::OtherChallenge,
        RegCeremonyErr::OriginMismatch
        | RegCeremonyErr::CrossOrigin
        | RegCeremonyErr::TopOriginMismatch
        | RegCeremonyErr::RpIdHashMismatch => Refused::WrongOrigin,
        RegCeremonyErr::UserNotVerified | RegCeremonyErr::UserNotPresent => Refused::NotVerified,
        _ => Refused::Invalid,
    }
}

/// The relying party: its id (the public URL's host name) and the one origin it accepts.
struct Rp {
    id: RpId,
    origin: String,
}

fn rp(st: &AppState) -> Option<Rp> {
    rp_of(&st.cfg.server.public_url)
}

fn rp_of(public_url: &str) -> Option<Rp> {
    let url = url::Url::parse(public_url).ok()?;
    let Some(url::Host::Domain(host)) = url.host() else { return None };
    let id = RpId::Domain(AsciiDomain::try_from(host.to_owned()).ok()?);
    Some(Rp { id, origin: url.origin().ascii_serialization() })
}

/// Whether passkeys can be used here at all: enabled, and the portal has a host name.
pub(crate) fn available(st: &AppState) -> bool {
    st.cfg.gates.methods.contains(&crate::config::GateMethod::Passkey) && rp(st).is_some()
}

/// Said at start-up when passkeys are enabled but cannot work at this address.
pub fn warn_if_unusable(cfg: &crate::config::PortalConfig) {
    if !usable(cfg) {
        tracing::warn!(
            public_url = %cfg.server.public_url,
            "passkeys are enabled but server.public_url has no host name (browsers refuse passkeys for an IP \
             address): none will be offered"
        );
    }
}

/// Whether passkeys, where enabled, can be offered (the public URL names a host).
pub fn usable(cfg: &crate::config::PortalConfig) -> bool {
    !cfg.gates.methods.contains(&crate::config::GateMethod::Passkey) || rp_of(&cfg.server.public_url).is_some()
}

/// The user handle the authenticator keeps for the owner: a keyed hash, so it names nobody and
/// is the same for each of their passkeys.
fn user_handle(st: &AppState, owner: Owner<'_>) -> UserHandle16 {
    let hash = st.code_key.hash(&[
        b"passkey-user",
        owner.kind.as_str().as_bytes(),
        owner.directory.as_bytes(),
        owner.anchor.as_bytes(),
    ]);
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hash[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    UserHandle16::decode(bytes).unwrap_or_else(|never| match never {})
}

/// Where a credential id is found: a keyed hash of it.
fn lookup(st: &AppState, credential_id: &[u8]) -> String {
    st.code_key.hash(&[b"passkey-credential", credential_id])
}

/// What is sealed per row: the credential id, how the browser may reach its authenticator, and
/// the public key.
struct Sealed {
    credential_id: Vec<u8>,
    transports: u8,
    static_state: Vec<u8>,
}

impl Sealed {
    fn seal(&self, st: &AppState, owner: Owner<'_>, id: &str) -> Vec<u8> {
        let mut plain =
            zeroize::Zeroizing::new(Vec::with_capacity(3 + self.credential_id.len() + self.static_state.len()));
        plain.extend_from_slice(&u16::try_from(self.credential_id.len()).unwrap_or(u16::MAX).to_be_bytes());
        plain.extend_from_slice(&self.credential_id);
        plain.push(self.transports);
        plain.extend_from_slice(&self.static_state);
        st.secrets.encrypt(&owner.context(id), &plain)
    }

    fn unseal(st: &AppState, owner: Owner<'_>, row: &passkeys::Row) -> anyhow::Result<Sealed> {
        let plain = st.secrets.decrypt(&owner.context(&row.id), &row.sealed)?;
        let Some(&[high, low]) = plain.get(..2) else { anyhow::bail!("sealed passkey is truncated") };
        let n = usize::from(u16::from_be_bytes([high, low]));
        let (Some(credential_id), Some(&transports), Some(static_state)) =
            (plain.get(2..2 + n), plain.get(2 + n), plain.get(3 + n..))
        else {
            anyhow::bail!("sealed passkey is truncated")
        };
        Ok(Sealed { credential_id: credential_id.to_vec(), transports, static_state: static_state.to_vec() })
    }
}

fn json(value: &impl Serialize) -> Result<String, PortalError> {
    Ok(serde_json::to_string(value).map_err(anyhow::Error::from)?)
}

// ---- registering ----

/// Starts registering a passkey for `owner` (shown to the authenticator as `username`): the
/// options for `navigator.credentials.create`, as JSON. The owner's passkeys are excluded, so
/// one authenticator is not registered twice.
pub(crate) async fn begin_registration(
    st: &AppState,
    session: &Session,
    owner: Owner<'_>,
    username: &str,
    display_name: &str,
) -> Result<Option<String>, PortalError> {
    let Some(rp) = rp(st) else { return Ok(None) };
    let mut exclude = Vec::new();
    for row in passkeys::of(&st.db, owner).await? {
        let sealed = Sealed::unseal(st, owner, &row)?;
        exclude.push(PublicKeyCredentialDescriptor {
            id: CredentialId::decode(sealed.credential_id).map_err(|e| anyhow::anyhow!("stored credential id: {e}"))?,
            transports: AuthTransports::decode(sealed.transports).map_err(|e| anyhow::anyhow!("{e}"))?,
        });
    }
    let handle = user_handle(st, owner);
    // The name the authenticator shows among its passkeys. A directory's user name may hold what
    // WebAuthn's user names may not (AD allows spaces): then as near to it as they allow.
    let near = username.split_whitespace().collect::<Vec<_>>().join("_");
    let name = Username::try_from(username)
        .or_else(|_| Username::try_from(near.as_str()))
        .or_else(|_| Username::try_from("passback"))
        .map_err(|e| anyhow::anyhow!("user name for a passkey: {e}"))?;
    let user = PublicKeyCredentialUserEntity { name, id: &handle, display_name: Nickname::try_from(display_name).ok() };
    let mut options = PublicKeyCredentialCreationOptions::passkey(&rp.id, user, exclude);
    // Asked for, not insisted on: every use here asks for user verification anyway, and an
    // authenticator without the extension must still be able to make a passkey.
    options.extensions.cred_protect = CredProtect::UserVerificationRequired(ExtensionInfo::AllowDontEnforceValue);
    let (state, client) = options.start_ceremony().map_err(|e| anyhow::anyhow!("passkey options: {e}"))?;
    let encoded = state.encode().map_err(|e| anyhow::anyhow!("passkey ceremony: {e}"))?;
    REGISTERING.set(session, &Ceremony { state: hex::encode(encoded), at: st.clock.now() }).await?;
    Ok(Some(json(&client)?))
}

/// Finishes registering: checks the authenticator's answer against the ceremony this session
/// began, and keeps the passkey under `name`.
pub(crate) async fn finish_registration(
    st: &AppState,
    session: &Session,
    owner: Owner<'_>,
    answer: &str,
    name: &str,
) -> Result<Result<(), Refused>, PortalError> {
    let Some(rp) = rp(st) else { return Ok(Err(Refused::Unavailable)) };
    let state = match take(st, session, &REGISTERING).await? {
        Ok(state) => state,
        Err(refused) => return Ok(Err(refused)),
    };
    let registration = match Registration::from_json_relaxed(answer.as_bytes()) {
        Ok(r) => r,
        Err(_) => {
            // The library's words may quote the credential id: they are not logged.
            tracing::info!("a passkey's registration was not well-formed JSON");
            return Ok(Err(Refused::Invalid));
        }
    };
    if let Err(refused) = spend(st, registration.challenge_relaxed().ok()).await? {
        return Ok(Err(refused));
    }
    let state = RegistrationServerState::<16>::decode(state.as_slice()).map_err(|e| undecodable(&e))?;
    let origins = [rp.origin.as_str()];
    let options = RegistrationVerificationOptions::<&str, &str> {
        allowed_origins: &origins,
        error_on_unsolicited_extensions: false,
        ..RegistrationVerificationOptions::default()
    };
    let credential = match state.verify(&rp.id, &registration, &options) {
        Ok(c) => c,
        Err(e) => {
            // What the library found wrong (never the credential itself), for an administrator.
            tracing::info!(error = %e, allowed = %rp.origin, "a passkey's registration was refused");
            return Ok(Err(from_reg(&e)));
        }
    };
    if credential.user_id() != &user_handle(st, owner) {
        return Ok(Err(Refused::Unknown));
    }
    let static_state = credential.static_state().encode().map_err(|e| anyhow::anyhow!("{e}"))?;
    let dynamic = credential.dynamic_state().encode().map_err(|e| anyhow::anyhow!("{e}"))?;
    let credential_id: &[u8] = credential.id().into_inner();
    let transports = credential.transports().encode().map_err(|e| anyhow::anyhow!("{e}"))?;
    let sealed = Sealed { credential_id: credential_id.to_vec(), transports, static_state };
    let id = uuid::Uuid::new_v4().to_string();
    let new = passkeys::New {
        id: &id,
        lookup: &lookup(st, credential_id),
        sealed: &sealed.seal(st, owner, &id),
        dynamic: &dynamic,
        name,
        now: st.clock.now(),
    };
    if !passkeys::insert(&st.db, owner, &new).await? {
        return Ok(Err(Refused::AlreadyRegistered));
    }
    Ok(Ok(()))
}

// ---- using one ----

/// Starts a check: the options for `navigator.credentials.get`, as JSON. No credential is
/// listed (the authenticator offers the passkeys it holds for this site), so the options say
/// nothing of whose they are, or whether the name typed is anybody's. A new challenge replaces
/// any this session had.
pub(crate) async fn begin_assertion(st: &AppState, session: &Session) -> Result<Option<String>, PortalError> {
    let Some(rp) = rp(st) else { return Ok(None) };
    let (state, client) = DiscoverableCredentialRequestOptions::passkey(&rp.id)
        .start_ceremony()
        .map_err(|e| anyhow::anyhow!("passkey options: {e}"))?;
    let encoded = state.encode().map_err(|e| anyhow::anyhow!("passkey ceremony: {e}"))?;
    ASSERTING.set(session, &Ceremony { state: hex::encode(encoded), at: st.clock.now() }).await?;
    Ok(Some(json(&client)?))
}

/// The options for a passkey asked for on a page that has no ceremony of its own yet (the first
/// step of a reset, a staff sign-in), as JSON for its script: the same for everyone.
pub(crate) async fn options(
    super::extract::Posted { session, st, client, .. }: super::extract::Posted<super::extract::Button>,
) -> Result<axum::response::Response, PortalError> {
    use axum::response::IntoResponse;
    if !st.address_allowed(client.ip()).await? {
        return Ok(super::error::too_many());
    }
    match begin_assertion(&st, &session).await? {
        Some(json) => Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Ok(axum::http::StatusCode::NOT_FOUND.into_response()),
    }
}

/// A passkey that signed this session's challenge.
#[derive(Debug, Clone)]
pub(crate) struct Asserted {
    pub directory: String,
    pub anchor: String,
}

/// Checks an answer to this session's challenge by a passkey of `kind`, and records its use.
/// Whose it is, is for the caller to compare.
pub(crate) async fn finish_assertion(
    st: &AppState,
    session: &Session,
    kind: Kind,
    answer: &str,
) -> Result<Result<Asserted, Refusal>, PortalError> {
    let Some(rp) = rp(st) else { return Ok(Err(Refused::Unavailable.into())) };
    let state = match take(st, session, &ASSERTING).await? {
        Ok(state) => state,
        Err(refused) => return Ok(Err(refused.into())),
    };
    let authentication = match DiscoverableAuthentication16::from_json_relaxed(answer.as_bytes()) {
        Ok(a) => a,
        Err(_) => {
            tracing::info!("a passkey's answer was not well-formed JSON");
            return Ok(Err(Refused::Invalid.into()));
        }
    };
    if let Err(refused) = spend(st, authentication.challenge_relaxed().ok()).await? {
        return Ok(Err(refused.into()));
    }
    let state = DiscoverableAuthenticationServerState::decode(state.as_slice()).map_err(|e| undecodable(&e))?;
    let raw_id: &[u8] = authentication.raw_id().into_inner();
    let Some(row) = passkeys::find(&st.db, kind, &lookup(st, raw_id)).await? else {
        return Ok(Err(Refused::Unknown.into()));
    };
    let owner = Owner { kind, directory: &row.directory, anchor: &row.anchor };
    // From here on, a refusal is of this owner's passkey (a copy of it, say): the audit says so.
    let of_owner = |why: Refused| Refusal { why, owner: Some((row.directory.clone(), row.anchor.clone())) };
    let sealed = Sealed::unseal(st, owner, &row)?;
    let static_state =
        StaticState::decode(sealed.static_state.as_slice()).map_err(|e| anyhow::anyhow!("stored passkey key: {e}"))?;
    let before: [u8; 7] =
        row.dynamic.as_slice().try_into().map_err(|_| anyhow::anyhow!("stored passkey counter is not 7 bytes"))?;
    let dynamic = DynamicState::decode(before).map_err(|e| anyhow::anyhow!("stored passkey counter: {e}"))?;
    let handle = user_handle(st, owner);
    let id = CredentialId::decode(sealed.credential_id.as_slice()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut credential = AuthenticatedCredential::new(id, &handle, static_state, dynamic)
        .map_err(|e| anyhow::anyhow!("stored passkey: {e}"))?;
    let origins = [rp.origin.as_str()];
    let options = AuthenticationVerificationOptions::<&str, &str> {
        allowed_origins: &origins,
        error_on_unsolicited_extensions: false,
        update_uv: true,
        ..AuthenticationVerificationOptions::default()
    };
    if let Err(e) = state.verify(&rp.id, &authentication, &mut credential, &options) {
        tracing::info!(error = %e, "a passkey was refused");
        return Ok(Err(of_owner(from_auth(&e))));
    }
    let after = credential.dynamic_state().encode().map_err(|e| anyhow::anyhow!("{e}"))?;
    if !passkeys::used(&st.db, &row.id, &before, &after, st.clock.now()).await? {
        return Ok(Err(of_owner(Refused::UsedAtOnce)));
    }
    Ok(Ok(Asserted { directory: row.directory, anchor: row.anchor }))
}

/// This session's ceremony, taken out (it is answered once, rightly or not): its state, unless
/// there is none or it is older than five minutes.
async fn take(st: &AppState, session: &Session, key: &Key<Ceremony>) -> Result<Result<Vec<u8>, Refused>, PortalError> {
    let Some(ceremony) = key.take(session).await? else { return Ok(Err(Refused::NoChallenge)) };
    if st.clock.now() - ceremony.at > CEREMONY_SECS {
        return Ok(Err(Refused::Expired));
    }
    Ok(Ok(hex::decode(&ceremony.state).map_err(|e| undecodable(&e))?))
}

fn undecodable(e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("a passkey ceremony in the session does not decode: {e}")
}

/// Marks the challenge an answer was signed over as spent, for as long as it could be answered,
/// on every instance: a second answer to it is refused. (The answer is checked against this
/// session's own challenge afterwards; a session holds one at a time, so no more than one is
/// spent per challenge given.)
async fn spend(
    st: &AppState,
    challenge: Option<webauthn_rp::response::SentChallenge>,
) -> Result<Result<(), Refused>, PortalError> {
    let Some(challenge) = challenge else { return Ok(Err(Refused::Invalid)) };
    let nonce = format!("passkey:{:032x}", challenge.0);
    let until = st.clock.now() + CEREMONY_SECS + 60;
    let fresh = crate::store::security::spend_challenge(&st.db, &nonce, until).await?;
    Ok(if fresh { Ok(()) } else { Err(Refused::Replayed) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_relying_party_is_the_public_urls_host_and_an_address_has_none() {
        let rp = super::rp_of("https://passwords.example.org:8443/reset").unwrap();
        assert_eq!(rp.origin, "https://passwords.example.org:8443");
        assert!(matches!(rp.id, webauthn_rp::request::RpId::Domain(ref d) if d.as_ref() == "passwords.example.org"));
        assert!(super::rp_of("https://192.0.2.7/").is_none());
        assert!(super::rp_of("https://[2001:db8::1]:8443/").is_none());
    }
}
