//! The subcommands other than running a script: check, runs, show, resume, bundle, verify, defs.

use crate::arguments::{GlobalFlags, RunFlags};
use crate::error::{EXIT_OK, Error};
use crate::redact::Redactor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `glow-run check SCRIPT...`: compile without running.
pub fn check(scripts: &[PathBuf], stdlib: Option<PathBuf>) -> Result<i32, Error> {
    crate::lint::check(scripts, stdlib)
}

pub fn runs(_global: &GlobalFlags, _limit: usize) -> Result<i32, Error> {
    Err(Error::usage("`glow-run runs` is not available yet"))
}

pub fn show(_global: &GlobalFlags, _run_id: &str) -> Result<i32, Error> {
    Err(Error::usage("`glow-run show` is not available yet"))
}

pub fn resume(
    _global: &GlobalFlags,
    _run_id: &str,
    _force: bool,
    _run: RunFlags,
    _redactor: &Arc<Redactor>,
) -> Result<i32, Error> {
    Err(Error::usage("`glow-run resume` is not available yet"))
}

pub fn bundle(_global: &GlobalFlags, _run_id: &str, _output: &Path) -> Result<i32, Error> {
    Err(Error::usage("`glow-run bundle` is not available yet"))
}

pub fn verify(_path: &Path) -> Result<i32, Error> {
    Err(Error::usage("`glow-run verify` is not available yet"))
}

pub fn defs(_out: Option<&Path>) -> Result<i32, Error> {
    let _ = EXIT_OK;
    Err(Error::usage("`glow-run defs` is not available yet"))
}
