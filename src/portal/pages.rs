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
        Self { code: outcome.code().0.into(), message: outcome.message(Tr::current()), support_code: support.0.clone() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PolicyView {
    pub min_length: Option<u32>,
    pub history: Option<u32>,
    pub complexity: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_identify.html")]
pub struct IdentifyPage {
    pub tr: Tr,
    pub csrf: String,
    pub login: String,
    pub error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_verify.html")]
pub struct VerifyPage {
    pub tr: Tr,
    pub csrf: String,
    pub minutes: u64,
    pub error: Option<String>,
    /// Shown with an error that was audited, so the helpdesk can find it.
    pub support_code: Option<String>,
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
}

#[derive(Template, WebTemplate)]
#[template(path = "change.html")]
pub struct ChangePage {
    pub tr: Tr,
    pub csrf: String,
    pub form_key: String,
    pub login: String,
    pub error: Option<String>,
    pub outcome: Option<OutcomeView>,
    pub policy: Option<PolicyView>,
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
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub tr: Tr,
    pub title: String,
    pub message: String,
    pub support_code: String,
}

pub struct DemoMail {
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
