//! `keyledger-bench`: how fast keyledger is, each figure beside a reference measured in the
//! same run on the same machine (speed is measured here, never by timed tests).
//!
//! Layout: one module per benchmark — [`appends`] (group commit against postgres-es and raw
//! INSERTs), [`rebuild`] (view rebuild and chain verification against raw reads), [`logins`]
//! (HTTP logins against raw argon2id), [`audit`] (replay verify against raw reads and raw
//! SHA-256; as-of latency), [`memory`] (the server's resident memory with many
//! users) — and what they share: [`scratch`] makes throwaway databases, [`workload`] makes
//! realistic events, [`server`] starts the real server binary, [`report`] prints the tables.
//!
//! Results are markdown on stdout; progress goes to stderr.

/// glibc's allocator serialises threads on its arena locks; the benchmark's work (and the server's) is many small
/// allocations spread over the runtime's, SQLite's and the hashing threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod appends;
mod assertions;
mod audit;
mod logins;
mod memory;
mod rebuild;
mod report;
mod scratch;
mod server;
mod webhooks;
mod workload;

use clap::{Args, Parser, Subcommand};

/// Benchmarks of keyledger; run with `cargo run --release -p keyledger-bench -- <what>`.
#[derive(Parser)]
#[command(name = "keyledger-bench")]
struct Cli {
    #[command(subcommand)]
    what: What,
    #[command(flatten)]
    places: scratch::Places,
}

#[derive(Subcommand)]
enum What {
    /// Appends/s through `EventLog::append` at 1, 8 and 64 writers on SQLite and PostgreSQL,
    /// beside postgres-es and raw batched INSERTs.
    Appends(appends::Options),
    /// Rebuild events/s over a 1M-event log, beside raw `read_all`; and `verify_chain`.
    Rebuild(rebuild::Options),
    /// Password logins/s through the real server's HTTP API, beside raw argon2id hashes/s.
    Logins(logins::Options),
    /// The real server's resident memory with 1M users in its views.
    Memory(memory::Options),
    /// Webhook deliveries/s to 1 and 20 subscriptions, and append-to-receipt lag, beside raw
    /// POSTs to the same loopback receiver.
    Webhooks(webhooks::Options),
    /// `replay verify` events/s beside raw `read_all` and raw SHA-256; as-of latency for a
    /// user with 10k events.
    Audit(audit::Options),
    /// WebAuthn login finishes/s through the real server's HTTP API, beside raw webauthn-rs
    /// verifications.
    Assertions(assertions::Options),
    /// Every benchmark above at its default size.
    All,
}

fn main() -> anyhow::Result<()> {
    // Quiet by default: logging costs time inside the measured code. For a look at where
    // time goes, `KEYLEDGER_BENCH_LOG=sqlx::query=debug` prints every statement with its
    // elapsed time.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYLEDGER_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        report::progress(
            "warning: this is a debug build of the benchmark; use `cargo run --release`",
        );
    }
    machine();
    let places = &cli.places;
    match cli.what {
        What::Appends(options) => appends::run(&options, places).await,
        What::Rebuild(options) => rebuild::run(&options, places).await,
        What::Logins(options) => logins::run(&options, places).await,
        What::Memory(options) => memory::run(&options, places).await,
        What::Webhooks(options) => webhooks::run(&options, places).await,
        What::Audit(options) => audit::run(&options, places).await,
        What::Assertions(options) => assertions::run(&options, places).await,
        What::All => {
            appends::run(&defaults()?, places).await?;
            rebuild::run(&defaults()?, places).await?;
            logins::run(&defaults()?, places).await?;
            audit::run(&defaults()?, places).await?;
            memory::run(&defaults()?, places).await?;
            assertions::run(&defaults()?, places).await?;
            webhooks::run(&defaults()?, places).await
        }
    }
}

/// A benchmark's options as the command line would give them with no flags, so `all` uses
/// exactly the documented defaults.
fn defaults<T: Args + clap::FromArgMatches>() -> anyhow::Result<T> {
    let command = T::augment_args(clap::Command::new("defaults"));
    let matches = command.try_get_matches_from(["defaults"])?;
    Ok(T::from_arg_matches(&matches)?)
}

/// The machine the figures were measured on, printed first so a results file says it.
fn machine() {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
        );
    println!(
        "_Machine: {cores} cores, {cpu}, {memory} RAM; keyledger-bench {}_\n",
        env!("CARGO_PKG_VERSION")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_benchmark_has_defaults_without_flags() {
        defaults::<appends::Options>().unwrap();
        defaults::<rebuild::Options>().unwrap();
        defaults::<logins::Options>().unwrap();
        defaults::<memory::Options>().unwrap();
        defaults::<assertions::Options>().unwrap();
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
