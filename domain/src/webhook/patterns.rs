//! Which events a subscription wants: exact dotted names (`user.created`), prefixes
//! (`user.login.*`), or everything (`*`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// More patterns than this is a list of every type, which `*` says better.
pub const MAX_PATTERNS: usize = 64;
const MAX_PATTERN_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    #[error("at least one event type is required")]
    Empty,
    #[error("at most {MAX_PATTERNS} event types")]
    TooMany,
    #[error(
        "`{0}` is not an event type: use dotted lower-case names (`user.created`), a prefix (`user.login.*`) or `*`"
    )]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub enum EventTypePattern {
    All,
    /// Holds the prefix with its trailing dot: `user.login.`.
    Prefix(String),
    Exact(String),
}

impl EventTypePattern {
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        let malformed = || PatternError::Malformed(raw.chars().take(MAX_PATTERN_LEN).collect());
        if raw == "*" {
            return Ok(Self::All);
        }
        if raw.len() > MAX_PATTERN_LEN {
            return Err(malformed());
        }
        let (name, prefix) = match raw.strip_suffix(".*") {
            Some(name) => (name, true),
            None => (raw, false),
        };
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !name.split('.').all(segment_ok) {
            return Err(malformed());
        }
        Ok(if prefix {
            Self::Prefix(format!("{name}."))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Self::Exact(name) => event_type == name,
        }
    }
}

impl std::fmt::Display for EventTypePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(name) => f.write_str(name),
        }
    }
}

impl TryFrom<String> for EventTypePattern {
    type Error = PatternError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<EventTypePattern> for String {
    fn from(pattern: EventTypePattern) -> Self {
        pattern.to_string()
    }
}

/// A non-empty list of patterns, without duplicates, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct EventTypePatterns(Vec<EventTypePattern>);

impl EventTypePatterns {
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, PatternError> {
        if raw.is_empty() {
            return Err(PatternError::Empty);
        }
        if raw.len() > MAX_PATTERNS {
            return Err(PatternError::TooMany);
        }
        let mut patterns: Vec<EventTypePattern> = Vec::with_capacity(raw.len());
        for r in raw {
            let pattern = EventTypePattern::parse(r.as_ref())?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(Self(patterns))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.0.iter().any(|p| p.matches(event_type))
    }

    pub fn as_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_all_match_what_they_say() {
        let exact = EventTypePattern::parse("user.created").unwrap();
        assert!(exact.matches("user.created"));
        assert!(!exact.matches("user.created.extra"));
        let prefix = EventTypePattern::parse("user.login.*").unwrap();
        assert!(prefix.matches("user.login.failed"));
        assert!(prefix.matches("user.login.succeeded"));
        assert!(!prefix.matches("user.login"));
        assert!(!prefix.matches("user.loginx.failed"));
        assert!(
            EventTypePattern::parse("*")
                .unwrap()
                .matches("tenant.created")
        );
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "",
            ".",
            "user.",
            ".user",
            "User.created",
            "user..created",
            "user.*.failed",
            "user*",
            "user.login.**",
            "user created",
            "*.created",
        ] {
            assert!(
                matches!(
                    EventTypePattern::parse(bad),
                    Err(PatternError::Malformed(_))
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn lists_are_non_empty_bounded_and_deduplicated() {
        assert_eq!(
            EventTypePatterns::parse::<&str>(&[]),
            Err(PatternError::Empty)
        );
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("t.e{i}")).collect();
        assert_eq!(EventTypePatterns::parse(&many), Err(PatternError::TooMany));
        let list =
            EventTypePatterns::parse(&["user.created", "user.created", "user.login.*"]).unwrap();
        assert_eq!(list.as_strings(), vec!["user.created", "user.login.*"]);
    }

    #[test]
    fn patterns_round_trip_through_json() {
        let list = EventTypePatterns::parse(&["*", "user.login.*", "user.locked"]).unwrap();
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"["*","user.login.*","user.locked"]"#);
        assert_eq!(
            serde_json::from_str::<EventTypePatterns>(&json).unwrap(),
            list
        );
    }
}
