//! The host side of a run: [`HostContext`] (what every primitive sees: mode, policy, redactor,
//! journal, cancellation, the tokio runtime) and [`register`], the one place that adds every
//! namespace to the engine.
//!
//! Every primitive that touches the world goes through [`HostContext::effect`]: it checks policy,
//! then performs the effect or, in a dry run and unless read-only, records it in the plan; it
//! journals the effect and its outcome either way. No primitive has a dry-run branch of its own.

pub mod artifact;
pub mod env;
pub mod exec;
pub mod fs;
pub mod http;
pub mod json;
pub mod log;
pub mod prompt;
pub mod saved_plan;
pub mod sql;
pub mod step;
pub mod time;
pub mod vars;

use crate::cancel::{Cancel, CancelReason, CancellationToken};
use crate::config::{Mode, RunSettings};
use crate::journal::Journal;
use crate::options::HostResult;
use crate::plan::{Needs, Plan, PlannedEffect};
use crate::policy::{Policy, Subject};
use crate::redact::Redactor;
use crate::script_error::ScriptError;
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Position};
use serde_json::{Value, json};
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

/// Whether the gate performed an effect or only planned it.
pub enum Outcome<T> {
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
        let token = self.current_token();
        if token.is_cancelled() {
            return Err(self.cancelled_error());
        }
        let output = self.runtime.block_on(async move {
            tokio::select! {
                biased;
                () = token.cancelled() => None,
                value = future => Some(value),
            }
        });
        output.ok_or_else(|| self.cancelled_error())
    }

    /// Journals an event attributed to the current step.
    pub fn emit(&self, kind: &str, fields: Value) -> u64 {
        self.journal
            .emit(kind, self.current_step().as_deref(), fields)
    }

    pub fn log(&self, level: &str, message: &str) {
        self.emit("log", json!({ "level": level, "message": message }));
    }

    /// Registers a secret for redaction everywhere the host writes.
    pub fn register_secret(&self, value: &str) {
        self.redactor.register(value);
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
        self.needs(|needs| {
            let set = match need {
                Need::Env => &mut needs.env,
                Need::Secret => &mut needs.secrets,
                Need::Var => &mut needs.vars,
                Need::Program => &mut needs.programs,
            };
            set.extend(names.iter().cloned());
        });
        Ok(())
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

    /// The one effect gate. See the module documentation.
    pub fn effect<T>(
        &self,
        effect: Effect<'_>,
        perform: impl FnOnce(&mut serde_json::Map<String, Value>) -> HostResult<T>,
    ) -> HostResult<Outcome<T>> {
        let step = self.current_step();
        let mut event = serde_json::Map::new();
        event.insert("namespace".into(), json!(effect.namespace));
        event.insert("action".into(), json!(effect.action));
        event.insert("target".into(), json!(effect.target));
        event.insert("args".into(), effect.detail.clone());
        event.insert("read_only".into(), json!(effect.read_only));

        let refusal = self.policy.check(&effect.subject).err();
        if let Some(rule) = refusal.or_else(|| self.refused_by_plan(step.as_deref(), &effect)) {
            event.insert("planned".into(), json!(false));
            event.insert("outcome".into(), json!("denied"));
            event.insert("error".into(), json!(rule));
            self.journal
                .emit("effect", step.as_deref(), Value::Object(event));
            return Err(ScriptError::new("policy", rule.clone())
                .with("rule", rule)
                .into_eval());
        }

        let planned = self.is_dry_run() && !effect.read_only;
        if !effect.read_only {
            let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
            let index = plan.effects.len() + 1;
            plan.effects.push(PlannedEffect {
                index,
                step: step.clone(),
                namespace: effect.namespace.to_owned(),
                action: effect.action.to_owned(),
                target: self.redact(&effect.target),
                detail: {
                    let mut detail = effect.detail.clone();
                    self.redactor.redact_json(&mut detail);
                    detail
                },
                planned,
            });
            event.insert("index".into(), json!(index));
        }
        event.insert("planned".into(), json!(planned));
        if planned {
            event.insert("outcome".into(), json!("planned"));
            self.journal
                .emit("effect", step.as_deref(), Value::Object(event));
            return Ok(Outcome::Planned);
        }

        tracing::debug!(
            namespace = effect.namespace,
            action = effect.action,
            "effect"
        );
        let started = Instant::now();
        let result =
            perform(&mut event).map_err(|error| ScriptError::name_kind(error, effect.namespace));
        event.insert(
            "duration_ms".into(),
            json!(started.elapsed().as_millis() as u64),
        );
        match &result {
            Ok(_) => {
                event.insert("outcome".into(), json!("ok"));
            }
            Err(error) => {
                event.insert(
                    "outcome".into(),
                    json!(if is_cancellation(error) {
                        "cancelled"
                    } else {
                        "failed"
                    }),
                );
                event.insert("error".into(), json!(error_text(error)));
            }
        }
        self.journal
            .emit("effect", step.as_deref(), Value::Object(event));
        result.map(Outcome::Done)
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
}

/// Builds a Rhai map from pairs.
pub fn map_of<const N: usize>(pairs: [(&str, Dynamic); N]) -> rhai::Map {
    pairs
        .into_iter()
        .map(|(key, value)| (key.into(), value))
        .collect()
}

/// Adds a documented function to a namespace module. The doc text becomes `///` comments in
/// `glow-run defs`; `params` names the parameters (`"program: String"`, last the return type).
pub fn add_fn<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
    module: &mut rhai::Module,
    name: &str,
    params: &[&str],
    docs: &str,
    func: FUNC,
) where
    R: std::any::Any + Clone,
    FUNC: rhai::RhaiNativeFunc<A, N, X, R, F> + 'static,
{
    let comments: Vec<String> = docs
        .lines()
        .map(|line| format!("/// {line}").trim_end().to_owned())
        .collect();
    rhai::FuncRegistration::new(name)
        .in_internal_namespace()
        .with_volatility(true)
        .with_params_info(params)
        .with_comments([comments.join("\n")])
        .set_into_module(module, func);
}

/// Registers a finished namespace module under its name (`exec`, `http`, ...).
pub fn install(engine: &mut Engine, name: &str, module: rhai::Module) {
    engine.register_static_module(name, module.into());
}
