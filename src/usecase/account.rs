//! Acts on a person's account, each done once and whole: the form's one-use key is claimed (so a
//! second submit, even racing the first, never writes twice), the directory (or the portal, for
//! a cloud-only account) acts, the result is recorded and audited, and when it took, the
//! person's sessions end and every address on record is told. The reset, unlock, change and
//! expired-password pages and the helpdesk all act through [`once`]; a change to a person's
//! ways of proving who they are goes through [`methods_changed`].

use super::password::{self, Requester};
use super::Host;
use crate::config::GateMethod;
use crate::domain::{EmailAddress, MsgId, NewPassword, Outcome, SupportCode, UserKind};
use crate::envelope::{Flags, Op};
use crate::mail::Notice;
use crate::relay::WritebackResult;
use crate::store::{self, audit::AuditRecord, Batch, Stmt};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The person an act is about, as synced from their directory (or the portal's own account).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Empty for a cloud-only account (which belongs to no directory).
    pub directory: String,
    /// The directory's anchor, or the cloud-only account's id.
    pub anchor: String,
    pub username: String,
    pub email: Option<String>,
    /// Further addresses from the directory (AD `otherMailbox`).
    #[serde(default)]
    pub other_emails: Vec<String>,
    /// A privileged account (DESIGN §2): no security questions, no self-service reset.
    #[serde(default)]
    pub protected: bool,
    pub kind: UserKind,
    /// As the directory (or the portal, for a cloud-only account) has it: a password may not
    /// contain it. Empty in a session saved before it was kept.
    #[serde(default)]
    pub display_name: String,
}

impl Target {
    pub fn person(&self) -> store::security::Person<'_> {
        store::security::Person { directory: &self.directory, anchor: &self.anchor }
    }
}

/// One step of one person's attempt, for its audit row and log line.
pub struct Attempt<'a> {
    pub st: &'a Host,
    pub client: SocketAddr,
    pub audit_name: &'a str,
    pub target: Option<&'a Target>,
    pub support: &'a SupportCode,
}

impl Attempt<'_> {
    pub async fn audit(&self, operation: &str, outcome: &Outcome, raw: &str) -> anyhow::Result<()> {
        self.audit_by(Requester::SELF_SERVICE.actor, operation, outcome, raw).await
    }

    /// [`Self::audit`], done by `actor` (a staff member) rather than the person.
    pub async fn audit_by(&self, actor: &str, operation: &str, outcome: &Outcome, raw: &str) -> anyhow::Result<()> {
        self.audit_row(actor, operation, outcome, raw).run(&self.st.db).await?;
        Ok(())
    }

    /// The audit row of [`Self::audit_by`], to be written with what it records (logged and
    /// counted now).
    fn audit_row(&self, actor: &str, operation: &str, outcome: &Outcome, raw: &str) -> Stmt {
        let rec = AuditRecord {
            at: self.st.clock.now(),
            actor: actor.into(),
            operation: operation.into(),
            directory: self.target.map(|t| t.directory.clone()),
            anchor: self.target.map(|t| t.anchor.clone()),
            target: Some(self.audit_name.to_string()),
            outcome_code: outcome.code().0.into(),
            raw: raw.into(),
            support_code: self.support.0.clone(),
            client: Some(self.client.ip().to_string()),
        };
        tracing::info!(
            operation = %rec.operation,
            actor = %rec.actor,
            outcome = %rec.outcome_code,
            support_code = %rec.support_code,
            directory = rec.directory.as_deref().unwrap_or(""),
            anchor = rec.anchor.as_deref().unwrap_or(""),
            raw = %rec.raw,
            "audit"
        );
        self.st.hub.metrics.attempt(operation, outcome);
        super::trail::note(outcome);
        store::audit::insert(&rec)
    }
}

/// What is asked of the account.
pub enum Ask<'a> {
    /// A new password: a reset without `current`, else a change the current password proves.
    Password { new: &'a NewPassword, current: Option<&'a SecretString> },
    /// A new password the person chose in place of one the directory wants changed, whose
    /// sign-in proved the current password moments ago: written as a reset that the directory
    /// checks against the history (the agent refuses it unwritten where it cannot be).
    ProvenChange { new: &'a NewPassword },
    /// A lockout lifted.
    Unlock,
    /// A new password required at the next sign-in (the helpdesk's).
    RequireChange,
}

impl Ask<'_> {
    /// What the one-use key is claimed for, and what the person is told when it took.
    fn kind(&self) -> (&'static str, Notice) {
        match self {
            Ask::Password { current: None, .. } => ("reset", Notice::Reset),
            Ask::Password { current: Some(_), .. } | Ask::ProvenChange { .. } => ("change", Notice::Changed),
            Ask::Unlock => ("unlock", Notice::Unlocked),
            Ask::RequireChange => ("require_change", Notice::MustChange),
        }
    }

    /// The password it sets, if it sets one.
    fn new_password(&self) -> Option<&NewPassword> {
        match self {
            Ask::Password { new, .. } | Ask::ProvenChange { new } => Some(new),
            Ask::Unlock | Ask::RequireChange => None,
        }
    }
}

/// An act on `target`'s account, asked by `by` through `attempt`.
pub struct Act<'a> {
    pub target: &'a Target,
    /// The form's one-use key, also the relay message id.
    pub msg_id: &'a MsgId,
    /// Whether the key was taken now; else it is a form sent before, which only finds what its
    /// first sending came to.
    pub first: bool,
    pub by: Requester<'a>,
    pub ask: Ask<'a>,
    /// The audit's operation (`reset.writeback`, `change.expired`, `helpdesk.unlock`…).
    pub operation: &'a str,
}

/// What an act came to.
pub struct Done {
    pub result: WritebackResult,
    /// Whether the batch's counted statement changed a row: the one `then` pushed with
    /// `Batch::push_together_counted`, or its last when pushed on its own (see [`once_then`]);
    /// false otherwise.
    pub changed: bool,
    /// The support code of the attempt that did it: this one's, or, for a form sent again, the
    /// first sending's (its audit row says what happened under it).
    pub support: SupportCode,
    /// The form was sent before and this is what that sending came to: nothing was done now,
    /// and `then` did not run (the caller's counts were made then).
    pub earlier: bool,
}

/// How long a form sent again waits for the instance that took it first to finish, beyond the
/// wait for the directory's answer.
const PATIENCE_BEYOND_DEADLINE_SECS: u64 = 10;

/// Claims `act`'s key and does it. A form sent again gets what its first sending came to (see
/// [`once_then`]); `None` when that cannot be told, and nothing was done.
pub async fn once(attempt: &Attempt<'_>, act: Act<'_>) -> anyhow::Result<Option<Done>> {
    once_then(attempt, act, |_, _| {}).await
}

/// [`once`], with `then` adding the writes that follow from the result (the caller's own counts)
/// to the transaction that records it, its audit row and, when the password was set, the end of
/// the person's sessions. Those are pushed together (`Batch::push_together`): a statement of
/// `then` pushed together joins them, so it must not touch the writeback, audit, person or
/// epoch rows they write. One statement is counted (`Done::changed`): the one pushed with
/// `Batch::push_together_counted`, else the last, when pushed on its own.
///
/// The same form sent again (a double click, a reload after a dropped connection, a resubmit
/// after the instance that took it stopped) never acts twice: it waits for the first sending's
/// answer and returns it. If the instance that claimed it stopped before it answered, this one
/// carries it on under the same message id, to the agent the claim named: that agent answers a
/// message once, from what it did, or does it now if it never got it.
pub async fn once_then(
    attempt: &Attempt<'_>,
    act: Act<'_>,
    then: impl FnOnce(&WritebackResult, &mut Batch),
) -> anyhow::Result<Option<Done>> {
    Ok(claimed_then(attempt, act, None, then).await?.unwrap_or(None))
}

/// The allowance [`once_counted`] would take from was spent: nothing was claimed or done.
#[derive(Debug)]
pub struct Spent;

/// [`once_then`] for an act that takes one from an allowance first (the change form's count of
/// attempts, within `limits`): the allowance is taken in the transaction that claims the form's
/// key, and the key is claimed only if it was. A form sent again takes one too, on its own.
pub async fn once_counted(
    attempt: &Attempt<'_>,
    act: Act<'_>,
    (reservation, limits): (&store::attempts::Reservation, (u32, u32)),
    then: impl FnOnce(&WritebackResult, &mut Batch),
) -> anyhow::Result<Result<Option<Done>, Spent>> {
    claimed_then(attempt, act, Some((reservation, limits)), then).await
}

async fn claimed_then(
    attempt: &Attempt<'_>,
    act: Act<'_>,
    counted: Option<(&store::attempts::Reservation, (u32, u32))>,
    then: impl FnOnce(&WritebackResult, &mut Batch),
) -> anyhow::Result<Result<Option<Done>, Spent>> {
    let st = attempt.st;
    if !act.first {
        if let Some((reservation, limits)) = counted {
            if !reservation.take_alone(&st.db, st.clock.now(), limits).await? {
                return Ok(Err(Spent));
            }
        }
        return Ok(Ok(again(attempt, act, then).await?));
    }
    let now = st.clock.now();
    let (kind, _) = act.ask.kind();
    // The agent it will go to is named in the claim, before anything is sent.
    let agent = match act.target.kind {
        UserKind::CloudOnly => None,
        _ => st.hub.choose_agent(act.msg_id, &act.target.directory, now),
    };
    let claim = store::writebacks::Claim {
        msg_id: act.msg_id.as_str(),
        directory: &act.target.directory,
        anchor: &act.target.anchor,
        op: kind,
        support_code: &attempt.support.0,
        agent_id: agent.as_deref(),
        instance: &st.hub.instance,
        now,
    };
    // Held before it is claimed: a form sent again meanwhile sees that this instance acts on it.
    let held = st.hub.hold(act.msg_id);
    let claimed = match counted {
        None => store::writebacks::claim(&st.db, &claim).await?,
        Some((reservation, limits)) => {
            let (taken, claimed) = store::writebacks::claim_counted(&st.db, &claim, reservation, now, limits).await?;
            if !taken {
                held.settled();
                return Ok(Err(Spent));
            }
            claimed
        }
    };
    if !claimed {
        held.settled();
        return Ok(Ok(again(attempt, act, then).await?));
    }
    let result = perform(st, &act, now).await?;
    let changed = record(attempt, &act, &result, then).await?;
    held.settled();
    Ok(Ok(Some(Done { result, changed, support: attempt.support.clone(), earlier: false })))
}

/// A form whose key was claimed before: what its first sending came to, once it has an answer;
/// carried on here if the request that claimed it went away first (its instance stopped, or its
/// client left this one). `None` when that cannot be told: a key claimed for something else, an
/// answer that need not hold for what was sent now, or none where it was claimed after every
/// wait.
async fn again(
    attempt: &Attempt<'_>,
    act: Act<'_>,
    then: impl FnOnce(&WritebackResult, &mut Batch),
) -> anyhow::Result<Option<Done>> {
    let st = attempt.st;
    let (kind, _) = act.ask.kind();
    let patience = std::time::Duration::from_secs(st.cfg.relay.result_deadline_secs + PATIENCE_BEYOND_DEADLINE_SECS);
    let started = std::time::Instant::now();
    let wait = || async {
        let waited = started.elapsed();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        waited < patience
    };
    loop {
        let Some(row) = store::writebacks::claimed(&st.db, act.msg_id.as_str()).await? else { return Ok(None) };
        if row.directory != act.target.directory || row.anchor != act.target.anchor || row.op != kind {
            return Ok(None);
        }
        let support = SupportCode(row.support_code.clone());
        if let Some(outcome) = row.outcome() {
            // Sent again perhaps with something else typed in (after a refusal, the back button):
            // only "it took" may still be true of it, and of a password only if the one sent now
            // is in place.
            let took = outcome.is_success() || outcome.password_set();
            let holds = match act.ask.new_password() {
                Some(_) => in_place(st, &act).await? == Some(true),
                None => true,
            };
            if !(took && holds) {
                return Ok(None);
            }
            let result = WritebackResult::local(outcome, "the answer to the form's first sending");
            return Ok(Some(Done { result, changed: false, support, earlier: true }));
        }
        let claimer_alive = match row.instance.as_deref() {
            // Here: while the request that claimed it acts on it.
            Some(i) if i == st.hub.instance => st.hub.holds(act.msg_id),
            Some(i) => store::presence::is_alive(&st.db, i, store::presence::STALE_SECS).await?,
            None => false,
        };
        // Not taken now, it may only wait for the first sending's answer.
        if claimer_alive || !act.first {
            if !wait().await {
                return Ok(None);
            }
            continue;
        }
        // The request that claimed it went away before it answered: one instance carries it on
        // (another that took it over meanwhile is alive, and is waited for as above).
        let from = row.instance.as_deref();
        // Held before it is taken over: another sending on this instance meanwhile waits for it.
        let held = st.hub.hold(act.msg_id);
        let Some(agent) = store::writebacks::take_over(&st.db, act.msg_id.as_str(), from, &st.hub.instance).await?
        else {
            held.settled();
            if !wait().await {
                return Ok(None);
            }
            continue;
        };
        tracing::warn!(msg_id = %act.msg_id, from = from.unwrap_or("unknown"), "a form sent again after the request that claimed it went away: carried on");
        let first = Attempt { support: &support, ..*attempt };
        let result = carry_on(st, &act, agent.as_deref(), row.created_at).await?;
        let changed = record(&first, &act, &result, then).await?;
        held.settled();
        return Ok(Some(Done { result, changed, support, earlier: false }));
    }
}

/// Does again what a request that went away had claimed (`claimed_at`), as far as that is safe:
/// under the same message id, to the agent the row names (`agent`), sealed to expire when the
/// first sending would have. Past that, or for a cloud-only account (no agent remembers it),
/// only whether the password sent now is in place is told.
async fn carry_on(st: &Host, act: &Act<'_>, agent: Option<&str>, claimed_at: i64) -> anyhow::Result<WritebackResult> {
    let expired = st.clock.now() >= claimed_at + i64::try_from(st.cfg.relay.request_ttl_secs)?;
    if !expired && act.target.kind != UserKind::CloudOnly {
        if let Some(agent) = agent {
            st.hub.carry_on(act.msg_id, agent);
        }
        return perform(st, act, claimed_at).await;
    }
    let Some(_) = act.ask.new_password() else {
        // The portal's own acts on a cloud-only account say the same when done again; an expired
        // request to an agent is not known to have been carried out.
        if !expired {
            return perform(st, act, claimed_at).await;
        }
        let why = "carried on: its request had expired, and whether it was carried out is not known";
        return Ok(WritebackResult {
            agent_id: agent.map(str::to_string),
            ..WritebackResult::local(Outcome::AgentTimeout, why)
        });
    };
    let why = if expired { "its request had expired" } else { "a cloud-only account" };
    Ok(match in_place(st, act).await? {
        Some(true) => {
            WritebackResult::local(Outcome::Success, &format!("carried on ({why}): the new password is in place"))
        }
        // Nothing is pending: the portal's own write was done or not, and an expired request
        // is refused by every agent. But what was sent first may not be what was sent now.
        _ => WritebackResult {
            agent_id: agent.map(str::to_string),
            ..WritebackResult::local(
                Outcome::AgentTimeout,
                &format!("carried on ({why}): the password sent now is not in place"),
            )
        },
    })
}

/// Whether the password `act` sets is the person's now (checked as a sign-in would); `None` when
/// nobody could tell, or `act` sets none.
async fn in_place(st: &Host, act: &Act<'_>) -> anyhow::Result<Option<bool>> {
    let Some(new) = act.ask.new_password() else { return Ok(None) };
    let checked = password::check_current(st, act.target, new.as_secret(), st.clock.now()).await?;
    Ok(match checked.outcome {
        Outcome::Success | Outcome::MustChange | Outcome::PasswordExpired => Some(true),
        Outcome::OldPasswordWrong => Some(false),
        _ => None,
    })
}

/// Records what an act came to, its audit row and, when the password was set, the end of the
/// person's sessions (with the caller's `then`), in one transaction; tells every address on
/// record when it took. Whether the batch's counted statement changed a row (see [`Done`]).
async fn record(
    attempt: &Attempt<'_>,
    act: &Act<'_>,
    result: &WritebackResult,
    then: impl FnOnce(&WritebackResult, &mut Batch),
) -> anyhow::Result<bool> {
    let st = attempt.st;
    let (_, notice) = act.ask.kind();
    let mut batch = Batch::new();
    let answer = (result.answered_by(), result.awaited());
    let (msg_id, instance) = (act.msg_id.as_str(), st.hub.instance.as_str());
    // Each of these writes a table none of the others reads or writes: one group (on PostgreSQL,
    // one statement; see `Batch::push_together`).
    batch.push_together(store::writebacks::finish(
        msg_id,
        instance,
        &result.outcome,
        answer,
        result.took_ms,
        st.clock.now(),
    ));
    // A staff reset's row says what it asked for besides the password.
    let raw = if act.ask.new_password().is_some() && act.by.actor != Requester::SELF_SERVICE.actor {
        format!("{} (must_change={} unlock={})", result.raw, act.by.flags.must_change, act.by.flags.unlock)
    } else {
        result.raw.clone()
    };
    batch.push_together(attempt.audit_row(act.by.actor, act.operation, &result.outcome, &raw));
    let set = result.outcome.password_set();
    // The language a person acts in is the one their reminders come in.
    let own = (act.by.actor == Requester::SELF_SERVICE.actor && result.outcome == Outcome::Success)
        .then(|| crate::i18n::Tr::current().0);
    let (directory, anchor) = (&act.target.directory, &act.target.anchor);
    if set && act.ask.new_password().is_some() {
        // A new password: the old one's expiry no longer holds.
        batch.push_together(store::reminders::password_set(directory, anchor, own));
    } else if let Some(lang) = own {
        batch.push_together(store::reminders::remember_lang(directory, anchor, lang));
    }
    if set {
        batch.push_together(store::security::next_session_epoch(act.target.person()));
    }
    then(result, &mut batch);
    // Read with the group: on PostgreSQL, when `then` pushed nothing on its own, all of it is
    // one statement; else the read goes with the last group, one trip fewer.
    let ran: store::Ran<(Option<String>,)> =
        batch.run_then_together(&st.db, store::security::alternate_email_after(act.target.person())).await?;
    let (alternate, changed) = (ran.rows.into_iter().next().and_then(|(a,)| a), ran.last_changed);
    if set {
        notify_all(st, addresses(act.target, alternate), st.clock.now(), notice);
    }
    Ok(changed > 0)
}

/// The act itself: the directory's answer through the relay, or the portal's own for a cloud-only
/// account.
async fn perform(st: &Host, act: &Act<'_>, now: i64) -> anyhow::Result<WritebackResult> {
    let (target, msg_id) = (act.target, act.msg_id.clone());
    let local = WritebackResult::local;
    match act.ask {
        Ask::Password { new, current } => password::apply(st, act.by, target, msg_id, new, current, now).await,
        Ask::ProvenChange { new } => {
            let by = Requester { flags: Flags { keep_history: true, ..act.by.flags }, ..act.by };
            let mut result = password::apply(st, by, target, msg_id, new, None, now).await?;
            result.raw = format!(
                "{}; asked as a reset in place of the person's change, on the proof of their sign-in",
                result.raw
            );
            Ok(result)
        }
        // A privileged account's lockout stands between an attacker and a guessed password: it
        // is lifted by the helpdesk, never by self-service.
        Ask::Unlock if target.protected && !act.by.flags.allow_protected => {
            Ok(local(Outcome::Protected, "privileged account: self-service unlock refused"))
        }
        // The portal never locks a cloud-only account: there is nothing to lift.
        Ask::Unlock if target.kind == UserKind::CloudOnly => {
            Ok(local(Outcome::Success, "cloud account: nothing to unlock (the portal does not lock cloud accounts)"))
        }
        Ask::RequireChange if target.kind == UserKind::CloudOnly => {
            Ok(if store::cloud::require_change(&st.db, &target.anchor, now).await? {
                local(Outcome::Success, "cloud account: must change at next sign-in")
            } else {
                local(Outcome::NotFound, "cloud account vanished")
            })
        }
        Ask::Unlock => password::relay(st, act.by, target, msg_id, Op::Unlock, (None, None), now).await,
        Ask::RequireChange => password::relay(st, act.by, target, msg_id, Op::RequireChange, (None, None), now).await,
    }
}

/// A person's ways of proving who they are changed (`notice` says how): audited, every session
/// of theirs ends, and every address on record is told, with those `before` the change (so a
/// removed address hears of its removal). Returns the new session epoch, under which the session
/// that made the change (the person's own) may carry on.
pub async fn methods_changed(
    attempt: &Attempt<'_>,
    actor: &str,
    target: &Target,
    notice: Notice,
    raw: &str,
    before: Vec<EmailAddress>,
) -> anyhow::Result<i64> {
    let st = attempt.st;
    let operation = match notice {
        Notice::MethodAdded(m) => format!("security.{}.add", m.as_str()),
        Notice::MethodRemovedByOwner(m) => format!("security.{}.remove", m.as_str()),
        Notice::MethodRemoved => "helpdesk.revoke".into(),
        _ => anyhow::bail!("not a security-info notice"),
    };
    attempt.audit_by(actor, &operation, &Outcome::Success, raw).await?;
    let mut to = before;
    for a in addresses_on_record(st, target).await? {
        if !to.iter().any(|o| o.as_str().eq_ignore_ascii_case(a.as_str())) {
            to.push(a);
        }
    }
    let epoch = end_sessions(st, target).await?;
    notify_all(st, to, st.clock.now(), notice);
    Ok(epoch)
}

/// Removes one of `target`'s ways of proving who they are; what the audit calls it.
pub async fn remove_method(st: &Host, target: &Target, method: GateMethod) -> anyhow::Result<&'static str> {
    let p = target.person();
    Ok(match method {
        GateMethod::Email => store::security::remove_alternate_email(&st.db, p).await.map(|_| "alternate e-mail")?,
        GateMethod::Authenticator => store::security::remove_totp(&st.db, p).await.map(|_| "authenticator")?,
        GateMethod::Questions => store::security::remove_answers(&st.db, p).await.map(|_| "security questions")?,
        GateMethod::RecoveryCode => {
            store::security::remove_recovery_codes(&st.db, p).await.map(|_| "recovery codes")?
        }
        GateMethod::Passkey => {
            let owner = store::passkeys::Owner {
                kind: store::passkeys::Kind::Person,
                directory: p.directory,
                anchor: p.anchor,
            };
            store::passkeys::remove_all(&st.db, owner).await.map(|_| "passkeys")?
        }
    })
}

/// Ends every signed-in session of `target` (on every instance): returns the new epoch, under
/// which a session that should go on (the one that made a change) carries on.
pub async fn end_sessions(st: &Host, target: &Target) -> anyhow::Result<i64> {
    Ok(store::security::bump_session_epoch(&st.db, target.person()).await?)
}

/// Every address `target` can be reached at: the main one, the directory's others and the
/// alternate one registered here, each once.
pub async fn addresses_on_record(st: &Host, target: &Target) -> anyhow::Result<Vec<EmailAddress>> {
    let alternate = store::security::alternate_email(&st.db, target.person()).await?;
    Ok(addresses(target, alternate))
}

fn addresses(target: &Target, alternate: Option<String>) -> Vec<EmailAddress> {
    let mut out: Vec<EmailAddress> = Vec::new();
    for a in target.email.iter().chain(&target.other_emails).chain(alternate.iter()) {
        if let Ok(a) = EmailAddress::parse(a) {
            if !out.iter().any(|o| o.as_str().eq_ignore_ascii_case(a.as_str())) {
                out.push(a);
            }
        }
    }
    out
}

/// E-mails a notice to each of `addresses`, in the background.
pub fn notify_all(st: &Host, addresses: Vec<EmailAddress>, now: i64, notice: Notice) {
    let when = crate::mail::utc_minutes(now);
    let tr = crate::i18n::Tr::current();
    let helpdesk = st.helpdesk(tr);
    for to in addresses {
        let (mailer, when, helpdesk) = (st.mailer.clone(), when.clone(), helpdesk.clone());
        tokio::spawn(async move {
            let sent = match crate::mail::notice_message(tr, notice, &when, &helpdesk) {
                Ok(msg) => mailer.send_in_turn(&to, msg).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                // The change stands; the administrator learns of the mail failure here.
                tracing::error!(error = %format!("{e:#}"), "sending a notice to the person failed");
            }
        });
    }
}
