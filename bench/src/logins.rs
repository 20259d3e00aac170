//! Password logins per second through the real server's HTTP API, beside raw argon2id
//! verifications per second on the same cores (one thread per core). A login is one argon2id
//! verification plus everything around it (lookups, the lockout decision, an append, a
//! session), so the ratio shows what the rest of the request costs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use crate::report::{self, Table, per_second, progress};
use crate::scratch::{Backend, Places};
use crate::server::{self, ADMIN_TOKEN, Server, ServerOptions};

/// Logins must reach this share of the raw hash rate.
const TARGET_RATIO: f64 = 0.9;

/// The server's default argon2id parameters (OWASP): 19 MiB, 2 passes, 1 lane.
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Users created (through the API) to log in as.
    #[arg(long, default_value_t = 64)]
    pub users: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    pub clients: u64,
    /// Logins sent in total (each with the right password).
    #[arg(long, default_value_t = 1000)]
    pub requests: u64,
    /// Seconds of the raw argon2id reference, half before the logins and half after.
    #[arg(long, default_value_t = 10.0)]
    pub hash_seconds: f64,
    /// The server's database.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
    #[command(flatten)]
    pub server: ServerOptions,
}

pub async fn run(options: &Options, places: &Places) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.users > 0 && options.clients > 0 && options.requests > 0,
        "--users, --clients and --requests must be positive"
    );
    anyhow::ensure!(
        options.hash_seconds > 0.0,
        "--hash-seconds must be positive"
    );
    let bin = options.server.binary().await?;
    let busy = report::cpu_busy().await;
    // The raw reference is measured in two halves, one just before the server starts and one
    // just after it stops, so that a drift of the machine's speed during the run (this VM's
    // argon2 rate moves by several percent within minutes) cancels to first order instead of
    // landing on one side of the ratio.
    let half = Duration::from_secs_f64(options.hash_seconds / 2.0);
    progress(format!(
        "raw argon2id verifications, one thread per core, {:.0} s before the logins",
        half.as_secs_f64()
    ));
    let raw_before = raw_verifications(half).await?;
    let scratch = places.fresh(options.backend).await?;
    let log_path = scratch
        .dir()
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join(format!("server-{}.log", std::process::id()));
    let server = Server::start(&bin, &scratch.url, &log_path).await?;
    let client = server::client()?;
    let result = measure(options, &server, &client).await;
    server.stop().await?;
    let logins = result?;
    // The raw reference runs while the server is stopped, so it has the cores to itself, as
    // the server's hashes had them (apart from the request handling the ratio is about).
    progress(format!(
        "raw argon2id verifications, one thread per core, {:.0} s after the logins",
        half.as_secs_f64()
    ));
    let raw_after = raw_verifications(half).await?;
    scratch.remove().await?;
    if options.backend == Backend::Sqlite {
        let _ = std::fs::remove_file(&log_path);
    }
    print(options, &logins, &[raw_before, raw_after], busy);
    Ok(())
}

struct Logins {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    server_cpu: Duration,
    bench_cpu: Duration,
    /// Context switches of the server's threads during the logins.
    switches: u64,
}

async fn measure(
    options: &Options,
    server: &Server,
    client: &reqwest::Client,
) -> anyhow::Result<Logins> {
    progress(format!("creating {} users through the API", options.users));
    create_users(options, server, client).await?;
    // Let the views settle, so their catch-up does not count against the logins.
    server
        .wait_for_views(client, 1, Duration::from_secs(120), |_, _| {})
        .await?;
    progress(format!(
        "{} logins from {} clients",
        options.requests, options.clients
    ));
    let next = Arc::new(AtomicU64::new(0));
    let server_cpu = server.cpu_time()?;
    let switches = server.context_switches()?;
    let bench_cpu = server::cpu_time_of("self")?;
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..options.clients {
        let (client, next, url) = (
            client.clone(),
            Arc::clone(&next),
            server.url("/api/v1/login"),
        );
        let (users, requests) = (options.users, options.requests);
        clients.spawn(async move {
            let mut ok = 0;
            let mut failed = 0;
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return Ok::<_, anyhow::Error>((ok, failed, latencies));
                }
                let user = n % users;
                let began = Instant::now();
                let response = client
                    .post(&url)
                    .json(&json!({"username": username(user), "password": password(user)}))
                    .send()
                    .await?;
                let status = response.status();
                // Read the body, so the connection can be reused.
                let _ = response.bytes().await?;
                latencies.push(began.elapsed());
                if status == StatusCode::OK {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
        });
    }
    let mut logins = Logins {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        server_cpu: Duration::ZERO,
        bench_cpu: Duration::ZERO,
        switches: 0,
    };
    while let Some(done) = clients.join_next().await {
        let (ok, failed, latencies) = done.context("a client panicked")??;
        logins.ok += ok;
        logins.failed += failed;
        logins.latencies.extend(latencies);
    }
    logins.elapsed = started.elapsed();
    logins.server_cpu = server.cpu_time()?.saturating_sub(server_cpu);
    logins.switches = server.context_switches()?.saturating_sub(switches);
    logins.bench_cpu = server::cpu_time_of("self")?.saturating_sub(bench_cpu);
    logins.latencies.sort_unstable();
    anyhow::ensure!(
        logins.ok > 0,
        "no login succeeded; see {}",
        server.log_path.display()
    );
    Ok(logins)
}

fn username(n: u64) -> String {
    format!("loginbench{n}")
}

/// Long enough for the policy (15 characters), not on the common list, not the username.
fn password(n: u64) -> String {
    format!("plum-orbit-cactus-harbor-{n}")
}

async fn create_users(
    options: &Options,
    server: &Server,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..options.clients.min(options.users) {
        let (client, next, url) = (
            client.clone(),
            Arc::clone(&next),
            server.url("/api/v1/users"),
        );
        let users = options.users;
        clients.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= users {
                    return Ok::<_, anyhow::Error>(());
                }
                let response = client
                    .post(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({
                        "username": username(n),
                        "email": format!("{}@example.com", username(n)),
                        "password": password(n),
                    }))
                    .send()
                    .await?;
                let status = response.status();
                let body = response.text().await?;
                anyhow::ensure!(
                    status == StatusCode::CREATED,
                    "creating user {n}: {status} {body}"
                );
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.context("a client panicked")??;
    }
    Ok(())
}

struct RawHashes {
    verifications: u64,
    threads: usize,
    cpu: Duration,
    elapsed: Duration,
}

/// argon2id verifications of a right password against a PHC hash with the server's
/// parameters, one thread per core, each on its own for `duration`, each reusing one working
/// memory (the server keeps its working memory too: without that, allocating and zeroing
/// 19 MiB a hash would make this reference slower than the machine's limit).
async fn raw_verifications(duration: Duration) -> anyhow::Result<RawHashes> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::task::spawn_blocking(move || {
        let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"keyledger-bench!")
            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        let secret = password(0);
        let phc = hasher
            .hash_password(secret.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
            .to_string();
        let cpu_before = server::cpu_time_of("self")?;
        let started = Instant::now();
        let counts = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<u64> {
                        let parsed =
                            PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("phc: {e}"))?;
                        let expected = parsed.hash.context("the PHC string has no hash")?;
                        let mut salt = [0u8; 64];
                        let salt = parsed
                            .salt
                            .context("the PHC string has no salt")?
                            .decode_b64(&mut salt)
                            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
                        // One working memory per thread, reused, as the server does: the
                        // fastest verification this machine can do.
                        let mut memory = vec![Block::default(); hasher.params().block_count()];
                        let mut output = vec![0u8; expected.len()];
                        let mut done = 0;
                        while started.elapsed() < duration {
                            hasher
                                .hash_password_into_with_memory(
                                    secret.as_bytes(),
                                    salt,
                                    &mut output,
                                    &mut memory,
                                )
                                .map_err(|e| anyhow::anyhow!("verification: {e}"))?;
                            anyhow::ensure!(
                                output == expected.as_bytes(),
                                "the reference verification failed"
                            );
                            done += 1;
                        }
                        Ok(done)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<u64>>>()
        })?;
        // Nothing else in this process works meanwhile, so its CPU time is the hashes'.
        let cpu = server::cpu_time_of("self")?.saturating_sub(cpu_before);
        Ok(RawHashes {
            verifications: counts.iter().sum(),
            threads,
            cpu,
            // The last verification of each thread ends after `duration`; the wall time
            // covers it.
            elapsed: started.elapsed(),
        })
    })
    .await
    .context("the hashing reference panicked")?
}

fn print(options: &Options, logins: &Logins, raw_halves: &[RawHashes; 2], busy: Option<f64>) {
    let login_rate = report::rate(logins.ok, logins.elapsed);
    let [before, after] = raw_halves
        .each_ref()
        .map(|r| report::rate(r.verifications, r.elapsed));
    let raw = RawHashes {
        verifications: raw_halves.iter().map(|r| r.verifications).sum(),
        threads: raw_halves[0].threads,
        cpu: raw_halves.iter().map(|r| r.cpu).sum(),
        elapsed: raw_halves.iter().map(|r| r.elapsed).sum(),
    };
    let raw_rate = report::rate(raw.verifications, raw.elapsed);
    let ratio = login_rate / raw_rate.max(f64::MIN_POSITIVE);
    let mut table = Table::new(
        format!(
            "password logins/s through the HTTP API ({} server, {} clients, {} users)",
            options.backend, options.clients, options.users
        ),
        &["figure", "value", "reference", "ratio", "target", "verdict"],
    );
    table.row(vec![
        "`POST /api/v1/login` (right password)".into(),
        per_second(login_rate),
        format!(
            "raw argon2id verify, {} threads, memory reused: {} ({} before, {} after)",
            raw.threads,
            per_second(raw_rate),
            per_second(before),
            per_second(after)
        ),
        format!("{ratio:.2}"),
        format!("≥ {TARGET_RATIO}"),
        format!("**{}**", report::at_least(ratio, TARGET_RATIO)),
    ]);
    let cpu_per_login = logins.server_cpu.as_secs_f64() / logins.ok.max(1) as f64;
    let cpu_per_hash = raw.cpu.as_secs_f64() / raw.verifications.max(1) as f64;
    table.row(vec![
        "server CPU per login".into(),
        format!("{:.1} ms", cpu_per_login * 1000.0),
        format!("CPU per raw verify: {:.1} ms", cpu_per_hash * 1000.0),
        format!("{:.2}", cpu_per_login / cpu_per_hash.max(f64::MIN_POSITIVE)),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        "server context switches per login".into(),
        report::number(logins.switches as f64 / logins.ok.max(1) as f64),
        "raw verify: none (one thread per core, nothing else)".into(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        "login latency p50 / p99".into(),
        format!(
            "{} / {}",
            report::millis(report::percentile(&logins.latencies, 50.0)),
            report::millis(report::percentile(&logins.latencies, 99.0))
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.note(format!(
        "{} logins answered 200, {} did not, in {}; the benchmark's own HTTP clients used {:.1} s of CPU \
         on the same cores during that time (the server {:.1} s)",
        logins.ok,
        logins.failed,
        report::seconds(logins.elapsed),
        logins.bench_cpu.as_secs_f64(),
        logins.server_cpu.as_secs_f64(),
    ));
    table.note(format!(
        "argon2id m={M_COST_KIB} KiB, t={T_COST}, p={P_COST} (the server's defaults); the \
         server allows one hash per core at a time (`KEYLEDGER_HASH_CONCURRENCY` unset)"
    ));
    table.note(report::load_note(busy));
    table.print();
}
