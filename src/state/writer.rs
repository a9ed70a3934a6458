//! Writing the run index: the journal sink and its writer thread (see the module doc of
//! `state.rs` for why it batches and never blocks), and [`write_batch`], the one reading of
//! events into SQL rows, which the catch-up from journals uses too.

use super::record::{as_i64, is_indexed};
use super::{DB_FILE, catch_up, open};
use crate::config::RunSettings;
use crate::error::Error;
use crate::event::{Body, EffectEvent, Event, RunStart, StepEnd};
use crate::journal::{Journal, Sink};
use rusqlite::{Connection, params};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// How long the end of a run waits for the index to be written (never hang the exit).
const FINISH_WAIT: Duration = Duration::from_secs(3);
/// After the first event of a batch, the writer waits this long for more before writing them in
/// one transaction (the end of the run cuts the wait short). Without it a script that makes
/// 10 000 queries wrote 10 000 transactions, each a dozen thread hand-offs to the SQLite
/// worker, on the same two cores as the script.
const BATCH_WINDOW: Duration = Duration::from_millis(25);

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
        if is_indexed(&event.body) {
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
    let state_dir = path.parent().unwrap_or(Path::new("."));
    let own_run = journal
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned());
    let open_logged = || match open(path, true) {
        Ok(mut connection) => {
            // Runs killed before their last batch was written: the journal has the rest.
            if let Err(why) = catch_up(&mut connection, state_dir, own_run.as_deref()) {
                eprint!("{}", unreadable_warning(path, &why.to_string(), journal));
                return None;
            }
            Some(connection)
        }
        Err(why) => {
            eprint!("{}", unreadable_warning(path, &why, journal));
            None
        }
    };
    let mut opened = path.exists();
    let mut connection = if opened { open_logged() } else { None };
    loop {
        let Ok(first) = receiver.recv() else { break };
        if !opened && matches!(first, Message::Event(_)) {
            connection = open_logged();
            opened = true;
        }
        if !matches!(first, Message::Finish(_)) {
            // Sends do not wake a parked thread; `finish` does (a spurious wake-up only makes a
            // smaller batch).
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
            && let Err(e) = write_batch(conn, &events)
        {
            eprint!("{}", unreadable_warning(path, &e.to_string(), journal));
            connection = None;
        }
        if let Some(ack) = finish {
            if let Some(conn) = connection.as_ref() {
                empty_the_log(conn);
            }
            // Acknowledged once the log is empty: closing need not hold up the end of the run.
            let _ = ack.send(());
            drop(connection.take());
            break;
        }
    }
    drain(receiver);
}

/// Copies the write-ahead log into the database and truncates it, unless another connection is
/// using it (never waits). The process exits right after the end of a run, before SQLite's
/// checkpoint on close, and the next opener recovers whatever valid log it finds: it reads and
/// checksums every frame. Left to SQLite's own checkpoints the log grew by every run up to
/// 4 MB, and recovering it was a quarter of the CPU of `glow-run -e '1+1'`.
fn empty_the_log(connection: &Connection) {
    let _ = connection.busy_timeout(Duration::ZERO);
    let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Keeps accepting (and dropping) events after the index gave up, acknowledging `finish`.
fn drain(receiver: &mpsc::Receiver<Message>) {
    for message in receiver {
        if let Message::Finish(ack) = message {
            let _ = ack.send(());
        }
    }
}

pub(super) fn write_batch(
    connection: &mut Connection,
    events: &[Box<Event>],
) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    let mut last_seq: BTreeMap<&str, i64> = BTreeMap::new();
    for event in events {
        index_event(&tx, event)?;
        let last = last_seq.entry(&event.run).or_insert(0);
        *last = (*last).max(as_i64(event.seq));
    }
    // What `load_run` compares with the journal's last indexed `seq`.
    for (run, seq) in last_seq {
        tx.prepare_cached("UPDATE runs SET last_seq = max(coalesce(last_seq, 0), ?) WHERE id = ?")?
            .execute(params![seq, run])?;
    }
    tx.commit()
}

/// Writes what one event says into the index (the SQL twin of [`RunRecord::apply`]).
fn index_event(tx: &Connection, event: &Event) -> rusqlite::Result<()> {
    let (run, seq, step, time) = (&event.run, as_i64(event.seq), &event.step, &event.time);
    match &event.body {
        Body::RunStart(start) => index_run_start(tx, event, start)?,
        Body::StepStart(start) => {
            tx.prepare_cached("INSERT OR REPLACE INTO steps (run_id, seq, name, occurrence, depth, started) VALUES (?, ?, ?, ?, ?, ?)")?.execute(params![
        run,
        seq,
        step,
        start.occurrence.map(as_i64),
        start.depth.map(as_i64),
        time
    ])?;
        }
        Body::StepEnd(end) => index_step_end(tx, event, end)?,
        Body::Effect(effect) => index_effect(tx, event, effect)?,
        Body::Artifact(artifact) => {
            tx.prepare_cached("INSERT OR REPLACE INTO artifacts (run_id, seq, step, name, sha256, size, planned, path, root) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")?.execute(params![
        run,
        seq,
        step,
        &artifact.name,
        &artifact.sha256,
        as_i64(artifact.size),
        artifact.planned,
        &artifact.path,
        &artifact.root
    ])?;
        }
        Body::Approval(approval) => {
            tx.prepare_cached("INSERT OR REPLACE INTO approvals (run_id, seq, step, role, approver, time, script_sha256, plan_hash, answer, id)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")?.execute(params![
        run,
        seq,
        step,
        &approval.role,
        &approval.approver,
        time,
        &approval.script_sha256,
        &approval.plan_hash,
        &approval.answer,
        &approval.id
    ])?;
        }
        Body::RunEnd(end) => {
            tx.prepare_cached("UPDATE runs SET ended = ?, outcome = ?, exit_code = ?, duration_ms = ?, error = ? WHERE id = ?")?.execute(params![
        time,
        &end.outcome,
        end.exit_code,
        as_i64(end.duration_ms),
        &end.error,
        run
    ])?;
        }
        Body::Output(_) | Body::Log(_) | Body::Prompt(_) | Body::Plan(_) => {}
    }
    Ok(())
}

fn index_run_start(tx: &Connection, event: &Event, start: &RunStart) -> rusqlite::Result<()> {
    let (run, time) = (&event.run, &event.time);
    let pid = (start.extra.get("pid").and_then(Value::as_i64))
        .unwrap_or_else(|| i64::from(std::process::id()));
    tx.prepare_cached(
        "INSERT OR IGNORE INTO runs (id, script, sha256, mode, tag, vars, trace_id, resumes, journal, cwd, pid, started)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        run,
        &start.script,
        &start.sha256,
        &start.mode,
        start.vars.get("tag"),
        serde_json::to_string(&start.vars).unwrap_or_default(),
        &start.trace_id,
        &start.resumes,
        &start.journal,
        &start.cwd,
        pid,
        time
    ])?;
    Ok(())
}

fn index_effect(tx: &Connection, event: &Event, effect: &EffectEvent) -> rusqlite::Result<()> {
    let (run, seq, step) = (&event.run, as_i64(event.seq), &event.step);
    tx.prepare_cached("INSERT OR REPLACE INTO effects (run_id, seq, step, namespace, action, target, read_only, planned, outcome, duration_ms, error, code, migration_hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")?.execute(params![
        run,
        seq,
        step,
        &effect.namespace,
        &effect.action,
        &effect.target,
        effect.read_only,
        effect.planned,
        &effect.outcome,
        effect.duration_ms.map(as_i64),
        &effect.error,
        effect.extra_i64("code"),
        effect.extra_str("migration_hash")
    ])?;
    Ok(())
}

fn index_step_end(tx: &Connection, event: &Event, end: &StepEnd) -> rusqlite::Result<()> {
    let occurrence = end.occurrence.map(as_i64);
    let updated = tx.prepare_cached("UPDATE steps SET outcome = ?, duration_ms = ?, error = ?, reason = ?
         WHERE rowid = (SELECT rowid FROM steps WHERE run_id = ? AND name = ? AND occurrence IS ? AND outcome IS NULL
                        ORDER BY seq DESC LIMIT 1)")?.execute(params![
        &end.outcome,
        as_i64(end.duration_ms),
        &end.error,
        &end.reason,
        &event.run,
        &event.step,
        occurrence
    ])?;
    if updated == 0 {
        // A skipped step never started. (Not twice: a catch-up may replay an event.)
        tx.prepare_cached("INSERT OR REPLACE INTO steps (run_id, seq, name, occurrence, started, outcome, duration_ms, error, reason)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE NOT EXISTS
             (SELECT 1 FROM steps WHERE run_id = ?1 AND name = ?3 AND occurrence IS ?4 AND outcome IS NOT NULL)")?.execute(params![
        &event.run,
        as_i64(event.seq),
        &event.step,
        occurrence,
        &event.time,
        &end.outcome,
        as_i64(end.duration_ms),
        &end.error,
        &end.reason
    ])?;
    }
    Ok(())
}
