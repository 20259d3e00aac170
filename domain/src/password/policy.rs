use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::facts::PasswordFacts;

/// A tenant's password policy. Defaults follow NIST SP 800-63B-4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordPolicy {
    /// Minimum length when the password is the account's only factor (NIST: at least 15).
    pub min_length_single_factor: u32,
    /// Minimum length once the user has a second factor (NIST: at least 8).
    pub min_length_with_second_factor: u32,
    /// Maximum length; at least 64 must be allowed. Bounds the hashing cost of one request.
    pub max_length: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length_single_factor: 15,
            min_length_with_second_factor: 8,
            max_length: 128,
        }
    }
}

/// Why a password was refused. Stable codes: they appear in events and API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error, schemars::JsonSchema)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum PasswordRejection {
    #[error("the password is shorter than {min_length} characters")]
    TooShort { min_length: u32 },
    #[error("the password is longer than {max_length} characters")]
    TooLong { max_length: u32 },
    /// On the list of common passwords, or equal to the username, email or service name.
    #[error("the password is too common or equals a name of the account")]
    Blocklisted,
    /// Contains a control character (NUL and friends) that no keyboard types.
    #[error("the password contains a control character")]
    ControlCharacter,
    /// The password is managed by an external identity provider.
    #[error("the password is managed by an external identity provider")]
    ExternallyManaged,
    /// The user's current password, required to change it, was wrong.
    #[error("the current password is wrong")]
    CurrentPasswordWrong,
    /// The policy itself is invalid (only for policy changes).
    #[error("invalid password policy: {why}")]
    InvalidPolicy { why: String },
}

impl PasswordRejection {
    /// The same stable code that the serde tag writes into events.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::TooLong { .. } => "too_long",
            Self::Blocklisted => "blocklisted",
            Self::ControlCharacter => "control_character",
            Self::ExternallyManaged => "externally_managed",
            Self::CurrentPasswordWrong => "current_password_wrong",
            Self::InvalidPolicy { .. } => "invalid_policy",
        }
    }
}

/// How a stored hash was made, so that older hashes can be recognised and upgraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HashParams {
    /// Always `argon2id` today.
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// NIST SP 800-63B-4: at least 15 characters when the password is the only factor (SHALL).
pub const MIN_LENGTH_SINGLE_FACTOR_FLOOR: u32 = 15;
/// NIST SP 800-63B-4: at least 8 characters when the password is one factor of several.
pub const MIN_LENGTH_WITH_SECOND_FACTOR_FLOOR: u32 = 8;
/// NIST SP 800-63B-4: verifiers should permit at least 64 characters.
pub const MAX_LENGTH_FLOOR: u32 = 64;
/// Hashing cost grows with length: past this a request is a denial of service, not a password.
pub const MAX_LENGTH_CEILING: u32 = 1024;

impl PasswordPolicy {
    /// Judges a candidate: a control character first (no length hint helps with it), then the
    /// length bounds, then the blocklist. `has_second_factor` lowers the minimum length.
    pub fn judge(
        &self,
        facts: &PasswordFacts,
        has_second_factor: bool,
    ) -> Result<(), PasswordRejection> {
        let min_length = if has_second_factor {
            self.min_length_with_second_factor
        } else {
            self.min_length_single_factor
        };
        if facts.control_character {
            return Err(PasswordRejection::ControlCharacter);
        }
        if facts.code_points < min_length {
            return Err(PasswordRejection::TooShort { min_length });
        }
        if facts.code_points > self.max_length {
            return Err(PasswordRejection::TooLong {
                max_length: self.max_length,
            });
        }
        if facts.blocklisted {
            return Err(PasswordRejection::Blocklisted);
        }
        Ok(())
    }

    /// NIST bounds: 8 ≤ with-second-factor ≤ single-factor, single-factor ≥ 15, both ≤ max,
    /// 64 ≤ max ≤ 1024.
    pub fn validate(&self) -> Result<(), PasswordRejection> {
        let invalid = |why: String| Err(PasswordRejection::InvalidPolicy { why });
        let Self {
            min_length_single_factor: single,
            min_length_with_second_factor: second,
            max_length: max,
        } = *self;
        if second < MIN_LENGTH_WITH_SECOND_FACTOR_FLOOR {
            return invalid(format!(
                "min_length_with_second_factor must be at least \
                 {MIN_LENGTH_WITH_SECOND_FACTOR_FLOOR} (NIST SP 800-63B-4), not {second}"
            ));
        }
        if single < MIN_LENGTH_SINGLE_FACTOR_FLOOR {
            return invalid(format!(
                "min_length_single_factor must be at least \
                 {MIN_LENGTH_SINGLE_FACTOR_FLOOR} (NIST SP 800-63B-4), not {single}"
            ));
        }
        // A second factor only ever relaxes the length rule, never tightens it.
        if second > single {
            return invalid(format!(
                "min_length_with_second_factor ({second}) must not exceed \
                 min_length_single_factor ({single})"
            ));
        }
        if !(MAX_LENGTH_FLOOR..=MAX_LENGTH_CEILING).contains(&max) {
            return invalid(format!(
                "max_length must be between {MAX_LENGTH_FLOOR} and {MAX_LENGTH_CEILING}, not {max}"
            ));
        }
        // Checking the single-factor minimum suffices: the other is at most as large.
        if single > max {
            return invalid(format!(
                "min_length_single_factor ({single}) must not exceed max_length ({max})"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(candidate: &str) -> Result<(), PasswordRejection> {
        let facts = PasswordFacts::measure(candidate, &["alice", "alice@example.org"]);
        PasswordPolicy::default().judge(&facts, false)
    }

    /// `n` code points of a string that is on no blocklist.
    fn of_length(n: usize) -> String {
        "tulip-gravel-3".chars().cycle().take(n).collect()
    }

    #[test]
    fn fourteen_code_points_are_refused_for_a_single_factor() {
        assert_eq!(
            judge(&of_length(14)),
            Err(PasswordRejection::TooShort { min_length: 15 })
        );
    }

    #[test]
    fn fifteen_code_points_are_accepted_for_a_single_factor() {
        assert_eq!(judge(&of_length(15)), Ok(()));
    }

    #[test]
    fn an_emoji_is_one_code_point_towards_the_length() {
        // Fourteen letters and one emoji: fifteen code points, though eighteen bytes.
        assert_eq!(judge(&format!("{}🔒", of_length(14))), Ok(()));
        assert_eq!(
            judge(&format!("{}🔒", of_length(13))),
            Err(PasswordRejection::TooShort { min_length: 15 })
        );
    }

    #[test]
    fn sixty_four_and_one_hundred_twenty_eight_code_points_are_accepted() {
        assert_eq!(judge(&of_length(64)), Ok(()));
        assert_eq!(judge(&of_length(128)), Ok(()));
    }

    #[test]
    fn one_hundred_twenty_nine_code_points_are_refused() {
        assert_eq!(
            judge(&of_length(129)),
            Err(PasswordRejection::TooLong { max_length: 128 })
        );
    }

    #[test]
    fn length_counts_code_points_not_bytes() {
        // 128 two-byte letters: 256 bytes but 128 code points.
        assert_eq!(judge(&"é".repeat(128)), Ok(()));
        assert_eq!(
            judge(&"é".repeat(129)),
            Err(PasswordRejection::TooLong { max_length: 128 })
        );
    }

    #[test]
    fn a_second_factor_lowers_the_minimum_to_eight() {
        let policy = PasswordPolicy::default();
        let eight = PasswordFacts::measure(&of_length(8), &[]);
        let seven = PasswordFacts::measure(&of_length(7), &[]);
        assert_eq!(policy.judge(&eight, true), Ok(()));
        assert_eq!(
            policy.judge(&seven, true),
            Err(PasswordRejection::TooShort { min_length: 8 })
        );
        assert_eq!(
            policy.judge(&eight, false),
            Err(PasswordRejection::TooShort { min_length: 15 })
        );
    }

    #[test]
    fn a_long_common_password_is_refused() {
        assert_eq!(
            judge("1Q2W3E4R5T6Y7U8I9O0P"),
            Err(PasswordRejection::Blocklisted)
        );
    }

    #[test]
    fn a_password_equal_to_the_email_is_refused() {
        assert_eq!(
            judge("Alice@Example.org"),
            Err(PasswordRejection::Blocklisted)
        );
    }

    #[test]
    fn a_long_passphrase_containing_a_common_word_is_accepted() {
        assert_eq!(judge("mypassword1xyz-and-more"), Ok(()));
    }

    #[test]
    fn a_control_character_is_refused_before_any_length_rule() {
        assert_eq!(judge("a\u{0}"), Err(PasswordRejection::ControlCharacter));
    }

    #[test]
    fn the_default_policy_is_valid() {
        assert_eq!(PasswordPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn a_policy_below_the_nist_floors_is_refused() {
        let below_second = PasswordPolicy {
            min_length_with_second_factor: 7,
            ..PasswordPolicy::default()
        };
        let below_single = PasswordPolicy {
            min_length_single_factor: 14,
            ..PasswordPolicy::default()
        };
        let below_max = PasswordPolicy {
            max_length: 63,
            ..PasswordPolicy::default()
        };
        for policy in [below_second, below_single, below_max] {
            assert!(
                matches!(
                    policy.validate(),
                    Err(PasswordRejection::InvalidPolicy { .. })
                ),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn a_policy_with_crossed_or_excessive_bounds_is_refused() {
        let crossed = PasswordPolicy {
            min_length_single_factor: 16,
            min_length_with_second_factor: 17,
            max_length: 128,
        };
        let min_above_max = PasswordPolicy {
            min_length_single_factor: 65,
            min_length_with_second_factor: 8,
            max_length: 64,
        };
        let too_long = PasswordPolicy {
            max_length: 1025,
            ..PasswordPolicy::default()
        };
        for policy in [crossed, min_above_max, too_long] {
            assert!(
                matches!(
                    policy.validate(),
                    Err(PasswordRejection::InvalidPolicy { .. })
                ),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn the_widest_policy_within_bounds_is_valid() {
        let widest = PasswordPolicy {
            min_length_single_factor: 1024,
            min_length_with_second_factor: 1024,
            max_length: 1024,
        };
        assert_eq!(widest.validate(), Ok(()));
    }

    #[test]
    fn an_invalid_policy_says_which_bound_it_broke() {
        let refused = PasswordPolicy {
            min_length_single_factor: 14,
            ..PasswordPolicy::default()
        }
        .validate()
        .unwrap_err();
        let PasswordRejection::InvalidPolicy { why } = refused else {
            panic!("expected InvalidPolicy, got {refused:?}");
        };
        assert!(why.contains("min_length_single_factor"), "{why}");
    }

    #[test]
    fn a_rejection_code_is_its_serde_tag() {
        let rejection = PasswordRejection::TooShort { min_length: 15 };
        let json = serde_json::to_value(&rejection).unwrap();
        assert_eq!(json["code"], rejection.code());
        assert_eq!(json["min_length"], 15);
    }
}
