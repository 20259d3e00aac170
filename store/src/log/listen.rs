//! Hears about appends committed by other nodes (PostgreSQL `LISTEN`), so local followers
//! wake for them too.
//!
//! Notifications are lost while the listening connection is down, so after every reconnect
//! the head is read from the table: a follower may wake late, never miss an event.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{NOTIFY_CHANNEL, advance, sql};
use crate::database::Database;
use crate::error::StoreError;

const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Connects and subscribes. Done before the log reads its starting head, so no commit falls
/// between the two.
pub(super) async fn listen(db: &Database) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect(db.url()).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// Runs until aborted (when the last `EventLog` handle is dropped).
pub(super) async fn follow(db: Database, mut listener: PgListener, head: Arc<watch::Sender<u64>>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<u64>() {
                Ok(position) => advance(&head, position),
                Err(_) => tracing::debug!(
                    payload = notification.payload(),
                    "ignored a notification that is not a position"
                ),
            },
            // The connection dropped and sqlx reconnected: catch up on what was missed.
            Ok(None) => catch_up(&db, &head).await,
            Err(e) => {
                tracing::warn!(error = %e, "lost the log notification connection");
                listener = reconnect(&db).await;
                catch_up(&db, &head).await;
            }
        }
    }
}

async fn reconnect(db: &Database) -> PgListener {
    loop {
        tokio::time::sleep(RECONNECT_DELAY).await;
        match listen(db).await {
            Ok(listener) => return listener,
            Err(e) => tracing::warn!(error = %e, "cannot listen for log notifications"),
        }
    }
}

async fn catch_up(db: &Database, head: &watch::Sender<u64>) {
    match sql::head(db.pool()).await {
        Ok(Some(h)) => advance(head, h.position),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the log head"),
    }
}
