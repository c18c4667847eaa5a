//! The access log: one line per request, with what an operator needs to find it again: the
//! method and path (never the query, which may carry a name), the status, how long it took, the
//! support code the person was shown and the outcome code of the attempt it made (noted where
//! a person's attempt or a staff act is audited; other requests have none).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

pub async fn log(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (resp, outcome) = crate::usecase::trail::scope(next.run(req)).await;
    let support_code = resp.headers().get("x-support-code").and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info!(
        target: "passback::access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        support_code,
        outcome = outcome.unwrap_or(""),
        "request"
    );
    resp
}
