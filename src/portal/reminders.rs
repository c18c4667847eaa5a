//! Mail the portal sends of its own accord, so that people hear from it before they need it:
//! reminders before a password expires (the directory's own expiry, from the sync), a notice once
//! it has, and invitations to people who have not registered enough ways to prove who they are.
//!
//! Every instance looks for what is due every `reminders.check_every_secs`; a reminder is claimed
//! in the database before it is sent, so each goes once however many instances look. Each is
//! audited (`reminder.expiry`, `reminder.expired`, `reminder.campaign`), in the language the
//! person last used the portal in, with links built from `server.public_url` alone.

use super::AppState;
use crate::config::Purpose;
use crate::domain::{EmailAddress, Outcome};
use crate::i18n::{Lang, Tr};
use crate::mail::Reminder;
use crate::store::reminders::{self, Candidate};
use crate::store::{self, audit::AuditRecord};
use std::collections::HashSet;

/// An expired password is told of within this long of expiring, never later (an account left
/// expired for months is not mailed out of the blue).
const EXPIRED_NOTICE_WITHIN_SECS: i64 = 7 * 86_400;
/// People the campaign looks at in one round.
const CAMPAIGN_PAGE: i64 = 500;
/// The actor reminders are audited under.
const ACTOR: &str = "portal";

/// What one round sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub expiry: u32,
    pub expired: u32,
    pub campaign: u32,
}

/// Runs for as long as the portal does.
pub async fn run(st: AppState) {
    let every = std::time::Duration::from_secs(st.cfg.reminders.check_every_secs);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut campaign_from = (String::new(), String::new());
    loop {
        tick.tick().await;
        match round(&st, &mut campaign_from).await {
            Ok(Sent { expiry: 0, expired: 0, campaign: 0 }) => {}
            Ok(sent) => tracing::info!(sent.expiry, sent.expired, sent.campaign, "reminders sent"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "looking for reminders to send failed"),
        }
    }
}

/// One round: every expiry reminder due now, and the next page of the campaign. `campaign_from`
/// is where the campaign got to (it starts again from the beginning after the last person).
pub async fn round(st: &AppState, campaign_from: &mut (String, String)) -> anyhow::Result<Sent> {
    let now = st.clock.now();
    let mut sent = expiry(st, now).await?;
    if st.cfg.reminders.campaign_days > 0 {
        sent.campaign = campaign(st, now, campaign_from).await?;
    }
    Ok(sent)
}

/// The reminder days of a person's directory.
fn days_for<'a>(st: &'a AppState, directory: &str) -> &'a [u32] {
    st.cfg
        .directories
        .get(directory)
        .and_then(|d| d.expiry_reminder_days.as_deref())
        .unwrap_or(&st.cfg.reminders.expiry_days)
}

async fn expiry(st: &AppState, now: i64) -> anyhow::Result<Sent> {
    let cfg = &st.cfg.reminders;
    let furthest = st
        .cfg
        .directories
        .values()
        .filter_map(|d| d.expiry_reminder_days.as_ref())
        .chain([&cfg.expiry_days])
        .flatten()
        .max()
        .copied()
        .unwrap_or(0);
    let from = if cfg.expired_notice { now - EXPIRED_NOTICE_WITHIN_SECS } else { now };
    let mut sent = Sent::default();
    if furthest == 0 && !cfg.expired_notice {
        return Ok(sent);
    }
    let to = now + i64::from(furthest) * 86_400;
    // What was sent already is left out before anything is claimed: a round writes only for
    // reminders that are due.
    let done: HashSet<(String, String, String, i64)> =
        reminders::sent_about(&st.db, from, to).await?.into_iter().collect();
    for person in reminders::expiring(&st.db, from, to).await? {
        let Some(at) = person.password_expires_at else { continue };
        let Some((kind, reminder)) = due(st, &person.user.directory, at, now) else { continue };
        let key = (person.user.directory.clone(), person.user.anchor.clone(), kind.clone(), at);
        if done.contains(&key) {
            continue;
        }
        // Before expiry the person can still read their own mailbox; once expired perhaps not,
        // so every address on record hears it.
        let expired = matches!(reminder, Reminder::Expired { .. });
        match send(st, &person, &kind, at, reminder, expired, now, None).await {
            Ok(true) if expired => sent.expired += 1,
            Ok(true) => sent.expiry += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), username = %person.user.username, kind, "a reminder failed")
            }
        }
    }
    Ok(sent)
}

/// The reminder due now about a password expiring at `at`, with its kind (`expiry:7`,
/// `expired`), if any: the nearest of the directory's days the expiry is within (a person first
/// seen two days ahead hears the three-day reminder, not the fortnight's as well).
fn due(st: &AppState, directory: &str, at: i64, now: i64) -> Option<(String, Reminder)> {
    let left = at - now;
    if left <= 0 {
        return Some(("expired".to_string(), Reminder::Expired { at }));
    }
    let day = days_for(st, directory).iter().copied().filter(|d| left <= i64::from(*d) * 86_400).min()?;
    let days = u64::try_from(left).unwrap_or(0).div_ceil(86_400).min(u64::from(day));
    Some((format!("expiry:{day}"), Reminder::Expiry { days, at }))
}

async fn campaign(st: &AppState, now: i64, from: &mut (String, String)) -> anyhow::Result<u32> {
    let period = i64::from(st.cfg.reminders.campaign_days) * 86_400;
    let page = reminders::people_after(&st.db, (&from.0, &from.1), CAMPAIGN_PAGE).await?;
    let needed = st.cfg.gates.required as usize;
    let mut sent = 0;
    for person in &page {
        // Where it got to moves with each person, so a failure does not skip the rest.
        *from = (person.user.directory.clone(), person.user.anchor.clone());
        if person.invited_at.is_some_and(|at| at > now - period) || main_address(person).is_empty() {
            continue;
        }
        let target = super::people::target_of(st, &person.user).await.map_err(plain)?;
        let methods: HashSet<_> = super::gates::real_offers(st, &target, Purpose::Reset)
            .await
            .map_err(plain)?
            .into_iter()
            .map(|o| o.method)
            .collect();
        if methods.len() >= needed {
            continue;
        }
        let missing = u64::try_from(needed - methods.len()).unwrap_or(1);
        let reminder = Reminder::Campaign { missing };
        match send(st, person, "campaign", 0, reminder, false, now, Some(now - period)).await {
            Ok(true) => sent += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), username = %person.user.username, "an invitation failed")
            }
        }
    }
    if page.len() < CAMPAIGN_PAGE as usize {
        // The last page: the next round starts again from the first person.
        *from = Default::default();
    }
    Ok(sent)
}

/// A page's error as a plain one: a round of reminders has no page to show.
fn plain(e: super::PortalError) -> anyhow::Error {
    match e {
        super::PortalError::Internal(e) => e,
        other => anyhow::anyhow!("{other}"),
    }
}

/// The directory's main address, else the first other one: where a reminder goes while the
/// person can still read it.
fn main_address(person: &Candidate) -> Vec<EmailAddress> {
    person
        .user
        .email
        .iter()
        .cloned()
        .chain(person.user.other_emails())
        .find_map(|a| EmailAddress::parse(&a).ok())
        .into_iter()
        .collect()
}

async fn everywhere(st: &AppState, person: &Candidate) -> anyhow::Result<Vec<EmailAddress>> {
    let target = super::people::target_of(st, &person.user).await.map_err(plain)?;
    crate::usecase::account::addresses_on_record(st, &target).await
}

/// Claims the reminder, sends it and audits it; `false` if another round (here or on another
/// instance) claimed it first or there is nowhere to send it. `everyone`: to every address on
/// record, else to the main one. A reminder is sent once: one that no address accepted is
/// audited as dropped (PB-9000) and not tried again (the next one will come, and a mail server
/// that refuses it would otherwise be asked again every round).
#[allow(clippy::too_many_arguments)]
async fn send(
    st: &AppState,
    person: &Candidate,
    kind: &str,
    about: i64,
    reminder: Reminder,
    everyone: bool,
    now: i64,
    again_after: Option<i64>,
) -> anyhow::Result<bool> {
    let lang = person.lang.as_deref().and_then(Lang::parse).unwrap_or(st.cfg.reminders.default_language);
    let site = st.cfg.server.public_url.trim_end_matches('/');
    let path = match reminder {
        Reminder::Expiry { .. } => super::paths::CHANGE,
        Reminder::Expired { .. } => super::paths::RESET,
        Reminder::Campaign { .. } => super::paths::SIGNIN,
    };
    let msg = crate::mail::reminder_message(Tr(lang), reminder, &person.user.username, site, &format!("{site}{path}"))?;
    // Everything that could fail before the mail goes is done before the claim.
    let to = if everyone { everywhere(st, person).await? } else { main_address(person) };
    let who = (person.user.directory.as_str(), person.user.anchor.as_str());
    if to.is_empty() || !reminders::claim(&st.db, who, kind, about, now, again_after).await? {
        return Ok(false);
    }
    let mut delivered = 0;
    for address in &to {
        match st.mailer.send_in_turn(address, msg.clone()).await {
            Ok(()) => delivered += 1,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), username = %person.user.username, kind, "a reminder was not accepted for one address")
            }
        }
    }
    let (operation, raw) = match reminder {
        Reminder::Expiry { days, at } => {
            ("reminder.expiry", format!("{days} day(s) before the expiry on {}", crate::mail::utc_minutes(at)))
        }
        Reminder::Expired { at } => ("reminder.expired", format!("expired on {}", crate::mail::utc_minutes(at))),
        Reminder::Campaign { missing } => ("reminder.campaign", format!("{missing} more method(s) needed")),
    };
    // A reminder no address accepted is not sent again (the next one will come): the audit says
    // it was dropped.
    let outcome = if delivered > 0 { Outcome::Success } else { Outcome::Internal };
    let rec = AuditRecord {
        at: now,
        actor: ACTOR.into(),
        operation: operation.into(),
        directory: Some(person.user.directory.clone()),
        anchor: Some(person.user.anchor.clone()),
        target: Some(person.user.username.clone()),
        outcome_code: outcome.code().0.into(),
        raw: format!("{raw}; mailed to {delivered} of {} address(es) in {}", to.len(), lang.code()),
        support_code: crate::domain::SupportCode::new().0,
        client: None,
    };
    store::audit::record(&st.db, &rec).await?;
    if delivered == 0 {
        anyhow::bail!("no address of {} accepted the {kind} reminder; it is dropped", person.user.username);
    }
    tracing::info!(operation, username = %person.user.username, "reminder sent");
    Ok(true)
}
