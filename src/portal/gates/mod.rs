//! Verification gates (DESIGN §6): how a person proves who they are before a reset or an unlock.
//! Each method is its own module; this one offers them, starts one, checks an answer, and keeps
//! the limits: failed verifications and resets per account per hour lead to a block, audited.

pub mod questions;
pub use crate::crypto::totp;

use super::people::Target;
use super::{AppState, PortalError, SupportCode};
use crate::config::GateMethod;
use crate::domain::{EmailAddress, LoginName, MsgId, OneTimeCode};
use crate::i18n::Tr;
use crate::store::{self, security};
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
}

impl Offer {
    pub fn label(&self, tr: Tr) -> String {
        match self.method {
            GateMethod::Email => tr.f("gates.offer_email", "address", self.masked.as_deref().unwrap_or("")),
            GateMethod::Authenticator => tr.t("gates.offer_authenticator").into(),
            GateMethod::Questions => tr.t("gates.offer_questions").into(),
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
}

/// The ways `target` can verify, in a stable order. For a name that matched nobody there is one
/// e-mail offer to an address that looks like a real one (made from the name, the same each
/// time), so the step after the first one does not tell real names from made-up ones either.
pub(crate) async fn offers(
    st: &AppState,
    target: Option<&Target>,
    login: &LoginName,
) -> Result<Vec<Offer>, PortalError> {
    // A name that matched nobody is looked up as a person with nothing on record, so the step
    // takes as long and shows the same.
    let nobody = security::Person { directory: "", anchor: "" };
    let registered = registered_offers(st, target.map_or(nobody, Target::person), target).await?;
    if remaining(&registered, &[]).is_empty() {
        // Nothing on record that can come first (nothing at all, or only security questions):
        // the same made-up offers as for a name that matched nobody.
        return made_up_offers(st, login).await;
    }
    Ok(registered)
}

/// What `person` registered (and the directory gave them), as offers; `target` gives the
/// directory's addresses and whether the account is privileged.
async fn registered_offers(
    st: &AppState,
    person: security::Person<'_>,
    target: Option<&Target>,
) -> Result<Vec<Offer>, PortalError> {
    let enabled = &st.cfg.gates.methods;
    let mut out = Vec::new();
    let alternate = security::alternate_email(&st.db, person).await?;
    let totp = security::totp(&st.db, person).await?;
    let answers = security::answers(&st.db, person).await?;
    let Some(t) = target else { return Ok(out) };
    if enabled.contains(&GateMethod::Email) {
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
                });
            }
        }
    }
    if enabled.contains(&GateMethod::Authenticator) && totp.is_some_and(|r| r.confirmed) {
        out.push(Offer {
            id: "authenticator".into(),
            method: GateMethod::Authenticator,
            address: None,
            masked: None,
            made_up: false,
        });
    }
    if enabled.contains(&GateMethod::Questions)
        && !t.protected
        && answers.len() >= st.cfg.gates.questions_to_ask as usize
    {
        out.push(Offer {
            id: "questions".into(),
            method: GateMethod::Questions,
            address: None,
            masked: None,
            made_up: false,
        });
    }
    Ok(out)
}

/// The offers shown for a name that matched nobody (or a person with nothing on record): an
/// e-mail code to a plausible address, and an authenticator app as often as real people here
/// have one. Derived from the name with a keyed hash, so the same name always gets the same
/// offers, and nobody can tell them from a real person's. None of them can succeed.
async fn made_up_offers(st: &AppState, login: &LoginName) -> Result<Vec<Offer>, PortalError> {
    let enabled = &st.cfg.gates.methods;
    let population = st.population().await?;
    let mut out = Vec::new();
    if enabled.contains(&GateMethod::Email) {
        out.push(Offer {
            id: "email-0".into(),
            method: GateMethod::Email,
            address: None,
            masked: Some(made_up_mask(&population, login)),
            made_up: true,
        });
    }
    let draw = st.code_key.hash(&[b"made-up-offers", login.as_str().as_bytes()]);
    let permille = u32::from_str_radix(&draw[..4], 16).unwrap_or(0) % 1000;
    if enabled.contains(&GateMethod::Authenticator) && (permille < population.authenticator_permille || out.is_empty())
    {
        out.push(Offer {
            id: "authenticator".into(),
            method: GateMethod::Authenticator,
            address: None,
            masked: None,
            made_up: true,
        });
    }
    Ok(out)
}

/// The offers open to someone who has passed `passed`: methods not passed yet, and security
/// questions only as a second method, never the first (or only) way in.
pub(crate) fn remaining(offers: &[Offer], passed: &[GateMethod]) -> Vec<Offer> {
    offers
        .iter()
        .filter(|o| !passed.contains(&o.method))
        .filter(|o| o.method != GateMethod::Questions || !passed.is_empty())
        .cloned()
        .collect()
}

/// The ways `target` can really verify (no made-up offer), e.g. before a security-info change.
pub(crate) async fn real_offers(st: &AppState, target: &Target) -> Result<Vec<Offer>, PortalError> {
    Ok(registered_offers(st, target.person(), Some(target)).await?.into_iter().filter(Offer::is_real).collect())
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

/// Starts a gate: e-mails a code, or picks the questions to ask. The same work whether or not
/// the offer leads anywhere (a made-up address gets a code that is stored nowhere).
pub(crate) async fn start(
    st: &AppState,
    client: std::net::IpAddr,
    target: Option<&Target>,
    offer: &Offer,
    support: &SupportCode,
) -> Result<(Current, &'static str), PortalError> {
    let mut current = Current { offer: offer.clone(), code_id: None, questions: Vec::new(), failed: 0 };
    let raw = match offer.method {
        GateMethod::Email => {
            let (code_id, raw) = send_code(st, target, offer, support).await?;
            current.code_id = Some(code_id);
            raw
        }
        GateMethod::Authenticator => "authenticator code asked",
        GateMethod::Questions => {
            let Some(t) = target else { return Ok((current, "no such account")) };
            let registered: Vec<String> =
                security::answers(&st.db, t.person()).await?.into_iter().map(|(q, _)| q).collect();
            let ask = st.cfg.gates.questions_to_ask as usize;
            let now = st.clock.now();
            let (ids, again) = security::draw_questions(&st.db, t.person(), &registered, ask, now, |ids| {
                ids.shuffle(&mut rand::rngs::OsRng)
            })
            .await?;
            current.questions = ids;
            if again {
                // The same questions as before, and the asking counts as a failed answer: nobody
                // can draw (or open) the gate again and again for free.
                let subject = t.person().subject();
                if let Ok(reservation) = reserve_failure(st, &subject, client, GateMethod::Questions).await? {
                    settle_failure(st, &subject, reservation, false).await?;
                }
                "security questions asked again before an answer (counted as a failure)"
            } else {
                "security questions asked"
            }
        }
    };
    Ok((current, raw))
}

async fn send_code(
    st: &AppState,
    target: Option<&Target>,
    offer: &Offer,
    support: &SupportCode,
) -> Result<(String, &'static str), PortalError> {
    let now = st.clock.now();
    let code = OneTimeCode::generate(&mut rand::rngs::OsRng);
    let code_id = MsgId::random().to_string();
    let code_hash = st.code_key.hash(&[code_id.as_bytes(), code.expose().as_bytes()]);
    let address = offer.address.as_deref().and_then(|a| EmailAddress::parse(a).ok());
    let ttl = i64::try_from(st.cfg.reset.code_ttl_secs).unwrap_or(600);
    let new = store::codes::NewCode {
        id: &code_id,
        directory: target.map_or("", |t| t.directory.as_str()),
        anchor: target.map_or("", |t| t.anchor.as_str()),
        code_hash: &code_hash,
        now,
        expires_at: now + ttl,
    };
    let limit = if target.is_some() && address.is_some() { st.cfg.reset.codes_per_hour } else { 0 };
    let stored = store::codes::insert_within_limit(&st.db, &new, limit).await?;
    let raw = match (target, address) {
        (Some(_), Some(to)) if stored => {
            mail_code(st, to, code, support);
            "code sent"
        }
        (Some(_), Some(_)) => "code limit per hour reached",
        (Some(_), None) => "no e-mail address on record",
        (None, _) => "no such account: nothing sent",
    };
    Ok((code_id, raw))
}

/// Sends in the background, so the answer takes as long whether or not a message goes out.
fn mail_code(st: &AppState, to: EmailAddress, code: OneTimeCode, support: &SupportCode) {
    let mailer = st.mailer.clone();
    let support = support.clone();
    let minutes = st.cfg.reset.code_ttl_secs.div_ceil(60);
    let tr = Tr::current();
    tokio::spawn(async move {
        let sent = match crate::mail::code_message(tr, code.expose(), minutes) {
            Ok(msg) => mailer.send(&to, msg).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::error!(support_code = %support, error = %format!("{e:#}"), "sending the verification code failed");
        }
    });
}

/// A gate's form as posted: a code, or up to five answers (`answer0`…).
#[derive(serde::Deserialize)]
pub struct GateForm {
    code: Option<String>,
    answer0: Option<SecretString>,
    answer1: Option<SecretString>,
    answer2: Option<SecretString>,
    answer3: Option<SecretString>,
    answer4: Option<SecretString>,
}

impl GateForm {
    /// What was answered to `current`: the code, and as many answers as questions were asked.
    pub fn response(self, current: &Current) -> Response {
        let answers = [self.answer0, self.answer1, self.answer2, self.answer3, self.answer4]
            .into_iter()
            .flatten()
            .take(current.questions.len())
            .collect();
        Response { code: self.code, answers }
    }
}

/// What the person answered at a gate.
pub struct Response {
    /// The e-mailed or authenticator code.
    pub code: Option<String>,
    /// Answers to the questions asked, in order.
    pub answers: Vec<SecretString>,
}

/// Whether the answer is right. Each check costs the same whether or not there is anything to
/// check against. Returns the verdict and a note for the audit.
async fn check(
    st: &AppState,
    target: Option<&Target>,
    current: &Current,
    response: &Response,
) -> Result<(bool, &'static str), PortalError> {
    let now = st.clock.now();
    // A made-up offer never verifies anyone, whatever was registered since it was shown (the
    // work below is still done, so the answer takes as long).
    let made_up = current.offer.made_up;
    let (right, raw) = check_answer(st, target, current, response, now).await?;
    Ok(if made_up { (false, "a made-up offer verifies nobody") } else { (right, raw) })
}

async fn check_answer(
    st: &AppState,
    target: Option<&Target>,
    current: &Current,
    response: &Response,
    now: i64,
) -> Result<(bool, &'static str), PortalError> {
    match current.offer.method {
        GateMethod::Email => {
            let Some(code) = response.code.as_deref().and_then(|c| OneTimeCode::parse(c).ok()) else {
                return Ok((false, "not a code"));
            };
            let code_id = current.code_id.clone().unwrap_or_default();
            // Spends one attempt and reads the hash in one statement, so parallel guesses cannot
            // exceed the limit. Without a live code a hash is still computed.
            let owner = target.map_or(security::Person { directory: "", anchor: "" }, Target::person);
            let stored = store::codes::take_attempt(&st.db, &code_id, owner, now, st.cfg.reset.code_attempts).await?;
            let presented = [code_id.as_bytes(), code.expose().as_bytes()];
            let ok = match &stored {
                Some(hash) => {
                    st.code_key.matches(&presented, hash) && store::codes::mark_used(&st.db, &code_id, now).await?
                }
                None => {
                    let _ = st.code_key.matches(&presented, "");
                    false
                }
            };
            Ok((ok, if ok { "code accepted" } else { "wrong, used or expired code" }))
        }
        GateMethod::Authenticator => {
            let typed = response.code.clone().unwrap_or_default();
            let Some(t) = target else { return Ok((false, "no such account")) };
            let Some(row) = security::totp(&st.db, t.person()).await?.filter(|r| r.confirmed) else {
                return Ok((false, "no authenticator registered"));
            };
            let seed = st.secrets.decrypt(&t.person().context("totp"), &row.secret_enc)?;
            match totp::matching_step(&seed, &typed, now) {
                Some(step) if security::use_totp_step(&st.db, t.person(), step, now).await? => {
                    Ok((true, "authenticator code accepted"))
                }
                Some(_) => Ok((false, "authenticator code already used")),
                None => Ok((false, "wrong authenticator code")),
            }
        }
        GateMethod::Questions => {
            let stored = match target {
                Some(t) => security::answers(&st.db, t.person()).await?,
                None => Vec::new(),
            };
            let mut all_right = !current.questions.is_empty() && response.answers.len() == current.questions.len();
            for (i, q) in current.questions.iter().enumerate() {
                let typed = response.answers.get(i).map(|a| a.expose_secret().to_string()).unwrap_or_default();
                let normalised: SecretString = questions::normalise(&typed).unwrap_or_default().into();
                let hash = stored.iter().find(|(id, _)| id == q).map(|(_, h)| h.clone());
                // Every answer is checked, right or wrong, so the time says nothing.
                if !crate::usecase::password::verify(&normalised, hash).await {
                    all_right = false;
                }
            }
            if all_right {
                if let Some(t) = target {
                    security::questions_answered(&st.db, t.person(), now).await?;
                }
            }
            Ok((all_right, if all_right { "answers accepted" } else { "wrong answers" }))
        }
    }
}

/// How an answer at a gate went.
pub(crate) enum Answered {
    /// Not even looked at: the person is blocked (or just reached the limit).
    Blocked,
    /// Not even looked at: too many failures from this client address, whatever the accounts.
    TooManyFromHere,
    Right(&'static str),
    /// Wrong; `blocked_now` when this failure completed a block.
    Wrong {
        raw: &'static str,
        blocked_now: bool,
    },
}

/// Answers a gate for `subject`: one failure of the hourly allowance is taken first (race-free),
/// the answer checked, and the failure given back if it was right.
pub(crate) async fn answer(
    st: &AppState,
    subject: &str,
    client: std::net::IpAddr,
    target: Option<&Target>,
    current: &Current,
    response: &Response,
) -> Result<Answered, PortalError> {
    let reservation = match reserve_failure(st, subject, client, current.offer.method).await? {
        Ok(r) => r,
        Err(security::Spent::Subject) => return Ok(Answered::Blocked),
        Err(security::Spent::Address) => return Ok(Answered::TooManyFromHere),
    };
    let (right, raw) = check(st, target, current, response).await?;
    let blocked_now = settle_failure(st, subject, reservation, right).await?;
    if !right {
        // The portal-wide count is looked at with every failure too, not only every half minute.
        if let Err(e) = super::guard::check_failures(st).await {
            tracing::warn!(error = %format!("{e:#}"), "counting failed verifications failed");
        }
    }
    Ok(if right { Answered::Right(raw) } else { Answered::Wrong { raw, blocked_now } })
}

/// Takes one failed verification of `subject`'s and of `client`'s hourly allowances before an
/// answer is checked; which ran out when none is left (a person whose allowance ran out is, or
/// is now, blocked). Race-free: parallel guesses cannot each find the allowances unspent.
async fn reserve_failure(
    st: &AppState,
    subject: &str,
    client: std::net::IpAddr,
    method: GateMethod,
) -> Result<Result<i64, security::Spent>, PortalError> {
    let (now, g) = (st.clock.now(), &st.cfg.gates);
    let limits = (g.failures_per_hour, st.cfg.anti_automation.failures_per_address_per_hour);
    let address = super::guard::address_key_text(client);
    let reserved = security::reserve_failure(&st.db, subject, &address, method.as_str(), now, limits).await?;
    match reserved {
        Err(security::Spent::Subject) => {
            let until = now + i64::from(g.block_hours) * 3600;
            security::block_if_reached(&st.db, subject, "failure", now, g.failures_per_hour, until).await?;
        }
        Err(security::Spent::Address) => {
            tracing::warn!(client = %address, "failed verifications from this address reached the hourly limit");
        }
        Ok(_) => {}
    }
    Ok(reserved)
}

/// Settles a reservation once the answer is known: given back when right; when wrong, it stays
/// and may complete a block (true when it has just blocked the person).
async fn settle_failure(st: &AppState, subject: &str, reservation: i64, right: bool) -> Result<bool, PortalError> {
    if right {
        security::release_event(&st.db, reservation).await?;
        return Ok(false);
    }
    let (now, g) = (st.clock.now(), &st.cfg.gates);
    let until = now + i64::from(g.block_hours) * 3600;
    Ok(security::block_if_reached(&st.db, subject, "failure", now, g.failures_per_hour, until).await?)
}

/// Counts a completed reset or unlock; true when it has just blocked the person for more.
pub(crate) async fn count_reset(st: &AppState, subject: &str) -> Result<bool, PortalError> {
    let (now, g) = (st.clock.now(), &st.cfg.gates);
    security::record_reset(&st.db, subject, now).await?;
    let until = now + i64::from(g.block_hours) * 3600;
    Ok(security::block_if_reached(&st.db, subject, "reset", now, g.resets_per_hour, until).await?)
}

pub(crate) async fn blocked(st: &AppState, subject: &str) -> Result<bool, PortalError> {
    Ok(security::blocked_until(&st.db, subject, st.clock.now()).await?.is_some())
}

/// Where a flow's gate forms post, and its way out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Actions {
    pub verify: &'static str,
    pub method: &'static str,
    pub back: &'static str,
}

/// The chooser among `offers`.
pub(crate) async fn choice_page(
    session: &tower_sessions::Session,
    offers: &[Offer],
    second: bool,
    lead: Option<String>,
    error: Option<String>,
    actions: Actions,
) -> Result<axum::response::Response, PortalError> {
    use axum::response::IntoResponse;
    let tr = Tr::current();
    let page = super::pages::ChoicePage {
        tr,
        csrf: super::csrf::token(session).await?,
        offers: offers.iter().map(|o| (o.id.clone(), o.label(tr))).collect(),
        second,
        error,
        lead,
        method_action: actions.method,
        back: actions.back,
    };
    Ok(page.into_response())
}

/// The page of the gate now open: a code to type, or the questions asked.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn gate_page(
    st: &AppState,
    session: &tower_sessions::Session,
    current: &Current,
    can_choose: bool,
    second: bool,
    error: Option<String>,
    support_code: Option<String>,
    actions: Actions,
) -> Result<axum::response::Response, PortalError> {
    use axum::response::IntoResponse;
    let tr = Tr::current();
    let questions = current
        .questions
        .iter()
        .enumerate()
        .map(|(i, id)| (i, questions::text(tr, &st.cfg.gates.custom_questions, id).unwrap_or_default()))
        .collect();
    let page = super::pages::GatePage {
        tr,
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
    };
    Ok(page.into_response())
}

/// The words for a wrong answer at a gate of this method.
pub(crate) fn wrong_answer(tr: Tr, method: GateMethod) -> &'static str {
    match method {
        GateMethod::Email => tr.t("verify.wrong"),
        GateMethod::Authenticator => tr.t("gates.wrong_authenticator"),
        GateMethod::Questions => tr.t("gates.wrong_answers"),
    }
}

impl Offer {
    /// True for an offer that can really verify someone (not the made-up one shown for a name
    /// that matched nobody, or a person with nothing on record).
    pub fn is_real(&self) -> bool {
        !self.made_up && (self.method != GateMethod::Email || self.address.is_some())
    }
}
