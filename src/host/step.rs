//! The global functions that shape a run: `step(name, closure)`, `step(name, options, closure)`
//! `check(condition, message)` and `is_dry_run()`.
//!
//! A step is journaled (start, end, duration, outcome), may have a timeout (its own cancellation
//! token, so only its own work is stopped), may `continue_on_error`, and may register a
//! `rollback` closure that runs, newest first, when a later step fails, and may have a `verify`
//! closure that `resume` asks when the step is in doubt (`step/in_doubt.rs`).

mod in_doubt;

use super::{HostContext, Rollback, StepFrame, error_text, is_cancellation};
use crate::cancel::CancelReason;
use crate::event::{Body, StepEnd, StepStart};
use crate::options::{HostResult, Options, kind_error};
use crate::script_error::ScriptError;
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let c = ctx.clone();
    rhai::FuncRegistration::new("step")
        .with_volatility(true)
        .with_params_info(["name: String", "body: FnPtr", "Dynamic"])
        .with_comments(["/// Runs `body` as a named step: journaled, timed, stops the run when it fails.\n/// Returns what `body` returns."])
        .register_into_engine(engine, move |call: NativeCallContext, name: &str, body: FnPtr| {
            run_step(&c, &call, name, Options::empty("step"), body)
        });
    let c = ctx.clone();
    rhai::FuncRegistration::new("step")
        .with_volatility(true)
        .with_params_info(["name: String", "options: Map", "body: FnPtr", "Dynamic"])
        .with_comments(["/// Runs `body` as a named step with options:\n/// `#{ timeout: \"5m\", continue_on_error: true, rollback: || { ... }, verify: || bool }`\n/// (`verify`: on resume, whether a step the earlier run was killed inside already took effect)."])
        .register_into_engine(engine, move |call: NativeCallContext, name: &str, options: Map, body: FnPtr| {
            run_step(&c, &call, name, Options::new("step", options), body)
        });
    let c = ctx.clone();
    rhai::FuncRegistration::new("is_dry_run")
        .with_params_info(["bool"])
        .with_comments(["/// True in a dry run (`--dry-run`, or `--watch` without `--live`): lets a runbook report a\n/// finding instead of failing on it when nothing is going to change."])
        .register_into_engine(engine, move || c.is_dry_run());
    rhai::FuncRegistration::new("check")
        .with_params_info(["condition: bool", "message: String", "()"])
        .with_comments(["/// Fails the current step with `message` when `condition` is false."])
        .register_into_engine(engine, |condition: bool, message: &str| -> HostResult<()> {
            if condition {
                Ok(())
            } else {
                Err(kind_error("check", format!("check failed: {message}")))
            }
        });
}

fn run_step(
    ctx: &Rc<HostContext>,
    call: &NativeCallContext,
    name: &str,
    mut options: Options,
    body: FnPtr,
) -> HostResult<Dynamic> {
    let timeout = options.duration("timeout")?;
    let continue_on_error = options.bool("continue_on_error")?.unwrap_or(false);
    let rollback = options.fn_ptr("rollback")?;
    let verify = options.fn_ptr("verify")?;
    options.finish()?;

    let occurrence = {
        let mut counts = ctx.step_occurrences.borrow_mut();
        let count = counts.entry(name.to_owned()).or_insert(0);
        *count += 1;
        *count
    };
    let depth = ctx.steps.borrow().len();
    let step = Step {
        ctx,
        name,
        occurrence: occurrence as u64,
    };
    if let Some(reason) = skip_reason(ctx, name, occurrence, depth) {
        step.skipped(reason, None);
        return Ok(Dynamic::UNIT);
    }
    let in_doubt = match in_doubt::decide(ctx, call, name, occurrence, verify.as_ref())? {
        Some(in_doubt::Decision::Skip(record)) => {
            let reason = format!(
                "succeeded in run {} (in doubt; verify found it done)",
                record["run"].as_str().unwrap_or("")
            );
            step.skipped(reason, Some(record));
            return Ok(Dynamic::UNIT);
        }
        Some(in_doubt::Decision::Rerun(record)) => Some(record),
        None => None,
    };

    let token = ctx.current_token().child_token();
    let timeout = timeout.or(Some(ctx.policy.limits.step_timeout));
    ctx.steps.borrow_mut().push(StepFrame {
        name: name.to_owned(),
        token: token.clone(),
        started: Instant::now(),
    });
    let mut start = StepStart {
        occurrence: Some(step.occurrence),
        depth: Some(depth as u64),
        timeout_ms: timeout.map(|t| t.as_millis() as u64),
        ..StepStart::default()
    };
    if let Some(record) = in_doubt {
        start.extra.insert("in_doubt".into(), record);
    }
    ctx.journal.record(Some(name), Body::StepStart(start));
    let timer = timeout.map(|after| spawn_timer(ctx, name, depth, after, token.clone()));

    let started = Instant::now();
    let result = body.call_within_context::<Dynamic>(call, ());
    if let Some(timer) = timer {
        timer.abort();
    }
    ctx.steps.borrow_mut().pop();
    let duration_ms = started.elapsed().as_millis() as u64;

    match result {
        Ok(value) => {
            step.end(StepEnd {
                outcome: "ok".into(),
                duration_ms,
                ..StepEnd::default()
            });
            if let Some(closure) = rollback {
                ctx.rollbacks.borrow_mut().push(Rollback {
                    step: name.to_owned(),
                    closure,
                });
            }
            Ok(value)
        }
        Err(error) => step.failed(call, error, (depth, duration_ms), continue_on_error),
    }
}

/// A step being run, for journaling its end.
struct Step<'a> {
    ctx: &'a Rc<HostContext>,
    name: &'a str,
    /// The how-manieth run of a step of this name (resume matches on name and occurrence).
    occurrence: u64,
}

impl Step<'_> {
    fn end(&self, mut end: StepEnd) {
        end.occurrence = Some(self.occurrence);
        self.ctx.journal.record(Some(self.name), Body::StepEnd(end));
    }

    fn skipped(&self, reason: String, in_doubt: Option<serde_json::Value>) {
        let mut end = StepEnd {
            outcome: "skipped".into(),
            reason: Some(reason),
            ..StepEnd::default()
        };
        if let Some(record) = in_doubt {
            end.extra.insert("in_doubt".into(), record);
        }
        self.end(end);
    }

    /// Journals a failed (or cancelled) step; compensates when a top-level step failed; goes
    /// on with `continue_on_error`.
    fn failed(
        &self,
        call: &NativeCallContext,
        error: Box<EvalAltResult>,
        (depth, duration_ms): (usize, u64),
        continue_on_error: bool,
    ) -> HostResult<Dynamic> {
        let (ctx, name) = (self.ctx, self.name);
        let error = timed_out(ctx, name, depth, error);
        let cancelled = is_cancellation(&error);
        let mut end = StepEnd {
            outcome: if cancelled { "cancelled" } else { "failed" }.into(),
            duration_ms,
            error: Some(if cancelled {
                "interrupted".to_owned()
            } else {
                error_text(&error)
            }),
            ..StepEnd::default()
        };
        end.extra.insert(
            "continue_on_error".into(),
            (continue_on_error && !cancelled).into(),
        );
        self.end(end);
        // A failed top-level step ends the run: compensate now, while the script's imports
        // are still in scope for the rollback closures.
        let engine_limit = matches!(
            *error,
            EvalAltResult::ErrorTooManyOperations(..) | EvalAltResult::ErrorStackOverflow(..)
        );
        if depth == 0 && !continue_on_error && !cancelled && !engine_limit {
            ctx.failed_step
                .borrow_mut()
                .get_or_insert_with(|| name.to_owned());
            run_rollbacks(ctx, |closure| {
                closure.call_within_context::<Dynamic>(call, ())
            });
        }
        if continue_on_error && !cancelled {
            let message = format!("step '{name}' failed; continuing (continue_on_error)");
            ctx.journal.record(Some(name), Body::log("warn", message));
            return Ok(Dynamic::UNIT);
        }
        ctx.failed_step
            .borrow_mut()
            .get_or_insert_with(|| name.to_owned());
        Err(error)
    }
}

/// The cancellation a step's own timeout caused, as a catchable `timeout` error.
fn timed_out(
    ctx: &HostContext,
    name: &str,
    depth: usize,
    error: Box<EvalAltResult>,
) -> Box<EvalAltResult> {
    match ctx.cancel.clear_step_timeout(depth) {
        Some(CancelReason::StepTimeout { after, .. }) if is_cancellation(&error) => {
            let message = format!(
                "step '{name}' timed out after {}",
                humantime::format_duration(after)
            );
            let timeout = ScriptError::new("timeout", message).with("step", name.to_owned());
            Box::new(EvalAltResult::ErrorRuntime(
                Dynamic::from(timeout),
                error.position(),
            ))
        }
        _ => error,
    }
}

/// Why a step is skipped: `--from`, `--only` (top-level steps) or `resume` (already succeeded).
fn skip_reason(ctx: &HostContext, name: &str, occurrence: usize, depth: usize) -> Option<String> {
    let flags = &ctx.settings.flags;
    if depth == 0 {
        if let Some(only) = &flags.only {
            if only != name {
                return Some(format!("--only {only}"));
            }
            *ctx.selected_step_seen.borrow_mut() = true;
        }
        if let Some(from) = &flags.from {
            let mut reached = ctx.selected_step_seen.borrow_mut();
            if !*reached && from != name {
                return Some(format!("--from {from}"));
            }
            *reached = true;
        }
    }
    if let Some(resume) = ctx
        .settings
        .resume
        .as_ref()
        .filter(|r| r.succeeded.contains(&(name.to_owned(), occurrence)))
    {
        return Some(format!("succeeded in run {}", resume.run_id));
    }
    None
}

fn spawn_timer(
    ctx: &HostContext,
    name: &str,
    depth: usize,
    after: Duration,
    token: crate::cancel::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let cancel = ctx.cancel.clone();
    let step = name.to_owned();
    ctx.runtime.spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(after) => {
                cancel.set_reason(CancelReason::StepTimeout { step, depth, after });
                token.cancel();
            }
            () = token.cancelled() => {}
        }
    })
}

/// Runs the compensations registered by steps that succeeded, newest first, each as a journaled
/// step `rollback: NAME`. A failing compensation is reported and the next one still runs.
pub fn run_rollbacks(ctx: &HostContext, call: impl Fn(&FnPtr) -> HostResult<Dynamic>) {
    let rollbacks: Vec<Rollback> = ctx.rollbacks.borrow_mut().drain(..).rev().collect();
    if rollbacks.is_empty() {
        return;
    }
    ctx.log(
        "warn",
        &format!("running {} compensation(s), newest first", rollbacks.len()),
    );
    for rollback in rollbacks {
        let name = format!("rollback: {}", rollback.step);
        ctx.steps.borrow_mut().push(StepFrame {
            name: name.clone(),
            token: ctx.cancel.root.child_token(),
            started: Instant::now(),
        });
        let start = StepStart {
            rollback_of: Some(rollback.step.clone()),
            ..StepStart::default()
        };
        ctx.journal.record(Some(&name), Body::StepStart(start));
        let started = Instant::now();
        let result = call(&rollback.closure);
        ctx.steps.borrow_mut().pop();
        let duration_ms = started.elapsed().as_millis() as u64;
        let end = StepEnd {
            outcome: if result.is_ok() { "ok" } else { "failed" }.into(),
            duration_ms,
            error: result.err().map(|error| error_text(&error)),
            rollback_of: Some(rollback.step.clone()),
            ..StepEnd::default()
        };
        ctx.journal.record(Some(&name), Body::StepEnd(end));
    }
}
