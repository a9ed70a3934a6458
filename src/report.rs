//! The run report (`report.md` beside the journal): not built yet (see the evidence issue).

use crate::journal::Journal;

/// Writes the report for a finished run.
pub fn write(_journal: &Journal) -> Result<(), String> {
    Ok(())
}
