//! Staff accounts: adding one, giving one new sign-in credentials, disabling or enabling one.
//! The administrator pages and `passback staff` both call these, so each act is audited (and,
//! for a new sign-in, told to every administrator) the same way whoever asked.

use super::password as passwords;
use super::{By, Ctx};
use crate::crypto::totp;
use crate::store::{self, staff::Role, staff::StaffRow, users::Scope};
use secrecy::SecretString;
use zeroize::Zeroizing;

/// A new staff account, as an administrator describes it.
#[derive(Debug, Clone)]
pub struct StaffSpec {
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub scope: Scope,
    pub may_reset_protected: bool,
}

/// The first sign-in of a new account (or after a reset): shown once, stored only as a hash and
/// as ciphertext.
pub struct Credentials {
    pub id: String,
    pub password: SecretString,
    pub seed: Zeroizing<Vec<u8>>,
}

impl Credentials {
    /// The seed as people type it into an authenticator app.
    pub fn seed_text(&self) -> Zeroizing<String> {
        totp::seed_text(&self.seed)
    }
}

/// Adds a staff account with a random password and authenticator seed for one sign-in, and
/// audits it as `staff.add`. `None` when the user name is taken (nothing is audited then: the
/// page or command says so).
pub async fn add(ctx: &Ctx<'_>, by: &By, spec: &StaffSpec) -> anyhow::Result<Option<Credentials>> {
    let Some(creds) = create(ctx.db, ctx.secrets, spec, ctx.now).await? else { return Ok(None) };
    let raw = format!("role {}, scope: {}", spec.role.as_str(), spec.scope);
    ctx.audit(by, "staff.add", &spec.username, &raw).await?;
    Ok(Some(creds))
}

/// Makes the account, without an audit row (see [`add`]): for tests that need staff.
pub async fn create(
    db: &store::Db,
    secrets: &store::DataKey,
    spec: &StaffSpec,
    now: i64,
) -> anyhow::Result<Option<Credentials>> {
    if let Some(why) = refusal(spec) {
        anyhow::bail!("{why}");
    }
    let username = crate::domain::LoginName::parse(&spec.username).map_err(|e| anyhow::anyhow!("user name: {e}"))?;
    let id = uuid::Uuid::new_v4().to_string();
    let password = crate::crypto::temporary_password();
    let seed = totp::new_seed();
    let hash = passwords::hash(&password).await?;
    let enc = secrets.encrypt(&store::staff::totp_context(&id), &seed);
    let new = store::staff::NewStaff {
        id: &id,
        username: username.as_str(),
        display_name: &spec.display_name,
        email: spec.email.as_deref(),
        role: spec.role,
        scope: &spec.scope,
        may_reset_protected: spec.may_reset_protected,
        password_hash: &hash,
        totp_enc: &enc,
    };
    if !store::staff::add(db, &new, now).await? {
        return Ok(None);
    }
    Ok(Some(Credentials { id, password, seed }))
}

/// New administrator-made credentials for one sign-in (a lost phone or password): the account's
/// sessions end, the owner enrols their own at that sign-in, the act is audited as
/// `staff.reset`, and every administrator is told by e-mail (see [`Ctx::mail_in_background`]; a
/// failed send is logged).
pub async fn reset_signin(ctx: &Ctx<'_>, by: &By, member: &StaffRow) -> anyhow::Result<Credentials> {
    let password = crate::crypto::temporary_password();
    let seed = totp::new_seed();
    let hash = passwords::hash(&password).await?;
    let enc = ctx.secrets.encrypt(&store::staff::totp_context(&member.id), &seed);
    anyhow::ensure!(
        store::staff::set_credentials(ctx.db, &member.id, &hash, &enc, ctx.now).await?,
        "no such staff account"
    );
    // A passkey on the lost phone must not stand in for the new authenticator.
    let owner = store::passkeys::Owner { kind: store::passkeys::Kind::Staff, directory: "", anchor: &member.id };
    let passkeys = store::passkeys::remove_all(ctx.db, owner).await?;
    let raw = format!("new password and authenticator; {passkeys} passkey(s) removed; sessions ended");
    ctx.audit(by, "staff.reset", &member.username, &raw).await?;
    tell_administrators(ctx, by, &member.username).await?;
    Ok(Credentials { id: member.id.clone(), password, seed })
}

/// Disables (its sessions end) or enables an account again, audited.
pub async fn set_enabled(ctx: &Ctx<'_>, by: &By, member: &StaffRow, enable: bool) -> anyhow::Result<()> {
    store::staff::set_enabled(ctx.db, &member.id, enable, ctx.now).await?;
    let (operation, raw) =
        if enable { ("staff.enable", "enabled") } else { ("staff.disable", "disabled; sessions ended") };
    ctx.audit(by, operation, &member.username, raw).await
}

/// Forgets the counted sign-ins typed as `username`, so a staff member held back by the limit
/// can sign in at once; audited. How many were forgotten.
pub async fn clear_signin_limits(ctx: &Ctx<'_>, by: &By, username: &str) -> anyhow::Result<u64> {
    let key = ctx.secrets.derive(crate::crypto::CODE_KEY_PURPOSE);
    let n = store::attempts::clear_all_under(ctx.db, &signin_subject(&key, username)).await?;
    ctx.audit(by, "staff.clear_signin_limits", username, &format!("{n} counted sign-ins forgotten")).await?;
    Ok(n)
}

/// What staff sign-ins typed as `typed` are counted under: a keyed hash of the name (whether or
/// not it is an account's), so the counters name nobody.
pub fn signin_subject(key: &crate::crypto::MacKey, typed: &str) -> String {
    format!("staff-signin|{}", key.hash(&[b"staff-signin", typed.trim().to_lowercase().as_bytes()]))
}

/// E-mails every administrator that `by` gave `member` a new sign-in. A failed send is logged.
async fn tell_administrators(ctx: &Ctx<'_>, by: &By, member: &str) -> anyhow::Result<()> {
    let when = crate::mail::utc_seconds(ctx.now);
    let tr = crate::i18n::Tr::current();
    let mut sending = Vec::new();
    for to in store::staff::administrator_emails(ctx.db).await? {
        let Ok(to) = crate::domain::EmailAddress::parse(&to) else { continue };
        let msg = crate::mail::staff_reset_message(tr, by.name(), member, &when)?;
        let mailer = ctx.mailer.clone();
        sending.push(tokio::spawn(async move {
            if let Err(e) = mailer.send_in_turn(&to, msg).await {
                tracing::error!(error = %format!("{e:#}"), "telling an administrator of a staff reset failed");
            }
        }));
    }
    if !ctx.mail_in_background {
        for s in sending {
            let _ = s.await;
        }
    }
    Ok(())
}

/// Why a new staff account is refused before anything is written, in words for the page or
/// the command line; `None` when it may be added.
pub fn refusal(spec: &StaffSpec) -> Option<String> {
    if let Err(e) = crate::domain::LoginName::parse(&spec.username) {
        return Some(format!("user name: {e}"));
    }
    if let Some(Err(e)) = spec.email.as_deref().map(crate::domain::EmailAddress::parse) {
        return Some(format!("e-mail address: {e}"));
    }
    None
}
