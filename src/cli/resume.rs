//! `glow-run resume RUN_ID`: run a script again, skipping what already succeeded.

use super::lookup::load;
use crate::arguments::{GlobalFlags, RunFlags};
use crate::config::{Resume, RunSettings};
use crate::error::Error;
use crate::redact::Redactor;
use std::path::PathBuf;
use std::sync::Arc;

/// `glow-run resume RUN_ID`: the same script with the same vars, skipping the steps that
/// succeeded in that run. A changed script is refused unless `--force`.
pub fn resume(
    global: &GlobalFlags,
    run_id: &str,
    (force, rerun_in_doubt): (bool, bool),
    mut run: RunFlags,
    redactor: &Arc<Redactor>,
) -> Result<i32, Error> {
    let previous = load(global, run_id)?;
    if previous.script == crate::config::SNIPPET_NAME || previous.script.is_empty() {
        return Err(Error::usage(format!(
            "run {run_id} ran a -e snippet; only script runs can be resumed"
        )));
    }
    // Vars of the earlier run first; any given again on this command line win.
    let mut vars: Vec<(String, String)> = previous.vars.clone().into_iter().collect();
    for (key, value) in std::mem::take(&mut run.vars) {
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
    }
    run.vars = vars;
    let script = PathBuf::from(&previous.script);
    if !script.is_file() {
        let started_in = previous
            .cwd
            .as_deref()
            .map(|cwd| format!(" (it started in {cwd})"))
            .unwrap_or_default();
        return Err(Error::usage(format!(
            "cannot resume run {run_id}: its script {} is not here; run `glow-run resume` from the directory that run started in{started_in}",
            previous.script
        )));
    }
    let mut settings = RunSettings::load(Some(&script), None, run, global)?;
    if settings.sha256 != previous.sha256 {
        let lines_now = settings.text.lines().count();
        let change = format!(
            "{} changed since run {run_id}: sha256 was {}, is now {} ({lines_now} lines now)",
            previous.script,
            short(&previous.sha256),
            short(&settings.sha256),
        );
        if !force {
            return Err(Error::usage(format!(
                "{change}; steps are matched by name and order, so skipping them may no longer be right. \
                 Pass --force to resume anyway"
            )));
        }
        eprintln!("warning: {change}; resuming anyway (--force)");
    }
    let succeeded = previous.succeeded_steps();
    eprintln!(
        "resuming run {run_id}: {} step(s) that succeeded will be skipped",
        succeeded.len()
    );
    let in_doubt = previous.in_doubt_steps();
    for step in &in_doubt {
        eprintln!(
            "step '{}' is in doubt: run {run_id} started it and never ended it (last journaled effect: {})",
            step.name,
            step.last_effect.as_deref().unwrap_or("none")
        );
    }
    settings.resume = Some(Resume {
        run_id: previous.id.clone(),
        succeeded,
        in_doubt,
        rerun_in_doubt,
    });
    crate::run::execute(settings, redactor)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
