//! Prometheus metrics, in the text exposition format, without a metrics crate: a few counters,
//! one histogram family and gauges, behind one mutex (updates are a map lookup and an add).
//!
//! - `mcpgate_requests_total{upstream,method,outcome}` and
//!   `mcpgate_request_duration_seconds{upstream,method}` (histogram), per upstream request;
//! - `mcpgate_tls_handshake_failures_total{side,class}`, by error class;
//! - `mcpgate_certificate_expiry_seconds{role,name,subject}`, seconds until each certificate
//!   mcpgate serves or trusts expires (negative once expired).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The MCP methods a request label may name; any other is counted as `other`.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Default)]
struct Registry {
    /// Per upstream name: the method and outcome labels are static, so counting a request
    /// allocates nothing once its upstream is known.
    upstreams: BTreeMap<String, UpstreamRequests>,
    handshake_failures: BTreeMap<(&'static str, &'static str), u64>,
    expiry: BTreeMap<(String, String, String), i64>,
}

#[derive(Default)]
struct UpstreamRequests {
    requests: BTreeMap<(&'static str, &'static str), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = registry().lock().unwrap_or_else(|p| p.into_inner());
    f(&mut g)
}

/// One request to an upstream, answered (or failed) after `took`.
pub fn request(upstream: &str, method: &str, ok: bool, took: Duration) {
    // Method names come from clients: only the protocol's own become labels.
    let method = KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other");
    with(|r| {
        if !r.upstreams.contains_key(upstream) {
            r.upstreams.insert(upstream.to_string(), Default::default());
        }
        let Some(u) = r.upstreams.get_mut(upstream) else {
            return;
        };
        *u.requests
            .entry((method, if ok { "ok" } else { "error" }))
            .or_default() += 1;
        let h = u.durations.entry(method).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    });
}

/// A failed TLS handshake on the listener (`side = "listener"`) or to an upstream.
pub fn handshake_failure(side: &'static str, class: &'static str) {
    with(|r| *r.handshake_failures.entry((side, class)).or_default() += 1);
}

/// Records when a certificate expires (unix seconds); the gauge counts down from it.
pub fn certificate_not_after(role: &str, name: &str, subject: &str, not_after_unix: i64) {
    with(|r| {
        r.expiry.insert(
            (role.to_string(), name.to_string(), subject.to_string()),
            not_after_unix,
        );
    });
}

/// Forgets the certificates recorded under `role` and `name` (before re-reading a file).
pub fn forget_certificates(role: &str, name: &str) {
    with(|r| r.expiry.retain(|(ro, n, _), _| !(ro == role && n == name)));
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The exposition text.
pub fn render() -> String {
    with(|r| {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP mcpgate_requests_total Requests sent to upstreams, by outcome."
        );
        let _ = writeln!(out, "# TYPE mcpgate_requests_total counter");
        for (u, ((m, o), n)) in r
            .upstreams
            .iter()
            .flat_map(|(u, x)| x.requests.iter().map(move |r| (u, r)))
        {
            let _ = writeln!(
                out,
                "mcpgate_requests_total{{upstream=\"{}\",method=\"{}\",outcome=\"{o}\"}} {n}",
                esc(u),
                esc(m)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mcpgate_request_duration_seconds Time from sending a request to an upstream to its answer."
        );
        let _ = writeln!(out, "# TYPE mcpgate_request_duration_seconds histogram");
        for (u, (m, h)) in r
            .upstreams
            .iter()
            .flat_map(|(u, x)| x.durations.iter().map(move |d| (u, d)))
        {
            let labels = format!("upstream=\"{}\",method=\"{}\"", esc(u), esc(m));
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "mcpgate_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "mcpgate_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "mcpgate_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "mcpgate_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP mcpgate_tls_handshake_failures_total Failed TLS handshakes, by side and error class."
        );
        let _ = writeln!(out, "# TYPE mcpgate_tls_handshake_failures_total counter");
        for ((side, class), n) in &r.handshake_failures {
            let _ = writeln!(
                out,
                "mcpgate_tls_handshake_failures_total{{side=\"{side}\",class=\"{class}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mcpgate_certificate_expiry_seconds Seconds until a certificate expires (negative: expired)."
        );
        let _ = writeln!(out, "# TYPE mcpgate_certificate_expiry_seconds gauge");
        let now = now_unix();
        for ((role, name, subject), not_after) in &r.expiry {
            let secs = not_after - now;
            let _ = writeln!(
                out,
                "mcpgate_certificate_expiry_seconds{{role=\"{}\",name=\"{}\",subject=\"{}\"}} {secs}",
                esc(role),
                esc(name),
                esc(subject)
            );
        }
        out
    })
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        request("t-up", "tools/call", true, Duration::from_millis(3));
        request(
            "t-up",
            "bad method with spaces",
            false,
            Duration::from_millis(3),
        );
        handshake_failure("listener", "client_certificate_required");
        certificate_not_after("listener", "tls.cert_file", r#"CN="x""#, now_unix() + 42);
        let text = render();
        assert!(
            text.contains(
                r#"mcpgate_requests_total{upstream="t-up",method="tools/call",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="other""#), "{text}");
        assert!(text.contains(r#"mcpgate_request_duration_seconds_bucket{upstream="t-up",method="tools/call",le="0.005"} 1"#), "{text}");
        assert!(text.contains(r#"mcpgate_request_duration_seconds_bucket{upstream="t-up",method="tools/call",le="0.001"} 0"#), "{text}");
        assert!(text.contains(r#"subject="CN=\"x\""} 42"#), "{text}");
    }
}
