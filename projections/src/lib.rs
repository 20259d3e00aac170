//! Views folded from the global log.
//!
//! Each view is a set of real, indexed tables plus a checkpoint row. The [`runner`] reads the
//! log after the checkpoints once for every view and applies a batch of events and the new
//! checkpoints in one transaction, so a crash never loses or doubles a view update. Views are replayable: they
//! can be dropped and rebuilt from position zero ([`rebuild`]) and reach the same rows.
//!
//! Layout: [`views`] holds one module per view (its tables, how it folds an event, and the
//! queries the API serves from it), and [`view`] any one of them as one type; [`checkpoint`]
//! the checkpoint table; [`runner`] the loop
//! that follows the log; [`progress`] lets a reader wait until the views reach a position;
//! [`as_of`] folds one user's state at a past point with the users view's fold.

pub mod as_of;
pub mod checkpoint;
pub mod error;
pub mod progress;
pub mod rebuild;
pub mod runner;
pub mod view;
pub mod views;
pub mod webhooks;

pub use error::ProjectionError;
pub use progress::ViewProgress;
pub use runner::{Projection, spawn_all};
pub use views::{ApplicationsView, AuditView, MfaView, UsersView};

/// Names of every projection, in the order they are migrated and rebuilt.
pub const PROJECTIONS: &[&str] = &[
    views::users::NAME,
    views::audit::NAME,
    views::mfa::NAME,
    webhooks::view::NAME,
    views::applications::NAME,
];
