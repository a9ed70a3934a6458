//! Reading the run index back into [`RunRecord`]s, and rebuilding records from journals (the
//! source of truth) where the index has no row or lags behind.

use super::journal_path;
use super::record::{ApprovalRecord, ArtifactRecord, EffectRecord, RunRecord, StepRecord};
use rusqlite::{Connection, OptionalExtension, Row};
use std::path::Path;

fn opt_text(row: &Row<'_>, column: &str) -> Option<String> {
    row.get::<_, Option<String>>(column).ok().flatten()
}

fn opt_int(row: &Row<'_>, column: &str) -> Option<i64> {
    row.get::<_, Option<i64>>(column).ok().flatten()
}

/// The newest `limit` runs of the index.
pub(super) fn recent_runs(
    connection: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<RunRecord>> {
    let mut statement =
        connection.prepare("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT ?")?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map([limit], |row| Ok(run_from_row(row)))?;
    rows.collect()
}

/// The rows of `table` for a run, in journal order, each read by `read`.
fn rows_of<T>(
    connection: &Connection,
    table: &str,
    run_id: &str,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = connection.prepare(&format!(
        "SELECT * FROM {table} WHERE run_id = ? ORDER BY seq"
    ))?;
    let rows = statement.query_map([run_id], read)?;
    rows.collect()
}

pub(super) fn run_from_row(row: &Row<'_>) -> RunRecord {
    RunRecord {
        id: opt_text(row, "id").unwrap_or_default(),
        script: opt_text(row, "script").unwrap_or_default(),
        sha256: opt_text(row, "sha256").unwrap_or_default(),
        mode: opt_text(row, "mode").unwrap_or_default(),
        tag: opt_text(row, "tag"),
        vars: opt_text(row, "vars")
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default(),
        trace_id: opt_text(row, "trace_id"),
        resumes: opt_text(row, "resumes"),
        journal: opt_text(row, "journal"),
        cwd: opt_text(row, "cwd"),
        pid: opt_int(row, "pid"),
        started: opt_text(row, "started").unwrap_or_default(),
        ended: opt_text(row, "ended"),
        outcome: opt_text(row, "outcome"),
        exit_code: opt_int(row, "exit_code"),
        duration_ms: opt_int(row, "duration_ms"),
        error: opt_text(row, "error"),
        last_seq: opt_int(row, "last_seq"),
        ..RunRecord::default()
    }
}

pub(super) fn load_from_index(
    connection: &Connection,
    run_id: &str,
) -> rusqlite::Result<Option<RunRecord>> {
    let Some(mut record) = connection
        .query_row("SELECT * FROM runs WHERE id = ?", [run_id], |row| {
            Ok(run_from_row(row))
        })
        .optional()?
    else {
        return Ok(None);
    };
    record.steps = rows_of(connection, "steps", run_id, |r| {
        Ok(StepRecord {
            seq: opt_int(r, "seq"),
            name: opt_text(r, "name").unwrap_or_default(),
            occurrence: opt_int(r, "occurrence"),
            depth: opt_int(r, "depth"),
            outcome: opt_text(r, "outcome"),
            duration_ms: opt_int(r, "duration_ms"),
            error: opt_text(r, "error"),
            reason: opt_text(r, "reason"),
        })
    })?;
    record.effects = rows_of(connection, "effects", run_id, |r| {
        Ok(EffectRecord {
            seq: opt_int(r, "seq"),
            step: opt_text(r, "step"),
            namespace: opt_text(r, "namespace").unwrap_or_default(),
            action: opt_text(r, "action").unwrap_or_default(),
            target: opt_text(r, "target").unwrap_or_default(),
            read_only: opt_int(r, "read_only").unwrap_or(0) != 0,
            planned: opt_int(r, "planned").unwrap_or(0) != 0,
            outcome: opt_text(r, "outcome"),
            duration_ms: opt_int(r, "duration_ms"),
            error: opt_text(r, "error"),
            code: opt_int(r, "code"),
            migration_hash: opt_text(r, "migration_hash"),
        })
    })?;
    record.artifacts = rows_of(connection, "artifacts", run_id, |r| {
        Ok(ArtifactRecord {
            step: opt_text(r, "step"),
            name: opt_text(r, "name").unwrap_or_default(),
            sha256: opt_text(r, "sha256").unwrap_or_default(),
            size: opt_int(r, "size").unwrap_or(0),
            planned: opt_int(r, "planned").unwrap_or(0) != 0,
            path: opt_text(r, "path"),
            root: opt_text(r, "root"),
        })
    })?;
    record.approvals = rows_of(connection, "approvals", run_id, |r| {
        Ok(ApprovalRecord {
            step: opt_text(r, "step"),
            role: opt_text(r, "role").unwrap_or_default(),
            approver: opt_text(r, "approver").unwrap_or_default(),
            time: opt_text(r, "time"),
            script_sha256: opt_text(r, "script_sha256"),
            plan_hash: opt_text(r, "plan_hash"),
        })
    })?;
    Ok(Some(record))
}

pub(super) fn run_from_journal(state_dir: &Path, run_id: &str) -> Option<RunRecord> {
    // A run id is a folder name: refuse anything that would leave `runs/`.
    if run_id.is_empty() || run_id.contains(['/', '\0']) || run_id.starts_with('.') {
        return None;
    }
    let events = crate::journal::read_events(&journal_path(state_dir, run_id)).ok()?;
    RunRecord::from_events(&events)
}

pub(super) fn runs_from_journals(state_dir: &Path, limit: usize) -> Vec<RunRecord> {
    let mut ids: Vec<String> = std::fs::read_dir(state_dir.join("runs"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // Run ids start with their UTC start time, so they sort by age.
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.iter()
        .filter_map(|id| run_from_journal(state_dir, id))
        .take(limit)
        .collect()
}
