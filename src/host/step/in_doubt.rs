//! In-doubt steps on `resume`: a step that started in the resumed run and has no `step_end`
//! (the run was killed inside it) may or may not have had its effect. Running it again
//! silently could deploy twice, skipping it could leave it undone, so the decision is explicit:
//! the step's `verify` closure (true: the effect happened, skip it as done), else
//! `--rerun-in-doubt`, else a yes at a terminal; otherwise the resume stops (exit 2) naming the
//! step and its last journaled effect. The decision is journaled as `in_doubt` on the step's
//! `step_start` (rerun) or `step_end` (skipped), with who or what decided.
//!
//! `--yes` does not answer this question: it answers confirms in general, and repeating a
//! deploy is exactly what this question guards against.

use crate::host::{HostContext, error_text};
use crate::options::{HostResult, host_error};
use rhai::{FnPtr, NativeCallContext};
use serde_json::{Value, json};
use std::io::IsTerminal;

/// What resume does with an in-doubt step; the value is the journal's `in_doubt` field.
pub enum Decision {
    /// The effect already happened: journal the step as skipped, succeeded in the earlier run.
    Skip(Value),
    /// Run it again.
    Rerun(Value),
}

/// `None` when the step is not in doubt (or this is not a resume).
pub fn decide(
    ctx: &HostContext,
    call: &NativeCallContext,
    name: &str,
    occurrence: usize,
    verify: Option<&FnPtr>,
) -> HostResult<Option<Decision>> {
    let Some(resume) = &ctx.settings.resume else {
        return Ok(None);
    };
    let Some(doubt) = resume
        .in_doubt
        .iter()
        .find(|d| d.name == name && d.occurrence == occurrence)
    else {
        return Ok(None);
    };
    let last_effect = doubt.last_effect.as_deref().unwrap_or("none");
    let record = |decision: &str, by: &str| json!({ "run": resume.run_id, "decision": decision, "by": by, "last_effect": doubt.last_effect });
    if let Some(verify) = verify {
        let done = verify.call_within_context::<bool>(call, ()).map_err(|e| {
            host_error(format!(
                "step '{name}' is in doubt and its verify closure failed: {}",
                error_text(&e)
            ))
        })?;
        ctx.log(
            "info",
            &format!(
                "step '{name}' was in doubt in run {}: verify says {}",
                resume.run_id,
                if done {
                    "its effect happened; skipping it"
                } else {
                    "its effect did not happen; running it again"
                }
            ),
        );
        return Ok(Some(if done {
            Decision::Skip(record("skip", "verify"))
        } else {
            Decision::Rerun(record("rerun", "verify"))
        }));
    }
    if resume.rerun_in_doubt {
        return Ok(Some(Decision::Rerun(record("rerun", "--rerun-in-doubt"))));
    }
    let question = format!(
        "step '{name}' was in doubt in run {} (it started and never ended; last journaled effect: {last_effect}). Run it again?",
        resume.run_id
    );
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let yes = dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact_on(&console::Term::stderr())
            .unwrap_or(false);
        if yes {
            return Ok(Some(Decision::Rerun(record("rerun", "terminal"))));
        }
    }
    let message = format!(
        "step '{name}' is in doubt: run {} was killed inside it, so its effect may have happened \
         (last journaled effect: {last_effect}). Check it, then resume with --rerun-in-doubt to \
         run it again, or give the step a verify closure (`step(name, #{{ verify: || ... }}, || ...)`) \
         that tells whether it is done",
        resume.run_id
    );
    *ctx.refusal.borrow_mut() = Some(message.clone());
    Err(host_error(message))
}
