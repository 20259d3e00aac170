//! How far each view has folded the log, so that a client can read its own writes: a command
//! answers with the position it wrote, and a read may wait until every view has reached it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

#[derive(Clone)]
pub struct ViewProgress {
    positions: Arc<watch::Sender<BTreeMap<&'static str, u64>>>,
    /// Raised by a reader waiting for a position the views have not reached, so the follower
    /// folds at once instead of letting more events gather first.
    wanted: Arc<Notify>,
}

impl Default for ViewProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl ViewProgress {
    pub fn new() -> Self {
        let initial = crate::PROJECTIONS.iter().map(|name| (*name, 0)).collect();
        Self {
            positions: Arc::new(watch::Sender::new(initial)),
            wanted: Arc::new(Notify::new()),
        }
    }

    /// Returns when a reader has waited for a position not yet reached (at once if one did
    /// since the last call).
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    pub fn set(&self, projection: &'static str, position: u64) {
        self.positions.send_modify(|map| {
            let entry = map.entry(projection).or_insert(0);
            *entry = (*entry).max(position);
        });
    }

    /// The position every view has reached.
    pub fn reached(&self) -> u64 {
        Self::lowest(&self.positions.borrow())
    }

    /// Waits until every view has folded `position`; false when `timeout` passed first.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.positions.subscribe();
        if Self::lowest(&rx.borrow()) >= position {
            return true;
        }
        self.wanted.notify_one();
        let reached = rx.wait_for(|map| Self::lowest(map) >= position);
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }

    fn lowest(map: &BTreeMap<&'static str, u64>) -> u64 {
        map.values().copied().min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_waits_until_every_view_has_reached_the_position() {
        let progress = ViewProgress::new();
        progress.set(crate::views::users::NAME, 5);
        assert!(!progress.wait_for(5, Duration::from_millis(20)).await);
        progress.set(crate::views::audit::NAME, 7);
        assert!(!progress.wait_for(5, Duration::from_millis(20)).await);
        progress.set(crate::views::mfa::NAME, 9);
        assert!(!progress.wait_for(5, Duration::from_millis(20)).await);
        progress.set(crate::webhooks::view::NAME, 9);
        assert!(!progress.wait_for(5, Duration::from_millis(20)).await);
        progress.set(crate::views::applications::NAME, 6);
        assert!(progress.wait_for(5, Duration::from_millis(20)).await);
        assert_eq!(progress.reached(), 5);
    }

    #[tokio::test]
    async fn a_reader_waiting_for_a_position_not_reached_hurries_the_follower() {
        let progress = ViewProgress::new();
        let hurried = tokio::time::timeout(Duration::from_millis(20), progress.wanted());
        assert!(hurried.await.is_err(), "nobody waited yet");
        assert!(!progress.wait_for(1, Duration::from_millis(1)).await);
        let hurried = tokio::time::timeout(Duration::from_millis(20), progress.wanted());
        assert!(hurried.await.is_ok());
    }
}
