//! `glow-run bundle RUN_ID -o FILE.tar.gz [--sign KEY]`: the run's evidence in one archive.

use super::lookup::unknown_run;
use crate::arguments::GlobalFlags;
use crate::error::{EXIT_OK, Error};
use crate::state;
use std::path::{Path, PathBuf};

/// `glow-run bundle RUN_ID -o FILE.tar.gz [--sign KEY]`: journal, report, manifest, artifacts
/// and the attestation, signed with `--sign` / `GLOW_SIGNING_KEY`, else `[evidence]
/// signing_key` of the glow.toml beside the run's script.
pub fn bundle(
    global: &GlobalFlags,
    run_id: &str,
    output: &Path,
    sign: Option<PathBuf>,
) -> Result<i32, Error> {
    let journal = state::journal_path(&global.state_dir, run_id);
    if run_id.contains('/') || !journal.is_file() {
        return Err(unknown_run(global, run_id));
    }
    let key = match sign {
        Some(key) => Some(key),
        None => policy_signing_key(&journal)?,
    };
    let signer = key
        .as_deref()
        .map(crate::attestation::Signer::load)
        .transpose()?;
    let summary = crate::bundle::bundle(&journal, output, signer.as_ref())?;
    eprintln!("{summary}");
    Ok(EXIT_OK)
}

/// `[evidence] signing_key` from the glow.toml beside the script the run ran (as its
/// `run_start` recorded it), or in the current directory for a snippet.
fn policy_signing_key(journal: &Path) -> Result<Option<PathBuf>, Error> {
    let events = crate::journal::read_events(journal)
        .map_err(|e| Error::host(format!("reading {}", journal.display()), e))?;
    let Some(start) = events.iter().find_map(|e| match &e.body {
        crate::event::Body::RunStart(start) => Some(start),
        _ => None,
    }) else {
        return Ok(None);
    };
    let script = start.script.as_str();
    let dir = if script == crate::config::SNIPPET_NAME {
        PathBuf::from(".")
    } else {
        let cwd = PathBuf::from(if start.cwd.is_empty() {
            "."
        } else {
            &start.cwd
        });
        cwd.join(script)
            .parent()
            .map_or(cwd.clone(), Path::to_path_buf)
    };
    Ok(crate::policy::Policy::load_from_dir(&dir)?
        .evidence
        .signing_key)
}
