//! Headless Chromium for end-to-end tests, driven over WebDriver (chromedriver) with the Chrome
//! DevTools Protocol reached through chromedriver's `goog/cdp/execute` (for the `WebAuthn`
//! domain's virtual authenticators). Pages call the real `navigator.credentials`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

/// Chromium and chromedriver as Debian installs them (`.ci/run` installs them when missing).
pub fn available() -> bool {
    std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new("/usr/bin/chromedriver").exists()
}

impl Browser {
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(answer) = client.get(format!("{base}/status")).send().await
                && answer.status().is_success()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver did not start");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run"],
            },
        }}});
        let created: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            client,
        }
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let answer: Value = self
            .client
            .post(format!("{}/session/{}/{path}", self.base, self.session))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            answer["value"].get("error").is_none(),
            "webdriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    /// A Chrome DevTools Protocol command.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command("goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
    }

    /// Adds a virtual authenticator (`transport`: `internal` for a platform authenticator,
    /// `usb` for a security key), with user verification; answers its id.
    pub async fn add_authenticator(&self, transport: &str) -> String {
        self.cdp("WebAuthn.enable", json!({"enableUI": false}))
            .await;
        let added = self
            .cdp(
                "WebAuthn.addVirtualAuthenticator",
                json!({"options": {
                    "protocol": "ctap2",
                    "ctap2Version": "ctap2_1",
                    "transport": transport,
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserVerified": true,
                    "automaticPresenceSimulation": true,
                }}),
            )
            .await;
        added["authenticatorId"].as_str().unwrap().to_owned()
    }

    pub async fn remove_authenticator(&self, id: &str) {
        self.cdp(
            "WebAuthn.removeVirtualAuthenticator",
            json!({"authenticatorId": id}),
        )
        .await;
    }

    /// The credentials an authenticator holds (with their sign counts).
    pub async fn credentials(&self, id: &str) -> Vec<Value> {
        let answer = self
            .cdp("WebAuthn.getCredentials", json!({"authenticatorId": id}))
            .await;
        answer["credentials"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn goto(&self, url: &str) {
        self.command("url", json!({"url": url})).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and answers its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command("execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Waits until `condition` (a JavaScript expression) is truthy; panics with the page's
    /// message after ten seconds. The wait is a bound for a broken run, not a timing claim.
    pub async fn wait_for(&self, condition: &str) {
        for _ in 0..200 {
            let value = self
                .run(&format!("return Boolean({condition});"), json!([]))
                .await;
            if value == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let message = self
            .run(
                "return document.querySelector('#message')?.textContent;",
                json!([]),
            )
            .await;
        panic!("waited in vain for {condition}; page says {message}");
    }

    pub async fn quit(mut self) {
        let _ = self
            .client
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}
