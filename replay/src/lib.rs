//! Auditor tooling over the log: [`verify`] checks the whole hash chain, [`rebuild`] folds the
//! views again from position zero.
//!
//! **Invariant:** replay never causes a side effect outside the views (it sends no webhook).

use keyledger_projections::ProjectionError;
use keyledger_store::chain::{self, BreakKind, ChainVerification};
use keyledger_store::{EventLog, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// Checks every event's hash and link from position 1 to the head.
pub async fn verify(
    log: &EventLog,
    progress: impl FnMut(u64),
) -> Result<ChainVerification, ReplayError> {
    Ok(chain::verify_chain(log, progress).await?)
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

/// Rebuilds one projection by name, or all of them. Returns the position reached.
pub async fn rebuild(
    log: &EventLog,
    projection: Option<&str>,
    progress: impl FnMut(&str, u64),
) -> Result<u64, ReplayError> {
    Ok(keyledger_projections::rebuild::rebuild(log, projection, progress).await?)
}
