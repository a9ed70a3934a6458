//! The journal: one JSON event per line in `.glow/runs/RUN_ID/journal.jsonl`, written with one
//! `write` per event (no user-space buffer), so a run killed at any point leaves a readable
//! journal up to its last event. Every event is redacted before anything sees it, then handed
//! to the sinks (the terminal reporter, the run index).
//!
//! Events are the typed [`Event`]s of `event.rs`; sinks receive each one typed, with the exact
//! line the journal wrote for it.
//!
//! Hash chain (tamper evidence, checked by `glow-run verify`): every event's `prev` is the
//! SHA-256 (hex) of the previous line's bytes without its newline, the first event's the SHA-256
//! of the run id; `run_end` also carries `manifest_sha256`. The writer hashes the bytes it is
//! about to write, so the chain costs one SHA-256 of each line and no second pass over the file.
//! Events emitted before the file is attached (while the script compiles) are kept and written
//! first when it is, so the file holds every event from seq 1 and the chain covers exactly its
//! lines.

use crate::event::{Body, Event};
use crate::redact::Redactor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
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
    /// SHA-256 (hex) of the last line: the next event's `prev`.
    prev: String,
    /// Lines emitted before the file was attached, written to it first.
    pending: Vec<u8>,
    /// The artifact store the run wrote to (from its `artifact` events), for `manifest_sha256`.
    store_root: Option<PathBuf>,
}

impl Inner {
    /// The chain's fields: `prev` on every event, `manifest_sha256` on `run_end` (added after
    /// redaction: digests hold no secret and must stay intact).
    fn chain(&mut self, event: &mut Event) {
        match &mut event.body {
            Body::Artifact(artifact) if !artifact.planned => {
                self.store_root = Some(PathBuf::from(&artifact.root));
            }
            Body::RunEnd(end) => {
                end.extra.insert(
                    "manifest_sha256".into(),
                    manifest_sha256(self.store_root.as_deref()),
                );
            }
            _ => {}
        }
        event.prev = Some(self.prev.clone());
    }
}

/// The file every artifact store keeps its listing in (the journal's `manifest_sha256` hashes
/// it; `host::artifact` writes it).
pub const MANIFEST: &str = "manifest.json";

/// SHA-256 of the store's `manifest.json` at the end of the run; `null` without a store.
fn manifest_sha256(root: Option<&Path>) -> Value {
    root.and_then(|root| std::fs::read(root.join(MANIFEST)).ok())
        .map_or(Value::Null, |bytes| {
            json!(hex::encode(Sha256::digest(&bytes)))
        })
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
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let pending = std::mem::take(&mut inner.pending);
        (&file).write_all(&pending)?;
        inner.file = Some(file);
        drop(inner);
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
                prev: hex::encode(Sha256::digest(run_id.as_bytes())),
                pending: Vec::new(),
                store_root: None,
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
            prev: None,
        };
        event.redact(&self.redactor);
        inner.chain(&mut event);
        let mut line = serde_json::to_string(&event).unwrap_or_default();
        inner.prev = hex::encode(Sha256::digest(line.as_bytes()));
        line.push('\n');
        match inner.file.as_mut() {
            Some(file) => {
                if let Err(e) = file.write_all(line.as_bytes()) {
                    inner.write_error.get_or_insert_with(|| e.to_string());
                }
            }
            None => inner.pending.extend_from_slice(line.as_bytes()),
        }
        line.pop();
        // Sinks run under the lock so every consumer sees events in `seq` order.
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for sink in sinks {
            sink.event(&event, &line);
        }
        event.seq
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
