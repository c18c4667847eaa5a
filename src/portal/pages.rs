//! One template struct per page. Askama escapes every value; nothing here is marked safe.

use crate::i18n::Tr;
use askama::Template;
use askama_web::WebTemplate;

/// An outcome as a page shows it: the code, the words, and the support code.
#[derive(Debug, Clone)]
pub struct OutcomeView {
    pub code: String,
    pub message: String,
    pub support_code: String,
}

impl OutcomeView {
    pub fn new(outcome: &crate::domain::Outcome, support: &super::SupportCode) -> Self {
        Self::new_at(outcome, support, None)
    }

    /// [`Self::new`], with times in the person's time zone (see [`tz_offset`]).
    pub fn new_at(outcome: &crate::domain::Outcome, support: &super::SupportCode, offset: Option<i32>) -> Self {
        Self {
            code: outcome.code().0.into(),
            message: outcome.message_at(Tr::current(), offset),
            support_code: support.0.clone(),
        }
    }
}

/// Whether a page shows an error (for the "Error:" its title starts with).
pub fn failed(error: &Option<String>, outcome: &Option<OutcomeView>) -> bool {
    error.is_some() || outcome.is_some()
}

/// Whether the new password was refused (a rule, or the two fields differ): its fields are
/// marked invalid.
pub fn password_refused(error: &Option<String>, outcome: &Option<OutcomeView>) -> bool {
    error.is_some() || outcome.as_ref().is_some_and(|o| o.code.starts_with("PB-2"))
}

/// The person's time zone as a new-password form's script reports it: minutes east of UTC, or
/// `None` (no script, or nonsense), and times are then given in UTC.
pub fn tz_offset(field: &str) -> Option<i32> {
    field.trim().parse::<i32>().ok().filter(|m| m.abs() <= 14 * 60)
}

const TIME_ZONE: super::session::Key<i32> = super::session::Key::new(super::session::TIME_ZONE);

/// The person's time zone: what a form just reported (`field`), kept for the pages that follow,
/// which have no form to say it; else what was kept; else `None` (UTC, named so).
pub async fn time_zone(
    session: &tower_sessions::Session,
    field: Option<&str>,
) -> Result<Option<i32>, super::PortalError> {
    if let Some(offset) = field.and_then(tz_offset) {
        if TIME_ZONE.get(session).await? != Some(offset) {
            TIME_ZONE.set(session, &offset).await?;
        }
        return Ok(Some(offset));
    }
    TIME_ZONE.get(session).await
}

/// "You can change your password again from …", where the directory's minimum age forbids a
/// change at `now` (see [`crate::domain::AccountState::changeable_at`]). Only ever for the
/// person themself, once they have proved who they are: it tells when they last changed it.
pub fn not_yet(state: &crate::domain::AccountState, now: i64, offset: Option<i32>) -> Option<String> {
    let allowed = state.changeable_at(now)?;
    let changed = state.password_set_at?;
    let min_age = state.policy.as_ref()?.min_age_secs?;
    let tr = Tr::current();
    Some(tr.fill(
        "change.not_yet",
        &[
            ("allowed", tr.datetime(allowed, offset)),
            ("in", tr.ahead(u64::try_from(allowed - now).unwrap_or(0))),
            ("changed", tr.datetime(changed, offset)),
            ("min_age", tr.duration(min_age)),
        ],
    ))
}

/// "Your (new) password expires on …, in …" (`key`: `change.expires` or `change.new_expires`);
/// nothing for a moment already past.
pub fn expiry(key: &str, at: i64, now: i64, offset: Option<i32>) -> Option<String> {
    let tr = Tr::current();
    let ahead = u64::try_from(at - now).ok().filter(|s| *s > 0)?;
    Some(tr.fill(key, &[("at", tr.datetime(at, offset)), ("in", tr.ahead(ahead))]))
}

/// When a password the directory just set expires, from the policy its agent said it now lives
/// under (see [`crate::directory::Answer::policy`]); nothing where it never does.
pub fn new_expiry(result: &crate::relay::WritebackResult, now: i64, offset: Option<i32>) -> Option<String> {
    let max_age = result.policy.as_ref()?.max_age_secs.filter(|s| *s > 0)?;
    expiry("change.new_expires", now.saturating_add(i64::try_from(max_age).ok()?), now, offset)
}

/// Every rule a new password must meet, as the form states them before the person types: the
/// directory's (or the cloud policy's) with its real numbers, then the portal's own.
#[derive(Debug, Clone, Default)]
pub struct PolicyView {
    pub min_length: Option<u32>,
    pub history: Option<u32>,
    pub complexity: bool,
    /// The organisation's name, which a password may not contain, where it is configured.
    pub organisation: Option<String>,
    /// Breached passwords are looked up (when the form is sent).
    pub breached: bool,
    /// The person's names, for the page's script to tick "not your name" as they type (only
    /// for a person who proved who they are: their own names; empty otherwise).
    pub names: Vec<String>,
}

impl PolicyView {
    /// The rules `target`'s new password must meet (see
    /// [`crate::usecase::password::policy_facts`]); the portal's own are listed even where the
    /// directory's are not known yet.
    pub async fn of(st: &crate::usecase::Host, target: Option<&crate::usecase::Target>) -> Option<Self> {
        use crate::usecase::password::{policy_facts, with_portal_length};
        let facts = match policy_facts(st, target).await {
            Some(f) => f,
            None => with_portal_length(st, false, crate::domain::PolicyFacts::default()),
        };
        let names = match target {
            Some(t) => crate::usecase::policy::names_of(st, t).await.unwrap_or_default(),
            None => Vec::new(),
        };
        Some(Self::with_portal_rules(st, facts, names))
    }

    /// The rules of a staff member's own password: the cloud policy, and the portal's rules for
    /// a password always used with a second factor.
    pub fn for_staff(st: &crate::usecase::Host, names: Vec<String>) -> Self {
        use crate::usecase::password::{cloud_facts, with_portal_length};
        Self::with_portal_rules(st, with_portal_length(st, true, cloud_facts(st)), names)
    }

    fn with_portal_rules(st: &crate::usecase::Host, facts: crate::domain::PolicyFacts, names: Vec<String>) -> Self {
        let rules = st.rules.current();
        Self {
            min_length: facts.min_length,
            history: facts.history,
            complexity: facts.complexity.unwrap_or(false),
            organisation: rules.cfg.organisation_name.clone(),
            breached: rules.cfg.breached != crate::config::BreachedMode::Off,
            names,
        }
    }

    /// The history rule in words, with its number's plural form; none where nothing is kept.
    pub fn history_rule(&self) -> Option<String> {
        let n = self.history.filter(|n| *n > 0)?;
        Some(Tr::current().plural("password.history", u64::from(n)))
    }

    /// The person's names as the page's script reads them: one per line.
    pub fn names_attr(&self) -> String {
        self.names.join("\n")
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_identify.html")]
pub struct IdentifyPage {
    pub tr: Tr,
    pub csrf: String,
    /// The proof-of-work challenge (none when it is off).
    pub pow: Option<super::guard::Challenge>,
    pub login: String,
    /// The person asked to unlock rather than reset.
    pub unlock: bool,
    pub error: Option<String>,
    /// An allowed `return_to`, carried in the form until it is posted (no session before that).
    pub return_to: Option<String>,
    /// The person came back here because the flow in progress was lost.
    pub expired: bool,
    /// A passkey may be used in place of a name.
    pub passkey: bool,
}

/// The chooser: which way to verify.
#[derive(Template, WebTemplate)]
#[template(path = "reset_choice.html")]
pub struct ChoicePage {
    pub tr: Tr,
    pub csrf: String,
    /// (form value, label, needs a script: a passkey).
    pub offers: Vec<(String, String, bool)>,
    /// A second, different method is asked for.
    pub second: bool,
    pub error: Option<String>,
    /// Why verification is asked for, when it is not a reset.
    pub lead: Option<String>,
    pub method_action: &'static str,
    /// Where the way out leads.
    pub back: &'static str,
}

/// One open gate: a code to type, or questions to answer.
#[derive(Template, WebTemplate)]
#[template(path = "reset_gate.html")]
pub struct GatePage {
    pub tr: Tr,
    pub csrf: String,
    /// `email`, `authenticator` or `questions`.
    pub method: &'static str,
    /// Where the e-mailed code went, masked.
    pub masked: String,
    pub minutes: u64,
    /// (field index, question text).
    pub questions: Vec<(usize, String)>,
    /// Other methods remain, so the person may switch.
    pub can_choose: bool,
    pub second: bool,
    pub error: Option<String>,
    /// Shown with an error that was audited, so the helpdesk can find it.
    pub support_code: Option<String>,
    pub verify_action: &'static str,
    pub method_action: &'static str,
    pub back: &'static str,
    /// Seconds until another code may be sent from this page (0: now); `None`: not offered.
    pub resend_in: Option<u64>,
    /// For a passkey: the options for the browser, as JSON.
    pub passkey_options: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_unlock.html")]
pub struct UnlockPage {
    pub tr: Tr,
    pub csrf: String,
    pub form_key: String,
    pub outcome: Option<OutcomeView>,
    pub error: Option<String>,
    /// The directory says the account is not locked: nothing to unlock.
    pub not_locked: bool,
    /// What the last step did, when it says something (recovery codes left).
    pub notice: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_password.html")]
pub struct PasswordPage {
    pub tr: Tr,
    pub csrf: String,
    pub form_key: String,
    pub error: Option<String>,
    pub outcome: Option<OutcomeView>,
    pub policy: Option<PolicyView>,
    /// The directory has the account locked now: the new password lifts the lock too.
    pub locked: bool,
    /// What the last step did, when it says something (recovery codes left).
    pub notice: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "change.html")]
pub struct ChangePage {
    pub tr: Tr,
    pub csrf: String,
    /// The proof-of-work challenge (none when it is off).
    pub pow: Option<super::guard::Challenge>,
    pub form_key: String,
    pub login: String,
    pub error: Option<String>,
    pub outcome: Option<OutcomeView>,
    pub policy: Option<PolicyView>,
    /// Why no password can be chosen now (the minimum age), unless a refusal said it already.
    pub not_yet: Option<String>,
    /// No password can be chosen now: the form is not shown.
    pub closed: bool,
    /// No directory can be reached now (said before anything is typed).
    pub down: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "outcome.html")]
pub struct OutcomePage {
    pub tr: Tr,
    pub title: String,
    pub success: bool,
    pub outcome: OutcomeView,
    pub helpdesk: String,
    pub start_again: bool,
    /// Where the person came from (an allowed origin only), to go back to.
    pub return_to: Option<String>,
    /// When the password just set expires, where the directory sets a maximum age.
    pub expires: Option<String>,
    /// Where "Sign in" leads after a success (see [`sign_in_url`]).
    pub sign_in: String,
}

/// Where a person who is done goes to sign in: the organisation's own page (`server.done_url`),
/// else this portal's.
pub fn sign_in_url(st: &crate::usecase::Host) -> String {
    st.cfg.server.done_url.clone().unwrap_or_else(|| super::paths::SIGNIN.to_string())
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub tr: Tr,
    pub title: String,
    pub message: String,
    pub support_code: String,
}

/// An address the portal has no page at.
#[derive(Template, WebTemplate)]
#[template(path = "not_found.html")]
pub struct NotFoundPage {
    pub tr: Tr,
}

pub struct DemoMail {
    /// When it arrived, in UTC.
    pub at: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "demo_mail.html")]
pub struct DemoMailPage {
    pub tr: Tr,
    pub mails: Vec<DemoMail>,
}

#[derive(Template, WebTemplate)]
#[template(path = "signin.html")]
pub struct SignInPage {
    pub tr: Tr,
    pub csrf: String,
    /// The proof-of-work challenge (none when it is off).
    pub pow: Option<super::guard::Challenge>,
    pub login: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub outcome: Option<OutcomeView>,
    /// No directory can be reached now (said before anything is typed).
    pub down: bool,
}

/// The directory said the password must be changed (reset by the helpdesk, or expired).
#[derive(Template, WebTemplate)]
#[template(path = "signin_expired.html")]
pub struct ExpiredPage {
    pub tr: Tr,
    pub csrf: String,
    pub form_key: String,
    pub username: String,
    /// Whether the current password is typed again (else the sign-in's proof stands for it).
    pub ask_current: bool,
    /// Why, in the directory's words mapped to ours.
    pub reason: String,
    pub policy: Option<PolicyView>,
    pub error: Option<String>,
    pub outcome: Option<OutcomeView>,
}

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub tr: Tr,
    pub csrf: String,
    pub username: String,
    /// Fewer methods registered than a reset needs: what to do.
    pub must_register: Option<String>,
    /// The periodic "are these still right?" question.
    pub reconfirm: bool,
    pub notice: Option<String>,
    pub email_enabled: bool,
    pub emails: Vec<String>,
    pub alternate: Option<String>,
    pub authenticator_enabled: bool,
    pub authenticator: bool,
    pub questions_enabled: bool,
    pub questions: usize,
    pub recovery_codes_enabled: bool,
    /// Recovery codes left.
    pub recovery_codes: u64,
    pub passkeys_enabled: bool,
    pub passkeys: Vec<PasskeyView>,
    /// When the password expires, where the directory sets a maximum age.
    pub expires: Option<String>,
    /// When the password can next be changed, if not now (the minimum age).
    pub not_yet: Option<String>,
}

/// A passkey being registered: the browser is asked to make one.
#[derive(Template, WebTemplate)]
#[template(path = "account_passkey.html")]
pub struct PasskeyPage {
    pub tr: Tr,
    pub csrf: String,
    /// The options for the browser, as JSON.
    pub options: String,
    pub error: Option<String>,
}

/// One of a person's passkeys, as security info lists it.
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created: String,
    /// When it last proved who the person is; `None`: never yet.
    pub last_used: Option<String>,
}

/// New recovery codes, shown once.
#[derive(Template, WebTemplate)]
#[template(path = "account_recovery_codes.html")]
pub struct RecoveryCodesPage {
    pub tr: Tr,
    pub codes: Vec<String>,
    /// The codes as a text file, in a `data:` URL (so nothing else ever serves them).
    pub download: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "account_authenticator.html")]
pub struct AuthenticatorPage {
    pub tr: Tr,
    pub csrf: String,
    /// The QR code, as a `data:` URL.
    pub qr: String,
    /// The seed as text, for typing into an app.
    pub secret: String,
    /// The `otpauth://` address, for a phone's own app.
    pub link: String,
    pub error: Option<String>,
}

/// A secret as groups of four that never break across lines (see `crypto::totp::seed_text`).
pub fn groups(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "account_questions.html")]
pub struct QuestionsPage {
    pub tr: Tr,
    pub csrf: String,
    /// (id, text) of every question on offer.
    pub offered: Vec<(String, String)>,
    /// (row, question chosen so far).
    pub rows: Vec<(usize, String)>,
    pub error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "account_email.html")]
pub struct EmailPage {
    pub tr: Tr,
    pub csrf: String,
    /// Where a code was sent (masked), when waiting for it.
    pub sent_to: Option<String>,
    pub error: Option<String>,
}

// ---- staff pages

/// A time as staff pages show it: `2026-11-22 05:18:07 UTC`.
pub fn utc(t: impl Seconds) -> String {
    crate::mail::utc_seconds(t.seconds())
}

/// A key's age in words.
pub fn days_old(tr: &Tr, days: impl Seconds) -> String {
    tr.plural("health.days_old", u64::try_from(days.seconds()).unwrap_or(0))
}

/// A number of seconds (or days) however many references deep a template holds it.
pub trait Seconds {
    fn seconds(&self) -> i64;
}

impl Seconds for i64 {
    fn seconds(&self) -> i64 {
        *self
    }
}

impl<T: Seconds + ?Sized> Seconds for &T {
    fn seconds(&self) -> i64 {
        (**self).seconds()
    }
}

/// What the health page says of a held full sync, with its numbers.
pub fn sync_hold_text(tr: Tr, h: &crate::store::users::SyncHold) -> String {
    tr.fill(
        "health.hold",
        &[
            ("directory", h.directory.clone()),
            ("n", h.would_remove.to_string()),
            ("total", h.total.to_string()),
            ("when", utc(h.held_at)),
        ],
    )
}
