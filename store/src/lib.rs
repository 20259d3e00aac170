//! The event log and the state kept beside it.
//!
//! Layout: [`model`] holds the shapes that cross the boundary; [`log`] the append path
//! (group commit, hash chain, optimistic concurrency, idempotency, uniqueness claims) and the
//! readers; [`chain`] the canonical bytes and hash of an event; [`checkpoint`] signed checkpoints of
//! the chain head; [`database`] the connection to
//! SQLite or PostgreSQL and the schema; [`sessions`] the short-lived login sessions;
//! [`executor`] runs a cqrs-es aggregate's command against the log; [`testing`] gives tests a
//! fresh database of either backend.
//!
//! Only this crate knows the log's SQL.

mod aggregate_cache;
pub mod ceremonies;
pub mod chain;
pub mod checkpoint;
mod codec;
pub mod database;
pub mod error;
pub mod executor;
mod exported;
pub mod log;
pub mod model;
pub mod outbox;
pub mod personal;
pub mod sessions;
pub mod testing;

pub use ceremonies::{Ceremony, CeremonyStore};
pub use database::{Backend, Database};
pub use error::{AppendError, StoreError};
pub use executor::{CommandContext, CommandExecutor, ExecuteError, Executed, SideWrites};
pub use exported::ExportedEvent;
pub use log::EventLog;
pub use model::*;
pub use outbox::{Mail, MailOutbox};
pub use sessions::{Session, SessionStore};
