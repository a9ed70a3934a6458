//! The host side of a run: [`HostContext`] (what every primitive sees: mode, policy, redactor,
//! journal, cancellation, the tokio runtime) and [`register`], the one place that adds every
//! namespace to the engine.
//!
//! Every primitive that touches the world goes through [`HostContext::effect`]: it checks policy,
//! then performs the effect or, in a dry run and unless read-only, records it in the plan; it
//! journals the effect and its outcome either way. No primitive has a dry-run branch of its own.

pub mod artifact;
pub mod browser;
pub mod env;
pub mod exec;
pub mod fs;
pub mod http;
pub mod json;
pub mod log;
pub mod prompt;
mod registration;
pub mod saved_plan;
pub mod sql;
pub mod step;
pub mod time;
pub mod vars;

pub use registration::{WITH_DOCS, add_fn, add_method, install, map_of};

use crate::cancel::{Cancel, CancelReason, CancellationToken};
use crate::config::{Mode, RunSettings};
use crate::event::{Body, EffectEvent};
use crate::journal::Journal;
use crate::options::{HostResult, host_error};
use crate::plan::{Needs, Plan, PlannedEffect};
use crate::policy::{Policy, Subject};
use crate::redact::Redactor;
use crate::script_error::ScriptError;
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Position};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One running step on the step stack.
pub struct StepFrame {
    pub name: String,
    pub token: CancellationToken,
    pub started: Instant,
}

/// A compensation registered by a step that succeeded; run newest first when a later step fails.
pub struct Rollback {
    pub step: String,
    pub closure: FnPtr,
}

/// What every host function can see. Lives on the engine thread (`Rc`); the parts that tokio
/// tasks touch are `Arc`.
pub struct HostContext {
    pub run_id: String,
    pub trace_id: String,
    pub settings: Arc<RunSettings>,
    pub policy: Arc<Policy>,
    pub redactor: Arc<Redactor>,
    pub journal: Arc<Journal>,
    pub cancel: Arc<Cancel>,
    pub runtime: tokio::runtime::Handle,
    /// The identity that started the run (for `[approvals] distinct_from_initiator`), looked up
    /// on first use because it may spawn git.
    pub initiator: std::cell::OnceCell<String>,
    pub plan: Mutex<Plan>,
    /// The saved plan a live run is bound to (`--plan`), set before the script starts.
    pub binding: std::cell::OnceCell<crate::plan_binding::Binding>,
    pub steps: RefCell<Vec<StepFrame>>,
    /// How many times each step name has started (resume matches on name and occurrence).
    pub step_occurrences: RefCell<HashMap<String, usize>>,
    /// Whether the step named by `--from` / `--only` has been reached.
    pub selected_step_seen: RefCell<bool>,
    pub rollbacks: RefCell<Vec<Rollback>>,
    /// The innermost step that failed, for the error message.
    pub failed_step: RefCell<Option<String>>,
    /// Why the run stopped on something the person must decide (exit 2): an in-doubt step.
    pub refusal: RefCell<Option<String>>,
    /// The span id of the effect being performed (16 hex digits): journaled as its `span_id`,
    /// sent by http as the parent id in `traceparent`, so the trace and the API's spans meet.
    pub effect_span_id: RefCell<String>,
    /// The run's artifact store, shared by `artifact::*` and the evidence other namespaces keep.
    pub artifacts: Rc<artifact::Artifacts>,
    /// What the run does when the script is over (end the browser, say), in order.
    at_end: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// The engine thread's own current-thread runtime for request/response I/O (HTTP, SQL),
    /// made on first use: a call polls its socket on this thread, so a round trip needs no
    /// hand-off to the I/O worker and back (two context switches per call on `runtime`).
    local: std::cell::OnceCell<tokio::runtime::Runtime>,
}

/// What an effect is, for policy, the plan and the journal.
pub struct Effect<'a> {
    pub namespace: &'static str,
    pub action: &'a str,
    /// What it acts on: a command line, a URL, a statement, an artifact name (redacted on write).
    pub target: String,
    /// Arguments worth keeping as evidence (redacted on write).
    pub detail: Value,
    /// Safe to perform in a dry run.
    pub read_only: bool,
    pub subject: Subject<'a>,
}

/// What a live run needs that [`HostContext::missing`] can record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Env,
    Secret,
    Var,
    Program,
}

/// What a prompt asks a person for, listed in a dry run's needs (see [`HostContext::question`]).
#[derive(Debug, Clone, Copy)]
pub enum Asking<'a> {
    /// An answer, by prompt id.
    Answer(&'a str),
    /// A sign-off, by role.
    SignOff(&'a str),
}

/// A prompt's answer from [`HostContext::question`]: `None` when a dry run had no given answer
/// (it asks no one); `planned`: the run only plans, so the answer is not acted on.
pub struct Reply<T> {
    pub answer: Option<T>,
    pub planned: bool,
}

/// Whether the gate performed an effect or only planned it.
enum Outcome<T> {
    Done(T),
    Planned,
}

impl HostContext {
    /// A context for one run (its journal starts in memory; `run` attaches the file).
    pub fn new(
        settings: Arc<RunSettings>,
        redactor: Arc<Redactor>,
        cancel: Arc<Cancel>,
        runtime: tokio::runtime::Handle,
        run_id: &str,
    ) -> Rc<Self> {
        Rc::new(Self {
            run_id: run_id.to_owned(),
            trace_id: format!("{:032x}", rand::random::<u128>() | 1),
            policy: settings.policy.clone(),
            journal: Arc::new(Journal::in_memory(run_id, redactor.clone())),
            settings,
            redactor,
            cancel,
            runtime,
            initiator: std::cell::OnceCell::new(),
            plan: Mutex::new(Plan::default()),
            binding: std::cell::OnceCell::new(),
            steps: RefCell::new(Vec::new()),
            step_occurrences: RefCell::new(HashMap::new()),
            selected_step_seen: RefCell::new(false),
            rollbacks: RefCell::new(Vec::new()),
            failed_step: RefCell::new(None),
            refusal: RefCell::new(None),
            effect_span_id: RefCell::new(String::new()),
            artifacts: Rc::default(),
            at_end: RefCell::new(Vec::new()),
            local: std::cell::OnceCell::new(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    pub fn initiator(&self) -> &str {
        self.initiator.get_or_init(crate::identity::initiator)
    }

    pub fn is_dry_run(&self) -> bool {
        self.settings.mode == Mode::DryRun
    }

    /// Adds something to do when the script is over (see [`end_of_run`](Self::end_of_run)).
    pub fn at_end(&self, action: impl FnOnce() + 'static) {
        self.at_end.borrow_mut().push(Box::new(action));
    }

    /// Runs what namespaces asked to do when the script is over; `run.rs` calls it once.
    pub fn end_of_run(&self) {
        let actions = std::mem::take(&mut *self.at_end.borrow_mut());
        for action in actions {
            action();
        }
    }

    pub fn current_step(&self) -> Option<String> {
        self.steps.borrow().last().map(|frame| frame.name.clone())
    }

    /// The token that cancels the work of the innermost running step (or the whole run).
    pub fn current_token(&self) -> CancellationToken {
        self.steps
            .borrow()
            .last()
            .map_or_else(|| self.cancel.root.clone(), |frame| frame.token.clone())
    }

    /// The error a host function returns when the run is cancelled: `ErrorTerminated`, which
    /// scripts cannot catch.
    pub fn cancelled_error(&self) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorTerminated(
            Dynamic::from(CancelReason::TOKEN),
            Position::NONE,
        ))
    }

    /// Runs a future on the run's runtime, raced against cancellation (Ctrl-C, step timeout,
    /// reload). Dropping the future aborts its I/O.
    pub fn block_on<F: Future>(&self, future: F) -> HostResult<F::Output> {
        let output = self.runtime.block_on(self.cancellable(future)?);
        output.ok_or_else(|| self.cancelled_error())
    }

    /// [`block_on`](Self::block_on) on the engine thread's own runtime, for request/response
    /// I/O whose connections live there (HTTP clients, SQL sessions): no task of it runs
    /// between calls.
    pub fn block_on_local<F: Future>(&self, future: F) -> HostResult<F::Output> {
        let runtime = self.local_runtime()?;
        let output = runtime.block_on(self.cancellable(future)?);
        output.ok_or_else(|| self.cancelled_error())
    }

    /// The engine thread's runtime of [`block_on_local`](Self::block_on_local), for bounded
    /// work that must happen even when the run is cancelled (a rollback, say).
    pub fn local_runtime(&self) -> HostResult<&tokio::runtime::Runtime> {
        if let Some(runtime) = self.local.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::options::host_error(format!("starting the I/O runtime: {e}")))?;
        Ok(self.local.get_or_init(|| runtime))
    }

    /// `future` raced against the current token: `None` when cancelled first.
    fn cancellable<F: Future>(
        &self,
        future: F,
    ) -> HostResult<impl Future<Output = Option<F::Output>>> {
        let token = self.current_token();
        if token.is_cancelled() {
            return Err(self.cancelled_error());
        }
        Ok(async move {
            tokio::select! {
                biased;
                () = token.cancelled() => None,
                value = future => Some(value),
            }
        })
    }

    /// Journals an event attributed to the current step.
    pub fn record(&self, body: Body) -> u64 {
        self.journal.record(self.current_step().as_deref(), body)
    }

    pub fn log(&self, level: &str, message: &str) {
        self.record(Body::log(level, message));
    }

    /// Registers a secret for redaction everywhere the host writes. A value too short to
    /// redact (1-2 characters) is reported, never silently left in the clear.
    pub fn register_secret(&self, value: &str) {
        if !self.redactor.register(value) && !value.trim_end_matches(['\n', '\r']).is_empty() {
            self.log(
                "warn",
                &format!(
                    "a secret of {} character(s) is not redacted: secrets shorter than {} characters cannot be",
                    value.chars().count(),
                    crate::redact::MIN_SECRET_LEN
                ),
            );
        }
    }

    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text).into_owned()
    }

    pub fn needs(&self, update: impl FnOnce(&mut Needs)) {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        update(&mut plan.needs);
    }

    /// Something a live run needs is missing (env, a secret, a var, a program). A dry run
    /// records it in the plan's needs and goes on (the caller returns a placeholder); a live
    /// run fails with `error`. The one place, beside the gate, that acts on the mode.
    pub fn missing(
        &self,
        need: Need,
        names: &[String],
        error: impl FnOnce() -> Box<EvalAltResult>,
    ) -> HostResult<()> {
        if !self.is_dry_run() {
            return Err(error());
        }
        self.needed(need, names);
        Ok(())
    }

    /// Records what a live run will need (a program not on PATH, say) where the call itself goes
    /// on: a live run fails at the effect, a dry run lists it in the plan's needs.
    pub fn needed(&self, need: Need, names: &[String]) {
        if !self.is_dry_run() {
            return;
        }
        self.needs(|needs| {
            let set = match need {
                Need::Env => &mut needs.env,
                Need::Secret => &mut needs.secrets,
                Need::Var => &mut needs.vars,
                Need::Program => &mut needs.programs,
            };
            set.extend(names.iter().cloned());
        });
    }

    /// The mode's part of every prompt, after the answers file, the environment and --yes
    /// (`given`): a live run asks a person (`ask`); a dry run never asks, and lists what a live
    /// run will ask in the plan's needs. The one place, beside the gate and `missing`, that
    /// acts on the mode for prompts.
    pub fn question<T>(
        &self,
        asking: Asking<'_>,
        given: Option<T>,
        ask: impl FnOnce() -> HostResult<T>,
    ) -> HostResult<Reply<T>> {
        let planned = self.is_dry_run();
        if planned {
            self.needs(|needs| {
                let (list, name) = match asking {
                    Asking::Answer(id) => (&mut needs.questions, id),
                    Asking::SignOff(role) => (&mut needs.approvals, role),
                };
                if !list.iter().any(|listed| listed == name) {
                    list.push(name.to_owned());
                }
            });
        }
        let answer = match given {
            Some(answer) => Some(answer),
            None if planned => None,
            None => Some(ask()?),
        };
        Ok(Reply { answer, planned })
    }

    /// Whether the gate would perform an effect of this subject now (not a dry run, and policy
    /// allows it): a SQL session opened where it would not is read-only from the start.
    pub fn would_perform(&self, subject: &Subject<'_>) -> bool {
        !self.is_dry_run() && self.policy.check(subject).is_ok()
    }

    /// The effects so far (planned in a dry run, performed in a live run), in order.
    pub fn effects(&self) -> Vec<PlannedEffect> {
        self.plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .effects
            .clone()
    }

    /// SHA-256 over the plan so far: what an approval signs off.
    pub fn plan_hash(&self) -> String {
        if let Some(binding) = self.binding.get() {
            return binding.plan.hash.clone();
        }
        let effects = self.effects();
        let lines: Vec<String> = effects
            .iter()
            .map(|e| {
                format!(
                    "{}\t{}\t{}\t{}",
                    e.step.as_deref().unwrap_or(""),
                    e.namespace,
                    e.action,
                    e.target
                )
            })
            .collect();
        crate::config::sha256_hex(lines.join("\n").as_bytes())
    }

    /// Appends a non-read effect to the plan (the dry run's plan, the live run's effect list);
    /// returns its 1-based position.
    fn add_to_plan(&self, effect: &Effect<'_>, step: Option<String>, planned: bool) -> u64 {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let index = plan.effects.len() + 1;
        let mut detail = effect.detail.clone();
        self.redactor.redact_json(&mut detail);
        plan.effects.push(PlannedEffect {
            index,
            step,
            namespace: effect.namespace.to_owned(),
            action: effect.action.to_owned(),
            target: self.redact(&effect.target),
            detail,
            planned,
        });
        index as u64
    }

    /// The gate for an effect that may change something: performed in a live run; in a dry run
    /// (unless read-only) recorded in the plan, and `planned` makes what the call returns
    /// instead (each effect kind says what its planned value is).
    pub fn perform<T>(
        &self,
        effect: Effect<'_>,
        planned: impl FnOnce() -> HostResult<T>,
        perform: impl FnOnce(&mut serde_json::Map<String, Value>) -> HostResult<T>,
    ) -> HostResult<T> {
        match self.effect(effect, perform)? {
            Outcome::Done(value) => Ok(value),
            Outcome::Planned => planned(),
        }
    }

    /// The gate for a read: journaled and checked against policy, performed in every mode.
    pub fn read<T>(
        &self,
        mut effect: Effect<'_>,
        perform: impl FnOnce(&mut serde_json::Map<String, Value>) -> HostResult<T>,
    ) -> HostResult<T> {
        effect.read_only = true;
        match self.effect(effect, perform)? {
            Outcome::Done(value) => Ok(value),
            Outcome::Planned => Err(host_error("a read was planned instead of performed")),
        }
    }

    /// The one effect gate (see the module documentation); namespaces call it through
    /// [`perform`](Self::perform) or [`read`](Self::read).
    fn effect<T>(
        &self,
        effect: Effect<'_>,
        perform: impl FnOnce(&mut serde_json::Map<String, Value>) -> HostResult<T>,
    ) -> HostResult<Outcome<T>> {
        let step = self.current_step();
        let mut event = EffectEvent {
            namespace: effect.namespace.to_owned(),
            action: effect.action.to_owned(),
            target: effect.target.clone(),
            args: effect.detail.clone(),
            read_only: effect.read_only,
            ..EffectEvent::default()
        };
        let record = |event: EffectEvent| self.journal.record(step.as_deref(), Body::Effect(event));

        let refusal = self.policy.check(&effect.subject).err();
        if let Some(rule) = refusal.or_else(|| self.refused_by_plan(step.as_deref(), &effect)) {
            event.outcome = "denied".into();
            event.error = Some(rule.clone());
            record(event);
            return Err(ScriptError::new("policy", rule.clone())
                .with("rule", rule)
                .into_eval());
        }

        let planned = self.is_dry_run() && !effect.read_only;
        if !effect.read_only {
            event.index = Some(self.add_to_plan(&effect, step.clone(), planned));
        }
        event.planned = planned;
        if planned {
            event.outcome = "planned".into();
            record(event);
            return Ok(Outcome::Planned);
        }

        let span_id = format!("{:016x}", rand::random::<u64>() | 1);
        event
            .extra
            .insert("span_id".into(), Value::String(span_id.clone()));
        *self.effect_span_id.borrow_mut() = span_id;
        tracing::debug!(
            namespace = effect.namespace,
            action = effect.action,
            "effect"
        );
        let started = Instant::now();
        let result = perform(&mut event.extra)
            .map_err(|error| ScriptError::name_kind(error, effect.namespace));
        event.duration_ms = Some(started.elapsed().as_millis() as u64);
        match &result {
            Ok(_) => event.outcome = "ok".into(),
            Err(error) => {
                event.outcome = if is_cancellation(error) {
                    "cancelled"
                } else {
                    "failed"
                }
                .into();
                event.error = Some(error_text(error));
            }
        }
        record(event);
        result.map(Outcome::Done)
    }
}

impl Drop for HostContext {
    /// A watch-mode run ends here: its engine-thread runtime goes without waiting for a blocking
    /// task it started (a DNS lookup that hangs, say), as the run's runtime does at the end of
    /// `run::execute`.
    fn drop(&mut self) {
        if let Some(runtime) = self.local.take() {
            runtime.shutdown_background();
        }
    }
}

/// True for the error host functions return when the run was cancelled.
pub fn is_cancellation(error: &EvalAltResult) -> bool {
    matches!(error, EvalAltResult::ErrorTerminated(..))
}

/// The message of an error without Rhai's position suffix.
pub fn error_text(error: &EvalAltResult) -> String {
    match error {
        EvalAltResult::ErrorRuntime(value, _) => match value.clone().try_cast::<ScriptError>() {
            Some(error) => error.message,
            None => value.to_string(),
        },
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => error_text(inner),
        other => {
            let mut text = other.to_string();
            if let Some(at) = text.rfind(" (line ") {
                text.truncate(at);
            }
            text
        }
    }
}

/// Default timeouts, documented in the README.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SQL_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM first; SIGKILL when the process group is still alive after this.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// Adds every namespace and the global functions to the engine.
pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    step::register(engine, ctx);
    vars::register(engine, ctx);
    log::register(engine, ctx);
    exec::register(engine, ctx);
    env::register(engine, ctx);
    fs::register(engine, ctx);
    json::register(engine, ctx);
    time::register(engine, ctx);
    http::register(engine, ctx);
    sql::register(engine, ctx);
    artifact::register(engine, ctx);
    prompt::register(engine, ctx);
    browser::register(engine, ctx);
}
