//! The identity domain: tenants and users as cqrs-es aggregates, and the password and lockout
//! policies they decide with.
//!
//! **Invariant:** nothing here does I/O, reads a clock or draws randomness. Time, new ids and
//! facts looked up elsewhere (the tenant's policies, whether a password matched) arrive in the
//! command. `clippy.toml` forbids the clock and id constructors.
//!
//! Layout: one folder per aggregate ([`tenant`], [`user`]) with `commands.rs`, `events.rs` and
//! `aggregate.rs`, where `handle` decides and `apply` only assigns; [`values`] holds the
//! parse-don't-validate newtypes, [`password`] and [`lockout`] the policies. `docs/events.md` is
//! the catalog of stored events.

pub mod application;
pub mod lockout;
pub mod mfa;
pub mod password;
pub mod tenant;
pub mod user;
pub mod values;
pub mod webhook;

/// The tenant every installation starts with.
pub const DEFAULT_TENANT_ID: uuid::Uuid =
    uuid::Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001);

/// The schema version of every event payload today. An incompatible change to one payload bumps
/// that event's version and ships an upcaster for the older one; type names never change.
pub const EVENT_SCHEMA_VERSION: &str = "1";
