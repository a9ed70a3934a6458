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

/// `glow-run defs [--out DIR]`: Rhai definition files for editors (see `definitions.rs`).
/// With `--out`, one file per namespace plus Rhai's own built-ins, ready for a language server;
/// without, the glow-run API as one text on stdout.
pub fn defs(out: Option<&Path>) -> Result<i32, Error> {
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::host(format!("creating {}", dir.display()), e))?;
            let files = crate::definitions::generate(true)?;
            for file in &files {
                let path = dir.join(&file.name);
                std::fs::write(&path, &file.text)
                    .map_err(|e| Error::host(format!("writing {}", path.display()), e))?;
            }
            eprintln!(
                "defs: wrote {} definition file(s) to {}",
                files.len(),
                dir.display()
            );
        }
        None => {
            let text = crate::definitions::single_file()?;
            let mut stdout = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut stdout, text.as_bytes());
        }
    }
    Ok(EXIT_OK)
}
