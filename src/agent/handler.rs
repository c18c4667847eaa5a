//! Serving one sealed request: authenticate (AES-GCM) → replay check → decrypt (RSA) → directory
//! → sealed result. A repeated message id is answered from the stored result, never written twice.

use super::Agent;
use crate::directory::{write_now, AccountChange, Answer, BeforeWrite, ResetAs};
use crate::domain::{MsgId, Outcome};
use crate::envelope::{self, Direction, EnvelopeError, FrameKind, Op, RequestPackage, ResultPackage, SealedFrame};
use crate::relay::protocol::Wire;
use futures_util::FutureExt;
use secrecy::SecretString;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The sealed answer to one message, filled once.
/// `None` when no answer could be sealed (nothing is sent).
type Answered = Arc<OnceCell<Option<Wire>>>;

/// Answers already given (or being given), kept until their request would have expired anyway.
pub type ReplayCache = crate::expiring::Expiring<MsgId, Answered>;

/// The cell for `msg_id` in `cache`, and whether it existed before.
fn cell(cache: &ReplayCache, msg_id: &MsgId, expires_at: i64, now: i64) -> (Answered, bool) {
    cache.get_or_put(msg_id, expires_at, now, || Arc::new(OnceCell::new()))
}

/// Content keys unwrapped recently, a few at most, each for no longer than an epoch (plus a
/// margin): RSA decryption happens once per epoch, not once per request.
#[derive(Default)]
pub struct UnwrappedKeys {
    entries: std::sync::Mutex<Vec<Unwrapped>>,
}

/// (key version, SHA-256 of the wrapped key, the key, when it was unwrapped).
type Unwrapped = (u32, [u8; 32], envelope::PackageKey, std::time::Instant);

impl UnwrappedKeys {
    const MAX: usize = 8;

    fn id(wrapped: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(wrapped).into()
    }

    fn get(&self, version: u32, wrapped: &[u8]) -> Option<envelope::PackageKey> {
        let id = Self::id(wrapped);
        let keep = crate::relay::protocol::CONTENT_KEY_EPOCH * 2;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(_, _, _, at)| at.elapsed() < keep);
        entries.iter().find(|(v, i, _, _)| *v == version && *i == id).map(|(_, _, k, _)| k.clone())
    }

    fn put(&self, version: u32, wrapped: &[u8], key: envelope::PackageKey) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::MAX {
            entries.remove(0);
        }
        entries.push((version, Self::id(wrapped), key, std::time::Instant::now()));
    }
}

impl Agent {
    /// Returns the sealed result to send back: the directory's answer, the stored answer to a
    /// repeated message, or at once a refusal (nothing written) for a frame that cannot be opened,
    /// so nobody waits for a deadline. `None` only when no answer can be sealed at all.
    /// `received` is when the frame arrived, before it waited for a free slot.
    pub async fn handle_request(&self, frame: SealedFrame, received: std::time::Instant) -> Option<Wire> {
        let now = self.clock.now();
        let mut opened = self.open(&frame, now);
        if let Err(EnvelopeError::UnknownKey(_)) = opened {
            // The keys may have been rotated by `passback agent rotate-keys` meanwhile.
            self.reload_keys();
            opened = self.open(&frame, now);
        }
        let pkg = match opened {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(msg_id = %frame.msg_id, error = %e, "refused a request frame");
                return self.refuse(&frame.msg_id, &e, now).await;
            }
        };
        let (cell, seen) = cell(&self.replay, &pkg.msg_id, pkg.expires_at, now);
        if seen {
            tracing::warn!(msg_id = %pkg.msg_id, "repeated message id: answering with the stored result");
        }
        let key_version = frame.key_version;
        let sealed = cell.get_or_init(|| self.perform_and_seal(pkg, key_version, received)).await;
        sealed.clone()
    }

    /// Answers a frame that could not be opened, at once: "not written". Its message id (which
    /// nothing authenticated) is taken with the refusal, here and in the journal, so that a
    /// genuine request under the same id that follows gets the same answer and is not carried
    /// out: the refusal stays true. An id already taken keeps its own answer.
    async fn refuse(&self, msg_id: &MsgId, why: &EnvelopeError, now: i64) -> Option<Wire> {
        const KEEP_SECS: i64 = 600;
        let (cell, seen) = cell(&self.replay, msg_id, now + KEEP_SECS, now);
        if seen {
            return cell.get().cloned().flatten();
        }
        if let Err(e) = self.journal.record(msg_id, now + KEEP_SECS, now).await {
            tracing::error!(msg_id = %msg_id, error = %format!("{e:#}"), "cannot record a refused message id");
        }
        let outcome = if *why == EnvelopeError::Expired { Outcome::AgentTimeout } else { Outcome::Internal };
        let answer =
            Answer { outcome, raw: format!("not written: the agent refused the request ({why})"), policy: None };
        let sealed = self.seal_answer(msg_id, None, answer);
        let _ = cell.set(sealed.clone());
        sealed
    }

    fn open(&self, frame: &SealedFrame, now: i64) -> Result<RequestPackage, EnvelopeError> {
        let keys = self.keys();
        envelope::open_request(&self.agent_id, frame, now, |v| {
            keys.iter().find(|k| k.version == v && k.usable_at(now)).map(|k| k.package.clone())
        })
    }

    async fn perform_and_seal(
        &self,
        pkg: RequestPackage,
        key_version: u32,
        received: std::time::Instant,
    ) -> Option<Wire> {
        let waited = received.elapsed();
        let answer = if waited.as_secs() >= u64::from(pkg.wait_secs) {
            Answer {
                outcome: Outcome::AgentTimeout,
                raw: format!(
                    "not written: the request waited {} s here, and the portal had stopped waiting",
                    waited.as_secs()
                ),
                policy: None,
            }
        } else {
            match self.taken_before_start(&pkg) {
                Ok(()) => {
                    // The record is written while the directory's code reads the account, and
                    // no answer goes out before it is on disk, whichever way the answer came (a
                    // refusal before the directory was asked, too): it stays true after a restart.
                    let recorded = self.record(&pkg).shared();
                    let answer = self.perform(&pkg, key_version, Box::pin(recorded.clone())).await;
                    match recorded.await {
                        Ok(()) => answer,
                        Err(refusal) => refusal,
                    }
                }
                Err(answer) => answer,
            }
        };
        tracing::info!(
            msg_id = %pkg.msg_id,
            op = ?pkg.op,
            directory = %pkg.directory,
            anchor = %pkg.anchor,
            actor = %pkg.actor,
            outcome = %answer.outcome.code(),
            raw = %answer.raw,
            "request served"
        );
        self.seal_answer(&pkg.msg_id, Some(key_version), answer)
    }

    /// Refuses a request that an earlier run of this agent took already (a copy sent again after
    /// a restart), since its answer is not known here.
    fn taken_before_start(&self, pkg: &RequestPackage) -> Result<(), Answer> {
        if !self.journal.taken_before_start(&pkg.msg_id, self.clock.now()) {
            return Ok(());
        }
        tracing::warn!(msg_id = %pkg.msg_id, "a message taken before this agent restarted, sent again: not written");
        Err(Answer {
            outcome: Outcome::AgentTimeout,
            raw: "not written again: this message was taken before the agent restarted".into(),
            policy: None,
        })
    }

    /// Records a request that may write in the journal, durably, before the directory is
    /// written: started now, done when the returned future is. Its refusal is the answer, and
    /// nothing may be written.
    fn record(&self, pkg: &RequestPackage) -> BeforeWrite {
        if matches!(pkg.op, Op::Noop | Op::Inspect) {
            return write_now();
        }
        let recorded = self.journal.record(&pkg.msg_id, pkg.expires_at, self.clock.now());
        let msg_id = pkg.msg_id.clone();
        Box::pin(async move {
            recorded.await.map_err(|e| {
                tracing::error!(msg_id = %msg_id, error = %format!("{e:#}"), "cannot record a message id: not written");
                Answer {
                    outcome: Outcome::Internal,
                    raw: "not written: the agent could not record the message id".into(),
                    policy: None,
                }
            })
        })
    }

    /// Seals an answer for the portal: with the key version the request came with, or the
    /// newest when the request could not be opened.
    fn seal_answer(&self, msg_id: &MsgId, key_version: Option<u32>, answer: Answer) -> Option<Wire> {
        let result = ResultPackage {
            msg_id: msg_id.clone(),
            outcome: answer.outcome,
            raw: answer.raw,
            policy: answer.policy.map(|p| *p),
        };
        let keys = self.keys();
        let key = match key_version {
            Some(v) => keys.iter().find(|k| k.version == v)?,
            None => keys.first()?,
        };
        match envelope::seal(
            &self.agent_id,
            key.version,
            &key.package,
            Direction::ToPortal,
            FrameKind::Result,
            msg_id,
            &result,
            &mut rand::rngs::OsRng,
        ) {
            Ok(f) => Some(Wire::sealed(&f)),
            Err(e) => {
                tracing::error!(msg_id = %msg_id, error = %e, "sealing a result failed");
                None
            }
        }
    }

    /// The request's passwords (new, and old for a change). The content key they are sealed under
    /// is unwrapped with our private key (RSA, off the async workers) the first time it is seen.
    async fn secrets(
        &self,
        pkg: &RequestPackage,
        key_version: u32,
    ) -> Result<(SecretString, Option<SecretString>), Answer> {
        let fail = |raw: &str| Answer { outcome: Outcome::Internal, raw: raw.into(), policy: None };
        let sealed = pkg.secrets.clone().ok_or_else(|| fail("password missing from the package"))?;
        let content = match self.unwrapped.get(key_version, &sealed.key) {
            Some(k) => k,
            None => {
                let rsa = self
                    .keys()
                    .iter()
                    .find(|k| k.version == key_version)
                    .map(|k| k.rsa.clone())
                    .ok_or_else(|| fail("key version gone"))?;
                let wrapped = sealed.key.clone();
                let k = tokio::task::spawn_blocking(move || envelope::unwrap_key(&rsa, &wrapped))
                    .await
                    .map_err(|_| fail("decryption task failed"))?
                    .map_err(|_| fail("password decryption failed"))?;
                self.unwrapped.put(key_version, &sealed.key, k.clone());
                k
            }
        };
        envelope::open_secrets(&content, &pkg.msg_id, &sealed).map_err(|_| fail("password decryption failed"))
    }

    async fn perform(&self, pkg: &RequestPackage, key_version: u32, recorded: BeforeWrite) -> Answer {
        // A password is written by the directory's code once the request is recorded, which
        // reads the account meanwhile; anything else waits for the record first.
        let recorded = match pkg.op {
            Op::Reset | Op::Change => recorded,
            _ => match recorded.await {
                Ok(()) => write_now(),
                Err(refusal) => return refusal,
            },
        };
        let Some(dir) = self.directories.get(&pkg.directory).cloned() else {
            return Answer {
                outcome: Outcome::Internal,
                raw: format!("directory {} is not served by this agent", pkg.directory),
                policy: None,
            };
        };
        // Protected accounts only for staff whose role allows it, and only if this agent's
        // administrator allowed it too.
        let allow_protected = pkg.flags.allow_protected && self.cfg.protected_resets_by_staff;
        // What writes without the person's own password is checked against this agent's own
        // rules first: its protected accounts, and its budget per minute.
        if matches!(pkg.op, Op::Reset | Op::Unlock | Op::RequireChange) {
            if !allow_protected {
                if let Some(refusal) = dir.refuse_if_protected(&pkg.anchor).await {
                    return refusal;
                }
            }
            if let Err(refusal) = self.budget.take(&pkg.directory, std::time::Instant::now()) {
                return refusal;
            }
        }
        match pkg.op {
            Op::Unlock => {
                let answer = dir.change_account_with(&pkg.anchor, AccountChange::Unlock, allow_protected).await;
                return read_back(&dir, &pkg.anchor, answer, Outcome::AccountLocked).await;
            }
            Op::RequireChange => {
                return dir.change_account_with(&pkg.anchor, AccountChange::MustChange(true), allow_protected).await
            }
            Op::Noop => return Answer { outcome: Outcome::Success, raw: "no-op".into(), policy: None },
            Op::Inspect => return dir.inspect(&pkg.anchor).await,
            Op::Reset | Op::Change | Op::Verify => {}
        }
        let (new, old) = match self.secrets(pkg, key_version).await {
            Ok(p) => p,
            Err(a) => return a,
        };
        let (mut answer, lock_seen) = match (pkg.op, old) {
            (Op::Change, Some(old)) => return dir.change_after(&pkg.anchor, &old, &new, recorded).await,
            (Op::Change, None) => {
                return Answer {
                    outcome: Outcome::Internal,
                    raw: "change without the old password".into(),
                    policy: None,
                }
            }
            (Op::Verify, _) => return dir.verify(&pkg.anchor, &new).await,
            _ => {
                let how = ResetAs { allow_protected, keep_history: pkg.flags.keep_history };
                dir.reset_seeing_lock(&pkg.anchor, &new, how, recorded).await
            }
        };
        if !answer.outcome.is_success() {
            return answer;
        }
        // The password is set whatever follows; a follow-up that fails is said in the raw
        // answer, for the audit and the helpdesk.
        let follow_ups = [
            (pkg.flags.unlock, AccountChange::Unlock, "unlock"),
            (pkg.flags.must_change, AccountChange::MustChange(true), "must change at next sign-in"),
        ];
        for (wanted, change, what) in follow_ups {
            if wanted && change == AccountChange::Unlock && (!lock_seen || dir.reset_lifts_lock()) {
                // Nothing more to write: there was no lock, or the reset lifted it (the read
                // back below says whether one stayed).
                let how = if lock_seen { "done by the reset itself (see the read back)" } else { "no lock to lift" };
                answer.raw = format!("{}; {what}: {how}", answer.raw);
            } else if wanted {
                let done = dir.change_account_with(&pkg.anchor, change, allow_protected).await;
                let verdict = if done.outcome.is_success() { "done" } else { "FAILED" };
                answer.raw = format!("{}; {what}: {verdict} ({} {})", answer.raw, done.outcome.code(), done.raw);
            }
        }
        if !lock_seen {
            // Read just before the write, the account carried no lock, and a reset adds none.
            answer.raw = format!("{}; no lock before the reset: not read back", answer.raw);
            return answer;
        }
        read_back(&dir, &pkg.anchor, answer, Outcome::ChangedStillLocked).await
    }
}

/// After a reset or an unlock the directory said yes to, the account is read again, so that
/// nothing says "changed" or "unlocked" while the person still cannot sign in: a lock that
/// stayed turns the answer into `if_locked`. A state that cannot be read is said in the raw
/// answer and leaves the outcome as the directory gave it.
async fn read_back(
    dir: &crate::directory::Directory,
    anchor: &crate::domain::Anchor,
    mut answer: Answer,
    if_locked: Outcome,
) -> Answer {
    if !answer.outcome.is_success() {
        return answer;
    }
    let after = dir.inspect(anchor).await;
    match after.outcome.is_success().then(|| crate::domain::AccountState::from_raw(&after.raw)).flatten() {
        Some(state) if state.locked => {
            answer.raw = format!("{}; read back: the account is still locked", answer.raw);
            answer.outcome = if_locked;
        }
        Some(_) => answer.raw = format!("{}; read back: not locked", answer.raw),
        None => {
            answer.raw = format!("{}; read back failed ({} {})", answer.raw, after.outcome.code(), after.raw);
        }
    }
    answer
}

/// How many resets, unlocks and forced changes this agent carries out per directory and minute.
/// Beyond it, it refuses (the directory is "unreachable" for the person: try later) and reports
/// the alert to the portal's health page for ten minutes.
pub struct Budget {
    per_minute: usize,
    taken: std::sync::Mutex<std::collections::HashMap<crate::domain::DirectoryId, Taken>>,
}

#[derive(Default)]
struct Taken {
    at: std::collections::VecDeque<std::time::Instant>,
    alert: Option<(String, std::time::Instant)>,
}

const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
const ALERT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

impl Budget {
    pub fn new(per_minute: u32) -> Budget {
        Budget { per_minute: per_minute as usize, taken: Default::default() }
    }

    /// Takes one from `directory`'s budget, or refuses.
    pub fn take(&self, directory: &crate::domain::DirectoryId, now: std::time::Instant) -> Result<(), Answer> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let t = taken.entry(directory.clone()).or_default();
        while t.at.front().is_some_and(|at| now.duration_since(*at) >= MINUTE) {
            t.at.pop_front();
        }
        if t.at.len() < self.per_minute {
            t.at.push_back(now);
            return Ok(());
        }
        let alert = format!(
            "more than {} resets, unlocks or forced changes in a minute were asked for: refused (a compromised portal?)",
            self.per_minute
        );
        if t.alert.as_ref().is_none_or(|(_, since)| now.duration_since(*since) >= MINUTE) {
            tracing::error!(directory = %directory, per_minute = self.per_minute, "ALERT: {alert}");
        }
        t.alert = Some((alert.clone(), now));
        Err(Answer { outcome: Outcome::DirectoryUnreachable, raw: format!("not written: {alert}"), policy: None })
    }

    /// The alert to report for `directory`, if its budget ran out in the last ten minutes.
    pub fn alert(&self, directory: &crate::domain::DirectoryId) -> Option<String> {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.get(directory)?.alert.as_ref().filter(|(_, at)| at.elapsed() < ALERT_FOR).map(|(a, _)| a.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_message_gets_its_first_answer_until_it_expires_and_expired_ones_are_forgotten() {
        let cache = ReplayCache::default();
        let (a, b) = (MsgId::random(), MsgId::random());
        let (first, seen) = cell(&cache, &a, 1_100, 1_000);
        assert!(!seen);
        let (again, seen) = cell(&cache, &a, 1_200, 1_050);
        assert!(seen && Arc::ptr_eq(&first, &again), "the same answer, not a new one");
        cell(&cache, &b, 1_300, 1_060);
        assert_eq!(cache.len(), 2);
        // Past a's expiry (as first kept), only b is left; a arriving again is new.
        assert!(cell(&cache, &b, 1_300, 1_100).1);
        assert_eq!(cache.len(), 1);
        assert!(!cell(&cache, &a, 1_400, 1_101).1);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_budget_refuses_beyond_its_rate_and_recovers_a_minute_later() {
        let budget = Budget::new(3);
        let corp = crate::domain::DirectoryId::parse("corp").unwrap();
        let other = crate::domain::DirectoryId::parse("other").unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            assert!(budget.take(&corp, t0).is_ok());
        }
        let refused = budget.take(&corp, t0).unwrap_err();
        assert_eq!(refused.outcome, Outcome::DirectoryUnreachable);
        assert!(budget.alert(&corp).is_some() && budget.alert(&other).is_none());
        assert!(budget.take(&other, t0).is_ok(), "each directory has its own");
        assert!(budget.take(&corp, t0 + MINUTE).is_ok(), "a minute later");
    }
}
