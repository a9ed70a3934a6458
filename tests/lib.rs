//! One integration-test binary driving the real `glow-run` binary (see STYLE.md).

mod support;

mod architecture;
mod authoring;
mod browser;
mod crash;
mod evidence;
mod foundation;
mod http;
mod observability;
mod plans;
mod prompt;
mod runbook;
mod security;
mod shared_state;
mod sql;
mod tamper;
