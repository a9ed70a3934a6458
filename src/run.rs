//! A run's life: parse the command line, load settings, compile, run the script on its own
//! engine thread with a tokio runtime for I/O, run compensations when a step fails, print the
//! plan and summary, and map the outcome to an exit code. Errors are rendered here, once,
//! through the run's redactor.

use crate::arguments::{Arguments, Command};
use crate::cancel::{Cancel, CancelReason};
use crate::config::{Mode, RunSettings};
use crate::engine::{self, MEMORY_TOKEN};
use crate::error::{EXIT_INTERRUPTED, EXIT_OK, Error};
use crate::host::{HostContext, error_text};
use crate::journal::Journal;
use crate::redact::Redactor;
use crate::reporter::{Reporter, format_ms};
use crate::resolver::{STDLIB_PREFIX, SharedSources, Sources};
use crate::span::Location;
use clap::Parser;
use rhai::{Dynamic, EvalAltResult, Position};
use serde_json::json;
use std::cell::RefCell;
use std::ffi::OsString;
use std::io::Write;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Stack size of the engine thread: deep but bounded script recursion needs room.
const ENGINE_STACK: usize = 64 * 1024 * 1024;

/// The entry point of the binary: returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    init_tracing();
    let arguments = match Arguments::try_parse_from(args) {
        Ok(arguments) => arguments,
        Err(error) => {
            let code = if error.use_stderr() {
                crate::error::EXIT_USAGE
            } else {
                EXIT_OK
            };
            let _ = error.print();
            return code;
        }
    };
    let redactor = Arc::new(Redactor::new());
    match dispatch(arguments, &redactor) {
        Ok(code) => code,
        Err(error) => {
            let text = error.render();
            let _ = std::io::stderr().write_all(redactor.redact(&text).as_bytes());
            error.code()
        }
    }
}

fn init_tracing() {
    if let Ok(filter) = std::env::var("GLOW_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn dispatch(arguments: Arguments, redactor: &Arc<Redactor>) -> Result<i32, Error> {
    match arguments.command {
        Some(Command::Check { scripts, stdlib }) => crate::commands::check(&scripts, stdlib),
        Some(Command::Runs { limit }) => crate::commands::runs(&arguments.global, limit),
        Some(Command::Show { run_id }) => crate::commands::show(&arguments.global, &run_id),
        Some(Command::Resume { run_id, force, run }) => {
            crate::commands::resume(&arguments.global, &run_id, force, run, redactor)
        }
        Some(Command::Bundle {
            run_id,
            output,
            sign,
        }) => crate::commands::bundle(&arguments.global, &run_id, &output, sign),
        Some(Command::Verify {
            path,
            allowed_signers,
        }) => crate::commands::verify(&arguments.global, &path, allowed_signers.as_deref()),
        Some(Command::Defs { out }) => crate::commands::defs(out.as_deref()),
        None => {
            let settings = RunSettings::load(
                arguments.script.as_deref(),
                arguments.eval.as_deref(),
                arguments.run.clone(),
                &arguments.global,
            )?;
            if settings.flags.watch {
                return crate::watcher::watch(settings);
            }
            execute(settings, redactor)
        }
    }
}

/// The tokio runtime that serves a run's I/O. Two workers: the engine thread blocks on it, and
/// child output, timers and signals progress meanwhile.
pub fn new_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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

/// Runs one script to the end and returns its exit code.
pub fn execute(settings: RunSettings, redactor: &Arc<Redactor>) -> Result<i32, Error> {
    let runtime = new_runtime()?;
    let cancel = Arc::new(Cancel::new());
    let signals = watch_signals(&runtime, cancel.clone());
    let code = execute_with(
        Arc::new(settings),
        redactor.clone(),
        cancel,
        runtime.handle().clone(),
        None,
    );
    signals.abort();
    // Do not wait for blocking tasks (a stuck DNS lookup, say): the run is over.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// What a finished run reports to its caller (watch mode needs the files it depended on).
#[derive(Debug, Default, Clone)]
pub struct Finished {
    pub run_id: Option<String>,
    pub exit_code: i32,
    pub files: Vec<std::path::PathBuf>,
}

/// Runs a script on a fresh engine thread. `finished` (when given) receives the run id and the
/// files the script imported, for watch mode.
pub fn execute_with(
    settings: Arc<RunSettings>,
    redactor: Arc<Redactor>,
    cancel: Arc<Cancel>,
    runtime: tokio::runtime::Handle,
    finished: Option<Arc<Mutex<Finished>>>,
) -> Result<i32, Error> {
    let thread = std::thread::Builder::new()
        .name("glow-engine".into())
        .stack_size(ENGINE_STACK)
        .spawn(move || run_on_engine_thread(settings, redactor, cancel, runtime, finished))
        .map_err(|e| Error::host("starting the engine thread", e))?;
    thread
        .join()
        .unwrap_or_else(|_| Err(Error::host("engine thread", "panicked")))
}

fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
        rand::random::<u16>()
    )
}

fn run_on_engine_thread(
    settings: Arc<RunSettings>,
    redactor: Arc<Redactor>,
    cancel: Arc<Cancel>,
    runtime: tokio::runtime::Handle,
    finished: Option<Arc<Mutex<Finished>>>,
) -> Result<i32, Error> {
    let run_id = new_run_id();
    let ctx = HostContext::new(
        settings.clone(),
        redactor.clone(),
        cancel.clone(),
        runtime,
        &run_id,
    );
    let journal = ctx.journal.clone();
    journal.add_sink(Arc::new(Reporter::new(settings.flags.format)));
    let sources: SharedSources = Rc::new(RefCell::new(Sources::default()));
    sources
        .borrow_mut()
        .texts
        .insert(settings.source_name.clone(), settings.text.clone());
    let run_dir = settings.state_dir.join("runs").join(&run_id);
    // Started before the engine is built and the script compiled, so that opening the run
    // index overlaps them instead of adding to the start-up.
    let index = crate::state::start(&settings, Some(run_dir.join("journal.jsonl")))?;
    let engine = engine::build(&ctx, sources.clone());

    let report_files = |sources: &SharedSources| {
        if let Some(finished) = &finished {
            let mut finished = finished.lock().unwrap_or_else(|e| e.into_inner());
            finished.files = sources.borrow().files.clone();
        }
    };

    let compiled = engine.compile_into_self_contained(&rhai::Scope::new(), &settings.text);
    report_files(&sources);
    let mut ast = match compiled {
        Ok(ast) => ast,
        Err(error) => return Err(compile_error(&error, &settings.source_name, &sources)),
    };
    ast.set_source(settings.source_name.as_str());

    // The shared state (and, for a live run, the release lock) comes before anything is written:
    // a run refused the lock leaves no journal.
    let shared = match &settings.state_url {
        Some(url) => Some(crate::shared_state::SharedState::open(
            url,
            &settings,
            &run_id,
            ctx.initiator(),
            &ctx.runtime,
            &redactor,
        )?),
        None => None,
    };
    journal
        .attach_file(&run_dir)
        .map_err(|e| Error::host(format!("creating the journal in {}", run_dir.display()), e))?;
    let journal_file = journal.clone();
    if let Some(finished) = &finished {
        finished.lock().unwrap_or_else(|e| e.into_inner()).run_id = Some(run_id.clone());
    }
    journal.add_sink(index);
    if let Some(shared) = shared {
        journal.add_sink(shared);
    }

    let started = Instant::now();
    journal.emit(
        "run_start",
        None,
        json!({
            "script": settings.source_name,
            "sha256": settings.sha256,
            "mode": settings.mode.as_str(),
            "vars": settings.vars,
            "trace_id": ctx.trace_id,
            "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            "resumes": settings.resume.as_ref().map(|r| r.run_id.clone()),
            "journal": journal_file.path().map(|p| p.display().to_string()),
            "modules": sources.borrow().module_digests(&settings.source_name),
        }),
    );

    let result = engine.eval_ast::<Dynamic>(&ast);
    report_files(&sources);
    let outcome = match result {
        Ok(value) => {
            if settings.script_path.is_none() && !value.is_unit() {
                ctx.emit(
                    "output",
                    json!({ "stream": "script", "line": show_value(&value) }),
                );
            }
            Ok(())
        }
        Err(error) => Err(runtime_error(&ctx, &error, &settings.source_name, &sources)),
    };
    // `--only deploy` with no step named so ran nothing: say so rather than report success.
    let outcome = match (
        &outcome,
        settings
            .flags
            .only
            .as_ref()
            .or(settings.flags.from.as_ref()),
    ) {
        (Ok(()), Some(wanted)) if !*ctx.selected_step_seen.borrow() => Err(Error::Script {
            message: format!(
                "no top-level step named '{wanted}' (given to --only/--from) ran; every step was skipped"
            ),
            location: None,
            step: None,
        }),
        _ => outcome,
    };

    let failed = matches!(&outcome, Err(error) if !matches!(error, Error::Interrupted));
    if failed && !ctx.rollbacks.borrow().is_empty() {
        // Only when the script failed outside a step (a failed top-level step already ran
        // them, inside the script's context where its imports still exist).
        crate::host::step::run_rollbacks(&ctx, |closure| {
            closure.call::<Dynamic>(&engine, &ast, ())
        });
    }

    let plan = {
        let plan = ctx.plan.lock().unwrap_or_else(|e| e.into_inner());
        (plan.effects.clone(), plan.needs.clone())
    };
    journal.emit(
        "plan",
        None,
        json!({ "mode": settings.mode.as_str(), "effects": plan.0, "needs": plan.1 }),
    );

    let exit_code = outcome.as_ref().map_or_else(Error::code, |()| EXIT_OK);
    let outcome_name = match &outcome {
        Ok(()) => "ok",
        Err(Error::Interrupted) => "interrupted",
        Err(_) => "failed",
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let error_message = outcome.as_ref().err().map(|e| e.render());
    journal.emit(
        "run_end",
        None,
        json!({
            "outcome": outcome_name,
            "exit_code": exit_code,
            "duration_ms": duration_ms,
            "error": error_message.as_deref().map(|e| e.lines().next().unwrap_or("").trim_start_matches("error: ").to_owned()),
            "trace_id": ctx.trace_id,
        }),
    );
    journal.finish();
    if let Err(why) = crate::report::write(&journal_file) {
        ctx.log("warn", &format!("could not write the run report: {why}"));
    }

    print_summary(
        &ctx,
        &settings,
        &plan.0,
        &plan.1,
        error_message.as_deref(),
        outcome_name,
        duration_ms,
        &journal_file,
    );
    if let Some(write_error) = journal_file.write_error() {
        let _ = writeln!(
            std::io::stderr(),
            "warning: the journal could not be written completely: {write_error}"
        );
    }
    Ok(exit_code)
}

fn show_value(value: &Dynamic) -> String {
    if value.is_string() {
        value.to_string()
    } else if value.is_map() || value.is_array() {
        serde_json::to_string_pretty(&crate::host::json::from_dynamic(value)).unwrap_or_default()
    } else {
        value.to_string()
    }
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    ctx: &HostContext,
    settings: &RunSettings,
    effects: &[crate::plan::PlannedEffect],
    needs: &crate::plan::Needs,
    error: Option<&str>,
    outcome: &str,
    duration_ms: u64,
    journal: &Journal,
) {
    let mut out = String::new();
    if let Some(error) = error {
        out.push_str(error);
    }
    if settings.mode == Mode::DryRun {
        if effects.is_empty() {
            out.push_str("\nPlan: no effects; a live run would change nothing.\n");
        } else {
            out.push_str(&format!(
                "\nPlan: {} effect(s) a live run would perform, in order:\n",
                effects.len()
            ));
            for effect in effects {
                out.push_str(&format!(
                    "  {:>3}. [{}] {}\n",
                    effect.index,
                    effect.step.as_deref().unwrap_or("-"),
                    effect.summary()
                ));
            }
        }
        if needs.is_empty() {
            out.push_str("A live run needs nothing that is missing here.\n");
        } else {
            out.push_str("A live run still needs:\n");
            for line in needs.lines() {
                out.push_str(&format!("  - {line}\n"));
            }
        }
    }
    out.push_str(&format!(
        "\nrun {} {outcome} in {} ({}) · trace id {}",
        ctx.run_id,
        format_ms(duration_ms),
        settings.mode.as_str(),
        ctx.trace_id
    ));
    if let Some(path) = journal.path() {
        out.push_str(&format!(" · journal {}", path.display()));
    }
    out.push('\n');
    let text = ctx.redactor.redact(&out);
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Finds where an error really happened: the innermost call's source and position.
fn innermost<'a>(
    error: &'a EvalAltResult,
    mut source: Option<&'a str>,
) -> (&'a EvalAltResult, Option<&'a str>, Position) {
    let mut current = error;
    let mut position = error.position();
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(_, fn_source, inner, pos) => {
                if !fn_source.is_empty() {
                    source = Some(fn_source.as_str());
                }
                if !pos.is_none() {
                    position = *pos;
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                if !pos.is_none() {
                    position = *pos;
                }
                source = Some(name.as_str());
                current = inner;
            }
            leaf => {
                if !leaf.position().is_none() {
                    position = leaf.position();
                }
                return (leaf, source, position);
            }
        }
    }
}

fn location_of(source: &str, position: Position, sources: &SharedSources) -> Option<Location> {
    let line = position.line()?;
    let column = position.position().unwrap_or(1);
    let sources = sources.borrow();
    let text = sources.texts.get(source).map(String::as_str);
    Some(Location::new(source, line, column, text))
}

pub fn compile_error(error: &EvalAltResult, script: &str, sources: &SharedSources) -> Error {
    let (leaf, source, position) = innermost(error, Some(script));
    let source = source.unwrap_or(script);
    let message = match leaf {
        EvalAltResult::ErrorParsing(kind, _) => format!("syntax error: {kind}"),
        other => error_text(other),
    };
    let message = if source.starts_with(STDLIB_PREFIX) || source != script {
        format!("{message} (in module {source})")
    } else {
        message
    };
    Error::Compile {
        message,
        location: location_of(source, position, sources),
    }
}

/// Turns a Rhai runtime error into the run's error, naming the limit or the step.
fn runtime_error(
    ctx: &HostContext,
    error: &EvalAltResult,
    script: &str,
    sources: &SharedSources,
) -> Error {
    let (leaf, source, position) = innermost(error, Some(script));
    let limits = &ctx.policy.limits;
    let message = match leaf {
        EvalAltResult::ErrorTerminated(token, _) => {
            let token = token.to_string();
            if token == MEMORY_TOKEN {
                format!(
                    "memory limit exceeded: the script used more than {} ([limits] memory in glow.toml)",
                    bytesize::ByteSize(limits.memory)
                )
            } else {
                match ctx.cancel.reason() {
                    Some(CancelReason::Interrupted) | Some(CancelReason::Reload) | None => {
                        return Error::Interrupted;
                    }
                    Some(CancelReason::StepTimeout { step, after, .. }) => {
                        format!(
                            "step '{step}' timed out after {}",
                            humantime::format_duration(after)
                        )
                    }
                }
            }
        }
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "operation limit exceeded: the script ran more than {} operations ([limits] max_operations in glow.toml)",
            limits.max_operations
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "call depth limit exceeded: more than {} nested calls ([limits] call_levels in glow.toml)",
            limits.call_levels
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            format!("size limit exceeded: {what} is too large")
        }
        EvalAltResult::ErrorTooManyVariables(_) => {
            format!(
                "variable limit exceeded: more than {} variables ([limits] variables)",
                limits.variables
            )
        }
        EvalAltResult::ErrorTooManyModules(_) => {
            format!(
                "module limit exceeded: more than {} modules ([limits] modules)",
                limits.modules
            )
        }
        EvalAltResult::ErrorParsing(kind, _) => {
            return Error::Compile {
                message: format!("syntax error: {kind}"),
                location: location_of(source.unwrap_or(script), position, sources),
            };
        }
        other => error_text(other),
    };
    let source = source.unwrap_or(script);
    Error::Script {
        message,
        location: location_of(source, position, sources),
        step: ctx
            .failed_step
            .borrow()
            .clone()
            .or_else(|| ctx.current_step()),
    }
}
