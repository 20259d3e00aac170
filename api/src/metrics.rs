//! Counters served as Prometheus text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::passwords::PasswordHasher;

#[derive(Default)]
pub struct Metrics {
    pub logins_succeeded: AtomicU64,
    pub logins_failed: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_status(&self, status: u16) {
        match status {
            200..=299 => Self::inc(&self.responses_2xx),
            400..=499 => Self::inc(&self.responses_4xx),
            500..=599 => Self::inc(&self.responses_5xx),
            _ => {}
        }
    }

    /// The counters, the password hasher's work, and the log's and views' positions.
    pub fn render(&self, passwords: &PasswordHasher, log_head: u64, views_position: u64) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "keyledger_logins_succeeded_total",
            "Password logins that succeeded.",
            get(&self.logins_succeeded),
        );
        counter(
            "keyledger_logins_failed_total",
            "Password logins that failed, for any reason.",
            get(&self.logins_failed),
        );
        counter(
            "keyledger_password_verifications_total",
            "argon2 verifications run (including against the dummy hash).",
            passwords.verifications(),
        );
        counter(
            "keyledger_password_hashes_total",
            "argon2 hashes computed for new passwords.",
            passwords.hashes(),
        );
        for (class, c) in [
            ("2xx", &self.responses_2xx),
            ("4xx", &self.responses_4xx),
            ("5xx", &self.responses_5xx),
        ] {
            let _ = writeln!(
                out,
                "keyledger_http_responses_total{{class=\"{class}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP keyledger_log_head_position Position of the newest event in the log.\n\
             # TYPE keyledger_log_head_position gauge\nkeyledger_log_head_position {log_head}\n\
             # HELP keyledger_views_position Position every view has folded.\n\
             # TYPE keyledger_views_position gauge\nkeyledger_views_position {views_position}"
        );
        out
    }
}
