//! When a failed delivery is tried again: exponential backoff with jitter, on a schedule the
//! operator can change. The default reaches about a day after the first attempt.

use std::time::Duration;

/// Delays before the 2nd, 3rd, ... attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 8 h, 8 h (8 attempts
/// in all, the last 23 h 35 min 5 s after the first).
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,8h,8h";
/// Each delay is moved by up to this fraction either way, so receivers that failed together
/// are not hit again together.
pub const JITTER: f64 = 0.1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "a retry schedule is a comma-separated list of delays such as `5s,5m,2h` (units ms, s, m, h)"
)]
pub struct MalformedSchedule;

impl RetrySchedule {
    pub fn parse(raw: &str) -> Result<Self, MalformedSchedule> {
        let delays = raw
            .split(',')
            .map(|part| parse_delay(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(delays))
    }

    /// Attempts in all, the first included.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The delay after failed attempt number `failed` (1-based), moved by `jitter` in
    /// [-1, 1] times [`JITTER`]; `None` when that was the last attempt.
    pub fn delay_after(&self, failed: u32, jitter: f64) -> Option<Duration> {
        let index = usize::try_from(failed).ok()?.checked_sub(1)?;
        let base = *self.0.get(index)?;
        Some(base.mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0)))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::parse(DEFAULT_SCHEDULE).unwrap_or(Self(Vec::new()))
    }
}

fn parse_delay(part: &str) -> Result<Duration, MalformedSchedule> {
    let digits_end = part
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(MalformedSchedule)?;
    let (number, unit) = part.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| MalformedSchedule)?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(MalformedSchedule),
    };
    Ok(Duration::from_millis(
        number.checked_mul(millis).ok_or(MalformedSchedule)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_reaches_about_a_day() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        let total: Duration = (1..schedule.attempts())
            .map(|n| schedule.delay_after(n, 0.0).unwrap())
            .sum();
        assert_eq!(total, Duration::from_secs(23 * 3600 + 35 * 60 + 5));
        assert_eq!(schedule.delay_after(schedule.attempts(), 0.0), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let schedule = RetrySchedule::parse("100s").unwrap();
        assert_eq!(schedule.delay_after(1, 1.0), Some(Duration::from_secs(110)));
        assert_eq!(schedule.delay_after(1, -1.0), Some(Duration::from_secs(90)));
        assert_eq!(schedule.delay_after(1, 7.0), Some(Duration::from_secs(110)));
    }

    #[test]
    fn schedules_parse_units_and_refuse_the_rest() {
        assert_eq!(
            RetrySchedule::parse("200ms, 1s,2m,3h").unwrap(),
            RetrySchedule(vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(3 * 3600),
            ])
        );
        for bad in ["", "5", "s", "5x", "-5s", "5s,,5s"] {
            assert_eq!(RetrySchedule::parse(bad), Err(MalformedSchedule), "{bad:?}");
        }
    }
}
