//! The public catalog of webhook payloads: one JSON Schema per event type, generated from the
//! domain's event types (so it cannot drift from what is sent), kept in `docs/schemas/`. A test
//! checks the files are current and that every type has an example in `docs/events.md` that
//! parses as that type.

use std::collections::BTreeMap;

use keyledger_domain::application::ApplicationEvent;
use keyledger_domain::tenant::TenantEvent;
use keyledger_domain::user::UserEvent;
use keyledger_domain::webhook::WebhookSubscriptionEvent;
use serde::de::Error as _;
use serde_json::{Value, json};

use super::payload::PAYLOAD_VERSION;

/// Each domain event enum's schema: a `oneOf` of `{type: const, data: ...}`.
fn event_enums() -> Vec<Value> {
    [
        schemars::schema_for!(UserEvent),
        schemars::schema_for!(TenantEvent),
        schemars::schema_for!(WebhookSubscriptionEvent),
        schemars::schema_for!(ApplicationEvent),
    ]
    .into_iter()
    .map(|schema| schema.to_value())
    .collect()
}

/// The log's own events, written by the server rather than decided by an aggregate: their
/// payloads are JSON the server builds, described here by hand.
fn log_events() -> Vec<(&'static str, &'static str, Value)> {
    let hex = |bytes: usize| json!({ "type": "string", "pattern": format!("^[0-9a-f]{{{}}}$", bytes * 2) });
    let time = json!({ "type": "string", "format": "date-time" });
    vec![
        (
            "log.checkpoint.signed",
            "The server signed the chain head (see docs/log-format.md for the signed bytes).",
            json!({
                "type": "object",
                "properties": {
                    "position": { "type": "integer", "minimum": 0 },
                    "hash": hex(32),
                    "signed_at": time,
                    "public_key": hex(32),
                    "signature": hex(64)
                },
                "required": ["position", "hash", "signed_at", "public_key", "signature"]
            }),
        ),
        (
            "log.signing_key.rotated",
            "The server signs checkpoints with a key the log did not name before.",
            json!({
                "type": "object",
                "properties": {
                    "public_key": hex(32),
                    "previous_public_key": { "anyOf": [hex(32), { "type": "null" }] },
                    "at": time
                },
                "required": ["public_key", "at"]
            }),
        ),
        (
            "system.admin_token.generated",
            "An admin token was generated at a first start (only its hash is kept).",
            json!({
                "type": "object",
                "properties": { "at": time },
                "required": ["at"]
            }),
        ),
    ]
}

/// The webhook body's JSON Schema for every event type, by type name.
pub fn schemas() -> BTreeMap<String, Value> {
    let mut catalog = BTreeMap::new();
    for (name, description, data) in log_events() {
        catalog.insert(
            name.to_owned(),
            body_schema(name, Some(&Value::from(description)), data),
        );
    }
    for enum_schema in event_enums() {
        let defs = enum_schema.get("$defs").cloned().unwrap_or(json!({}));
        let variants = enum_schema["oneOf"].as_array().cloned().unwrap_or_default();
        for variant in variants {
            let Some(name) = variant["properties"]["type"]["const"].as_str() else {
                continue;
            };
            let data = variant["properties"]["data"].clone();
            let mut schema = body_schema(name, variant.get("description"), data);
            // Only the definitions this type uses, so each file stands alone and stays small.
            let used: serde_json::Map<String, Value> = defs
                .as_object()
                .map(|all| {
                    all.iter()
                        .filter(|(def, _)| uses(&schema, &defs, def))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if !used.is_empty() {
                schema["$defs"] = Value::Object(used);
            }
            catalog.insert(name.to_owned(), schema);
        }
    }
    catalog
}

/// Whether `def` is reachable from `schema`'s references, through other definitions.
fn uses(schema: &Value, defs: &Value, def: &str) -> bool {
    let mut seen = Vec::new();
    let mut pending = refs(schema);
    while let Some(name) = pending.pop() {
        if name == def {
            return true;
        }
        if !seen.contains(&name) {
            pending.extend(refs(&defs[&name]));
            seen.push(name);
        }
    }
    false
}

fn refs(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, v)| {
                if key == "$ref" {
                    v.as_str()
                        .and_then(|r| r.strip_prefix("#/$defs/"))
                        .map(|r| vec![r.to_owned()])
                        .unwrap_or_default()
                } else {
                    refs(v)
                }
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}

fn body_schema(name: &str, description: Option<&Value>, data: Value) -> Value {
    let hash = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://keyledger.invalid/schemas/{name}.json"),
        "title": name,
        "description": description.and_then(Value::as_str).unwrap_or("A keyledger webhook delivery."),
        "type": "object",
        "properties": {
            "payload_version": { "const": PAYLOAD_VERSION },
            "id": uuid,
            "type": { "const": name },
            "schema_version": { "type": "integer", "minimum": 1 },
            "time": { "type": "string", "format": "date-time" },
            "tenant_id": uuid,
            "position": { "type": "integer", "minimum": 1 },
            "stream": {
                "type": "object",
                "properties": {
                    "kind": { "type": "string" },
                    "id": { "type": "string" },
                    "version": { "type": "integer", "minimum": 1 }
                },
                "required": ["kind", "id", "version"]
            },
            "hash": hash,
            "prev_hash": hash,
            "metadata": {
                "type": "object",
                "properties": {
                    "actor": {
                        "type": "object",
                        "properties": {
                            "kind": { "enum": ["admin", "self", "system"] },
                            "id": { "type": ["string", "null"] }
                        },
                        "required": ["kind"]
                    },
                    "request_ip": { "type": ["string", "null"] },
                    "user_agent": { "type": ["string", "null"] },
                    "correlation_id": { "type": ["string", "null"] }
                },
                "required": ["actor"]
            },
            "data": data
        },
        "required": [
            "payload_version", "id", "type", "schema_version", "time", "tenant_id", "position",
            "stream", "hash", "prev_hash", "metadata", "data"
        ]
    })
}

/// Parses `{"type", "data"}` as the domain event it names; `Err` when no event type accepts it.
pub fn parse_example(example: &Value) -> Result<String, String> {
    let name = example["type"].as_str().ok_or("no type")?.to_owned();
    let parsed = match name.split('.').next() {
        Some("user") => serde_json::from_value::<UserEvent>(example.clone()).map(|_| ()),
        Some("tenant") => serde_json::from_value::<TenantEvent>(example.clone()).map(|_| ()),
        Some("application") => {
            serde_json::from_value::<ApplicationEvent>(example.clone()).map(|_| ())
        }
        Some("webhook") => {
            serde_json::from_value::<WebhookSubscriptionEvent>(example.clone()).map(|_| ())
        }
        // The log's own events have no Rust type to parse into; their examples must at least
        // carry every field their schema requires.
        Some("log") | Some("system") => {
            let Some((_, _, schema)) = log_events().into_iter().find(|(n, _, _)| *n == name) else {
                return Err(format!("{name}: no such event"));
            };
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            match required
                .iter()
                .filter_map(Value::as_str)
                .find(|field| example["data"].get(field).is_none())
            {
                Some(field) => Err(format!("{name}: missing field `{field}`")),
                None => Ok(()),
            }
            .map_err(serde_json::Error::custom)
        }
        _ => return Err(format!("{name}: not an event of the catalog")),
    };
    parsed
        .map(|()| name.clone())
        .map_err(|e| format!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    fn docs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    /// `KEYLEDGER_BLESS=1 cargo test -p keyledger-projections catalog` rewrites the files.
    #[test]
    fn the_schema_files_are_current() {
        let dir = docs().join("schemas");
        let bless = std::env::var_os("KEYLEDGER_BLESS").is_some();
        let catalog = schemas();
        assert!(catalog.len() >= 20, "every event type has a schema");
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(&dir).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
        for (name, schema) in &catalog {
            let path = dir.join(format!("{name}.json"));
            let text = format!("{}\n", serde_json::to_string_pretty(schema).unwrap());
            if bless {
                std::fs::write(&path, &text).unwrap();
            }
            let kept = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                kept,
                text,
                "{} is stale: rerun with KEYLEDGER_BLESS=1",
                path.display()
            );
        }
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, catalog.len(), "a schema file has no event type");
    }

    /// Every example in `docs/events.md` parses as the event it names, and every event type
    /// has one.
    #[test]
    fn every_type_has_an_example_that_parses() {
        let text = std::fs::read_to_string(docs().join("events.md")).unwrap();
        let mut examples = BTreeSet::new();
        for block in text.split("```json").skip(1) {
            let json = block.split("```").next().unwrap();
            let value: Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("an example in events.md is not JSON: {e}\n{json}"));
            if value.get("data").is_none() {
                continue;
            }
            examples.insert(parse_example(&value).unwrap());
        }
        let types: BTreeSet<String> = schemas().into_keys().collect();
        let missing: Vec<_> = types.difference(&examples).collect();
        assert!(
            missing.is_empty(),
            "events.md has no example of {missing:?}"
        );
    }

    #[test]
    fn a_schema_stands_alone_with_the_definitions_it_uses() {
        let catalog = schemas();
        let created = &catalog["user.created"];
        assert_eq!(created["properties"]["type"]["const"], "user.created");
        let failed = &catalog["user.login.failed"];
        for name in refs(failed) {
            assert!(failed["$defs"].get(&name).is_some(), "{name} is defined");
        }
        assert!(
            created
                .get("$defs")
                .is_none_or(|d| d.get("LoginFailureReason").is_none()),
            "definitions it does not use are left out"
        );
    }
}
