//! `keyledger replay export`: events with their positions and hashes, as JSON lines or CSV.
//!
//! A JSON line carries every field the hash covers, byte for byte (the payload and metadata
//! as the stored JSON text, the time as integer microseconds), so a contiguous range verifies
//! offline against a signed checkpoint with no database (see `docs/log-format.md`).

use std::io::Write;

use chrono::{DateTime, Utc};
use keyledger_store::{EventLog, RecordedEvent};

use crate::ReplayError;

/// Events read per query while exporting.
const PAGE: u32 = 5_000;

pub use keyledger_store::ExportedEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

/// A bound of an export: a log position or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Position(u64),
    Time(DateTime<Utc>),
}

impl std::str::FromStr for Bound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(position) = s.parse() {
            return Ok(Self::Position(position));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?} is neither a log position nor an RFC 3339 time"))
    }
}

/// Which events to export. With `user` or `types`, the export is not a contiguous range
/// and does not verify offline.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// From this position, or events recorded at or after this time.
    pub from: Option<Bound>,
    /// Up to this position (inclusive), or events recorded before this time.
    pub to: Option<Bound>,
    pub user: Option<String>,
    /// Exact types, or prefixes written `user.login.*`.
    pub types: Vec<String>,
}

impl ExportFilter {
    fn keeps(&self, e: &RecordedEvent) -> bool {
        let after_from = match self.from {
            Some(Bound::Time(t)) => e.recorded_at >= t,
            _ => true,
        };
        let user = self
            .user
            .as_ref()
            .is_none_or(|u| e.stream.kind == "user" && &e.stream.id == u);
        let typed = self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => e.event_type.starts_with(prefix),
                None => &e.event_type == t,
            });
        after_from && user && typed
    }

    fn past_the_end(&self, e: &RecordedEvent) -> bool {
        match self.to {
            Some(Bound::Position(p)) => e.position > p,
            Some(Bound::Time(t)) => e.recorded_at >= t,
            None => false,
        }
    }
}

const CSV_HEADER: &str = "position,event_id,tenant_id,stream_kind,stream_id,stream_version,\
    type,schema_version,recorded_at,recorded_at_us,payload,metadata,prev_hash,hash";

/// Writes the selected events to `out` as they are read. Returns how many were written.
pub async fn export(
    log: &EventLog,
    filter: &ExportFilter,
    format: Format,
    out: &mut impl Write,
) -> Result<u64, ReplayError> {
    if format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut after = match filter.from {
        Some(Bound::Position(p)) => p.saturating_sub(1),
        _ => 0,
    };
    let mut written = 0;
    loop {
        let page = log.read_all(after, PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.position;
        for event in &page {
            if filter.past_the_end(event) {
                out.flush()?;
                return Ok(written);
            }
            if !filter.keeps(event) {
                continue;
            }
            let exported = ExportedEvent::from(event);
            match format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut *out, &exported)
                        .map_err(|e| ReplayError::Io(e.into()))?;
                    writeln!(out)?;
                }
                Format::Csv => write_csv(out, &exported)?,
            }
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}

fn write_csv(out: &mut impl Write, e: &ExportedEvent) -> std::io::Result<()> {
    let fields = [
        e.position.to_string(),
        e.event_id.to_string(),
        e.tenant_id.to_string(),
        e.stream_kind.clone(),
        e.stream_id.clone(),
        e.stream_version.to_string(),
        e.event_type.clone(),
        e.schema_version.to_string(),
        e.recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        e.recorded_at_us.to_string(),
        e.payload.clone(),
        e.metadata.clone(),
        e.prev_hash.clone(),
        e.hash.clone(),
    ];
    let line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    writeln!(out, "{line}")
}

/// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(r#"{"a":1,"b":2}"#), r#""{""a"":1,""b"":2}""#);
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn bounds_are_positions_or_times() {
        assert_eq!("42".parse::<Bound>(), Ok(Bound::Position(42)));
        assert!(matches!(
            "2026-01-01T00:00:00Z".parse::<Bound>(),
            Ok(Bound::Time(_))
        ));
        assert!("yesterday".parse::<Bound>().is_err());
    }
}
