//! WebAuthn login finishes per second through the real server's HTTP API
//! (`POST /login/mfa/webauthn/finish`: take the challenge, verify the signature, record
//! `user.webauthn.used` and `user.login.succeeded` under the user stream's concurrency, start
//! a session), beside raw webauthn-rs `finish_passkey_authentication` calls in this process
//! (the signature check alone) on the same machine.
//!
//! The password step and the authenticator's signing happen before the clock starts: only the
//! finish calls are timed. Each user's assertions are sent in the order the key signed them,
//! by one client, since a sign count that goes backwards is refused as a possible clone.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{Url, Uuid, WebauthnBuilder};

use crate::report::{self, Table, per_second, progress};
use crate::scratch::{Backend, Places};
use crate::server::{self, ADMIN_TOKEN, Server, ServerOptions};

const ORIGIN: &str = "https://bench.example.com";
const RP_ID: &str = "example.com";

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Users, each with one software key.
    #[arg(long, default_value_t = 16)]
    pub users: u64,
    /// Login finishes sent in total.
    #[arg(long, default_value_t = 1000)]
    pub assertions: u64,
    /// Concurrent HTTP clients (at most one per user).
    #[arg(long, default_value_t = 8)]
    pub clients: u64,
    /// Raw verifications in the in-process reference.
    #[arg(long, default_value_t = 5000)]
    pub raw: u64,
    /// The server's database.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
    #[command(flatten)]
    pub server: ServerOptions,
}

/// One prepared login: its MFA token, challenge and the key's signed answer.
struct Prepared {
    mfa_token: String,
    ceremony_id: String,
    credential: Value,
}

pub async fn run(options: &Options, places: &Places) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.users > 0 && options.assertions > 0 && options.clients > 0 && options.raw > 0,
        "--users, --assertions, --clients and --raw must be positive"
    );
    let bin = options.server.binary().await?;
    let busy = report::cpu_busy().await;
    let scratch = places.fresh(options.backend).await?;
    let log_path = scratch
        .dir()
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join(format!("server-assertions-{}.log", std::process::id()));
    let server = Server::start(&bin, &scratch.url, &log_path).await?;
    let client = server::client()?;
    let result = measure(options, &server, &client).await;
    server.stop().await?;
    let (ok, elapsed) = result?;
    progress(format!("{} raw webauthn-rs verifications", options.raw));
    let raw = tokio::task::spawn_blocking({
        let n = options.raw;
        move || raw_verifications(n)
    })
    .await??;
    scratch.remove().await?;
    let served = report::rate(ok, elapsed);
    let raw_rate = report::rate(options.raw, raw);
    let mut table = Table::new(
        format!(
            "WebAuthn login finishes/s through the HTTP API ({:?} server, {} clients, {} users)",
            options.backend, options.clients, options.users
        ),
        &["what", "per second", "share of raw"],
    );
    table.row(vec![
        "`POST /login/mfa/webauthn/finish` (verify + 2 events + session)".into(),
        per_second(served),
        format!("{:.0} %", 100.0 * served / raw_rate),
    ]);
    table.row(vec![
        "raw `finish_passkey_authentication`, one thread".into(),
        per_second(raw_rate),
        "100 %".into(),
    ]);
    table.note(format!(
        "{ok} finishes in {}; {}",
        report::seconds(elapsed),
        report::load_note(busy)
    ));
    table.print();
    Ok(())
}

async fn call(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = client.post(server.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{path}: {status} {value}");
    Ok(value)
}

fn soft_key_answer(
    key: &mut SoftPasskey,
    options: &Value,
    register: bool,
) -> anyhow::Result<Value> {
    let origin = Url::parse(ORIGIN)?;
    Ok(if register {
        serde_json::to_value(
            key.do_registration(origin, serde_json::from_value(options.clone())?)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        )?
    } else {
        serde_json::to_value(
            key.do_authentication(origin, serde_json::from_value(options.clone())?)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        )?
    })
}

async fn measure(
    options: &Options,
    server: &Server,
    client: &reqwest::Client,
) -> anyhow::Result<(u64, Duration)> {
    let admin = |path: &str, body: Value| {
        client
            .request(reqwest::Method::PUT, server.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let put = admin(
        "/api/v1/settings/webauthn",
        json!({"enabled": true, "relying_party_id": RP_ID, "relying_party_name": null,
               "allowed_origins": [ORIGIN], "debug": false, "self_registration": true,
               "mfa_requirement": "optional",
               "bootstrap": {"enabled": false, "attachment": "any", "user_verification": "required"},
               "reauthentication": {"enabled": true, "attachment": "any", "user_verification": "required"}}),
    )
    .await?;
    anyhow::ensure!(put.status() == StatusCode::OK, "settings refused");
    progress(format!("{} users with a software key each", options.users));
    let mut keys = Vec::new();
    for n in 0..options.users {
        let name = format!("keybench{n}");
        let password = format!("plum-orbit-cactus-harbor-{n}");
        let created = client
            .post(server.url("/api/v1/users"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"username": name, "password": password}))
            .send()
            .await?;
        anyhow::ensure!(created.status() == StatusCode::CREATED, "user not created");
        let login = call(
            client,
            server,
            "/api/v1/login",
            None,
            json!({"username": name, "password": password}),
        )
        .await?;
        let token = login["token"].as_str().context("no session")?.to_owned();
        let mut key = SoftPasskey::new(true);
        let begin = call(
            client,
            server,
            "/api/v1/me/credentials/register/begin",
            Some(&token),
            json!({"kind": "security_key"}),
        )
        .await?;
        let credential = soft_key_answer(&mut key, &begin["options"], true)?;
        call(client, server, "/api/v1/me/credentials/register/finish", Some(&token),
             json!({"ceremony_id": begin["ceremony_id"], "label": "bench", "credential": credential})).await?;
        keys.push((name, password, key));
    }
    progress(format!(
        "preparing {} logins (password step, challenge, signature)",
        options.assertions
    ));
    let clients = options.clients.min(options.users);
    let mut queues: Vec<Vec<Prepared>> = (0..clients).map(|_| Vec::new()).collect();
    for n in 0..options.assertions {
        let user = usize::try_from(n % options.users)?;
        let (name, password, key) = &mut keys[user];
        let login = call(
            client,
            server,
            "/api/v1/login",
            None,
            json!({"username": name, "password": password}),
        )
        .await?;
        let mfa_token = login["mfa_token"]
            .as_str()
            .context("no MFA token")?
            .to_owned();
        let begin = call(
            client,
            server,
            "/api/v1/login/mfa/webauthn/begin",
            None,
            json!({"mfa_token": mfa_token}),
        )
        .await?;
        let credential = soft_key_answer(key, &begin["options"], false)?;
        let queue = user % usize::try_from(clients)?;
        queues[queue].push(Prepared {
            mfa_token,
            ceremony_id: begin["ceremony_id"]
                .as_str()
                .context("no ceremony")?
                .to_owned(),
            credential,
        });
    }
    server
        .wait_for_views(client, 1, Duration::from_secs(120), |_, _| {})
        .await?;
    progress("timing the finishes");
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for queue in queues {
        let (client, url) = (
            client.clone(),
            server.url("/api/v1/login/mfa/webauthn/finish"),
        );
        tasks.spawn(async move {
            let mut ok = 0u64;
            for prepared in queue {
                let response = client
                    .post(&url)
                    .json(&json!({"mfa_token": prepared.mfa_token, "ceremony_id": prepared.ceremony_id,
                                  "credential": prepared.credential}))
                    .send()
                    .await?;
                let status = response.status();
                let _ = response.bytes().await?;
                anyhow::ensure!(status == StatusCode::OK, "a finish was refused: {status}");
                ok += 1;
            }
            Ok::<_, anyhow::Error>(ok)
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done.context("a client panicked")??;
    }
    Ok((ok, started.elapsed()))
}

/// The signature check alone: webauthn-rs verifying `n` prepared assertions of one key.
fn raw_verifications(n: u64) -> anyhow::Result<Duration> {
    let webauthn = WebauthnBuilder::new(RP_ID, &Url::parse(ORIGIN)?)?.build()?;
    let mut key = SoftPasskey::new(true);
    let (options, registration) =
        webauthn.start_passkey_registration(Uuid::nil(), "raw", "raw", None)?;
    let answer = key
        .do_registration(Url::parse(ORIGIN)?, options)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let passkey = webauthn.finish_passkey_registration(&answer, &registration)?;
    let mut prepared = Vec::new();
    for _ in 0..n {
        let (options, state) =
            webauthn.start_passkey_authentication(std::slice::from_ref(&passkey))?;
        let credential = key
            .do_authentication(Url::parse(ORIGIN)?, options)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        prepared.push((credential, state));
    }
    let started = Instant::now();
    for (credential, state) in &prepared {
        webauthn.finish_passkey_authentication(credential, state)?;
    }
    Ok(started.elapsed())
}
