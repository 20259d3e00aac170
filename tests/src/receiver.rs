//! A real webhook receiver for the end-to-end tests: `tests/webhooks/receiver.py`, which
//! verifies each delivery with the `standardwebhooks` package from PyPI (an implementation
//! independent of ours) and records what it got.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();

fn webhooks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("webhooks")
}

/// The receiver's interpreter, with `standardwebhooks` installed (once per test run).
async fn python() -> &'static PathBuf {
    PYTHON
        .get_or_init(|| async {
            let output = Command::new(webhooks_dir().join("setup.sh"))
                .stderr(Stdio::inherit())
                .output()
                .await
                .expect("run tests/webhooks/setup.sh");
            assert!(output.status.success(), "tests/webhooks/setup.sh failed");
            PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
        })
        .await
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    /// Indexes of the configured secrets that verified it.
    pub verified_with: Vec<usize>,
    /// The status the receiver answered.
    pub status: u16,
    /// The body exactly as received.
    pub raw: String,
    pub payload: Value,
    /// What the body's published JSON Schema (`docs/schemas/`) found wrong with it, if anything.
    pub schema_errors: Option<String>,
}

pub struct Receiver {
    pub port: u16,
    child: Child,
    client: reqwest::Client,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on(0, &[]).await
    }

    /// On a given port (0: any free one), e.g. a port deliveries already fail to reach,
    /// verifying with `secrets` from its first request.
    pub async fn start_on(port: u16, secrets: &[&str]) -> Receiver {
        let mut child = Command::new(python().await)
            .arg(webhooks_dir().join("receiver.py"))
            .arg(port.to_string())
            .args(secrets)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the webhook receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver did not start")
            .unwrap()
            .expect("the receiver exited");
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .expect("the receiver prints its port");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Receiver {
            port,
            child,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Changes what the receiver verifies with and answers: any of `secrets`, `status`,
    /// `statuses` (answered first, one per delivery), `delay_ms`.
    pub async fn configure(&self, settings: Value) {
        let answer = self
            .client
            .post(self.url("/_control"))
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }

    pub async fn trust(&self, secrets: &[&str]) {
        self.configure(json!({ "secrets": secrets })).await;
    }

    pub async fn received(&self) -> Vec<Received> {
        let all: Value = self
            .client
            .get(self.url("/_received"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .map(|r| Received {
                webhook_id: r["webhook_id"].as_str().unwrap_or_default().to_owned(),
                timestamp: r["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_default(),
                signature: r["signature"].as_str().unwrap_or_default().to_owned(),
                verified_with: r["verified_with"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as usize)
                    .collect(),
                status: r["status"].as_u64().unwrap_or_default() as u16,
                raw: r["raw"].as_str().unwrap_or_default().to_owned(),
                payload: r["payload"].clone(),
                schema_errors: r["schema_errors"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// Waits (up to 60 s) until `done` holds for what was received, and returns it.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let received = self.received().await;
            if done(&received) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; received {} deliveries: {:?}",
                received.len(),
                received
                    .iter()
                    .map(|r| (r.payload["type"].clone(), r.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Positions of the deliveries answered with a 2xx, in arrival order.
pub fn accepted_positions(received: &[Received]) -> Vec<u64> {
    received
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .filter_map(|r| r.payload["position"].as_u64())
        .collect()
}
