//! The one error type of glow-run, its exit codes and its renderer.
//!
//! Library code returns [`Error`]; `run` renders it once, at the edge, through the redactor,
//! so no secret reaches the terminal through an error message.

use crate::span::Location;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Exit codes are a documented contract: 0 ok, 1 failed while running, 2 found before running,
/// 130 interrupted.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug)]
pub enum Error {
    /// Bad command line.
    Usage { message: String },
    /// The script file could not be read.
    ScriptRead {
        path: PathBuf,
        io_error: std::io::Error,
    },
    /// glow.toml or another configuration file is invalid.
    Config { path: PathBuf, message: String },
    /// The script does not compile.
    Compile {
        message: String,
        location: Option<Location>,
    },
    /// `glow-run check` found problems; each finding is already rendered.
    Lint { findings: Vec<String> },
    /// The script failed while it ran: a step, a check, a primitive, an engine limit.
    Script {
        message: String,
        location: Option<Location>,
        step: Option<String>,
    },
    /// Ctrl-C (or SIGTERM) stopped the run.
    Interrupted,
    /// Anything the host itself could not do (state directory, journal, ...): what it was
    /// doing, and why, with the cause's own causes rendered as "caused by" lines.
    Host {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A verification found mismatches (`glow-run verify`).
    Verify { problems: Vec<String> },
    /// Refused before anything ran (a stale saved plan, an approval that does not verify).
    Refused { message: String },
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage {
            message: message.into(),
        }
    }

    pub fn host(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Host {
            context: context.into(),
            source: source.into(),
        }
    }

    pub fn code(&self) -> i32 {
        match self {
            Self::Usage { .. }
            | Self::ScriptRead { .. }
            | Self::Config { .. }
            | Self::Compile { .. }
            | Self::Lint { .. }
            | Self::Refused { .. } => EXIT_USAGE,
            Self::Interrupted => EXIT_INTERRUPTED,
            Self::Script { .. } | Self::Host { .. } | Self::Verify { .. } => EXIT_FAILED,
        }
    }

    /// The full message as printed on stderr (before redaction).
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            Self::Usage { message } => {
                let _ = writeln!(out, "error: {message}");
                let _ = writeln!(out, "hint: run `glow-run --help` for usage");
            }
            Self::ScriptRead { path, io_error } => {
                let _ = writeln!(
                    out,
                    "error: cannot read script {}: {io_error}",
                    path.display()
                );
            }
            Self::Config { path, message } => {
                let _ = writeln!(
                    out,
                    "error: invalid configuration in {}: {message}",
                    path.display()
                );
            }
            Self::Compile { message, location } => {
                let _ = writeln!(out, "error: {message}");
                if let Some(location) = location {
                    out.push_str(&location.render());
                }
            }
            Self::Lint { findings } => {
                for finding in findings {
                    out.push_str(finding);
                    if !finding.ends_with('\n') {
                        out.push('\n');
                    }
                }
                let _ = writeln!(out, "error: check found {} problem(s)", findings.len());
            }
            Self::Script {
                message,
                location,
                step,
            } => {
                let _ = writeln!(out, "error: {message}");
                if let Some(location) = location {
                    out.push_str(&location.render());
                }
                if let Some(step) = step {
                    let _ = writeln!(out, "  = step: {step}");
                }
            }
            Self::Refused { message } => {
                let _ = writeln!(out, "error: {message}");
            }
            Self::Interrupted => {
                let _ = writeln!(out, "error: interrupted");
            }
            Self::Host { context, source } => {
                let _ = writeln!(out, "error: {context}: {source}");
                let mut cause = source.source();
                while let Some(error) = cause {
                    let _ = writeln!(out, "caused by: {error}");
                    cause = error.source();
                }
            }
            Self::Verify { problems } => {
                for problem in problems {
                    let _ = writeln!(out, "mismatch: {problem}");
                }
                let _ = writeln!(
                    out,
                    "error: verification failed: {} problem(s)",
                    problems.len()
                );
            }
        }
        out
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ScriptRead { io_error, .. } => Some(io_error),
            Self::Host { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
