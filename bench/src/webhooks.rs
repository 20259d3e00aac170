//! Webhook deliveries per second from the real server to a receiver on loopback, with one and
//! with 20 subscriptions, and the lag from append to receipt; beside the rate of raw POSTs of
//! the same bodies to the same receiver (one client, and 20 at once), measured in the same run.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use chrono::{DateTime, Utc};
use keyledger_store::{Database, EventLog};
use serde_json::json;
use tokio::task::JoinSet;

use crate::report::{self, Table, per_second, progress};
use crate::scratch::{Backend, Places};
use crate::server::{self, ADMIN_TOKEN, Server, ServerOptions};
use crate::workload;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Events in the backlog each subscription is resynced over.
    #[arg(long, default_value_t = 5000)]
    pub events: u64,
    /// Events created through the API, one at a time, for the lag figures.
    #[arg(long, default_value_t = 300)]
    pub lag_events: u64,
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
    #[command(flatten)]
    pub server: ServerOptions,
}

/// What the receiver saw: arrivals, and each one's lag behind the event's recorded time.
#[derive(Default)]
struct Seen {
    count: u64,
    lags: Vec<Duration>,
}

type Receiver = Arc<Mutex<Seen>>;

async fn receive(State(seen): State<Receiver>, body: Bytes) -> &'static str {
    let now = Utc::now();
    let time = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["time"].as_str().map(str::to_owned))
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
    if let Ok(mut seen) = seen.lock() {
        seen.count += 1;
        if let Some(time) = time {
            seen.lags.push(
                (now - time.with_timezone(&Utc))
                    .to_std()
                    .unwrap_or_default(),
            );
        }
    }
    "{}"
}

async fn start_receiver() -> anyhow::Result<(String, Receiver)> {
    let seen = Receiver::default();
    let app = axum::Router::new()
        .route("/{path}", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, seen))
}

fn reset(seen: &Receiver) {
    if let Ok(mut seen) = seen.lock() {
        *seen = Seen::default();
    }
}

fn count(seen: &Receiver) -> u64 {
    seen.lock().map(|s| s.count).unwrap_or(0)
}

pub async fn run(options: &Options, places: &Places) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.events > 0 && options.lag_events > 0,
        "counts must be positive"
    );
    let bin = options.server.binary().await?;
    let busy = report::cpu_busy().await;
    let scratch = places.fresh(options.backend).await?;
    let log_path = scratch
        .dir()
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join(format!("server-{}.log", std::process::id()));
    let (receiver_base, seen) = start_receiver().await?;

    progress(format!(
        "appending a backlog of {} user.created events",
        options.events
    ));
    let log = EventLog::open(Database::connect(&scratch.url).await?).await?;
    let now = Utc::now();
    workload::load(&log, options.events, |n| workload::new_user(n, 0, now)).await?;
    let sample_body = log
        .read_all(0, 1)
        .await?
        .first()
        .map(|e| e.payload.len())
        .unwrap_or(200);
    drop(log);

    let server = Server::start_with_env(
        &bin,
        &scratch.url,
        &log_path,
        &[("KEYLEDGER_WEBHOOK_ALLOW", "loopback,http")],
    )
    .await?;
    let client = server::client()?;
    let mut rows = Vec::new();
    for subscriptions in [1_u64, 20] {
        reset(&seen);
        let elapsed = backlog(
            &server,
            &client,
            &receiver_base,
            &seen,
            subscriptions,
            options.events,
        )
        .await?;
        let delivered = options.events * subscriptions;
        let raw = raw_posts(
            &client,
            &receiver_base,
            subscriptions,
            delivered.min(20_000),
            sample_body,
        )
        .await?;
        rows.push((subscriptions, report::rate(delivered, elapsed), raw));
    }
    reset(&seen);
    let lags = lag(&server, &client, &receiver_base, &seen, options.lag_events).await?;
    server.stop().await?;
    scratch.remove().await?;
    if options.backend == Backend::Sqlite {
        let _ = std::fs::remove_file(&log_path);
    }

    let mut table = Table::new(
        format!(
            "Webhook delivery on {} (loopback receiver)",
            options.backend
        ),
        &[
            "subscriptions",
            "delivered/s",
            "raw POSTs/s (same receiver)",
            "share of raw",
        ],
    );
    for (subscriptions, rate, raw) in rows {
        table.row(vec![
            subscriptions.to_string(),
            per_second(rate),
            per_second(raw),
            format!("{:.0} %", 100.0 * rate / raw),
        ]);
    }
    table.note(format!(
        "{} events resynced to each subscription; each delivery is signed, posted, recorded as an attempt and moves the durable cursor. Raw: the same number of POSTs, one client per subscription, no signing or recording.",
        options.events
    ));
    table.note(report::load_note(busy));
    table.print();
    let mut lag_table = Table::new(
        "Webhook lag from append to receipt",
        &["events", "p50", "p99", "max"],
    );
    lag_table.row(vec![
        lags.len().to_string(),
        report::millis(report::percentile(&lags, 0.50)),
        report::millis(report::percentile(&lags, 0.99)),
        report::millis(lags.last().copied().unwrap_or_default()),
    ]);
    lag_table.note("Users created through the API one at a time, one subscription; lag = receipt time minus the event's recorded time.");
    lag_table.print();
    Ok(())
}

async fn subscribe(server: &Server, client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let created: serde_json::Value = client
        .post(server.url("/api/v1/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "url": url, "event_types": ["user.created"] }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    created["id"]
        .as_str()
        .map(str::to_owned)
        .context("no subscription id")
}

async fn admin_post(
    server: &Server,
    client: &reqwest::Client,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    client
        .post(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Subscribes `subscriptions` receivers and resyncs each over the backlog; the time until the
/// receiver got every event once per subscription.
async fn backlog(
    server: &Server,
    client: &reqwest::Client,
    receiver: &str,
    seen: &Receiver,
    subscriptions: u64,
    events: u64,
) -> anyhow::Result<Duration> {
    progress(format!(
        "{subscriptions} subscription(s), resynced over {events} events"
    ));
    let mut ids = Vec::new();
    for n in 0..subscriptions {
        ids.push(subscribe(server, client, &format!("{receiver}/s{n}")).await?);
    }
    let started = Instant::now();
    for id in &ids {
        admin_post(
            server,
            client,
            &format!("/api/v1/webhooks/{id}/resync"),
            json!({ "after_position": 0 }),
        )
        .await?;
    }
    let want = events * subscriptions;
    while count(seen) < want {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "deliveries stalled at {} of {want}",
            count(seen)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    for id in &ids {
        client
            .delete(server.url(&format!("/api/v1/webhooks/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(elapsed)
}

/// POSTs of `body_len`-byte bodies to the receiver, `clients` at once, `total` in all.
async fn raw_posts(
    client: &reqwest::Client,
    receiver: &str,
    clients: u64,
    total: u64,
    body_len: usize,
) -> anyhow::Result<f64> {
    let body = Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(body_len + 400)));
    let per_client = total / clients;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 0..clients {
        let (client, body, url) = (client.clone(), body.clone(), format!("{receiver}/raw{n}"));
        tasks.spawn(async move {
            for _ in 0..per_client {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?
                    .error_for_status()?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(report::rate(per_client * clients, started.elapsed()))
}

async fn lag(
    server: &Server,
    client: &reqwest::Client,
    receiver: &str,
    seen: &Receiver,
    events: u64,
) -> anyhow::Result<Vec<Duration>> {
    progress(format!(
        "lag: {events} users created through the API, one at a time"
    ));
    subscribe(server, client, &format!("{receiver}/lag")).await?;
    // Let the new subscription's worker start before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reset(seen);
    for n in 0..events {
        admin_post(
            server,
            client,
            "/api/v1/users",
            json!({ "username": format!("lag{n}") }),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    while count(seen) < events {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "lag deliveries stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lags = seen.lock().map(|s| s.lags.clone()).unwrap_or_default();
    lags.sort();
    Ok(lags)
}
