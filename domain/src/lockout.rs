//! Account lockout after repeated failed logins: the rate limit that NIST SP 800-63B-4 requires on
//! password verification, kept per account so that it survives restarts and shows in the log.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// NIST SP 800-63B-4, rate limiting: no more than 100 consecutive failed attempts on one account.
pub const MAX_FAILURES_LIMIT: u32 = 100;
/// 30 days: a longer window would keep counting failures the user has long forgotten.
pub const MAX_WINDOW_SECONDS: u64 = 2_592_000;
/// One year; a longer timed lock is an indefinite lock in disguise: use `lock_seconds: None`.
pub const MAX_LOCK_SECONDS: u64 = 31_536_000;

/// A tenant's lockout policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LockoutPolicy {
    /// When false, failures are still recorded but never lock.
    pub enabled: bool,
    /// Failed password attempts within the window that lock the account.
    pub max_failures: u32,
    /// How far back failures count, ending at the attempt being judged.
    pub window_seconds: u64,
    /// How long a lock lasts. `None`: until an admin unlocks.
    pub lock_seconds: Option<u64>,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_failures: 10,
            window_seconds: 900,
            lock_seconds: Some(1800),
        }
    }
}

/// Why a lockout policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LockoutPolicyError {
    #[error("max_failures must be between 1 and 100 (NIST SP 800-63B-4), not {0}")]
    MaxFailuresOutOfRange(u32),
    #[error("window_seconds must be between 1 and 2592000 (30 days), not {0}")]
    WindowOutOfRange(u64),
    #[error("lock_seconds must be between 1 and 31536000 (one year) or absent, not {0}")]
    LockSecondsOutOfRange(u64),
}

impl LockoutPolicyError {
    /// Stable for API answers; the message says which bound was broken.
    pub fn code(&self) -> &'static str {
        "invalid_lockout_policy"
    }
}

impl LockoutPolicy {
    pub fn validate(&self) -> Result<(), LockoutPolicyError> {
        if !(1..=MAX_FAILURES_LIMIT).contains(&self.max_failures) {
            return Err(LockoutPolicyError::MaxFailuresOutOfRange(self.max_failures));
        }
        if !(1..=MAX_WINDOW_SECONDS).contains(&self.window_seconds) {
            return Err(LockoutPolicyError::WindowOutOfRange(self.window_seconds));
        }
        if let Some(lock_seconds) = self.lock_seconds
            && !(1..=MAX_LOCK_SECONDS).contains(&lock_seconds)
        {
            return Err(LockoutPolicyError::LockSecondsOutOfRange(lock_seconds));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut LockoutPolicy)) -> LockoutPolicy {
        let mut policy = LockoutPolicy::default();
        change(&mut policy);
        policy
    }

    #[test]
    fn the_default_policy_is_valid() {
        assert_eq!(LockoutPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn max_failures_is_between_one_and_one_hundred() {
        assert_eq!(with(|p| p.max_failures = 1).validate(), Ok(()));
        assert_eq!(with(|p| p.max_failures = 100).validate(), Ok(()));
        assert_eq!(
            with(|p| p.max_failures = 101).validate(),
            Err(LockoutPolicyError::MaxFailuresOutOfRange(101))
        );
        assert_eq!(
            with(|p| p.max_failures = 0).validate(),
            Err(LockoutPolicyError::MaxFailuresOutOfRange(0))
        );
    }

    #[test]
    fn the_window_is_between_one_second_and_thirty_days() {
        assert_eq!(with(|p| p.window_seconds = 2_592_000).validate(), Ok(()));
        assert_eq!(
            with(|p| p.window_seconds = 0).validate(),
            Err(LockoutPolicyError::WindowOutOfRange(0))
        );
        assert_eq!(
            with(|p| p.window_seconds = 2_592_001).validate(),
            Err(LockoutPolicyError::WindowOutOfRange(2_592_001))
        );
    }

    #[test]
    fn a_timed_lock_lasts_between_one_second_and_a_year_or_until_unlocked() {
        assert_eq!(with(|p| p.lock_seconds = None).validate(), Ok(()));
        assert_eq!(
            with(|p| p.lock_seconds = Some(31_536_000)).validate(),
            Ok(())
        );
        assert_eq!(
            with(|p| p.lock_seconds = Some(0)).validate(),
            Err(LockoutPolicyError::LockSecondsOutOfRange(0))
        );
        assert_eq!(
            with(|p| p.lock_seconds = Some(31_536_001)).validate(),
            Err(LockoutPolicyError::LockSecondsOutOfRange(31_536_001))
        );
    }

    #[test]
    fn a_refusal_has_a_stable_code_and_says_why() {
        let refused = with(|p| p.max_failures = 101).validate().unwrap_err();
        assert_eq!(refused.code(), "invalid_lockout_policy");
        assert!(refused.to_string().contains("100"), "{refused}");
    }
}
