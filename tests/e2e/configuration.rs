//! `keyledger serve` configured as a user would: from the environment, and with nothing at all.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BIN;

/// Starts `keyledger serve` in `dir` with only `env` set (no flags), and returns the server
/// and the address it printed.
async fn serve_in(dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .current_dir(dir)
        .env_remove("KEYLEDGER_DATABASE_URL")
        .env_remove("KEYLEDGER_LISTEN")
        .env("KEYLEDGER_ADMIN_TOKEN", "configuration-test-admin-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(address) = line.strip_prefix("keyledger listening on ") {
                return address.trim().to_owned();
            }
        }
        panic!("keyledger exited before listening");
    })
    .await
    .unwrap();
    (child, address)
}

async fn healthy(address: &str) -> bool {
    let answer = reqwest::get(format!("{address}/healthz")).await.unwrap();
    answer.status() == StatusCode::OK
}

/// With no database configured, the log is a SQLite file under `./data`; `KEYLEDGER_LISTEN`
/// and `KEYLEDGER_DATABASE_URL` take the place of `--listen` and `--database`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_its_settings_from_the_environment_and_defaults_to_sqlite_under_data() {
    let dir = std::env::temp_dir().join(format!(
        "keyledger-configuration-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();

    let (mut server, address) = serve_in(&dir, &[("KEYLEDGER_LISTEN", "127.0.0.1:0")]).await;
    assert!(healthy(&address).await);
    assert!(dir.join("data/keyledger.db").is_file(), "the default log");
    server.kill().await.unwrap();

    let elsewhere = dir.join("elsewhere.db");
    let url = format!("sqlite://{}", elsewhere.display());
    let (mut server, address) = serve_in(
        &dir,
        &[
            ("KEYLEDGER_LISTEN", "127.0.0.1:0"),
            ("KEYLEDGER_DATABASE_URL", &url),
        ],
    )
    .await;
    assert!(healthy(&address).await);
    assert!(
        elsewhere.is_file(),
        "the log named by KEYLEDGER_DATABASE_URL"
    );
    server.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
