//! What one request came to, for its line in the access log: the outcome of the attempt it
//! made, noted where the attempt is audited and read where the request is logged.

use crate::domain::Outcome;
use std::cell::Cell;

tokio::task_local! {
    static OUTCOME: Cell<Option<&'static str>>;
}

/// Runs `f` (a request), and gives back with its result the outcome code of the last attempt it
/// audited, if any.
pub async fn scope<F: std::future::Future>(f: F) -> (F::Output, Option<&'static str>) {
    OUTCOME
        .scope(Cell::new(None), async {
            let out = f.await;
            (out, OUTCOME.with(Cell::get))
        })
        .await
}

/// Notes an attempt's outcome for the request's log line (nothing outside a request).
pub fn note(outcome: &Outcome) {
    let _ = OUTCOME.try_with(|o| o.set(Some(outcome.code().0)));
}
