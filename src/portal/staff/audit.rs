//! The audit log for administrators and auditors: filtered by time, actor, person, operation,
//! outcome or support code (the one on any error page), and exported as CSV.

use super::pages::{AuditPage, AuditRow};
use super::{ReadsAudit, StaffAs};
use crate::i18n::Tr;
use crate::portal::extract::Only;
use crate::portal::PortalError;
use crate::store::{self, audit::AuditFilter};
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

const PAGE_SIZE: i64 = 50;
/// The most rows one export holds (narrow the filter for more).
const EXPORT_MAX: i64 = 100_000;

/// The filter as the form sends it: dates as `YYYY-MM-DD` (UTC), empty fields ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub support_code: String,
    #[serde(default)]
    pub page: u32,
}

/// The start of a `YYYY-MM-DD` day (UTC), as Unix seconds.
pub(super) fn day_start(date: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(date.trim(), format).ok().map(|d| d.midnight().assume_utc().unix_timestamp())
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        AuditFilter {
            from: day_start(&self.from),
            // The whole of the last day.
            until: day_start(&self.until).map(|t| t + 86_400),
            actor: some(&self.actor),
            target: some(&self.target),
            operation: some(&self.operation),
            outcome: some(&self.outcome),
            support_code: some(&self.support_code),
        }
    }

    /// The query string of this filter without the page, for links to other pages and the export.
    fn query_string(&self) -> String {
        let pairs = [
            ("from", &self.from),
            ("until", &self.until),
            ("actor", &self.actor),
            ("target", &self.target),
            ("operation", &self.operation),
            ("outcome", &self.outcome),
            ("support_code", &self.support_code),
        ];
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if !v.trim().is_empty() {
                s.append_pair(k, v.trim());
            }
        }
        s.finish()
    }
}

pub async fn audit_page(
    Only { who: StaffAs(staff, _), session, st }: Only<StaffAs<ReadsAudit>>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, PortalError> {
    let page = i64::from(q.page.min(100_000));
    let mut rows = store::audit::search(&st.db, &q.filter(), page * PAGE_SIZE, PAGE_SIZE + 1).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let view = AuditPage {
        tr: Tr::current(),
        csrf: crate::portal::csrf::token(&session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        query: q.clone(),
        query_string: q.query_string(),
        rows: rows.into_iter().map(AuditRow::from).collect(),
        page: page as u32,
        more,
    };
    Ok(view.into_response())
}

/// One CSV cell: quoted, and a leading `=`, `+`, `-`, `@` (which spreadsheets would run as a
/// formula) neutralised with an apostrophe.
pub(super) fn cell(s: &str) -> String {
    // Spreadsheets skip leading spaces and read full-width signs as formulas too.
    let first = s.trim_start_matches([' ', '\u{3000}']).chars().next();
    let formula = first.is_some_and(|c| "=+-@\t\r\u{FF1D}\u{FF0B}\u{FF0D}\u{FF20}".contains(c));
    let s = if formula { format!("'{s}") } else { s.to_string() };
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub async fn audit_csv(
    Only { who: StaffAs(staff, _), st, .. }: Only<StaffAs<ReadsAudit>>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, PortalError> {
    let rows = store::audit::search(&st.db, &q.filter(), 0, EXPORT_MAX).await?;
    let mut out = String::from(
        "time_utc,unix_time,actor,operation,directory,anchor,target,outcome,support_code,client,detail\r\n",
    );
    for r in &rows {
        let line = [
            cell(&crate::portal::pages::utc(r.at)),
            r.at.to_string(),
            cell(&r.actor),
            cell(&r.operation),
            cell(r.directory.as_deref().unwrap_or("")),
            cell(r.anchor.as_deref().unwrap_or("")),
            cell(r.target.as_deref().unwrap_or("")),
            cell(&r.outcome_code),
            cell(&r.support_code),
            cell(r.client.as_deref().unwrap_or("")),
            cell(&r.raw),
        ];
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    tracing::info!(actor = %staff.actor(), rows = rows.len(), "audit exported");
    let rec = store::audit::AuditRecord {
        at: st.clock.now(),
        actor: staff.actor(),
        operation: "audit.export".into(),
        outcome_code: crate::domain::Outcome::Success.code().0.into(),
        raw: format!("{} rows; filter: {}", rows.len(), q.query_string()),
        support_code: crate::portal::SupportCode::new().0,
        ..Default::default()
    };
    store::audit::record(&st.db, &rec).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"passback-audit.csv\""),
        ],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "\"plain\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1+1"), "\"'-1+1\"");
        assert_eq!(cell("  =1+1"), "\"'  =1+1\"");
        assert_eq!(cell("＝1+1"), "\"'＝1+1\"");
    }

    #[test]
    fn dates_filter_whole_utc_days() {
        let q = AuditQuery { from: "2026-11-22".into(), until: "2026-11-22".into(), ..Default::default() };
        let f = q.filter();
        assert_eq!(f.until.unwrap() - f.from.unwrap(), 86_400);
        assert_eq!(AuditQuery { from: "22/11/2026".into(), ..Default::default() }.filter().from, None);
    }
}
