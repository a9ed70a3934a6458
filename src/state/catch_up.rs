//! Brings the index up to date with the journals (the source of truth) when it is opened: a
//! run killed with -9 never wrote its last batch, or no row at all when it died in its first
//! milliseconds. Only runs that ended or whose process is gone are replayed (a live run
//! indexes itself); once replayed they are marked `settled` so later opens do not read their
//! journals again.

use super::journal_path;
use super::record::{RunRecord, as_i64, is_indexed, pid_alive};
use super::writer::write_batch;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::Path;

/// What the index knows of a run: the last `seq` it holds, and whether it needs no more.
struct Known {
    last_seq: i64,
    done: bool,
}

pub(super) fn catch_up(
    connection: &mut Connection,
    state_dir: &Path,
    skip_run: Option<&str>,
) -> rusqlite::Result<()> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("runs")) else {
        return Ok(());
    };
    let known = known_runs(connection)?;
    for entry in entries.filter_map(Result::ok) {
        let id = entry.file_name().to_string_lossy().into_owned();
        if Some(id.as_str()) == skip_run || id.starts_with('.') {
            continue;
        }
        let last_seq = match known.get(&id) {
            Some(known) if known.done => continue,
            // A row written before the index kept `last_seq`: it cannot say what it lacks.
            Some(known) if known.last_seq < 0 => continue,
            Some(known) => known.last_seq,
            None => 0,
        };
        replay(connection, &id, &journal_path(state_dir, &id), last_seq)?;
    }
    Ok(())
}

/// What the index knows of every run.
fn known_runs(connection: &Connection) -> rusqlite::Result<HashMap<String, Known>> {
    let mut statement = connection.prepare(
        "SELECT id, coalesce(last_seq, -1), (outcome IS NOT NULL OR coalesce(settled, 0) = 1) FROM runs",
    )?;
    let rows = statement.query_map([], |row| {
        let known = Known {
            last_seq: row.get(1).unwrap_or(-1),
            done: row.get(2).unwrap_or(true),
        };
        Ok((row.get::<_, String>(0).unwrap_or_default(), known))
    })?;
    Ok(rows.filter_map(Result::ok).collect())
}

/// Writes a dead run's journaled events after `last_seq` and marks it settled.
fn replay(
    connection: &mut Connection,
    id: &str,
    journal: &Path,
    last_seq: i64,
) -> rusqlite::Result<()> {
    let Ok(events) = crate::journal::read_events(journal) else {
        return Ok(());
    };
    let Some(record) = RunRecord::from_events(&events) else {
        return Ok(());
    };
    // A journal that ends with `run_end` is complete, whichever process has its pid now (pids
    // are reused, and mean nothing for a run folder restored from another machine's backup);
    // replaying it is harmless even while its own writer finishes, as every write is keyed.
    if record.outcome.is_none() && record.pid.is_some_and(pid_alive) {
        return Ok(());
    }
    let missing: Vec<_> = events
        .into_iter()
        .filter(|e| is_indexed(&e.body) && as_i64(e.seq) > last_seq)
        .map(Box::new)
        .collect();
    if !missing.is_empty() {
        write_batch(connection, &missing)?;
    }
    connection.execute("UPDATE runs SET settled = 1 WHERE id = ?", [id])?;
    Ok(())
}
