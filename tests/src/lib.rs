//! The end-to-end harness: [`TestApp::spawn`] starts the real `keyledger` binary on a free
//! port against a fresh SQLite file or a fresh PostgreSQL database, with typed helpers for the
//! HTTP API. Logs are silent unless `KEYLEDGER_TEST_LOG` is set.

// Test support: a failed set-up should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod authenticators;
pub mod browser;
pub mod receiver;

use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub async fn fresh_database(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => keyledger_store::testing::fresh_sqlite_url(),
        Backend::Postgres => keyledger_store::testing::fresh_postgres_url().await,
    }
}

pub struct TestApp {
    pub base: String,
    pub admin_token: String,
    pub database_url: String,
    pub bin: String,
    extra_env: Vec<(String, String)>,
    /// What the server printed on stdout before it listened, at its latest start.
    pub startup_output: Vec<String>,
    /// Where the server's log lines go (unless `KEYLEDGER_TEST_LOG` sends them to the terminal).
    pub log_path: std::path::PathBuf,
    child: Option<Child>,
    pub client: reqwest::Client,
}

/// An HTTP answer with its body read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The `position` a command answered with.
    pub fn position(&self) -> u64 {
        let json = self.json();
        json["position"].as_u64().unwrap_or(0)
    }
}

impl TestApp {
    pub async fn spawn(bin: &str, backend: Backend) -> TestApp {
        Self::spawn_with(bin, backend, &[]).await
    }

    pub async fn spawn_with(bin: &str, backend: Backend, env: &[(&str, &str)]) -> TestApp {
        let database_url = fresh_database(backend).await;
        let admin_token = format!("test-admin-{}", uuid::Uuid::now_v7().simple());
        Self::spawn_configured(bin, database_url, admin_token, env).await
    }

    /// A server started without `KEYLEDGER_ADMIN_TOKEN`, as an operator's first start.
    pub async fn spawn_without_admin_token(bin: &str, backend: Backend) -> TestApp {
        let database_url = fresh_database(backend).await;
        Self::spawn_configured(bin, database_url, String::new(), &[]).await
    }

    /// A second server node on an existing database.
    pub async fn spawn_on(bin: &str, database_url: &str, admin_token: &str) -> TestApp {
        Self::spawn_on_with(bin, database_url, admin_token, &[]).await
    }

    pub async fn spawn_on_with(
        bin: &str,
        database_url: &str,
        admin_token: &str,
        env: &[(&str, &str)],
    ) -> TestApp {
        Self::spawn_configured(bin, database_url.to_owned(), admin_token.to_owned(), env).await
    }

    async fn spawn_configured(
        bin: &str,
        database_url: String,
        admin_token: String,
        env: &[(&str, &str)],
    ) -> TestApp {
        let mut app = TestApp {
            base: String::new(),
            admin_token,
            database_url,
            bin: bin.to_owned(),
            extra_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            startup_output: Vec::new(),
            log_path: std::env::temp_dir().join(format!(
                "keyledger-test-{}.log",
                uuid::Uuid::now_v7().simple()
            )),
            child: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        app.start().await;
        app
    }

    /// Starts (or restarts) the server on the same database.
    pub async fn start(&mut self) {
        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(&self.database_url)
            .env_remove("KEYLEDGER_ADMIN_TOKEN")
            .env("KEYLEDGER_LOG", "debug")
            .env_remove("KEYLEDGER_DATABASE_URL")
            .env_remove("KEYLEDGER_LISTEN")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("KEYLEDGER_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log_path)
                    .expect("open the server log file");
                Stdio::from(log)
            })
            .kill_on_drop(true);
        // An empty admin token starts the server without one, as on a first install.
        if !self.admin_token.is_empty() {
            command.env("KEYLEDGER_ADMIN_TOKEN", &self.admin_token);
        }
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start keyledger");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(address) = line.strip_prefix("keyledger listening on ") {
                    return address.trim().to_owned();
                }
                printed.push(line);
            }
            panic!("keyledger exited before listening");
        })
        .await
        .expect("keyledger did not start within 60 s");
        self.startup_output = printed;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.base = base;
        self.child = Some(child);
    }

    /// `kill -9`: no shutdown, no flush beyond what was committed.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill");
            let _ = child.wait().await;
        }
    }

    pub async fn restart_after_kill(&mut self) {
        self.kill().await;
        self.start().await;
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut builder = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = bearer {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = builder.send().await.expect("send request");
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.expect("read body").to_vec(),
        }
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let token = self.admin_token.clone();
        self.request(method, path, Some(&token), body.as_ref(), &[])
            .await
    }

    /// An admin read that waits for the views to reach `position`.
    pub async fn admin_read(&self, path: &str, position: u64) -> Answer {
        let token = self.admin_token.clone();
        let position = position.to_string();
        self.request(
            Method::GET,
            path,
            Some(&token),
            None,
            &[("x-keyledger-min-position", &position)],
        )
        .await
    }

    pub async fn create_user(&self, username: &str, password: Option<&str>) -> Answer {
        let mut body =
            serde_json::json!({ "username": username, "email": format!("{username}@example.com") });
        if let Some(password) = password {
            body["password"] = Value::from(password);
        }
        self.admin(Method::POST, "/api/v1/users", Some(body)).await
    }

    pub async fn login(&self, username: &str, password: &str) -> Answer {
        let body = serde_json::json!({ "username": username, "password": password });
        self.request(Method::POST, "/api/v1/login", None, Some(&body), &[])
            .await
    }

    pub async fn set_lockout(&self, policy: Value) -> Answer {
        self.admin(Method::PUT, "/api/v1/settings/lockout", Some(policy))
            .await
    }

    /// Rebuilds every view beside the live one (`keyledger replay rebuild --compare`) and
    /// asserts that they agree row for row. Each view is rebuilt alone, from a read that the
    /// database narrows to the events the view folds, while the live follower reads every
    /// event and the view picks its own: the two ways must reach the same rows.
    pub async fn assert_rebuilt_views_match(&self) {
        let compared = self.replay(&["rebuild", "--compare"]).await;
        assert!(
            compared.status.success(),
            "{}{}",
            String::from_utf8_lossy(&compared.stdout),
            String::from_utf8_lossy(&compared.stderr)
        );
    }

    /// Runs `keyledger replay ...` against this app's database.
    pub async fn replay(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("replay")
            .args(args)
            .arg("--database")
            .arg(&self.database_url)
            .output()
            .await
            .expect("run keyledger replay")
    }
}

impl TestApp {
    /// Sets an environment variable for the next [`TestApp::start`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_owned(), value.to_owned()));
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A counter or gauge from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .request(Method::GET, "/metrics", None, None, &[])
            .await
            .text();
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Position of the newest event in the log.
    pub async fn head(&self) -> u64 {
        self.request(Method::GET, "/healthz", None, None, &[])
            .await
            .json()["log_position"]
            .as_u64()
            .unwrap()
    }
}
