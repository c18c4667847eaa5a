//! `passback agent doctor`: checks, from the agent's host and with its configuration, everything
//! the agent depends on, and says for each failure what to do. For each directory: reachable,
//! TLS verified, the service account binds, the base DNs hold people, the account's rights (see
//! [`crate::directory::doctor`]); then the portal: its certificate verifies, it accepts this
//! agent's credentials, and its clock agrees with ours.
//!
//! Nothing here changes a password or an account, and the relay is not opened (a running agent
//! keeps its connection).

use super::enroll::http_client;
use super::state::AgentState;
use crate::config::AgentConfig;
use crate::directory::doctor::{certificate_advice, check_directory, rustls_error};
pub use crate::directory::doctor::{Check, Checks, Status};
use std::fmt::Write as _;

/// Clocks further apart than this get a warning.
const CLOCK_WARN_SECS: i64 = 60;
/// The portal's default `relay.request_ttl_secs`: an agent this far ahead finds every request
/// already expired.
const DEFAULT_REQUEST_TTL_SECS: i64 = 120;

/// Every check, in order: each directory's, then the portal's.
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether anything failed: the command then exits non-zero.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The checks of one scope (a directory id, or `portal`) whose name contains `name`.
    pub fn find(&self, scope: &str, name: &str) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.scope == scope && c.name.contains(name)).collect()
    }

    /// A table: status, where, check, detail; each failure and warning followed by its fix.
    pub fn render(&self) -> String {
        let width = |f: fn(&Check) -> usize| self.checks.iter().map(f).max().unwrap_or(0);
        let (ws, wc, wn) = (
            width(|c| c.status.label().len()).max(6),
            width(|c| c.scope.len()).max(5),
            width(|c| c.name.chars().count()).max(5),
        );
        let mut s = String::new();
        let _ = writeln!(s, "{:ws$}  {:wc$}  {:wn$}  DETAIL", "STATUS", "WHERE", "CHECK");
        for c in &self.checks {
            let _ = writeln!(s, "{:ws$}  {:wc$}  {:wn$}  {}", c.status.label(), c.scope, c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(s, "{:ws$}  {:wc$}  {:wn$}  fix: {fix}", "", "", "");
            }
        }
        let count = |st: Status| self.checks.iter().filter(|c| c.status == st).count();
        let _ = writeln!(
            s,
            "\n{} passed, {} failed, {} to look at, {} not checked.{}",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Warn),
            count(Status::NotChecked),
            if self.failed() { " The agent will not work fully until the failures are fixed." } else { "" }
        );
        s
    }
}

/// Runs every check. Takes a few seconds: a sync's search per directory, and a few requests.
pub async fn run(cfg: &AgentConfig) -> Report {
    let mut checks = Vec::new();
    if let Err(e) = cfg.validate() {
        let mut agent = Checks::new("agent");
        agent.fail("configuration", format!("{e:#}"), "correct the agent's configuration file");
        checks.extend(agent.into_vec());
    }
    for d in &cfg.directories {
        checks.extend(check_directory(d).await);
    }
    checks.extend(portal(cfg).await);
    Report { checks }
}

/// The portal: enrolled, TLS verified, credentials accepted, clocks in step.
pub async fn portal(cfg: &AgentConfig) -> Vec<Check> {
    let mut out = Checks::new("portal");
    let state = match AgentState::load(&cfg.state_file) {
        Ok(s) => s,
        Err(e) => {
            out.fail(
                "enrollment",
                format!("{e:#}"),
                "enroll this host once: `passback agent --config <file> enroll --portal https://… --token …`, with a \
                 token made on the portal host by `passback agent token`",
            );
            return out.into_vec();
        }
    };
    let url = format!("{}{}", state.portal_url, crate::relay::protocol::CHECK_PATH);
    let client = match http_client(cfg.portal_ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            out.fail("TLS", format!("{e:#}"), "correct portal_ca_file: a PEM file with the CA's certificate");
            return out.into_vec();
        }
    };
    let before = now_ms();
    let sent = client.get(&url).header(reqwest::header::AUTHORIZATION, state.bearer().as_str()).send().await;
    let after = now_ms();
    let host =
        url::Url::parse(&state.portal_url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            if let Some(tls) = rustls_error(&e) {
                let (detail, fix) = certificate_advice(tls, &host, cfg.portal_ca_file.is_some(), "portal_ca_file");
                out.fail("TLS", format!("{}: {detail}", state.portal_url), fix);
            } else {
                out.fail(
                    "reachable",
                    format!("{}: {}", state.portal_url, error_chain(&e)),
                    "check that this host may reach the portal over HTTPS (outbound 443, any proxy) and that the \
                     portal runs; its address comes from enrollment (portal_url in the state file)",
                );
            }
            out.not_checked("agent credentials", "no answer from the portal");
            out.not_checked("clock", "no answer from the portal");
            return out.into_vec();
        }
    };
    let trusted = match &cfg.portal_ca_file {
        Some(ca) => format!("the web roots and portal_ca_file {}", ca.display()),
        None => "the public web roots (no portal_ca_file)".to_string(),
    };
    out.pass("TLS", format!("{}: the certificate verifies against {trusted}", state.portal_url));
    match resp.status().as_u16() {
        204 => out.pass("agent credentials", format!("the portal accepts agent {}'s credentials", state.agent_id)),
        401 => out.fail(
            "agent credentials",
            format!("the portal refuses agent {}'s credentials (401)", state.agent_id),
            "this agent's enrollment is unknown to the portal (removed, or made on another portal): move the state \
             file aside and enroll again with a new token",
        ),
        404 => out.fail(
            "agent credentials",
            format!("{url} answered 404: the portal is older than this agent"),
            "upgrade the portal to this agent's version",
        ),
        other => out.fail(
            "agent credentials",
            format!("{url} answered {other}"),
            "see the portal's log (a proxy in between may answer for it)",
        ),
    }
    let date = resp.headers().get(reqwest::header::DATE).and_then(|d| d.to_str().ok()).map(str::to_string);
    let (status, detail, fix) = clock_check(before, after, date.as_deref());
    out.add(status, "clock", detail, fix);
    out.into_vec()
}

/// How far the portal's clock (its `Date` header, to the second) is from ours, taken halfway
/// between sending the request and receiving the answer (milliseconds since the epoch).
pub fn clock_check(before_ms: i64, after_ms: i64, date: Option<&str>) -> (Status, String, Option<String>) {
    let Some(portal_secs) = date.and_then(parse_http_date) else {
        return (Status::NotChecked, format!("the portal sent no readable Date header ({date:?})"), None);
    };
    let mid_ms = before_ms + (after_ms - before_ms) / 2;
    // The header is truncated to the second: its middle is the best guess.
    let offset_ms = portal_secs * 1000 + 500 - mid_ms;
    let offset = if offset_ms >= 0 { (offset_ms + 500) / 1000 } else { (offset_ms - 500) / 1000 };
    let within = (after_ms - before_ms) / 2000 + 1;
    let how = match offset {
        0 => format!("the portal's clock agrees with this host's (within {within} s)"),
        o if o > 0 => format!("the portal's clock is {o} s ahead of this host's (±{within} s)"),
        o => format!("the portal's clock is {} s behind this host's (±{within} s)", -o),
    };
    let fix = "keep both hosts' clocks in step (NTP): sealed requests carry their expiry, which the agent checks by its own clock";
    if offset < -DEFAULT_REQUEST_TTL_SECS {
        return (
            Status::Fail,
            format!(
                "{how}: requests reach this agent already expired by its clock (they live {DEFAULT_REQUEST_TTL_SECS} s \
                 unless relay.request_ttl_secs says otherwise), so it refuses them"
            ),
            Some(fix.into()),
        );
    }
    if offset.abs() > CLOCK_WARN_SECS {
        return (Status::Warn, format!("{how}: more than {CLOCK_WARN_SECS} s apart"), Some(fix.into()));
    }
    (Status::Pass, how, None)
}

/// Seconds since the epoch of an HTTP date in its one current form, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let (_weekday, day, month, year, hms, zone) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)?;
    let month = time::Month::try_from(u8::try_from(month + 1).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    let mut hms = hms.split(':').map(str::parse::<u8>);
    let (h, m, sec) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    let at = date.with_hms(h, m, sec).ok()?.assume_utc();
    Some(at.unix_timestamp())
}

fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// An error and its causes on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let _ = write!(s, ": {cause}");
        next = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_read_to_the_second() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn the_clock_passes_close_warns_a_minute_apart_and_fails_when_requests_would_arrive_expired() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        // The middle of the portal's second.
        let portal_ms = 784_111_777_500;
        let at = |local_ms: i64| clock_check(local_ms - 50, local_ms + 50, Some(date));

        assert_eq!(at(portal_ms + 300).0, Status::Pass);
        let (status, detail, fix) = at(portal_ms - 90_000);
        assert_eq!(status, Status::Warn);
        assert!(detail.contains("90 s ahead"), "{detail}");
        assert!(fix.is_some());
        let (status, detail, _) = at(portal_ms + 600_000);
        assert_eq!(status, Status::Fail, "this host is ten minutes ahead: {detail}");
        assert!(detail.contains("600 s behind"), "{detail}");
        assert_eq!(clock_check(0, 1, None).0, Status::NotChecked);
    }

    #[test]
    fn the_table_has_a_row_per_check_and_a_fix_under_each_failure() {
        let mut checks = Checks::new("corp");
        checks.pass("TLS", "fine");
        checks.fail("right: write pwdLastSet", "missing", "grant it");
        let report = Report { checks: checks.into_vec() };

        let text = report.render();

        assert!(report.failed());
        assert!(text.contains("FAIL    corp   right: write pwdLastSet  missing"), "{text}");
        assert!(text.contains("fix: grant it"), "{text}");
        assert!(text.contains("1 passed, 1 failed"), "{text}");
        assert_eq!(report.find("corp", "pwdLastSet").len(), 1);
    }
}
