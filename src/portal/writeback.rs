//! One act on a person's account, done once: the form's one-use key is claimed (so a second
//! submit, even racing the first, never writes twice), the act runs, its result is recorded and
//! audited, and when it took, the person's other sessions end and every address on record is
//! told. The reset, unlock, change and expired-password pages all act through [`once`].

use super::people::{self, Attempt, Target};
use super::PortalError;
use crate::domain::MsgId;
use crate::relay::WritebackResult;
use crate::store;
use std::future::Future;

/// What is done, and how it is recorded.
pub(crate) struct Act<'a> {
    pub target: &'a Target,
    /// The form's one-use key, also the relay message id.
    pub msg_id: &'a MsgId,
    /// What the one-use key is claimed for: `reset`, `unlock` or `change`.
    pub kind: &'static str,
    /// The audit's operation (`reset.writeback`, `change.expired`…).
    pub operation: &'a str,
    /// What the person is told when it took.
    pub notice: crate::mail::Notice,
}

/// Claims `act`'s key and runs `run`; `None` when the key was claimed already (the form was sent
/// before), and nothing ran.
pub(crate) async fn once(
    attempt: &Attempt<'_>,
    act: Act<'_>,
    run: impl Future<Output = Result<WritebackResult, PortalError>>,
) -> Result<Option<WritebackResult>, PortalError> {
    let st = attempt.st;
    let now = st.clock.now();
    let claim = store::writebacks::Claim {
        msg_id: act.msg_id.as_str(),
        directory: &act.target.directory,
        anchor: &act.target.anchor,
        op: act.kind,
        support_code: &attempt.support.0,
        now,
    };
    if !store::writebacks::claim(&st.db, &claim).await? {
        return Ok(None);
    }
    let result = run.await?;
    store::writebacks::finish(&st.db, act.msg_id.as_str(), &result.outcome, st.clock.now()).await?;
    attempt.audit(act.operation, &result.outcome, &result.raw).await?;
    if result.outcome.password_set() {
        people::acted_on(st, act.target, now, act.notice).await?;
    }
    Ok(Some(result))
}
