//! Processes: `exec::run(program, args, opts?)` (argv, never a shell) and `exec::sh(line, opts?)`
//! (through `sh -c`, only where policy allows a shell).
//!
//! Each child runs in its own process group with stdin closed (or fed from `opts.stdin`), so a
//! timeout, a step timeout or Ctrl-C can stop the whole tree: SIGTERM to the group, then SIGKILL
//! after a short grace. Output streams live to the terminal, prefixed by the step, is journaled
//! line by line and captured (bounded) for the result map. Children (and their groups) die
//! with glow-run, even when it is killed with SIGKILL (`exec/reaper.rs`).

pub mod reaper;

use super::{DEFAULT_EXEC_TIMEOUT, Effect, HostContext, KILL_GRACE, Need, add_fn, install, map_of};
use crate::event::{Body, Output};
use crate::journal::Journal;
use crate::options::{HostResult, Options, host_error, kind_error};
use crate::policy::Subject;
use crate::redact::lines::LineWindow;
use crate::script_error::ScriptError;
use nix::unistd::Pid;
use rhai::{Array, Dynamic, Engine, Map, Module};
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// Captured output kept per stream for the result map; the journal has every line.
const MAX_CAPTURE: usize = 4 * 1024 * 1024;
/// How long to wait for output after the program exits: a background grandchild may hold the
/// pipe open for ever, and the run must not hang on it.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);
/// Lines of stderr quoted in the error of a failed command.
const STDERR_TAIL_LINES: usize = 20;
/// Output held back for the redaction window before it is released regardless.
const MAX_HELD_BACK: usize = 256 * 1024;

struct Request {
    action: &'static str,
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
    stdin: Option<String>,
    quiet: bool,
    read_only: bool,
    check: bool,
}

impl Request {
    fn parse(
        ctx: &HostContext,
        action: &'static str,
        program: String,
        args: Array,
        options: Map,
    ) -> HostResult<Self> {
        let what = if action == "sh" {
            "exec::sh"
        } else {
            "exec::run"
        };
        let mut options = Options::new(what, options);
        let env = options
            .map("env")?
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let request = Self {
            action,
            program,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            cwd: options.string("cwd")?,
            env,
            timeout: options
                .duration("timeout")?
                .unwrap_or_else(|| default_timeout(ctx)),
            stdin: options.string("stdin")?,
            quiet: options.bool("quiet")?.unwrap_or(false),
            read_only: options.bool("read_only")?.unwrap_or(false),
            check: options.bool("check")?.unwrap_or(true),
        };
        options.finish()?;
        Ok(request)
    }

    /// The command line as a person would type it (for the plan and errors).
    fn command_line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn default_timeout(ctx: &HostContext) -> Duration {
    if ctx.policy.source.is_some() {
        ctx.policy.limits.step_timeout
    } else {
        DEFAULT_EXEC_TIMEOUT
    }
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Remembers where programs were found, so 200 calls do not search PATH 200 times.
#[derive(Default)]
struct ProgramCache {
    found: RefCell<HashMap<String, Option<PathBuf>>>,
}

impl ProgramCache {
    fn resolve(&self, program: &str) -> Option<PathBuf> {
        if program.contains('/') {
            // Relative to the working directory (DESIGN.md), not to `opts.cwd`: made absolute
            // before the child changes directory.
            let path = std::path::absolute(program).ok()?;
            return path.exists().then_some(path);
        }
        self.found
            .borrow_mut()
            .entry(program.to_owned())
            .or_insert_with(|| which::which(program).ok())
            .clone()
    }
}

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let cache = Rc::new(ProgramCache::default());
    let mut module = Module::new();
    let docs_run = "Runs a program with arguments (argv, never a shell) and returns\n\
                    `#{ code, stdout, stderr, duration_ms, planned }`. A non-zero exit throws unless `check: false`.\n\
                    Options: `cwd`, `env` (map), `timeout` (\"90s\"), `stdin`, `quiet`, `read_only` (safe in a dry run), `check`.";
    let (c, k) = (ctx.clone(), cache.clone());
    add_fn(
        &mut module,
        "run",
        &["program: String", "args: Array", "Map"],
        docs_run,
        move |program: &str, args: Array| run(&c, &k, "run", program.to_owned(), args, Map::new()),
    );
    let (c, k) = (ctx.clone(), cache.clone());
    add_fn(
        &mut module,
        "run",
        &["program: String", "args: Array", "options: Map", "Map"],
        docs_run,
        move |program: &str, args: Array, options: Map| {
            run(&c, &k, "run", program.to_owned(), args, options)
        },
    );
    let docs_sh = "Runs a line through `sh -c` (only where policy allows a shell: `[exec] shell`).\nSame result and options as `exec::run`.";
    let (c, k) = (ctx.clone(), cache.clone());
    add_fn(
        &mut module,
        "sh",
        &["line: String", "Map"],
        docs_sh,
        move |line: &str| {
            run(
                &c,
                &k,
                "sh",
                "sh".into(),
                vec!["-c".into(), line.into()],
                Map::new(),
            )
        },
    );
    let (c, k) = (ctx.clone(), cache);
    add_fn(
        &mut module,
        "sh",
        &["line: String", "options: Map", "Map"],
        docs_sh,
        move |line: &str, options: Map| {
            run(
                &c,
                &k,
                "sh",
                "sh".into(),
                vec!["-c".into(), line.into()],
                options,
            )
        },
    );
    install(engine, "exec", module);
}

fn run(
    ctx: &HostContext,
    cache: &ProgramCache,
    action: &'static str,
    program: String,
    args: Array,
    options: Map,
) -> HostResult<Map> {
    let request = Request::parse(ctx, action, program, args, options)?;
    // A credential handed to the child in `opts.env` is a secret by its name, like one the
    // child inherits.
    for (name, value) in &request.env {
        if crate::redact::shape::is_secret_name(name) {
            ctx.register_secret(value);
        }
    }
    let resolved = cache.resolve(&request.program);
    if resolved.is_none() {
        ctx.needed(Need::Program, std::slice::from_ref(&request.program));
    }
    let command_line = if action == "sh" {
        request.args[1].clone()
    } else {
        request.command_line()
    };
    let subject = if action == "sh" {
        Subject::Shell
    } else {
        Subject::Program {
            name: &request.program,
            path: resolved.as_deref(),
        }
    };
    let effect = Effect {
        namespace: "exec",
        action,
        target: command_line.clone(),
        detail: json!({ "argv": std::iter::once(&request.program).chain(&request.args).collect::<Vec<_>>(),
                        "cwd": request.cwd, "timeout_ms": request.timeout.as_millis() as u64 }),
        // A read-only command that is not installed cannot run in a dry run either: plan it.
        read_only: request.read_only && resolved.is_some(),
        subject,
    };
    // Planned: no process ran (`None`); the planned result map is made below.
    let outcome = ctx.perform(
        effect,
        || Ok(None),
        |event| {
            let path = resolved.clone().ok_or_else(|| {
                host_error(format!(
                    "exec::{action}: program '{}' not found on PATH",
                    request.program
                ))
            })?;
            let finished = spawn_and_wait(ctx, &request, path, &command_line)?;
            event.insert("code".into(), json!(finished.code));
            Ok(Some(finished))
        },
    )?;
    let Some(finished) = outcome else {
        return Ok(map_of([
            ("code", Dynamic::from(0_i64)),
            ("stdout", Dynamic::from(String::new())),
            ("stderr", Dynamic::from(String::new())),
            ("duration_ms", Dynamic::from(0_i64)),
            ("planned", Dynamic::TRUE),
        ]));
    };
    if request.check && finished.code != 0 {
        let tail = ctx.redact(&finished.stderr_tail());
        let mut message = format!(
            "exec::{action}: `{command_line}` exited with code {}",
            finished.code
        );
        if !tail.is_empty() {
            message.push_str("\n--- stderr (last lines) ---\n");
            message.push_str(&tail);
        }
        return Err(ScriptError::new("exec", message)
            .with("code", finished.code)
            .into_eval());
    }
    Ok(map_of([
        ("code", Dynamic::from(finished.code)),
        ("stdout", Dynamic::from(finished.stdout)),
        ("stderr", Dynamic::from(finished.stderr)),
        ("duration_ms", Dynamic::from(finished.duration_ms)),
        ("planned", Dynamic::FALSE),
    ]))
}

struct Finished {
    code: i64,
    stdout: String,
    stderr: String,
    duration_ms: i64,
}

impl Finished {
    fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
        lines[start..].join("\n")
    }
}

#[derive(Default)]
struct Captured {
    text: String,
    truncated: bool,
}

enum Ending {
    Exited(std::process::ExitStatus),
    Cancelled,
    TimedOut,
}

fn spawn_and_wait(
    ctx: &HostContext,
    request: &Request,
    path: PathBuf,
    command_line: &str,
) -> HostResult<Finished> {
    let mut command = tokio::process::Command::new(&path);
    command
        .args(&request.args)
        .process_group(0)
        .stdin(if request.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &request.cwd {
        command.current_dir(cwd);
    }
    for (key, value) in &ctx.settings.env_overlay {
        command.env(key, value);
    }
    for (key, value) in &request.env {
        command.env(key, value);
    }
    reaper::guard(&mut command);
    let token = ctx.current_token();
    let journal = ctx.journal.clone();
    let step = ctx.current_step();
    let action = request.action;
    let started = Instant::now();
    let ending = ctx.runtime.block_on(async {
        let mut child = command.spawn().map_err(|e| {
            let place = request.cwd.as_deref().map(|cwd| format!(" in '{cwd}'")).unwrap_or_default();
            host_error(format!("exec::{action}: cannot start `{command_line}`{place}: {e}"))
        })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        if let (Some(input), Some(mut pipe)) = (request.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = pipe.write_all(input.as_bytes()).await;
            });
        }
        let stdout = Arc::new(Mutex::new(Captured::default()));
        let stderr = Arc::new(Mutex::new(Captured::default()));
        let pumps = [
            child.stdout.take().map(|pipe| {
                tokio::spawn(pump(pipe, "stdout", journal.clone(), step.clone(), request.quiet, stdout.clone()))
            }),
            child.stderr.take().map(|pipe| {
                tokio::spawn(pump(pipe, "stderr", journal.clone(), step.clone(), request.quiet, stderr.clone()))
            }),
        ];
        let ending = tokio::select! {
            status = child.wait() => Ending::Exited(status.map_err(|e| host_error(format!("exec::{action}: waiting for `{command_line}`: {e}")))?),
            () = token.cancelled() => Ending::Cancelled,
            () = tokio::time::sleep(request.timeout) => Ending::TimedOut,
        };
        if let (false, Some(pgid)) = (matches!(ending, Ending::Exited(_)), pgid) {
            reaper::terminate_group(pgid, &mut child, KILL_GRACE).await;
        }
        for pump in pumps.into_iter().flatten() {
            let abort = pump.abort_handle();
            if tokio::time::timeout(DRAIN_AFTER_EXIT, pump).await.is_err() {
                abort.abort();
            }
        }
        if let Some(pgid) = pgid {
            reaper::forget(pgid);
        }
        let take = |captured: &Arc<Mutex<Captured>>| {
            let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut captured.text)
        };
        Ok::<_, Box<rhai::EvalAltResult>>((ending, take(&stdout), take(&stderr)))
    })?;
    let (ending, stdout, stderr) = ending;
    let duration_ms = started.elapsed().as_millis() as i64;
    match ending {
        Ending::Exited(status) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .map_or_else(|| 128 + i64::from(status.signal().unwrap_or(0)), i64::from);
            Ok(Finished {
                code,
                stdout,
                stderr,
                duration_ms,
            })
        }
        Ending::Cancelled => Err(ctx.cancelled_error()),
        Ending::TimedOut => Err(kind_error(
            "timeout",
            format!(
                "exec::{action}: `{command_line}` timed out after {}; its process group was killed",
                humantime::format_duration(request.timeout)
            ),
        )),
    }
}

/// How long a child may be quiet before held-back lines are released (see `redact::lines`),
/// and after how many such rounds even a line that may end in the start of a secret is.
const QUIET_FLUSH: Duration = Duration::from_millis(100);
const MAX_QUIET_ROUNDS: u32 = 50;

/// Reads one output stream: captures it (bounded) for the result map and journals it line by
/// line, redacted over a window of lines so a secret split across lines is masked too.
async fn pump(
    pipe: impl AsyncRead + Unpin,
    stream: &'static str,
    journal: Arc<Journal>,
    step: Option<String>,
    quiet: bool,
    captured: Arc<Mutex<Captured>>,
) {
    let redactor = journal.redactor().clone();
    let emit = |lines: Vec<String>| {
        for line in lines {
            let output = Output {
                stream: stream.to_owned(),
                line,
                quiet,
                ..Output::default()
            };
            journal.record(step.as_deref(), Body::Output(output));
        }
    };
    let mut reader = BufReader::new(pipe);
    let mut window = LineWindow::default();
    let mut buffer = Vec::new();
    let mut quiet_rounds = 0;
    loop {
        let read = if window.has_pending() {
            match tokio::time::timeout(QUIET_FLUSH, reader.read_until(b'\n', &mut buffer)).await {
                Ok(read) => read,
                // Partly read bytes stay in `buffer` for the next call.
                Err(_quiet) => {
                    quiet_rounds += 1;
                    if quiet_rounds >= MAX_QUIET_ROUNDS {
                        emit(window.take_ready(&redactor, true));
                    } else {
                        emit(window.take_quiet(&redactor));
                    }
                    continue;
                }
            }
        } else {
            reader.read_until(b'\n', &mut buffer).await
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => quiet_rounds = 0,
        }
        let text = String::from_utf8_lossy(&buffer);
        {
            let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
            if captured.text.len() + text.len() <= MAX_CAPTURE {
                captured.text.push_str(&text);
            } else {
                captured.truncated = true;
            }
        }
        window.push(text.trim_end_matches(['\n', '\r']).to_owned());
        buffer.clear();
        // Release lines when no more output is waiting (one redaction per burst, not per
        // line), or when a long burst has piled up.
        if reader.buffer().is_empty() || window.pending_len() > MAX_HELD_BACK {
            emit(window.take_ready(&redactor, false));
        }
    }
    emit(window.take_ready(&redactor, true));
}
