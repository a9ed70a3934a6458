//! `glow-run check SCRIPT...`: compile and lint without running.

use crate::error::Error;
use std::path::PathBuf;

/// `glow-run check SCRIPT...`: compile without running.
pub fn check(scripts: &[PathBuf], stdlib: Option<PathBuf>) -> Result<i32, Error> {
    crate::lint::check(scripts, stdlib)
}
