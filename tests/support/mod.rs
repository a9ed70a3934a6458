//! Shared test support: a builder that runs the real binary in a temp dir (`Test`), and the
//! real services the tests need (PostgreSQL, HTTP servers, stand-in tools).

#![allow(dead_code)]

pub mod http_server;
pub mod postgres;
pub mod pwa;
pub mod staging;
pub mod tools;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_glow-run");

/// Removes every `GLOW_*` (and `OTEL_*`, `GITHUB_ACTIONS`) variable so the developer's
/// environment cannot change a result.
pub fn hermetic(command: &mut Command) {
    command.env_remove("GITHUB_ACTIONS");
    command.env_remove("GITHUB_STEP_SUMMARY");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GLOW_") || key.to_string_lossy().starts_with("OTEL_")
        {
            command.env_remove(&key);
        }
    }
    command.env("NO_COLOR", "1");
}

/// Runs glow-run in a fresh temp dir with files, args and env; then asserts on the result.
#[must_use]
pub struct Test {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    stdin: Option<String>,
    timeout: Duration,
    expected_stdout: Option<String>,
    expected_stderr: Option<regex::Regex>,
}

/// What a finished run printed and returned.
pub struct Finished {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub dir: PathBuf,
    /// Keeps the temp dir alive while the test inspects the run's files.
    pub keep: Option<tempfile::TempDir>,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            args: Vec::new(),
            env: BTreeMap::new(),
            stdin: None,
            timeout: Duration::from_secs(60),
            expected_stdout: None,
            expected_stderr: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (parents created) relative to the temp dir; text is unindented.
    pub fn file(self, name: &str, text: &str) -> Self {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, unindent(text)).unwrap();
        self
    }

    /// Writes `script.rhai` and makes it the script to run.
    pub fn script(self, text: &str) -> Self {
        self.file("script.rhai", text).arg("script.rhai")
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    /// The exact stdout the run must print (unindented like scripts), asserted by `status`.
    pub fn stdout(mut self, expected: &str) -> Self {
        let text = unindent(expected);
        let text = text.trim_end();
        self.expected_stdout = Some(if text.is_empty() {
            String::new()
        } else {
            format!("{text}\n")
        });
        self
    }

    /// A regex the whole stderr must match (`(?s)` so `.` crosses lines), asserted by `status`.
    pub fn stderr(mut self, pattern: &str) -> Self {
        let pattern = format!("(?s)^{}$", unindent(pattern).trim_end());
        self.expected_stderr = Some(regex::Regex::new(&pattern).expect("a valid stderr regex"));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command that `run` executes (for tests that need to signal it themselves).
    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        hermetic(&mut command);
        command
            .current_dir(self.dir.path())
            .args(&self.args)
            .envs(&self.env);
        command
    }

    pub fn run(self) -> (Self, Finished) {
        let mut command = self.command();
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn glow-run");
        if let Some(input) = &self.stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let output = wait_with_timeout(child, self.timeout);
        let finished = Finished {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            dir: self.dir.path().to_owned(),
            keep: None,
        };
        (self, finished)
    }

    /// Runs and asserts the exit status (and the stdout and stderr when given), printing
    /// everything when one differs.
    pub fn status(self, expected: i32) -> Finished {
        let (stdout, stderr) = (self.expected_stdout.clone(), self.expected_stderr.clone());
        let (dir, mut finished) = self.run_keep();
        finished.keep = Some(dir);
        assert_eq!(
            finished.status, expected,
            "exit status\n--- stdout ---\n{}\n--- stderr ---\n{}",
            finished.stdout, finished.stderr
        );
        if let Some(stdout) = stdout {
            assert_eq!(
                finished.stdout, stdout,
                "stdout\n--- stderr ---\n{}",
                finished.stderr
            );
        }
        if let Some(stderr) = stderr {
            assert!(
                stderr.is_match(finished.stderr.trim_end()),
                "stderr does not match {stderr}\n--- stderr ---\n{}",
                finished.stderr
            );
        }
        finished
    }

    /// Like `run`, but keeps the temp dir alive for the caller by leaking it into `Finished`.
    fn run_keep(self) -> (tempfile::TempDir, Finished) {
        let (test, finished) = self.run();
        (test.dir, finished)
    }

    /// Runs, asserts the status, and keeps the temp dir (returned) for inspecting files.
    pub fn expect(self, expected: i32) -> (tempfile::TempDir, Finished) {
        let (dir, finished) = self.run_keep();
        assert_eq!(
            finished.status, expected,
            "exit status\n--- stdout ---\n{}\n--- stderr ---\n{}",
            finished.stdout, finished.stderr
        );
        (dir, finished)
    }
}

/// Waits for `child` to exit and returns its output; kills it and panics with what it printed
/// when `timeout` passes first.
pub fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> Output {
    if poll(timeout, || child.try_wait().expect("wait")).is_some() {
        return child.wait_with_output().expect("output");
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    panic!(
        "glow-run did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Finished {
    /// Every journal written under `.glow/runs`, oldest first, as parsed events.
    pub fn journals(&self) -> Vec<Vec<serde_json::Value>> {
        let runs = self.dir.join(".glow/runs");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs.iter()
            .map(|dir| {
                let text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default();
                text.lines()
                    .map(|line| {
                        serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {line}"))
                    })
                    .collect()
            })
            .collect()
    }

    /// The events of the last run's journal.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        self.journals().pop().expect("a journal")
    }

    /// The raw text of the last run's journal.
    pub fn journal_text(&self) -> String {
        let runs = self.dir.join(".glow/runs");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        dirs.sort();
        std::fs::read_to_string(dirs.last().unwrap().join("journal.jsonl")).unwrap()
    }

    pub fn events<'a>(
        &self,
        events: &'a [serde_json::Value],
        kind: &str,
    ) -> Vec<&'a serde_json::Value> {
        events.iter().filter(|e| e["kind"] == kind).collect()
    }
}

/// Polls `probe` every few milliseconds until it returns `Some`, and returns that value; `None`
/// once `deadline` has passed. The one polling loop of the suite: a test waits for a condition,
/// never for a fixed time.
pub fn poll<T>(deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`poll`] for a condition that must come: panics naming `what` when `deadline` passes first.
pub fn eventually<T>(what: &str, deadline: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll(deadline, probe).unwrap_or_else(|| panic!("{what}: not within {deadline:?}"))
}

/// `inner` with the terminal's echo turned on first, as in a person's terminal: expectrl's
/// pseudo-terminal starts with echo off, so a secret prompt has to be seen turning it off
/// ([`wait_for_echo_off`]).
pub fn echo_on(inner: &Command) -> Command {
    through_shell(inner, r#"stty echo && exec "$0" "$@""#)
}

/// `inner` run by `sh -c LINE` (in which `"$0" "$@"` is `inner`), with its directory and
/// environment.
pub fn through_shell(inner: &Command, line: &str) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(line)
        .arg(inner.get_program())
        .args(inner.get_args());
    if let Some(dir) = inner.get_current_dir() {
        command.current_dir(dir);
    }
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
}

/// Waits until the program under the pseudo-terminal has turned echo off, i.e. is reading a
/// secret. Type only then: the reader sets the terminal with `TCSAFLUSH`, which discards what
/// was typed before it.
pub fn wait_for_echo_off(session: &expectrl::session::OsSession) {
    eventually("the secret prompt turning echo off", PTY_ECHO_WAIT, || {
        (!session.get_process().get_echo().expect("termios")).then_some(())
    });
}

const PTY_ECHO_WAIT: Duration = Duration::from_secs(30);

/// Removes the common leading indentation, so tests can indent scripts naturally.
pub fn unindent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = text
        .lines()
        .map(|line| {
            if line.len() >= indent {
                &line[indent..]
            } else {
                line.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}
