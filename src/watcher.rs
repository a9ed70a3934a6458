//! Hot reload (`--watch`): run the script, and run it again whenever it, a module it imports,
//! `glow.toml` beside it or the `--env-file` changes.
//!
//! How it holds together:
//! - notify (through notify-debouncer-full) watches the *directories* of those files,
//!   non-recursively, and we filter by file name: editors save by writing in place, by writing a
//!   temp file and renaming it over, or by deleting and recreating; a watch on the file itself
//!   would lose track after the last two. The callback only forwards the batch into a channel
//!   and never blocks. The debounce window (`--debounce`, 50 ms) collapses an editor's several
//!   writes into one reload.
//! - On a change the new source is compiled to the side first (same engine and resolver as a
//!   run, in dry-run mode). A compile error is printed with its caret and the last good version
//!   keeps its run: a broken edit is a runtime error of the watcher, never fatal.
//! - Only a good compile cancels the run in flight (`CancelReason::Reload`: the engine stops
//!   through its progress callback, child process groups are killed, HTTP and SQL futures are
//!   dropped), waits for it to end, and starts a fresh run with a fresh `Cancel`.
//! - The imported modules are resolved again on every compile, so a new import is watched too.
//! - Ctrl-C (or SIGTERM) cancels the run in flight, waits for it, and ends with 130.

use crate::arguments::GlobalFlags;
use crate::cancel::{Cancel, CancelReason};
use crate::config::{Mode, RunSettings};
use crate::error::{EXIT_INTERRUPTED, Error};
use crate::redact::Redactor;
use crate::reporter::{Format, format_ms};
use crate::resolver::{display_path, normalize};
use crate::run::{self, Finished};
mod source;

use notify::RecursiveMode;
use notify_debouncer_full::{Debouncer, RecommendedCache};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a cancelled run may take to stop (the exec kill grace is 1 s) before the watcher
/// stops waiting for it and goes on.
const STOP_WAIT: Duration = Duration::from_secs(10);

pub(crate) enum Message {
    /// Paths that changed (a debounced batch, not yet filtered).
    Changed(Vec<PathBuf>),
    /// The watcher itself reported a problem (reported, not fatal).
    WatchError(String),
    /// A run ended; `generation` tells which.
    RunEnded {
        generation: u64,
        result: Result<i32, Error>,
    },
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

struct Running {
    generation: u64,
    cancel: Arc<Cancel>,
    finished: Arc<Mutex<Finished>>,
}

struct Watch {
    script: PathBuf,
    flags: crate::arguments::RunFlags,
    global: GlobalFlags,
    format: Format,
    redactor: Arc<Redactor>,
    runtime: tokio::runtime::Handle,
    sender: Sender<Message>,
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    /// Absolute paths of every file whose change triggers a reload.
    files: BTreeSet<PathBuf>,
    /// Directories under watch (non-recursive).
    dirs: BTreeSet<PathBuf>,
    generation: u64,
    running: Option<Running>,
    /// The cancel of the run in flight, for the signal handler.
    current: Arc<Mutex<Option<Arc<Cancel>>>>,
    interrupted: bool,
}

pub fn watch(settings: RunSettings) -> Result<i32, Error> {
    let Some(script) = settings.script_path.clone() else {
        return Err(Error::usage(
            "--watch needs a SCRIPT file (it cannot watch an -e snippet)",
        ));
    };
    if settings.mode == Mode::Live {
        confirm_live(&settings)?;
    }
    let runtime = crate::session::new_runtime()?;
    let (sender, receiver) = channel();
    let current = Arc::new(Mutex::new(None));
    let signals = watch_signals(&runtime, sender.clone(), current.clone());

    let window = Duration::from_millis(settings.flags.debounce.max(1));
    let debouncer = source::start(window, sender.clone())?;

    let mut watch = Watch {
        script: script.clone(),
        flags: settings.flags.clone(),
        global: GlobalFlags {
            state_dir: settings.state_dir.clone(),
            state: settings.state_url.clone(),
        },
        format: settings.flags.format,
        redactor: Arc::new(Redactor::new()),
        runtime: runtime.handle().clone(),
        sender,
        debouncer,
        files: BTreeSet::new(),
        dirs: BTreeSet::new(),
        generation: 0,
        running: None,
        current,
        interrupted: false,
    };
    let base = base_files(&settings);
    watch.watch_files(&base);
    let window_text = format_ms(window.as_millis() as u64);
    watch.say(
        &format!(
            "watch: {} ({}) · debounce {window_text} · Ctrl-C to stop",
            settings.source_name,
            settings.mode.as_str()
        ),
        json!({ "event": "watching", "script": settings.source_name, "mode": settings.mode.as_str() }),
    );
    watch.start_run(settings);
    let code = watch.run_loop(&receiver);
    signals.abort();
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

impl Watch {
    fn run_loop(&mut self, receiver: &Receiver<Message>) -> i32 {
        loop {
            let Ok(message) = receiver.recv() else {
                return EXIT_INTERRUPTED;
            };
            match message {
                Message::Changed(paths) => {
                    let mut changed = self.relevant(&paths);
                    // Whatever else is already queued belongs to the same reload.
                    while let Ok(message) = receiver.try_recv() {
                        match message {
                            Message::Changed(paths) => changed.extend(self.relevant(&paths)),
                            other => self.handle_other(other),
                        }
                    }
                    if !changed.is_empty() && !self.interrupted {
                        self.reload(&changed, receiver);
                    }
                }
                other => self.handle_other(other),
            }
            if self.interrupted {
                return self.shutdown(receiver);
            }
        }
    }

    fn handle_other(&mut self, message: Message) {
        match message {
            Message::Changed(_) => {}
            Message::WatchError(error) => self.say(
                &format!("watch: warning: {error}"),
                json!({ "event": "watch_error", "error": error }),
            ),
            Message::RunEnded { generation, result } => self.run_ended(generation, result),
            Message::Interrupted => self.interrupted = true,
        }
    }

    /// The changed paths that matter (the script, its modules, glow.toml, the env file).
    fn relevant(&self, paths: &[PathBuf]) -> BTreeSet<PathBuf> {
        paths
            .iter()
            .map(|path| normalize(path))
            .filter(|path| self.files.contains(path))
            .collect()
    }

    /// Compiles the new version to the side; only a good compile replaces the run in flight.
    fn reload(&mut self, changed: &BTreeSet<PathBuf>, receiver: &Receiver<Message>) {
        let started = Instant::now();
        let names: Vec<String> = changed.iter().map(|p| display_path(p)).collect();
        let names = names.join(", ");
        if !self.script.exists() {
            self.say(
                &format!(
                    "watch: {names} changed · {} is missing; waiting for it",
                    self.script.display()
                ),
                json!({ "event": "missing", "changed": names }),
            );
            return;
        }
        let compiled =
            RunSettings::load(Some(&self.script), None, self.flags.clone(), &self.global).and_then(
                |settings| {
                    let files = crate::lint::compile(&settings, &self.runtime)?.files();
                    Ok((settings, files))
                },
            );
        let took = started.elapsed();
        let (settings, files) = match compiled {
            Ok(compiled) => compiled,
            Err(error) => {
                self.say(
                    &format!(
                        "✗ {names} changed · does not compile ({}); still watching, the last good version keeps running",
                        format_ms(took.as_millis() as u64)
                    ),
                    json!({ "event": "compile_error", "changed": names, "compile_ms": took.as_millis() as u64 }),
                );
                let text = self.redactor.redact(&error.render()).into_owned();
                let _ = std::io::stderr().write_all(text.as_bytes());
                return;
            }
        };
        self.say(
            &format!(
                "↻ {names} changed · recompiled in {} · restarting",
                format_ms(took.as_millis() as u64)
            ),
            json!({ "event": "reload", "changed": names, "compile_ms": took.as_millis() as u64 }),
        );
        self.stop_run(receiver, CancelReason::Reload);
        if self.interrupted {
            return;
        }
        // The new version's dependencies replace the old ones (a dropped import stops counting).
        let mut watched = base_files(&settings);
        watched.extend(files);
        self.files.clear();
        self.watch_files(&watched);
        self.start_run(settings);
    }

    fn start_run(&mut self, settings: RunSettings) {
        self.generation += 1;
        let generation = self.generation;
        let cancel = Arc::new(Cancel::new());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(cancel.clone());
        let finished = Arc::new(Mutex::new(Finished::default()));
        self.say(
            &format!("▶ run {generation} started ({}) · watching {} file(s)", settings.mode.as_str(), self.files.len()),
            json!({ "event": "run_started", "generation": generation, "mode": settings.mode.as_str() }),
        );
        let (redactor, runtime, sender) = (
            self.redactor.clone(),
            self.runtime.clone(),
            self.sender.clone(),
        );
        let (run_cancel, run_finished) = (cancel.clone(), finished.clone());
        let spawned = std::thread::Builder::new()
            .name("glow-watch-run".into())
            .spawn(move || {
                let result = run::execute_with(
                    Arc::new(settings),
                    redactor,
                    run_cancel,
                    runtime,
                    Some(run_finished),
                );
                let _ = sender.send(Message::RunEnded { generation, result });
            });
        if let Err(error) = spawned {
            self.say(
                &format!("watch: cannot start the run: {error}"),
                json!({ "event": "run_error" }),
            );
            return;
        }
        self.running = Some(Running {
            generation,
            cancel,
            finished,
        });
    }

    fn run_ended(&mut self, generation: u64, result: Result<i32, Error>) {
        let Some(running) = self.running.take_if(|r| r.generation == generation) else {
            return;
        };
        // Imports resolved while it ran (inside functions) count too.
        let files = running
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .files
            .clone();
        self.watch_files(&files);
        if running.cancel.reason() == Some(CancelReason::Reload) {
            self.say(
                &format!("■ run {generation} cancelled for the reload"),
                json!({ "event": "run_cancelled", "generation": generation }),
            );
            return;
        }
        match result {
            Ok(code) => self.say(
                &format!("■ run {generation} ended (exit {code}) · waiting for changes"),
                json!({ "event": "run_ended", "generation": generation, "exit_code": code }),
            ),
            Err(error) => {
                let text = self.redactor.redact(&error.render()).into_owned();
                let _ = std::io::stderr().write_all(text.as_bytes());
                self.say(
                    &format!("■ run {generation} ended (exit {}) · waiting for changes", error.code()),
                    json!({ "event": "run_ended", "generation": generation, "exit_code": error.code() }),
                );
            }
        }
    }

    /// Cancels the run in flight and waits (bounded) until it has ended; other messages that
    /// arrive meanwhile are kept (changes) or handled (interrupts).
    fn stop_run(&mut self, receiver: &Receiver<Message>, reason: CancelReason) {
        let Some(generation) = self.running.as_ref().map(|r| r.generation) else {
            return;
        };
        if let Some(running) = &self.running {
            running.cancel.cancel_run(reason);
        }
        let deadline = Instant::now() + STOP_WAIT;
        let mut pending = Vec::new();
        while self
            .running
            .as_ref()
            .is_some_and(|r| r.generation == generation)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(Message::Changed(paths)) => pending.extend(paths),
                Ok(Message::Interrupted) => {
                    self.interrupted = true;
                    if let Some(running) = &self.running {
                        running.cancel.cancel_run(CancelReason::Interrupted);
                    }
                }
                Ok(other) => self.handle_other(other),
                Err(RecvTimeoutError::Timeout) => {
                    self.say(
                        &format!(
                            "watch: warning: run {generation} did not stop within {}s; going on",
                            STOP_WAIT.as_secs()
                        ),
                        json!({ "event": "stop_timeout", "generation": generation }),
                    );
                    self.running = None;
                }
                Err(RecvTimeoutError::Disconnected) => self.running = None,
            }
        }
        if !pending.is_empty() {
            // Seen again by the loop after the new run has started.
            let _ = self.sender.send(Message::Changed(pending));
        }
    }

    fn shutdown(&mut self, receiver: &Receiver<Message>) -> i32 {
        self.stop_run(receiver, CancelReason::Interrupted);
        self.say("watch: interrupted; stopped", json!({ "event": "stopped" }));
        EXIT_INTERRUPTED
    }

    /// Adds files to the watched set, watching their directories (new ones only).
    fn watch_files(&mut self, files: &[PathBuf]) {
        for file in files {
            let file = normalize(&std::path::absolute(file).unwrap_or_else(|_| file.clone()));
            let Some(dir) = file.parent().map(Path::to_owned) else {
                continue;
            };
            self.files.insert(file);
            if !self.dirs.contains(&dir) && dir.is_dir() {
                match self.debouncer.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.dirs.insert(dir);
                    }
                    Err(error) => self.say(
                        &format!("watch: warning: cannot watch {}: {error}", dir.display()),
                        json!({ "event": "watch_error", "error": error.to_string() }),
                    ),
                }
            }
        }
    }

    /// One watcher line: human on stderr; with `--format json` also a `watch` event on stdout.
    fn say(&self, human: &str, mut event: Value) {
        let text = self.redactor.redact(human);
        let _ = writeln!(std::io::stderr().lock(), "{text}");
        if self.format == Format::Json {
            if let Value::Object(fields) = &mut event {
                fields.insert("kind".into(), json!("watch"));
                fields.insert("time".into(), json!(crate::journal::now_rfc3339()));
            }
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, &event);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
    }
}

/// The files every version of the script depends on besides its imports.
fn base_files(settings: &RunSettings) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(script) = &settings.script_path {
        files.push(script.clone());
    }
    files.push(settings.script_dir.join(crate::policy::FILE_NAME));
    if let Some(env_file) = &settings.flags.env_file {
        files.push(env_file.clone());
    }
    files
}

/// Ctrl-C / SIGTERM: cancel the run in flight at once (so its children die even while the loop
/// is busy) and tell the loop; a second one exits immediately.
fn watch_signals(
    runtime: &tokio::runtime::Runtime,
    sender: Sender<Message>,
    current: Arc<Mutex<Option<Arc<Cancel>>>>,
) -> tokio::task::JoinHandle<()> {
    crate::session::on_interrupt(runtime, move || {
        if let Some(cancel) = current.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            cancel.cancel_run(CancelReason::Interrupted);
        }
        let _ = sender.send(Message::Interrupted);
    })
}

/// `--watch --live` performs effects for real on every save: ask once, on the terminal itself
/// (stdin may be a pipe), unless `--yes`. No terminal and no `--yes` is refused.
fn confirm_live(settings: &RunSettings) -> Result<(), Error> {
    if settings.flags.yes {
        return Ok(());
    }
    let refuse = || {
        Error::usage(format!(
            "--watch --live reruns {} for real on every save and asks for confirmation on a terminal; there is none: pass --yes to confirm",
            settings.source_name
        ))
    };
    let tty = crate::host::prompt::terminal::Tty::open().ok_or_else(refuse)?;
    let confirmed = tty
        .confirm(&format!(
            "Watch {} LIVE: every save reruns it and performs its effects for real. Continue?",
            settings.source_name
        ))
        .map_err(|_| refuse())?;
    if confirmed {
        Ok(())
    } else {
        Err(Error::usage("live watch not confirmed; nothing was run"))
    }
}
