//! The documented range of every `[limits]` value. Zero means "no limit" to Rhai, and a depth
//! or call limit past what the engine thread's stack holds turns deep nesting into a stack
//! overflow (an abort, with the journal cut short) instead of a clean error: both are
//! configuration errors (exit 2) naming the key and its range.

use super::Limits;
use std::time::Duration;

/// Inclusive ranges, also listed in the README ("Safety").
pub const MAX_OPERATIONS: (u64, u64) = (1_000, 1_000_000_000_000);
pub const MEMORY: (u64, u64) = (16 * 1024 * 1024, 64 * 1024 * 1024 * 1024);
pub const STEP_TIMEOUT: (Duration, Duration) = (
    Duration::from_secs(1),
    Duration::from_secs(7 * 24 * 60 * 60),
);
pub const CALL_LEVELS: (usize, usize) = (1, 1_000);
pub const EXPRESSION_DEPTH: (usize, usize) = (1, 1_000);
pub const VARIABLES: (usize, usize) = (1, 1_000_000);
pub const MODULES: (usize, usize) = (1, 1_000);

fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    (min, max): (T, T),
) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!(
            "[limits] {key} = {value} is out of range: it must be between {min} and {max}"
        ));
    }
    Ok(())
}

impl Limits {
    pub fn validate(&self) -> Result<(), String> {
        within("max_operations", self.max_operations, MAX_OPERATIONS)?;
        within("memory", self.memory, MEMORY).map_err(|_| {
            format!(
                "[limits] memory = {} is out of range: it must be between {} and {}",
                bytesize::ByteSize(self.memory),
                bytesize::ByteSize(MEMORY.0),
                bytesize::ByteSize(MEMORY.1)
            )
        })?;
        if self.step_timeout < STEP_TIMEOUT.0 || self.step_timeout > STEP_TIMEOUT.1 {
            return Err(format!(
                "[limits] step_timeout = \"{}\" is out of range: it must be between {} and {}",
                humantime::format_duration(self.step_timeout),
                humantime::format_duration(STEP_TIMEOUT.0),
                humantime::format_duration(STEP_TIMEOUT.1)
            ));
        }
        within("call_levels", self.call_levels, CALL_LEVELS)?;
        within("expression_depth", self.expression_depth, EXPRESSION_DEPTH)?;
        within("variables", self.variables, VARIABLES)?;
        within("modules", self.modules, MODULES)
    }
}
