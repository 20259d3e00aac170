//! End-to-end tests: each starts the real `keyledger` binary on a free port against a fresh
//! database, and drives it over HTTP and the command line.

// Tests may unwrap: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit_export;
mod audit_feeds;
mod audit_history;
mod audit_integrity;
mod audit_rebuild;
mod bad_input;
mod configuration;
mod crash;
mod erasure;
mod lockout;
mod login;
mod mfa_password_reset;
mod replay;
mod secrets;
mod sessions;
mod users;
mod webauthn_browser;
mod webauthn_legacy;
mod webauthn_mfa;
mod webauthn_policies;
mod webhooks;

pub use keyledger_tests::{Backend, TestApp};

pub const BIN: &str = env!("CARGO_BIN_EXE_keyledger");

/// A password no blocklist holds, long enough for a password-only account.
pub const GOOD_PASSWORD: &str = "plum-orbit-cactus-harbor-42";

pub async fn app(backend: Backend) -> TestApp {
    TestApp::spawn(BIN, backend).await
}

/// Turns `async fn <name>(backend: Backend)` into the tests `<name>::sqlite` and
/// `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await;
                }
            }
        )+
    };
}
