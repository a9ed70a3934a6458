//! The journal: one JSON event per line in `.glow/runs/RUN_ID/journal.jsonl`, written with one
//! `write` per event (no user-space buffer), so a run killed at any point leaves a readable
//! journal up to its last event. Every event is redacted before anything sees it, then handed
//! to the sinks (the terminal reporter, the run index).
//!
//! Events are the typed [`Event`]s of `event.rs`; sinks receive each one typed, with the exact
//! line the journal wrote for it.

use crate::event::{Body, Event};
use crate::redact::Redactor;
use serde_json::{Map, Value};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Receives every (already redacted) event, in order, with its journal line (no newline).
pub trait Sink: Send + Sync {
    fn event(&self, event: &Event, line: &str);
    /// Called once when the run is over: flush, close (bounded in time; never hang the exit).
    fn finish(&self) {}
}

pub struct Journal {
    run_id: String,
    path: std::sync::OnceLock<PathBuf>,
    redactor: Arc<Redactor>,
    inner: Mutex<Inner>,
    sinks: Mutex<Vec<Arc<dyn Sink>>>,
}

struct Inner {
    file: Option<File>,
    seq: u64,
    write_error: Option<String>,
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Journal {
    /// Opens `dir/journal.jsonl` for appending (the directory is created). Events emitted
    /// before this (while the script compiles) reach the sinks only.
    pub fn attach_file(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).file = Some(file);
        let _ = self.path.set(path.clone());
        Ok(path)
    }

    /// A journal that feeds its sinks until [`Journal::attach_file`] gives it a file.
    pub fn in_memory(run_id: &str, redactor: Arc<Redactor>) -> Self {
        Self {
            run_id: run_id.to_owned(),
            path: std::sync::OnceLock::new(),
            redactor,
            inner: Mutex::new(Inner {
                file: None,
                seq: 0,
                write_error: None,
            }),
            sinks: Mutex::new(Vec::new()),
        }
    }

    pub fn add_sink(&self, sink: Arc<dyn Sink>) {
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sink);
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.get().map(PathBuf::as_path)
    }

    /// The run's directory (where the journal, report and default artifacts live).
    pub fn run_dir(&self) -> Option<&Path> {
        self.path().and_then(Path::parent)
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    /// The first error writing the journal file, if any (reported at the end of the run).
    pub fn write_error(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_error
            .clone()
    }

    /// Appends one event: numbered, timed, redacted, written as one line, then handed to the
    /// sinks. Returns its `seq`.
    pub fn record(&self, step: Option<&str>, body: Body) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.seq += 1;
        let mut event = Event {
            seq: inner.seq,
            time: now_rfc3339(),
            run: self.run_id.clone(),
            step: step.map(str::to_owned),
            body,
        };
        event.redact(&self.redactor);
        let mut line = serde_json::to_string(&event).unwrap_or_default();
        if let Some(file) = inner.file.as_mut() {
            line.push('\n');
            if let Err(e) = file.write_all(line.as_bytes()) {
                inner.write_error.get_or_insert_with(|| e.to_string());
            }
            line.pop();
        }
        // Sinks run under the lock so every consumer sees events in `seq` order.
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for sink in sinks {
            sink.event(&event, &line);
        }
        event.seq
    }

    /// Appends an event given as its kind and a JSON object of fields (read into the typed
    /// [`Body`] first, so a field of the wrong type is caught here, not by a reader).
    pub fn emit(&self, kind: &str, step: Option<&str>, fields: Value) -> u64 {
        let mut object = match fields {
            Value::Object(object) => object,
            _ => Map::new(),
        };
        object.insert("kind".into(), Value::String(kind.to_owned()));
        let body = serde_json::from_value::<Body>(Value::Object(object)).unwrap_or_else(|e| {
            Body::log(
                "warn",
                format!("glow-run could not journal a {kind} event: {e}"),
            )
        });
        self.record(step, body)
    }
}

impl Journal {
    /// Lets every sink flush; called once after `run_end`.
    pub fn finish(&self) {
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for sink in sinks {
            sink.finish();
        }
    }
}

/// Reads a journal file, skipping a torn last line (a run killed mid-write).
pub fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().filter_map(Event::parse).collect())
}
