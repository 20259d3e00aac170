//! The `keyledger` binary: parses the command line, loads configuration from flags and the
//! environment, wires the crates, and does nothing else.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyledger_api::passwords::Argon2Config;
use keyledger_api::{ApiConfig, ServerOptions};
use keyledger_projections::ViewProgress;
use keyledger_projections::webhooks::DeliveryConfig;
use keyledger_projections::webhooks::guard::AddressPolicy;
use keyledger_projections::webhooks::schedule::RetrySchedule;
use keyledger_store::{Database, EventLog};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// An event-sourced identity backend.
#[derive(Parser)]
#[command(name = "keyledger", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Auditor tools over the log.
    Replay {
        #[command(subcommand)]
        command: ReplayCommand,
    },
}

#[derive(clap::Args)]
struct DatabaseArg {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    #[arg(
        long,
        env = "KEYLEDGER_DATABASE_URL",
        default_value = "sqlite://data/keyledger.db"
    )]
    database: String,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, env = "KEYLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    database: DatabaseArg,
    /// Bearer token for the admin API. When unset on first start, one is generated and
    /// printed once.
    #[arg(long, env = "KEYLEDGER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// argon2id memory cost in KiB.
    #[arg(long, env = "KEYLEDGER_ARGON2_M_COST", default_value_t = 19_456)]
    argon2_m_cost: u32,
    /// argon2id iterations.
    #[arg(long, env = "KEYLEDGER_ARGON2_T_COST", default_value_t = 2)]
    argon2_t_cost: u32,
    /// argon2id parallelism.
    #[arg(long, env = "KEYLEDGER_ARGON2_P_COST", default_value_t = 1)]
    argon2_p_cost: u32,
    /// Password hashes allowed to run at once (default: number of cores).
    #[arg(long, env = "KEYLEDGER_HASH_CONCURRENCY")]
    hash_concurrency: Option<usize>,
    /// A session ends after this many seconds without a request.
    #[arg(long, env = "KEYLEDGER_SESSION_IDLE_SECONDS", default_value_t = 1800)]
    session_idle_seconds: i64,
    /// A session ends this many seconds after login.
    #[arg(
        long,
        env = "KEYLEDGER_SESSION_ABSOLUTE_SECONDS",
        default_value_t = 43_200
    )]
    session_absolute_seconds: i64,
    #[command(flatten)]
    webhooks: WebhookArgs,
}

#[derive(clap::Args)]
struct WebhookArgs {
    /// A delivery attempt with no answer after this many seconds failed.
    #[arg(long, env = "KEYLEDGER_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10)]
    webhook_timeout_seconds: u64,
    /// Delays before each retry of a failed delivery (units ms, s, m, h); after the last, the
    /// event is dead-lettered for that subscription.
    #[arg(long, env = "KEYLEDGER_WEBHOOK_RETRY_SCHEDULE", default_value = keyledger_projections::webhooks::schedule::DEFAULT_SCHEDULE)]
    webhook_retry_schedule: String,
    /// Non-public targets deliveries may reach, comma-separated: `loopback`, `private`,
    /// `link_local`, and `http` for plain-http URLs. Default: none (public https only).
    #[arg(
        long,
        env = "KEYLEDGER_WEBHOOK_ALLOW",
        default_value = "",
        value_delimiter = ','
    )]
    webhook_allow: Vec<String>,
    /// A subscription is disabled after this many dead-lettered deliveries in a row.
    #[arg(long, env = "KEYLEDGER_WEBHOOK_DISABLE_AFTER", default_value_t = 5)]
    webhook_disable_after: u32,
    /// A node that stops renewing a subscription's lease hands it over after this long.
    #[arg(long, env = "KEYLEDGER_WEBHOOK_LEASE_SECONDS", default_value_t = 15)]
    webhook_lease_seconds: u64,
    /// How long a rotated-out signing secret keeps signing, unless the rotation says.
    #[arg(
        long,
        env = "KEYLEDGER_WEBHOOK_SECRET_GRACE_SECONDS",
        default_value_t = 86_400
    )]
    webhook_secret_grace_seconds: u64,
}

impl WebhookArgs {
    fn config(&self) -> anyhow::Result<DeliveryConfig> {
        let mut addresses = AddressPolicy::default();
        for allowed in self
            .webhook_allow
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
        {
            match allowed {
                "loopback" => addresses.allow_loopback = true,
                "private" => addresses.allow_private = true,
                "link_local" => addresses.allow_link_local = true,
                "http" => addresses.allow_http = true,
                other => anyhow::bail!(
                    "KEYLEDGER_WEBHOOK_ALLOW: unknown {other:?} (use loopback, private, link_local, http)"
                ),
            }
        }
        anyhow::ensure!(
            self.webhook_timeout_seconds > 0,
            "the webhook timeout must be positive"
        );
        anyhow::ensure!(
            self.webhook_lease_seconds > 0,
            "the webhook lease must be positive"
        );
        anyhow::ensure!(
            self.webhook_disable_after > 0,
            "KEYLEDGER_WEBHOOK_DISABLE_AFTER must be positive"
        );
        Ok(DeliveryConfig {
            timeout: Duration::from_secs(self.webhook_timeout_seconds),
            schedule: RetrySchedule::parse(&self.webhook_retry_schedule)
                .context("KEYLEDGER_WEBHOOK_RETRY_SCHEDULE")?,
            addresses,
            disable_after_dead_letters: self.webhook_disable_after,
            lease: Duration::from_secs(self.webhook_lease_seconds),
            ..DeliveryConfig::default()
        })
    }
}

#[derive(Subcommand)]
enum ReplayCommand {
    /// Check the whole hash chain; exits non-zero naming the first bad position.
    Verify {
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Rebuild views from position zero.
    Rebuild {
        #[command(flatten)]
        database: DatabaseArg,
        /// Only this projection (`users` or `audit`).
        #[arg(long)]
        projection: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYLEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        Command::Replay { command } => match command {
            ReplayCommand::Verify { database } => verify(&database.database).await,
            ReplayCommand::Rebuild {
                database,
                projection,
            } => {
                let log = open(&database.database).await?;
                let reached =
                    keyledger_replay::rebuild(&log, projection.as_deref(), |name, position| {
                        tracing::debug!(projection = name, position, "rebuilding");
                    })
                    .await?;
                println!("rebuilt to position {reached}");
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

async fn open(url: &str) -> anyhow::Result<EventLog> {
    let db = Database::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(url)))?;
    Ok(EventLog::open(db).await?)
}

/// Database URLs may carry a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn verify(url: &str) -> anyhow::Result<ExitCode> {
    let log = open(url).await?;
    let report = keyledger_replay::verify(&log, |_| {}).await?;
    match report.first_break {
        None => {
            let head = report
                .head
                .map(|h| format!("position {} hash {}", h.position, hex_hash(&h.hash)))
                .unwrap_or_else(|| "empty log".into());
            println!("chain ok: {} events verified, head {head}", report.checked);
            Ok(ExitCode::SUCCESS)
        }
        Some(bad) => {
            tracing::error!(position = bad.position, "hash chain broken");
            println!(
                "chain broken at position {}: {}",
                bad.position,
                keyledger_replay::describe(&bad.kind)
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn hex_hash(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let log = open(&args.database.database).await?;
    keyledger_projections::runner::migrate_all(&log).await?;
    let progress = ViewProgress::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let followers = keyledger_projections::spawn_all(log.clone(), progress.clone(), stop_rx);
    let options = ServerOptions {
        argon2: Argon2Config {
            m_cost_kib: args.argon2_m_cost,
            t_cost: args.argon2_t_cost,
            p_cost: args.argon2_p_cost,
        },
        hash_concurrency: args.hash_concurrency,
        api: ApiConfig {
            session_idle: chrono_seconds(args.session_idle_seconds)?,
            session_absolute: chrono_seconds(args.session_absolute_seconds)?,
            webhook_secret_grace_seconds: args.webhooks.webhook_secret_grace_seconds,
            ..ApiConfig::default()
        },
        admin_token: args.admin_token,
        delivery: args.webhooks.config()?,
    };
    let (state, generated) = keyledger_api::start(log, progress, options).await?;
    let sweeper =
        keyledger_api::housekeeping::spawn_session_sweeper(state.clone(), stop_tx.subscribe());
    let delivery = state.delivery.clone().spawn(stop_tx.subscribe());
    if let Some(token) = generated {
        // Printed once, on the first start without KEYLEDGER_ADMIN_TOKEN; only its hash is kept.
        println!("admin token (shown once, keep it): {token}");
    }
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    println!("keyledger listening on http://{address}");
    tracing::info!(%address, "listening");
    keyledger_api::run(listener, state, shutdown_signal()).await?;
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    let _ = delivery.await;
    for follower in followers {
        let _ = follower.await;
    }
    Ok(())
}

fn chrono_seconds(seconds: i64) -> anyhow::Result<chrono::Duration> {
    anyhow::ensure!(seconds > 0, "durations must be positive");
    chrono::Duration::try_seconds(seconds).context("duration out of range")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
