use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;

type Given = TestFramework<WebhookSubscription>;

const ID: Uuid = Uuid::from_u128(0x3e6b);
const TENANT: Uuid = Uuid::from_u128(0x7e4a47);

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + seconds, 0).unwrap()
}

fn create(url: &str, types: &[&str]) -> WebhookSubscriptionCommand {
    WebhookSubscriptionCommand::Create {
        subscription_id: ID,
        tenant_id: TENANT,
        url: url.into(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        description: Some("  CRM sync ".into()),
        enabled: true,
        at: at(0),
    }
}

fn created() -> WebhookSubscriptionEvent {
    WebhookSubscriptionEvent::Created(SubscriptionCreated {
        subscription_id: ID,
        tenant_id: TENANT,
        url: TargetUrl::parse("https://hooks.example.com/in").unwrap(),
        event_types: EventTypePatterns::parse(&["user.login.*"]).unwrap(),
        description: Some("CRM sync".into()),
        enabled: true,
        secret_version: 1,
        at: at(0),
    })
}

fn disabled(reason: DisableReason) -> WebhookSubscriptionEvent {
    WebhookSubscriptionEvent::Disabled(SubscriptionDisabled {
        reason,
        detail: None,
        at: at(5),
    })
}

#[test]
fn creation_records_the_normalised_subscription_with_secret_version_one() {
    Given::with(())
        .given_no_previous_events()
        .when(create("https://Hooks.example.com/in", &["user.login.*"]))
        .then_expect_events(vec![created()]);
}

#[test]
fn creation_refuses_a_bad_url_bad_types_and_a_second_create() {
    Given::with(())
        .given_no_previous_events()
        .when(create("ftp://example.com", &["user.login.*"]))
        .then_expect_error(WebhookSubscriptionError::InvalidUrl(TargetUrlError::Scheme));
    Given::with(())
        .given_no_previous_events()
        .when(create("https://example.com", &[]))
        .then_expect_error(WebhookSubscriptionError::InvalidEventTypes(
            PatternError::Empty,
        ));
    Given::with(())
        .given(vec![created()])
        .when(create("https://example.com", &["*"]))
        .then_expect_error(WebhookSubscriptionError::AlreadyExists);
}

#[test]
fn an_update_records_only_what_changed() {
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::Update {
            url: Some("https://hooks.example.com/in".into()),
            event_types: Some(vec!["user.created".into()]),
            description: Some(None),
            at: at(1),
        })
        .then_expect_events(vec![WebhookSubscriptionEvent::Updated(
            SubscriptionUpdated {
                url: None,
                event_types: Some(EventTypePatterns::parse(&["user.created"]).unwrap()),
                description: Some(None),
                at: at(1),
            },
        )]);
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::Update {
            url: Some("https://hooks.example.com/in".into()),
            event_types: None,
            description: None,
            at: at(1),
        })
        .then_expect_events(vec![]);
}

#[test]
fn disabling_twice_records_once_and_enabling_clears_the_reason() {
    Given::with(())
        .given(vec![created(), disabled(DisableReason::Gone)])
        .when(WebhookSubscriptionCommand::Disable {
            reason: DisableReason::Failing,
            detail: None,
            at: at(6),
        })
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![created(), disabled(DisableReason::Gone)])
        .when(WebhookSubscriptionCommand::Enable { at: at(6) })
        .then_expect_events(vec![WebhookSubscriptionEvent::Enabled(
            SubscriptionEnabled { at: at(6) },
        )]);
}

#[test]
fn a_deleted_subscription_is_not_found() {
    let deleted = WebhookSubscriptionEvent::Deleted(SubscriptionDeleted { at: at(2) });
    Given::with(())
        .given(vec![created(), deleted])
        .when(WebhookSubscriptionCommand::Enable { at: at(3) })
        .then_expect_error(WebhookSubscriptionError::NotFound);
}

#[test]
fn rotation_bumps_the_secret_version_and_needs_a_future_grace_end() {
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::RotateSecret {
            previous_valid_until: at(3600),
            at: at(10),
        })
        .then_expect_events(vec![WebhookSubscriptionEvent::SecretRotated(
            SecretRotated {
                secret_version: 2,
                previous_secret_version: 1,
                previous_valid_until: at(3600),
                at: at(10),
            },
        )]);
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::RotateSecret {
            previous_valid_until: at(9),
            at: at(10),
        })
        .then_expect_error(WebhookSubscriptionError::GraceInPast);
}

#[test]
fn resync_and_redelivery_must_name_a_position_the_log_has() {
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::Resync {
            after_position: 0,
            head: 40,
            at: at(1),
        })
        .then_expect_events(vec![WebhookSubscriptionEvent::Resynced(
            SubscriptionResynced {
                after_position: 0,
                at: at(1),
            },
        )]);
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::Resync {
            after_position: 41,
            head: 40,
            at: at(1),
        })
        .then_expect_error(WebhookSubscriptionError::PositionBeyondHead {
            position: 41,
            head: 40,
        });
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::RequestRedelivery {
            event_position: 0,
            head: 40,
            at: at(1),
        })
        .then_expect_error(WebhookSubscriptionError::NoSuchPosition);
    Given::with(())
        .given(vec![created()])
        .when(WebhookSubscriptionCommand::RequestRedelivery {
            event_position: 7,
            head: 40,
            at: at(1),
        })
        .then_expect_events(vec![WebhookSubscriptionEvent::RedeliveryRequested(
            RedeliveryRequested {
                event_position: 7,
                at: at(1),
            },
        )]);
}

#[test]
fn the_description_round_trips_an_explicit_clear() {
    let updated = WebhookSubscriptionEvent::Updated(SubscriptionUpdated {
        url: None,
        event_types: None,
        description: Some(None),
        at: at(1),
    });
    let json = serde_json::to_value(&updated).unwrap();
    assert_eq!(json["data"]["description"], serde_json::Value::Null);
    assert!(
        json["data"]
            .as_object()
            .unwrap()
            .contains_key("description")
    );
    assert_eq!(
        serde_json::from_value::<WebhookSubscriptionEvent>(json).unwrap(),
        updated
    );
}
