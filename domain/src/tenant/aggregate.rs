use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::commands::TenantCommand;
use super::events::{
    LockoutPolicyChanged, PasswordPolicyChanged, TenantCreated, TenantEvent,
    WebauthnSettingsChanged,
};
use crate::lockout::{LockoutPolicy, LockoutPolicyError};
use crate::mfa::{SettingsError, WebauthnSettings};
use crate::password::{PasswordPolicy, PasswordRejection};
use crate::values::{DisplayName, ValueError};

/// Why a tenant command was refused. Each variant has a stable code, see [`TenantError::code`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TenantError {
    #[error("tenant not found")]
    NotFound,
    #[error("tenant already exists")]
    AlreadyExists,
    #[error("invalid tenant name")]
    InvalidName(#[source] ValueError),
    #[error("invalid lockout policy")]
    InvalidLockoutPolicy(#[source] LockoutPolicyError),
    /// Always holds [`PasswordRejection::InvalidPolicy`], whose `why` names the broken bound.
    #[error("invalid password policy")]
    InvalidPasswordPolicy(#[source] PasswordRejection),
    /// The code of the inner error says what is wrong (relying party id, origin, name).
    #[error("invalid WebAuthn settings: {0}")]
    InvalidWebauthnSettings(#[source] SettingsError),
}

impl TenantError {
    /// A stable snake_case code for API answers; never changes once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "tenant_not_found",
            Self::AlreadyExists => "tenant_already_exists",
            Self::InvalidName(_) => "invalid_tenant_name",
            Self::InvalidLockoutPolicy(_) => "invalid_lockout_policy",
            Self::InvalidPasswordPolicy(_) => "invalid_password_policy",
            Self::InvalidWebauthnSettings(e) => e.code(),
        }
    }
}

/// A tenant as its events left it. Before `tenant.created` it does not exist and holds the
/// built-in default policies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// `Some` once created.
    id: Option<Uuid>,
    name: String,
    created_at: Option<DateTime<Utc>>,
    lockout_policy: LockoutPolicy,
    /// 0 while the built-in default applies; lock events name the version that decided them.
    lockout_policy_version: u64,
    password_policy: PasswordPolicy,
    webauthn: WebauthnSettings,
}

impl Tenant {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The nil id before creation.
    pub fn id(&self) -> Uuid {
        self.id.unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    pub fn lockout_policy(&self) -> &LockoutPolicy {
        &self.lockout_policy
    }

    pub fn lockout_policy_version(&self) -> u64 {
        self.lockout_policy_version
    }

    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.password_policy
    }

    pub fn webauthn_settings(&self) -> &WebauthnSettings {
        &self.webauthn
    }

    /// The relying party name shown by authenticators: the configured one or the tenant's.
    pub fn relying_party_name(&self) -> &str {
        self.webauthn
            .relying_party_name
            .as_deref()
            .unwrap_or(&self.name)
    }

    fn require_exists(&self) -> Result<(), TenantError> {
        if self.exists() {
            Ok(())
        } else {
            Err(TenantError::NotFound)
        }
    }
}

impl Aggregate for Tenant {
    const TYPE: &'static str = "tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = TenantError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            TenantCommand::Create {
                tenant_id,
                name,
                at,
            } => {
                if self.exists() {
                    return Err(TenantError::AlreadyExists);
                }
                let name = DisplayName::parse(&name).map_err(TenantError::InvalidName)?;
                let created = TenantCreated {
                    tenant_id,
                    name: name.into(),
                    at,
                };
                sink.write(TenantEvent::Created(created), self).await;
                Ok(())
            }
            TenantCommand::ChangeLockoutPolicy { policy, at } => {
                self.require_exists()?;
                policy
                    .validate()
                    .map_err(TenantError::InvalidLockoutPolicy)?;
                // Re-sending the current policy is not a change; a version bump would make
                // later lock events name a "new" policy that is the old one.
                if policy != self.lockout_policy {
                    let changed = LockoutPolicyChanged {
                        policy,
                        version: self.lockout_policy_version + 1,
                        at,
                    };
                    sink.write(TenantEvent::LockoutPolicyChanged(changed), self)
                        .await;
                }
                Ok(())
            }
            TenantCommand::ChangePasswordPolicy { policy, at } => {
                self.require_exists()?;
                policy
                    .validate()
                    .map_err(TenantError::InvalidPasswordPolicy)?;
                if policy != self.password_policy {
                    let changed = PasswordPolicyChanged { policy, at };
                    sink.write(TenantEvent::PasswordPolicyChanged(changed), self)
                        .await;
                }
                Ok(())
            }
            TenantCommand::ChangeWebauthnSettings { settings, at } => {
                self.require_exists()?;
                settings
                    .validate()
                    .map_err(TenantError::InvalidWebauthnSettings)?;
                if settings != self.webauthn {
                    let changed = WebauthnSettingsChanged { settings, at };
                    sink.write(TenantEvent::WebauthnSettingsChanged(changed), self)
                        .await;
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TenantEvent::Created(e) => {
                self.id = Some(e.tenant_id);
                self.name = e.name;
                self.created_at = Some(e.at);
            }
            TenantEvent::LockoutPolicyChanged(e) => {
                self.lockout_policy = e.policy;
                self.lockout_policy_version = e.version;
            }
            TenantEvent::PasswordPolicyChanged(e) => {
                self.password_policy = e.policy;
            }
            TenantEvent::WebauthnSettingsChanged(e) => {
                self.webauthn = e.settings;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use cqrs_es::DomainEvent;
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Tenant>;

    const TENANT: Uuid = Uuid::from_u128(0x7e4a47);

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_760_000_000 + seconds, 0).unwrap()
    }

    fn created() -> TenantEvent {
        TenantEvent::Created(TenantCreated {
            tenant_id: TENANT,
            name: "Acme".into(),
            at: at(0),
        })
    }

    fn stricter_lockout() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 5,
            ..LockoutPolicy::default()
        }
    }

    fn longer_passwords() -> PasswordPolicy {
        PasswordPolicy {
            min_length_single_factor: 20,
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn creating_a_tenant_records_its_trimmed_name() {
        Given::with(())
            .given_no_previous_events()
            .when(TenantCommand::Create {
                tenant_id: TENANT,
                name: "  Acme ".into(),
                at: at(0),
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_an_existing_tenant_is_refused() {
        Given::with(())
            .given(vec![created()])
            .when(TenantCommand::Create {
                tenant_id: TENANT,
                name: "Acme".into(),
                at: at(1),
            })
            .then_expect_error(TenantError::AlreadyExists);
    }

    #[test]
    fn a_tenant_without_a_name_is_refused() {
        let refused = Given::with(())
            .given_no_previous_events()
            .when(TenantCommand::Create {
                tenant_id: TENANT,
                name: " ".into(),
                at: at(0),
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(refused.code(), "invalid_tenant_name");
    }

    #[test]
    fn policies_of_a_missing_tenant_cannot_change() {
        Given::with(())
            .given_no_previous_events()
            .when(TenantCommand::ChangeLockoutPolicy {
                policy: stricter_lockout(),
                at: at(1),
            })
            .then_expect_error(TenantError::NotFound);
        Given::with(())
            .given_no_previous_events()
            .when(TenantCommand::ChangePasswordPolicy {
                policy: longer_passwords(),
                at: at(1),
            })
            .then_expect_error(TenantError::NotFound);
    }

    #[test]
    fn the_first_lockout_policy_change_is_version_one() {
        Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangeLockoutPolicy {
                policy: stricter_lockout(),
                at: at(1),
            })
            .then_expect_events(vec![TenantEvent::LockoutPolicyChanged(
                LockoutPolicyChanged {
                    policy: stricter_lockout(),
                    version: 1,
                    at: at(1),
                },
            )]);
    }

    #[test]
    fn each_lockout_policy_change_increments_the_version() {
        let first = TenantEvent::LockoutPolicyChanged(LockoutPolicyChanged {
            policy: stricter_lockout(),
            version: 1,
            at: at(1),
        });
        Given::with(())
            .given(vec![created(), first])
            .when(TenantCommand::ChangeLockoutPolicy {
                policy: LockoutPolicy::default(),
                at: at(2),
            })
            .then_expect_events(vec![TenantEvent::LockoutPolicyChanged(
                LockoutPolicyChanged {
                    policy: LockoutPolicy::default(),
                    version: 2,
                    at: at(2),
                },
            )]);
    }

    #[test]
    fn an_unchanged_lockout_policy_records_nothing() {
        Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangeLockoutPolicy {
                policy: LockoutPolicy::default(),
                at: at(1),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_invalid_lockout_policy_is_refused_with_the_reason() {
        Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangeLockoutPolicy {
                policy: LockoutPolicy {
                    max_failures: 101,
                    ..LockoutPolicy::default()
                },
                at: at(1),
            })
            .then_expect_error(TenantError::InvalidLockoutPolicy(
                LockoutPolicyError::MaxFailuresOutOfRange(101),
            ));
    }

    #[test]
    fn a_password_policy_change_is_recorded() {
        Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangePasswordPolicy {
                policy: longer_passwords(),
                at: at(1),
            })
            .then_expect_events(vec![TenantEvent::PasswordPolicyChanged(
                PasswordPolicyChanged {
                    policy: longer_passwords(),
                    at: at(1),
                },
            )]);
    }

    #[test]
    fn an_unchanged_password_policy_records_nothing() {
        Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangePasswordPolicy {
                policy: PasswordPolicy::default(),
                at: at(1),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_password_policy_below_nist_is_refused_with_the_reason() {
        let refused = Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangePasswordPolicy {
                policy: PasswordPolicy {
                    min_length_single_factor: 12,
                    ..PasswordPolicy::default()
                },
                at: at(1),
            })
            .inspect_result()
            .unwrap_err();
        let TenantError::InvalidPasswordPolicy(PasswordRejection::InvalidPolicy { why }) = refused
        else {
            panic!("expected an invalid password policy, got {refused:?}");
        };
        assert!(why.contains("min_length_single_factor"), "{why}");
    }

    #[test]
    fn the_state_follows_the_events() {
        let mut tenant = Tenant::default();
        assert!(!tenant.exists());
        assert_eq!(tenant.lockout_policy_version(), 0);
        for event in [
            created(),
            TenantEvent::LockoutPolicyChanged(LockoutPolicyChanged {
                policy: stricter_lockout(),
                version: 1,
                at: at(1),
            }),
            TenantEvent::PasswordPolicyChanged(PasswordPolicyChanged {
                policy: longer_passwords(),
                at: at(2),
            }),
        ] {
            tenant.apply(event);
        }
        assert!(tenant.exists());
        assert_eq!(tenant.id(), TENANT);
        assert_eq!(tenant.name(), "Acme");
        assert_eq!(tenant.created_at(), Some(at(0)));
        assert_eq!(tenant.lockout_policy(), &stricter_lockout());
        assert_eq!(tenant.lockout_policy_version(), 1);
        assert_eq!(tenant.password_policy(), &longer_passwords());
    }

    #[test]
    fn every_tenant_event_round_trips_through_json_under_its_type_name() {
        let events = [
            (created(), "tenant.created"),
            (
                TenantEvent::LockoutPolicyChanged(LockoutPolicyChanged {
                    policy: LockoutPolicy {
                        lock_seconds: None,
                        ..LockoutPolicy::default()
                    },
                    version: 3,
                    at: at(1),
                }),
                "tenant.lockout_policy.changed",
            ),
            (
                TenantEvent::PasswordPolicyChanged(PasswordPolicyChanged {
                    policy: longer_passwords(),
                    at: at(2),
                }),
                "tenant.password_policy.changed",
            ),
        ];
        for (event, type_name) in events {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], type_name);
            assert!(json["data"].is_object(), "{json}");
            assert_eq!(event.event_type(), type_name);
            assert_eq!(event.event_version(), "1");
            let back: TenantEvent = serde_json::from_value(json).unwrap();
            assert_eq!(back, event);
        }
    }

    fn webauthn_for_example() -> WebauthnSettings {
        use crate::mfa::{Origin, RelyingPartyId};
        WebauthnSettings {
            enabled: true,
            relying_party_id: Some(RelyingPartyId::parse("example.com").unwrap()),
            allowed_origins: vec![Origin::parse("https://auth.example.com").unwrap()],
            self_registration: true,
            ..WebauthnSettings::default()
        }
    }

    #[test]
    fn changing_webauthn_settings_records_them_whole() {
        Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangeWebauthnSettings {
                settings: webauthn_for_example(),
                at: at(1),
            })
            .then_expect_events(vec![TenantEvent::WebauthnSettingsChanged(
                WebauthnSettingsChanged {
                    settings: webauthn_for_example(),
                    at: at(1),
                },
            )]);
    }

    #[test]
    fn resending_the_same_webauthn_settings_records_nothing() {
        let changed = TenantEvent::WebauthnSettingsChanged(WebauthnSettingsChanged {
            settings: webauthn_for_example(),
            at: at(1),
        });
        Given::with(())
            .given(vec![created(), changed])
            .when(TenantCommand::ChangeWebauthnSettings {
                settings: webauthn_for_example(),
                at: at(2),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_relying_party_id_that_does_not_fit_the_origins_is_refused_with_its_reason() {
        use crate::mfa::RelyingPartyId;
        let mut settings = webauthn_for_example();
        settings.relying_party_id = Some(RelyingPartyId::parse("m.auth.example.com").unwrap());
        let refused = Given::with(())
            .given(vec![created()])
            .when(TenantCommand::ChangeWebauthnSettings {
                settings,
                at: at(1),
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(refused.code(), "invalid_relying_party_id");
        assert!(
            refused.to_string().contains("neither the host"),
            "{refused}"
        );
    }

    #[test]
    fn the_relying_party_name_defaults_to_the_tenant_name() {
        let mut tenant = Tenant::default();
        tenant.apply(created());
        assert_eq!(tenant.relying_party_name(), "Acme");
        let mut settings = webauthn_for_example();
        settings.relying_party_name = Some("Acme Login".into());
        tenant.apply(TenantEvent::WebauthnSettingsChanged(
            WebauthnSettingsChanged {
                settings,
                at: at(1),
            },
        ));
        assert_eq!(tenant.relying_party_name(), "Acme Login");
        assert_eq!(
            TenantEvent::WebauthnSettingsChanged(WebauthnSettingsChanged {
                settings: webauthn_for_example(),
                at: at(1)
            })
            .event_type(),
            "tenant.webauthn_settings.changed"
        );
    }
}
