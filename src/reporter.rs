//! What a person sees: a journal sink that renders events as short lines on stderr (with colour
//! when stderr is a terminal and NO_COLOR is unset) and, with `--format json`, prints every event
//! as one JSON line on stdout and nothing else there. A script's `print` goes to stdout as text
//! in human mode, as an `output` event in JSON mode. Under GitHub Actions the lines carry
//! workflow commands (`github`); on a terminal a live status line shows the running step
//! (`status`).

mod github;
pub mod status;

use crate::event::{Body, Event, StepEnd};
use crate::journal::Sink;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Output that waits while a prompt is on the terminal, so lines from running work (other
/// threads) do not garble it: `(to_stdout, bytes)` in order. `None` when nothing is held.
static HELD: Mutex<Option<Vec<HeldLine>>> = Mutex::new(None);

/// One held line: whether it goes to stdout (else stderr), and its bytes.
type HeldLine = (bool, Vec<u8>);

/// Holds the reporter's output until dropped (then writes it, in order). Taken by `prompt`.
pub struct HeldOutput(());

pub fn hold_output() -> HeldOutput {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Vec::new);
    status::hold();
    HeldOutput(())
}

impl Drop for HeldOutput {
    fn drop(&mut self) {
        let held = HELD.lock().unwrap_or_else(|e| e.into_inner()).take();
        for (to_stdout, bytes) in held.into_iter().flatten() {
            write_now(to_stdout, &bytes);
        }
        status::release();
    }
}

fn write_now(to_stdout: bool, bytes: &[u8]) {
    status::print(|| {
        if to_stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        } else {
            let _ = std::io::stderr().lock().write_all(bytes);
        }
    });
}

/// Writes one line to stdout or stderr, or keeps it while a prompt holds the output.
fn write_line(to_stdout: bool, mut bytes: Vec<u8>) {
    bytes.push(b'\n');
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    match held.as_mut() {
        Some(queue) => queue.push((to_stdout, bytes)),
        None => write_now(to_stdout, &bytes),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

pub struct Reporter {
    format: Format,
    color: bool,
    /// GitHub Actions workflow commands (groups, annotations).
    github: bool,
    depth: Mutex<usize>,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn green(&self, t: &str) -> String {
        self.wrap("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.wrap("31", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.wrap("33", t)
    }
    fn dim(&self, t: &str) -> String {
        self.wrap("2", t)
    }
    fn bold(&self, t: &str) -> String {
        self.wrap("1", t)
    }
}

pub fn stderr_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl Reporter {
    pub fn new(format: Format) -> Self {
        if format == Format::Human && status::wanted() {
            status::enable();
        }
        Self {
            format,
            color: stderr_color(),
            github: github::enabled(),
            depth: Mutex::new(0),
        }
    }

    /// The workflow commands an event adds under GitHub Actions, written before its line.
    fn github_commands(&self, event: &Event, depth: usize) -> Option<String> {
        match &event.body {
            Body::StepStart(_) if depth == 0 => Some(github::group(event.step.as_deref()?)),
            Body::StepEnd(end) if depth == 1 && end.outcome != "skipped" => {
                Some(github::END_GROUP.to_owned())
            }
            Body::Log(log) => github::log_command(event.step.as_deref(), log),
            Body::RunEnd(end) => github::failure_command(end),
            _ => None,
        }
    }

    /// Keeps the status line in step with the events (a no-op when it is off).
    fn status(event: &Event) {
        let step = event.step.as_deref().unwrap_or("");
        match &event.body {
            Body::StepStart(_) => status::step_start(step),
            Body::StepEnd(end) if end.outcome != "skipped" => status::step_end(step),
            Body::Output(output) if output.stream != "script" => status::output(&output.line),
            _ => {}
        }
    }

    fn paint(&self) -> Paint {
        Paint { on: self.color }
    }

    fn human(&self, event: &Event) {
        let step = event.step.as_deref();
        let paint = self.paint();
        let mut depth = self.depth.lock().unwrap_or_else(|e| e.into_inner());
        if self.github
            && let Some(command) = self.github_commands(event, *depth)
        {
            write_line(false, command.into_bytes());
            if matches!(event.body, Body::Log(_)) {
                return;
            }
        }
        let indent = "  ".repeat(*depth);
        let line = match &event.body {
            Body::RunStart(start) => Some(paint.bold(&format!(
                "glow-run {} · {} · run {}",
                start.script, start.mode, event.run,
            ))),
            Body::StepStart(_) => {
                *depth += 1;
                Some(format!(
                    "{indent}{} {}",
                    paint.bold("▶"),
                    step.unwrap_or("")
                ))
            }
            Body::StepEnd(end) => {
                // A skipped step never started, so it did not deepen the indentation.
                if end.outcome != "skipped" {
                    *depth = depth.saturating_sub(1);
                }
                let indent = "  ".repeat(*depth);
                Some(step_end_line(&paint, &indent, step.unwrap_or(""), end))
            }
            Body::Effect(effect) => Some(effect_line(&paint, &indent, effect)),
            Body::Output(output) => {
                if output.stream == "script" {
                    drop(depth);
                    write_line(true, output.line.as_bytes().to_vec());
                    return;
                }
                (!output.quiet).then(|| {
                    format!(
                        "{indent}{} {}",
                        paint.dim(&format!("[{}]", step.unwrap_or("-"))),
                        output.line
                    )
                })
            }
            Body::Log(log) if log.level == "trace" => None,
            Body::Log(log) => {
                let label = match log.level.as_str() {
                    "warn" => paint.yellow("warn:"),
                    "error" => paint.red("error:"),
                    _ => paint.dim("info:"),
                };
                Some(format!("{indent}{label} {}", log.message))
            }
            Body::Artifact(artifact) => Some(artifact_line(&paint, &indent, artifact)),
            Body::Prompt(prompt) => Some(prompt_line(&paint, &indent, prompt)),
            Body::Approval(approval) => Some(format!(
                "{indent}✍ approval {} by {}",
                approval.role, approval.approver
            )),
            Body::Plan(_) | Body::RunEnd(_) => None,
        };
        drop(depth);
        if let Some(line) = line {
            write_line(false, line.into_bytes());
        }
    }
}

/// `→ exec run npm ci`, `○ planned: ...`, `✗ denied: ...`; a read dimmed.
fn effect_line(paint: &Paint, indent: &str, effect: &crate::event::EffectEvent) -> String {
    let text = format!("{} {} {}", effect.namespace, effect.action, effect.target);
    match effect.outcome.as_str() {
        "planned" => format!("{indent}{} {}", paint.yellow("○ planned:"), text),
        "denied" => format!("{indent}{} {}", paint.red("✗ denied:"), text),
        "failed" => format!("{indent}{} {}", paint.red("→"), text),
        _ if effect.read_only => format!("{indent}{}", paint.dim(&format!("· {text}"))),
        _ => format!("{indent}→ {text}"),
    }
}

fn artifact_line(paint: &Paint, indent: &str, artifact: &crate::event::ArtifactEvent) -> String {
    format!(
        "{indent}{} {} {}",
        if artifact.planned {
            "○ planned artifact:"
        } else {
            "⤓ artifact"
        },
        artifact.name,
        paint.dim(&format!(
            "({} bytes, sha256 {})",
            artifact.size,
            artifact.sha256.get(..12).unwrap_or("")
        ))
    )
}

fn prompt_line(paint: &Paint, indent: &str, prompt: &crate::event::PromptEvent) -> String {
    let answer = (prompt.answer.as_str()).map_or_else(|| prompt.answer.to_string(), str::to_owned);
    format!(
        "{indent}? {} {}",
        prompt.id,
        paint.dim(&format!("-> {answer}"))
    )
}

/// `✓ build (1.2s)`, `↷ build (skipped: ...)` or `✗ build (1.2s): why`.
fn step_end_line(paint: &Paint, indent: &str, name: &str, end: &StepEnd) -> String {
    let took = format_ms(end.duration_ms);
    match end.outcome.as_str() {
        "ok" => format!(
            "{indent}{} {name} {}",
            paint.green("✓"),
            paint.dim(&format!("({took})"))
        ),
        "skipped" => format!(
            "{indent}{} {name} {}",
            paint.dim("↷"),
            paint.dim(&format!(
                "(skipped: {})",
                end.reason.as_deref().unwrap_or("")
            ))
        ),
        outcome => {
            let error = end.error.as_deref().unwrap_or(outcome);
            let first = error.lines().next().unwrap_or("");
            format!(
                "{indent}{} {name} ({took}): {}",
                paint.red("✗"),
                paint.red(first)
            )
        }
    }
}

pub fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

impl Sink for Reporter {
    fn event(&self, event: &Event, line: &str) {
        Self::status(event);
        if self.format == Format::Json {
            write_line(true, line.as_bytes().to_vec());
            if matches!(&event.body, Body::Output(output) if output.stream == "script") {
                return;
            }
        }
        self.human(event);
    }
}
