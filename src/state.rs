//! The run index (`.glow/state.db`, SQLite through sqlx): runs, steps, effects, artifacts and
//! approvals, written as the run goes so that a run killed half way shows up as "interrupted".
//! It serves `glow-run runs`, `show` and `resume`; [`RunRecord`] is the one model of a run,
//! read from the index or, when the index is missing or unreadable, from the run's journal.
//!
//! Why it is built this way:
//! - The journal calls [`Sink::event`] on the engine thread and on tokio worker threads (child
//!   output), so the sink never blocks: it only pushes into a channel. A dedicated writer
//!   thread with its own current-thread runtime drains it, batching whatever has arrived into
//!   one transaction. Opening the database happens on that thread too, off the critical path.
//! - WAL with `synchronous = OFF`: a committed batch is in the OS page cache when the commit
//!   returns, which survives the process being killed (what "interrupted" needs); only a power
//!   loss could drop the last batches, and the journal is the source of truth. With fsyncs the
//!   index cost ~25 ms per run on a plain disk; without, about 2 ms, overlapped with the run.
//! - The journal is the source of truth. A corrupt index is reported (which file, what to do)
//!   and the run goes on; readers fall back to the journals.

use crate::config::RunSettings;
use crate::error::Error;
use crate::event::{Body, Event, StepEnd};
use crate::journal::{Journal, Sink};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

pub const DB_FILE: &str = "state.db";
/// How long the end of a run waits for the index to be written (never hang the exit).
const FINISH_WAIT: Duration = Duration::from_secs(3);
/// How long a statement waits for another glow-run holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// After the first event of a batch, the writer waits this long for more before writing them in
/// one transaction (the end of the run cuts the wait short). Without it a script that makes
/// 10 000 queries wrote 10 000 transactions, each a dozen thread hand-offs to sqlx's SQLite
/// worker, on the same two cores as the script.
const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// `PRAGMA user_version` once [`SCHEMA`] is in place: later runs skip the DDL round trips.
const SCHEMA_VERSION: i64 = 1;

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

/// One run as `runs` and `show` present it.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub id: String,
    pub script: String,
    pub sha256: String,
    pub mode: String,
    pub tag: Option<String>,
    pub vars: BTreeMap<String, String>,
    pub trace_id: Option<String>,
    pub resumes: Option<String>,
    pub journal: Option<String>,
    /// The working directory the run started in (scripts and stores resolve from it).
    pub cwd: Option<String>,
    pub pid: Option<i64>,
    pub started: String,
    pub ended: Option<String>,
    pub outcome: Option<String>,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub steps: Vec<StepRecord>,
    pub effects: Vec<EffectRecord>,
    pub artifacts: Vec<ArtifactRecord>,
    pub approvals: Vec<ApprovalRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct StepRecord {
    pub name: String,
    pub occurrence: Option<i64>,
    pub depth: Option<i64>,
    pub outcome: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EffectRecord {
    pub step: Option<String>,
    pub namespace: String,
    pub action: String,
    pub target: String,
    pub read_only: bool,
    pub planned: bool,
    pub outcome: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub code: Option<i64>,
    pub migration_hash: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ArtifactRecord {
    pub step: Option<String>,
    pub name: String,
    pub sha256: String,
    pub size: i64,
    pub planned: bool,
    pub path: Option<String>,
    pub root: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ApprovalRecord {
    pub step: Option<String>,
    pub role: String,
    pub approver: String,
    pub time: Option<String>,
    pub script_sha256: Option<String>,
    pub plan_hash: Option<String>,
}

impl RunRecord {
    /// The outcome as shown: a run without `run_end` is "running" while its process lives,
    /// else "interrupted".
    pub fn status(&self) -> String {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        let alive = self
            .pid
            .and_then(|pid| i32::try_from(pid).ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                    && pid != i32::try_from(std::process::id()).unwrap_or(0)
            });
        if alive {
            "running".into()
        } else {
            "interrupted".into()
        }
    }

    /// The steps (name, occurrence) that succeeded, including those skipped because they had
    /// succeeded in the run this one resumed (so a resume of a resume keeps skipping them).
    pub fn succeeded_steps(&self) -> std::collections::BTreeSet<(String, usize)> {
        self.steps
            .iter()
            .filter(|s| {
                s.outcome.as_deref() == Some("ok")
                    || (s.outcome.as_deref() == Some("skipped")
                        && s.reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("succeeded in run")))
            })
            .filter_map(|s| Some((s.name.clone(), usize::try_from(s.occurrence?).ok()?)))
            .collect()
    }

    /// Builds the record from a journal's events (the fallback when the index cannot serve).
    pub fn from_events(events: &[Event]) -> Option<Self> {
        let mut record: Option<Self> = None;
        for event in events {
            if matches!(event.body, Body::RunStart(_)) {
                record = Some(Self::default());
            }
            if let Some(record) = record.as_mut() {
                record.apply(event);
            }
        }
        record
    }

    /// Applies one event (the same reading the index writer does in SQL).
    pub fn apply(&mut self, event: &Event) {
        let step = event.step.clone();
        match &event.body {
            Body::RunStart(start) => {
                self.id.clone_from(&event.run);
                self.script.clone_from(&start.script);
                self.sha256.clone_from(&start.sha256);
                self.mode.clone_from(&start.mode);
                self.vars.clone_from(&start.vars);
                self.tag = self.vars.get("tag").cloned();
                self.trace_id = Some(start.trace_id.clone()).filter(|t| !t.is_empty());
                self.resumes.clone_from(&start.resumes);
                self.journal.clone_from(&start.journal);
                self.cwd = Some(start.cwd.clone()).filter(|c| !c.is_empty());
                self.started.clone_from(&event.time);
            }
            Body::StepStart(start) => self.steps.push(StepRecord {
                name: step.unwrap_or_default(),
                occurrence: start.occurrence.map(as_i64),
                depth: start.depth.map(as_i64),
                ..StepRecord::default()
            }),
            Body::StepEnd(end) => self.end_step(step.unwrap_or_default(), end),
            Body::Effect(effect) => self.effects.push(EffectRecord {
                step,
                namespace: effect.namespace.clone(),
                action: effect.action.clone(),
                target: effect.target.clone(),
                read_only: effect.read_only,
                planned: effect.planned,
                outcome: Some(effect.outcome.clone()).filter(|o| !o.is_empty()),
                duration_ms: effect.duration_ms.map(as_i64),
                error: effect.error.clone(),
                code: effect.extra_i64("code"),
                migration_hash: effect.extra_str("migration_hash").map(str::to_owned),
            }),
            Body::Artifact(artifact) => self.artifacts.push(ArtifactRecord {
                step,
                name: artifact.name.clone(),
                sha256: artifact.sha256.clone(),
                size: as_i64(artifact.size),
                planned: artifact.planned,
                path: Some(artifact.path.clone()),
                root: Some(artifact.root.clone()),
            }),
            Body::Approval(approval) => self.approvals.push(ApprovalRecord {
                step,
                role: approval.role.clone(),
                approver: approval.approver.clone(),
                time: Some(event.time.clone()),
                script_sha256: Some(approval.script_sha256.clone()),
                plan_hash: Some(approval.plan_hash.clone()),
            }),
            Body::RunEnd(end) => {
                self.ended = Some(event.time.clone());
                self.outcome = Some(end.outcome.clone());
                self.exit_code = Some(i64::from(end.exit_code));
                self.duration_ms = Some(as_i64(end.duration_ms));
                self.error.clone_from(&end.error);
            }
            Body::Output(_) | Body::Log(_) | Body::Prompt(_) | Body::Plan(_) => {}
        }
    }

    /// Closes the newest open step of that name and occurrence (a skipped step never opened).
    fn end_step(&mut self, name: String, end: &StepEnd) {
        let occurrence = end.occurrence.map(as_i64);
        let open = self
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.outcome.is_none() && s.name == name && s.occurrence == occurrence);
        let target = match open {
            Some(step) => step,
            None => {
                self.steps.push(StepRecord {
                    name,
                    occurrence,
                    ..StepRecord::default()
                });
                self.steps.last_mut().expect("just pushed")
            }
        };
        target.outcome = Some(end.outcome.clone());
        target.duration_ms = Some(as_i64(end.duration_ms));
        target.error.clone_from(&end.error);
        target.reason.clone_from(&end.reason);
    }
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Writing: the sink and its writer thread.

enum Message {
    Event(Box<Event>),
    Finish(mpsc::Sender<()>),
}

struct IndexSink {
    sender: mpsc::Sender<Message>,
    /// The writer thread, unparked by `finish` so it stops waiting for a fuller batch.
    writer: std::thread::Thread,
}

impl Sink for IndexSink {
    fn event(&self, event: &Event, _line: &str) {
        // Output lines and logs are not indexed: do not even copy them (a chatty build prints
        // millions). Never blocks: the writer thread does the I/O.
        let indexed = !matches!(
            event.body,
            Body::Output(_) | Body::Log(_) | Body::Prompt(_) | Body::Plan(_)
        );
        if indexed {
            let _ = self.sender.send(Message::Event(Box::new(event.clone())));
        }
    }

    fn finish(&self) {
        let (ack, done) = mpsc::channel();
        if self.sender.send(Message::Finish(ack)).is_ok() {
            self.writer.unpark();
            let _ = done.recv_timeout(FINISH_WAIT);
        }
    }
}

/// Adds the run index as a journal sink, so the run is recorded as it goes.
pub fn attach(journal: &Journal, settings: &RunSettings) -> Result<(), Error> {
    let journal_path = journal.path().map(Path::to_owned);
    journal.add_sink(start(settings, journal_path)?);
    Ok(())
}

/// Starts the run index's writer and returns its sink, to be added to the journal once the
/// run starts. Called before the script compiles: when the database exists, the writer opens
/// it meanwhile (a few ms of thread hand-offs, off the start-up's critical path); a missing one
/// is created with the first event, so a script that does not compile creates nothing.
pub fn start(
    settings: &RunSettings,
    journal_path: Option<PathBuf>,
) -> Result<Arc<dyn Sink>, Error> {
    let path = settings.state_dir.join(DB_FILE);
    let (sender, receiver) = mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("glow-index".into())
        .spawn(move || writer(&path, journal_path.as_deref(), &receiver))
        .map_err(|e| Error::host("starting the run index writer", e))?
        .thread()
        .clone();
    Ok(Arc::new(IndexSink { sender, writer }))
}

/// What to tell a person whose index cannot be used.
fn unreadable_warning(path: &Path, why: &str, journal: Option<&Path>) -> String {
    let journal = journal.map_or_else(String::new, |j| {
        format!(" Its journal is complete: {}.", j.display())
    });
    format!(
        "warning: the run index {path} is unreadable ({why}); this run is not recorded in it.{journal}\n\
         hint: move it away (`mv {path} {path}.broken`) and the next run starts a fresh index; \
         `glow-run runs` and `show` read the journals meanwhile\n",
        path = path.display(),
    )
}

fn writer(path: &Path, journal: Option<&Path>, receiver: &mpsc::Receiver<Message>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return drain(receiver);
    };
    runtime.block_on(async {
        let open_logged = || async {
            match open(path, true).await {
                Ok(connection) => Some(connection),
                Err(why) => {
                    eprint!("{}", unreadable_warning(path, &why, journal));
                    None
                }
            }
        };
        let mut opened = path.exists();
        let mut connection = if opened { open_logged().await } else { None };
        loop {
            let Ok(first) = receiver.recv() else { break };
            if !opened && matches!(first, Message::Event(_)) {
                connection = open_logged().await;
                opened = true;
            }
            if !matches!(first, Message::Finish(_)) {
                // Sends do not wake a parked thread; `finish` does (a spurious wake-up only
                // makes a smaller batch).
                std::thread::park_timeout(BATCH_WINDOW);
            }
            let mut batch = vec![first];
            batch.extend(receiver.try_iter());
            let mut finish = None;
            let events: Vec<Box<Event>> = batch
                .into_iter()
                .filter_map(|message| match message {
                    Message::Event(event) => Some(event),
                    Message::Finish(ack) => {
                        finish = Some(ack);
                        None
                    }
                })
                .collect();
            if let Some(conn) = connection.as_mut()
                && let Err(e) = write_batch(conn, &events).await
            {
                eprint!("{}", unreadable_warning(path, &e.to_string(), journal));
                connection = None;
            }
            if let Some(ack) = finish {
                if let Some(conn) = connection.take() {
                    let _ = conn.close().await;
                }
                let _ = ack.send(());
                break;
            }
        }
    });
    drain(receiver);
}

/// Keeps accepting (and dropping) events after the index gave up, acknowledging `finish`.
fn drain(receiver: &mpsc::Receiver<Message>) {
    for message in receiver {
        if let Message::Finish(ack) = message {
            let _ = ack.send(());
        }
    }
}

async fn open(path: &Path, write: bool) -> Result<SqliteConnection, String> {
    if write && let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(write)
        .read_only(!write)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .busy_timeout(BUSY_TIMEOUT);
    let mut connection = options.connect().await.map_err(|e| e.to_string())?;
    if write {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        if version < SCHEMA_VERSION {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "{SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};"
            )))
            .execute(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        }
    } else {
        // Reading proves the file is a database (sqlite opens anything lazily).
        sqlx::query("SELECT count(*) FROM runs")
            .execute(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(connection)
}

async fn write_batch(
    connection: &mut SqliteConnection,
    events: &[Box<Event>],
) -> Result<(), sqlx::Error> {
    let mut tx = connection.begin().await?;
    for event in events {
        index_event(&mut tx, event).await?;
    }
    tx.commit().await
}

/// Writes what one event says into the index (the SQL twin of [`RunRecord::apply`]).
async fn index_event(tx: &mut SqliteConnection, event: &Event) -> Result<(), sqlx::Error> {
    let (run, seq, step, time) = (&event.run, as_i64(event.seq), &event.step, &event.time);
    match &event.body {
        Body::RunStart(start) => {
            sqlx::query(
                "INSERT OR REPLACE INTO runs (id, script, sha256, mode, tag, vars, trace_id, resumes, journal, cwd, pid, started)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run)
            .bind(&start.script)
            .bind(&start.sha256)
            .bind(&start.mode)
            .bind(start.vars.get("tag"))
            .bind(serde_json::to_string(&start.vars).unwrap_or_default())
            .bind(&start.trace_id)
            .bind(&start.resumes)
            .bind(&start.journal)
            .bind(&start.cwd)
            .bind(i64::from(std::process::id()))
            .bind(time)
            .execute(&mut *tx)
            .await?;
        }
        Body::StepStart(start) => {
            sqlx::query("INSERT OR REPLACE INTO steps (run_id, seq, name, occurrence, depth, started) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(run)
                .bind(seq)
                .bind(step)
                .bind(start.occurrence.map(as_i64))
                .bind(start.depth.map(as_i64))
                .bind(time)
                .execute(&mut *tx)
                .await?;
        }
        Body::StepEnd(end) => index_step_end(tx, event, end).await?,
        Body::Effect(effect) => {
            sqlx::query(
                "INSERT OR REPLACE INTO effects (run_id, seq, step, namespace, action, target, read_only, planned, outcome, duration_ms, error, code, migration_hash)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run)
            .bind(seq)
            .bind(step)
            .bind(&effect.namespace)
            .bind(&effect.action)
            .bind(&effect.target)
            .bind(effect.read_only)
            .bind(effect.planned)
            .bind(&effect.outcome)
            .bind(effect.duration_ms.map(as_i64))
            .bind(&effect.error)
            .bind(effect.extra_i64("code"))
            .bind(effect.extra_str("migration_hash"))
            .execute(&mut *tx)
            .await?;
        }
        Body::Artifact(artifact) => {
            sqlx::query(
                "INSERT OR REPLACE INTO artifacts (run_id, seq, step, name, sha256, size, planned, path, root) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run)
            .bind(seq)
            .bind(step)
            .bind(&artifact.name)
            .bind(&artifact.sha256)
            .bind(as_i64(artifact.size))
            .bind(artifact.planned)
            .bind(&artifact.path)
            .bind(&artifact.root)
            .execute(&mut *tx)
            .await?;
        }
        Body::Approval(approval) => {
            sqlx::query(
                "INSERT OR REPLACE INTO approvals (run_id, seq, step, role, approver, time, script_sha256, plan_hash, answer, id)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run)
            .bind(seq)
            .bind(step)
            .bind(&approval.role)
            .bind(&approval.approver)
            .bind(time)
            .bind(&approval.script_sha256)
            .bind(&approval.plan_hash)
            .bind(&approval.answer)
            .bind(&approval.id)
            .execute(&mut *tx)
            .await?;
        }
        Body::RunEnd(end) => {
            sqlx::query("UPDATE runs SET ended = ?, outcome = ?, exit_code = ?, duration_ms = ?, error = ? WHERE id = ?")
                .bind(time)
                .bind(&end.outcome)
                .bind(end.exit_code)
                .bind(as_i64(end.duration_ms))
                .bind(&end.error)
                .bind(run)
                .execute(&mut *tx)
                .await?;
        }
        Body::Output(_) | Body::Log(_) | Body::Prompt(_) | Body::Plan(_) => {}
    }
    Ok(())
}

async fn index_step_end(
    tx: &mut SqliteConnection,
    event: &Event,
    end: &StepEnd,
) -> Result<(), sqlx::Error> {
    let occurrence = end.occurrence.map(as_i64);
    let updated = sqlx::query(
        "UPDATE steps SET outcome = ?, duration_ms = ?, error = ?, reason = ?
         WHERE rowid = (SELECT rowid FROM steps WHERE run_id = ? AND name = ? AND occurrence IS ? AND outcome IS NULL
                        ORDER BY seq DESC LIMIT 1)",
    )
    .bind(&end.outcome)
    .bind(as_i64(end.duration_ms))
    .bind(&end.error)
    .bind(&end.reason)
    .bind(&event.run)
    .bind(&event.step)
    .bind(occurrence)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        // A skipped step never started.
        sqlx::query(
            "INSERT OR REPLACE INTO steps (run_id, seq, name, occurrence, started, outcome, duration_ms, error, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&event.run)
        .bind(as_i64(event.seq))
        .bind(&event.step)
        .bind(occurrence)
        .bind(&event.time)
        .bind(&end.outcome)
        .bind(as_i64(end.duration_ms))
        .bind(&end.error)
        .bind(&end.reason)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading: `runs`, `show`, `resume`.

/// Where a reader got its answer.
pub enum Source {
    Index,
    /// The index is missing or unreadable (the reason); the journals were read instead.
    Journals(Option<String>),
}

pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE)
}

fn read_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::host("starting the run index reader", e))
}

/// Opens the index for reading: `Ok(None)` when there is none, `Err(why)` when unreadable.
async fn open_read(state_dir: &Path) -> Result<Option<SqliteConnection>, String> {
    let path = db_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    open(&path, false).await.map(Some)
}

fn opt_text(row: &sqlx::sqlite::SqliteRow, column: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(column).ok().flatten()
}

fn opt_int(row: &sqlx::sqlite::SqliteRow, column: &str) -> Option<i64> {
    row.try_get::<Option<i64>, _>(column).ok().flatten()
}

fn run_from_row(row: &sqlx::sqlite::SqliteRow) -> RunRecord {
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
        ..RunRecord::default()
    }
}

/// Recent runs, newest first.
pub fn list_runs(state_dir: &Path, limit: usize) -> Result<(Vec<RunRecord>, Source), Error> {
    let from_index = read_runtime()?.block_on(async {
        let Some(mut connection) = open_read(state_dir).await? else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT ?")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        let _ = connection.close().await;
        Ok::<_, String>(Some(rows.iter().map(run_from_row).collect::<Vec<_>>()))
    });
    match from_index {
        Ok(Some(runs)) => Ok((runs, Source::Index)),
        Ok(None) => Ok((runs_from_journals(state_dir, limit), Source::Journals(None))),
        Err(why) => Ok((
            runs_from_journals(state_dir, limit),
            Source::Journals(Some(why)),
        )),
    }
}

/// One run with its steps, effects, artifacts and approvals; `None` when the id is unknown.
pub fn load_run(state_dir: &Path, run_id: &str) -> Result<(Option<RunRecord>, Source), Error> {
    let from_index = read_runtime()?.block_on(async {
        let Some(mut connection) = open_read(state_dir).await? else {
            return Ok(None);
        };
        let record = load_from_index(&mut connection, run_id)
            .await
            .map_err(|e| e.to_string());
        let _ = connection.close().await;
        record.map(Some)
    });
    match from_index {
        Ok(Some(Some(record))) => Ok((Some(record), Source::Index)),
        // Not in the index (an older index, or a run that could not be indexed): the journal.
        Ok(Some(None) | None) => Ok((run_from_journal(state_dir, run_id), Source::Journals(None))),
        Err(why) => Ok((
            run_from_journal(state_dir, run_id),
            Source::Journals(Some(why)),
        )),
    }
}

async fn load_from_index(
    connection: &mut SqliteConnection,
    run_id: &str,
) -> Result<Option<RunRecord>, sqlx::Error> {
    let Some(row) = sqlx::query("SELECT * FROM runs WHERE id = ?")
        .bind(run_id)
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    let mut record = run_from_row(&row);
    let rows = sqlx::query("SELECT * FROM steps WHERE run_id = ? ORDER BY seq")
        .bind(run_id)
        .fetch_all(&mut *connection)
        .await?;
    record.steps = rows
        .iter()
        .map(|r| StepRecord {
            name: opt_text(r, "name").unwrap_or_default(),
            occurrence: opt_int(r, "occurrence"),
            depth: opt_int(r, "depth"),
            outcome: opt_text(r, "outcome"),
            duration_ms: opt_int(r, "duration_ms"),
            error: opt_text(r, "error"),
            reason: opt_text(r, "reason"),
        })
        .collect();
    let rows = sqlx::query("SELECT * FROM effects WHERE run_id = ? ORDER BY seq")
        .bind(run_id)
        .fetch_all(&mut *connection)
        .await?;
    record.effects = rows
        .iter()
        .map(|r| EffectRecord {
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
        .collect();
    let rows = sqlx::query("SELECT * FROM artifacts WHERE run_id = ? ORDER BY seq")
        .bind(run_id)
        .fetch_all(&mut *connection)
        .await?;
    record.artifacts = rows
        .iter()
        .map(|r| ArtifactRecord {
            step: opt_text(r, "step"),
            name: opt_text(r, "name").unwrap_or_default(),
            sha256: opt_text(r, "sha256").unwrap_or_default(),
            size: opt_int(r, "size").unwrap_or(0),
            planned: opt_int(r, "planned").unwrap_or(0) != 0,
            path: opt_text(r, "path"),
            root: opt_text(r, "root"),
        })
        .collect();
    let rows = sqlx::query("SELECT * FROM approvals WHERE run_id = ? ORDER BY seq")
        .bind(run_id)
        .fetch_all(&mut *connection)
        .await?;
    record.approvals = rows
        .iter()
        .map(|r| ApprovalRecord {
            step: opt_text(r, "step"),
            role: opt_text(r, "role").unwrap_or_default(),
            approver: opt_text(r, "approver").unwrap_or_default(),
            time: opt_text(r, "time"),
            script_sha256: opt_text(r, "script_sha256"),
            plan_hash: opt_text(r, "plan_hash"),
        })
        .collect();
    Ok(Some(record))
}

/// The journal of a run: `<state_dir>/runs/<id>/journal.jsonl`.
pub fn journal_path(state_dir: &Path, run_id: &str) -> PathBuf {
    state_dir.join("runs").join(run_id).join("journal.jsonl")
}

fn run_from_journal(state_dir: &Path, run_id: &str) -> Option<RunRecord> {
    // A run id is a folder name: refuse anything that would leave `runs/`.
    if run_id.is_empty() || run_id.contains(['/', '\0']) || run_id.starts_with('.') {
        return None;
    }
    let events = crate::journal::read_events(&journal_path(state_dir, run_id)).ok()?;
    RunRecord::from_events(&events)
}

fn runs_from_journals(state_dir: &Path, limit: usize) -> Vec<RunRecord> {
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
