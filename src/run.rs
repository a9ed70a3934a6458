//! A run's life: compile, run the script on its own engine thread with a tokio runtime for
//! I/O, run compensations when a step fails, journal the plan and the end, print the summary,
//! and map the outcome to an exit code.

use crate::cancel::Cancel;
use crate::config::{Mode, RunSettings};
use crate::diagnostic;
use crate::error::{EXIT_OK, Error};
use crate::event::{Body, Extra, Output, PlanEvent, RunEnd, RunStart};
use crate::host::HostContext;
use crate::journal::Journal;
use crate::redact::Redactor;
use crate::report::ReportSink;
use crate::reporter::{Reporter, format_ms};
use crate::resolver::SharedSources;
use crate::session::{self, Session};
use rhai::Dynamic;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Stack size of the engine thread: deep but bounded script recursion needs room.
const ENGINE_STACK: usize = 64 * 1024 * 1024;

/// Runs one script to the end and returns its exit code.
pub fn execute(settings: RunSettings, redactor: &Arc<Redactor>) -> Result<i32, Error> {
    let runtime = session::new_runtime()?;
    let cancel = Arc::new(Cancel::new());
    let signals = session::watch_signals(&runtime, cancel.clone());
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
    let run_dir = settings.state_dir.join("runs").join(&run_id);
    // Started before the engine is built and the script compiled, so that opening the run
    // index overlaps them instead of adding to the start-up.
    let index = crate::state::start(&settings, Some(run_dir.join("journal.jsonl")))?;
    let Session {
        ctx,
        engine,
        sources,
    } = session::build(
        settings.clone(),
        redactor.clone(),
        cancel.clone(),
        runtime,
        &run_id,
    );
    // Before anything can be written: credentials in the environment, by their shape.
    let short_credentials =
        crate::redact::shape::register_environment(&redactor, &settings.env_overlay);
    let journal = ctx.journal.clone();
    journal.add_sink(Arc::new(Reporter::new(settings.flags.format)));
    let report = Arc::new(ReportSink::new());
    journal.add_sink(report.clone());
    let otlp_config = crate::otlp::Config::resolve(settings.flags.otlp.as_deref(), &|name| {
        (settings.env_overlay.get(name).cloned()).or_else(|| std::env::var(name).ok())
    })?;
    for (_, value) in otlp_config.iter().flat_map(|c| &c.headers) {
        redactor.register(value);
    }

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
        Err(error) => {
            return Err(diagnostic::compile_error(
                &error,
                &settings.source_name,
                &sources,
            ));
        }
    };
    ast.set_source(settings.source_name.as_str());
    crate::host::saved_plan::bind(&ctx, &sources)?;

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
            &cancel,
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

    let otlp = otlp_config.map(|config| {
        let sink = Arc::new(crate::otlp::OtlpSink::start(
            config,
            &ctx.trace_id,
            &run_id,
            ctx.runtime.clone(),
        ));
        journal.add_sink(sink.clone());
        sink
    });
    let started = Instant::now();
    let mut start_extra = Extra::new();
    // Which process wrote this run: the index tells a live run from a killed one by it.
    start_extra.insert("pid".into(), serde_json::Value::from(std::process::id()));
    // Every imported module with its digest: the attestation's resolved dependencies.
    start_extra.insert(
        "modules".into(),
        serde_json::to_value(sources.borrow().module_digests(&settings.source_name))
            .unwrap_or_default(),
    );
    if let Some(sink) = &otlp {
        start_extra.insert("otlp".into(), sink.describe());
    }
    journal.record(
        None,
        Body::RunStart(RunStart {
            script: settings.source_name.clone(),
            sha256: settings.sha256.clone(),
            mode: settings.mode.as_str().to_owned(),
            vars: settings.vars.clone().into_iter().collect(),
            trace_id: ctx.trace_id.clone(),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            resumes: settings.resume.as_ref().map(|r| r.run_id.clone()),
            journal: journal_file.path().map(|p| p.display().to_string()),
            extra: start_extra,
        }),
    );

    for warning in short_credentials {
        ctx.log("warn", &warning);
    }
    let result = engine.eval_ast::<Dynamic>(&ast);
    report_files(&sources);
    let outcome = match result {
        Ok(value) => {
            if settings.script_path.is_none() && !value.is_unit() {
                ctx.record(Body::Output(Output {
                    stream: "script".into(),
                    line: show_value(&value),
                    ..Output::default()
                }));
            }
            Ok(())
        }
        Err(error) => Err(diagnostic::runtime_error(
            &ctx,
            &error,
            &settings.source_name,
            &sources,
        )),
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

    // A refusal the person has to resolve (an in-doubt step on resume) is a usage error: exit 2.
    let outcome = match ctx.refusal.borrow_mut().take() {
        Some(message) => Err(Error::usage(message)),
        None => outcome,
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
    let saved_plan = crate::host::saved_plan::unreached_event(&ctx);
    journal.record(
        None,
        Body::Plan(PlanEvent {
            mode: settings.mode.as_str().to_owned(),
            effects: plan.0.clone(),
            needs: plan.1.clone(),
            extra: saved_plan
                .map(|v| Extra::from_iter([("saved_plan".to_owned(), v)]))
                .unwrap_or_default(),
        }),
    );
    let saved = crate::host::saved_plan::save(&ctx, &sources, outcome.is_err());

    let exit_code = outcome.as_ref().map_or_else(Error::code, |()| {
        if saved {
            EXIT_OK
        } else {
            crate::error::EXIT_FAILED
        }
    });
    let outcome_name = match &outcome {
        Ok(()) => "ok",
        Err(Error::Interrupted) => "interrupted",
        Err(_) => "failed",
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let error_message = outcome.as_ref().err().map(|e| e.render());
    let first_line = error_message.as_deref().map(|e| {
        e.lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_owned()
    });
    // Redacted here: the root span is built from this, not from a (redacted) event.
    let root_error = first_line.as_deref().map(|e| ctx.redact(e));
    let trace_export = otlp
        .as_ref()
        .map(|sink| sink.finish_run(outcome_name, root_error.as_deref()));
    if let Some(warning) = trace_export.as_ref().and_then(|s| s.warning()) {
        ctx.log("warn", &warning);
    }
    let mut end_extra = Extra::new();
    if let Some(failure) = outcome.as_ref().err().and_then(failure_fields) {
        end_extra.insert("failure".into(), failure);
    }
    if let Some(summary) = &trace_export {
        end_extra.insert("otlp".into(), summary.to_json());
    }
    journal.record(
        None,
        Body::RunEnd(RunEnd {
            outcome: outcome_name.to_owned(),
            exit_code,
            duration_ms,
            error: first_line,
            trace_id: ctx.trace_id.clone(),
            extra: end_extra,
        }),
    );
    journal.finish();
    if let Err(why) = report.write(&journal_file) {
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
    crate::host::browser::end_of_run();
    // A one-shot run exits right after this: tearing down the engine's thousands of registered
    // functions would cost more than a tenth of the start-up (callgrind) for nothing. Watch
    // mode (which passes `finished`) runs again and lets it go.
    if finished.is_none() {
        std::mem::forget(engine);
        std::mem::forget(ast);
    }
    Ok(exit_code)
}

/// Where a script failed, for CI annotations (`::error file=...,line=...`): the whole message
/// and its location.
fn failure_fields(error: &Error) -> Option<serde_json::Value> {
    match error {
        Error::Script {
            message,
            location: Some(location),
            step,
        } => Some(serde_json::json!({
            "message": message,
            "file": location.file,
            "line": location.line,
            "column": location.column,
            "step": step,
        })),
        _ => None,
    }
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
