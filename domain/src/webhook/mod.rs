//! A webhook subscription: where a downstream system wants events delivered, which ones, and
//! the version of the signing secret kept beside the log.

mod aggregate;
mod commands;
mod events;
mod patterns;
mod target;

#[cfg(test)]
mod tests;

pub use aggregate::{WebhookSubscription, WebhookSubscriptionError};
pub use commands::WebhookSubscriptionCommand;
pub use events::{
    DisableReason, RedeliveryRequested, SecretRotated, SubscriptionCreated, SubscriptionDeleted,
    SubscriptionDisabled, SubscriptionEnabled, SubscriptionResynced, SubscriptionUpdated,
    WebhookSubscriptionEvent,
};
pub use patterns::{EventTypePattern, EventTypePatterns, PatternError};
pub use target::{TargetUrl, TargetUrlError};
