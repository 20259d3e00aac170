use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::commands::WebhookSubscriptionCommand;
use super::events::{
    DisableReason, RedeliveryRequested, SecretRotated, SubscriptionCreated, SubscriptionDeleted,
    SubscriptionDisabled, SubscriptionEnabled, SubscriptionResynced, SubscriptionUpdated,
    WebhookSubscriptionEvent,
};
use super::patterns::{EventTypePatterns, PatternError};
use super::target::{TargetUrl, TargetUrlError};

const MAX_DESCRIPTION_CHARS: usize = 500;

/// Why a subscription command was refused. Each variant has a stable code, see
/// [`WebhookSubscriptionError::code`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WebhookSubscriptionError {
    #[error("webhook subscription not found")]
    NotFound,
    #[error("webhook subscription already exists")]
    AlreadyExists,
    #[error(transparent)]
    InvalidUrl(TargetUrlError),
    #[error(transparent)]
    InvalidEventTypes(PatternError),
    #[error(
        "the description must be at most {MAX_DESCRIPTION_CHARS} characters without control characters"
    )]
    InvalidDescription,
    #[error("position {position} is beyond the log's head {head}")]
    PositionBeyondHead { position: u64, head: u64 },
    #[error("position 0 names no event")]
    NoSuchPosition,
    #[error("a rotated secret's grace period must end in the future")]
    GraceInPast,
}

impl WebhookSubscriptionError {
    /// A stable snake_case code for API answers; never changes once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "webhook_subscription_not_found",
            Self::AlreadyExists => "webhook_subscription_exists",
            Self::InvalidUrl(_) => "invalid_webhook_url",
            Self::InvalidEventTypes(_) => "invalid_event_types",
            Self::InvalidDescription => "invalid_description",
            Self::PositionBeyondHead { .. } | Self::NoSuchPosition => "invalid_position",
            Self::GraceInPast => "invalid_grace_period",
        }
    }

    /// Whether the request itself was malformed (400) rather than refused by state (404/409).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::NotFound | Self::AlreadyExists)
    }
}

/// A subscription as its events left it. Deleted subscriptions answer as not found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    id: Option<Uuid>,
    tenant_id: Uuid,
    url: Option<TargetUrl>,
    event_types: Option<EventTypePatterns>,
    description: Option<String>,
    enabled: bool,
    disabled_reason: Option<DisableReason>,
    secret_version: u32,
    deleted: bool,
}

impl WebhookSubscription {
    pub fn exists(&self) -> bool {
        self.id.is_some() && !self.deleted
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn disabled_reason(&self) -> Option<DisableReason> {
        self.disabled_reason
    }

    /// The version under which the current signing secret is kept beside the log.
    pub fn secret_version(&self) -> u32 {
        self.secret_version
    }

    fn require_exists(&self) -> Result<(), WebhookSubscriptionError> {
        if self.exists() {
            Ok(())
        } else {
            Err(WebhookSubscriptionError::NotFound)
        }
    }
}

fn parse_description(raw: Option<String>) -> Result<Option<String>, WebhookSubscriptionError> {
    let Some(raw) = raw else { return Ok(None) };
    let trimmed = raw.trim();
    if trimmed.chars().count() > MAX_DESCRIPTION_CHARS || trimmed.chars().any(char::is_control) {
        return Err(WebhookSubscriptionError::InvalidDescription);
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

fn parse_url(raw: &str) -> Result<TargetUrl, WebhookSubscriptionError> {
    TargetUrl::parse(raw).map_err(WebhookSubscriptionError::InvalidUrl)
}

fn parse_types(raw: &[String]) -> Result<EventTypePatterns, WebhookSubscriptionError> {
    EventTypePatterns::parse(raw).map_err(WebhookSubscriptionError::InvalidEventTypes)
}

fn existing_position(position: u64, head: u64) -> Result<(), WebhookSubscriptionError> {
    if position > head {
        Err(WebhookSubscriptionError::PositionBeyondHead { position, head })
    } else {
        Ok(())
    }
}

impl Aggregate for WebhookSubscription {
    const TYPE: &'static str = "webhook_subscription";
    type Command = WebhookSubscriptionCommand;
    type Event = WebhookSubscriptionEvent;
    type Error = WebhookSubscriptionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use WebhookSubscriptionCommand as C;
        use WebhookSubscriptionEvent as E;
        match command {
            C::Create {
                subscription_id,
                tenant_id,
                url,
                event_types,
                description,
                enabled,
                at,
            } => {
                if self.id.is_some() {
                    return Err(WebhookSubscriptionError::AlreadyExists);
                }
                let created = SubscriptionCreated {
                    subscription_id,
                    tenant_id,
                    url: parse_url(&url)?,
                    event_types: parse_types(&event_types)?,
                    description: parse_description(description)?,
                    enabled,
                    secret_version: 1,
                    at,
                };
                sink.write(E::Created(created), self).await;
            }
            C::Update {
                url,
                event_types,
                description,
                at,
            } => {
                self.require_exists()?;
                let url = url.map(|u| parse_url(&u)).transpose()?;
                let event_types = event_types.map(|t| parse_types(&t)).transpose()?;
                let description = description.map(parse_description).transpose()?;
                let updated = SubscriptionUpdated {
                    url: url.filter(|u| Some(u) != self.url.as_ref()),
                    event_types: event_types.filter(|t| Some(t) != self.event_types.as_ref()),
                    description: description.filter(|d| *d != self.description),
                    at,
                };
                if updated.url.is_some()
                    || updated.event_types.is_some()
                    || updated.description.is_some()
                {
                    sink.write(E::Updated(updated), self).await;
                }
            }
            C::Enable { at } => {
                self.require_exists()?;
                if !self.enabled {
                    sink.write(E::Enabled(SubscriptionEnabled { at }), self)
                        .await;
                }
            }
            C::Disable { reason, detail, at } => {
                self.require_exists()?;
                if self.enabled {
                    let disabled = SubscriptionDisabled { reason, detail, at };
                    sink.write(E::Disabled(disabled), self).await;
                }
            }
            C::Delete { at } => {
                self.require_exists()?;
                sink.write(E::Deleted(SubscriptionDeleted { at }), self)
                    .await;
            }
            C::RotateSecret {
                previous_valid_until,
                at,
            } => {
                self.require_exists()?;
                if previous_valid_until < at {
                    return Err(WebhookSubscriptionError::GraceInPast);
                }
                let rotated = SecretRotated {
                    secret_version: self.secret_version + 1,
                    previous_secret_version: self.secret_version,
                    previous_valid_until,
                    at,
                };
                sink.write(E::SecretRotated(rotated), self).await;
            }
            C::Resync {
                after_position,
                head,
                at,
            } => {
                self.require_exists()?;
                existing_position(after_position, head)?;
                let resynced = SubscriptionResynced { after_position, at };
                sink.write(E::Resynced(resynced), self).await;
            }
            C::RequestRedelivery {
                event_position,
                head,
                at,
            } => {
                self.require_exists()?;
                if event_position == 0 {
                    return Err(WebhookSubscriptionError::NoSuchPosition);
                }
                existing_position(event_position, head)?;
                let requested = RedeliveryRequested { event_position, at };
                sink.write(E::RedeliveryRequested(requested), self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use WebhookSubscriptionEvent as E;
        match event {
            E::Created(e) => {
                self.id = Some(e.subscription_id);
                self.tenant_id = e.tenant_id;
                self.url = Some(e.url);
                self.event_types = Some(e.event_types);
                self.description = e.description;
                self.enabled = e.enabled;
                self.disabled_reason = (!e.enabled).then_some(DisableReason::Admin);
                self.secret_version = e.secret_version;
            }
            E::Updated(e) => {
                if let Some(url) = e.url {
                    self.url = Some(url);
                }
                if let Some(types) = e.event_types {
                    self.event_types = Some(types);
                }
                if let Some(description) = e.description {
                    self.description = description;
                }
            }
            E::Enabled(_) => {
                self.enabled = true;
                self.disabled_reason = None;
            }
            E::Disabled(e) => {
                self.enabled = false;
                self.disabled_reason = Some(e.reason);
            }
            E::Deleted(_) => {
                self.deleted = true;
                self.enabled = false;
            }
            E::SecretRotated(e) => self.secret_version = e.secret_version,
            E::Resynced(_) | E::RedeliveryRequested(_) => {}
        }
    }
}
