//! The raw log for pull and push consumers: `/api/v1/events` (pages) and
//! `/api/v1/events/stream` (Server-Sent Events, resumable with `Last-Event-ID`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use keyledger_store::{EventLog, RecordedEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{Admin, ApiQuery};
use crate::state::AppState;

/// Events read per query while streaming.
const STREAM_PAGE: u32 = 500;

/// An event as stored, with what its hash covers: the same shape as a line of
/// `keyledger replay export --format jsonl`, so a page saved line by line verifies offline.
pub use keyledger_store::ExportedEvent as EventBody;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events with a position above this one (default 0: from the start).
    pub after: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventBody>,
    /// Pass as `after` for the next page; null when the page reached the head.
    pub next_after: Option<u64>,
    /// The head position when the page was read.
    pub head: u64,
}

#[utoipa::path(get, path = "/api/v1/events", params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 400), (status = 401)),
    security(("admin" = [])), tag = "events")]
pub async fn list_events(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidParameter("limit must be 1 to 1000".into()));
    }
    let events = state.log.read_all(query.after.unwrap_or(0), limit).await?;
    let head = state.log.head().await?.map_or(0, |h| h.position);
    let last = events.last().map(|e| e.position);
    Ok(Json(EventPage {
        items: events.iter().map(EventBody::from).collect(),
        next_after: last.filter(|p| *p < head),
        head,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this position (default 0). A `Last-Event-ID` header wins over it.
    pub after: Option<u64>,
}

/// Every event from a position on, then each new one as it is appended. Each SSE message has
/// `id` = the position (so a reconnecting client resumes with `Last-Event-ID`), `event` =
/// the event type, and `data` = the event as in `GET /api/v1/events`.
#[utoipa::path(get, path = "/api/v1/events/stream", params(StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position")),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-Sent Events, one per log event, until the client disconnects"),
        (status = 400), (status = 401)),
    security(("admin" = [])), tag = "events")]
pub async fn stream_events(
    _admin: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::InvalidParameter("Last-Event-ID must be a position".into()))?,
        None => query.after.unwrap_or(0),
    };
    let follower = Follower {
        log: state.log.clone(),
        head: state.log.subscribe(),
        after,
        ready: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Reads the log from a position on, then waits for appends.
struct Follower {
    log: EventLog,
    head: watch::Receiver<u64>,
    after: u64,
    ready: VecDeque<RecordedEvent>,
}

impl Follower {
    /// The next SSE message; `None` ends the stream (the server is stopping, or the log
    /// cannot be read).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.after = event.position;
                return Some(to_sse(&event));
            }
            let page = match self.log.read_all(self.after, STREAM_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "event stream stopped: cannot read the log");
                    return None;
                }
            };
            if page.is_empty() {
                // Only wait when the known head is not past what was read.
                let known = *self.head.borrow_and_update();
                if known > self.after {
                    // Announced but not yet readable here (another connection's view of a
                    // commit): look again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else if self.head.changed().await.is_err() {
                    return None;
                }
            }
            self.ready.extend(page);
        }
    }
}

fn to_sse(event: &RecordedEvent) -> Event {
    let body = EventBody::from(event);
    let data = serde_json::to_string(&body).unwrap_or_default();
    Event::default()
        .id(event.position.to_string())
        .event(event.event_type.clone())
        .data(data)
}
