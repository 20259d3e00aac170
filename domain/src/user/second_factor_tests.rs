//! Given/when/then for second factors: registration, renames, removal and the lockout
//! warning, sign counts, TOTP steps and the login that a second factor completes.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use uuid::Uuid;

use super::*;
use crate::lockout::LockoutPolicy;
use crate::mfa::{CredentialActor, CredentialId, CredentialKind, CredentialLabel, MfaRequirement};
use crate::password::{HashParams, PasswordFacts, PasswordPolicy, PasswordRejection};

type Given = TestFramework<User>;

const USER: Uuid = Uuid::from_u128(0xa11ce);

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + seconds, 0).unwrap()
}

fn params() -> HashParams {
    HashParams {
        algorithm: "argon2id".into(),
        m_cost_kib: 19_456,
        t_cost: 2,
        p_cost: 1,
    }
}

fn active_user() -> Vec<UserEvent> {
    vec![
        UserEvent::Created(UserCreated {
            user_id: USER,
            tenant_id: crate::DEFAULT_TENANT_ID,
            username: "alice".into(),
            email: None,
            display_name: None,
            at: at(0),
        }),
        UserEvent::PasswordSet(PasswordSet {
            hash: params(),
            at: at(0),
        }),
    ]
}

fn key_id(n: u8) -> CredentialId {
    CredentialId::parse(&format!("{}{n:02}", "A".repeat(20))).unwrap()
}

fn admin() -> CredentialActor {
    CredentialActor::Admin {
        id: "bootstrap".into(),
    }
}

fn new_key(n: u8, kind: CredentialKind) -> NewCredential {
    NewCredential {
        credential_id: key_id(n),
        label: format!("key {n}"),
        kind,
        aaguid: Uuid::nil(),
        authenticator_name: None,
        transports: vec!["usb".into()],
        user_verified: true,
        backup_eligible: false,
        backed_up: false,
        sign_count: 0,
    }
}

fn registered(n: u8, by: CredentialActor) -> UserEvent {
    UserEvent::WebauthnRegistered(WebauthnRegistered {
        credential: new_key(n, CredentialKind::SecurityKey),
        registered_by: by,
        at: at(1),
    })
}

fn used(n: u8, sign_count: u32, seconds: i64) -> UserEvent {
    UserEvent::WebauthnUsed(WebauthnUsed {
        credential_id: key_id(n),
        sign_count,
        user_verified: true,
        backed_up: false,
        at: at(seconds),
    })
}

fn with(more: impl IntoIterator<Item = UserEvent>) -> Vec<UserEvent> {
    let mut events = active_user();
    events.extend(more);
    events
}

fn requirement(requirement: MfaRequirement) -> UserEvent {
    UserEvent::MfaRequirementChanged(MfaRequirementChanged {
        requirement: Some(requirement),
        at: at(1),
    })
}

fn remove(n: u8, confirm_lockout: bool, tenant_mfa: MfaRequirement) -> UserCommand {
    UserCommand::RemoveWebauthnCredential {
        credential_id: key_id(n),
        by: CredentialActor::User,
        confirm_lockout,
        tenant_mfa,
        at: at(5),
    }
}

fn webauthn_proof(n: u8, sign_count: u32) -> SecondFactorProof {
    SecondFactorProof::Webauthn {
        credential_id: key_id(n),
        sign_count,
        user_verified: true,
        backed_up: false,
    }
}

fn attempt() -> Uuid {
    Uuid::from_u128(0xa77e)
}

#[test]
fn registering_a_security_key_records_everything_but_the_public_key() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::RegisterWebauthnCredential {
            credential: new_key(1, CredentialKind::SecurityKey),
            by: CredentialActor::User,
            at: at(1),
        })
        .then_expect_events(vec![registered(1, CredentialActor::User)]);
}

#[test]
fn the_same_credential_cannot_be_registered_twice_for_a_user() {
    Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(UserCommand::RegisterWebauthnCredential {
            credential: new_key(1, CredentialKind::SecurityKey),
            by: admin(),
            at: at(2),
        })
        .then_expect_error(UserError::CredentialAlreadyRegistered);
}

#[test]
fn a_legacy_key_cannot_be_registered_only_imported() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::RegisterWebauthnCredential {
            credential: new_key(1, CredentialKind::Legacy),
            by: CredentialActor::User,
            at: at(1),
        })
        .then_expect_error(UserError::LegacyRegistrationRefused);
    Given::with(())
        .given(active_user())
        .when(UserCommand::ImportLegacyCredential {
            credential: new_key(1, CredentialKind::SecurityKey),
            by: admin(),
            at: at(1),
        })
        .then_expect_error(UserError::LegacyRegistrationRefused);
    Given::with(())
        .given(active_user())
        .when(UserCommand::ImportLegacyCredential {
            credential: new_key(1, CredentialKind::Legacy),
            by: admin(),
            at: at(1),
        })
        .then_expect_events(vec![UserEvent::WebauthnRegistered(WebauthnRegistered {
            credential: new_key(1, CredentialKind::Legacy),
            registered_by: admin(),
            at: at(1),
        })]);
}

#[test]
fn a_rename_records_the_old_and_the_new_label() {
    Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(UserCommand::RenameWebauthnCredential {
            credential_id: key_id(1),
            label: CredentialLabel::parse("Blue YubiKey").unwrap(),
            by: CredentialActor::User,
            at: at(2),
        })
        .then_expect_events(vec![UserEvent::WebauthnRenamed(WebauthnRenamed {
            credential_id: key_id(1),
            old_label: "key 1".into(),
            new_label: "Blue YubiKey".into(),
            by: CredentialActor::User,
            at: at(2),
        })]);
}

#[test]
fn a_user_cannot_rename_a_key_an_admin_registered_but_an_admin_can() {
    Given::with(())
        .given(with([registered(1, admin())]))
        .when(UserCommand::RenameWebauthnCredential {
            credential_id: key_id(1),
            label: CredentialLabel::parse("mine").unwrap(),
            by: CredentialActor::User,
            at: at(2),
        })
        .then_expect_error(UserError::CredentialRegisteredByAdmin);
    let events = Given::with(())
        .given(with([registered(1, admin())]))
        .when(UserCommand::RenameWebauthnCredential {
            credential_id: key_id(1),
            label: CredentialLabel::parse("theirs").unwrap(),
            by: admin(),
            at: at(2),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn renaming_or_removing_an_unknown_credential_is_refused() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::RenameWebauthnCredential {
            credential_id: key_id(9),
            label: CredentialLabel::parse("x").unwrap(),
            by: CredentialActor::User,
            at: at(2),
        })
        .then_expect_error(UserError::CredentialNotFound);
    Given::with(())
        .given(active_user())
        .when(remove(9, true, MfaRequirement::Optional))
        .then_expect_error(UserError::CredentialNotFound);
}

#[test]
fn removing_the_last_factor_of_a_user_who_must_use_mfa_needs_confirmation() {
    Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(remove(1, false, MfaRequirement::Required))
        .then_expect_error(UserError::LastFactorRemovalUnconfirmed);
    // The user's own requirement counts as much as the tenant's.
    Given::with(())
        .given(with([
            registered(1, CredentialActor::User),
            requirement(MfaRequirement::Required),
        ]))
        .when(remove(1, false, MfaRequirement::Optional))
        .then_expect_error(UserError::LastFactorRemovalUnconfirmed);
}

#[test]
fn a_confirmed_removal_of_the_last_factor_records_the_overridden_warning() {
    Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(remove(1, true, MfaRequirement::Required))
        .then_expect_events(vec![UserEvent::WebauthnRemoved(WebauthnRemoved {
            credential_id: key_id(1),
            label: "key 1".into(),
            kind: CredentialKind::SecurityKey,
            by: CredentialActor::User,
            lockout_warning_overridden: true,
            at: at(5),
        })]);
}

#[test]
fn removing_a_factor_that_is_not_the_last_or_not_required_needs_no_confirmation() {
    for (given, tenant) in [
        (
            with([
                registered(1, CredentialActor::User),
                registered(2, CredentialActor::User),
            ]),
            MfaRequirement::Required,
        ),
        (
            with([registered(1, CredentialActor::User)]),
            MfaRequirement::Optional,
        ),
    ] {
        let events = Given::with(())
            .given(given)
            .when(remove(1, false, tenant))
            .inspect_result()
            .unwrap();
        assert!(matches!(
            &events[..],
            [UserEvent::WebauthnRemoved(WebauthnRemoved {
                lockout_warning_overridden: false,
                ..
            })]
        ));
    }
}

#[test]
fn a_growing_sign_count_is_recorded_with_the_login_it_completes() {
    Given::with(())
        .given(with([registered(1, CredentialActor::User), used(1, 4, 2)]))
        .when(UserCommand::UseSecondFactor {
            proof: webauthn_proof(1, 5),
            login: Some((attempt(), LoginMethod::PasswordWebauthn)),
            at: at(3),
        })
        .then_expect_events(vec![
            used(1, 5, 3),
            UserEvent::LoginSucceeded(LoginSucceeded {
                attempt_id: attempt(),
                method: LoginMethod::PasswordWebauthn,
                at: at(3),
            }),
        ]);
}

#[test]
fn a_sign_count_that_goes_backwards_is_refused_as_a_possible_clone() {
    for presented in [4, 3] {
        Given::with(())
            .given(with([registered(1, CredentialActor::User), used(1, 4, 2)]))
            .when(UserCommand::UseSecondFactor {
                proof: webauthn_proof(1, presented),
                login: Some((attempt(), LoginMethod::PasswordWebauthn)),
                at: at(3),
            })
            .then_expect_events(vec![UserEvent::MfaFailed(MfaFailed {
                attempt_id: Some(attempt()),
                method: MfaMethod::Webauthn,
                reason: MfaFailureReason::SignCountRegressed,
                credential_id: Some(key_id(1)),
                at: at(3),
            })]);
    }
}

#[test]
fn authenticators_without_a_counter_may_report_zero_every_time() {
    let events = Given::with(())
        .given(with([registered(1, CredentialActor::User), used(1, 0, 2)]))
        .when(UserCommand::UseSecondFactor {
            proof: webauthn_proof(1, 0),
            login: None,
            at: at(3),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(events, vec![used(1, 0, 3)]);
}

#[test]
fn an_assertion_of_a_credential_the_user_does_not_hold_is_refused() {
    let events = Given::with(())
        .given(active_user())
        .when(UserCommand::UseSecondFactor {
            proof: webauthn_proof(7, 1),
            login: Some((attempt(), LoginMethod::PasswordWebauthn)),
            at: at(3),
        })
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [UserEvent::MfaFailed(MfaFailed {
            reason: MfaFailureReason::UnknownCredential,
            ..
        })]
    ));
}

#[test]
fn a_second_factor_does_not_complete_the_login_of_a_suspended_user() {
    let events = Given::with(())
        .given(with([
            registered(1, CredentialActor::User),
            UserEvent::Suspended(UserSuspended { at: at(2) }),
        ]))
        .when(UserCommand::UseSecondFactor {
            proof: webauthn_proof(1, 1),
            login: Some((attempt(), LoginMethod::PasswordWebauthn)),
            at: at(3),
        })
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [UserEvent::LoginFailed(LoginFailed {
            reason: LoginFailureReason::Suspended,
            ..
        })]
    ));
}

fn totp_added(step: u64) -> UserEvent {
    UserEvent::TotpAdded(TotpAdded { step, at: at(1) })
}

#[test]
fn totp_is_added_with_its_first_code_and_only_once() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::AddTotp {
            step: 100,
            at: at(1),
        })
        .then_expect_events(vec![totp_added(100)]);
    Given::with(())
        .given(with([totp_added(100)]))
        .when(UserCommand::AddTotp {
            step: 101,
            at: at(2),
        })
        .then_expect_error(UserError::TotpAlreadyEnrolled);
}

#[test]
fn a_totp_code_is_never_accepted_twice() {
    for step in [100, 99] {
        Given::with(())
            .given(with([totp_added(100)]))
            .when(UserCommand::UseSecondFactor {
                proof: SecondFactorProof::Totp { step },
                login: None,
                at: at(3),
            })
            .then_expect_events(vec![UserEvent::MfaFailed(MfaFailed {
                attempt_id: None,
                method: MfaMethod::Totp,
                reason: MfaFailureReason::TotpCodeReused,
                credential_id: None,
                at: at(3),
            })]);
    }
    Given::with(())
        .given(with([totp_added(100)]))
        .when(UserCommand::UseSecondFactor {
            proof: SecondFactorProof::Totp { step: 101 },
            login: None,
            at: at(3),
        })
        .then_expect_events(vec![UserEvent::TotpUsed(TotpUsed {
            step: 101,
            at: at(3),
        })]);
}

#[test]
fn removing_totp_follows_the_lockout_warning_rule() {
    Given::with(())
        .given(with([totp_added(100)]))
        .when(UserCommand::RemoveTotp {
            by: CredentialActor::User,
            confirm_lockout: false,
            tenant_mfa: MfaRequirement::Required,
            at: at(2),
        })
        .then_expect_error(UserError::LastFactorRemovalUnconfirmed);
    Given::with(())
        .given(with([totp_added(100)]))
        .when(UserCommand::RemoveTotp {
            by: admin(),
            confirm_lockout: true,
            tenant_mfa: MfaRequirement::Required,
            at: at(2),
        })
        .then_expect_events(vec![UserEvent::TotpRemoved(TotpRemoved {
            by: admin(),
            lockout_warning_overridden: true,
            at: at(2),
        })]);
    Given::with(())
        .given(active_user())
        .when(UserCommand::RemoveTotp {
            by: CredentialActor::User,
            confirm_lockout: true,
            tenant_mfa: MfaRequirement::Optional,
            at: at(2),
        })
        .then_expect_error(UserError::TotpNotEnrolled);
}

fn password_login(tenant_mfa: MfaRequirement) -> UserCommand {
    UserCommand::RecordLoginAttempt {
        attempt_id: attempt(),
        identifier: "alice".into(),
        password_ok: true,
        rehash: None,
        lockout: LockoutPolicy::default(),
        lockout_version: 0,
        tenant_mfa,
        at: at(4),
    }
}

#[test]
fn a_right_password_only_passes_the_first_factor_when_a_second_is_owed() {
    let first_factor = vec![UserEvent::FirstFactorPassed(FirstFactorPassed {
        attempt_id: attempt(),
        at: at(4),
    })];
    // The user holds a factor.
    Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(password_login(MfaRequirement::Optional))
        .then_expect_events(first_factor.clone());
    // The tenant requires MFA (the user has none yet: the API offers enrollment).
    Given::with(())
        .given(active_user())
        .when(password_login(MfaRequirement::Required))
        .then_expect_events(first_factor.clone());
    // The user's own requirement overrides the tenant's either way.
    Given::with(())
        .given(with([requirement(MfaRequirement::Required)]))
        .when(password_login(MfaRequirement::Optional))
        .then_expect_events(first_factor);
    Given::with(())
        .given(with([requirement(MfaRequirement::Optional)]))
        .when(password_login(MfaRequirement::Required))
        .then_expect_events(vec![UserEvent::LoginSucceeded(LoginSucceeded {
            attempt_id: attempt(),
            method: LoginMethod::Password,
            at: at(4),
        })]);
}

#[test]
fn a_second_factor_lowers_the_minimum_password_length() {
    let mut user = User::default();
    for event in with([registered(1, CredentialActor::User)]) {
        user.apply(event);
    }
    assert!(user.has_second_factor());
    let policy = PasswordPolicy::default();
    let facts = PasswordFacts::measure("nine-char", &[]);
    assert_eq!(policy.judge(&facts, user.has_second_factor()), Ok(()));
    assert!(matches!(
        policy.judge(&facts, false),
        Err(PasswordRejection::TooShort { .. })
    ));
    let events = Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(UserCommand::SetPassword {
            proposal: ProposedPassword {
                facts,
                hash: params(),
            },
            policy,
            at: at(2),
        })
        .inspect_result()
        .unwrap();
    assert!(matches!(&events[..], [UserEvent::PasswordSet(_)]));
}

#[test]
fn setting_the_user_requirement_records_only_changes() {
    Given::with(())
        .given(active_user())
        .when(UserCommand::SetMfaRequirement {
            requirement: Some(MfaRequirement::Required),
            at: at(1),
        })
        .then_expect_events(vec![requirement(MfaRequirement::Required)]);
    Given::with(())
        .given(with([requirement(MfaRequirement::Required)]))
        .when(UserCommand::SetMfaRequirement {
            requirement: Some(MfaRequirement::Required),
            at: at(2),
        })
        .then_expect_events(vec![]);
}

#[test]
fn second_factor_events_have_their_catalog_names_and_round_trip() {
    let events = [
        (registered(1, admin()), "user.webauthn.registered"),
        (
            UserEvent::WebauthnRenamed(WebauthnRenamed {
                credential_id: key_id(1),
                old_label: "a".into(),
                new_label: "b".into(),
                by: CredentialActor::User,
                at: at(1),
            }),
            "user.webauthn.renamed",
        ),
        (used(1, 3, 1), "user.webauthn.used"),
        (totp_added(3), "user.totp.added"),
        (
            requirement(MfaRequirement::Required),
            "user.mfa_requirement.changed",
        ),
    ];
    for (event, name) in events {
        assert_eq!(event.event_type(), name);
        let json = serde_json::to_value(&event).unwrap();
        assert!(!json.to_string().contains("secret"));
        let back: UserEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
    let json = serde_json::to_value(registered(1, admin())).unwrap();
    assert_eq!(json["data"]["registered_by"]["kind"], "admin");
    assert_eq!(json["data"]["kind"], "security_key");
}

fn reset(candidate: &str, second_factor_ok: bool) -> UserCommand {
    UserCommand::ResetPassword {
        proposal: ProposedPassword {
            facts: PasswordFacts::measure(candidate, &["alice"]),
            hash: params(),
        },
        policy: PasswordPolicy::default(),
        second_factor_ok,
        at: at(9),
    }
}

#[test]
fn a_reset_needs_the_second_factor_of_a_user_who_holds_one() {
    Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(reset("correct horse battery staple", false))
        .then_expect_error(UserError::SecondFactorRequired);
    Given::with(())
        .given(with([registered(1, CredentialActor::User)]))
        .when(reset("correct horse battery staple", true))
        .then_expect_events(vec![UserEvent::PasswordReset(PasswordReset {
            hash: params(),
            second_factor_verified: true,
            at: at(9),
        })]);
    Given::with(())
        .given(active_user())
        .when(reset("correct horse battery staple", false))
        .then_expect_events(vec![UserEvent::PasswordReset(PasswordReset {
            hash: params(),
            second_factor_verified: false,
            at: at(9),
        })]);
}

#[test]
fn a_reset_password_is_judged_by_the_policy_and_a_refusal_recorded() {
    let events = Given::with(())
        .given(active_user())
        .when(reset("short", false))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [UserEvent::PasswordRejected(PasswordRejected {
            by: PasswordChangeBy::Reset,
            ..
        })]
    ));
}

fn mfa_failure(seconds: i64) -> UserCommand {
    UserCommand::RecordMfaFailure {
        attempt_id: Some(attempt()),
        method: MfaMethod::Totp,
        reason: MfaFailureReason::Refused,
        credential_id: None,
        lockout: LockoutPolicy {
            max_failures: 3,
            ..LockoutPolicy::default()
        },
        lockout_version: 2,
        at: at(seconds),
    }
}

#[test]
fn wrong_second_factors_after_a_right_password_count_towards_the_lockout() {
    let failed = |seconds| {
        UserEvent::MfaFailed(MfaFailed {
            attempt_id: Some(attempt()),
            method: MfaMethod::Totp,
            reason: MfaFailureReason::Refused,
            credential_id: None,
            at: at(seconds),
        })
    };
    let passed = UserEvent::FirstFactorPassed(FirstFactorPassed {
        attempt_id: attempt(),
        at: at(1),
    });
    // The right password in between does not reset the count: only a full login does.
    let events = Given::with(())
        .given(with([
            totp_added(1),
            passed.clone(),
            failed(2),
            passed,
            failed(3),
        ]))
        .when(mfa_failure(4))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], failed(4));
    assert!(matches!(
        &events[1],
        UserEvent::Locked(AccountLocked {
            policy_version: 2,
            ..
        })
    ));
    // Two failures are not three.
    let events = Given::with(())
        .given(with([totp_added(1), failed(2)]))
        .when(mfa_failure(4))
        .inspect_result()
        .unwrap();
    assert_eq!(events, vec![failed(4)]);
}
