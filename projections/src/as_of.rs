//! A user's state at a past moment, folded from the log with the users and MFA views' own
//! folds, so it is what the views showed when the log reached that point, and with the user
//! aggregate's, for the credentials the user held then.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use keyledger_domain::user::{User, UserEvent};
use keyledger_store::{EventLog, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::views::mfa::{self, MfaRow};
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
#[derive(Debug, Clone, PartialEq)]
pub struct UserAsOf {
    pub row: Option<UserRow>,
    /// The MFA view's row for the user then: factor counts, TOTP, requirement, last use.
    pub mfa: Option<MfaRow>,
    /// The user as their aggregate stood then: their WebAuthn credentials and TOTP state.
    pub user: User,
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
    let mut stored = log
        .read_stream(&StreamId::new("user", user_id.to_string()))
        .await?;
    // Only what the fold needs is revealed.
    stored.retain(|e| match point {
        AsOf::Position(p) => e.position <= p,
        AsOf::Time(t) => e.recorded_at <= t,
    });
    let events = log.reveal(stored).await?;
    let (row, mfa, user) = fold_all(user_id, &events)?;
    let row = row.map(as_stored);
    let mfa = mfa.map(|mut m| {
        m.last_mfa_at = m.last_mfa_at.map(|t| from_micros(t.timestamp_micros()));
        m
    });
    let position = match point {
        AsOf::Position(_) => position,
        // The last position recorded at or before the time, as far as this user is concerned.
        AsOf::Time(_) => row.as_ref().map_or(0, |r| r.position).min(position),
    };
    Ok(UserAsOf {
        row,
        mfa,
        user,
        at,
        position,
    })
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

/// The users view's row, the MFA view's row (absent until a factor-related event, as in the
/// view) and the aggregate, folded from the same events, each decoded once.
fn fold_all(
    user_id: Uuid,
    events: &[RecordedEvent],
) -> Result<(Option<UserRow>, Option<MfaRow>, User), ProjectionError> {
    let mut row: Option<UserRow> = None;
    let mut mfa_row: Option<MfaRow> = None;
    let mut user = User::default();
    for event in events {
        let decoded = decode::<UserEvent>(event)?;
        fold(&mut row, &decoded, event.position);
        if mfa::concerns_mfa(&decoded) {
            let mfa_row = mfa_row.get_or_insert_with(|| MfaRow {
                user_id,
                ..MfaRow::default()
            });
            mfa::fold(mfa_row, &decoded);
        }
        user.apply(decoded);
    }
    Ok((row, mfa_row, user))
}
