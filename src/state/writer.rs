//! Writing the run index: the journal sink and its writer thread (see the module doc of
//! `state.rs` for why it batches and never blocks), and [`write_batch`], the one reading of
//! events into SQL rows, which the catch-up from journals uses too.

use super::record::{as_i64, is_indexed};
use super::{DB_FILE, catch_up, open};
use crate::config::RunSettings;
use crate::error::Error;
use crate::event::{Body, EffectEvent, Event, RunStart, StepEnd};
use crate::journal::{Journal, Sink};
use serde_json::Value;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// How long the end of a run waits for the index to be written (never hang the exit).
const FINISH_WAIT: Duration = Duration::from_secs(3);
/// After the first event of a batch, the writer waits this long for more before writing them in
/// one transaction (the end of the run cuts the wait short). Without it a script that makes
/// 10 000 queries wrote 10 000 transactions, each a dozen thread hand-offs to sqlx's SQLite
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
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return drain(receiver);
    };
    runtime.block_on(async {
        let state_dir = path.parent().unwrap_or(Path::new("."));
        let own_run = journal
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .map(|name| name.to_string_lossy().into_owned());
        let open_logged = || async {
            match open(path, true).await {
                Ok(mut connection) => {
                    // Runs killed before their last batch was written: the journal has the rest.
                    if let Err(why) = catch_up(&mut connection, state_dir, own_run.as_deref()).await
                    {
                        eprint!("{}", unreadable_warning(path, &why.to_string(), journal));
                        return None;
                    }
                    Some(connection)
                }
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

pub(super) async fn write_batch(
    connection: &mut SqliteConnection,
    events: &[Box<Event>],
) -> Result<(), sqlx::Error> {
    let mut tx = connection.begin().await?;
    let mut last_seq: BTreeMap<&str, i64> = BTreeMap::new();
    for event in events {
        index_event(&mut tx, event).await?;
        let last = last_seq.entry(&event.run).or_insert(0);
        *last = (*last).max(as_i64(event.seq));
    }
    // What `load_run` compares with the journal's last indexed `seq`.
    for (run, seq) in last_seq {
        sqlx::query("UPDATE runs SET last_seq = max(coalesce(last_seq, 0), ?) WHERE id = ?")
            .bind(seq)
            .bind(run)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Writes what one event says into the index (the SQL twin of [`RunRecord::apply`]).
async fn index_event(tx: &mut SqliteConnection, event: &Event) -> Result<(), sqlx::Error> {
    let (run, seq, step, time) = (&event.run, as_i64(event.seq), &event.step, &event.time);
    match &event.body {
        Body::RunStart(start) => index_run_start(tx, event, start).await?,
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
        Body::Effect(effect) => index_effect(tx, event, effect).await?,
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

async fn index_run_start(
    tx: &mut SqliteConnection,
    event: &Event,
    start: &RunStart,
) -> Result<(), sqlx::Error> {
    let (run, time) = (&event.run, &event.time);
    sqlx::query(
        "INSERT OR IGNORE INTO runs (id, script, sha256, mode, tag, vars, trace_id, resumes, journal, cwd, pid, started)
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
    .bind(
        start
            .extra
            .get("pid")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| i64::from(std::process::id())),
    )
    .bind(time)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn index_effect(
    tx: &mut SqliteConnection,
    event: &Event,
    effect: &EffectEvent,
) -> Result<(), sqlx::Error> {
    let (run, seq, step) = (&event.run, as_i64(event.seq), &event.step);
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
        // A skipped step never started. (Not twice: a catch-up may replay an event.)
        sqlx::query(
            "INSERT OR REPLACE INTO steps (run_id, seq, name, occurrence, started, outcome, duration_ms, error, reason)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE NOT EXISTS
             (SELECT 1 FROM steps WHERE run_id = ?1 AND name = ?3 AND occurrence IS ?4 AND outcome IS NOT NULL)",
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
