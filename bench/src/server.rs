//! The real `keyledger` server as a child process: built in release mode, started on a free
//! loopback port against a given database, watched through `/proc`, stopped at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::report::progress;

/// The admin bearer token every benchmark server is started with.
pub const ADMIN_TOKEN: &str = "keyledger-bench-admin-token-not-a-secret";

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, clap::Args)]
pub struct ServerOptions {
    /// The `keyledger` binary to start (default: `keyledger` in the release directory of the
    /// target dir this benchmark runs from, built first).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Do not run `cargo build --release -p keyledger` before starting the server.
    #[arg(long)]
    pub no_build: bool,
}

impl ServerOptions {
    /// The server binary, built in release mode unless told not to.
    pub async fn binary(&self) -> anyhow::Result<PathBuf> {
        if let Some(bin) = &self.server_bin {
            return Ok(bin.clone());
        }
        // This binary lives in <target>/<profile>/; the server is measured in release mode
        // whatever profile the benchmark itself was built with.
        let exe = std::env::current_exe().context("cannot locate the benchmark binary")?;
        let target = exe
            .parent()
            .and_then(Path::parent)
            .context("the benchmark binary is not inside a target directory")?;
        let bin = target.join("release").join("keyledger");
        if !self.no_build {
            build().await?;
        }
        anyhow::ensure!(
            bin.is_file(),
            "{} does not exist; build it with `cargo build --release -p keyledger`",
            bin.display()
        );
        Ok(bin)
    }
}

async fn build() -> anyhow::Result<()> {
    // `cargo run` tells its child which cargo it is; a bare binary falls back to PATH.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    progress("building the server: cargo build --release -p keyledger");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "keyledger",
            "--bin",
            "keyledger",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::null())
        .status()
        .await
        .context("cannot run cargo")?;
    anyhow::ensure!(status.success(), "building the server failed ({status})");
    Ok(())
}

/// A running server. Killed if dropped without [`Server::stop`].
pub struct Server {
    child: Child,
    pid: u32,
    pub base: String,
    pub log_path: PathBuf,
}

/// Memory figures of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss_kib: u64,
    /// The highest resident size so far (`VmHWM`).
    pub peak_kib: u64,
}

impl Server {
    /// Starts `keyledger serve` on 127.0.0.1 port 0 against `database_url`, its log lines
    /// going to `log_path`, and waits until it prints its address.
    pub async fn start(bin: &Path, database_url: &str, log_path: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(bin, database_url, log_path, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables.
    pub async fn start_with_env(
        bin: &Path,
        database_url: &str,
        log_path: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                database_url,
            ])
            .env("KEYLEDGER_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the server")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(base) = line.strip_prefix("keyledger listening on ") {
                    return Ok(base.trim().to_owned());
                }
            }
            anyhow::bail!("the server stopped before listening")
        })
        .await
        .context("the server did not start in time")?
        .with_context(|| format!("see {}", log_path.display()))?;
        // Keep reading, so the server never blocks on a full stdout pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            base,
            log_path: log_path.to_owned(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid)
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(&self.pid.to_string())
    }

    /// Context switches (voluntary and not) of all the server's live threads so far.
    pub fn context_switches(&self) -> anyhow::Result<u64> {
        context_switches_of(self.pid)
    }

    /// Asks for a graceful stop (SIGTERM), and kills the server if it has not stopped within
    /// 15 seconds.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // `kill(1)` instead of a signal call: this crate forbids unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                progress("the server did not stop on SIGTERM; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }

    /// Polls `GET /healthz` until every view has folded the whole log (and the log holds at
    /// least `min_position`), calling `tick` with the health figures at each poll. Returns
    /// the time waited.
    pub async fn wait_for_views(
        &self,
        client: &reqwest::Client,
        min_position: u64,
        timeout: Duration,
        mut tick: impl FnMut(u64, u64),
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let health: serde_json::Value = client
                .get(self.url("/healthz"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let log = health["log_position"].as_u64().unwrap_or(0);
            let views = health["views_position"].as_u64().unwrap_or(0);
            tick(log, views);
            if log >= min_position && views == log {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "views reached {views} of {log} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Context switches summed over a process's live threads (`/proc/<pid>/task/*/status`). A
/// thread that exited takes its count with it, so this is a lower bound.
pub fn context_switches_of(pid: u32) -> anyhow::Result<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("cannot list /proc/{pid}/task"))?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            // The thread exited after the listing.
            continue;
        };
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// User + system CPU time of a process (`self` for this one), from `/proc/<pid>/stat`.
pub fn cpu_time_of(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; the fields after its closing
    // parenthesis start at field 3 (state). utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/<pid>/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks()))
}

/// Kernel clock ticks per second (`getconf CLK_TCK`); 100 on every common Linux.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// An HTTP client for loopback only: no proxy may sit between the benchmark and the server.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(120))
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_figures() {
        let memory = memory_of(std::process::id()).unwrap();
        assert!(memory.rss_kib > 0);
        assert!(memory.peak_kib >= memory.rss_kib);
        assert!(cpu_time_of("self").is_ok());
        assert!(context_switches_of(std::process::id()).unwrap() > 0);
    }
}
