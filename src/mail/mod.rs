//! Outgoing mail: lettre over SMTP. Each message is a text and an HTML template under
//! `templates/mail/`, rendered together with its subject by one function here.
//! In demo mode only, mail goes to a built-in SMTP sink whose messages `/demo/mail` shows.

pub mod sink;

use crate::config::{MailConfig, SmtpSecurity};
use crate::domain::EmailAddress;
use crate::i18n::Tr;
use anyhow::Context;
use askama::Template;
use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use std::time::Duration;

/// How many notices (which nobody waits for) are handed to the SMTP server at once, each on a
/// connection of its own. More wait for a turn: in a burst, each would otherwise open a
/// connection only to close it again. A code (someone is waiting for it) never waits for one.
const NOTICES_AT_ONCE: u32 = 8;
/// Connections kept open between messages: the notices' and as many for codes.
const KEPT_OPEN: u32 = 2 * NOTICES_AT_ONCE;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    turns: std::sync::Arc<tokio::sync::Semaphore>,
}

/// One e-mail, rendered: what every message template produces.
#[derive(Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Template)]
#[template(path = "mail/code.txt")]
struct CodeText<'a> {
    tr: Tr,
    code: &'a str,
    minutes: u64,
}

#[derive(Template)]
#[template(path = "mail/code.html")]
struct CodeHtml<'a> {
    tr: Tr,
    code: &'a str,
    minutes: u64,
}

/// The message that carries a one-time code, in the language of the person who asked for it.
pub fn code_message(tr: Tr, code: &str, minutes: u64) -> anyhow::Result<Rendered> {
    Ok(Rendered {
        subject: tr.t("mail.code_subject").into(),
        text: CodeText { tr, code, minutes }.render()?,
        html: CodeHtml { tr, code, minutes }.render()?,
    })
}

/// What a notice tells the person happened to their account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Reset,
    Changed,
    Unlocked,
    /// The helpdesk required a new password at the next sign-in.
    MustChange,
    /// The helpdesk removed a method the person registered to prove who they are.
    MethodRemoved,
    /// The addresses the person's codes go to changed in the directory (sent to the old ones).
    AddressesChanged,
    /// The person added a way to prove who they are (sent to every address on record).
    MethodAdded(crate::config::GateMethod),
    /// The person removed one (sent to every address on record, the removed one too).
    MethodRemovedByOwner(crate::config::GateMethod),
    /// One of the person's recovery codes was used; this many are left.
    RecoveryCodeUsed(u32),
}

impl Notice {
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Notice::Reset => ("mail.reset_subject", "mail.reset_body"),
            Notice::Changed => ("mail.changed_subject", "mail.changed_body"),
            Notice::Unlocked => ("mail.unlocked_subject", "mail.unlocked_body"),
            Notice::MustChange => ("mail.must_change_subject", "mail.must_change_body"),
            Notice::MethodRemoved => ("mail.method_removed_subject", "mail.method_removed_body"),
            Notice::AddressesChanged => ("mail.addresses_changed_subject", "mail.addresses_changed_body"),
            Notice::MethodAdded(_) | Notice::MethodRemovedByOwner(_) => {
                ("mail.security_info_subject", "mail.security_info_body")
            }
            Notice::RecoveryCodeUsed(_) => ("mail.recovery_code_used_subject", "mail.recovery_code_used_body"),
        }
    }

    /// What changed, in words, for the notices that say it (`{what}`).
    fn what(self, tr: Tr) -> String {
        let (method, change) = match self {
            Notice::MethodAdded(m) => (m, "added"),
            Notice::MethodRemovedByOwner(m) => (m, "removed"),
            Notice::RecoveryCodeUsed(0) => return tr.t("mail.recovery_codes_none").into(),
            Notice::RecoveryCodeUsed(left) => return tr.plural("mail.recovery_codes_left", u64::from(left)),
            _ => return String::new(),
        };
        tr.t(&format!("mail.what_{}_{change}", method.as_str())).to_string()
    }
}

#[derive(Template)]
#[template(path = "mail/notice.txt")]
struct NoticeText<'a> {
    tr: Tr,
    body_key: &'a str,
    when: &'a str,
    what: &'a str,
    helpdesk: &'a str,
}

/// The same notice, as HTML.
#[derive(Template)]
#[template(path = "mail/notice.html")]
struct NoticeHtml<'a> {
    n: &'a NoticeText<'a>,
}

#[derive(Template)]
#[template(path = "mail/staff_reset.txt")]
struct StaffResetText<'a> {
    tr: Tr,
    body: &'a str,
}

#[derive(Template)]
#[template(path = "mail/staff_reset.html")]
struct StaffResetHtml<'a> {
    tr: Tr,
    body: &'a str,
}

#[derive(Template)]
#[template(path = "mail/alert.txt")]
struct AlertText<'a> {
    body: &'a str,
}

#[derive(Template)]
#[template(path = "mail/alert.html")]
struct AlertHtml<'a> {
    tr: Tr,
    body: &'a str,
}

/// To administrators: something the portal noticed (an attack, a held sync…), in one paragraph.
pub fn alert_message(tr: Tr, subject: String, body: &str) -> anyhow::Result<Rendered> {
    Ok(Rendered { subject, text: AlertText { body }.render()?, html: AlertHtml { tr, body }.render()? })
}

/// To every administrator: one administrator reset another staff member's sign-in.
pub fn staff_reset_message(tr: Tr, admin: &str, staff: &str, when: &str) -> anyhow::Result<Rendered> {
    let body = tr.fill(
        "mail.staff_reset_body",
        &[("admin", admin.to_string()), ("staff", staff.to_string()), ("when", when.to_string())],
    );
    Ok(Rendered {
        subject: tr.f("mail.staff_reset_subject", "staff", staff),
        text: StaffResetText { tr, body: &body }.render()?,
        html: StaffResetHtml { tr, body: &body }.render()?,
    })
}

/// What a reminder, sent of the portal's own accord, is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reminder {
    /// The password expires at `at`, in about `days` days.
    Expiry { days: u64, at: i64 },
    /// The password expired at `at`.
    Expired { at: i64 },
    /// The person needs `missing` more ways to prove who they are before they can reset.
    Campaign { missing: u64 },
}

/// One paragraph of a reminder: its text, and the link where the text says `{link}`.
struct Paragraph {
    before: String,
    link: Option<String>,
    after: String,
}

impl Paragraph {
    /// The paragraph of `template`, cut where it says `{link}` before `fill` puts anything in
    /// (so nothing filled in can move the link), then filled in.
    fn of(template: &str, link: &str, fill: impl Fn(&str) -> String) -> Self {
        match template.split_once("{link}") {
            Some((before, after)) => Paragraph { before: fill(before), link: Some(link.into()), after: fill(after) },
            None => Paragraph { before: fill(template), link: None, after: String::new() },
        }
    }
}

#[derive(Template)]
#[template(path = "mail/reminder.txt")]
struct ReminderText<'a> {
    paragraphs: &'a [Paragraph],
    safety: &'a str,
    why: &'a str,
}

#[derive(Template)]
#[template(path = "mail/reminder.html")]
struct ReminderHtml<'a> {
    tr: Tr,
    paragraphs: &'a [Paragraph],
    safety: &'a str,
    why: &'a str,
}

/// A reminder to `user` (their user name), leading to `link` on the portal at `site`: both
/// made from its public URL, never from a request. Dates are the person's language's, in UTC
/// (the portal does not know their time zone), and say so.
pub fn reminder_message(tr: Tr, reminder: Reminder, user: &str, site: &str, link: &str) -> anyhow::Result<Rendered> {
    let when = match reminder {
        Reminder::Expiry { at, .. } | Reminder::Expired { at } => tr.datetime(at, None),
        Reminder::Campaign { .. } => String::new(),
    };
    let fill = |s: &str| s.replace("{user}", user).replace("{when}", &when);
    let (subject, paragraphs) = match reminder {
        Reminder::Expiry { days, .. } => {
            (tr.plural("mail.expiry_subject", days), vec![Paragraph::of(tr.t("mail.expiry_body"), link, fill)])
        }
        Reminder::Expired { .. } => {
            (tr.t("mail.expired_subject").to_string(), vec![Paragraph::of(tr.t("mail.expired_body"), link, fill)])
        }
        Reminder::Campaign { missing } => {
            let why = format!("{} {}", tr.t("mail.campaign_body"), tr.plural("mail.campaign_needed", missing));
            let how = Paragraph::of(tr.t("mail.campaign_how"), link, fill);
            (tr.t("mail.campaign_subject").to_string(), vec![Paragraph::of(&why, link, str::to_string), how])
        }
    };
    let safety = tr.f("mail.reminder_safety", "site", site);
    let why = tr.f("mail.reminder_why", "user", user);
    Ok(Rendered {
        subject,
        text: ReminderText { paragraphs: &paragraphs, safety: &safety, why: &why }.render()?,
        html: ReminderHtml { tr, paragraphs: &paragraphs, safety: &safety, why: &why }.render()?,
    })
}

/// A time to the second, as staff pages and staff notices show it: `2026-11-22 05:18:07 UTC`.
pub fn utc_seconds(unix: i64) -> String {
    utc(unix, time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC"))
}

/// A time as notices give it: `2026-12-04 20:30 UTC`.
pub fn utc_minutes(unix: i64) -> String {
    utc(unix, time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC"))
}

fn utc(unix: i64, format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix).ok().and_then(|t| t.format(format).ok()).unwrap_or_default()
}

/// The notice sent after a password was reset or changed, or an account unlocked: when, and what
/// to do if it was not the person.
pub fn notice_message(tr: Tr, notice: Notice, when: &str, helpdesk: &str) -> anyhow::Result<Rendered> {
    let (subject, body_key) = notice.keys();
    let what = &notice.what(tr);
    let text = NoticeText { tr, body_key, when, what, helpdesk };
    Ok(Rendered { subject: tr.t(subject).into(), text: text.render()?, html: NoticeHtml { n: &text }.render()? })
}

impl Mailer {
    pub fn new(cfg: &MailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = cfg.from.parse().context("mail.from")?;
        let tls_params = || -> anyhow::Result<TlsParameters> {
            let mut b = TlsParameters::builder(cfg.smtp_host.clone());
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca).with_context(|| format!("mail.ca_file {}", ca.display()))?;
                b = b.add_root_certificate(Certificate::from_pem(&pem)?);
            }
            Ok(b.build_rustls()?)
        };
        let mut builder = match cfg.security {
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.smtp_host).tls(Tls::Wrapper(tls_params()?))
            }
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.smtp_host)
                .tls(Tls::Required(tls_params()?)),
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.smtp_host),
        }
        .port(cfg.smtp_port)
        .timeout(Some(Duration::from_secs(20)))
        .pool_config(PoolConfig::new().max_size(KEPT_OPEN));
        if let Some(user) = &cfg.username {
            let pw = crate::config::read_secret(&cfg.password, &cfg.password_file, "mail.password")?
                .ok_or_else(|| anyhow::anyhow!("mail.username is set: give mail.password_file too"))?;
            builder = builder.credentials(Credentials::new(user.clone(), pw.expose_secret().to_string()));
        }
        let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(NOTICES_AT_ONCE as usize));
        Ok(Self { transport: builder.build(), from, turns })
    }

    /// Sends `msg` now: a code, which someone is waiting for.
    pub async fn send(&self, to: &EmailAddress, msg: Rendered) -> anyhow::Result<()> {
        let email = self.message(to, msg)?;
        self.transport.send(email).await.context("SMTP")?;
        Ok(())
    }

    /// Sends a notice or an alert when a turn is free (see [`NOTICES_AT_ONCE`]).
    pub async fn send_in_turn(&self, to: &EmailAddress, msg: Rendered) -> anyhow::Result<()> {
        let email = self.message(to, msg)?;
        let _turn = self.turns.acquire().await.context("mail is shut down")?;
        self.transport.send(email).await.context("SMTP")?;
        Ok(())
    }

    fn message(&self, to: &EmailAddress, msg: Rendered) -> anyhow::Result<Message> {
        let to = Mailbox::new(None, to.as_str().parse::<Address>().context("recipient address")?);
        // Given, not read back from the headers just written (which parses them again).
        let envelope = Envelope::new(Some(self.from.email.clone()), vec![to.email.clone()])?;
        Ok(Message::builder()
            .envelope(envelope)
            .from(self.from.clone())
            .to(to)
            .subject(msg.subject)
            .multipart(MultiPart::alternative_plain_html(msg.text, msg.html))?)
    }
}
