//! What the domain needs to know about a candidate password, measured by the caller from the
//! plaintext so that the plaintext itself never reaches an aggregate or an event.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::blocklist;

/// The service's own name: a password equal to it is as guessable as one on the blocklist.
pub const SERVICE_NAME: &str = "keyledger";

/// NFKC-normalises a candidate. Hash and verify this form, so that the same password typed on
/// keyboards that produce NFC or NFD (or compatibility forms) matches (NIST SP 800-63B-4).
pub fn normalize(candidate: &str) -> String {
    candidate.nfkc().collect()
}

/// Facts about one candidate password, enough for [`PasswordPolicy::judge`](super::PasswordPolicy::judge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordFacts {
    /// Length of the normalised form in Unicode code points (not bytes, not graphemes): NIST
    /// counts each code point as one character.
    pub code_points: u32,
    /// The whole normalised password, ignoring case, is a common password or equals a context
    /// word.
    pub blocklisted: bool,
    /// Contains a control character (NUL, escape, line breaks...).
    pub control_character: bool,
}

impl PasswordFacts {
    /// Measures `candidate` after [`normalize`]. `context_words` are the words specific to this
    /// account that must not be the password: pass the username and the email address. The
    /// email's local part and [`SERVICE_NAME`] are added here, so no caller can forget them.
    pub fn measure(candidate: &str, context_words: &[&str]) -> Self {
        let normalized = normalize(candidate);
        let lowered = normalized.to_lowercase();
        let code_points = u32::try_from(normalized.chars().count()).unwrap_or(u32::MAX);
        Self {
            code_points,
            blocklisted: blocklist::is_common(&lowered) || is_context_word(&lowered, context_words),
            control_character: normalized.chars().any(char::is_control),
        }
    }
}

fn is_context_word(lowered: &str, context_words: &[&str]) -> bool {
    let local_parts = context_words
        .iter()
        .filter_map(|word| word.split_once('@').map(|(local, _)| local));
    context_words
        .iter()
        .copied()
        .chain(local_parts)
        .chain(std::iter::once(SERVICE_NAME))
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .any(|word| normalize(word).to_lowercase() == lowered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_and_nfd_forms_measure_and_normalize_the_same() {
        let nfc = "caf\u{e9} au lait pour deux";
        let nfd = "cafe\u{301} au lait pour deux";
        assert_ne!(nfc, nfd);
        assert_eq!(normalize(nfc), normalize(nfd));
        assert_eq!(
            PasswordFacts::measure(nfc, &[]),
            PasswordFacts::measure(nfd, &[])
        );
        assert_eq!(PasswordFacts::measure(nfd, &[]).code_points, 22);
    }

    #[test]
    fn an_emoji_counts_as_one_code_point() {
        let facts = PasswordFacts::measure("🔒", &[]);
        assert_eq!(facts.code_points, 1);
    }

    #[test]
    fn a_common_password_is_blocklisted_whatever_its_case_or_width() {
        for candidate in ["password", "PassWord", "ｐａｓｓｗｏｒｄ"] {
            assert!(
                PasswordFacts::measure(candidate, &[]).blocklisted,
                "{candidate}"
            );
        }
    }

    #[test]
    fn only_the_whole_password_is_compared_with_the_blocklist() {
        let facts = PasswordFacts::measure("mypassword1xyz", &["alice", "alice@example.org"]);
        assert!(!facts.blocklisted);
    }

    #[test]
    fn the_username_email_its_local_part_and_the_service_name_are_blocklisted() {
        let context = ["Alice.Liddell", "alice.liddell@example.org"];
        for candidate in [
            "alice.liddell",
            "ALICE.LIDDELL@EXAMPLE.ORG",
            "Alice.Liddell",
            "KeyLedger",
        ] {
            assert!(
                PasswordFacts::measure(candidate, &context).blocklisted,
                "{candidate}"
            );
        }
        assert!(!PasswordFacts::measure("alice.liddell!", &context).blocklisted);
    }

    #[test]
    fn a_control_character_is_noticed() {
        assert!(PasswordFacts::measure("abc\u{0}def", &[]).control_character);
        assert!(PasswordFacts::measure("abc\ndef", &[]).control_character);
        assert!(!PasswordFacts::measure("abc def", &[]).control_character);
    }
}
