//! Signed checkpoints and `keyledger replay verify`: each kind of tampering, done to the real
//! database, is found and named by its position.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    a_modified_event_is_named_by_its_position,
    a_deleted_event_is_named_by_its_position,
    a_reordered_pair_is_named_by_its_position,
    an_inserted_event_is_named_by_its_position,
    a_truncated_tail_is_found_only_against_a_held_checkpoint,
    a_rewritten_chain_is_found_only_against_signed_checkpoints,
    checkpoints_are_signed_on_demand_and_verify_against_the_public_key,
    checkpoints_are_signed_at_an_interval_even_when_nothing_happens,
    a_new_signing_key_is_announced_as_a_rotation,
);

pub async fn some_history(app: &TestApp) {
    for name in ["ada", "grace", "hedy"] {
        assert_eq!(
            app.create_user(name, Some(GOOD_PASSWORD)).await.status,
            StatusCode::CREATED
        );
        app.login(name, GOOD_PASSWORD).await;
        app.login(name, "wrong-password-guess").await;
    }
}

pub async fn public_key(app: &TestApp) -> String {
    let out = app.replay(&["public-key"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");
    key
}

/// Signs a checkpoint now and keeps it in a file, as an auditor would.
pub async fn held_checkpoint(app: &TestApp) -> (Value, String) {
    let signed = app.admin(Method::POST, "/api/v1/checkpoints", None).await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.text());
    let path = std::env::temp_dir().join(format!(
        "keyledger-checkpoint-{}.json",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&path, &signed.bytes).unwrap();
    (signed.json(), path.display().to_string())
}

pub async fn tamper(app: &TestApp, statements: &[String]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    for sql in statements {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// The first failed login: a user's event with events before and after it.
async fn victim(app: &TestApp) -> u64 {
    let head = app.head().await;
    let audit = app
        .admin_read("/api/v1/audit?type=user.login.failed&limit=1", head)
        .await;
    audit.json()["items"][0]["position"].as_u64().unwrap()
}

pub async fn verify(app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = app.replay(&all).await;
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn assert_broken(app: &TestApp, position: u64, words: &str) {
    let (ok, out) = verify(app, &[]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("chain broken at position {position}: {words}")),
        "{out}"
    );
}

/// The auditor's script printed in docs/log-format.md, run as printed on a real log (no code
/// of ours): it accepts the untouched chain and names the first modified event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_in_the_log_format_doc_checks_a_real_log() {
    let app = app(Backend::Sqlite).await;
    some_history(&app).await;
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/log-format.md"))
        .unwrap();
    let start = doc.find("```python\n").unwrap() + "```python\n".len();
    let script = &doc[start..][..doc[start..].find("\n```").unwrap()];
    let path = std::env::temp_dir().join(format!(
        "keyledger-verify-chain-{}.py",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&path, script).unwrap();
    let database = app.database_url.strip_prefix("sqlite://").unwrap();
    let run = || {
        std::process::Command::new("python3")
            .arg(&path)
            .arg(database)
            .output()
            .unwrap()
    };
    let untouched = run();
    let said = String::from_utf8_lossy(&untouched.stdout).into_owned();
    assert!(untouched.status.success(), "{said}");
    assert!(said.starts_with("OK: "), "{said}");

    let p = victim(&app).await;
    tamper(
        &app,
        &[format!(
            "UPDATE events SET payload = replace(payload, 'bad_password', 'unknown_user') \
             WHERE position = {p}"
        )],
    )
    .await;
    let tampered = run();
    let said = String::from_utf8_lossy(&tampered.stdout).into_owned();
    assert!(!tampered.status.success(), "{said}");
    assert!(
        said.starts_with(&format!("BROKEN at position {p}")),
        "{said}"
    );
    std::fs::remove_file(&path).unwrap();
}

async fn a_modified_event_is_named_by_its_position(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    assert!(verify(&app, &[]).await.0);
    let p = victim(&app).await;
    tamper(
        &app,
        &[format!(
            "UPDATE events SET payload = replace(payload, 'bad_password', 'unknown_user') \
             WHERE position = {p}"
        )],
    )
    .await;
    assert_broken(&app, p, &format!("event {p} was modified")).await;
}

async fn a_deleted_event_is_named_by_its_position(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let p = victim(&app).await;
    tamper(&app, &[format!("DELETE FROM events WHERE position = {p}")]).await;
    assert_broken(&app, p, &format!("event {p} was deleted")).await;
}

async fn a_reordered_pair_is_named_by_its_position(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let p = victim(&app).await;
    let q = p + 1;
    tamper(
        &app,
        &[
            format!("UPDATE events SET position = -1 WHERE position = {p}"),
            format!("UPDATE events SET position = {p} WHERE position = {q}"),
            format!("UPDATE events SET position = {q} WHERE position = -1"),
        ],
    )
    .await;
    assert_broken(&app, p, &format!("events {p} and {q} were reordered")).await;
}

async fn an_inserted_event_is_named_by_its_position(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let p = victim(&app).await;
    let forged_id = uuid::Uuid::now_v7();
    tamper(
        &app,
        &[
            // Make room at p, keeping positions gap-free (two steps: no key collides).
            format!("UPDATE events SET position = -position - 1 WHERE position >= {p}"),
            "UPDATE events SET position = -position WHERE position < 0".to_owned(),
            format!(
                "INSERT INTO events (position, event_id, tenant_id, stream_kind, stream_id, \
                 stream_version, event_type, schema_version, recorded_at, payload, metadata, \
                 prev_hash, hash) SELECT {p}, '{forged_id}', tenant_id, stream_kind, 'forged', \
                 stream_version, event_type, schema_version, recorded_at, payload, metadata, \
                 prev_hash, hash FROM events WHERE position = {}",
                p + 1
            ),
        ],
    )
    .await;
    assert_broken(&app, p, &format!("an event was inserted at position {p}")).await;
}

async fn a_truncated_tail_is_found_only_against_a_held_checkpoint(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let key = public_key(&app).await;
    let (checkpoint, file) = held_checkpoint(&app).await;
    let signed = checkpoint["position"].as_u64().unwrap();
    app.create_user("linus", None).await;
    let (ok, out) = verify(&app, &["--public-key", &key, "--checkpoint", &file]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("cover the log up to position {signed}")),
        "{out}"
    );

    let keep = signed - 3;
    tamper(
        &app,
        &[format!("DELETE FROM events WHERE position > {keep}")],
    )
    .await;
    // The chain that is left is intact: only the held checkpoint shows what is missing.
    let (ok, out) = verify(&app, &[]).await;
    assert!(ok, "{out}");
    let (ok, out) = verify(&app, &["--public-key", &key, "--checkpoint", &file]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "chain broken at position {}: the log was truncated: it ends at position {keep}",
            keep + 1
        )),
        "{out}"
    );
}

async fn checkpoints_are_signed_on_demand_and_verify_against_the_public_key(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let key = public_key(&app).await;
    let refused = app
        .request(Method::POST, "/api/v1/checkpoints", None, None, &[])
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let missing = app
        .admin(Method::GET, "/api/v1/checkpoints/latest", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let head = app.head().await;
    let (first, file) = held_checkpoint(&app).await;
    assert_eq!(first["position"].as_u64(), Some(head));
    assert_eq!(first["public_key"].as_str(), Some(key.as_str()));
    assert_eq!(first["event_position"].as_u64(), Some(head + 1));
    let (second, _) = held_checkpoint(&app).await;
    assert_eq!(second["position"].as_u64(), Some(head + 1));

    let latest = app
        .admin(Method::GET, "/api/v1/checkpoints/latest", None)
        .await;
    assert_eq!(latest.json(), second);
    let page = app
        .admin(Method::GET, "/api/v1/checkpoints?limit=1", None)
        .await
        .json();
    assert_eq!(page["items"][0], first);
    let cursor = page["next_cursor"].as_u64().unwrap();
    let next = app
        .admin(
            Method::GET,
            &format!("/api/v1/checkpoints?limit=1&cursor={cursor}"),
            None,
        )
        .await
        .json();
    assert_eq!(next["items"][0], second);
    assert_eq!(next["next_cursor"], Value::Null);

    let (ok, out) = verify(&app, &["--public-key", &key]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("checkpoints: 2 verified, 0 not checked"),
        "{out}"
    );
    let (ok, out) = verify(
        &app,
        &[
            "--public-key",
            &key,
            "--checkpoint",
            &file,
            "--from-checkpoint",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("chain ok: 2 events verified"), "{out}");

    // Another key: the log's checkpoints, and the one held, are refused.
    let other = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    let (ok, out) = verify(&app, &["--public-key", other]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "chain broken at position {}: the checkpoint at position {} does not verify",
            head + 1,
            head + 1
        )),
        "{out}"
    );
    let (ok, out) = verify(&app, &["--public-key", other, "--checkpoint", &file]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("the checkpoint you hold does not verify"),
        "{out}"
    );

    // A held checkpoint whose signature was edited.
    let mut forged = first.clone();
    forged["position"] = Value::from(head - 1);
    let (ok, out) = verify(
        &app,
        &["--public-key", &key, "--checkpoint", &forged.to_string()],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("signature does not verify"), "{out}");

    // The private key is never logged.
    let seed = std::fs::read_to_string(key_file(&app)).unwrap();
    assert!(!app.server_log().contains(seed.trim()));
}

pub fn key_file(app: &TestApp) -> std::path::PathBuf {
    match app.database_url.strip_prefix("sqlite://") {
        Some(path) => std::path::Path::new(path)
            .parent()
            .unwrap()
            .join("keyledger-signing.key"),
        None => std::path::PathBuf::from("data/keyledger-signing.key"),
    }
}

async fn checkpoints_are_signed_at_an_interval_even_when_nothing_happens(backend: Backend) {
    let app = TestApp::spawn_with(
        crate::BIN,
        backend,
        &[("KEYLEDGER_CHECKPOINT_INTERVAL_SECONDS", "1")],
    )
    .await;
    let mut items = Vec::new();
    for _ in 0..600 {
        items = app
            .admin(Method::GET, "/api/v1/checkpoints", None)
            .await
            .json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if items.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(items.len() >= 3, "{items:?}");
    // Nothing but checkpoints happened: each signs the one before it.
    assert_eq!(items[1]["position"], items[0]["event_position"]);
    assert_eq!(items[2]["position"], items[1]["event_position"]);
    let key = public_key(&app).await;
    let (ok, out) = verify(&app, &["--public-key", &key]).await;
    assert!(ok, "{out}");
}

async fn a_new_signing_key_is_announced_as_a_rotation(backend: Backend) {
    let dir =
        std::env::temp_dir().join(format!("keyledger-keys-{}", uuid::Uuid::now_v7().simple()));
    let first_file = dir.join("first.key");
    let mut app = TestApp::spawn_with(
        crate::BIN,
        backend,
        &[("KEYLEDGER_SIGNING_KEY_FILE", first_file.to_str().unwrap())],
    )
    .await;
    let first_key = key_of(&app, &first_file).await;
    held_checkpoint(&app).await;
    let second_file = dir.join("second.key");
    app.set_env("KEYLEDGER_SIGNING_KEY_FILE", second_file.to_str().unwrap());
    app.restart_after_kill().await;
    // A restart with the same key announces nothing new.
    app.restart_after_kill().await;
    let second_key = key_of(&app, &second_file).await;
    assert_ne!(first_key, second_key);
    held_checkpoint(&app).await;

    let head = app.head().await;
    let rotations = app
        .admin_read("/api/v1/audit?type=log.signing_key.rotated", head)
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rotations.len(), 2, "{rotations:?}");
    let (ok, out) = verify(&app, &["--public-key", &second_key]).await;
    assert!(!ok, "{out}");
    let (ok, out) = verify(
        &app,
        &["--public-key", &first_key, "--public-key", &second_key],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("checkpoints: 2 verified"), "{out}");
}

async fn key_of(app: &TestApp, file: &std::path::Path) -> String {
    let out = app
        .replay(&["public-key", "--signing-key", file.to_str().unwrap()])
        .await;
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A forger who can write the whole table edits an event and recomputes every hash after it:
/// the chain verifies again, but no signed checkpoint can be recomputed without the key.
async fn a_rewritten_chain_is_found_only_against_signed_checkpoints(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let key = public_key(&app).await;
    let (_, held) = held_checkpoint(&app).await;
    let p = victim(&app).await;
    tamper(
        &app,
        &[format!(
            "UPDATE events SET payload = replace(payload, 'bad_password', 'unknown_user') \
             WHERE position = {p}"
        )],
    )
    .await;
    rechain_from(&app, p).await;
    // The chain alone cannot tell.
    let (ok, out) = verify(&app, &[]).await;
    assert!(ok, "{out}");
    // The checkpoint event inside the log signs the old head.
    let (ok, out) = verify(&app, &["--public-key", &key]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("signs a different hash for position"), "{out}");
    // And the checkpoint held outside the database, even if the forger deleted the ones inside.
    tamper(
        &app,
        &["DELETE FROM events WHERE event_type = 'log.checkpoint.signed'".to_owned()],
    )
    .await;
    let (ok, out) = verify(&app, &["--public-key", &key, "--checkpoint", &held]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("differs from the signed checkpoint you hold"),
        "{out}"
    );
}

/// Recomputes `prev_hash` and `hash` of every event from `from` on, as a forger would.
async fn rechain_from(app: &TestApp, from: u64) {
    let db = keyledger_store::Database::connect(&app.database_url)
        .await
        .unwrap();
    let log = keyledger_store::EventLog::open(db).await.unwrap();
    let events = log.read_all(0, 100_000).await.unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let mut prev = events[(from - 2) as usize].hash;
    for event in events.iter().filter(|e| e.position >= from) {
        let hash = keyledger_store::chain::event_hash(&prev, event);
        let sql = if app.database_url.starts_with("sqlite") {
            "UPDATE events SET prev_hash = ?, hash = ? WHERE position = ?"
        } else {
            "UPDATE events SET prev_hash = $1, hash = $2 WHERE position = $3"
        };
        sqlx::query(sql)
            .bind(prev.to_vec())
            .bind(hash.to_vec())
            .bind(event.position as i64)
            .execute(&pool)
            .await
            .unwrap();
        prev = hash;
    }
    pool.close().await;
}
