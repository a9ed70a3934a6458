//! Finding a recorded run by id for show, resume and bundle: from the index, else its journal.

use crate::arguments::GlobalFlags;
use crate::error::Error;
use crate::state::{self, RunRecord};
use std::path::Path;

pub(super) fn warn_source(state_dir: &Path, source: &state::Source) {
    if let state::Source::Journals(Some(why)) = source {
        eprintln!(
            "warning: the run index {} is unreadable ({why}); reading the journals in {} instead\n\
             hint: move it away (`mv {0} {0}.broken`) and the next run starts a fresh index",
            state::db_path(state_dir).display(),
            state_dir.join("runs").display(),
        );
    }
}

pub(super) fn unknown_run(global: &GlobalFlags, run_id: &str) -> Error {
    Error::usage(format!(
        "unknown run id '{run_id}': it is neither in {} nor under {} (`glow-run runs` lists recent runs)",
        state::db_path(&global.state_dir).display(),
        global.state_dir.join("runs").display()
    ))
}

pub(super) fn load(global: &GlobalFlags, run_id: &str) -> Result<RunRecord, Error> {
    let (record, source) = state::load_run(&global.state_dir, run_id)?;
    warn_source(&global.state_dir, &source);
    record.ok_or_else(|| unknown_run(global, run_id))
}
