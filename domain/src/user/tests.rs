//! Given past events, when a command arrives, then these events (or this error): one test per
//! rule of the user aggregate, refusals included.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use uuid::Uuid;

use super::*;
use crate::lockout::LockoutPolicy;
use crate::mfa::MfaRequirement;
use crate::password::{HashParams, PasswordFacts, PasswordPolicy, PasswordRejection};
use crate::values::{DisplayName, Email, Username};

type Given = TestFramework<User>;

const USER: Uuid = Uuid::from_u128(0xa11ce);
const TENANT: Uuid = crate::DEFAULT_TENANT_ID;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + seconds, 0).unwrap()
}

fn attempt(n: u128) -> Uuid {
    Uuid::from_u128(0xa77e_0000 + n)
}

fn argon2id(m_cost_kib: u32) -> HashParams {
    HashParams {
        algorithm: "argon2id".into(),
        m_cost_kib,
        t_cost: 2,
        p_cost: 1,
    }
}

fn current_params() -> HashParams {
    argon2id(19_456)
}

fn proposal(candidate: &str) -> ProposedPassword {
    ProposedPassword {
        facts: PasswordFacts::measure(candidate, &["alice", "alice@example.org"]),
        hash: current_params(),
    }
}

fn strong_password() -> ProposedPassword {
    proposal("correct horse battery staple")
}

fn created() -> UserEvent {
    UserEvent::Created(UserCreated {
        user_id: USER,
        tenant_id: TENANT,
        username: "alice".into(),
        email: Some("alice@example.org".into()),
        display_name: Some("Alice Liddell".into()),
        at: at(0),
    })
}

fn password_set() -> UserEvent {
    UserEvent::PasswordSet(PasswordSet {
        hash: current_params(),
        at: at(0),
    })
}

/// A user who can log in with a password.
fn active_user() -> Vec<UserEvent> {
    vec![created(), password_set()]
}

fn with(mut events: Vec<UserEvent>, more: impl IntoIterator<Item = UserEvent>) -> Vec<UserEvent> {
    events.extend(more);
    events
}

fn login(n: u128, password_ok: bool, seconds: i64) -> UserCommand {
    login_under(n, password_ok, seconds, LockoutPolicy::default(), 0)
}

fn login_under(
    n: u128,
    password_ok: bool,
    seconds: i64,
    lockout: LockoutPolicy,
    lockout_version: u64,
) -> UserCommand {
    UserCommand::RecordLoginAttempt {
        attempt_id: attempt(n),
        identifier: "alice".into(),
        password_ok,
        rehash: None,
        lockout,
        lockout_version,
        tenant_mfa: MfaRequirement::Optional,
        at: at(seconds),
    }
}

fn failed(n: u128, reason: LoginFailureReason, seconds: i64) -> UserEvent {
    UserEvent::LoginFailed(LoginFailed {
        attempt_id: attempt(n),
        reason,
        identifier: "alice".into(),
        at: at(seconds),
    })
}

fn bad_password(n: u128, seconds: i64) -> UserEvent {
    failed(n, LoginFailureReason::BadPassword, seconds)
}

/// Bad passwords numbered `numbers`, attempt `n` at second `n`.
fn bad_passwords(numbers: std::ops::RangeInclusive<u128>) -> Vec<UserEvent> {
    numbers
        .map(|n| bad_password(n, i64::try_from(n).unwrap()))
        .collect()
}

fn succeeded(n: u128, seconds: i64) -> UserEvent {
    UserEvent::LoginSucceeded(LoginSucceeded {
        attempt_id: attempt(n),
        method: LoginMethod::Password,
        at: at(seconds),
    })
}

/// The lock the default policy (version 0) sets after attempts 1 to 10, at second 10.
fn locked_after_ten() -> UserEvent {
    UserEvent::Locked(AccountLocked {
        reason: LockReason::TooManyFailedAttempts,
        until: Some(at(10 + 1800)),
        failed_attempts: (1..=10).map(attempt).collect(),
        policy_version: 0,
        at: at(10),
    })
}

fn locked_user() -> Vec<UserEvent> {
    with(
        with(active_user(), bad_passwords(1..=10)),
        [locked_after_ten()],
    )
}

fn unlocked(by: UnlockedBy, seconds: i64) -> UserEvent {
    UserEvent::Unlocked(AccountUnlocked {
        by,
        at: at(seconds),
    })
}

fn rejected(by: PasswordChangeBy, reason: PasswordRejection, seconds: i64) -> UserEvent {
    UserEvent::PasswordRejected(PasswordRejected {
        by,
        reason,
        at: at(seconds),
    })
}

fn create(initial_password: Option<ProposedPassword>) -> UserCommand {
    UserCommand::Create {
        user_id: USER,
        tenant_id: TENANT,
        username: Username::parse("alice").unwrap(),
        email: Some(Email::parse("alice@example.org").unwrap()),
        display_name: Some(DisplayName::parse("Alice Liddell").unwrap()),
        initial_password,
        password_policy: PasswordPolicy::default(),
        at: at(0),
    }
}

fn set_password(candidate: &str, seconds: i64) -> UserCommand {
    UserCommand::SetPassword {
        proposal: proposal(candidate),
        policy: PasswordPolicy::default(),
        at: at(seconds),
    }
}

fn change_password(current_password_ok: bool, candidate: &str, seconds: i64) -> UserCommand {
    UserCommand::ChangePassword {
        current_password_ok,
        proposal: proposal(candidate),
        policy: PasswordPolicy::default(),
        at: at(seconds),
    }
}

fn externally_managed() -> UserEvent {
    UserEvent::PasswordManagementChanged(PasswordManagementChanged {
        externally_managed: true,
        at: at(1),
    })
}

// Creation.

#[test]
fn creating_a_user_records_who_they_are() {
    Given::with(())
        .given_no_previous_events()
        .when(create(None))
        .then_expect_events(vec![created()]);
}

#[test]
fn an_initial_password_is_set_with_the_user() {
    Given::with(())
        .given_no_previous_events()
        .when(create(Some(strong_password())))
        .then_expect_events(vec![created(), password_set()]);
}

#[test]
fn a_refused_initial_password_is_an_error_and_nothing_is_recorded() {
    Given::with(())
        .given_no_previous_events()
        .when(create(Some(proposal("short"))))
        .then_expect_error(UserError::PasswordRefused(PasswordRejection::TooShort {
            min_length: 15,
        }));
}

#[test]
fn an_initial_password_equal_to_the_email_is_refused() {
    Given::with(())
        .given_no_previous_events()
        .when(create(Some(proposal("ALICE@EXAMPLE.ORG"))))
        .then_expect_error(UserError::PasswordRefused(PasswordRejection::Blocklisted));
}

#[test]
fn creating_an_existing_user_is_refused() {
    Given::with(())
        .given(vec![created()])
        .when(create(None))
        .then_expect_error(UserError::AlreadyExists);
}

#[test]
fn commands_on_a_missing_user_are_refused() {
    let commands = [
        UserCommand::UpdateProfile {
            username: Some(Username::parse("bob").unwrap()),
            email: None,
            display_name: None,
            at: at(1),
        },
        UserCommand::Suspend { at: at(1) },
        UserCommand::Reactivate { at: at(1) },
        UserCommand::EndSessions { at: at(1) },
        set_password("correct horse battery staple", 1),
        change_password(true, "correct horse battery staple", 1),
        UserCommand::SetPasswordManagement {
            externally_managed: true,
            at: at(1),
        },
        login(1, false, 1),
        UserCommand::Unlock { at: at(1) },
    ];
    for command in commands {
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(UserError::NotFound);
    }
}

#[test]
fn errors_have_stable_codes() {
    assert_eq!(UserError::NotFound.code(), "user_not_found");
    assert_eq!(UserError::AlreadyExists.code(), "user_already_exists");
    assert_eq!(
        UserError::PasswordRefused(PasswordRejection::Blocklisted).code(),
        "password_refused"
    );
}

// Profile.

#[test]
fn a_profile_update_records_only_what_changed() {
    Given::with(())
        .given(vec![created()])
        .when(UserCommand::UpdateProfile {
            username: Some(Username::parse("alice").unwrap()),
            email: Some(Email::parse("alice@wonderland.example").unwrap()),
            display_name: Some(DisplayName::parse("Alice Liddell").unwrap()),
            at: at(1),
        })
        .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
            username: None,
            email: Some("alice@wonderland.example".into()),
            display_name: None,
            at: at(1),
        })]);
}

#[test]
fn a_change_of_case_in_the_username_is_a_change() {
    Given::with(())
        .given(vec![created()])
        .when(UserCommand::UpdateProfile {
            username: Some(Username::parse("Alice").unwrap()),
            email: None,
            display_name: None,
            at: at(1),
        })
        .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
            username: Some("Alice".into()),
            email: None,
            display_name: None,
            at: at(1),
        })]);
}

#[test]
fn a_profile_update_that_changes_nothing_records_nothing() {
    Given::with(())
        .given(vec![created()])
        .when(UserCommand::UpdateProfile {
            username: Some(Username::parse("alice").unwrap()),
            email: None,
            display_name: Some(DisplayName::parse("Alice Liddell").unwrap()),
            at: at(1),
        })
        .then_expect_events(vec![]);
}

// Erasure.

#[test]
fn erasing_a_user_is_recorded() {
    Given::with(())
        .given(vec![created()])
        .when(UserCommand::Erase { at: at(1) })
        .then_expect_events(vec![UserEvent::Erased(UserErased { at: at(1) })]);
}

#[test]
fn an_erased_user_takes_no_further_command() {
    let erased = || vec![created(), UserEvent::Erased(UserErased { at: at(1) })];
    Given::with(())
        .given(erased())
        .when(UserCommand::Suspend { at: at(2) })
        .then_expect_error(UserError::Erased);
    Given::with(())
        .given(erased())
        .when(UserCommand::Erase { at: at(2) })
        .then_expect_error(UserError::Erased);
    // Not even a login attempt: nothing more is recorded about an erased user.
    Given::with(())
        .given(erased())
        .when(login(1, true, 2))
        .then_expect_error(UserError::Erased);
}

#[test]
fn erasing_a_user_who_does_not_exist_is_refused() {
    Given::with(())
        .given_no_previous_events()
        .when(UserCommand::Erase { at: at(1) })
        .then_expect_error(UserError::NotFound);
}

#[test]
fn an_erased_user_keeps_no_personal_data_in_the_aggregate() {
    let mut user = User::default();
    user.apply(created());
    user.apply(UserEvent::Erased(UserErased { at: at(1) }));
    assert!(user.is_erased());
    let state = serde_json::to_string(&user).unwrap();
    assert!(!state.contains("alice"), "{state}");
}

// Signing out everywhere.

#[test]
fn an_admin_signing_a_user_out_everywhere_is_recorded_even_twice() {
    Given::with(())
        .given(vec![
            created(),
            UserEvent::SessionsEnded(SessionsEnded { at: at(1) }),
        ])
        .when(UserCommand::EndSessions { at: at(2) })
        .then_expect_events(vec![UserEvent::SessionsEnded(SessionsEnded { at: at(2) })]);
}

#[test]
fn an_erased_user_cannot_be_signed_out() {
    Given::with(())
        .given(vec![created(), UserEvent::Erased(UserErased { at: at(1) })])
        .when(UserCommand::EndSessions { at: at(2) })
        .then_expect_error(UserError::Erased);
}

#[test]
fn a_signed_out_user_logs_in_again_with_the_right_password() {
    let mut history = active_user();
    history.push(UserEvent::SessionsEnded(SessionsEnded { at: at(1) }));
    Given::with(())
        .given(history)
        .when(login(1, true, 2))
        .then_expect_events(vec![succeeded(1, 2)]);
}

// Suspension.

#[test]
fn suspending_an_active_user_is_recorded() {
    Given::with(())
        .given(vec![created()])
        .when(UserCommand::Suspend { at: at(1) })
        .then_expect_events(vec![UserEvent::Suspended(UserSuspended { at: at(1) })]);
}

#[test]
fn suspending_a_suspended_user_records_nothing() {
    Given::with(())
        .given(vec![
            created(),
            UserEvent::Suspended(UserSuspended { at: at(1) }),
        ])
        .when(UserCommand::Suspend { at: at(2) })
        .then_expect_events(vec![]);
}

#[test]
fn reactivating_a_suspended_user_is_recorded() {
    Given::with(())
        .given(vec![
            created(),
            UserEvent::Suspended(UserSuspended { at: at(1) }),
        ])
        .when(UserCommand::Reactivate { at: at(2) })
        .then_expect_events(vec![UserEvent::Reactivated(UserReactivated { at: at(2) })]);
}

#[test]
fn reactivating_an_active_user_records_nothing() {
    Given::with(())
        .given(vec![created()])
        .when(UserCommand::Reactivate { at: at(1) })
        .then_expect_events(vec![]);
}

// Passwords.

#[test]
fn an_admin_sets_a_password() {
    Given::with(())
        .given(vec![created()])
        .when(set_password("correct horse battery staple", 1))
        .then_expect_events(vec![UserEvent::PasswordSet(PasswordSet {
            hash: current_params(),
            at: at(1),
        })]);
}

#[test]
fn a_user_changes_their_password_by_proving_the_current_one() {
    Given::with(())
        .given(active_user())
        .when(change_password(true, "correct horse battery staple", 1))
        .then_expect_events(vec![UserEvent::PasswordChanged(PasswordChanged {
            hash: current_params(),
            at: at(1),
        })]);
}

#[test]
fn a_change_with_the_wrong_current_password_is_recorded_as_rejected() {
    Given::with(())
        .given(active_user())
        .when(change_password(false, "correct horse battery staple", 1))
        .then_expect_events(vec![rejected(
            PasswordChangeBy::User,
            PasswordRejection::CurrentPasswordWrong,
            1,
        )]);
}

#[test]
fn the_current_password_is_checked_before_the_new_one_is_judged() {
    // Judging first would tell someone who does not know the password about the policy.
    Given::with(())
        .given(active_user())
        .when(change_password(false, "short", 1))
        .then_expect_events(vec![rejected(
            PasswordChangeBy::User,
            PasswordRejection::CurrentPasswordWrong,
            1,
        )]);
}

#[test]
fn a_password_the_policy_refuses_is_recorded_as_rejected_with_the_reason() {
    Given::with(())
        .given(active_user())
        .when(set_password("fourteen chars", 1))
        .then_expect_events(vec![rejected(
            PasswordChangeBy::Admin,
            PasswordRejection::TooShort { min_length: 15 },
            1,
        )]);
    Given::with(())
        .given(active_user())
        .when(change_password(true, "1q2w3e4r5t6y7u8i9o0p", 1))
        .then_expect_events(vec![rejected(
            PasswordChangeBy::User,
            PasswordRejection::Blocklisted,
            1,
        )]);
}

#[test]
fn a_refused_password_leaves_the_current_one_in_place() {
    let mut user = User::default();
    for event in with(
        active_user(),
        [rejected(
            PasswordChangeBy::User,
            PasswordRejection::Blocklisted,
            1,
        )],
    ) {
        user.apply(event);
    }
    assert_eq!(user.password_hash_params(), Some(&current_params()));
}

#[test]
fn externally_managed_password_refuses_admin_and_user_changes_and_records_it() {
    let given = || with(active_user(), [externally_managed()]);
    Given::with(())
        .given(given())
        .when(set_password("correct horse battery staple", 2))
        .then_expect_events(vec![rejected(
            PasswordChangeBy::Admin,
            PasswordRejection::ExternallyManaged,
            2,
        )]);
    // Even a wrong current password is answered with the management, not the guess.
    Given::with(())
        .given(given())
        .when(change_password(false, "correct horse battery staple", 2))
        .then_expect_events(vec![rejected(
            PasswordChangeBy::User,
            PasswordRejection::ExternallyManaged,
            2,
        )]);
}

#[test]
fn handing_the_password_to_an_external_provider_is_recorded() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::SetPasswordManagement {
            externally_managed: true,
            at: at(1),
        })
        .then_expect_events(vec![externally_managed()]);
}

#[test]
fn unchanged_password_management_records_nothing() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::SetPasswordManagement {
            externally_managed: false,
            at: at(1),
        })
        .then_expect_events(vec![]);
    Given::with(())
        .given(with(active_user(), [externally_managed()]))
        .when(UserCommand::SetPasswordManagement {
            externally_managed: true,
            at: at(2),
        })
        .then_expect_events(vec![]);
}

// Logins.

#[test]
fn the_right_password_logs_in() {
    Given::with(())
        .given(active_user())
        .when(login(1, true, 1))
        .then_expect_events(vec![succeeded(1, 1)]);
}

#[test]
fn a_wrong_password_is_recorded_as_a_failure() {
    Given::with(())
        .given(active_user())
        .when(login(1, false, 1))
        .then_expect_events(vec![bad_password(1, 1)]);
}

#[test]
fn a_suspended_user_cannot_log_in_and_suspension_is_named_before_a_lock() {
    Given::with(())
        .given(with(
            locked_user(),
            [UserEvent::Suspended(UserSuspended { at: at(11) })],
        ))
        .when(login(11, true, 12))
        .then_expect_events(vec![failed(11, LoginFailureReason::Suspended, 12)]);
}

#[test]
fn an_externally_managed_password_cannot_be_used_to_log_in() {
    Given::with(())
        .given(with(active_user(), [externally_managed()]))
        .when(login(1, true, 2))
        .then_expect_events(vec![failed(1, LoginFailureReason::ExternallyManaged, 2)]);
}

#[test]
fn a_user_without_a_password_cannot_log_in() {
    Given::with(())
        .given(vec![created()])
        .when(login(1, true, 1))
        .then_expect_events(vec![failed(1, LoginFailureReason::NoPassword, 1)]);
}

#[test]
fn the_identifier_is_recorded_trimmed_and_bounded() {
    let typed = format!("  {}  ", "x".repeat(MAX_IDENTIFIER_CODE_POINTS + 10));
    let events = Given::with(())
        .given(active_user())
        .when(UserCommand::RecordLoginAttempt {
            attempt_id: attempt(1),
            identifier: typed,
            password_ok: false,
            rehash: None,
            lockout: LockoutPolicy::default(),
            lockout_version: 0,
            tenant_mfa: MfaRequirement::Optional,
            at: at(1),
        })
        .inspect_result()
        .unwrap();
    let [UserEvent::LoginFailed(failed)] = events.as_slice() else {
        panic!("expected one failed login, got {events:?}");
    };
    assert_eq!(failed.identifier, "x".repeat(MAX_IDENTIFIER_CODE_POINTS));
}

// Lockout.

#[test]
fn nine_bad_passwords_do_not_lock_the_account() {
    Given::with(())
        .given(with(active_user(), bad_passwords(1..=8)))
        .when(login(9, false, 9))
        .then_expect_events(vec![bad_password(9, 9)]);
}

#[test]
fn ten_bad_passwords_within_the_window_lock_the_account() {
    Given::with(())
        .given(with(active_user(), bad_passwords(1..=9)))
        .when(login(10, false, 10))
        .then_expect_events(vec![bad_password(10, 10), locked_after_ten()]);
}

#[test]
fn the_lock_names_the_failed_attempts_and_the_policy_version() {
    let strict = LockoutPolicy {
        enabled: true,
        max_failures: 3,
        window_seconds: 60,
        lock_seconds: None,
    };
    // Attempt 1 falls outside the 60-second window that ends at attempt 4, so 2, 3 and 4 lock.
    Given::with(())
        .given(with(
            active_user(),
            [bad_password(1, 0), bad_password(2, 30), bad_password(3, 50)],
        ))
        .when(login_under(4, false, 61, strict, 4))
        .then_expect_events(vec![
            bad_password(4, 61),
            UserEvent::Locked(AccountLocked {
                reason: LockReason::TooManyFailedAttempts,
                until: None,
                failed_attempts: vec![attempt(2), attempt(3), attempt(4)],
                policy_version: 4,
                at: at(61),
            }),
        ]);
}

#[test]
fn failures_outside_the_window_do_not_count() {
    // Attempt 1 at second 1 is 901 seconds before attempt 10: outside the 900-second window.
    Given::with(())
        .given(with(active_user(), bad_passwords(1..=9)))
        .when(login(10, false, 902))
        .then_expect_events(vec![bad_password(10, 902)]);
}

#[test]
fn a_failure_exactly_at_the_start_of_the_window_counts() {
    Given::with(())
        .given(with(active_user(), bad_passwords(1..=9)))
        .when(login(10, false, 901))
        .then_expect_events(vec![
            bad_password(10, 901),
            UserEvent::Locked(AccountLocked {
                reason: LockReason::TooManyFailedAttempts,
                until: Some(at(901 + 1800)),
                failed_attempts: (1..=10).map(attempt).collect(),
                policy_version: 0,
                at: at(901),
            }),
        ]);
}

#[test]
fn a_success_resets_the_failure_count() {
    Given::with(())
        .given(with(
            with(active_user(), bad_passwords(1..=9)),
            [succeeded(100, 20)],
        ))
        .when(login(101, false, 21))
        .then_expect_events(vec![bad_password(101, 21)]);
}

#[test]
fn a_disabled_lockout_never_locks() {
    let disabled = LockoutPolicy {
        enabled: false,
        ..LockoutPolicy::default()
    };
    Given::with(())
        .given(with(active_user(), bad_passwords(1..=50)))
        .when(login_under(51, false, 51, disabled, 1))
        .then_expect_events(vec![bad_password(51, 51)]);
}

#[test]
fn a_locked_account_refuses_the_right_password_and_the_lock_is_not_extended() {
    Given::with(())
        .given(locked_user())
        .when(login(11, true, 20))
        .then_expect_events(vec![failed(11, LoginFailureReason::Locked, 20)]);
}

#[test]
fn attempts_during_a_lock_do_not_count_towards_the_next_one() {
    // Nine refusals while locked, then one bad password after the lock ran out: no new lock.
    let during_lock = (11..=19).map(|n| failed(n, LoginFailureReason::Locked, 20));
    Given::with(())
        .given(with(locked_user(), during_lock))
        .when(login(20, false, 1810))
        .then_expect_events(vec![
            unlocked(UnlockedBy::Expiry, 1810),
            bad_password(20, 1810),
        ]);
}

#[test]
fn an_expired_lock_is_unlocked_at_the_next_attempt() {
    // Locked at second 10 for 1800 seconds: the unlock is dated at the lock's end, not the
    // attempt's, and the attempt then proceeds as usual.
    Given::with(())
        .given(locked_user())
        .when(login(11, true, 5000))
        .then_expect_events(vec![
            unlocked(UnlockedBy::Expiry, 1810),
            succeeded(11, 5000),
        ]);
}

#[test]
fn a_timed_lock_ends_exactly_at_its_until() {
    Given::with(())
        .given(locked_user())
        .when(login(11, true, 1809))
        .then_expect_events(vec![failed(11, LoginFailureReason::Locked, 1809)]);
    Given::with(())
        .given(locked_user())
        .when(login(11, true, 1810))
        .then_expect_events(vec![
            unlocked(UnlockedBy::Expiry, 1810),
            succeeded(11, 1810),
        ]);
}

#[test]
fn a_lock_without_an_end_holds_until_an_admin_unlocks() {
    let indefinite = UserEvent::Locked(AccountLocked {
        reason: LockReason::TooManyFailedAttempts,
        until: None,
        failed_attempts: (1..=10).map(attempt).collect(),
        policy_version: 2,
        at: at(10),
    });
    let a_year_later = 366 * 24 * 3600;
    Given::with(())
        .given(with(
            with(active_user(), bad_passwords(1..=10)),
            [indefinite],
        ))
        .when(login(11, true, a_year_later))
        .then_expect_events(vec![failed(11, LoginFailureReason::Locked, a_year_later)]);
}

#[test]
fn an_admin_unlocks_a_locked_account() {
    Given::with(())
        .given(locked_user())
        .when(UserCommand::Unlock { at: at(20) })
        .then_expect_events(vec![unlocked(UnlockedBy::Admin, 20)]);
}

#[test]
fn an_admin_unlock_of_a_lock_that_ran_out_unrecorded_is_the_admins() {
    Given::with(())
        .given(locked_user())
        .when(UserCommand::Unlock { at: at(9000) })
        .then_expect_events(vec![unlocked(UnlockedBy::Admin, 9000)]);
}

#[test]
fn unlocking_an_account_that_is_not_locked_records_nothing() {
    Given::with(())
        .given(with(active_user(), bad_passwords(1..=3)))
        .when(UserCommand::Unlock { at: at(20) })
        .then_expect_events(vec![]);
}

#[test]
fn after_an_unlock_failures_count_from_zero() {
    Given::with(())
        .given(with(locked_user(), [unlocked(UnlockedBy::Admin, 20)]))
        .when(login(11, false, 21))
        .then_expect_events(vec![bad_password(11, 21)]);
}

#[test]
fn a_lock_after_more_failures_than_remembered_names_the_latest_hundred() {
    // 150 failures while lockout was off; the aggregate keeps only the latest 100, which is all
    // that the strictest valid policy can ask for.
    let at_most = LockoutPolicy {
        max_failures: 100,
        window_seconds: 2_592_000,
        ..LockoutPolicy::default()
    };
    let events = Given::with(())
        .given(with(active_user(), bad_passwords(1..=150)))
        .when(login_under(151, false, 151, at_most, 7))
        .inspect_result()
        .unwrap();
    let [_, UserEvent::Locked(locked)] = events.as_slice() else {
        panic!("expected a failure and a lock, got {events:?}");
    };
    let expected: Vec<Uuid> = (52..=151).map(attempt).collect();
    assert_eq!(locked.failed_attempts, expected);
}

// Rehashing.

#[test]
fn a_login_with_newer_hash_parameters_records_the_rehash() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::RecordLoginAttempt {
            attempt_id: attempt(1),
            identifier: "alice".into(),
            password_ok: true,
            rehash: Some(argon2id(65_536)),
            lockout: LockoutPolicy::default(),
            lockout_version: 0,
            tenant_mfa: MfaRequirement::Optional,
            at: at(1),
        })
        .then_expect_events(vec![
            succeeded(1, 1),
            UserEvent::PasswordRehashed(PasswordRehashed {
                from: current_params(),
                to: argon2id(65_536),
                at: at(1),
            }),
        ]);
}

#[test]
fn a_rehash_with_the_same_parameters_records_nothing_more() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::RecordLoginAttempt {
            attempt_id: attempt(1),
            identifier: "alice".into(),
            password_ok: true,
            rehash: Some(current_params()),
            lockout: LockoutPolicy::default(),
            lockout_version: 0,
            tenant_mfa: MfaRequirement::Optional,
            at: at(1),
        })
        .then_expect_events(vec![succeeded(1, 1)]);
}

#[test]
fn a_failed_login_never_records_a_rehash() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::RecordLoginAttempt {
            attempt_id: attempt(1),
            identifier: "alice".into(),
            password_ok: false,
            rehash: Some(argon2id(65_536)),
            lockout: LockoutPolicy::default(),
            lockout_version: 0,
            tenant_mfa: MfaRequirement::Optional,
            at: at(1),
        })
        .then_expect_events(vec![bad_password(1, 1)]);
}

// Unknown users.

#[test]
fn an_attempt_on_an_unknown_name_is_a_failure_for_the_unknown_login_stream() {
    assert_eq!(unknown_login::STREAM_KIND, "unknown_login");
    assert_eq!(
        unknown_login::failed_attempt(attempt(1), String::from(" mallory "), at(1)),
        UserEvent::LoginFailed(LoginFailed {
            attempt_id: attempt(1),
            reason: LoginFailureReason::UnknownUser,
            identifier: "mallory".into(),
            at: at(1),
        })
    );
}

// State and storage.

#[test]
fn the_state_follows_the_events() {
    let mut user = User::default();
    assert!(!user.exists());
    let events = with(
        with(active_user(), [succeeded(1, 5)]),
        with(bad_passwords(2..=4), [locked_after_ten()]),
    );
    for event in events {
        user.apply(event);
    }
    assert!(user.exists());
    assert_eq!(user.id(), USER);
    assert_eq!(user.tenant_id(), TENANT);
    assert_eq!(user.username(), "alice");
    assert_eq!(user.email(), Some("alice@example.org"));
    assert_eq!(user.display_name(), Some("Alice Liddell"));
    assert_eq!(user.created_at(), Some(at(0)));
    assert_eq!(user.last_login_at(), Some(at(5)));
    assert_eq!(user.failed_count(), 3);
    assert!(user.has_password());
    assert_eq!(user.password_hash_params(), Some(&current_params()));
    assert!(!user.is_suspended());
    assert!(!user.password_externally_managed());
    assert!(!user.has_second_factor());
    assert_eq!(user.locked_until(), Some(at(1810)));
    assert!(user.is_locked_at(at(1809)));
    assert!(!user.is_locked_at(at(1810)));
    assert_eq!(user.lock().map(|lock| lock.policy_version), Some(0));

    user.apply(unlocked(UnlockedBy::Admin, 20));
    assert_eq!(user.lock(), None);
    assert_eq!(user.failed_count(), 0);
}

#[test]
fn a_lock_without_an_end_has_no_until_but_holds() {
    let mut user = User::default();
    let indefinite = UserEvent::Locked(AccountLocked {
        reason: LockReason::TooManyFailedAttempts,
        until: None,
        failed_attempts: vec![attempt(1)],
        policy_version: 1,
        at: at(1),
    });
    for event in with(active_user(), [bad_password(1, 1), indefinite]) {
        user.apply(event);
    }
    assert_eq!(user.locked_until(), None);
    assert!(user.is_locked_at(at(100 * 365 * 24 * 3600)));
}

#[test]
fn the_aggregate_round_trips_through_json_for_snapshots() {
    let mut user = User::default();
    for event in locked_user() {
        user.apply(event);
    }
    let json = serde_json::to_string(&user).unwrap();
    let back: User = serde_json::from_str(&json).unwrap();
    assert_eq!(back, user);
}

#[test]
fn every_user_event_round_trips_through_json_under_its_type_name() {
    let events = [
        (created(), "user.created"),
        (
            UserEvent::ProfileUpdated(ProfileUpdated {
                username: None,
                email: Some("a@b.example".into()),
                display_name: None,
                at: at(1),
            }),
            "user.profile.updated",
        ),
        (
            UserEvent::Suspended(UserSuspended { at: at(1) }),
            "user.suspended",
        ),
        (
            UserEvent::Reactivated(UserReactivated { at: at(1) }),
            "user.reactivated",
        ),
        (password_set(), "user.password.set"),
        (
            UserEvent::PasswordChanged(PasswordChanged {
                hash: current_params(),
                at: at(1),
            }),
            "user.password.changed",
        ),
        (
            rejected(
                PasswordChangeBy::User,
                PasswordRejection::TooShort { min_length: 15 },
                1,
            ),
            "user.password.rejected",
        ),
        (
            UserEvent::PasswordRehashed(PasswordRehashed {
                from: argon2id(19_456),
                to: argon2id(65_536),
                at: at(1),
            }),
            "user.password.rehashed",
        ),
        (externally_managed(), "user.password_management.changed"),
        (succeeded(1, 1), "user.login.succeeded"),
        (bad_password(1, 1), "user.login.failed"),
        (locked_after_ten(), "user.locked"),
        (unlocked(UnlockedBy::Expiry, 1), "user.unlocked"),
    ];
    for (event, type_name) in events {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], type_name);
        assert!(json["data"].is_object(), "{json}");
        assert_eq!(event.event_type(), type_name);
        assert_eq!(event.event_version(), "1");
        let back: UserEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn stored_enum_values_use_their_documented_spelling() {
    let by_user = serde_json::to_value(rejected(
        PasswordChangeBy::User,
        PasswordRejection::CurrentPasswordWrong,
        1,
    ))
    .unwrap();
    assert_eq!(by_user["data"]["by"], "self");
    assert_eq!(by_user["data"]["reason"]["code"], "current_password_wrong");
    let failure = serde_json::to_value(bad_password(1, 1)).unwrap();
    assert_eq!(failure["data"]["reason"], "bad_password");
    let lock = serde_json::to_value(locked_after_ten()).unwrap();
    assert_eq!(lock["data"]["reason"], "too_many_failed_attempts");
}
