//! The run index (`.glow/state.db`, SQLite through rusqlite): runs, steps, effects, artifacts and
//! approvals, written as the run goes so that a run killed half way shows up as "interrupted".
//! It serves `glow-run runs`, `show` and `resume`; [`RunRecord`] is the one model of a run.
//!
//! Why it is built this way:
//! - The journal is the source of truth; the index is a cache. It is written in batches
//!   (`state/writer.rs`), so a run killed with -9 leaves the index up to 25 ms behind its
//!   journal, or without a row at all when it dies in its first milliseconds. Each row keeps
//!   the last `seq` it holds; whenever the index is opened it catches up from the journals of
//!   runs whose process is gone (`state/catch_up.rs`), and readers take a run that has not
//!   ended from its journal, so `resume` never re-runs a step whose `step_end ok` is journaled.
//! - WAL with `synchronous = OFF`: a committed batch is in the OS page cache when the commit
//!   returns, which survives the process being killed; only a power loss could drop the last
//!   batches, and the catch-up restores them from the journal. With fsyncs the index cost
//!   ~25 ms per run on a plain disk; without, about 2 ms, overlapped with the run.
//! - A corrupt index is reported (which file, what to do) and the run goes on; readers fall
//!   back to the journals.

mod catch_up;
mod reader;
mod record;
mod writer;

pub use record::{
    ApprovalRecord, ArtifactRecord, EffectRecord, InDoubtStep, RunRecord, StepRecord, pid_alive,
};
pub use writer::{attach, start};

use crate::error::Error;
use catch_up::catch_up;
use reader::{load_from_index, recent_runs, run_from_journal, runs_from_journals};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DB_FILE: &str = "state.db";
/// How long a statement waits for another glow-run holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// `PRAGMA user_version` once [`SCHEMA`] and [`SCHEMA_V2`] are in place: later runs skip the
/// DDL round trips.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, script TEXT, sha256 TEXT, mode TEXT, tag TEXT, vars TEXT,
    trace_id TEXT, resumes TEXT, journal TEXT, cwd TEXT, pid INTEGER, started TEXT,
    ended TEXT, outcome TEXT, exit_code INTEGER, duration_ms INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT, occurrence INTEGER, depth INTEGER,
    started TEXT, outcome TEXT, duration_ms INTEGER, error TEXT, reason TEXT,
    PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS effects (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, step TEXT, namespace TEXT, action TEXT,
    target TEXT, read_only INTEGER, planned INTEGER, outcome TEXT, duration_ms INTEGER,
    error TEXT, code INTEGER, migration_hash TEXT, PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, step TEXT, name TEXT, sha256 TEXT,
    size INTEGER, planned INTEGER, path TEXT, root TEXT, PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, step TEXT, role TEXT, approver TEXT,
    time TEXT, script_sha256 TEXT, plan_hash TEXT, answer TEXT, id TEXT,
    PRIMARY KEY (run_id, seq));
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
";

/// Version 2: the last journal `seq` each row holds, and whether a run whose process is gone
/// has been caught up from its journal for good.
const SCHEMA_V2: &str = "
ALTER TABLE runs ADD COLUMN last_seq INTEGER;
ALTER TABLE runs ADD COLUMN settled INTEGER;
";

fn open(path: &Path, write: bool) -> Result<Connection, String> {
    open_connection(path, write).map_err(|e| e.to_string())
}

fn open_connection(path: &Path, write: bool) -> Result<Connection, Box<dyn std::error::Error>> {
    let flags = if write {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    let connection = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    if !write {
        // Reading proves the file is a database (sqlite opens anything lazily).
        connection.query_row("SELECT count(*) FROM runs", [], |_| Ok(()))?;
        return Ok(connection);
    }
    connection.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    persist_wal(&connection);
    connection.execute_batch("PRAGMA synchronous = OFF")?;
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let mut ddl = String::new();
    if version < 1 {
        ddl.push_str(SCHEMA);
    }
    if version < 2 {
        ddl.push_str(SCHEMA_V2);
    }
    if !ddl.is_empty() {
        connection.execute_batch(&format!("{ddl}\nPRAGMA user_version = {SCHEMA_VERSION};"))?;
    }
    Ok(connection)
}

/// Keeps `state.db-wal` and `-shm` when the last connection closes instead of deleting them:
/// every run opens the index, and creating and deleting the two files each time was a fifth
/// of the start-up's CPU (ext4 searches past recently deleted inodes for a new one). SQLite
/// still checkpoints the log into the database on close. A failure only costs that time.
fn persist_wal(connection: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is open for as long as `connection` lives, "main" is a NUL-terminated
    // database name, and SQLITE_FCNTL_PERSIST_WAL reads and writes one `int` through the pointer.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            connection.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        );
    }
}

/// Where a reader got its answer.
pub enum Source {
    Index,
    /// The index is missing or unreadable (the reason); the journals were read instead.
    Journals(Option<String>),
}

pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE)
}

/// The journal of a run: `<state_dir>/runs/<id>/journal.jsonl`.
pub fn journal_path(state_dir: &Path, run_id: &str) -> PathBuf {
    state_dir.join("runs").join(run_id).join("journal.jsonl")
}

/// Opens the index for reading after letting it catch up from the journals: `Ok(None)` when
/// there is none, `Err(why)` when unreadable. The flag says whether the catch-up happened (an
/// index that cannot be written, on a read-only disk say, is still read).
fn open_read(state_dir: &Path) -> Result<Option<(Connection, bool)>, String> {
    let path = db_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    if let Ok(mut connection) = open(&path, true)
        && catch_up(&mut connection, state_dir, None).is_ok()
    {
        return Ok(Some((connection, true)));
    }
    open(&path, false).map(|c| Some((c, false)))
}

/// A run that has not ended is taken from its journal when that holds more than the index.
fn freshest(state_dir: &Path, record: RunRecord) -> RunRecord {
    if record.outcome.is_some() {
        // `run_end` is the last event and batches are written in order: the row is complete.
        return record;
    }
    match run_from_journal(state_dir, &record.id) {
        Some(mut journal) if journal.last_seq >= record.last_seq => {
            journal.pid = journal.pid.or(record.pid);
            journal
        }
        _ => record,
    }
}

/// Recent runs, newest first.
pub fn list_runs(state_dir: &Path, limit: usize) -> Result<(Vec<RunRecord>, Source), Error> {
    let from_index = open_read(state_dir).and_then(|opened| {
        let Some((connection, caught_up)) = opened else {
            return Ok(None);
        };
        let runs = recent_runs(&connection, limit).map_err(|e| e.to_string())?;
        Ok(Some((runs, caught_up)))
    });
    match from_index {
        Ok(Some((runs, caught_up))) => {
            let mut runs: Vec<RunRecord> =
                runs.into_iter().map(|r| freshest(state_dir, r)).collect();
            if !caught_up {
                // Runs the index never saw (killed in their first milliseconds).
                for run in runs_from_journals(state_dir, limit) {
                    if !runs.iter().any(|r| r.id == run.id) {
                        runs.push(run);
                    }
                }
                runs.sort_by(|a, b| (&b.started, &b.id).cmp(&(&a.started, &a.id)));
                runs.truncate(limit);
            }
            Ok((runs, Source::Index))
        }
        Ok(None) => Ok((runs_from_journals(state_dir, limit), Source::Journals(None))),
        Err(why) => Ok((
            runs_from_journals(state_dir, limit),
            Source::Journals(Some(why)),
        )),
    }
}

/// One run with its steps, effects, artifacts and approvals; `None` when the id is unknown.
pub fn load_run(state_dir: &Path, run_id: &str) -> Result<(Option<RunRecord>, Source), Error> {
    let from_index = open_read(state_dir).and_then(|opened| match opened {
        Some((connection, _)) => load_from_index(&connection, run_id)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    });
    match from_index {
        Ok(Some(Some(record))) => Ok((Some(freshest(state_dir, record)), Source::Index)),
        // Not in the index (an older index, or a run that could not be indexed): the journal.
        Ok(Some(None) | None) => Ok((run_from_journal(state_dir, run_id), Source::Journals(None))),
        Err(why) => Ok((
            run_from_journal(state_dir, run_id),
            Source::Journals(Some(why)),
        )),
    }
}
