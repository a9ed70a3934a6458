//! `glow-run runs`: recent runs, from the local index (or the journals) or the shared state.

use super::lookup::warn_source;
use crate::arguments::GlobalFlags;
use crate::error::{EXIT_OK, Error};
use crate::reporter::format_ms;
use crate::state;

/// `glow-run runs`: recent runs, newest first (from the index; from the journals when the index
/// is missing or unreadable).
pub fn runs(global: &GlobalFlags, limit: usize) -> Result<i32, Error> {
    if let Some(url) = &global.state {
        return shared_runs(url, limit);
    }
    let (runs, source) = state::list_runs(&global.state_dir, limit)?;
    warn_source(&global.state_dir, &source);
    if runs.is_empty() {
        eprintln!("no runs recorded in {}", global.state_dir.display());
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|run| {
            [
                run.id.clone(),
                run.script.clone(),
                run.mode.clone(),
                run.status(),
                run.duration_ms.map_or_else(
                    || "-".into(),
                    |ms| format_ms(u64::try_from(ms).unwrap_or(0)),
                ),
                run.tag.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["RUN", "SCRIPT", "MODE", "OUTCOME", "DURATION", "TAG"].map(str::to_owned);
    print!("{}", table(&header, &rows));
    Ok(EXIT_OK)
}

fn table<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `glow-run runs --state postgres://...`: the team's history from the shared state.
fn shared_runs(url: &str, limit: usize) -> Result<i32, Error> {
    let runs = crate::shared_state::list(url, limit)?;
    if runs.is_empty() {
        eprintln!("no runs recorded in the shared state");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 8]> = runs
        .into_iter()
        .map(|run| {
            [
                run.run_id,
                run.script,
                run.mode,
                run.environment,
                run.outcome,
                run.duration_ms.map_or_else(
                    || "-".into(),
                    |ms| format_ms(u64::try_from(ms).unwrap_or(0)),
                ),
                run.tag.unwrap_or_else(|| "-".into()),
                run.initiator.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "RUN",
        "SCRIPT",
        "MODE",
        "ENVIRONMENT",
        "OUTCOME",
        "DURATION",
        "TAG",
        "BY",
    ]
    .map(str::to_owned);
    print!("{}", table(&header, &rows));
    Ok(EXIT_OK)
}
