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
use crate::otlp::OtlpSink;
use crate::redact::Redactor;
use crate::report::ReportSink;
use crate::reporter::{Reporter, format_ms};
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
    let session = session::build(
        settings.clone(),
        redactor.clone(),
        cancel.clone(),
        runtime,
        &run_id,
    );
    // Before anything can be written: credentials in the environment, by their shape.
    let short_credentials =
        crate::redact::shape::register_environment(&redactor, &settings.env_overlay);
    let journal = session.ctx.journal.clone();
    journal.add_sink(Arc::new(Reporter::new(settings.flags.format)));
    let report = Arc::new(ReportSink::new());
    journal.add_sink(report.clone());
    let otlp_config = crate::otlp::Config::resolve(settings.flags.otlp.as_deref(), &|name| {
        (settings.env_overlay.get(name).cloned()).or_else(|| std::env::var(name).ok())
    })?;
    for (_, value) in otlp_config.iter().flat_map(|c| &c.headers) {
        redactor.register(value);
    }
    let run = Run {
        settings,
        session,
        report,
        finished,
    };

    let ast = run.compile()?;
    crate::host::saved_plan::bind(&run.session.ctx, &run.session.sources)?;
    let otlp = run.open_evidence(&run_dir, index, otlp_config, &redactor, &cancel)?;
    let started = Instant::now();
    run.record_start(otlp.as_deref());
    for warning in short_credentials {
        run.session.ctx.log("warn", &warning);
    }
    let outcome = run.evaluate(&ast);
    let exit_code = run.finish(&outcome, otlp.as_deref(), started);
    run.session.ctx.end_of_run();
    // A one-shot run exits right after this: tearing down the engine's thousands of registered
    // functions would cost more than a tenth of the start-up (callgrind) for nothing. Watch
    // mode (which passes `finished`) runs again and lets it go.
    if run.finished.is_none() {
        std::mem::forget(run.session.engine);
        std::mem::forget(ast);
    }
    Ok(exit_code)
}

/// One run from compile to its end, in phases: compile, open the evidence, record the start,
/// evaluate, finish.
struct Run {
    settings: Arc<RunSettings>,
    session: Session,
    report: Arc<ReportSink>,
    /// Watch mode's view of the run: its id and the files it imported.
    finished: Option<Arc<Mutex<Finished>>>,
}

impl Run {
    fn journal(&self) -> &Journal {
        &self.session.ctx.journal
    }

    fn report_files(&self) {
        if let Some(finished) = &self.finished {
            let mut finished = finished.lock().unwrap_or_else(|e| e.into_inner());
            finished.files = self.session.sources.borrow().files.clone();
        }
    }

    fn compile(&self) -> Result<rhai::AST, Error> {
        let settings = &self.settings;
        let compiled =
            (self.session.engine).compile_into_self_contained(&rhai::Scope::new(), &settings.text);
        self.report_files();
        let mut ast = compiled.map_err(|error| {
            diagnostic::compile_error(&error, &settings.source_name, &self.session.sources)
        })?;
        ast.set_source(settings.source_name.as_str());
        Ok(ast)
    }

    /// The shared state (and, for a live run, the release lock) comes before anything is
    /// written: a run refused the lock leaves no journal. Then the journal file and the sinks
    /// that need it.
    fn open_evidence(
        &self,
        run_dir: &std::path::Path,
        index: Arc<dyn crate::journal::Sink>,
        otlp_config: Option<crate::otlp::Config>,
        redactor: &Arc<Redactor>,
        cancel: &Arc<Cancel>,
    ) -> Result<Option<Arc<OtlpSink>>, Error> {
        let ctx = &self.session.ctx;
        let shared = match &self.settings.state_url {
            Some(url) => Some(crate::shared_state::SharedState::open(
                url,
                &self.settings,
                &ctx.run_id,
                ctx.initiator(),
                &ctx.runtime,
                redactor,
                cancel,
            )?),
            None => None,
        };
        self.journal().attach_file(run_dir).map_err(|e| {
            Error::host(format!("creating the journal in {}", run_dir.display()), e)
        })?;
        if let Some(finished) = &self.finished {
            finished.lock().unwrap_or_else(|e| e.into_inner()).run_id = Some(ctx.run_id.clone());
        }
        self.journal().add_sink(index);
        if let Some(shared) = shared {
            self.journal().add_sink(shared);
        }
        Ok(otlp_config.map(|config| {
            let sink = Arc::new(OtlpSink::start(
                config,
                &ctx.trace_id,
                &ctx.run_id,
                ctx.runtime.clone(),
            ));
            self.journal().add_sink(sink.clone());
            sink
        }))
    }

    fn record_start(&self, otlp: Option<&OtlpSink>) {
        let (settings, ctx) = (&self.settings, &self.session.ctx);
        let mut extra = Extra::new();
        // Which process wrote this run: the index tells a live run from a killed one by it.
        extra.insert("pid".into(), serde_json::Value::from(std::process::id()));
        // Every imported module with its digest: the attestation's resolved dependencies.
        let modules = self
            .session
            .sources
            .borrow()
            .module_digests(&settings.source_name);
        extra.insert(
            "modules".into(),
            serde_json::to_value(modules).unwrap_or_default(),
        );
        if let Some(sink) = otlp {
            extra.insert("otlp".into(), sink.describe());
        }
        self.journal().record(
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
                journal: self.journal().path().map(|p| p.display().to_string()),
                extra,
            }),
        );
    }

    /// Runs the script; a failure outside any step runs the compensations here.
    fn evaluate(&self, ast: &rhai::AST) -> Result<(), Error> {
        let (settings, ctx, engine) = (&self.settings, &self.session.ctx, &self.session.engine);
        let result = engine.eval_ast::<Dynamic>(ast);
        self.report_files();
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
                ctx,
                &error,
                &settings.source_name,
                &self.session.sources,
            )),
        };
        // `--only deploy` with no step named so ran nothing: say so rather than report success.
        let wanted = settings
            .flags
            .only
            .as_ref()
            .or(settings.flags.from.as_ref());
        let outcome = match (&outcome, wanted) {
            (Ok(()), Some(wanted)) if !*ctx.selected_step_seen.borrow() => Err(Error::Script {
                message: format!(
                    "no top-level step named '{wanted}' (given to --only/--from) ran; every step was skipped"
                ),
                location: None,
                step: None,
            }),
            _ => outcome,
        };
        // A refusal the person has to resolve (an in-doubt step on resume) is a usage error.
        let outcome = match ctx.refusal.borrow_mut().take() {
            Some(message) => Err(Error::usage(message)),
            None => outcome,
        };
        let failed = matches!(&outcome, Err(error) if !matches!(error, Error::Interrupted));
        if failed && !ctx.rollbacks.borrow().is_empty() {
            // Only when the script failed outside a step (a failed top-level step already ran
            // them, inside the script's context where its imports still exist).
            crate::host::step::run_rollbacks(ctx, |closure| {
                closure.call::<Dynamic>(engine, ast, ())
            });
        }
        outcome
    }

    /// Journals the plan and the end, saves the plan, ends the trace, writes the report and
    /// prints the summary; returns the exit code.
    fn finish(
        &self,
        outcome: &Result<(), Error>,
        otlp: Option<&OtlpSink>,
        started: Instant,
    ) -> i32 {
        let (settings, ctx) = (&self.settings, &self.session.ctx);
        let (effects, needs) = {
            let plan = ctx.plan.lock().unwrap_or_else(|e| e.into_inner());
            (plan.effects.clone(), plan.needs.clone())
        };
        let saved_plan = crate::host::saved_plan::unreached_event(ctx);
        self.journal().record(
            None,
            Body::Plan(PlanEvent {
                mode: settings.mode.as_str().to_owned(),
                effects: effects.clone(),
                needs: needs.clone(),
                extra: saved_plan
                    .map(|v| Extra::from_iter([("saved_plan".to_owned(), v)]))
                    .unwrap_or_default(),
            }),
        );
        let saved = crate::host::saved_plan::save(ctx, &self.session.sources, outcome.is_err());
        let exit_code = outcome.as_ref().map_or_else(Error::code, |()| {
            if saved {
                EXIT_OK
            } else {
                crate::error::EXIT_FAILED
            }
        });
        let outcome_name = match outcome {
            Ok(()) => "ok",
            Err(Error::Interrupted) => "interrupted",
            Err(_) => "failed",
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let error_message = outcome.as_ref().err().map(Error::render);
        self.record_end(
            outcome,
            otlp,
            (outcome_name, exit_code, duration_ms),
            error_message.as_deref(),
        );
        if let Err(why) = self.report.write(self.journal()) {
            ctx.log("warn", &format!("could not write the run report: {why}"));
        }
        let summary = Summary {
            effects: &effects,
            needs: &needs,
            error: error_message.as_deref(),
            outcome: outcome_name,
            duration_ms,
        };
        print_summary(ctx, settings, &summary, self.journal());
        if let Some(write_error) = self.journal().write_error() {
            let _ = writeln!(
                std::io::stderr(),
                "warning: the journal could not be written completely: {write_error}"
            );
        }
        exit_code
    }

    /// Ends the trace and journals `run_end` (with the failure's location for CI annotations).
    fn record_end(
        &self,
        outcome: &Result<(), Error>,
        otlp: Option<&OtlpSink>,
        (outcome_name, exit_code, duration_ms): (&str, i32, u64),
        error_message: Option<&str>,
    ) {
        let ctx = &self.session.ctx;
        let first_line = error_message.map(|e| {
            e.lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_owned()
        });
        // Redacted here: the root span is built from this, not from a (redacted) event.
        let root_error = first_line.as_deref().map(|e| ctx.redact(e));
        let trace_export = otlp.map(|sink| sink.finish_run(outcome_name, root_error.as_deref()));
        if let Some(warning) = trace_export.as_ref().and_then(|s| s.warning()) {
            ctx.log("warn", &warning);
        }
        let mut extra = Extra::new();
        if let Some(failure) = outcome.as_ref().err().and_then(failure_fields) {
            extra.insert("failure".into(), failure);
        }
        if let Some(summary) = &trace_export {
            extra.insert("otlp".into(), summary.to_json());
        }
        self.journal().record(
            None,
            Body::RunEnd(RunEnd {
                outcome: outcome_name.to_owned(),
                exit_code,
                duration_ms,
                error: first_line,
                trace_id: ctx.trace_id.clone(),
                extra,
            }),
        );
        self.journal().finish();
    }
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

/// What the summary at the end of a run says.
struct Summary<'a> {
    effects: &'a [crate::plan::PlannedEffect],
    needs: &'a crate::plan::Needs,
    error: Option<&'a str>,
    outcome: &'a str,
    duration_ms: u64,
}

fn print_summary(
    ctx: &HostContext,
    settings: &RunSettings,
    summary: &Summary<'_>,
    journal: &Journal,
) {
    let Summary {
        effects,
        needs,
        error,
        outcome,
        duration_ms,
    } = *summary;
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
