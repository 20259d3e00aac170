//! Auditor tooling over the log: [`verify_log`] checks the hash chain and the signed
//! checkpoints of a database, [`verify_export`] those of an exported file with no database,
//! [`export`] writes events out, [`rebuild`] folds the views again from position zero.
//! [`audit`] holds the one fold all verifications share.
//!
//! **Invariant:** replay never causes a side effect outside the views (it sends no webhook).

pub mod audit;
pub mod export;

use std::collections::VecDeque;
use std::io::BufRead;

use keyledger_projections::ProjectionError;
use keyledger_store::chain::{self, BreakKind, ChainVerification};
use keyledger_store::checkpoint::{Checkpoint, is_checkpoint};
use keyledger_store::{EventLog, RecordedEvent, StoreError};

pub use audit::{AuditOptions, AuditReport, Auditor, Finding};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("cannot read or write the export")]
    Io(#[from] std::io::Error),
    #[error("line {line} of the export is not an exported event: {reason}")]
    MalformedExport { line: u64, reason: String },
    #[error("the export holds no events")]
    EmptyExport,
}

/// Events read per query while verifying; two more are read to name a break at a page's end.
const VERIFY_PAGE: u32 = 10_000;

/// Checks every event's hash and link from position 1 to the head.
pub async fn verify(
    log: &EventLog,
    progress: impl FnMut(u64),
) -> Result<ChainVerification, ReplayError> {
    Ok(chain::verify_chain(log, progress).await?)
}

/// Checks the log from position 1, or from `start` (a checkpoint the auditor trusts), with the
/// signatures of the checkpoints in the log and the checkpoints the auditor holds.
pub async fn verify_log(
    log: &EventLog,
    options: AuditOptions,
    start: Option<&Checkpoint>,
    mut progress: impl FnMut(u64),
) -> Result<AuditReport, ReplayError> {
    let failed = |finding| AuditReport {
        checked: 0,
        head: None,
        checkpoints_verified: 0,
        checkpoints_unchecked: 0,
        covered_to: None,
        finding: Some(finding),
    };
    let (made, mut after) = match start {
        None => (Auditor::new(options), 0),
        Some(start) => {
            if let Err(error) = start.verify(&options.trusted_keys) {
                return Ok(failed(Finding::BadCheckpoint {
                    carried_at: None,
                    error,
                }));
            }
            if start.position > 0 {
                let at = log.read_all(start.position - 1, 1).await?;
                match at.first() {
                    Some(e) if e.position == start.position && e.hash == start.hash => {}
                    Some(e) if e.position == start.position => {
                        return Ok(failed(Finding::CheckpointMismatch {
                            position: start.position,
                            carried_at: None,
                        }));
                    }
                    _ => {
                        let head = log.head().await?.map_or(0, |h| h.position);
                        return Ok(failed(Finding::Truncated {
                            log_ends_at: head.min(start.position - 1),
                            checkpoint_position: start.position,
                        }));
                    }
                }
            }
            (
                Auditor::after(options, start.position, start.hash),
                start.position,
            )
        }
    };
    let mut auditor = match made {
        Ok(auditor) => auditor,
        Err(finding) => return Ok(failed(finding)),
    };
    loop {
        let page = log.read_all(after, VERIFY_PAGE + 2).await?;
        let last_page = page.len() < (VERIFY_PAGE + 2) as usize;
        let take = if last_page {
            page.len()
        } else {
            VERIFY_PAGE as usize
        };
        for i in 0..take {
            let following = &page[i + 1..(i + 3).min(page.len())];
            if let Err(finding) = auditor.check(&page[i], following) {
                tracing::error!(
                    position = finding.position(),
                    finding = %finding.describe(),
                    "the event log does not verify"
                );
                return Ok(auditor.finish(Some(finding)));
            }
        }
        if last_page {
            return Ok(auditor.finish(None));
        }
        after = page[take - 1].position;
        progress(after);
    }
}

/// What an offline verification of an export found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportVerification {
    pub report: AuditReport,
    /// The first exported position.
    pub first: u64,
    /// The last exported position that is not itself a checkpoint.
    pub last_event: u64,
}

impl ExportVerification {
    /// Whether every exported event is vouched for by a verified signed checkpoint.
    pub fn covered(&self) -> bool {
        self.report.covered_to.is_some_and(|c| c >= self.last_event)
    }
}

/// Verifies a JSONL export of a contiguous range with no database: the chain inside the range,
/// the checkpoints it carries and those the auditor holds. The range's first link is taken on
/// trust; a verified checkpoint at or after it vouches for it, and for every event up to the
/// checkpoint's position.
pub fn verify_export(
    input: impl BufRead,
    options: AuditOptions,
) -> Result<ExportVerification, ReplayError> {
    let mut lines = input
        .lines()
        .enumerate()
        .filter_map(|(n, line)| match line {
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(parse_line(n as u64 + 1, &line)),
            Err(e) => Some(Err(e.into())),
        });
    let mut ahead: VecDeque<RecordedEvent> = VecDeque::new();
    let mut refill = |ahead: &mut VecDeque<RecordedEvent>| -> Result<(), ReplayError> {
        while ahead.len() < 3 {
            match lines.next() {
                Some(event) => ahead.push_back(event?),
                None => break,
            }
        }
        Ok(())
    };
    refill(&mut ahead)?;
    let first = ahead.front().ok_or(ReplayError::EmptyExport)?;
    let first_position = first.position;
    let made = Auditor::after(options, first.position.saturating_sub(1), first.prev_hash);
    let mut auditor = match made {
        Ok(auditor) => auditor,
        Err(finding) => {
            return Ok(ExportVerification {
                report: AuditReport {
                    checked: 0,
                    head: None,
                    checkpoints_verified: 0,
                    checkpoints_unchecked: 0,
                    covered_to: None,
                    finding: Some(finding),
                },
                first: first_position,
                last_event: first_position,
            });
        }
    };
    let mut last_event = first_position;
    while let Some(event) = ahead.pop_front() {
        refill(&mut ahead)?;
        let following: Vec<RecordedEvent> = ahead.iter().take(2).cloned().collect();
        if let Err(finding) = auditor.check(&event, &following) {
            return Ok(ExportVerification {
                report: auditor.finish(Some(finding)),
                first: first_position,
                last_event: event.position,
            });
        }
        if !is_checkpoint(&event) {
            last_event = event.position;
        }
    }
    Ok(ExportVerification {
        report: auditor.finish(None),
        first: first_position,
        last_event,
    })
}

fn parse_line(line: u64, text: &str) -> Result<RecordedEvent, ReplayError> {
    let malformed = |reason: String| ReplayError::MalformedExport { line, reason };
    serde_json::from_str::<export::ExportedEvent>(text)
        .map_err(|e| malformed(e.to_string()))?
        .into_recorded()
        .map_err(malformed)
}

/// A sentence for the auditor about a break.
pub fn describe(kind: &BreakKind) -> String {
    match kind {
        BreakKind::HashMismatch => {
            "the stored hash does not match the event's content (the event was modified)".into()
        }
        BreakKind::PrevHashMismatch => {
            "the event does not link to the previous event's hash (an event was deleted, \
             inserted or reordered)"
                .into()
        }
        BreakKind::PositionGap { expected } => {
            format!("expected position {expected} here (an event was deleted or reordered)")
        }
    }
}

/// Rebuilds beside the live views and reports every difference, swapping nothing in.
pub async fn compare(
    log: &EventLog,
    projection: Option<&str>,
    progress: impl FnMut(&str, u64),
) -> Result<Vec<keyledger_projections::rebuild::Comparison>, ReplayError> {
    Ok(keyledger_projections::rebuild::compare(log, projection, progress).await?)
}

/// Rebuilds one projection by name, or all of them, into fresh tables swapped in atomically.
/// Returns the position reached.
pub async fn rebuild(
    log: &EventLog,
    projection: Option<&str>,
    progress: impl FnMut(&str, u64),
) -> Result<u64, ReplayError> {
    Ok(keyledger_projections::rebuild::rebuild(log, projection, progress).await?)
}
