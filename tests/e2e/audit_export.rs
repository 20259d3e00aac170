//! `keyledger replay export` and the offline verification of an export.

use reqwest::StatusCode;

use crate::audit_integrity::{held_checkpoint, public_key, some_history};
use crate::{Backend, TestApp, app, on_both_backends};

on_both_backends!(
    an_export_verifies_offline_and_a_tampered_line_is_named,
    exports_select_by_range_user_and_type_in_jsonl_and_csv,
);

fn temp_file(name: &str) -> String {
    std::env::temp_dir()
        .join(format!(
            "keyledger-{name}-{}",
            uuid::Uuid::now_v7().simple()
        ))
        .display()
        .to_string()
}

async fn export(app: &TestApp, args: &[&str]) -> String {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let out = app.replay(&all).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn verify_export(app: &TestApp, file: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["verify", "--export", file];
    args.extend_from_slice(extra);
    // No database is opened: the URL the harness adds points nowhere that exists.
    let out = tokio::process::Command::new(&app.bin)
        .arg("replay")
        .args(&args)
        .arg("--database")
        .arg("sqlite:///nonexistent/dir/none.db")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn an_export_verifies_offline_and_a_tampered_line_is_named(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let key = public_key(&app).await;
    let (checkpoint, held) = held_checkpoint(&app).await;
    let signed = checkpoint["position"].as_u64().unwrap();

    let file = temp_file("export.jsonl");
    export(
        &app,
        &["--format", "jsonl", "--from", "3", "--output", &file],
    )
    .await;
    let (ok, out) = verify_export(&app, &file, &["--public-key", &key]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("export verified against a signed checkpoint"),
        "{out}"
    );
    // Every event id is a UUIDv7: ids sort by the time they were made.
    let lines = std::fs::read_to_string(&file).unwrap();
    let ids: Vec<uuid::Uuid> = lines
        .lines()
        .filter_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            uuid::Uuid::parse_str(event["event_id"].as_str()?).ok()
        })
        .collect();
    assert!(ids.len() >= 5, "{lines}");
    assert!(ids.iter().all(|id| id.get_version_num() == 7), "{ids:?}");

    // A range that ends before any checkpoint in it: verified only with one held.
    let partial = temp_file("partial.jsonl");
    let to = signed.to_string();
    export(&app, &["--from", "2", "--to", &to, "--output", &partial]).await;
    let (ok, out) = verify_export(&app, &partial, &["--public-key", &key]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("export NOT verified: events 2 to"), "{out}");
    let (ok, out) = verify_export(
        &app,
        &partial,
        &["--public-key", &key, "--checkpoint", &held],
    )
    .await;
    assert!(ok, "{out}");

    // One edited line is named by its position; so is one removed line.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (index, line) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("bad_password"))
        .unwrap();
    let position: serde_json::Value = serde_json::from_str(line).unwrap();
    let position = position["position"].as_u64().unwrap();
    let mut edited = lines.clone();
    let changed = line.replace("bad_password", "unknown_user");
    edited[index] = &changed;
    let tampered = temp_file("tampered.jsonl");
    std::fs::write(&tampered, edited.join("\n")).unwrap();
    let (ok, out) = verify_export(&app, &tampered, &["--public-key", &key]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "export broken at position {position}: event {position} was modified"
        )),
        "{out}"
    );
    let mut removed = lines.clone();
    removed.remove(index);
    std::fs::write(&tampered, removed.join("\n")).unwrap();
    let (ok, out) = verify_export(&app, &tampered, &["--public-key", &key]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("event {position} was deleted")),
        "{out}"
    );
}

async fn exports_select_by_range_user_and_type_in_jsonl_and_csv(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let head = app.head().await;
    let users = app.admin_read("/api/v1/users?q=grace", head).await.json();
    let grace = users["items"][0]["id"].as_str().unwrap().to_owned();

    let all = export(&app, &["--format", "jsonl"]).await;
    let positions: Vec<u64> = all
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());

    let range = export(&app, &["--from", "2", "--to", "4"]).await;
    assert_eq!(range.lines().count(), 3);

    let mine = export(&app, &["--user", &grace]).await;
    assert_eq!(mine.lines().count(), 4, "{mine}");
    for line in mine.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["stream_id"], grace.as_str());
        assert!(e["hash"].as_str().unwrap().len() == 64);
    }
    let failures = export(&app, &["--type", "user.login.*"]).await;
    assert_eq!(failures.lines().count(), 6);

    let csv = export(&app, &["--format", "csv", "--type", "user.created"]).await;
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("position,event_id,tenant_id,"), "{csv}");
    assert_eq!(rows.len(), 4, "{csv}");
    // Payloads are JSON text with commas and quotes: quoted, quotes doubled.
    assert!(rows[1].contains(",\"{\"\""), "{}", rows[1]);

    let bad = app.replay(&["export", "--from", "yesterday"]).await;
    assert!(!bad.status.success());
    assert_eq!(
        app.create_user("zed", None).await.status,
        StatusCode::CREATED
    );
}
