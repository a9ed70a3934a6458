//! The live status line on a terminal: while a step runs, one line at the bottom of stderr with
//! a spinner, the innermost running step, its elapsed time and the last line of output, cut to
//! the terminal width (indicatif). Finished lines are printed above it as usual. At most ten
//! redraws a second. Off when stderr is not a terminal, in CI (`CI`, `GITHUB_ACTIONS`), with
//! `NO_COLOR`, `TERM=dumb` or `--format json`. A prompt takes the terminal: `hold` clears the
//! line until `release` (both called through `reporter::hold_output`).
//!
//! One process-wide line (the terminal is process-wide): the state lives in a static.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Redraws per second, at most (the spinner ticks at this rate too).
const REDRAWS_PER_SECOND: u8 = 10;

#[derive(Default)]
struct Line {
    enabled: bool,
    /// Running steps, outermost first, with their start.
    steps: Vec<(String, Instant)>,
    last_output: String,
    /// A prompt holds the terminal.
    held: bool,
    /// The bar on screen and the step it shows.
    bar: Option<(ProgressBar, String)>,
}

static LINE: Mutex<Option<Line>> = Mutex::new(None);

fn with_line<R>(f: impl FnOnce(&mut Line) -> R) -> Option<R> {
    let mut line = LINE.lock().unwrap_or_else(|e| e.into_inner());
    line.as_mut().filter(|line| line.enabled).map(f)
}

fn set_or_empty(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Whether a status line belongs on this stderr (the reporter is in human format).
pub fn wanted() -> bool {
    std::io::stderr().is_terminal()
        && !set_or_empty("NO_COLOR")
        && !set_or_empty("CI")
        && !super::github::enabled()
        && std::env::var("TERM").map_or(true, |term| term != "dumb")
}

pub fn enable() {
    let mut line = LINE.lock().unwrap_or_else(|e| e.into_inner());
    let line = line.get_or_insert_with(Line::default);
    line.enabled = true;
}

/// Output from a line of text a child printed: control characters would move the cursor.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

impl Line {
    /// Makes the screen match the state: a bar for the innermost step, or none.
    fn refresh(&mut self) {
        let top = self.steps.last().filter(|_| !self.held).cloned();
        match (&self.bar, top) {
            (Some((bar, shown)), Some((name, _))) if *shown == name => {
                bar.set_message(self.last_output.clone());
            }
            (_, top) => {
                if let Some((bar, _)) = self.bar.take() {
                    bar.finish_and_clear();
                }
                if let Some((name, started)) = top {
                    self.bar = Some((new_bar(&name, started, &self.last_output), name));
                }
            }
        }
    }
}

fn new_bar(step: &str, started: Instant, message: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar =
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SECOND))
            .with_style(style)
            .with_prefix(step.to_owned())
            .with_message(message.to_owned())
            .with_elapsed(started.elapsed());
    bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(REDRAWS_PER_SECOND)));
    bar
}

pub fn step_start(name: &str) {
    with_line(|line| {
        line.steps.push((name.to_owned(), Instant::now()));
        line.last_output.clear();
        line.refresh();
    });
}

pub fn step_end(name: &str) {
    with_line(|line| {
        if let Some(at) = line.steps.iter().rposition(|(step, _)| step == name) {
            line.steps.truncate(at);
        }
        line.last_output.clear();
        line.refresh();
    });
}

pub fn output(text: &str) {
    with_line(|line| {
        line.last_output = printable(text);
        line.refresh();
    });
}

/// Runs `write` with the line cleared (and drawn again after), so printed lines stay above it.
pub fn print(write: impl FnOnce()) {
    let bar = LINE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|line| line.bar.as_ref().map(|(bar, _)| bar.clone()));
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Clears the line until [`release`]: a prompt is about to use the terminal.
pub fn hold() {
    with_line(|line| {
        line.held = true;
        line.refresh();
    });
}

pub fn release() {
    with_line(|line| {
        line.held = false;
        line.refresh();
    });
}
