//! Rebuilding views from position zero.

use keyledger_store::EventLog;
use sqlx::Connection;

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::runner::{Projection, catch_up, migrate_all};
use crate::views::{AuditView, MfaView, UsersView};

/// Empties the named projection (or all of them) and folds the whole log into it again.
/// The emptying and the checkpoint reset commit together, and a running server's follower
/// notices the reset checkpoint (its compare-and-set fails) instead of folding twice.
/// Returns the position reached.
pub async fn rebuild(
    log: &EventLog,
    projection: Option<&str>,
    mut progress: impl FnMut(&str, u64),
) -> Result<u64, ProjectionError> {
    migrate_all(log).await?;
    let names: Vec<&str> = match projection {
        Some(name) if crate::PROJECTIONS.contains(&name) => vec![name],
        Some(name) => return Err(ProjectionError::UnknownProjection(name.to_owned())),
        None => crate::PROJECTIONS.to_vec(),
    };
    let mut reached = 0;
    for name in names {
        reached = if name == crate::views::users::NAME {
            rebuild_one(&UsersView, log, &mut progress).await?
        } else if name == crate::views::mfa::NAME {
            rebuild_one(&MfaView, log, &mut progress).await?
        } else {
            rebuild_one(&AuditView, log, &mut progress).await?
        };
    }
    Ok(reached)
}

async fn rebuild_one<P: Projection>(
    projection: &P,
    log: &EventLog,
    progress: &mut impl FnMut(&str, u64),
) -> Result<u64, ProjectionError> {
    let mut conn = log.database().pool().acquire().await?;
    let mut tx = conn.begin().await?;
    checkpoint::reset(&mut tx, projection.name()).await?;
    projection.clear(&mut tx).await?;
    tx.commit().await?;
    catch_up(projection, log, |position| {
        progress(projection.name(), position)
    })
    .await
}
