//! glow-run: a host for release runbooks written in Rhai.
//!
//! The binary is a thin shell over [`run`]; everything else lives here so that the
//! integration tests and the benchmarks drive the same code paths as a release engineer.
//! Every side effect a script can have goes through one gate ([`host::HostContext::effect`]),
//! which checks policy, honours dry-run, redacts and journals.

pub mod alloc;
pub mod approval;
pub mod arguments;
pub mod attestation;
pub mod bundle;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod definitions;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod event;
pub mod host;
pub mod identity;
pub mod journal;
pub mod lint;
pub mod options;
pub mod otlp;
pub mod plan;
pub mod plan_binding;
pub mod plan_file;
pub mod policy;
pub mod prompt_id;
pub mod redact;
pub mod regular_file;
pub mod report;
pub mod reporter;
pub mod resolver;
pub mod run;
pub mod script_error;
pub mod session;
pub mod shared_plans;
pub mod shared_state;
pub mod signing_key;
pub mod span;
pub mod state;
pub mod verify;
pub mod watcher;

pub use cli::run;
pub use error::Error;
