//! Script errors with locations: a Rhai compile or runtime error becomes the run's [`Error`]
//! with the innermost `file:line:col` (inside an imported module when it failed there), the
//! step it failed in, and a message that names the limit or cause in glow-run's words.

use crate::cancel::CancelReason;
use crate::engine::MEMORY_TOKEN;
use crate::error::Error;
use crate::host::{HostContext, error_text};
use crate::resolver::{STDLIB_PREFIX, SharedSources};
use crate::span::Location;
use rhai::{EvalAltResult, Position};

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
pub fn runtime_error(
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
