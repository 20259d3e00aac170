//! Values that are valid by construction. Each newtype keeps its field private and is built only
//! by `parse`, so once a caller holds a [`Username`] it is a valid one: nothing downstream checks
//! again.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use unicode_normalization::UnicodeNormalization;

/// Why a value was refused. Each variant has a stable code for API answers, see [`ValueError::code`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    #[error("invalid username: {why}")]
    InvalidUsername { why: &'static str },
    /// Names that look like built-in or privileged accounts (OWASP ASVS 6.3.2), refused so that
    /// nobody can pose as one.
    #[error("this username is reserved")]
    ReservedUsername,
    #[error("invalid email: {why}")]
    InvalidEmail { why: &'static str },
    #[error("invalid display name: {why}")]
    InvalidDisplayName { why: &'static str },
}

impl ValueError {
    /// A stable snake_case code: API answers carry it, so it never changes once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUsername { .. } => "invalid_username",
            Self::ReservedUsername => "reserved_username",
            Self::InvalidEmail { .. } => "invalid_email",
            Self::InvalidDisplayName { .. } => "invalid_display_name",
        }
    }
}

/// Compared after NFKC and lower-casing, so `ADMIN` and the full-width `ａｄｍｉｎ` are refused too.
const RESERVED_USERNAMES: [&str; 5] = ["admin", "root", "sa", "administrator", "system"];

pub const USERNAME_MAX_CODE_POINTS: usize = 64;
/// RFC 5321 limits a forward path to 256 octets including the angle brackets.
pub const EMAIL_MAX_CHARS: usize = 254;
pub const DISPLAY_NAME_MAX_CODE_POINTS: usize = 200;

/// A login name: trimmed, NFKC-normalised, 1 to 64 code points, no whitespace or control
/// characters, not a reserved name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        // NFKC so that look-alike compatibility forms (full-width letters, ligatures) become the
        // plain letters they stand for before any rule or uniqueness claim sees them.
        let value: String = raw.trim().nfkc().collect();
        let invalid = |why| Err(ValueError::InvalidUsername { why });
        let code_points = value.chars().count();
        if code_points == 0 {
            return invalid("it is empty");
        }
        if code_points > USERNAME_MAX_CODE_POINTS {
            return invalid("it is longer than 64 characters");
        }
        if value.chars().any(char::is_whitespace) {
            return invalid("it contains whitespace");
        }
        if value.chars().any(char::is_control) {
            return invalid("it contains a control character");
        }
        let lowered = value.to_lowercase();
        if RESERVED_USERNAMES.contains(&lowered.as_str()) {
            return Err(ValueError::ReservedUsername);
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased form that uniqueness claims use: `Alice` and `alice` are one user.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// An email address, checked only for shape: trimmed, at most 254 characters, exactly one `@`
/// with a non-empty local part and a dotted domain, no whitespace or control characters. Whether
/// it receives mail is for a confirmation message to find out, not for a parser.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let value = raw.trim();
        let invalid = |why| Err(ValueError::InvalidEmail { why });
        if value.is_empty() {
            return invalid("it is empty");
        }
        if value.chars().count() > EMAIL_MAX_CHARS {
            return invalid("it is longer than 254 characters");
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("it contains whitespace or a control character");
        }
        let Some((local, domain)) = value.split_once('@') else {
            return invalid("it has no @");
        };
        if domain.contains('@') {
            return invalid("it has more than one @");
        }
        if local.is_empty() {
            return invalid("the part before the @ is empty");
        }
        // `a@.com`, `a@com.` and `a@b..c` have a dot but no real domain.
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return invalid("the domain needs a dot between non-empty labels");
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`; password checks refuse it as a password.
    pub fn local_part(&self) -> &str {
        self.0
            .split_once('@')
            .map_or(self.0.as_str(), |(local, _)| local)
    }

    /// The lower-cased form that uniqueness claims use. Strictly the local part is case-sensitive,
    /// but no provider treats it so, and two accounts differing only by case invite takeovers.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A name to show people: trimmed, 1 to 200 code points, no control characters. Spaces and any
/// script are welcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let value = raw.trim();
        let invalid = |why| Err(ValueError::InvalidDisplayName { why });
        let code_points = value.chars().count();
        if code_points == 0 {
            return invalid("it is empty");
        }
        if code_points > DISPLAY_NAME_MAX_CODE_POINTS {
            return invalid("it is longer than 200 characters");
        }
        if value.chars().any(char::is_control) {
            return invalid("it contains a control character");
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lower-cased, for searches; display names are not unique.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

macro_rules! string_value {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_value!(Username);
string_value!(Email);
string_value!(DisplayName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_trimmed_and_normalized_to_nfkc() {
        // Full-width letters are compatibility forms of plain ones.
        let name = Username::parse("  ａｌｉｃｅ \t").unwrap();
        assert_eq!(name.as_str(), "alice");
    }

    #[test]
    fn a_username_keeps_its_case_but_claims_uniqueness_lower_cased() {
        let name = Username::parse("Alice").unwrap();
        assert_eq!(name.as_str(), "Alice");
        assert_eq!(name.normalized(), "alice");
    }

    #[test]
    fn reserved_usernames_are_refused_whatever_their_case_or_width() {
        for raw in [
            "admin",
            "ROOT",
            "Sa",
            "Administrator",
            "system",
            "ＡＤＭＩＮ",
        ] {
            assert_eq!(
                Username::parse(raw),
                Err(ValueError::ReservedUsername),
                "{raw}"
            );
        }
        assert_eq!(ValueError::ReservedUsername.code(), "reserved_username");
    }

    #[test]
    fn names_that_merely_contain_a_reserved_word_are_accepted() {
        assert!(Username::parse("sysadmin").is_ok());
        assert!(Username::parse("rooted").is_ok());
    }

    #[test]
    fn a_username_is_one_to_sixty_four_code_points() {
        assert!(Username::parse(&"é".repeat(64)).is_ok());
        let too_long = Username::parse(&"a".repeat(65)).unwrap_err();
        assert_eq!(too_long.code(), "invalid_username");
        assert_eq!(
            Username::parse("   ").unwrap_err().code(),
            "invalid_username"
        );
    }

    #[test]
    fn a_username_has_no_whitespace_or_control_characters() {
        for raw in ["al ice", "al\u{a0}ice", "al\u{0}ice", "al\u{7f}ice"] {
            assert!(
                matches!(
                    Username::parse(raw),
                    Err(ValueError::InvalidUsername { .. })
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_plain_email_is_accepted_trimmed() {
        let email = Email::parse(" Alice@Example.org ").unwrap();
        assert_eq!(email.as_str(), "Alice@Example.org");
        assert_eq!(email.normalized(), "alice@example.org");
        assert_eq!(email.local_part(), "Alice");
    }

    #[test]
    fn an_email_needs_exactly_one_at_a_local_part_and_a_dotted_domain() {
        for raw in [
            "",
            "alice",
            "alice@example",
            "@example.org",
            "alice@@example.org",
            "a@b@example.org",
            "alice@.org",
            "alice@example.",
            "alice@exa mple.org",
            "alice@example\u{0}.org",
        ] {
            let refused = Email::parse(raw).unwrap_err();
            assert_eq!(refused.code(), "invalid_email", "{raw:?}");
        }
    }

    #[test]
    fn an_email_is_at_most_254_characters() {
        let at_limit = format!("{}@example.org", "a".repeat(254 - 12));
        assert_eq!(at_limit.len(), 254);
        assert!(Email::parse(&at_limit).is_ok());
        let over = format!("a{at_limit}");
        assert_eq!(Email::parse(&over).unwrap_err().code(), "invalid_email");
    }

    #[test]
    fn a_display_name_is_one_to_two_hundred_code_points_without_control_characters() {
        assert_eq!(
            DisplayName::parse("  Ada Lovelace ").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert!(DisplayName::parse(&"ü".repeat(200)).is_ok());
        for raw in [String::new(), "ü".repeat(201), "Ada\nLovelace".to_owned()] {
            let refused = DisplayName::parse(&raw).unwrap_err();
            assert_eq!(refused.code(), "invalid_display_name", "{raw:?}");
        }
    }

    #[test]
    fn values_deserialize_only_through_parse() {
        let name: Username = serde_json::from_str("\"alice\"").unwrap();
        assert_eq!(name.as_str(), "alice");
        assert!(serde_json::from_str::<Username>("\"root\"").is_err());
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"alice\"");
    }
}
