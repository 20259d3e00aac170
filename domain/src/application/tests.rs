use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::mfa::{Attachment, UserVerification, WebauthnSettings, Workflow};

type Given = TestFramework<Application>;

const ID: Uuid = Uuid::from_u128(0xa991);
const TENANT: Uuid = Uuid::from_u128(0x7e4a47);

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + seconds, 0).unwrap()
}

fn created() -> ApplicationEvent {
    ApplicationEvent::Created(ApplicationCreated {
        application_id: ID,
        tenant_id: TENANT,
        name: "Mobile app".into(),
        at: at(0),
    })
}

fn overrides(bootstrap: WorkflowOverride, reauthentication: WorkflowOverride) -> WorkflowOverrides {
    WorkflowOverrides {
        bootstrap,
        reauthentication,
    }
}

#[test]
fn an_application_is_created_once_with_a_trimmed_name() {
    let create = |name: &str| ApplicationCommand::Create {
        application_id: ID,
        tenant_id: TENANT,
        name: name.into(),
        overrides: WorkflowOverrides::default(),
        at: at(0),
    };
    Given::with(())
        .given_no_previous_events()
        .when(create("  Mobile app "))
        .then_expect_events(vec![created()]);
    Given::with(())
        .given(vec![created()])
        .when(create("Mobile app"))
        .then_expect_error(ApplicationError::AlreadyExists);
    Given::with(())
        .given_no_previous_events()
        .when(create(" "))
        .then_expect_error(ApplicationError::InvalidName);
}

#[test]
fn overrides_given_at_creation_are_recorded_with_it() {
    let on = overrides(WorkflowOverride::On, WorkflowOverride::Inherit);
    Given::with(())
        .given_no_previous_events()
        .when(ApplicationCommand::Create {
            application_id: ID,
            tenant_id: TENANT,
            name: "Mobile app".into(),
            overrides: on,
            at: at(0),
        })
        .then_expect_events(vec![
            created(),
            ApplicationEvent::WorkflowOverridesChanged(WorkflowOverridesChanged {
                overrides: on,
                at: at(0),
            }),
        ]);
}

#[test]
fn changing_overrides_is_an_event_and_the_same_overrides_are_none() {
    let change = |o| ApplicationCommand::ChangeWorkflowOverrides {
        overrides: o,
        at: at(5),
    };
    let off = overrides(WorkflowOverride::Off, WorkflowOverride::Inherit);
    let changed = ApplicationEvent::WorkflowOverridesChanged(WorkflowOverridesChanged {
        overrides: off,
        at: at(5),
    });
    Given::with(())
        .given(vec![created()])
        .when(change(off))
        .then_expect_events(vec![changed.clone()]);
    Given::with(())
        .given(vec![created(), changed])
        .when(change(off))
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![created()])
        .when(change(WorkflowOverrides::default()))
        .then_expect_events(vec![]);
    Given::with(())
        .given_no_previous_events()
        .when(change(off))
        .then_expect_error(ApplicationError::NotFound);
}

#[test]
fn overrides_turn_workflows_on_or_off_and_keep_the_rest_of_the_tenant() {
    let workflow = |enabled| Workflow {
        enabled,
        attachment: Attachment::Platform,
        user_verification: UserVerification::Preferred,
    };
    let tenant = WebauthnSettings {
        enabled: true,
        bootstrap: workflow(false),
        reauthentication: workflow(true),
        debug: true,
        ..WebauthnSettings::default()
    };
    let inherited = WorkflowOverrides::default().apply(&tenant);
    assert_eq!(inherited, tenant);
    let flipped = overrides(WorkflowOverride::On, WorkflowOverride::Off).apply(&tenant);
    assert!(flipped.bootstrap.enabled);
    assert!(!flipped.reauthentication.enabled);
    assert_eq!(flipped.bootstrap.attachment, Attachment::Platform);
    assert_eq!(
        flipped.bootstrap.user_verification,
        UserVerification::Preferred
    );
    assert!(flipped.debug && flipped.enabled);
}
