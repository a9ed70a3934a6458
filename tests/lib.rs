//! One integration-test binary driving the real `glow-run` binary (see STYLE.md).

mod support;

mod authoring;
mod evidence;
mod foundation;
mod http;
mod prompt;
mod runbook;
mod shared_state;
mod sql;
mod tamper;
