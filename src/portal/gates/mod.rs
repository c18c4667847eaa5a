//! Verification gates (DESIGN §6): how a person proves who they are before a reset or an unlock.
//! This module finds the offers (real ones, or made-up ones for a name that matched nobody) and
//! shows the chooser and gate pages; `check` starts a gate, checks an answer and keeps the limits
//! (failed verifications and resets per account per hour lead to a block, audited); `questions`
//! is the security-questions method, and the authenticator's codes are `crate::crypto::totp`.

mod check;
pub mod questions;
pub mod recovery;
pub use crate::crypto::totp;
pub(crate) use check::{answer, blocked, count_reset, push_reset_count, start, Answered, GateForm};

use super::people::Target;
use super::{AppState, PortalError, SupportCode};
use crate::config::{GateMethod, Purpose};
use crate::domain::{EmailAddress, LoginName, MsgId, OneTimeCode};
use crate::i18n::Tr;
use crate::store::{self, security};
use axum::response::{IntoResponse, Response};
use rand::seq::SliceRandom;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// One way this person can verify now, as the chooser lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Offer {
    /// Names the choice in the form (`email-0`, `authenticator`, `questions`).
    pub id: String,
    pub method: GateMethod,
    /// For e-mail: where the code goes (`None` for a name that matched nobody: nothing is sent).
    pub address: Option<String>,
    /// For e-mail: the address as shown, masked.
    pub masked: Option<String>,
    /// Shown for a name that matched nobody (or a person with nothing on record): it leads
    /// nowhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub made_up: bool,
    /// Must be passed before any other (a passkey, where its holders must use it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first: bool,
}

impl Offer {
    /// An offer of a method that sends nothing anywhere (all but e-mail), named by the method.
    fn plain(method: GateMethod, made_up: bool) -> Offer {
        Offer { id: method.as_str().into(), method, address: None, masked: None, made_up, first: false }
    }

    pub fn label(&self, tr: Tr) -> String {
        match self.method {
            GateMethod::Email => tr.f("gates.offer_email", "address", self.masked.as_deref().unwrap_or("")),
            GateMethod::Authenticator => tr.t("gates.offer_authenticator").into(),
            GateMethod::Questions => tr.t("gates.offer_questions").into(),
            GateMethod::RecoveryCode => tr.t("gates.offer_recovery_code").into(),
            GateMethod::Passkey => tr.t("gates.offer_passkey").into(),
        }
    }
}

/// The gate a person is at: what was sent or asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Current {
    pub offer: Offer,
    /// E-mail: the stored code's id.
    pub code_id: Option<String>,
    /// Questions: the ids asked, in order.
    pub questions: Vec<String>,
    /// Wrong answers at this gate so far.
    pub failed: u32,
    /// When the gate opened (for an e-mail: when its code was sent).
    #[serde(default)]
    pub opened_at: i64,
}

/// How long a person waits between two codes sent to them from the code page.
pub(crate) const RESEND_AFTER_SECS: i64 = 60;

impl Current {
    /// Seconds until another code may be sent (0: now); `None` for a gate that sends no code.
    pub fn resend_in(&self, now: i64) -> Option<u64> {
        (self.offer.method == GateMethod::Email)
            .then(|| u64::try_from(self.opened_at + RESEND_AFTER_SECS - now).unwrap_or(0))
    }
}

/// The ways `target` can verify, in a stable order. For a name that matched nobody there is one
/// e-mail offer to an address that looks like a real one (made from the name, the same each
/// time), so the step after the first one does not tell real names from made-up ones either.
pub(crate) async fn offers(
    st: &AppState,
    target: Option<&Target>,
    login: &LoginName,
    purpose: Purpose,
) -> Result<Vec<Offer>, PortalError> {
    // A name that matched nobody is looked up as a person with nothing on record, so the step
    // takes as long and shows the same.
    let nobody = security::Person { directory: "", anchor: "" };
    let registered = registered_offers(st, target.map_or(nobody, Target::person), target, purpose).await?;
    if remaining(&registered, &[]).is_empty() {
        // Nothing on record that can come first (nothing at all, or only security questions):
        // the same made-up offers as for a name that matched nobody.
        return made_up_offers(st, login, purpose).await;
    }
    Ok(registered)
}

/// What `person` registered (and the directory gave them), as offers; `target` gives the
/// directory's addresses and whether the account is privileged.
async fn registered_offers(
    st: &AppState,
    person: security::Person<'_>,
    target: Option<&Target>,
    purpose: Purpose,
) -> Result<Vec<Offer>, PortalError> {
    let counts = |m: GateMethod| st.cfg.gates.counts_for(purpose, m);
    let mut out = Vec::new();
    let alternate = security::alternate_email(&st.db, person).await?;
    let totp = security::totp(&st.db, person).await?;
    let answers = security::answers(&st.db, person).await?;
    let recovery_codes = security::recovery_codes_left(&st.db, person).await?;
    let owner = store::passkeys::Owner {
        kind: store::passkeys::Kind::Person,
        directory: person.directory,
        anchor: person.anchor,
    };
    let passkeys = store::passkeys::count(&st.db, owner).await?;
    let Some(t) = target else { return Ok(out) };
    if counts(GateMethod::Email) {
        let mut addresses: Vec<String> = alternate.into_iter().collect();
        addresses.extend(t.other_emails.iter().cloned());
        if st.cfg.gates.email_primary {
            addresses.extend(t.email.iter().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        for a in addresses.iter().filter_map(|a| EmailAddress::parse(a).ok()) {
            if seen.insert(a.as_str().to_lowercase()) {
                out.push(Offer {
                    id: format!("email-{}", seen.len() - 1),
                    method: GateMethod::Email,
                    masked: Some(a.masked()),
                    address: Some(a.as_str().to_string()),
                    made_up: false,
                    first: false,
                });
            }
        }
    }
    if counts(GateMethod::Authenticator) && totp.is_some_and(|r| r.confirmed) {
        out.push(Offer::plain(GateMethod::Authenticator, false));
    }
    if counts(GateMethod::Questions) && !t.protected && answers.len() >= st.cfg.gates.questions_to_ask as usize {
        out.push(Offer::plain(GateMethod::Questions, false));
    }
    if counts(GateMethod::RecoveryCode) && recovery_codes > 0 {
        out.push(Offer::plain(GateMethod::RecoveryCode, false));
    }
    if counts(GateMethod::Passkey) && super::passkey::available(st) && passkeys > 0 {
        out.push(Offer::plain(GateMethod::Passkey, false));
    }
    Ok(must_come_first(st, out))
}

/// Where passkey holders must use their passkey, their passkey comes before anything else.
fn must_come_first(st: &AppState, mut offers: Vec<Offer>) -> Vec<Offer> {
    if st.cfg.gates.passkey_holders_must_use {
        offers.iter_mut().filter(|o| o.method == GateMethod::Passkey).for_each(|o| o.first = true);
    }
    offers
}

/// The offers shown for a name that matched nobody (or a person with nothing on record): an
/// e-mail code to a plausible address, and an authenticator app as often as real people here
/// have one. Derived from the name with a keyed hash, so the same name always gets the same
/// offers, and nobody can tell them from a real person's. None of them can succeed.
async fn made_up_offers(st: &AppState, login: &LoginName, purpose: Purpose) -> Result<Vec<Offer>, PortalError> {
    let counts = |m: GateMethod| st.cfg.gates.counts_for(purpose, m);
    let population = st.population().await?;
    let mut out = Vec::new();
    if counts(GateMethod::Email) {
        out.push(Offer {
            id: "email-0".into(),
            method: GateMethod::Email,
            address: None,
            masked: Some(made_up_mask(&population, login)),
            made_up: true,
            first: false,
        });
    }
    // Each of the others as often as real people here have it (a draw each: how common
    // recovery codes are says nothing of authenticators); with nothing drawn, one of them, chosen
    // in proportion to how common each is (so a made-up name may show either alone, as a real
    // person with only one does).
    let draw = st.code_key.hash(&[b"made-up-offers", login.as_str().as_bytes()]);
    let part = |i: usize| u32::from_str_radix(&draw[i * 4..i * 4 + 4], 16).unwrap_or(0);
    let others = [
        (GateMethod::Authenticator, population.authenticator_permille),
        (GateMethod::RecoveryCode, population.recovery_code_permille),
        (GateMethod::Passkey, population.passkey_permille),
    ];
    let usable = |m: GateMethod| counts(m) && (m != GateMethod::Passkey || super::passkey::available(st));
    // Each method has its own part of the draw, whichever others are enabled.
    let counted: Vec<_> = others.into_iter().enumerate().filter(|(_, (m, _))| usable(*m)).collect();
    let mut drawn: Vec<GateMethod> =
        counted.iter().filter(|(i, (_, p))| part(*i) % 1000 < *p).map(|(_, (m, _))| *m).collect();
    if out.is_empty() && drawn.is_empty() {
        // Weighted by how common each is (each at least a little, so none is never shown).
        let total: u32 = counted.iter().map(|(_, (_, p))| p + 1).sum();
        let mut at = part(7) % total.max(1);
        for (_, (m, p)) in &counted {
            if at < p + 1 {
                drawn.push(*m);
                break;
            }
            at -= p + 1;
        }
    }
    for method in drawn {
        out.push(Offer::plain(method, true));
    }
    Ok(must_come_first(st, out))
}

/// The offers open to someone who has passed `passed`: methods not passed yet, and security
/// questions only as a second method, never the first (or only) way in.
pub(crate) fn remaining(offers: &[Offer], passed: &[GateMethod]) -> Vec<Offer> {
    let open = offers
        .iter()
        .filter(|o| !passed.contains(&o.method))
        .filter(|o| o.method != GateMethod::Questions || !passed.is_empty());
    let open: Vec<Offer> = open.cloned().collect();
    // One that must come first is the only one open until it has passed.
    if open.iter().any(|o| o.first) {
        return open.into_iter().filter(|o| o.first).collect();
    }
    open
}

/// The ways `target` can really verify (no made-up offer), e.g. before a security-info change.
pub(crate) async fn real_offers(st: &AppState, target: &Target, purpose: Purpose) -> Result<Vec<Offer>, PortalError> {
    Ok(registered_offers(st, target.person(), Some(target), purpose)
        .await?
        .into_iter()
        .filter(Offer::is_real)
        .collect())
}

/// A masked address for a name that matched nobody, as a real one would look: the name's first
/// letter, and the name's own domain when it is an address, else the domain most people here
/// have (so `mallory` reads `m•••@example.org`, like `alice`'s `a•••@example.org`).
fn made_up_mask(population: &super::Population, login: &LoginName) -> String {
    let (local, domain) = match login.as_str().split_once('@') {
        Some((l, d)) if !d.is_empty() => (l, d),
        _ => (login.as_str(), population.mail_domain.as_str()),
    };
    let first = local.chars().next().filter(char::is_ascii_alphanumeric).unwrap_or('x');
    format!("{first}•••@{domain}")
}

/// Where a flow's gate forms post, and its way out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Actions {
    pub verify: &'static str,
    pub method: &'static str,
    pub back: &'static str,
    /// The code page offers to send another code (through `method`, as `resend`).
    pub resend: bool,
}

/// Where a flow stands, as its gate pages show it.
pub(crate) struct Progress {
    /// The offers still open.
    pub remaining: Vec<Offer>,
    /// One method was passed already: this is the second.
    pub second: bool,
    pub actions: Actions,
}

impl Progress {
    pub(crate) fn new(remaining: Vec<Offer>, passed: &[GateMethod], actions: Actions) -> Self {
        Progress { remaining, second: !passed.is_empty(), actions }
    }
}

/// The chooser among the offers still open, under `lead` (why a step-up asks), saying `error`.
pub(crate) async fn choice_page(
    session: &tower_sessions::Session,
    at: &Progress,
    lead: Option<String>,
    error: Option<String>,
) -> Result<Response, PortalError> {
    let tr = Tr::current();
    let page = super::pages::ChoicePage {
        tr,
        csrf: super::csrf::token(session).await?,
        offers: at.remaining.iter().map(|o| (o.id.clone(), o.label(tr), o.method == GateMethod::Passkey)).collect(),
        second: at.second,
        error,
        lead,
        method_action: at.actions.method,
        back: at.actions.back,
    };
    Ok(page.into_response())
}

/// The page of the gate now open: a code to type, or the questions asked; with `error` and the
/// support code of a wrong answer.
pub(crate) async fn gate_page(
    st: &AppState,
    session: &tower_sessions::Session,
    current: &Current,
    at: &Progress,
    (error, support_code): (Option<String>, Option<String>),
) -> Result<Response, PortalError> {
    let (tr, actions, second, can_choose) = (Tr::current(), at.actions, at.second, at.remaining.len() > 1);
    let questions = current
        .questions
        .iter()
        .enumerate()
        .map(|(i, id)| (i, questions::text(tr, &st.cfg.gates.custom_questions, id).unwrap_or_default()))
        .collect();
    // A passkey gate asks the authenticator a new question each time it is shown.
    let passkey_options = match current.offer.method {
        GateMethod::Passkey => super::passkey::begin_assertion(st, session).await?,
        _ => None,
    };
    let page = super::pages::GatePage {
        tr,
        passkey_options,
        csrf: super::csrf::token(session).await?,
        method: current.offer.method.as_str(),
        masked: current.offer.masked.clone().unwrap_or_default(),
        minutes: st.cfg.reset.code_ttl_secs.div_ceil(60),
        questions,
        can_choose,
        second,
        error,
        support_code,
        verify_action: actions.verify,
        method_action: actions.method,
        back: actions.back,
        // Shown rounded up to ten seconds: the wait is enforced to the second, but the page
        // must not tell a made-up name (whose step takes a little longer or shorter) from a real
        // one by the second it was drawn in.
        resend_in: current.resend_in(st.clock.now()).filter(|_| actions.resend).map(|s| s.next_multiple_of(10)),
    };
    Ok(page.into_response())
}

/// What a wrong answer leaves, in words, once two tries or fewer remain (before self-service is
/// paused, or, for an e-mailed code, before that code is spent); `None` while more remain.
/// Counted from this flow's own wrong answers (`flow_failures`), never from what the account's
/// record holds: a name that matches nobody, and one typed differently for the same account,
/// read exactly alike.
pub(crate) fn tries_left(
    st: &super::AppState,
    flow_failures: u32,
    method: GateMethod,
    code_failed: u32,
) -> Option<String> {
    let tr = Tr::current();
    let g = &st.cfg.gates;
    let before_block = u64::from(g.failures_per_hour.saturating_sub(flow_failures));
    let before_new_code = match method {
        GateMethod::Email => u64::from(st.cfg.reset.code_attempts.saturating_sub(code_failed)),
        _ => u64::MAX,
    };
    if (1..=2).contains(&before_block) && before_block <= before_new_code {
        let pause = tr.duration(u64::from(g.block_hours) * 3600);
        Some(tr.plural("gates.tries_left", before_block).replace("{pause}", &pause))
    } else if (1..=2).contains(&before_new_code) {
        Some(tr.plural("gates.code_tries_left", before_new_code))
    } else {
        None
    }
}

/// The words for a wrong answer at a gate of this method.
pub(crate) fn wrong_answer(tr: Tr, method: GateMethod) -> &'static str {
    match method {
        GateMethod::Email => tr.t("verify.wrong"),
        GateMethod::Authenticator => tr.t("gates.wrong_authenticator"),
        GateMethod::Questions => tr.t("gates.wrong_answers"),
        GateMethod::RecoveryCode => tr.t("gates.wrong_recovery_code"),
        GateMethod::Passkey => tr.t("gates.wrong_passkey"),
    }
}

impl Offer {
    /// True for an offer that can really verify someone (not the made-up one shown for a name
    /// that matched nobody, or a person with nothing on record).
    pub fn is_real(&self) -> bool {
        !self.made_up && (self.method != GateMethod::Email || self.address.is_some())
    }
}
