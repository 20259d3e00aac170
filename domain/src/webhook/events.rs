use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::patterns::EventTypePatterns;
use super::target::TargetUrl;

/// Everything that happens to a webhook subscription. No event carries the signing secret:
/// only the version under which it is kept beside the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum WebhookSubscriptionEvent {
    #[serde(rename = "webhook.subscription.created")]
    Created(SubscriptionCreated),
    #[serde(rename = "webhook.subscription.updated")]
    Updated(SubscriptionUpdated),
    #[serde(rename = "webhook.subscription.enabled")]
    Enabled(SubscriptionEnabled),
    #[serde(rename = "webhook.subscription.disabled")]
    Disabled(SubscriptionDisabled),
    #[serde(rename = "webhook.subscription.deleted")]
    Deleted(SubscriptionDeleted),
    #[serde(rename = "webhook.subscription.secret_rotated")]
    SecretRotated(SecretRotated),
    #[serde(rename = "webhook.subscription.resynced")]
    Resynced(SubscriptionResynced),
    #[serde(rename = "webhook.redelivery.requested")]
    RedeliveryRequested(RedeliveryRequested),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionCreated {
    pub subscription_id: Uuid,
    pub tenant_id: Uuid,
    pub url: TargetUrl,
    pub event_types: EventTypePatterns,
    pub description: Option<String>,
    pub enabled: bool,
    pub secret_version: u32,
    pub at: DateTime<Utc>,
}

/// Only the fields that changed are present; `description: null` cleared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<TargetUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<EventTypePatterns>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schemars(with = "Option<String>")]
    pub description: Option<Option<String>>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionEnabled {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// An admin disabled it.
    Admin,
    /// The receiver answered 410 Gone.
    Gone,
    /// Deliveries kept being dead-lettered.
    Failing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionDisabled {
    pub reason: DisableReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionDeleted {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretRotated {
    pub secret_version: u32,
    pub previous_secret_version: u32,
    /// Until then deliveries carry a signature with each secret.
    pub previous_valid_until: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionResynced {
    pub after_position: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RedeliveryRequested {
    pub event_position: u64,
    pub at: DateTime<Utc>,
}

impl cqrs_es::DomainEvent for WebhookSubscriptionEvent {
    /// The serde type name; stored with each event and never changed once shipped.
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "webhook.subscription.created",
            Self::Updated(_) => "webhook.subscription.updated",
            Self::Enabled(_) => "webhook.subscription.enabled",
            Self::Disabled(_) => "webhook.subscription.disabled",
            Self::Deleted(_) => "webhook.subscription.deleted",
            Self::SecretRotated(_) => "webhook.subscription.secret_rotated",
            Self::Resynced(_) => "webhook.subscription.resynced",
            Self::RedeliveryRequested(_) => "webhook.redelivery.requested",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_SCHEMA_VERSION.to_owned()
    }
}

/// `Some(None)` must survive a round trip as an explicit `null`, distinct from an absent field.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Option<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}
