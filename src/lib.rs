//! glow-run: a host for release runbooks written in Rhai.
//!
//! The binary is a thin shell over [`run`]; everything else lives here so that the
//! integration tests and the benchmarks drive the same code paths as a release engineer.
//! Every side effect a script can have goes through one gate ([`host::HostContext::effect`]),
//! which checks policy, honours dry-run, redacts and journals.

pub mod alloc;
pub mod arguments;
pub mod attestation;
pub mod bundle;
pub mod cancel;
pub mod commands;
pub mod config;
pub mod definitions;
pub mod engine;
pub mod error;
pub mod host;
pub mod identity;
pub mod journal;
pub mod lint;
pub mod options;
pub mod plan;
pub mod policy;
pub mod redact;
pub mod report;
pub mod reporter;
pub mod resolver;
pub mod run;
pub mod shared_state;
pub mod span;
pub mod state;
pub mod verify;
pub mod watcher;

pub use error::Error;
pub use run::run;
