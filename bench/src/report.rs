//! Markdown tables on stdout, progress notes on stderr, and the number formats they share.
//!
//! Results go to stdout and nothing else does, so `... > results.md` keeps only the tables.

use std::time::Duration;

/// A markdown table with a heading and notes printed under it.
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        println!("### {}\n", self.title);
        println!("| {} |", self.headers.join(" | "));
        println!(
            "|{}|",
            self.headers
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &self.rows {
            println!("| {} |", row.join(" | "));
        }
        println!();
        for note in &self.notes {
            println!("- {note}");
        }
        if !self.notes.is_empty() {
            println!();
        }
    }
}

/// A progress line for whoever watches the run; stdout stays clean for the tables.
pub fn progress(message: impl AsRef<str>) {
    eprintln!("[bench] {}", message.as_ref());
}

/// How busy the machine's CPUs were over a second, from `/proc/stat` (busy = not idle and
/// not waiting for I/O). Taken before a benchmark: the machine may be shared, and a figure
/// measured next to someone else's compile job says little.
pub fn cpu_busy_now() -> Option<f64> {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        // Fields 3 and 4 are idle and iowait.
        let idle = fields.get(3)? + fields.get(4)?;
        Some((total, idle))
    }
    let (total0, idle0) = sample()?;
    std::thread::sleep(Duration::from_secs(1));
    let (total1, idle1) = sample()?;
    let total = total1.checked_sub(total0)?;
    let idle = idle1.checked_sub(idle0)?;
    (total > 0).then(|| 100.0 * (total - idle.min(total)) as f64 / total as f64)
}

/// [`cpu_busy_now`] off the async workers.
pub async fn cpu_busy() -> Option<f64> {
    tokio::task::spawn_blocking(cpu_busy_now)
        .await
        .ok()
        .flatten()
}

/// A note on how busy the machine was before a benchmark started.
pub fn load_note(busy: Option<f64>) -> String {
    match busy {
        Some(busy) if busy > 20.0 => format!(
            "**the machine was {busy:.0} % busy before this benchmark started (other \
             processes): its figures are unreliable, run it again on a quiet machine**"
        ),
        Some(busy) => format!("machine CPU busy before the run: {busy:.0} %"),
        None => "machine load before the run: unknown (no /proc/stat)".into(),
    }
}

/// Items per second.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// `12,345` for large figures, one decimal below 100 so small rates keep their precision.
pub fn number(value: f64) -> String {
    if value < 100.0 {
        return format!("{value:.1}");
    }
    // Rounded to a whole number first; rates here are far below i64's range.
    let whole = value.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn per_second(value: f64) -> String {
    format!("{}/s", number(value))
}

pub fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

pub fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `met` or `MISSED`, for a figure that must reach `target`.
pub fn at_least(value: f64, target: f64) -> &'static str {
    if value >= target { "met" } else { "MISSED" }
}

/// `met` or `MISSED`, for a figure that must stay under `limit`.
pub fn below(value: f64, limit: f64) -> &'static str {
    if value < limit { "met" } else { "MISSED" }
}

/// The p-th percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_numbers_get_thousands_separators_and_small_ones_a_decimal() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(999.6), "1,000");
        assert_eq!(number(42.26), "42.3");
        assert_eq!(number(100.0), "100");
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
