//! `glow-run verify`: whether a run's evidence holds.

use crate::arguments::GlobalFlags;
use crate::error::{EXIT_OK, Error};
use std::path::Path;

/// `glow-run verify RUN_DIR|BUNDLE|STORE|RUN_ID [--allowed-signers FILE]`: what held on
/// stdout, one `mismatch:` line per finding on stderr, exit 1 on any.
pub fn verify(global: &GlobalFlags, target: &str, allowed: Option<&Path>) -> Result<i32, Error> {
    let verified = crate::verify::verify(target, &global.state_dir, allowed)?;
    for line in &verified.lines {
        println!("{line}");
    }
    if !verified.findings.is_empty() {
        return Err(Error::Verify {
            problems: verified.findings,
        });
    }
    println!("{}", verified.summary);
    Ok(EXIT_OK)
}
