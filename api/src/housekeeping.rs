//! Background chores of a running server.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often expired sessions are deleted. Expired sessions are already refused when used;
/// this only keeps the table from growing forever.
const SESSION_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// One sweep: deletes sessions past their idle or absolute limit. Returns how many.
pub async fn sweep_expired_sessions(state: &AppState) -> Result<u64, keyledger_store::StoreError> {
    state.sessions.delete_expired(state.clock.now()).await
}

/// Sweeps every [`SESSION_SWEEP_INTERVAL`] until `shutdown` turns true.
pub fn spawn_session_sweeper(
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SESSION_SWEEP_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            // Expired challenges and MFA tokens are already refused; this keeps the table small.
            if let Err(error) = state.ceremonies.delete_expired(state.clock.now()).await {
                tracing::warn!(%error, "ceremony sweep failed");
            }
            match sweep_expired_sessions(&state).await {
                Ok(0) => {}
                Ok(deleted) => tracing::debug!(deleted, "expired sessions deleted"),
                Err(error) => tracing::warn!(%error, "session sweep failed"),
            }
        }
    })
}

/// Signs a checkpoint every `interval` until `shutdown` turns true, also when nothing was
/// appended: a missing checkpoint in the log then shows that the signer was stopped.
pub fn spawn_checkpoint_signer(
    state: AppState,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let signed = crate::signing::sign_checkpoint(
                &state.log,
                &state.signing_key,
                keyledger_store::EventMetadata::system(),
                state.clock.now(),
            )
            .await;
            match signed {
                Ok((checkpoint, _)) => {
                    tracing::debug!(position = checkpoint.position, "checkpoint signed");
                }
                Err(error) => tracing::warn!(%error, "signing a checkpoint failed"),
            }
        }
    })
}
