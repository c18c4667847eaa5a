//! Setting a password wherever it lives: written back through the relay (synced people), and the
//! portal's own argon2id hashes (cloud-only and hash-synced people), computed off the async
//! workers, under the cloud password policy.

use super::{Host, Target};
use crate::config::{CloudPolicyConfig, PolicyProfile};
use crate::domain::UserKind;
use crate::domain::{meets_ad_complexity, AccountState, Anchor, DirectoryId, MsgId, NewPassword, Outcome, PolicyFacts};
use crate::envelope::{Flags, Op};
use crate::expiring::Expiring;
use crate::relay::{WritebackRequest, WritebackResult};
use crate::store;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

/// Argon2 hashes computed at once, at most: each takes ~19 MiB and a core for ~20 ms, so a burst
/// of requests waits its turn instead of exhausting memory.
async fn argon2_permit() -> Option<tokio::sync::SemaphorePermit<'static>> {
    static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
    PERMITS.acquire().await.ok()
}

/// An argon2id PHC string of `password`, made on the blocking pool. What is hashed is the
/// password as it is compared (NFKC, see [`crate::domain::nist`]): typed on another keyboard or
/// pasted in another form, the same password still matches.
pub async fn hash(password: &SecretString) -> anyhow::Result<String> {
    let _permit = argon2_permit().await;
    let password = crate::domain::nist::normalised(password.expose_secret());
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })
    .await?
}

/// The cloud policy's verdict on a new password: `None` when it passes. Under the NIST
/// SP 800-63B-4 profile there is no composition rule (its length is checked with the portal's
/// other rules, for everyone).
pub fn cloud_rule(st: &Host, password: &NewPassword, username: &str) -> Option<Outcome> {
    let policy = &st.cfg.cloud_policy;
    if (password.expose().chars().count() as u64) < u64::from(policy.min_length) {
        return Some(Outcome::TooShort { min_length: Some(policy.min_length) });
    }
    if complexity_applies(st, policy) && !meets_ad_complexity(password.expose(), username) {
        return Some(Outcome::NotComplex);
    }
    None
}

/// Whether the cloud policy's composition rule holds: not under SP 800-63B-4, which forbids it.
fn complexity_applies(st: &Host, policy: &CloudPolicyConfig) -> bool {
    policy.complexity && st.rules.current().cfg.profile != PolicyProfile::Nist80063b4
}

/// The cloud policy as the new-password form states it.
pub fn cloud_facts(st: &Host) -> PolicyFacts {
    let policy = &st.cfg.cloud_policy;
    PolicyFacts {
        min_length: Some(policy.min_length),
        history: None,
        min_age_secs: None,
        max_age_secs: None,
        complexity: Some(complexity_applies(st, policy)),
        lockout_threshold: None,
        lockout_duration_secs: None,
        history_on_reset: None,
    }
}

/// How long a live read of an account is reused: long enough for one visit to a form and its
/// refusals, short enough that a changed policy or state shows within a minute.
const LIVE_FOR_SECS: i64 = 60;
/// How long a page waits for the directory's live answer before it goes on without it.
const LIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Live reads of accounts, by (directory, anchor). Each portal instance keeps its own: a copy a
/// minute old is only ever used to word a page, never to decide what the directory does.
/// A read that failed is kept too (as `None`), so that a page shown again within the minute does
/// not wait for an agent that did not answer.
#[derive(Default)]
pub struct LiveCache(Expiring<(String, String), Option<AccountState>>);

impl LiveCache {
    /// The read kept for `target`, if there is one (`Some(None)`: it failed).
    fn get(&self, target: &Target, now: i64) -> Option<Option<AccountState>> {
        self.0.get(&(target.directory.clone(), target.anchor.clone()), now)
    }

    fn put(&self, target: &Target, now: i64, state: Option<&AccountState>) {
        let key = (target.directory.clone(), target.anchor.clone());
        self.0.put(key, state.cloned(), now + LIVE_FOR_SECS, now);
    }

    /// Forgets the person's account: something was just written to it.
    fn forget(&self, directory: &str, anchor: &str) {
        self.0.remove(&(directory.to_string(), anchor.to_string()));
    }
}

/// A directory's default policy, as its agent last reported it (see [`crate::relay::Hub::policies`]).
pub async fn directory_policy(st: &Host, directory: &str) -> anyhow::Result<Option<PolicyFacts>> {
    let now = st.clock.now();
    let key = directory.to_string();
    if let Some(kept) = st.hub.policies.get(&key, now) {
        return Ok(Some(kept));
    }
    let facts: Option<PolicyFacts> =
        store::users::policy(&st.db, directory).await?.and_then(|json| serde_json::from_str(&json).ok());
    // None reported yet: asked again next time.
    if let Some(f) = &facts {
        st.hub.policies.put(key, f.clone(), now + LIVE_FOR_SECS, now);
    }
    Ok(facts)
}

/// The account as the directory has it now, read by the agent (nothing is written) on behalf of
/// `actor`, or why it could not be read (in the person's words). A cloud-only account is the
/// portal's own.
pub async fn live_state(st: &Host, actor: &str, target: &Target) -> Result<AccountState, String> {
    let tr = crate::i18n::Tr::current();
    if target.kind == UserKind::CloudOnly {
        return match store::cloud::must_change(&st.db, &target.anchor).await {
            Ok(must_change) => Ok(AccountState {
                enabled: true,
                must_change,
                policy: Some(cloud_facts(st)),
                ..AccountState::default()
            }),
            Err(_) => Err(tr.t("helpdesk.live_unreadable").into()),
        };
    }
    let by = Requester { actor, flags: Flags::default() };
    let now = st.clock.now();
    let read = relay(st, by, target, MsgId::random(), Op::Inspect, (None, None), now);
    match tokio::time::timeout(LIVE_WAIT, read).await {
        Ok(Ok(r)) if r.outcome.is_success() => {
            // The relay puts the agent's name first, for the audit.
            let state = AccountState::from_raw(r.raw.find('{').map_or("", |i| &r.raw[i..]))
                .ok_or_else(|| String::from(tr.t("helpdesk.live_unreadable")))?;
            st.live.put(target, now, Some(&state));
            Ok(state)
        }
        Ok(Ok(r)) => Err(format!("{} ({})", r.outcome.message(tr), r.outcome.code())),
        Ok(Err(_)) | Err(_) => Err(tr.t("helpdesk.live_unanswered").into()),
    }
}

/// The account as a page read it within the last minute, without asking the directory again
/// (`None`: no read kept, or it failed).
pub fn kept(st: &Host, target: &Target) -> Option<AccountState> {
    st.live.get(target, st.clock.now()).flatten()
}

/// The account as its directory had it within the last minute (read now if need be), for the
/// self-service pages; `None` when it cannot be read (they then go on with what the last sync
/// said, and the directory still decides when the form is sent).
pub async fn live(st: &Host, target: &Target) -> Option<AccountState> {
    let now = st.clock.now();
    if let Some(kept) = st.live.get(target, now) {
        return kept;
    }
    let state = live_state(st, Requester::SELF_SERVICE.actor, target).await.ok();
    if state.is_none() {
        st.live.put(target, now, None);
    }
    state
}

/// The rules a new password must meet, as the form states them before the person types: the
/// cloud policy, or the person's own (resultant) policy as their directory has it now, else as
/// their directory last reported its default. Without a person yet (the change form before it
/// is sent), the policy of the only directory, if there is just one.
pub async fn policy_facts(st: &Host, target: Option<&Target>) -> Option<PolicyFacts> {
    let live_policy = match target {
        Some(t) if t.kind != UserKind::CloudOnly => live(st, t).await.and_then(|s| s.policy),
        _ => None,
    };
    let facts: PolicyFacts = match (target, live_policy) {
        (Some(t), _) if t.kind == UserKind::CloudOnly => cloud_facts(st),
        (_, Some(policy)) => policy,
        _ => {
            let directory = match target {
                Some(t) => t.directory.clone(),
                None if st.cfg.directories.len() == 1 => st.cfg.directories.keys().next()?.clone(),
                None => return None,
            };
            directory_policy(st, &directory).await.ok().flatten()?
        }
    };
    Some(with_portal_length(st, false, facts))
}

/// `facts` with the portal's own minimum length where it is longer (SP 800-63B-4's 15, or 8
/// where sign-ins ask for a second factor, as for `second_factor` staff).
pub fn with_portal_length(st: &Host, second_factor: bool, mut facts: PolicyFacts) -> PolicyFacts {
    let rules = st.rules.current();
    if rules.cfg.profile != PolicyProfile::Nist80063b4 {
        return facts;
    }
    let min = crate::domain::nist::min_length(second_factor || rules.cfg.multi_factor_sign_in);
    facts.min_length = Some(facts.min_length.map_or(min, |m| m.max(min)));
    facts
}

/// Who asks for a writeback, and what goes with it.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// `self-service`, or `staff:<user name>`: named in the sealed request and the agent's log.
    pub actor: &'a str,
    pub flags: Flags,
}

impl Requester<'static> {
    const NO_FLAGS: Flags = Flags { must_change: false, unlock: false, allow_protected: false, keep_history: false };
    pub const SELF_SERVICE: Requester<'static> = Requester { actor: "self-service", flags: Self::NO_FLAGS };
    /// A forgotten password: the new one must work at once, so the reset also lifts a lockout
    /// (AD keeps an account locked through a reset; the agent checks that it is not).
    pub const FORGOTTEN: Requester<'static> =
        Requester { actor: "self-service", flags: Flags { unlock: true, ..Self::NO_FLAGS } };
}

/// Sets `new` for `target` on behalf of `by`: a reset when `old` is `None`, else a change that
/// first proves `old`. A cloud-only account is handled here; a synced person's directory
/// decides through the relay.
pub async fn apply(
    st: &Host,
    by: Requester<'_>,
    target: &Target,
    msg_id: MsgId,
    new: &NewPassword,
    old: Option<&SecretString>,
    now: i64,
) -> anyhow::Result<WritebackResult> {
    // The portal's own rules, before anything reaches a directory (a cloud account's policy
    // first: "too short" comes before "too easy to guess").
    let cloud_refusal = (target.kind == UserKind::CloudOnly).then(|| cloud_rule(st, new, &target.username)).flatten();
    // A password the portal generated at random was chosen by nobody: the rules against guessable
    // choices do not apply, and it is never sent to a breached-password service.
    if cloud_refusal.is_none() && !new.is_generated() {
        if let Some(refusal) = super::policy::refusal(st, target, new.as_secret()).await? {
            // A change is refused so only to someone who proved the current password: else the
            // answer would tell anyone which names have an account here, and take a wrong
            // current password for a right one.
            if let Some(old) = old {
                let proof = check_current(st, target, old, now).await?;
                if !matches!(proof.outcome, Outcome::Success | Outcome::MustChange | Outcome::PasswordExpired) {
                    // The portal's own answer (nothing of the change was sent): an unanswered
                    // check says the directory could not be asked, not "perhaps changed".
                    let outcome = match proof.outcome {
                        Outcome::AgentTimeout | Outcome::NotWritten => Outcome::DirectoryUnreachable,
                        other => other,
                    };
                    let raw = format!(
                        "the new password is refused by the portal's rules; the current one is not proven: {}",
                        proof.raw
                    );
                    return Ok(local(outcome, &raw, None));
                }
            }
            return Ok(local(refusal, "refused by the portal's password rules, before the directory was asked", None));
        }
    }
    if target.kind == UserKind::CloudOnly {
        return set_cloud_password(st, by, target, new, old, now).await;
    }
    // A synced person: write back and wait for the directory's answer; for a hash-synced person,
    // only after the directory said yes, replace the portal's copy of the hash.
    let op = if old.is_some() { Op::Change } else { Op::Reset };
    let mut result = relay(st, by, target, msg_id, op, (Some(new.as_secret()), old), now).await?;
    if target.kind == UserKind::HashSynced && matches!(result.outcome, Outcome::AgentTimeout | Outcome::NotWritten) {
        // Perhaps the directory has the new password now (the agent that held the request may
        // still carry it out, however a check found it): the portal's copy of the old one must
        // not stay valid meanwhile. The next confirmed reset or change sets it again.
        store::users::delete_password_hash(&st.db, &target.directory, &target.anchor).await?;
        result.raw = format!("{}; portal hash removed until a confirmed change", result.raw);
    }
    if target.kind == UserKind::HashSynced && result.outcome.password_set() {
        let stored = match hash(new.as_secret()).await {
            Ok(hash) => store::users::set_password_hash(&st.db, &target.directory, &target.anchor, &hash, now)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            // The directory has the new password: say so, and that the cloud copy lags.
            tracing::error!(error = %format!("{e:#}"), "updating the portal's password hash after a writeback failed");
            result.outcome = Outcome::SuccessCloudPending;
            result.raw = format!("{}; cloud hash update failed", result.raw);
        }
    }
    Ok(result)
}

fn local(outcome: Outcome, raw: &str, policy: Option<PolicyFacts>) -> WritebackResult {
    WritebackResult { policy, ..WritebackResult::local(outcome, raw) }
}

/// Whether `password` matches an argon2id PHC string, checked on the blocking pool.
pub async fn verify(password: &SecretString, hash: Option<String>) -> bool {
    let _permit = argon2_permit().await;
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        // Without a hash, a check against a hash of a password nobody knows takes the same time.
        let hash = hash.unwrap_or_else(|| dummy_hash().to_string());
        let Ok(hash) = PasswordHash::new(&hash) else { return false };
        let matches = |p: &str| Argon2::default().verify_password(p.as_bytes(), &hash).is_ok();
        let typed = password.expose_secret();
        let normalised = crate::domain::nist::normalised(typed);
        // A hash made before passwords were normalised holds the password as it was typed (the
        // second try depends on the text alone, not on the account).
        matches(&normalised) || (normalised.as_str() != typed && matches(typed))
    })
    .await
    .unwrap_or(false)
}

/// The hash of a random password nobody knows, made once, for checks that must not finish early.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let unknown = crate::store::random_token();
        Argon2::default().hash_password(unknown.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
    })
}

/// A cloud-only account: the portal's own policy, then its own hash. No directory involved.
async fn set_cloud_password(
    st: &Host,
    by: Requester<'_>,
    target: &Target,
    new: &NewPassword,
    old: Option<&SecretString>,
    now: i64,
) -> anyhow::Result<WritebackResult> {
    if let Some(old) = old {
        let stored = store::cloud::password_hash(&st.db, &target.anchor).await?;
        if !verify(old, stored).await {
            return Ok(local(Outcome::OldPasswordWrong, "the current password did not match", None));
        }
    }
    if let Some(rule) = cloud_rule(st, new, &target.username) {
        let policy = Some(cloud_facts(st));
        return Ok(local(rule, "refused by the cloud password policy", policy));
    }
    let hash = hash(new.as_secret()).await?;
    // Set by the helpdesk with "must change": the owner chooses their own at the next sign-in.
    let must_change = old.is_none() && by.flags.must_change;
    if !store::cloud::set_password_hash(&st.db, &target.anchor, &hash, must_change, now).await? {
        anyhow::bail!("cloud account {} vanished while its password was set", target.anchor);
    }
    Ok(local(Outcome::Success, "cloud password set", None))
}

/// Checks a person's current password (sign-in): the portal's own hash for a cloud-only or
/// hash-synced person, else the directory, by a bind the agent makes (sealed like a password).
/// A hash-synced person without a portal hash yet is checked by the directory too.
pub async fn check_current(
    st: &Host,
    target: &Target,
    password: &SecretString,
    now: i64,
) -> anyhow::Result<WritebackResult> {
    let stored = match target.kind {
        UserKind::CloudOnly => Some(store::cloud::password_hash(&st.db, &target.anchor).await?),
        UserKind::HashSynced => store::users::password_hash(&st.db, &target.directory, &target.anchor).await?.map(Some),
        UserKind::Federated => None,
    };
    if let Some(hash) = stored {
        let right = verify(password, hash).await;
        if right && target.kind == UserKind::HashSynced {
            // The portal's hash says nothing of the account's state: the directory's (as synced)
            // is honoured, as a bind would.
            if let Some(row) = store::users::get(&st.db, &target.directory, &target.anchor).await? {
                if !row.enabled {
                    return Ok(local(
                        Outcome::AccountDisabled,
                        "password matched the portal's hash; the directory has the account disabled",
                        None,
                    ));
                }
                if row.locked {
                    return Ok(local(
                        Outcome::AccountLocked,
                        "password matched the portal's hash; the directory has the account locked",
                        None,
                    ));
                }
            }
        }
        let must_change =
            right && target.kind == UserKind::CloudOnly && store::cloud::must_change(&st.db, &target.anchor).await?;
        return Ok(if must_change {
            local(Outcome::MustChange, "password matched; the helpdesk set it, so it must be changed", None)
        } else if right {
            local(Outcome::Success, "password matched the portal's hash", None)
        } else {
            local(Outcome::OldPasswordWrong, "password did not match the portal's hash", None)
        });
    }
    relay(st, Requester::SELF_SERVICE, target, MsgId::random(), Op::Verify, (Some(password), None), now).await
}

/// Sends one sealed request about `target` through the relay and waits for the directory's
/// answer (the agent that served it is named in the raw answer, for the audit).
pub async fn relay(
    st: &Host,
    by: Requester<'_>,
    target: &Target,
    msg_id: MsgId,
    op: Op,
    (password, old_password): (Option<&SecretString>, Option<&SecretString>),
    now: i64,
) -> anyhow::Result<WritebackResult> {
    let (Ok(directory), Ok(anchor)) = (DirectoryId::parse(&target.directory), Anchor::parse(&target.anchor)) else {
        anyhow::bail!("stored person holds malformed ids");
    };
    let request = WritebackRequest {
        msg_id,
        op,
        directory,
        anchor,
        password,
        old_password,
        flags: by.flags,
        actor: by.actor.into(),
    };
    let mut result = st.hub.writeback(request, now).await;
    // What was kept of the account is stale once something was written to it (a refusal wrote
    // nothing; an unconfirmed write keeps the old copy, which only words pages, a minute at most).
    let wrote = result.outcome.password_set() || result.outcome == Outcome::AccountLocked;
    if wrote && !matches!(op, Op::Inspect | Op::Verify | Op::Noop) {
        st.live.forget(&target.directory, &target.anchor);
    }
    if let Some(a) = &result.agent_id {
        result.raw = format!("agent={a} {}", result.raw);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[tokio::test]
    async fn a_password_matches_in_any_form_that_normalises_alike_and_old_hashes_still_match() {
        let full_width = secret("ｐａｓｓ-Ｗｏｒｄ-２０２６");
        let stored = hash(&full_width).await.unwrap();
        assert!(verify(&secret("pass-Word-2026"), Some(stored.clone())).await);
        assert!(verify(&full_width, Some(stored.clone())).await);
        assert!(!verify(&secret("pass-Word-2027"), Some(stored)).await);
        // Made before passwords were normalised: the hash of the text as it was typed.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let typed = "ｐａｓｓ-Ｗｏｒｄ-２０２６".as_bytes();
        let old = Argon2::default().hash_password(typed, &salt).unwrap().to_string();
        assert!(verify(&full_width, Some(old)).await);
    }
}
