//! The most common passwords, refused whole (NIST SP 800-63B-4: compare against a blocklist of
//! commonly used or compromised values).
//!
//! `common-passwords.txt` is the list Django ships as
//! `django/contrib/auth/common-passwords.txt.gz` (Django 5.2.19): the 20,000 most common
//! passwords, compiled by Royce Williams
//! (<https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce>), lower-cased and
//! deduplicated with the order kept (19,640 entries remain). Copyright Django Software Foundation
//! and individual contributors, BSD-3-Clause: see `COMMON-PASSWORDS-LICENSE` beside this file.

use std::collections::HashSet;
use std::sync::LazyLock;

/// One lower-case password a line, most common first, no header.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common-passwords.txt")
        .lines()
        .filter(|line| !line.is_empty())
        .collect()
});

/// Whether `lowercased` (already NFKC-normalised and lower-cased) is a common password. Only the
/// whole string counts: a long passphrase that contains `password` is not weak for it.
pub(crate) fn is_common(lowercased: &str) -> bool {
    COMMON_PASSWORDS.contains(lowercased)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_at_least_ten_thousand_passwords() {
        assert!(
            COMMON_PASSWORDS.len() >= 10_000,
            "{}",
            COMMON_PASSWORDS.len()
        );
    }

    #[test]
    fn the_most_common_passwords_are_on_it_and_a_random_one_is_not() {
        assert!(is_common("123456"));
        assert!(is_common("password"));
        assert!(is_common("1q2w3e4r5t6y7u8i9o0p"));
        assert!(!is_common("correct horse battery staple 7"));
    }

    #[test]
    fn the_file_is_lower_case_so_lookups_can_be() {
        let file = include_str!("common-passwords.txt");
        assert!(file.lines().all(|line| line == line.to_lowercase()));
    }
}
