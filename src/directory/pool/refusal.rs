//! What the pool remembers of a refused service-account bind, so a wrong password is never tried
//! again and other refusals back off.

use super::*;

/// A refused service-account bind, and what may be tried again.
///
/// A wrong password (AD `52e`; OpenLDAP 49 without ppolicy's `accountLocked`) is never tried
/// again: each try would count towards locking the account (AD locks within a minute of
/// heartbeats), and only a new password can help, so the agent waits for the password file to
/// change. Any other refusal is fixed in the directory (an unlock, an enable, a new expiry), so
/// the same password is tried again, after a wait that doubles from a minute to 15 minutes. AD
/// says disabled, expired and must change only for a right password; it says locked (`775`)
/// whatever the password, so a wrong password on a locked account is tried again too, at most
/// every 15 minutes: fewer than a domain's lockout threshold within its observation window.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    print: [u8; 32],
    why: String,
    /// `None`: never with this password.
    pub(super) retry: Option<(std::time::Instant, Duration)>,
}

impl Refusal {
    const FIRST_WAIT: Duration = Duration::from_secs(60);
    const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);

    /// The refusal after a bind with `print` was refused with `text` (`locked`: ppolicy said so).
    pub(super) fn after(
        before: Option<Refusal>,
        print: [u8; 32],
        text: &str,
        locked: bool,
        now: std::time::Instant,
    ) -> Refusal {
        let data = crate::directory::answer::ad_bind_data(text);
        let wrong_password = match data.as_deref() {
            Some(code) => matches!(code, "52e" | "525"),
            None => !locked,
        };
        let retry = (!wrong_password).then(|| {
            let wait = match before.and_then(|b| b.retry.filter(|_| b.print == print)) {
                Some((_, last)) => (last * 2).min(Self::LONGEST_WAIT),
                None => Self::FIRST_WAIT,
            };
            (now + wait, wait)
        });
        Refusal { print, why: text.to_string(), retry }
    }

    /// Whether a bind with `print` may be tried at `now`, or why not.
    pub(super) fn allows(&self, print: &[u8; 32], now: std::time::Instant) -> Result<(), String> {
        if *print != self.print {
            return Ok(());
        }
        match self.retry {
            None => Err(format!(
                "not tried again with the password the directory refused ({}); correct bind_password_file",
                self.why
            )),
            Some((at, _)) if now < at => {
                Err(format!("refused ({}); tried again in {} s", self.why, at.duration_since(now).as_secs()))
            }
            Some(_) => Ok(()),
        }
    }

    pub(super) fn retry_words(&self, now: std::time::Instant) -> String {
        match self.retry {
            None => "never with this password".into(),
            Some((at, _)) => format!("in {} s", at.duration_since(now).as_secs()),
        }
    }
}
