//! The raw log over HTTP: `GET /api/v1/events` pages and the `/api/v1/events/stream` SSE feed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::audit_integrity::some_history;
use crate::{Backend, TestApp, app, on_both_backends};

on_both_backends!(
    the_event_feed_pages_the_raw_log_in_order_with_hashes,
    the_event_stream_follows_appends_and_resumes_after_the_last_event_id,
);

async fn the_event_feed_pages_the_raw_log_in_order_with_hashes(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let head = app.head().await;
    let mut all: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .admin(
                Method::GET,
                &format!("/api/v1/events?after={after}&limit=5"),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        let items = page["items"].as_array().unwrap().clone();
        assert!(items.len() <= 5);
        all.extend(items);
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    for pair in all.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    assert_eq!(all[0]["prev_hash"], "0".repeat(64));

    let anonymous = app
        .request(Method::GET, "/api/v1/events", None, None, &[])
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for bad in ["limit=0", "limit=1001", "after=-1", "after=x"] {
        let answer = app
            .admin(Method::GET, &format!("/api/v1/events?{bad}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

/// An open SSE connection, read message by message.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    async fn open(app: &TestApp, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request = app
            .client
            .get(format!("{}/api/v1/events/stream{query}", app.base))
            .bearer_auth(&app.admin_token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send().await.unwrap()
    }

    async fn connect(app: &TestApp, query: &str, last_event_id: Option<&str>) -> Feed {
        let response = Self::open(app, query, last_event_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Feed {
            response,
            buffer: String::new(),
        }
    }

    /// The next message's id, type and data (keep-alive comments are skipped).
    async fn next(&mut self) -> (u64, String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let message: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    message
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim_start().to_owned())
                };
                if let (Some(id), Some(event), Some(data)) =
                    (field("id:"), field("event:"), field("data:"))
                {
                    return (
                        id.parse().unwrap(),
                        event,
                        serde_json::from_str(&data).unwrap(),
                    );
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn the_event_stream_follows_appends_and_resumes_after_the_last_event_id(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let head = app.head().await;

    let mut feed = Feed::connect(&app, "", None).await;
    for expected in 1..=head {
        let (id, _, data) = feed.next().await;
        assert_eq!(id, expected);
        assert_eq!(data["position"].as_u64(), Some(expected));
    }
    // Caught up: a new append arrives on the open connection.
    let created = app.create_user("linus", None).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let (id, event, data) = feed.next().await;
    assert_eq!(id, head + 1);
    assert_eq!(event, "user.created");
    assert_eq!(data["type"], "user.created");
    drop(feed);

    // A client that saw `head` reconnects with Last-Event-ID and gets what came after.
    app.create_user("margaret", None).await;
    let mut resumed = Feed::connect(&app, "", Some(&head.to_string())).await;
    assert_eq!(resumed.next().await.0, head + 1);
    assert_eq!(resumed.next().await.0, head + 2);
    // The header wins over the query; the query alone starts there too.
    let mut both = Feed::connect(&app, "?after=1", Some(&(head + 1).to_string())).await;
    assert_eq!(both.next().await.0, head + 2);
    let mut from_query = Feed::connect(&app, "?after=3", None).await;
    assert_eq!(from_query.next().await.0, 4);

    let bad = Feed::open(&app, "", Some("yesterday")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let anonymous = app
        .request(Method::GET, "/api/v1/events/stream", None, None, &[])
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
