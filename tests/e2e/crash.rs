//! kill -9 while clients write: every acknowledged write survives, the chain verifies, and
//! rebuilt views equal the live ones.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::Mutex;

use crate::{Backend, app, on_both_backends};

on_both_backends!(acknowledged_writes_survive_a_kill_during_writes);

async fn acknowledged_writes_survive_a_kill_during_writes(backend: Backend) {
    let mut app = app(backend).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = app.client.clone();
    let base = app.base.clone();
    let token = app.admin_token.clone();
    let mut writers = Vec::new();
    for writer in 0..8 {
        let client = client.clone();
        let base = base.clone();
        let token = token.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let username = format!("w{writer}n{n}");
                let sent = client
                    .post(format!("{base}/api/v1/users"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "username": username }))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == StatusCode::CREATED => {
                        acknowledged.lock().await.push(username)
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.kill().await;
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(acknowledged.len() > 8, "the writers got some work done");

    app.start().await;
    let head = app.head().await;
    let page = app.admin_read("/api/v1/users?limit=200", head).await.json();
    let mut present: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let next = app
            .admin_read(&format!("/api/v1/users?limit=200&cursor={c}"), head)
            .await
            .json();
        present.extend(
            next["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned()),
        );
        cursor = next["next_cursor"].as_str().map(str::to_owned);
    }
    for username in &acknowledged {
        assert!(
            present.contains(username),
            "{username} was acknowledged but is gone"
        );
    }

    let verified = app.replay(&["verify"]).await;
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // Every view, every row: rebuilt beside the live tables and compared.
    app.assert_rebuilt_views_match().await;
    let rebuilt = app.replay(&["rebuild"]).await;
    assert!(rebuilt.status.success());
}
