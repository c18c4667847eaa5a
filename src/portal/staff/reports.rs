//! Usage and health reports for administrators and auditors: who has registered what (by
//! directory and method), resets, changes and unlocks per day with what they came to, the
//! commonest refusals, how long the directory took, blocks, and the agents. Charts are drawn here
//! as SVG (no script, no external asset), each beside a table with its numbers, and each table
//! can be exported as CSV. The range is whole UTC days.

use super::audit::cell;
use super::{ReadsAudit, StaffAs};
use crate::config::GateMethod;
use crate::i18n::Tr;
use crate::portal::extract::Only;
use crate::portal::PortalError;
use crate::store::{self, reports, staff::Role};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The range shown when none is asked for: the last 30 days, today included.
const DEFAULT_DAYS: i64 = 30;
/// The longest range one report covers.
const MAX_DAYS: i64 = 366;
/// The refusals a chart shows (the table and the export have them all).
const TOP_REFUSALS: usize = 8;

/// The range as the form sends it: dates as `YYYY-MM-DD` (UTC), both days included.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportsQuery {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub until: String,
    /// For the export: `days`, `refusals` or `coverage`.
    #[serde(default)]
    pub table: String,
}

fn date(day: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .ok()
        .and_then(|t| t.format(time::macros::format_description!("[year]-[month]-[day]")).ok())
        .unwrap_or_default()
}

fn parse_day(text: &str) -> Option<i64> {
    super::audit::day_start(text).map(|t| t.div_euclid(86_400))
}

/// The days a query asks for, as Unix day numbers `first..=last`: within [`MAX_DAYS`], never
/// after today; by default the last [`DEFAULT_DAYS`].
fn range(q: &ReportsQuery, now: i64) -> (i64, i64) {
    let today = now.div_euclid(86_400);
    let last = parse_day(&q.until).unwrap_or(today).min(today);
    let first = parse_day(&q.from).unwrap_or(last - (DEFAULT_DAYS - 1)).clamp(last - (MAX_DAYS - 1), last);
    (first, last)
}

/// What an act came to, as the report groups it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Came {
    Done,
    /// The rules, the person or the account said no (a refusal a person can act on).
    Refused,
    /// Nothing could be done (no agent, no answer, the directory unreachable, set-up problems).
    Failed,
}

fn came(code: &str) -> Came {
    match code {
        "PB-0000" | "PB-0001" => Came::Done,
        c if c.starts_with("PB-1") || c.starts_with("PB-9") => Came::Failed,
        // Not found, no right, unreachable, refused for another reason; and a password set on an
        // account still locked, which its owner cannot use yet.
        "PB-3001" | "PB-3003" | "PB-3004" | "PB-3010" | "PB-3099" => Came::Failed,
        _ => Came::Refused,
    }
}

/// One day's row: each act's (done, refused, failed), and the blocks.
#[derive(Debug, Clone, Default)]
pub struct DayRow {
    pub date: String,
    pub resets: [i64; 3],
    pub changes: [i64; 3],
    pub unlocks: [i64; 3],
    pub blocks: i64,
}

impl DayRow {
    /// One act's three counts in words: 0 resets, 1 changes, 2 unlocks.
    pub fn text(&self, tr: &Tr, which: usize) -> String {
        let n = [self.resets, self.changes, self.unlocks][which.min(2)];
        tr.fill(
            "reports.three",
            &[("done", n[0].to_string()), ("refused", n[1].to_string()), ("failed", n[2].to_string())],
        )
    }

    fn totals(&self) -> [i64; 3] {
        std::array::from_fn(|i| self.resets[i] + self.changes[i] + self.unlocks[i])
    }
}

#[derive(Debug, Clone)]
pub struct RefusalRow {
    pub code: String,
    pub reason: String,
    pub n: i64,
    /// Its share of all refused and failed acts, in whole percent.
    pub share: i64,
}

#[derive(Debug, Clone, Default)]
pub struct CoverageRow {
    pub directory: String,
    pub people: i64,
    pub email: i64,
    pub authenticator: i64,
    pub passkey: i64,
    pub recovery_codes: i64,
    pub questions: i64,
    /// As many different methods as a reset needs.
    pub ready: i64,
}

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub name: String,
    pub alive: bool,
    /// Connected since (alive) or gone since (not), as text.
    pub since: String,
}

/// A bar of a chart, in the chart's own units (its `viewBox`).
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    /// `done`, `refused`, `failed` or `share`: its colour.
    pub class: &'static str,
    /// What a pointer over it says (the table says it too).
    pub title: String,
}

/// A chart: its bars and its labels (each at a place, with its text).
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub width: i64,
    pub height: i64,
    pub bars: Vec<Bar>,
    pub labels: Vec<(i64, i64, String)>,
}

pub struct Report {
    pub from: String,
    pub until: String,
    pub query_string: String,
    pub days: Vec<DayRow>,
    pub totals: DayRow,
    pub days_chart: Chart,
    pub refusals: Vec<RefusalRow>,
    pub refusals_chart: Chart,
    pub coverage: Vec<CoverageRow>,
    pub coverage_chart: Chart,
    /// What "ready" means here (how many methods a reset needs).
    pub coverage_lead: String,
    /// How long the directory took, in words (or that nothing was written).
    pub directory_time: String,
    pub blocked_now: String,
    pub agents: Vec<AgentRow>,
}

/// The refusal's reason in a few words.
fn reason(tr: Tr, code: &str) -> String {
    let key = format!("reports.reason_{}", code.replace('-', "_"));
    match tr.t(&key) {
        text if text == key => code.to_string(),
        text => text.to_string(),
    }
}

/// The report, or (for an export) only the table `q.table` names: each part is read only when
/// it is shown.
async fn gather(st: &crate::portal::AppState, q: &ReportsQuery) -> Result<Report, PortalError> {
    let tr = Tr::current();
    let now = st.clock.now();
    let (first, last) = range(q, now);
    let (from, until) = (first * 86_400, (last + 1) * 86_400);
    let wants = |table: &str| q.table.is_empty() || q.table == table;

    let mut days: BTreeMap<i64, DayRow> =
        (first..=last).map(|d| (d, DayRow { date: date(d), ..Default::default() })).collect();
    let counts = if wants("days") { reports::days(&st.db, from, until).await? } else { Vec::new() };
    for c in counts {
        let Some(row) = days.get_mut(&c.day) else { continue };
        let i = match came(&c.outcome_code) {
            Came::Done => 0,
            Came::Refused => 1,
            Came::Failed => 2,
        };
        let op = c.operation.as_str();
        match () {
            _ if reports::RESETS.contains(&op) => row.resets[i] += c.n,
            _ if reports::CHANGES.contains(&op) => row.changes[i] += c.n,
            _ if reports::UNLOCKS.contains(&op) => row.unlocks[i] += c.n,
            _ => row.blocks += c.n,
        }
    }
    let days: Vec<DayRow> = days.into_values().collect();
    let mut totals = DayRow { date: tr.t("reports.total").into(), ..Default::default() };
    for d in &days {
        for i in 0..3 {
            totals.resets[i] += d.resets[i];
            totals.changes[i] += d.changes[i];
            totals.unlocks[i] += d.unlocks[i];
        }
        totals.blocks += d.blocks;
    }

    let counted = if wants("refusals") { reports::refusals(&st.db, from, until).await? } else { Vec::new() };
    let all: i64 = counted.iter().map(|(_, n)| n).sum();
    let refusals: Vec<RefusalRow> = counted
        .into_iter()
        .map(|(code, n)| RefusalRow { reason: reason(tr, &code), share: (n * 100 + all / 2) / all.max(1), code, n })
        .collect();

    let coverage = if wants("coverage") { coverage(st).await? } else { Vec::new() };
    let page = q.table.is_empty();
    let (writebacks, times) =
        if page { reports::directory_time(&st.db, from, until, &[500, 950]).await? } else { (0, Vec::new()) };
    let directory_time = match times.as_slice() {
        [p50, p95] => tr.fill(
            "reports.directory_time_text",
            &[
                ("n", tr.number(u64::try_from(writebacks).unwrap_or(0))),
                ("p50", p50.to_string()),
                ("p95", p95.to_string()),
            ],
        ),
        _ => tr.t("reports.no_writebacks").to_string(),
    };
    let blocked = if page { reports::blocked_now(&st.db, now).await? } else { 0 };
    let agents = if page { agents(st, tr).await? } else { Vec::new() };
    let query_string = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("from", &date(first))
        .append_pair("until", &date(last))
        .finish();
    Ok(Report {
        from: date(first),
        until: date(last),
        query_string,
        days_chart: days_chart(tr, &days),
        totals,
        days,
        refusals_chart: refusals_chart(&refusals),
        refusals,
        coverage_chart: coverage_chart(tr, &coverage),
        coverage,
        coverage_lead: tr.plural("reports.coverage_lead", u64::from(st.cfg.gates.required)),
        directory_time,
        blocked_now: tr.plural("reports.blocks_now", u64::try_from(blocked).unwrap_or(0)),
        agents,
    })
}

/// Who registered what, by directory, with a row for all of them first: counted as the gates
/// count (an address on record, an authenticator confirmed, a passkey, a recovery code unused,
/// enough answers), each only where it is enabled for resets.
async fn coverage(st: &crate::portal::AppState) -> Result<Vec<CoverageRow>, PortalError> {
    let g = &st.cfg.gates;
    let counts = |m: GateMethod| g.methods.contains(&m) && g.counts_for(crate::config::Purpose::Reset, m);
    let mut by: BTreeMap<String, CoverageRow> = BTreeMap::new();
    for p in reports::registered(&st.db).await? {
        let email = counts(GateMethod::Email) && ((g.email_primary && p.has_email) || p.alternate);
        let authenticator = counts(GateMethod::Authenticator) && p.authenticator;
        let passkey = counts(GateMethod::Passkey) && p.passkey;
        let recovery = counts(GateMethod::RecoveryCode) && p.recovery_codes;
        let questions = counts(GateMethod::Questions) && !p.protected && p.answers >= i64::from(g.questions_to_ask);
        let methods = [email, authenticator, passkey, recovery, questions].iter().filter(|m| **m).count();
        let row = by
            .entry(p.directory.clone())
            .or_insert_with(|| CoverageRow { directory: p.directory, ..Default::default() });
        row.people += 1;
        row.email += i64::from(email);
        row.authenticator += i64::from(authenticator);
        row.passkey += i64::from(passkey);
        row.recovery_codes += i64::from(recovery);
        row.questions += i64::from(questions);
        row.ready += i64::from(methods >= g.required as usize);
    }
    let mut all = CoverageRow { directory: Tr::current().t("reports.all_directories").into(), ..Default::default() };
    for r in by.values() {
        all.people += r.people;
        all.email += r.email;
        all.authenticator += r.authenticator;
        all.passkey += r.passkey;
        all.recovery_codes += r.recovery_codes;
        all.questions += r.questions;
        all.ready += r.ready;
    }
    Ok(std::iter::once(all).chain(by.into_values()).collect())
}

async fn agents(st: &crate::portal::AppState, tr: Tr) -> Result<Vec<AgentRow>, PortalError> {
    let heard = st.hub.agents_health();
    let now = st.clock.now();
    let mut out = Vec::new();
    for a in store::agents::enrolled(&st.db).await? {
        let health = heard.iter().find(|h| h.agent_id == a.id);
        let alive = health.is_some_and(|h| h.alive);
        let at = health.and_then(|h| if alive { h.connected_at } else { h.disconnected_at });
        let since = match at {
            Some(at) => tr.f(
                if alive { "reports.up_for" } else { "reports.down_for" },
                "for",
                tr.ahead(u64::try_from(now - at).unwrap_or(0)),
            ),
            None if alive => tr.t("reports.up").to_string(),
            None => tr.t("reports.not_seen").to_string(),
        };
        out.push(AgentRow { name: a.name, alive, since });
    }
    Ok(out)
}

const PLOT_H: i64 = 160;

/// Acts per day, each day's bar in three parts (done, refused, failed) on one scale.
fn days_chart(tr: Tr, days: &[DayRow]) -> Chart {
    let (left, step) = (40, (560 / days.len().max(1) as i64).max(2));
    let max = days.iter().map(|d| d.totals().iter().sum::<i64>()).max().unwrap_or(0).max(1);
    let mut chart = Chart { width: left + step * days.len() as i64 + 10, height: PLOT_H + 40, ..Default::default() };
    for (i, d) in days.iter().enumerate() {
        let x = left + i as i64 * step;
        let mut base = PLOT_H + 10;
        for (n, class, key) in
            d.totals().into_iter().zip(["done", "refused", "failed"]).map(|(n, c)| (n, c, format!("reports.{c}")))
        {
            let h = n * PLOT_H / max;
            if h > 0 {
                base -= h;
                chart.bars.push(Bar {
                    x,
                    y: base,
                    w: (step - 1).max(1),
                    h,
                    class,
                    title: format!("{}: {} {n}", d.date, tr.t(&key)),
                });
            }
        }
    }
    chart.labels.push((0, 20, max.to_string()));
    chart.labels.push((0, PLOT_H + 10, "0".into()));
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        chart.labels.push((left, PLOT_H + 32, first.date.clone()));
        chart.labels.push((chart.width - 90, PLOT_H + 32, last.date.clone()));
    }
    chart
}

/// The commonest refusals, one bar each, longest first.
fn refusals_chart(rows: &[RefusalRow]) -> Chart {
    let max = rows.iter().map(|r| r.n).max().unwrap_or(0).max(1);
    let shown = rows.iter().take(TOP_REFUSALS);
    let mut chart = Chart { width: 600, height: 24 * shown.len() as i64 + 4, ..Default::default() };
    for (i, r) in shown.enumerate() {
        let y = i as i64 * 24 + 2;
        let w = (r.n * 300 / max).max(1);
        chart.bars.push(Bar {
            x: 230,
            y,
            w,
            h: 18,
            class: "refused",
            title: format!("{} ({}): {}", r.reason, r.code, r.n),
        });
        chart.labels.push((0, y + 14, r.code.clone()));
        chart.labels.push((236 + w, y + 14, r.n.to_string()));
    }
    chart
}

/// The share of all people with each method, and ready to reset.
fn coverage_chart(tr: Tr, rows: &[CoverageRow]) -> Chart {
    let Some(all) = rows.first() else { return Chart::default() };
    let people = all.people.max(1);
    let parts = [
        (tr.t("reports.ready"), all.ready),
        (tr.t("reports.method_email"), all.email),
        (tr.t("reports.method_authenticator"), all.authenticator),
        (tr.t("reports.method_passkey"), all.passkey),
        (tr.t("reports.method_recovery_code"), all.recovery_codes),
        (tr.t("reports.method_questions"), all.questions),
    ];
    let mut chart = Chart { width: 600, height: 24 * parts.len() as i64 + 4, ..Default::default() };
    for (i, (name, n)) in parts.into_iter().enumerate() {
        let y = i as i64 * 24 + 2;
        let pct = n * 100 / people;
        let w = (pct * 3).max(1);
        chart.bars.push(Bar { x: 230, y, w, h: 18, class: "share", title: format!("{name}: {pct}%") });
        chart.labels.push((0, y + 14, name.to_string()));
        chart.labels.push((236 + w, y + 14, format!("{pct}%")));
    }
    chart
}

#[derive(Template, WebTemplate)]
#[template(path = "reports.html")]
pub struct ReportsPage {
    pub tr: Tr,
    pub csrf: String,
    pub staff: String,
    pub role: Role,
    pub r: Report,
}

pub async fn reports_page(
    Only { who: StaffAs(staff, _), session, st }: Only<StaffAs<ReadsAudit>>,
    Query(mut q): Query<ReportsQuery>,
) -> Result<Response, PortalError> {
    // The page shows every part (a table named in its link would hide the rest).
    q.table.clear();
    let report = gather(&st, &q).await?;
    let view = ReportsPage {
        tr: Tr::current(),
        csrf: crate::portal::csrf::token(&session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        r: report,
    };
    Ok(view.into_response())
}

/// One table of the report as CSV: `days`, `refusals` or `coverage`.
pub async fn reports_csv(
    Only { who: StaffAs(staff, _), st, .. }: Only<StaffAs<ReadsAudit>>,
    Query(mut q): Query<ReportsQuery>,
) -> Result<Response, PortalError> {
    if !matches!(q.table.as_str(), "refusals" | "coverage") {
        q.table = "days".into();
    }
    let r = gather(&st, &q).await?;
    let mut lines: Vec<Vec<String>> = Vec::new();
    let name = match q.table.as_str() {
        "refusals" => {
            lines.push(vec!["outcome".into(), "reason".into(), "count".into(), "percent".into()]);
            lines.extend(
                r.refusals.iter().map(|x| vec![cell(&x.code), cell(&x.reason), x.n.to_string(), x.share.to_string()]),
            );
            "refusals"
        }
        "coverage" => {
            lines.push(
                ["directory", "people", "email", "authenticator", "passkey", "recovery_codes", "questions", "ready"]
                    .map(String::from)
                    .to_vec(),
            );
            lines.extend(r.coverage.iter().map(|c| {
                let n = [c.people, c.email, c.authenticator, c.passkey, c.recovery_codes, c.questions, c.ready];
                std::iter::once(cell(&c.directory)).chain(n.iter().map(i64::to_string)).collect()
            }));
            "coverage"
        }
        _ => {
            let head = [
                "date",
                "resets_done",
                "resets_refused",
                "resets_failed",
                "changes_done",
                "changes_refused",
                "changes_failed",
                "unlocks_done",
                "unlocks_refused",
                "unlocks_failed",
                "blocks",
            ];
            lines.push(head.map(String::from).to_vec());
            lines.extend(r.days.iter().map(|d| {
                let n = d.resets.iter().chain(&d.changes).chain(&d.unlocks).chain([&d.blocks]);
                std::iter::once(cell(&d.date)).chain(n.map(i64::to_string)).collect()
            }));
            "days"
        }
    };
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    // Like the audit's own export, a report's is audited.
    let rec = store::audit::AuditRecord {
        at: st.clock.now(),
        actor: staff.actor(),
        operation: "reports.export".into(),
        outcome_code: crate::domain::Outcome::Success.code().0.into(),
        raw: format!("{name} from {} until {}", r.from, r.until),
        support_code: crate::domain::SupportCode::new().0,
        ..Default::default()
    };
    store::audit::record(&st.db, &rec).await?;
    let file = format!("attachment; filename=\"passback-{name}-{}-{}.csv\"", r.from, r.until);
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, file)], out)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_whole_days_never_past_today_and_at_most_a_year() {
        let now = 20_000 * 86_400 + 3600;
        let q = |from: &str, until: &str| ReportsQuery { from: from.into(), until: until.into(), ..Default::default() };
        assert_eq!(range(&q("", ""), now), (20_000 - 29, 20_000), "the last 30 days by default");
        assert_eq!(range(&q("2024-01-01", "2024-01-31"), now), (19_723, 19_753));
        assert_eq!(range(&q("2000-01-01", ""), now).0, 20_000 - 365, "a year at most");
        assert_eq!(range(&q("", "2099-01-01"), now).1, 20_000, "never after today");
        assert_eq!(range(&q("2024-02-01", "2024-01-01"), now), (19_723, 19_723), "from after until: the one day");
    }

    #[test]
    fn outcomes_are_done_refused_or_failed() {
        assert_eq!(came("PB-0000"), Came::Done);
        assert_eq!(came("PB-2003"), Came::Refused);
        assert_eq!(came("PB-3005"), Came::Refused);
        assert_eq!(came("PB-1001"), Came::Failed);
        assert_eq!(came("PB-3004"), Came::Failed);
    }
}
