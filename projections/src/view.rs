//! Any one of the views as one type, so that views of different types can share one read of
//! the log (the live follower and the rebuild both fold a batch into every view).

use keyledger_store::{EventFilter, RecordedEvent};
use sqlx::AnyConnection;

use crate::error::ProjectionError;
use crate::runner::Projection;
use crate::views::{ApplicationsView, AuditView, MfaView, UsersView};
use crate::webhooks::view::SubscriptionsView;

pub enum View {
    Users(UsersView),
    Audit(AuditView),
    Mfa(MfaView),
    Subscriptions(SubscriptionsView),
    Applications(ApplicationsView),
}

impl View {
    pub fn named(name: &str) -> Result<View, ProjectionError> {
        Ok(match name {
            crate::views::users::NAME => View::Users(UsersView),
            crate::views::audit::NAME => View::Audit(AuditView),
            crate::views::mfa::NAME => View::Mfa(MfaView),
            crate::webhooks::view::NAME => View::Subscriptions(SubscriptionsView),
            crate::views::applications::NAME => View::Applications(ApplicationsView),
            other => return Err(ProjectionError::UnknownProjection(other.to_owned())),
        })
    }

    /// Every view, in [`crate::PROJECTIONS`] order.
    pub fn all() -> Vec<View> {
        vec![
            View::Users(UsersView),
            View::Audit(AuditView),
            View::Mfa(MfaView),
            View::Subscriptions(SubscriptionsView),
            View::Applications(ApplicationsView),
        ]
    }
}

impl Projection for View {
    fn name(&self) -> &'static str {
        match self {
            View::Users(v) => v.name(),
            View::Audit(v) => v.name(),
            View::Mfa(v) => v.name(),
            View::Subscriptions(v) => v.name(),
            View::Applications(v) => v.name(),
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        match self {
            View::Users(v) => v.tables(),
            View::Audit(v) => v.tables(),
            View::Mfa(v) => v.tables(),
            View::Subscriptions(v) => v.tables(),
            View::Applications(v) => v.tables(),
        }
    }

    fn folds(&self) -> EventFilter {
        match self {
            View::Users(v) => v.folds(),
            View::Audit(v) => v.folds(),
            View::Mfa(v) => v.folds(),
            View::Subscriptions(v) => v.folds(),
            View::Applications(v) => v.folds(),
        }
    }

    async fn migrate(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        match self {
            View::Users(v) => v.migrate(conn).await,
            View::Audit(v) => v.migrate(conn).await,
            View::Mfa(v) => v.migrate(conn).await,
            View::Subscriptions(v) => v.migrate(conn).await,
            View::Applications(v) => v.migrate(conn).await,
        }
    }

    async fn clear(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        match self {
            View::Users(v) => v.clear(conn).await,
            View::Audit(v) => v.clear(conn).await,
            View::Mfa(v) => v.clear(conn).await,
            View::Subscriptions(v) => v.clear(conn).await,
            View::Applications(v) => v.clear(conn).await,
        }
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        match self {
            View::Users(v) => v.apply(conn, events).await,
            View::Audit(v) => v.apply(conn, events).await,
            View::Mfa(v) => v.apply(conn, events).await,
            View::Subscriptions(v) => v.apply(conn, events).await,
            View::Applications(v) => v.apply(conn, events).await,
        }
    }
}
