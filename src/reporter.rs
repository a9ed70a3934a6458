//! What a person sees: a journal sink that renders events as short lines on stderr (with colour
//! when stderr is a terminal and NO_COLOR is unset) and, with `--format json`, prints every event
//! as one JSON line on stdout and nothing else there. A script's `print` goes to stdout as text
//! in human mode, as an `output` event in JSON mode.

use crate::journal::Sink;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

pub struct Reporter {
    format: Format,
    color: bool,
    depth: Mutex<usize>,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
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
        Self { format, color: stderr_color(), depth: Mutex::new(0) }
    }

    fn paint(&self) -> Paint {
        Paint { on: self.color }
    }

    fn human(&self, event: &Value) {
        let kind = event["kind"].as_str().unwrap_or_default();
        let step = event["step"].as_str();
        let paint = self.paint();
        let mut depth = self.depth.lock().unwrap_or_else(|e| e.into_inner());
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
                Some(format!("{indent}{} {}", paint.bold("▶"), step.unwrap_or("")))
            }
            "step_end" => {
                *depth = depth.saturating_sub(1);
                let indent = "  ".repeat(*depth);
                let name = step.unwrap_or("");
                let took = format_ms(event["duration_ms"].as_u64().unwrap_or(0));
                match event["outcome"].as_str().unwrap_or("") {
                    "ok" => Some(format!("{indent}{} {name} {}", paint.green("✓"), paint.dim(&format!("({took})")))),
                    "skipped" => Some(format!(
                        "{indent}{} {name} {}",
                        paint.dim("↷"),
                        paint.dim(&format!("(skipped: {})", event["reason"].as_str().unwrap_or("")))
                    )),
                    outcome => {
                        let error = event["error"].as_str().unwrap_or(outcome);
                        let first = error.lines().next().unwrap_or("");
                        Some(format!("{indent}{} {name} ({took}): {}", paint.red("✗"), paint.red(first)))
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
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{text}");
                    let _ = out.flush();
                    return;
                }
                if event["quiet"].as_bool() == Some(true) {
                    None
                } else {
                    Some(format!("{indent}{} {text}", paint.dim(&format!("[{}]", step.unwrap_or("-")))))
                }
            }
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
                if event["planned"].as_bool() == Some(true) { "○ planned artifact:" } else { "⤓ artifact" },
                event["name"].as_str().unwrap_or(""),
                paint.dim(&format!(
                    "({} bytes, sha256 {})",
                    event["size"].as_u64().unwrap_or(0),
                    event["sha256"].as_str().unwrap_or("").get(..12).unwrap_or("")
                ))
            )),
            "prompt" => Some(format!(
                "{indent}? {} {}",
                event["id"].as_str().unwrap_or(""),
                paint.dim(&format!("-> {}", event["answer"].as_str().map(str::to_owned).unwrap_or_else(|| event["answer"].to_string())))
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
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}

pub fn format_ms(ms: u64) -> String {
    if ms < 1000 { format!("{ms}ms") } else { format!("{:.1}s", ms as f64 / 1000.0) }
}

impl Sink for Reporter {
    fn event(&self, event: &Value) {
        if self.format == Format::Json {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, event);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            if event["kind"] == "output" && event["stream"] == "script" {
                return;
            }
        }
        self.human(event);
    }
}
