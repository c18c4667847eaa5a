//! Counters for Prometheus: attempts by operation and outcome, writebacks by operation and
//! outcome with a latency histogram, and the agents alive now. Kept per portal (no global
//! recorder), rendered in the Prometheus text format at `/metrics`.

use crate::domain::Outcome;
use crate::envelope::Op;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the writeback latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Latency {
    /// Observations at or under each bound (cumulative when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_secs: f64,
}

#[derive(Default)]
pub struct Metrics {
    attempts: Mutex<BTreeMap<(String, &'static str), u64>>,
    writebacks: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<Latency>,
    /// Frames from agents refused before anything in them was trusted, by reason.
    refused_frames: Mutex<BTreeMap<&'static str, u64>>,
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Reset => "reset",
        Op::Change => "change",
        Op::Unlock => "unlock",
        Op::RequireChange => "require_change",
        Op::Verify => "verify",
        Op::Noop => "noop",
        Op::Inspect => "inspect",
    }
}

impl Metrics {
    /// One audited step of an attempt (`reset.writeback`, `signin`…) and its outcome.
    pub fn attempt(&self, operation: &str, outcome: &Outcome) {
        if let Ok(mut m) = self.attempts.lock() {
            *m.entry((operation.to_string(), outcome.code().0)).or_default() += 1;
        }
    }

    /// One request through the relay, its outcome and how long the portal waited for it.
    pub fn writeback(&self, op: Op, outcome: &Outcome, waited: Duration) {
        if let Ok(mut m) = self.writebacks.lock() {
            *m.entry((op_name(op), outcome.code().0)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let secs = waited.as_secs_f64();
            if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
                l.buckets[i] += 1;
            }
            l.count += 1;
            l.sum_secs += secs;
        }
    }

    /// A frame from an agent refused (`unsealed`, `tampered`, `replayed`, `stale`…).
    pub fn refused_frame(&self, reason: &'static str) {
        if let Ok(mut m) = self.refused_frames.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of everything, with `live_agents` alive now.
    pub fn render(&self, live_agents: usize) -> String {
        let mut out = String::new();
        let live = [(String::new(), live_agents as u64)];
        family(&mut out, "passback_live_agents", "gauge", "Agents connected and answering now.", live);
        let attempts = self.attempts.lock().map(|m| {
            m.iter().map(|((op, code), n)| (format!("operation=\"{op}\",outcome=\"{code}\""), *n)).collect::<Vec<_>>()
        });
        let help = "Audited steps of people's attempts, by operation and outcome code.";
        family(&mut out, "passback_attempts_total", "counter", help, attempts.unwrap_or_default());
        let writebacks = self.writebacks.lock().map(|m| {
            m.iter().map(|((op, code), n)| (format!("op=\"{op}\",outcome=\"{code}\""), *n)).collect::<Vec<_>>()
        });
        let help = "Requests sent through the relay, by operation and outcome code.";
        family(&mut out, "passback_writebacks_total", "counter", help, writebacks.unwrap_or_default());
        let refused = self
            .refused_frames
            .lock()
            .map(|m| m.iter().map(|(reason, n)| (format!("reason=\"{reason}\""), *n)).collect::<Vec<_>>());
        let help = "Frames from agents refused before anything in them was trusted, by reason.";
        family(&mut out, "passback_relay_frames_refused_total", "counter", help, refused.unwrap_or_default());
        let _ =
            writeln!(out, "# HELP passback_writeback_seconds How long the portal waited for the directory's answer.");
        let _ = writeln!(out, "# TYPE passback_writeback_seconds histogram");
        if let Ok(l) = self.latency.lock() {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(l.buckets.iter()) {
                cumulative += n;
                let _ = writeln!(out, "passback_writeback_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "passback_writeback_seconds_bucket{{le=\"+Inf\"}} {}", l.count);
            let _ = writeln!(out, "passback_writeback_seconds_sum {}", l.sum_secs);
            let _ = writeln!(out, "passback_writeback_seconds_count {}", l.count);
        }
        out
    }
}

/// One metric family: its help and type lines, then a sample for each set of labels.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, n) in samples {
        let labels = if labels.is_empty() { labels } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}{labels} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_outcomes_and_fills_the_histogram_cumulatively() {
        let m = Metrics::default();
        m.writeback(Op::Reset, &Outcome::Success, Duration::from_millis(2));
        m.writeback(Op::Reset, &Outcome::Success, Duration::from_millis(40));
        m.writeback(Op::Change, &Outcome::NoAgent, Duration::ZERO);
        m.attempt("reset.writeback", &Outcome::Success);
        m.refused_frame("unsealed");
        let text = m.render(3);
        assert!(text.contains("passback_relay_frames_refused_total{reason=\"unsealed\"} 1"), "{text}");
        assert!(text.contains("passback_live_agents 3"));
        assert!(text.contains("passback_writebacks_total{op=\"reset\",outcome=\"PB-0000\"} 2"));
        assert!(text.contains("passback_writebacks_total{op=\"change\",outcome=\"PB-1001\"} 1"));
        assert!(text.contains("passback_attempts_total{operation=\"reset.writeback\",outcome=\"PB-0000\"} 1"));
        assert!(text.contains("passback_writeback_seconds_bucket{le=\"0.001\"} 1"), "{text}");
        assert!(text.contains("passback_writeback_seconds_bucket{le=\"0.0025\"} 2"), "{text}");
        assert!(text.contains("passback_writeback_seconds_bucket{le=\"0.05\"} 3"), "{text}");
        assert!(text.contains("passback_writeback_seconds_count 3"));
    }
}
