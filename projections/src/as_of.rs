//! A user's state at a past moment, folded from the log with the users view's own fold, so it
//! is what the view showed when the log reached that point.

use chrono::{DateTime, Utc};
use keyledger_domain::user::UserEvent;
use keyledger_store::{EventLog, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::views::users::{UserRow, fold};
use crate::views::{decode, from_micros};

/// A point in the log's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Once the log reached this position (inclusive).
    Position(u64),
    /// At this time: every event recorded at or before it.
    Time(DateTime<Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// A log position (`42`) or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(position) = s.parse() {
            return Ok(Self::Position(position));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?} is neither a log position nor an RFC 3339 time"))
    }
}

/// The user's row as of `point`, and the time that point stands for (to judge whether a
/// timed lock still held). `None`: the user did not exist yet (or never did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAsOf {
    pub row: Option<UserRow>,
    pub at: DateTime<Utc>,
    /// The last log position at or before the point.
    pub position: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    #[error("position {asked} is beyond the log's head ({head})")]
    BeyondHead { asked: u64, head: u64 },
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl From<keyledger_store::StoreError> for AsOfError {
    fn from(e: keyledger_store::StoreError) -> Self {
        Self::Projection(e.into())
    }
}

pub async fn user_as_of(log: &EventLog, user_id: Uuid, point: AsOf) -> Result<UserAsOf, AsOfError> {
    let head = log.head().await?.map_or(0, |h| h.position);
    let (position, at) = match point {
        AsOf::Position(asked) if asked > head => {
            return Err(AsOfError::BeyondHead { asked, head });
        }
        AsOf::Position(0) => (0, DateTime::<Utc>::MIN_UTC),
        AsOf::Position(asked) => {
            let at = log
                .read_all(asked - 1, 1)
                .await?
                .first()
                .map_or(DateTime::<Utc>::MIN_UTC, |e| e.recorded_at);
            (asked, at)
        }
        AsOf::Time(at) => (head, at),
    };
    let stored = log
        .read_stream(&StreamId::new("user", user_id.to_string()))
        .await?;
    let events = log.reveal(stored).await?;
    let upto = events.iter().filter(|e| match point {
        AsOf::Position(p) => e.position <= p,
        AsOf::Time(t) => e.recorded_at <= t,
    });
    let row = fold_events(upto)?.map(as_stored);
    let position = match point {
        AsOf::Position(_) => position,
        // The last position recorded at or before the time, as far as this user is concerned.
        AsOf::Time(_) => row.as_ref().map_or(0, |r| r.position).min(position),
    };
    Ok(UserAsOf { row, at, position })
}

/// The view keeps times in microseconds; payloads carry nanoseconds.
fn as_stored(mut row: UserRow) -> UserRow {
    fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
        from_micros(t.timestamp_micros())
    }
    row.created_at = micros(row.created_at);
    row.last_login_at = row.last_login_at.map(micros);
    row.locked_until = row.locked_until.map(micros);
    row
}

/// Folds a user's events in order with the users view's fold.
pub fn fold_events<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
) -> Result<Option<UserRow>, ProjectionError> {
    let mut row = None;
    for event in events {
        fold(&mut row, &decode::<UserEvent>(event)?, event.position);
    }
    Ok(row)
}
