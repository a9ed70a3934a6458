//! The pieces every engine user shares: the tokio runtime a run's I/O is served by, the
//! signal handling that cancels it, and [`build`], the one place an engine, its host context
//! and its sources are put together (for a run, `check`, `defs` and watch mode alike).

use crate::cancel::{Cancel, CancelReason};
use crate::config::RunSettings;
use crate::error::{EXIT_INTERRUPTED, Error};
use crate::host::HostContext;
use crate::redact::Redactor;
use crate::resolver::{SharedSources, Sources};
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;

/// An engine ready to compile the script of `settings`, with its host context and the sources
/// it has read (for carets).
pub struct Session {
    pub ctx: Rc<HostContext>,
    pub engine: rhai::Engine,
    pub sources: SharedSources,
}

/// Builds the engine for one run (or one inspection: `check`, `defs`) of `settings`.
pub fn build(
    settings: Arc<RunSettings>,
    redactor: Arc<Redactor>,
    cancel: Arc<Cancel>,
    runtime: tokio::runtime::Handle,
    run_id: &str,
) -> Session {
    let ctx = HostContext::new(settings.clone(), redactor, cancel, runtime, run_id);
    let sources: SharedSources = Rc::new(RefCell::new(Sources::default()));
    sources
        .borrow_mut()
        .texts
        .insert(settings.source_name.clone(), settings.text.clone());
    let engine = crate::engine::build(&ctx, sources.clone());
    Session {
        ctx,
        engine,
        sources,
    }
}

/// A runtime for commands that only inspect (`check`, `defs`): one thread, no workers.
pub fn inspection_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::host("starting the runtime", e))
}

/// The tokio runtime that serves a run's I/O. One worker drives I/O, timers, child output and
/// signals while the engine thread blocks on it (the futures of a call are polled on the engine
/// thread itself); a second worker only cost start-up (a thread, and TLB shoot-downs as the
/// threads' heaps grow) on two cores.
pub fn new_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("glow-io")
        .enable_all()
        .build()
        .map_err(|e| Error::host("starting the I/O runtime", e))
}

/// Cancels the run on Ctrl-C or SIGTERM; a second Ctrl-C exits at once.
pub fn watch_signals(
    runtime: &tokio::runtime::Runtime,
    cancel: Arc<Cancel>,
) -> tokio::task::JoinHandle<()> {
    on_interrupt(runtime, move || {
        cancel.cancel_run(CancelReason::Interrupted)
    })
}

/// Calls `on_first` at the first Ctrl-C or SIGTERM; a second one exits the process at once
/// (exit 130), for the person whose run does not stop fast enough.
pub fn on_interrupt(
    runtime: &tokio::runtime::Runtime,
    on_first: impl FnOnce() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        on_first();
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        let _ = std::io::stderr().write_all(b"error: interrupted twice; exiting now\n");
        std::process::exit(EXIT_INTERRUPTED);
    })
}
