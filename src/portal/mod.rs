//! The portal: server-rendered pages that work without JavaScript. One module per flow.
//! It never talks to a directory; writebacks go sealed through the relay hub.

pub mod access;
pub(crate) mod account;
mod change;
mod csrf;
mod demo;
pub(crate) mod error;
pub mod extract;
pub mod gates;
pub(crate) mod guard;
mod lang;
mod pages;
pub(crate) mod passkey;
mod password_check;
mod people;
pub mod reminders;
pub(crate) mod reset;
pub mod return_to;
pub(crate) mod session;
pub mod staff;

pub use error::{PortalError, SupportCode, Tag};
pub use guard::Guard;

use crate::mail::sink::Mailbox;
use crate::usecase::Host;
use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tower_http::set_header::SetResponseHeaderLayer;

/// URL paths of the portal, in one place.
pub mod paths {
    pub const HOME: &str = "/";
    pub const RESET: &str = "/reset";
    /// The first step again, saying that the flow in progress was lost (expired, or a later
    /// step opened without one).
    pub const RESET_EXPIRED: &str = "/reset?expired=1";
    pub const RESET_VERIFY: &str = "/reset/verify";
    pub const RESET_METHOD: &str = "/reset/method";
    /// A passkey used at the first step, in place of a name (and its options, asked first).
    pub const RESET_PASSKEY: &str = "/reset/passkey";
    pub const RESET_PASSKEY_OPTIONS: &str = "/reset/passkey/options";
    pub const RESET_UNLOCK: &str = "/reset/unlock";
    pub const RESET_PASSWORD: &str = "/reset/password";
    pub const CHANGE: &str = "/change";
    /// The new-password forms' live check (strength, banned terms), for their script.
    pub const PASSWORD_CHECK: &str = "/password/check";
    pub const SIGNIN: &str = "/signin";
    pub const SIGNIN_EXPIRED: &str = "/signin/expired";
    pub const SIGNOUT: &str = "/signout";
    pub const ACCOUNT: &str = "/account";
    pub const ACCOUNT_CONFIRM: &str = "/account/confirm";
    pub const ACCOUNT_AUTHENTICATOR: &str = "/account/authenticator";
    pub const ACCOUNT_AUTHENTICATOR_START: &str = "/account/authenticator/start";
    pub const ACCOUNT_QUESTIONS: &str = "/account/questions";
    pub const ACCOUNT_EMAIL: &str = "/account/email";
    pub const ACCOUNT_EMAIL_CONFIRM: &str = "/account/email/confirm";
    pub const ACCOUNT_REMOVE: &str = "/account/remove";
    pub const ACCOUNT_RECOVERY_CODES: &str = "/account/recovery-codes";
    pub const ACCOUNT_PASSKEYS: &str = "/account/passkeys";
    pub const ACCOUNT_PASSKEY_START: &str = "/account/passkeys/start";
    pub const ACCOUNT_PASSKEY_REMOVE: &str = "/account/passkeys/remove";
    pub const ACCOUNT_VERIFY: &str = "/account/verify";
    pub const ACCOUNT_METHOD: &str = "/account/method";
    pub const DEMO_MAIL: &str = "/demo/mail";
    pub const STATIC: &str = "/static/{file}";
    pub const HEALTH: &str = "/healthz";
    pub const HEALTH_RELAY: &str = "/healthz/relay";
    pub const METRICS: &str = "/metrics";
    pub const STAFF_HOME: &str = "/staff";
    pub const STAFF_SIGNIN: &str = "/staff/signin";
    /// The options for a passkey used at a staff sign-in.
    pub const STAFF_SIGNIN_PASSKEY: &str = "/staff/signin/passkey";
    pub const STAFF_PASSKEYS: &str = "/staff/passkeys";
    pub const STAFF_PASSKEY_REMOVE: &str = "/staff/passkeys/remove";
    pub const STAFF_SIGNOUT: &str = "/staff/signout";
    pub const STAFF_ENROL: &str = "/staff/enrol";
    pub const STAFF_SIGNOUT_EVERYWHERE: &str = "/staff/signout-everywhere";
    pub const HELPDESK: &str = "/helpdesk";
    pub const HELPDESK_PERSON: &str = "/helpdesk/person";
    pub const HELPDESK_ACT: &str = "/helpdesk/act";
    pub const AUDIT: &str = "/audit";
    pub const AUDIT_CSV: &str = "/audit.csv";
    pub const ADMIN_HEALTH: &str = "/admin/health";
    /// Usage and health reports (administrators and auditors), and their tables as CSV.
    pub const ADMIN_REPORTS: &str = "/admin/reports";
    pub const ADMIN_REPORTS_CSV: &str = "/admin/reports.csv";
    pub const ADMIN_HEALTH_JSON: &str = "/admin/health.json";
    pub const ADMIN_AGENT_REVOKE: &str = "/admin/health/revoke";
    pub const ADMIN_SYNC_APPLY: &str = "/admin/health/apply-sync";
    pub const ADMIN_STAFF: &str = "/admin/staff";
    pub const ADMIN_STAFF_RESET: &str = "/admin/staff/reset";
    pub const ADMIN_STAFF_UPDATE: &str = "/admin/staff/update";
}

/// The session key of the validated `return_to` URL.
const RETURN_TO: session::Key<String> = session::Key::new(session::RETURN_TO);

/// The address of the client connection (the proxy's, behind a TLS-terminating proxy).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The web layer's state, shared: every request and every middleware takes a copy of it, which
/// is one reference count (not the keys, the configuration and the mailer, copied and wiped).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The portal host's services (which the acts use, see [`crate::usecase::Host`]) and what only
/// the pages need.
pub struct Shared {
    pub host: Host,
    /// Proof of work and rate limits for the first steps.
    pub guard: Arc<guard::Guard>,
    /// SHA-256 of the token Prometheus presents at `/metrics`; `None`: not served.
    pub metrics_token: Option<[u8; 32]>,
    /// The mail domain most people have, and when it was read (it shapes made-up addresses; a
    /// count over everyone is too much work for every unknown name typed in).
    pub population: Arc<std::sync::Mutex<Option<(Population, i64)>>>,
    /// Present only in demo mode: the mail caught by the built-in SMTP sink.
    pub demo_mailbox: Option<Mailbox>,
}

impl std::ops::Deref for Shared {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

/// Runs `answer` and returns its result no sooner than `min_ms` after it started, so that the time
/// an answer takes does not tell a made-up name (answered at once) from a real one (answered by
/// the directory).
pub(crate) async fn at_least<T>(min_ms: u64, answer: impl std::future::Future<Output = T>) -> T {
    let floor = tokio::time::Instant::now() + std::time::Duration::from_millis(min_ms);
    let result = answer.await;
    tokio::time::sleep_until(floor).await;
    result
}

impl AppState {
    /// The anti-automation gate of a first step: `Some(page)` when the client must be turned
    /// away; otherwise the step goes on (after the proof, or the wait that replaces it).
    pub(crate) async fn admit(
        &self,
        client: std::net::SocketAddr,
        pow_token: &str,
        pow: &str,
    ) -> Result<Result<guard::Proof, axum::response::Response>, PortalError> {
        match self.guard.admit(&self.db, client.ip(), pow_token, pow, self.clock.now()).await? {
            guard::Verdict::Admit(proof) => Ok(Ok(proof)),
            guard::Verdict::TooMany => Ok(Err(error::too_many())),
        }
    }

    /// [`Self::admit`], with `alongside` run while the database is asked (see
    /// [`guard::Guard::admit_with`]): its output once admitted.
    pub(crate) async fn admit_with<T>(
        &self,
        client: std::net::SocketAddr,
        (pow_token, pow): (&str, &str),
        alongside: impl std::future::Future<Output = T>,
    ) -> Result<Result<T, axum::response::Response>, PortalError> {
        let at = (&self.db, client.ip(), self.clock.now());
        match self.guard.admit_with(at, (pow_token, pow), alongside).await? {
            (guard::Verdict::Admit(_), Some(beside)) => Ok(Ok(beside)),
            _ => Ok(Err(error::too_many())),
        }
    }

    /// Spends one of the client address's requests for this minute, on every instance (see
    /// [`guard::Guard::address_allowed`]); false when none is left.
    pub(crate) async fn address_allowed(&self, client: std::net::IpAddr) -> Result<bool, PortalError> {
        self.guard.address_allowed(&self.db, client, self.clock.now()).await
    }

    /// The mail domain most synced people have, read at most every ten minutes.
    /// What real people here look like, for made-up answers about names that match nobody:
    /// read at most every ten minutes, never per request.
    pub(crate) async fn population(&self) -> Result<Population, PortalError> {
        let now = self.clock.now();
        if let Some((p, at)) = self.population.lock().ok().and_then(|d| d.clone()) {
            if now - at < 600 {
                return Ok(p);
            }
        }
        let mail_domain = crate::store::users::commonest_mail_domain(&self.db).await?.unwrap_or_default();
        let (people, with_authenticator, with_recovery_codes) = crate::store::security::method_shares(&self.db).await?;
        let permille = |n: i64| u32::try_from((n * 1000).checked_div(people).unwrap_or(0)).unwrap_or(0);
        let with_passkey = crate::store::passkeys::people_with_one(&self.db).await?;
        let p = Population {
            mail_domain,
            authenticator_permille: permille(with_authenticator),
            recovery_code_permille: permille(with_recovery_codes),
            passkey_permille: permille(with_passkey),
        };
        if let Ok(mut d) = self.population.lock() {
            *d = Some((p.clone(), now));
        }
        Ok(p)
    }

    /// A proof-of-work challenge for a first-step form.
    pub(crate) fn challenge(&self) -> Option<guard::Challenge> {
        self.guard.challenge(self.clock.now())
    }
}

/// What real people here look like (see [`AppState::population`]).
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// The domain most people's main address is at.
    pub mail_domain: String,
    /// How many in a thousand people have an authenticator app registered.
    pub authenticator_permille: u32,
    /// How many in a thousand people have recovery codes left.
    pub recovery_code_permille: u32,
    /// How many in a thousand people have a passkey.
    pub passkey_permille: u32,
}

pub fn router(state: AppState) -> Router {
    let tls = state.cfg.serves_tls() || state.cfg.server.behind_tls_proxy;
    let framers = state.cfg.server.frame_ancestors.clone();
    let proxies: Arc<[std::net::IpAddr]> = state.cfg.server.trusted_proxies.clone().into();
    let mut r = Router::new()
        .route(paths::HOME, get(reset::home))
        .route(paths::RESET, get(reset::identify_form).post(reset::identify))
        .route(paths::RESET_VERIFY, get(reset::verify_form).post(reset::verify))
        .route(paths::RESET_METHOD, post(reset::choose))
        .route(paths::RESET_PASSKEY, post(reset::passkey))
        .route(paths::RESET_PASSKEY_OPTIONS, post(passkey::options))
        .route(paths::RESET_UNLOCK, get(reset::unlock_form).post(reset::unlock))
        .route(paths::RESET_PASSWORD, get(reset::password_form).post(reset::set_password))
        .route(paths::CHANGE, get(change::change_form).post(change::change))
        .route(paths::PASSWORD_CHECK, post(password_check::check))
        .route(paths::SIGNIN, get(account::signin_form).post(account::signin))
        .route(paths::SIGNIN_EXPIRED, get(account::expired_form).post(account::expired))
        .route(paths::SIGNOUT, post(account::signout))
        .route(paths::ACCOUNT, get(account::overview))
        .route(paths::ACCOUNT_CONFIRM, post(account::confirm))
        .route(paths::ACCOUNT_AUTHENTICATOR_START, post(account::start_authenticator))
        .route(paths::ACCOUNT_AUTHENTICATOR, get(account::authenticator_form).post(account::confirm_authenticator))
        .route(paths::ACCOUNT_QUESTIONS, get(account::questions_form).post(account::save_questions))
        .route(paths::ACCOUNT_EMAIL, get(account::email_form).post(account::add_email))
        .route(paths::ACCOUNT_EMAIL_CONFIRM, post(account::confirm_email))
        .route(paths::ACCOUNT_REMOVE, post(account::remove_method))
        // Shown once: opened again (a language link, a reload), the way leads back to security info.
        .route(
            paths::ACCOUNT_RECOVERY_CODES,
            get(|| async { axum::response::Redirect::to(paths::ACCOUNT) }).post(account::make_recovery_codes),
        )
        .route(paths::ACCOUNT_PASSKEY_START, post(account::start_passkey))
        .route(paths::ACCOUNT_PASSKEYS, get(account::passkey_form).post(account::save_passkey))
        .route(paths::ACCOUNT_PASSKEY_REMOVE, post(account::remove_passkey))
        .route(paths::ACCOUNT_VERIFY, get(account::step_up_form).post(account::step_up_verify))
        .route(paths::ACCOUNT_METHOD, post(account::step_up_choose))
        .route(paths::HEALTH, get(|| async { "ok" }))
        .route(paths::HEALTH_RELAY, get(relay_check))
        .route(paths::METRICS, get(metrics))
        .route(paths::STATIC, get(static_file))
        .fallback(not_found)
        .merge(staff::routes());
    if state.demo_mailbox.is_some() {
        r = r.route(paths::DEMO_MAIL, get(demo::mail));
    }
    let audited = state.clone();
    let csrf_key = Arc::new(state.secrets.derive("passback/csrf/v1"));
    let r = r
        .with_state(state)
        .layer(axum::middleware::from_fn(unreadable_forms))
        .layer(axum::middleware::from_fn(move |req, next| audit_errors(audited.clone(), req, next)))
        .layer(axum::middleware::from_fn(move |req, next| csrf::layer(csrf_key.clone(), tls, req, next)))
        .layer(axum::middleware::from_fn(move |req, next| lang::negotiate(tls, req, next)))
        .layer(axum::middleware::from_fn(move |req, next| forwarded_client(proxies.clone(), req, next)));
    security_headers(r, tls, &framers)
}

/// Whether the request presents the configured monitoring bearer token (compared as a hash, in
/// constant time). Never true when no token is configured.
pub(crate) fn metrics_token_ok(st: &AppState, headers: &axum::http::HeaderMap) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let Some(expected) = st.metrics_token else { return false };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let hash: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
    bool::from(hash.ct_eq(&expected))
}

/// The refusal for a monitoring page, unless the request presents the configured bearer token:
/// without a configured token the page does not exist.
fn monitor_only(st: &AppState, headers: &axum::http::HeaderMap) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    if st.metrics_token.is_none() {
        return Some(axum::http::StatusCode::NOT_FOUND.into_response());
    }
    (!metrics_token_ok(st, headers))
        .then(|| (axum::http::StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response())
}

/// Prometheus metrics, for a scraper that presents the configured bearer token (compared as a
/// hash, in constant time). Without a configured token the page does not exist.
async fn metrics(
    axum::extract::State(st): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(refused) = monitor_only(&st, &headers) {
        return refused;
    }
    let mut body = st.hub.metrics.render(st.hub.live_agents());
    body.push_str(&st.guard.render_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[derive(serde::Deserialize)]
struct RelayCheckQuery {
    directory: String,
}

/// A sealed no-op round trip to a live agent of `directory`: whether writeback would work now,
/// and how long the relay alone takes (for monitoring and the benchmark). Only for a monitor
/// presenting the configured bearer token (it would otherwise tell anyone which directory ids
/// exist), and rate-limited like a first step.
async fn relay_check(
    axum::extract::State(st): axum::extract::State<AppState>,
    axum::extract::ConnectInfo(ClientAddr(client)): axum::extract::ConnectInfo<ClientAddr>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<RelayCheckQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(refused) = monitor_only(&st, &headers) {
        return refused;
    }
    if !st.address_allowed(client.ip()).await.unwrap_or(false) {
        return error::too_many();
    }
    let Ok(directory) = crate::domain::DirectoryId::parse(&q.directory) else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(anchor) = crate::domain::Anchor::parse("relay-check") else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let request = crate::relay::WritebackRequest {
        msg_id: crate::domain::MsgId::random(),
        op: crate::envelope::Op::Noop,
        directory,
        anchor,
        password: None,
        old_password: None,
        flags: Default::default(),
        actor: "relay-check".into(),
    };
    let started = std::time::Instant::now();
    let result = st.hub.writeback(request, st.clock.now()).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let ok = result.outcome.is_success();
    let body = serde_json::json!({ "ok": ok, "outcome": result.outcome.code().0, "round_trip_us": micros });
    let status = if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// Turns the framework's own plain-text refusals (a query string that does not decode; forms are
/// read by [`extract::Posted`], which answers with the error page itself) into the normal error
/// page, with an outcome, a support code and an audit row. A staff page's refusal stays one that
/// is never framed.
async fn unreadable_forms(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let resp = next.run(req).await;
    let never_framed = resp.extensions().get::<NeverFramed>().copied();
    let status = resp.status();
    let ours = resp.headers().contains_key("x-support-code");
    let refused = [
        StatusCode::BAD_REQUEST,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::UNPROCESSABLE_ENTITY,
    ];
    if ours || !refused.contains(&status) {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap_or_default();
    let why: String = String::from_utf8_lossy(&body).chars().take(200).collect();
    let mut page = PortalError::BadForm { status, why }.into_response();
    if let Some(mark) = never_framed {
        page.extensions_mut().insert(mark);
    }
    page
}

/// Writes the audit row an error page asks for (see [`error::ErrorAudit`]), naming the path and
/// the client, so the support code a person reads out finds it.
async fn audit_errors(
    st: AppState,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path().to_string();
    let client = req.extensions().get::<axum::extract::ConnectInfo<ClientAddr>>().map(|c| c.0 .0.ip().to_string());
    let mut resp = next.run(req).await;
    if let Some(a) = resp.extensions_mut().remove::<error::ErrorAudit>() {
        // Anonymous error pages are recorded only within the client's rate limit, so nobody can
        // fill the append-only table with forged forms.
        let anonymous_ok = match client.as_deref().and_then(|c| c.parse().ok()) {
            Some(ip) if a.actor.is_none() => st.address_allowed(ip).await.unwrap_or(false),
            _ => true,
        };
        if !anonymous_ok {
            tracing::warn!(support_code = %a.support_code, operation = a.operation, "error page not audited: rate limit");
            return resp;
        }
        let target = match a.target {
            Some(t) => format!("{t} ({path})"),
            None => path,
        };
        let rec = crate::store::audit::AuditRecord {
            at: st.clock.now(),
            actor: a.actor.unwrap_or_else(|| "portal".into()),
            operation: a.operation.into(),
            target: Some(target),
            outcome_code: a.outcome.code().0.into(),
            raw: a.raw,
            support_code: a.support_code.0,
            client,
            ..Default::default()
        };
        if let Err(e) = crate::store::audit::record(&st.db, &rec).await {
            tracing::error!(error = %e, support_code = %rec.support_code, "auditing an error page failed");
        }
    }
    resp
}

/// Behind a trusted proxy, the client is the last address in `X-Forwarded-For` that is not one of
/// the trusted proxies; anyone else's `X-Forwarded-For` is ignored (it is theirs to forge).
async fn forwarded_client(
    proxies: Arc<[std::net::IpAddr]>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::ConnectInfo;
    let peer = req.extensions().get::<ConnectInfo<ClientAddr>>().map(|c| c.0 .0);
    if peer.is_some_and(|p| proxies.contains(&p.ip())) {
        let entries: Vec<String> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|a| a.trim().to_string())
            .collect();
        if let Some(client) = forwarded_for(&entries, &proxies) {
            req.extensions_mut().insert(ConnectInfo(ClientAddr(std::net::SocketAddr::new(client, 0))));
        }
    }
    next.run(req).await
}

/// Walks `X-Forwarded-For` from the right (the nearest hop) past the trusted proxies; the first
/// other address is the client. Stops at anything that is not an address (with or without a
/// port): what lies further left was written by whoever sent the request.
fn forwarded_for(entries: &[String], proxies: &[std::net::IpAddr]) -> Option<std::net::IpAddr> {
    for entry in entries.iter().rev() {
        let ip = entry
            .parse::<std::net::IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
        if !proxies.contains(&ip) {
            return Some(ip);
        }
    }
    None
}

/// The portal's own page for an address it has no page at (not the browser's blank error).
async fn not_found() -> axum::response::Response {
    use axum::response::IntoResponse;
    (axum::http::StatusCode::NOT_FOUND, pages::NotFoundPage { tr: crate::i18n::Tr::current() }).into_response()
}

/// The few static assets, built into the binary: no CDN, nothing read from disk at run time.
async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (kind, body) = match file.as_str() {
        "style.css" => ("text/css; charset=utf-8", include_str!("../../static/style.css")),
        "password.js" => ("text/javascript; charset=utf-8", include_str!("../../static/password.js")),
        "pow.js" => ("text/javascript; charset=utf-8", include_str!("../../static/pow.js")),
        "copy.js" => ("text/javascript; charset=utf-8", include_str!("../../static/copy.js")),
        "passkey.js" => ("text/javascript; charset=utf-8", include_str!("../../static/passkey.js")),
        "page.js" => ("text/javascript; charset=utf-8", include_str!("../../static/page.js")),
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// Headers every portal response carries: no inline script, no framing, no caching of pages
/// that may hold personal data, no referrer leaks.
fn security_headers(r: Router, tls: bool, framers: &[String]) -> Router {
    // Framing only by the configured origins (validated at start), otherwise not at all.
    let ancestors = if framers.is_empty() { "'none'".to_string() } else { framers.join(" ") };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         form-action 'self'; frame-ancestors {ancestors}; base-uri 'none'"
    );
    let csp = HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    let mut r = r
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, csp))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
    if framers.is_empty() {
        // Older browsers know only this header, which cannot name origins.
        r = r.layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
    }
    let mut r = r
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    if tls {
        r = r.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    r.layer(axum::middleware::from_fn(never_framed))
}

/// Marks a response that must never be framed (see [`never_framed`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NeverFramed;

/// Responses marked [`NeverFramed`] (every staff page: their router marks them all) are never
/// framed, whatever origins may frame the self-service pages: a framing page must not be able to
/// steer a staff member's clicks. Done outermost, after the headers every page gets.
async fn never_framed(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut resp = next.run(req).await;
    if resp.extensions().get::<NeverFramed>().is_some() {
        let h = resp.headers_mut();
        if let Some(csp) = h.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()) {
            let csp: Vec<String> = csp
                .split(';')
                .map(|d| d.trim())
                .map(|d| {
                    if d.starts_with("frame-ancestors") {
                        "frame-ancestors 'none'".to_string()
                    } else {
                        d.to_string()
                    }
                })
                .collect();
            if let Ok(v) = HeaderValue::from_str(&csp.join("; ")) {
                h.insert(header::CONTENT_SECURITY_POLICY, v);
            }
        }
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}

#[cfg(test)]
mod tests;
