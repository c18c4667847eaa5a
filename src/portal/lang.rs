//! Which language a request is answered in: the page's switch (`?lang=fr`, remembered in a
//! cookie), else the cookie, else the browser's `Accept-Language`, else English.

use crate::i18n::{self, Lang};
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

const COOKIE: &str = "lang";

fn from_query(req: &Request) -> Option<Lang> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "lang").and_then(|(_, v)| Lang::parse(&v))
}

fn from_cookie(req: &Request) -> Option<Lang> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("lang=").and_then(Lang::parse))
}

/// Middleware: resolves the language, renders the response in it, and remembers a choice made
/// with the switch. `secure` marks the cookie Secure (when the portal is reached over HTTPS).
pub async fn negotiate(secure: bool, req: Request, next: Next) -> Response {
    let chosen = from_query(&req);
    let lang = chosen.or_else(|| from_cookie(&req)).unwrap_or_else(|| {
        i18n::negotiate(req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or(""))
    });
    let mut resp = i18n::scope(lang, next.run(req)).await;
    if let Some(l) = chosen {
        let cookie = format!(
            "{COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly{}",
            l.code(),
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp.headers_mut().insert(header::CONTENT_LANGUAGE, HeaderValue::from_static(lang.code()));
    resp.headers_mut().append(header::VARY, HeaderValue::from_static("accept-language, cookie"));
    resp
}
