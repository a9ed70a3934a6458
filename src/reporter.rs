//! What a person sees: a journal sink that renders events as short lines on stderr (with colour
//! when stderr is a terminal and NO_COLOR is unset) and, with `--format json`, prints every event
//! as one JSON line on stdout and nothing else there. A script's `print` goes to stdout as text
//! in human mode, as an `output` event in JSON mode. Under GitHub Actions the lines carry
//! workflow commands (`github`); on a terminal a live status line shows the running step
//! (`status`).

mod github;
pub mod status;

use crate::journal::Sink;
use serde_json::Value;
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
        let status_line = format == Format::Human && status::wanted();
        if status_line {
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
    fn github_commands(&self, event: &Value, depth: usize) -> Option<String> {
        match event["kind"].as_str()? {
            "step_start" if depth == 0 => Some(github::group(event["step"].as_str()?)),
            "step_end" if depth == 1 && event["outcome"] != "skipped" => {
                Some(github::END_GROUP.to_owned())
            }
            "log" => github::log_command(event),
            "run_end" => github::failure_command(event),
            _ => None,
        }
    }

    /// Keeps the status line in step with the events (a no-op when it is off).
    fn status(event: &Value) {
        let step = event["step"].as_str().unwrap_or("");
        match event["kind"].as_str() {
            Some("step_start") => status::step_start(step),
            Some("step_end") if event["outcome"] != "skipped" => status::step_end(step),
            Some("output") if event["stream"] != "script" => {
                status::output(event["line"].as_str().unwrap_or(""));
            }
            _ => {}
        }
    }

    fn paint(&self) -> Paint {
        Paint { on: self.color }
    }

    fn human(&self, event: &Value) {
        let kind = event["kind"].as_str().unwrap_or_default();
        let step = event["step"].as_str();
        let paint = self.paint();
        let mut depth = self.depth.lock().unwrap_or_else(|e| e.into_inner());
        if self.github
            && let Some(command) = self.github_commands(event, *depth)
        {
            write_line(false, command.into_bytes());
            if kind == "log" {
                return;
            }
        }
        let indent = "  ".repeat(*depth);
        let line = match kind {
            "run_start" => Some(paint.bold(&format!(
                "glow-run {} · {} · run {}",
                event["script"].as_str().unwrap_or("-"),
                event["mode"].as_str().unwrap_or("live"),
                event["run"].as_str().unwrap_or("-"),
            ))),
            "step_start" => {
                *depth += 1;
                Some(format!(
                    "{indent}{} {}",
                    paint.bold("▶"),
                    step.unwrap_or("")
                ))
            }
            "step_end" => {
                // A skipped step never started, so it did not deepen the indentation.
                if event["outcome"] != "skipped" {
                    *depth = depth.saturating_sub(1);
                }
                let indent = "  ".repeat(*depth);
                let name = step.unwrap_or("");
                let took = format_ms(event["duration_ms"].as_u64().unwrap_or(0));
                match event["outcome"].as_str().unwrap_or("") {
                    "ok" => Some(format!(
                        "{indent}{} {name} {}",
                        paint.green("✓"),
                        paint.dim(&format!("({took})"))
                    )),
                    "skipped" => Some(format!(
                        "{indent}{} {name} {}",
                        paint.dim("↷"),
                        paint.dim(&format!(
                            "(skipped: {})",
                            event["reason"].as_str().unwrap_or("")
                        ))
                    )),
                    outcome => {
                        let error = event["error"].as_str().unwrap_or(outcome);
                        let first = error.lines().next().unwrap_or("");
                        Some(format!(
                            "{indent}{} {name} ({took}): {}",
                            paint.red("✗"),
                            paint.red(first)
                        ))
                    }
                }
            }
            "effect" => {
                let text = format!(
                    "{} {} {}",
                    event["namespace"].as_str().unwrap_or(""),
                    event["action"].as_str().unwrap_or(""),
                    event["target"].as_str().unwrap_or("")
                );
                match event["outcome"].as_str().unwrap_or("") {
                    "planned" => Some(format!("{indent}{} {}", paint.yellow("○ planned:"), text)),
                    "denied" => Some(format!("{indent}{} {}", paint.red("✗ denied:"), text)),
                    "failed" => Some(format!("{indent}{} {}", paint.red("→"), text)),
                    _ if event["read_only"].as_bool() == Some(true) => {
                        Some(format!("{indent}{}", paint.dim(&format!("· {text}"))))
                    }
                    _ => Some(format!("{indent}→ {text}")),
                }
            }
            "output" => {
                let text = event["line"].as_str().unwrap_or("");
                if event["stream"] == "script" {
                    drop(depth);
                    write_line(true, text.as_bytes().to_vec());
                    return;
                }
                if event["quiet"].as_bool() == Some(true) {
                    None
                } else {
                    Some(format!(
                        "{indent}{} {text}",
                        paint.dim(&format!("[{}]", step.unwrap_or("-")))
                    ))
                }
            }
            "log" if event["level"] == "trace" => None,
            "log" => {
                let level = event["level"].as_str().unwrap_or("info");
                let message = event["message"].as_str().unwrap_or("");
                let label = match level {
                    "warn" => paint.yellow("warn:"),
                    "error" => paint.red("error:"),
                    _ => paint.dim("info:"),
                };
                Some(format!("{indent}{label} {message}"))
            }
            "artifact" => Some(format!(
                "{indent}{} {} {}",
                if event["planned"].as_bool() == Some(true) {
                    "○ planned artifact:"
                } else {
                    "⤓ artifact"
                },
                event["name"].as_str().unwrap_or(""),
                paint.dim(&format!(
                    "({} bytes, sha256 {})",
                    event["size"].as_u64().unwrap_or(0),
                    event["sha256"]
                        .as_str()
                        .unwrap_or("")
                        .get(..12)
                        .unwrap_or("")
                ))
            )),
            "prompt" => Some(format!(
                "{indent}? {} {}",
                event["id"].as_str().unwrap_or(""),
                paint.dim(&format!(
                    "-> {}",
                    event["answer"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| event["answer"].to_string())
                ))
            )),
            "approval" => Some(format!(
                "{indent}✍ approval {} by {}",
                event["role"].as_str().unwrap_or(""),
                event["approver"].as_str().unwrap_or("")
            )),
            _ => None,
        };
        drop(depth);
        if let Some(line) = line {
            write_line(false, line.into_bytes());
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
    fn event(&self, event: &Value) {
        Self::status(event);
        if self.format == Format::Json {
            write_line(true, serde_json::to_vec(event).unwrap_or_default());
            if event["kind"] == "output" && event["stream"] == "script" {
                return;
            }
        }
        self.human(event);
    }
}
