//! The `keyledger` binary: parses the command line, loads configuration from flags and the
//! environment, wires the crates, and does nothing else.

/// glibc's allocator serialises threads on its arena locks; the server's work is many small
/// allocations spread over the runtime's, SQLite's and the hashing threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyledger_api::passwords::Argon2Config;
use keyledger_api::{ApiConfig, ServerOptions};
use keyledger_projections::ViewProgress;
use keyledger_projections::as_of::AsOf;
use keyledger_projections::webhooks::DeliveryConfig;
use keyledger_projections::webhooks::guard::AddressPolicy;
use keyledger_projections::webhooks::schedule::RetrySchedule;
use keyledger_replay::export::{Bound, ExportFilter, Format, export};
use keyledger_replay::{AuditOptions, AuditReport};
use keyledger_store::checkpoint::{self, Checkpoint};
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
    /// Threads of the async runtime that answers requests (default: half the cores, at least
    /// one). Password hashes run on threads of their own.
    #[arg(long, env = "KEYLEDGER_WORKER_THREADS")]
    worker_threads: Option<usize>,
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
    #[command(flatten)]
    signing_key: SigningKeyArg,
    /// Sign a checkpoint of the chain head this often, also when nothing happened.
    #[arg(
        long,
        env = "KEYLEDGER_CHECKPOINT_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    checkpoint_interval_seconds: u64,
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

#[derive(clap::Args)]
struct SigningKeyArg {
    /// The Ed25519 checkpoint signing key file (64 hex digits), created on first start.
    /// Default: `keyledger-signing.key` beside the SQLite file, or `data/` for PostgreSQL.
    #[arg(long = "signing-key", env = "KEYLEDGER_SIGNING_KEY_FILE")]
    path: Option<PathBuf>,
}

impl SigningKeyArg {
    fn resolve(&self, database_url: &str) -> PathBuf {
        if let Some(path) = &self.path {
            return path.clone();
        }
        let file = database_url
            .strip_prefix("sqlite://")
            .or_else(|| database_url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest))
            .filter(|path| !path.is_empty() && !path.contains(":memory:"));
        let dir = file
            .and_then(|f| Path::new(f).parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("data"));
        dir.join(SIGNING_KEY_FILE)
    }
}

const SIGNING_KEY_FILE: &str = "keyledger-signing.key";

#[derive(clap::Args)]
struct TrustArgs {
    /// A public key whose checkpoint signatures are trusted (64 hex digits, as printed by
    /// `keyledger replay public-key`). Repeat it for keys from before a rotation.
    #[arg(long = "public-key")]
    public_keys: Vec<String>,
    /// A signed checkpoint you keep outside the database: a file holding its JSON (as
    /// `GET /api/v1/checkpoints/latest` answers), or the JSON itself. The log must still
    /// reach its position with its hash. Repeatable.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<String>,
}

impl TrustArgs {
    fn options(&self) -> anyhow::Result<AuditOptions> {
        let trusted_keys = self
            .public_keys
            .iter()
            .map(|k| checkpoint::parse_public_key(k).with_context(|| format!("--public-key {k}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let held = self
            .checkpoints
            .iter()
            .map(|c| read_checkpoint(c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            held.is_empty() || !trusted_keys.is_empty(),
            "a --checkpoint is checked against a --public-key: give one"
        );
        Ok(AuditOptions { trusted_keys, held })
    }
}

fn read_checkpoint(given: &str) -> anyhow::Result<Checkpoint> {
    let text = if given.trim_start().starts_with('{') {
        given.to_owned()
    } else {
        std::fs::read_to_string(given).with_context(|| format!("cannot read {given}"))?
    };
    Checkpoint::parse(&text).with_context(|| format!("--checkpoint {given}"))
}

#[derive(Subcommand)]
enum ReplayCommand {
    /// Check the hash chain and the signed checkpoints; exits 2 naming the first bad
    /// position.
    Verify {
        #[command(flatten)]
        database: DatabaseArg,
        #[command(flatten)]
        trust: TrustArgs,
        /// Start from the (lowest) `--checkpoint` instead of position zero.
        #[arg(long, requires = "checkpoints")]
        from_checkpoint: bool,
        /// Verify this JSONL export instead of the database (no database needed).
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// A user's state as of a log position or a time, folded from the log (JSON on stdout).
    AsOf {
        #[command(flatten)]
        database: DatabaseArg,
        /// The user id.
        #[arg(long)]
        user: uuid::Uuid,
        /// An RFC 3339 time.
        #[arg(
            long,
            conflicts_with = "position",
            required_unless_present = "position"
        )]
        at: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// A log position.
        #[arg(long)]
        position: Option<u64>,
    },
    /// Print the public key of the checkpoint signing key.
    PublicKey {
        #[command(flatten)]
        database: DatabaseArg,
        #[command(flatten)]
        signing_key: SigningKeyArg,
    },
    /// Write events with their positions and hashes to stdout (or `--output`).
    Export {
        #[command(flatten)]
        database: DatabaseArg,
        /// First position, or first time (RFC 3339).
        #[arg(long)]
        from: Option<Bound>,
        /// Last position (inclusive), or the time before which to stop (RFC 3339).
        #[arg(long)]
        to: Option<Bound>,
        /// Only this user's events (the export is then not verifiable as a range).
        #[arg(long)]
        user: Option<String>,
        /// Only these event types; `user.login.*` is a prefix. Repeatable.
        #[arg(long = "type")]
        types: Vec<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Rebuild views from position zero.
    Rebuild {
        #[command(flatten)]
        database: DatabaseArg,
        /// Only this projection (`users` or `audit`).
        #[arg(long)]
        projection: Option<String>,
        /// Rebuild beside the live views and report every difference; swap nothing in.
        /// Exits 2 when the views differ.
        #[arg(long)]
        compare: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
    Csv,
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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Command::Serve(args) = &cli.command {
        runtime.worker_threads(
            args.worker_threads
                .unwrap_or_else(|| serving_threads(available_cores()))
                .max(1),
        );
    }
    let runtime = match runtime.build() {
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

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The server's async work is light beside its password hashes, which have a thread per core
/// of their own. A runtime worker per core as well would put two busy threads on each core:
/// at full login load on 2 cores, the two workers woke each other to share tasks, and context
/// switches a login fell from ~51 to ~40 with one worker, each of them a preempted hash
/// (docs/benchmarks.md, "Logins, second pass"). `KEYLEDGER_WORKER_THREADS` overrides it.
fn serving_threads(cores: usize) -> usize {
    (cores / 2).max(1)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        Command::Replay { command } => match command {
            ReplayCommand::Verify {
                database,
                trust,
                from_checkpoint,
                export,
            } => {
                let options = trust.options()?;
                match export {
                    Some(file) => verify_export(&file, options),
                    None => verify(&database.database, options, from_checkpoint).await,
                }
            }
            ReplayCommand::AsOf {
                database,
                user,
                at,
                position,
            } => {
                let log = open(&database.database).await?;
                let point = match (at, position) {
                    (Some(at), _) => AsOf::Time(at.with_timezone(&chrono::Utc)),
                    (None, Some(position)) => AsOf::Position(position),
                    (None, None) => anyhow::bail!("give --at or --position"),
                };
                let found = keyledger_projections::as_of::user_as_of(&log, user, point).await?;
                let Some(row) = found.row else {
                    println!("user {user} did not exist at that point");
                    return Ok(ExitCode::from(3));
                };
                let locked = row.is_locked_at(found.at);
                let state = serde_json::json!({
                    "id": row.user_id,
                    "tenant_id": row.tenant_id,
                    "username": row.username,
                    "email": row.email,
                    "display_name": row.display_name,
                    "status": row.status,
                    "locked": locked,
                    "locked_until": row.locked_until.filter(|_| locked),
                    "failed_login_count": row.failed_count,
                    "password_externally_managed": row.password_externally_managed,
                    "has_password": row.has_password,
                    "created_at": row.created_at,
                    "last_login_at": row.last_login_at,
                    "last_event_position": row.position,
                    "mfa": found.mfa.as_ref().map(|m| serde_json::json!({
                        "security_keys": m.security_keys,
                        "device_authenticators": m.device_authenticators,
                        "legacy_keys": m.legacy_keys,
                        "totp": m.totp,
                        "requirement": m.requirement,
                        "last_mfa_at": m.last_mfa_at,
                    })),
                    "credentials": found.user.webauthn_credentials().map(|c| serde_json::json!({
                        "credential_id": c.credential_id.as_str(),
                        "label": c.label,
                        "kind": c.kind.as_str(),
                        "registered_at": c.registered_at,
                        "last_used_at": c.last_used_at,
                    })).collect::<Vec<_>>(),
                    "as_of": found.at,
                });
                println!("{state:#}");
                Ok(ExitCode::SUCCESS)
            }
            ReplayCommand::PublicKey {
                database,
                signing_key,
            } => {
                let path = signing_key.resolve(&database.database);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the signing key {}", path.display()))?;
                let key = keyledger_api::signing::parse_key(&text)
                    .with_context(|| format!("the signing key {}", path.display()))?;
                println!("{}", checkpoint::public_key_hex(&key.verifying_key()));
                Ok(ExitCode::SUCCESS)
            }
            ReplayCommand::Export {
                database,
                from,
                to,
                user,
                types,
                format,
                output,
            } => {
                let log = open(&database.database).await?;
                let filter = ExportFilter {
                    from,
                    to,
                    user,
                    types,
                };
                let format = match format {
                    ExportFormat::Jsonl => Format::Jsonl,
                    ExportFormat::Csv => Format::Csv,
                };
                let written = match output {
                    Some(path) => {
                        let file = std::fs::File::create(&path)
                            .with_context(|| format!("cannot create {}", path.display()))?;
                        export(&log, &filter, format, &mut std::io::BufWriter::new(file)).await?
                    }
                    None => {
                        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                        export(&log, &filter, format, &mut out).await?
                    }
                };
                tracing::info!(events = written, "exported");
                Ok(ExitCode::SUCCESS)
            }
            ReplayCommand::Rebuild {
                database,
                projection,
                compare,
            } => {
                let log = open(&database.database).await?;
                let head = log.head().await?.map_or(0, |h| h.position);
                let bar = progress_bar(head);
                let progress = |name: &str, position: u64| {
                    bar.set_message(name.to_owned());
                    if position < bar.position() {
                        bar.reset();
                    }
                    bar.set_length(bar.length().unwrap_or(0).max(position));
                    bar.set_position(position);
                };
                if compare {
                    let found =
                        keyledger_replay::compare(&log, projection.as_deref(), progress).await?;
                    bar.finish_and_clear();
                    return Ok(report_comparison(&found));
                }
                let reached =
                    keyledger_replay::rebuild(&log, projection.as_deref(), progress).await?;
                bar.finish_and_clear();
                println!("rebuilt to position {reached}");
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

/// A bar on stderr with rate and ETA; hidden when stderr is not a terminal.
fn progress_bar(length: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(length),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>6} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec:0}, ETA {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

fn report_comparison(found: &[keyledger_projections::rebuild::Comparison]) -> ExitCode {
    use keyledger_projections::rebuild::DifferenceKind;
    let mut differ = false;
    for comparison in found {
        println!(
            "{}: {} difference(s) at position {}",
            comparison.projection,
            comparison.differences.len(),
            comparison.position
        );
        for d in &comparison.differences {
            differ = true;
            match &d.kind {
                DifferenceKind::OnlyLive => {
                    println!("  {} {}: only in the live view", d.table, d.key);
                }
                DifferenceKind::OnlyRebuilt => {
                    println!("  {} {}: only in the rebuilt view", d.table, d.key);
                }
                DifferenceKind::Changed(columns) => {
                    for (column, live, rebuilt) in columns {
                        println!(
                            "  {} {}: {column} is {live} in the live view, {rebuilt} rebuilt",
                            d.table, d.key
                        );
                    }
                }
            }
        }
    }
    if differ {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
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

async fn verify(
    url: &str,
    options: AuditOptions,
    from_checkpoint: bool,
) -> anyhow::Result<ExitCode> {
    let log = open(url).await?;
    let start = if from_checkpoint {
        options.held.iter().min_by_key(|c| c.position).cloned()
    } else {
        None
    };
    let keys_given = !options.trusted_keys.is_empty();
    let report = keyledger_replay::verify_log(&log, options, start.as_ref(), |position| {
        tracing::debug!(position, "verifying");
    })
    .await?;
    if let Some(finding) = &report.finding {
        println!(
            "chain broken at position {}: {}",
            finding.position(),
            finding.describe()
        );
        return Ok(ExitCode::from(2));
    }
    let head = report
        .head
        .map(|h| format!("position {} hash {}", h.position, hex_hash(&h.hash)))
        .unwrap_or_else(|| "empty log".into());
    println!("chain ok: {} events verified, head {head}", report.checked);
    print_checkpoints(&report, keys_given);
    Ok(ExitCode::SUCCESS)
}

fn print_checkpoints(report: &AuditReport, keys_given: bool) {
    println!(
        "checkpoints: {} verified, {} not checked{}",
        report.checkpoints_verified,
        report.checkpoints_unchecked,
        if keys_given {
            ""
        } else {
            " (no --public-key given)"
        }
    );
    if let Some(covered) = report.covered_to {
        println!("signed checkpoints cover the log up to position {covered}");
    }
}

fn verify_export(path: &Path, options: AuditOptions) -> anyhow::Result<ExitCode> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let keys_given = !options.trusted_keys.is_empty();
    let verification = keyledger_replay::verify_export(std::io::BufReader::new(file), options)?;
    let report = &verification.report;
    if let Some(finding) = &report.finding {
        println!(
            "export broken at position {}: {}",
            finding.position(),
            finding.describe()
        );
        return Ok(ExitCode::from(2));
    }
    println!(
        "export chain ok: positions {} to {} link and hash correctly",
        verification.first,
        report.head.map_or(verification.first, |h| h.position)
    );
    print_checkpoints(report, keys_given);
    if verification.covered() {
        println!("export verified against a signed checkpoint");
        Ok(ExitCode::SUCCESS)
    } else {
        let from = report.covered_to.map_or(verification.first, |c| c + 1);
        println!(
            "export NOT verified: events {from} to {} are not covered by a signed checkpoint \
             (export up to a newer checkpoint, or pass one with --checkpoint and --public-key)",
            verification.last_event
        );
        Ok(ExitCode::from(2))
    }
}

fn hex_hash(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.checkpoint_interval_seconds > 0,
        "the checkpoint interval must be positive"
    );
    let key_path = args.signing_key.resolve(&args.database.database);
    let (signing_key, created) = keyledger_api::signing::load_or_create(&key_path)?;
    if created {
        tracing::info!(path = %key_path.display(), "checkpoint signing key created");
    }
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
        signing_key: Some(signing_key),
    };
    let (state, generated) = keyledger_api::start(log, progress, options).await?;
    let sweeper =
        keyledger_api::housekeeping::spawn_session_sweeper(state.clone(), stop_tx.subscribe());
    let delivery = state.delivery.clone().spawn(stop_tx.subscribe());
    let signer = keyledger_api::housekeeping::spawn_checkpoint_signer(
        state.clone(),
        std::time::Duration::from_secs(args.checkpoint_interval_seconds),
        stop_tx.subscribe(),
    );
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
    let _ = signer.await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_gets_half_the_cores_and_at_least_one() {
        assert_eq!(serving_threads(1), 1);
        assert_eq!(serving_threads(2), 1);
        assert_eq!(serving_threads(3), 1);
        assert_eq!(serving_threads(8), 4);
    }
}
