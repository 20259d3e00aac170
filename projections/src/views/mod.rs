//! One module per view.

pub mod applications;
pub mod audit;
pub mod mfa;
mod select;
pub mod users;

pub use applications::ApplicationsView;
pub use audit::AuditView;
pub use mfa::MfaView;
pub use users::UsersView;

use chrono::{DateTime, TimeZone, Utc};
use keyledger_store::RecordedEvent;
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;

use crate::error::ProjectionError;

/// Domain events are stored as type + data; this puts them back together.
pub(crate) fn decode<E: DeserializeOwned>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    let data: serde_json::Value =
        serde_json::from_str(&event.payload).map_err(|e| malformed(event, e))?;
    serde_json::from_value(serde_json::json!({ "type": event.event_type, "data": data }))
        .map_err(|e| malformed(event, e))
}

fn malformed(event: &RecordedEvent, e: serde_json::Error) -> ProjectionError {
    ProjectionError::Malformed {
        position: event.position,
        reason: e.to_string(),
    }
}

/// `count` bind parameters for a statement whose earlier parameters number `before`. SQLite
/// gets anonymous `?`: sqlx binds a named `$N` there by looking its name up in a list, which
/// makes a statement with thousands of parameters quadratic to bind. PostgreSQL needs `$N`.
pub(crate) fn placeholders(conn: &AnyConnection, before: usize, count: usize) -> String {
    let sqlite = conn.backend_name().eq_ignore_ascii_case("sqlite");
    (before + 1..=before + count)
        .map(|n| {
            if sqlite {
                "?".to_owned()
            } else {
                format!("${n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(v: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(v).single().unwrap_or_default()
}
