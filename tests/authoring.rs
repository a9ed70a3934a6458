//! Authoring (issue 7): hot reload (`--watch`), editor definitions (`defs`), `check` lints.
//!
//! Watch tests run the real binary on real files in a temp dir, read its output line by line
//! from a thread, edit the files the way editors do, and kill the watcher at the end.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: a loaded CI machine must not make these flaky.
const WAIT: Duration = Duration::from_secs(20);

/// A running `glow-run --watch` with its output collected line by line (stdout and stderr).
struct Watching {
    test: Test,
    child: Child,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Watching {
    fn start(test: Test, args: &[&str]) -> Self {
        let mut command = test.command();
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn glow-run --watch");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let seen = seen.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    seen.lock().unwrap().push(line);
                }
            });
        }
        Self { test, child, seen }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.test.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), unindent(text)).unwrap();
    }

    fn transcript(&self) -> String {
        self.seen.lock().unwrap().join("\n")
    }

    /// Waits until some line (stdout or stderr, in any order: the two pipes interleave freely)
    /// contains `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let found = poll(WAIT, || {
            let seen = self.seen.lock().unwrap();
            seen.iter().find(|line| line.contains(needle)).cloned()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no line containing {needle:?} within {WAIT:?}\n--- output ---\n{}",
                self.transcript()
            )
        })
    }

    /// How many lines so far contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGINT and waits for the exit status.
    fn interrupt(&mut self) -> i32 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = poll(WAIT, || self.child.try_wait().unwrap());
        let status = status
            .unwrap_or_else(|| panic!("watch did not exit after SIGINT\n{}", self.transcript()));
        status.code().unwrap_or(-1)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a file that a child writes its pid into.
fn read_pid(path: &Path) -> i32 {
    eventually(&format!("a pid in {}", path.display()), WAIT, || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
}

fn wait_gone(pid: i32) -> bool {
    poll(Duration::from_secs(10), || {
        (!process_alive(pid)).then_some(())
    })
    .is_some()
}

/// A step whose child writes its pid to `file` and sleeps for 100 s (read-only, so it really
/// runs in watch mode's dry run).
fn sleeper(file: &str) -> String {
    format!(
        r#"step("wait", || {{ exec::run("sh", ["-c", "echo $$ > {file}; exec sleep 100"], #{{ read_only: true }}); }});"#
    )
}

#[test]
fn watch_reruns_the_script_after_an_edit_within_two_seconds() {
    let mut w = Watching::start(Test::new().script(r#"print("version one");"#), &["--watch"]);
    w.wait_for("version one");
    w.wait_for("run 1 ended");
    let edited = Instant::now();
    w.write("script.rhai", r#"print("version two");"#);
    w.wait_for("version two");
    let took = edited.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "rerun took {took:?}\n{}",
        w.transcript()
    );
    let reload = w.transcript();
    assert!(
        reload.contains("↻ script.rhai changed · recompiled in"),
        "{reload}"
    );
    assert!(reload.contains("▶ run 2 started (dry-run)"), "{reload}");
}

#[test]
fn watch_shows_a_broken_edit_with_its_caret_and_does_not_rerun_until_fixed() {
    let mut w = Watching::start(Test::new().script(r#"print("good one");"#), &["--watch"]);
    w.wait_for("good one");
    w.wait_for("run 1 ended");
    w.write("script.rhai", "print(\"broken\";\n");
    w.wait_for("does not compile");
    w.wait_for("--> script.rhai:1:");
    w.wait_for("1 | print(\"broken\";");
    w.wait_for("^");
    // Events are handled in order: had the broken edit rerun the last good version, its output
    // would stand before the fixed version's.
    w.write("script.rhai", r#"print("fixed one");"#);
    w.wait_for("fixed one");
    w.wait_for("run 2 ended");
    assert_eq!(
        w.count("good one"),
        1,
        "the previous version was rerun\n{}",
        w.transcript()
    );
    assert_eq!(
        w.count("broken"),
        1,
        "only the source line may show it\n{}",
        w.transcript()
    );
    assert_eq!(w.count("run 2 started"), 1, "{}", w.transcript());
    assert_eq!(w.count("run 3 started"), 0, "{}", w.transcript());
}

#[test]
fn watch_edit_during_a_step_kills_its_child_and_restarts() {
    let test = Test::new().script(&format!("print(\"first\");\n{}\n", sleeper("pid")));
    let mut w = Watching::start(test, &["--watch"]);
    w.wait_for("first");
    let pid = read_pid(&w.path("pid"));
    assert!(process_alive(pid), "the child should be sleeping");
    w.write("script.rhai", r#"print("second");"#);
    w.wait_for("second");
    assert!(
        wait_gone(pid),
        "child {pid} survived the reload\n{}",
        w.transcript()
    );
    let out = w.transcript();
    assert!(out.contains("run 1 cancelled for the reload"), "{out}");
    assert!(out.contains("▶ run 2 started"), "{out}");
}

#[test]
fn watch_reruns_when_an_imported_module_changes() {
    let test = Test::new()
        .file("lib/names.rhai", r#"fn name() { "module v1" }"#)
        .script(
            r#"
        import "lib/names" as names;
        print(names::name());
        "#,
        );
    let mut w = Watching::start(test, &["--watch"]);
    w.wait_for("module v1");
    w.wait_for("run 1 ended");
    w.write("lib/names.rhai", r#"fn name() { "module v2" }"#);
    w.wait_for("module v2");
    assert!(
        w.transcript().contains("lib/names.rhai changed"),
        "{}",
        w.transcript()
    );
}

#[test]
fn watch_follows_a_new_import() {
    let mut w = Watching::start(Test::new().script(r#"print("no import");"#), &["--watch"]);
    w.wait_for("run 1 ended");
    w.write("extra.rhai", r#"fn word() { "extra v1" }"#);
    w.write(
        "script.rhai",
        "import \"extra\" as extra;\nprint(extra::word());\n",
    );
    w.wait_for("extra v1");
    w.wait_for("run 2 ended");
    w.write("extra.rhai", r#"fn word() { "extra v2" }"#);
    w.wait_for("extra v2");
}

#[test]
fn watch_sees_rename_over_and_delete_recreate_saves() {
    let mut w = Watching::start(Test::new().script(r#"print("saved 1");"#), &["--watch"]);
    w.wait_for("saved 1");
    w.wait_for("run 1 ended");
    // Write a temp file and rename it over the script (vim, VS Code, IntelliJ "safe write").
    w.write(".script.rhai.tmp", r#"print("saved 2");"#);
    std::fs::rename(w.path(".script.rhai.tmp"), w.path("script.rhai")).unwrap();
    w.wait_for("saved 2");
    w.wait_for("run 2 ended");
    // Delete and recreate.
    std::fs::remove_file(w.path("script.rhai")).unwrap();
    w.wait_for("script.rhai is missing; waiting for it");
    w.write("script.rhai", r#"print("saved 3");"#);
    w.wait_for("saved 3");
    // Wait on stderr's own line: stdout's "saved 3" may be read before stderr's "run 3 started".
    w.wait_for("run 3 ended");
    // The temp file itself never triggers a run of its own.
    assert_eq!(w.count("started"), 3, "{}", w.transcript());
}

#[test]
fn watch_performs_no_live_effects_without_live() {
    let test = Test::new().script(
        r#"
        exec::run("touch", ["marker"]);
        print("after touch");
        "#,
    );
    let mut w = Watching::start(test, &["--watch"]);
    w.wait_for("after touch");
    w.wait_for("run 1 ended");
    w.write(
        "script.rhai",
        "exec::run(\"touch\", [\"marker\"]);\nprint(\"after touch again\");\n",
    );
    w.wait_for("after touch again");
    w.wait_for("run 2 ended");
    assert!(
        !w.path("marker").exists(),
        "a watch without --live touched the file"
    );
    assert!(
        w.transcript().contains("○ planned: exec run touch marker"),
        "{}",
        w.transcript()
    );
}

#[test]
fn watch_live_without_a_terminal_or_yes_is_refused() {
    let test = Test::new()
        .script(r#"exec::run("touch", ["marker"]);"#)
        .args(&["--watch", "--live"]);
    let mut command = test.command();
    // A new session has no controlling terminal: /dev/tty cannot be opened.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = wait_with_timeout(command.spawn().unwrap(), WAIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pass --yes to confirm"), "{stderr}");
    assert!(!test.path().join("marker").exists());
}

#[test]
fn watch_live_with_yes_performs_effects() {
    let test = Test::new().script("exec::run(\"touch\", [\"marker\"]);\nprint(\"touched\");\n");
    let mut w = Watching::start(test, &["--watch", "--live", "--yes"]);
    w.wait_for("touched");
    w.wait_for("run 1 ended");
    assert!(w.path("marker").exists(), "{}", w.transcript());
    assert!(
        w.transcript().contains("run 1 started (live)"),
        "{}",
        w.transcript()
    );
}

#[test]
fn watch_interrupt_exits_130_and_leaves_no_child() {
    let test = Test::new().script(&format!("print(\"sleeping\");\n{}\n", sleeper("pid")));
    let mut w = Watching::start(test, &["--watch"]);
    w.wait_for("sleeping");
    let pid = read_pid(&w.path("pid"));
    assert!(process_alive(pid));
    assert_eq!(w.interrupt(), 130, "{}", w.transcript());
    assert!(
        wait_gone(pid),
        "child {pid} outlived watch mode\n{}",
        w.transcript()
    );
}

#[test]
fn watch_json_format_reports_run_starts_on_stdout() {
    let test = Test::new().script(r#"print("json one");"#);
    let mut w = Watching::start(test, &["--watch", "--format", "json"]);
    let line = w.wait_for(r#""event":"run_started""#);
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON watch event");
    assert_eq!(event["kind"], "watch");
    assert_eq!(event["generation"], 1);
    assert!(event["time"].is_string());
}

// ---- defs ----

/// Turns a definition file into Rhai that must compile: `fn f(a: T) -> R;` becomes
/// `fn f(a) {}`; `module`, `op`, getter/setter and `const` declarations are checked by shape.
fn definitions_as_rhai(name: &str, text: &str) -> String {
    let mut out = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("//") || line == "}" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("module ") {
            assert!(
                rest.ends_with(';') || rest.ends_with('{'),
                "{name}: bad module line {line:?}"
            );
            continue;
        }
        if line.starts_with("op ")
            || line.starts_with("fn get ")
            || line.starts_with("fn set ")
            || line.starts_with("const ")
        {
            assert!(line.ends_with(';'), "{name}: bad declaration {line:?}");
            continue;
        }
        let rest = line
            .strip_prefix("fn ")
            .unwrap_or_else(|| panic!("{name}: unexpected line {line:?}"));
        let (fn_name, rest) = rest
            .split_once('(')
            .unwrap_or_else(|| panic!("{name}: bad fn {line:?}"));
        let (params, ret) = rest
            .rsplit_once(") -> ")
            .unwrap_or_else(|| panic!("{name}: no return type in {line:?}"));
        assert!(ret.ends_with(';'), "{name}: bad return in {line:?}");
        let params: Vec<&str> = params
            .split(',')
            .map(|p| p.split(':').next().unwrap().trim())
            .filter(|p| !p.is_empty())
            .collect();
        if seen.insert((fn_name.to_owned(), params.len())) {
            out.push_str(&format!("fn {fn_name}({}) {{}}\n", params.join(", ")));
        }
    }
    out
}

#[test]
fn defs_writes_documented_definitions_for_every_namespace_and_the_stdlib() {
    let (dir, _) = Test::new().args(&["defs", "--out", "defs"]).expect(0);
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join("defs").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let expected: &[(&str, &[&str])] = &[
        ("exec.d.rhai", &["run", "sh"]),
        ("env.d.rhai", &["get", "require", "secret"]),
        ("fs.d.rhai", &["read", "exists", "glob"]),
        ("json.d.rhai", &["parse", "stringify"]),
        ("time.d.rhai", &["now", "parse", "age"]),
        ("log.d.rhai", &["info", "warn", "error"]),
        ("vars.d.rhai", &["get", "all"]),
        ("__static__.d.rhai", &["step", "check"]),
    ];
    for (file, functions) in expected {
        let text = read(file);
        for function in *functions {
            assert!(
                text.contains(&format!("fn {function}(")),
                "{file} lacks {function}\n{text}"
            );
        }
    }
    assert!(
        read("exec.d.rhai").contains("/// Runs a program with arguments (argv, never a shell)")
    );
    assert!(read("__static__.d.rhai").contains("/// Runs `body` as a named step"));
    let git = read("glow-git.d.rhai");
    assert!(git.contains("module \"glow/git\";"), "{git}");
    assert!(
        git.contains("/// The full SHA of HEAD.\nfn head_sha() -> ?;"),
        "{git}"
    );
    assert!(git.contains("//! Git helpers"), "{git}");

    let engine = rhai::Engine::new();
    for entry in std::fs::read_dir(dir.path().join("defs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("module ") || text.starts_with("//!"),
            "{name} has no module header"
        );
        if name.starts_with("__builtin") {
            continue;
        }
        // Every glow-run function carries its doc comment.
        if !name.starts_with("__") {
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.starts_with("fn ") {
                    assert!(
                        i > 0 && lines[i - 1].starts_with("///"),
                        "{name}: {line} has no doc comment"
                    );
                }
            }
        }
        let rhai = definitions_as_rhai(&name, &text);
        if let Err(error) = engine.compile(&rhai) {
            panic!("{name} does not parse as Rhai ({error}):\n{rhai}");
        }
    }
}

#[test]
fn defs_without_out_prints_one_file() {
    let out = Test::new().arg("defs").status(0);
    assert!(out.stdout.starts_with("module static;"), "{}", out.stdout);
    assert!(out.stdout.contains("module exec {"), "{}", out.stdout);
    assert!(
        out.stdout.contains("module \"glow/git\" {"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("fn step(name: String, body: Fn) -> ?;"),
        "{}",
        out.stdout
    );
    definitions_as_rhai("stdout", &out.stdout);
}

// ---- check ----

#[test]
fn check_finds_unknown_functions_duplicate_steps_and_steps_without_closures() {
    let out = Test::new()
        .file(
            "script.rhai",
            r#"
            step("build", || { exec::runn("true", []); });
            step("build", || 1);
            step("bare");
            step("called", do_it());
            step("options only", #{ timeout: "1m" });
            step("fine", #{ timeout: "1m" }, || 2);
            fn do_it() { 1 }
            "#,
        )
        .args(&["check", "script.rhai"])
        .status(2);
    let expected = unindent(
        r#"
        error: unknown function exec::runn; did you mean exec::run?
         --> script.rhai:1:26
          |
        1 | step("build", || { exec::runn("true", []); });
          |                          ^
        error: duplicate step name "build" (first used on line 1); resume and --from match steps by name
         --> script.rhai:2:6
          |
        2 | step("build", || 1);
          |      ^
        error: step "bare" has no body; write step("name", || { ... })
         --> script.rhai:3:1
          |
        3 | step("bare");
          | ^
        error: the last argument of step "called" is a call, not a closure: it runs before the step starts; write step("name", || { ... })
         --> script.rhai:4:16
          |
        4 | step("called", do_it());
          |                ^
        error: the last argument of step "options only" is a value, not a closure; write step("name", || { ... })
         --> script.rhai:5:22
          |
        5 | step("options only", #{ timeout: "1m" });
          |                      ^
        error: check found 5 problem(s)
        "#,
    );
    assert_eq!(out.stderr, expected.trim_end().to_owned() + "\n");
}

#[test]
fn check_finds_prompts_sharing_an_id() {
    let out = Test::new()
        .file(
            "script.rhai",
            r#"
            let a = prompt::confirm("Deploy now?");
            let b = prompt::confirm("deploy NOW?");
            let c = prompt::input("Release tag", #{ id: "deploy_now_" });
            let d = prompt::input("Other tag", #{ id: "other" });
            prompt::approve("qa");
            prompt::approve("qa");
            "#,
        )
        .args(&["check", "script.rhai"])
        .status(2);
    for (line, column, id) in [
        (2, 17, "deploy_now_"),
        (3, 17, "deploy_now_"),
        (6, 9, "approve_qa"),
    ] {
        let message = format!("error: prompt id \"{id}\" is already used");
        let at = format!("--> script.rhai:{line}:{column}");
        let found = out
            .stderr
            .lines()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0].starts_with(&message) && w[1].trim() == at);
        assert!(found, "no {message} at {at}\n{}", out.stderr);
    }
    assert!(
        !out.stderr.contains("\"other\" is already used"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_lints_imported_modules_too() {
    let out = Test::new()
        .file(
            "lib/deploy.rhai",
            "fn deploy() {\n    step(\"build\", || 1);\n    exec::shh(\"make\");\n}\n",
        )
        .file(
            "script.rhai",
            r#"
            import "lib/deploy" as deploy;
            step("build", || deploy::deploy());
            "#,
        )
        .args(&["check", "script.rhai"])
        .status(2);
    assert!(
        out.stderr
            .contains("error: duplicate step name \"build\" (first used on script.rhai:2)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--> lib/deploy.rhai:2:10"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "error: unknown function exec::shh; did you mean exec::sh?\n --> lib/deploy.rhai:3:11"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn check_passes_a_clean_script() {
    let out = Test::new()
        .file("lib/util.rhai", "fn greet(name) { `hello ${name}` }\n")
        .file(
            "script.rhai",
            r#"
            import "lib/util" as util;
            import "glow/git" as git;
            let body = || { exec::run("true", [], #{ read_only: true }) };
            step("one", || { log::info(util::greet("x")); });
            step("two", #{ timeout: "1m" }, |x| x);
            step("three", body);
            step("four", Fn("helper"));
            fn helper() { 1 }
            "#,
        )
        .args(&["check", "script.rhai"])
        .status(0);
    assert!(
        out.stderr.contains("check: 1 script(s) ok"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_reports_a_syntax_error_with_its_caret() {
    let out = Test::new()
        .file("script.rhai", "step(\"a\", || 1;\n")
        .args(&["check", "script.rhai"])
        .status(2);
    assert!(
        out.stderr.contains("error: syntax error:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(" --> script.rhai:1:15\n  |\n1 | step(\"a\", || 1;\n  |               ^\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn watch_reruns_when_glow_toml_or_the_env_file_changes() {
    let test = Test::new()
        .file("glow.toml", "[exec]\nshell = false\n")
        .file("config/dev.env", "GREETING=hello_one\n")
        .script(r#"print(env::get("GREETING"));"#);
    let mut w = Watching::start(test, &["--watch", "--env-file", "config/dev.env"]);
    w.wait_for("hello_one");
    w.wait_for("run 1 ended");
    w.write("config/dev.env", "GREETING=hello_two\n");
    w.wait_for("hello_two");
    w.wait_for("run 2 ended");
    w.write("glow.toml", "[exec]\nshell = true\n");
    w.wait_for("glow.toml changed");
    w.wait_for("run 3 ended");
    // A broken glow.toml is reported like a broken script: the last good run stands.
    w.write("glow.toml", "[exec\n");
    w.wait_for("invalid configuration");
    // The next run is the one the fixed glow.toml starts, not one of the broken file.
    w.write("glow.toml", "[exec]\nshell = false\n");
    w.wait_for("run 4 ended");
    let transcript = w.transcript();
    let broken = transcript.find("invalid configuration").unwrap();
    let fourth = transcript.find("run 4 started").unwrap();
    assert!(broken < fourth, "{transcript}");
    assert_eq!(w.count("run 5 started"), 0, "{transcript}");
}

#[test]
fn watch_live_asks_once_on_the_terminal() {
    use expectrl::Expect;
    let test = Test::new()
        .script("exec::run(\"touch\", [\"marker\"]);\nprint(\"touched live\");\n")
        .args(&["--watch", "--live"]);
    let mut session = expectrl::Session::spawn(test.command()).expect("spawn in a pty");
    session.set_expect_timeout(Some(WAIT));
    session
        .expect("Continue?")
        .expect("the confirmation prompt");
    assert!(
        !test.path().join("marker").exists(),
        "nothing runs before the answer"
    );
    session.send("y").unwrap();
    session.expect("run 1 started (live)").expect("a live run");
    session.expect("touched live").expect("the script's output");
    let pid = session.get_process().pid().as_raw();
    assert!(test.path().join("marker").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    session
        .expect("interrupted; stopped")
        .expect("watch ends on Ctrl-C");
}
