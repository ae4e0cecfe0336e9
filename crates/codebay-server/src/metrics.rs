//! What a user watches, in Prometheus' text format: no client library, since a few
//! counters and one histogram are all there is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Run latency buckets, in seconds: a warm `print(1)` is ~1 ms, a run can take minutes.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

#[derive(Default)]
pub struct Metrics {
    runs: AtomicU64,
    /// By the run's error name (`TimeoutError`, `NameError`, ...).
    failures: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram>,
    sessions_refused: AtomicU64,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The gauges, read when scraped.
pub struct Gauges {
    pub sessions_open: usize,
    pub max_sessions: usize,
    pub pool_ready: usize,
}

impl Metrics {
    pub fn record_run(&self, took: Duration, failure: Option<&str>) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = failure {
            let name = if name.is_empty() { "Error" } else { name };
            *self
                .failures
                .lock()
                .expect("metrics lock")
                .entry(name.to_owned())
                .or_default() += 1;
        }
        let s = took.as_secs_f64();
        let mut h = self.latency.lock().expect("metrics lock");
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    pub fn session_refused(&self) {
        self.sessions_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let scalars: [(&str, &str, &str, u64); 5] = [
            (
                "codebay_sessions_open",
                "gauge",
                "MCP sessions with a sandbox open.",
                gauges.sessions_open as u64,
            ),
            (
                "codebay_sessions_max",
                "gauge",
                "The most sessions this server opens at once (--max-sessions).",
                gauges.max_sessions as u64,
            ),
            (
                "codebay_sessions_refused_total",
                "counter",
                "New sessions refused because the server was full.",
                self.sessions_refused.load(Ordering::Relaxed),
            ),
            (
                "codebay_pool_sandboxes",
                "gauge",
                "Sandboxes built ahead, waiting in the pool.",
                gauges.pool_ready as u64,
            ),
            (
                "codebay_runs_total",
                "counter",
                "run_code calls that ran.",
                self.runs.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in scalars {
            head(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        head(
            &mut out,
            "codebay_run_failures_total",
            "counter",
            "Runs that failed, by the error's name.",
        );
        for (name, n) in self.failures.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "codebay_run_failures_total{{error=\"{}\"}} {n}",
                label(name)
            );
        }
        head(
            &mut out,
            "codebay_run_duration_seconds",
            "histogram",
            "How long run_code took, queueing included.",
        );
        let h = self.latency.lock().expect("metrics lock");
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(
                out,
                "codebay_run_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "codebay_run_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "codebay_run_duration_seconds_sum {}", h.sum);
        let _ = writeln!(out, "codebay_run_duration_seconds_count {}", h.count);
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format escapes it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.record_run(Duration::from_millis(2), None);
        m.record_run(Duration::from_secs(3), Some("TimeoutError"));
        let text = m.render(&Gauges {
            sessions_open: 1,
            max_sessions: 8,
            pool_ready: 2,
        });
        assert!(text.contains("\ncodebay_sessions_open 1\n"), "{text}");
        assert!(text.contains("codebay_runs_total 2\n"));
        assert!(text.contains("codebay_run_failures_total{error=\"TimeoutError\"} 1\n"));
        assert!(text.contains("codebay_run_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("codebay_run_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("codebay_run_duration_seconds_count 2\n"));
        assert!(text.contains("codebay_pool_sandboxes 2\n"));
    }
}
