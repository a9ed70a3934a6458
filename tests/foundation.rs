//! The foundation: exit codes, caret errors, steps, exec, env, redaction, dry-run, policy,
//! imports, engine limits, journal.

use crate::support::*;
use base64::Engine as _;
use std::time::{Duration, Instant};

#[test]
fn snippet_prints_its_value() {
    let out = Test::new().args(&["-e", "40 + 2"]).status(0);
    assert_eq!(out.stdout.trim(), "42");
}

#[test]
fn successful_script_exits_zero_and_journals_steps() {
    let out = Test::new()
        .script(
            r#"
            let r = step("greet", || exec::run("echo", ["hello", "world"]));
            print(r.stdout);
            "#,
        )
        .status(0);
    assert!(out.stdout.contains("hello world"), "{}", out.stdout);
    assert!(
        out.stderr.contains("[greet] hello world"),
        "output is prefixed by the step:\n{}",
        out.stderr
    );
    let events = out.journal();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_start"));
    assert_eq!(kinds.last(), Some(&"run_end"));
    let end = events.iter().find(|e| e["kind"] == "step_end").unwrap();
    assert_eq!(end["step"], "greet");
    assert_eq!(end["outcome"], "ok");
    assert!(end["duration_ms"].is_u64());
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1);
        assert!(event["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(event["run"], events[0]["run"]);
    }
    assert_eq!(events.last().unwrap()["exit_code"], 0);
}

#[test]
fn failed_check_exits_one_with_caret_and_step() {
    let out = Test::new()
        .script(
            r#"
            step("pre-flight", || {
                let x = 1;
                check(x == 2, "x must be 2");
            });
            "#,
        )
        .status(1);
    assert!(
        out.stderr.contains(
            "error: check failed: x must be 2\n --> script.rhai:3:5\n  |\n3 |     check(x == 2, \"x must be 2\");\n  |     ^\n  = step: pre-flight\n"
        ),
        "{}",
        out.stderr
    );
    let end = out
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "step_end")
        .unwrap();
    assert_eq!(end["outcome"], "failed");
    assert_eq!(end["error"], "check failed: x must be 2");
}

#[test]
fn syntax_error_exits_two_with_caret_at_line_and_column() {
    let out = Test::new().script("let a = 1;\nlet b = a +;\n").status(2);
    assert!(out.stderr.contains("error: syntax error"), "{}", out.stderr);
    assert!(
        out.stderr.contains(" --> script.rhai:2:12\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("2 | let b = a +;\n  |            ^\n"),
        "{}",
        out.stderr
    );
    assert!(
        !out.dir.join(".glow/runs").exists(),
        "nothing runs on a compile error"
    );
}

#[test]
fn runtime_error_in_a_step_points_at_the_call() {
    let out = Test::new()
        .script(
            r#"
            step("build", || {
                let items = [1, 2];
                let x = items[5];
            });
            "#,
        )
        .status(1);
    assert!(
        out.stderr.contains(" --> script.rhai:3:19"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("  = step: build"), "{}", out.stderr);
}

#[test]
fn missing_script_exits_two_naming_the_path() {
    let out = Test::new().arg("nope/missing.rhai").status(2);
    assert!(out.stderr.contains("nope/missing.rhai"), "{}", out.stderr);
}

#[test]
fn var_without_equals_is_a_usage_error() {
    let out = Test::new().args(&["-e", "1", "--var", "tag"]).status(2);
    assert!(out.stderr.contains("KEY=VALUE"), "{}", out.stderr);
}

#[test]
fn vars_are_read_and_a_missing_one_is_named() {
    let out = Test::new()
        .args(&[
            "-e",
            r#"vars::get("tag") + "/" + vars::get("env", "staging")"#,
            "--var",
            "tag=v1.2.3",
        ])
        .status(0);
    assert_eq!(out.stdout.trim(), "v1.2.3/staging");
    let out = Test::new().args(&["-e", r#"vars::get("tag")"#]).status(1);
    assert!(out.stderr.contains("missing var 'tag'"), "{}", out.stderr);
}

#[test]
fn program_not_on_path_is_named() {
    let out = Test::new()
        .args(&["-e", r#"exec::run("no-such-program-xyz", [])"#])
        .status(1);
    assert!(
        out.stderr
            .contains("program 'no-such-program-xyz' not found on PATH"),
        "{}",
        out.stderr
    );
}

#[test]
fn non_zero_exit_throws_with_stderr_tail_unless_check_false() {
    let out = Test::new()
        .args(&["-e", r#"exec::run("sh", ["-c", "echo boom >&2; exit 3"])"#])
        .status(1);
    assert!(out.stderr.contains("exited with code 3"), "{}", out.stderr);
    assert!(out.stderr.contains("boom"), "{}", out.stderr);
    let out = Test::new()
        .args(&[
            "-e",
            r#"exec::run("sh", ["-c", "exit 3"], #{ check: false }).code"#,
        ])
        .status(0);
    assert_eq!(out.stdout.trim(), "3");
}

#[test]
fn relative_program_paths_resolve_from_the_working_directory_not_cwd_option() {
    let out = Test::new()
        .file("tools/where.sh", "#!/bin/sh\npwd\n")
        .file("sub/.keep", "")
        .args(&["-e", r#"exec::run("sh", ["-c", "chmod +x tools/where.sh"]); exec::run("./tools/where.sh", [], #{ cwd: "sub" }).stdout"#])
        .status(0);
    assert!(out.stdout.trim().ends_with("/sub"), "{}", out.stdout);
}

#[test]
fn unknown_step_option_is_named() {
    let out = Test::new()
        .script(r#"step("a", #{ timout: "1s" }, || 1);"#)
        .status(1);
    assert!(
        out.stderr.contains("unknown option 'timout'"),
        "{}",
        out.stderr
    );
}

#[test]
fn policy_denies_a_program_before_spawning_it() {
    let (dir, out) = Test::new()
        .file("glow.toml", "[exec]\nallow = [\"echo\"]\n")
        .script(r#"step("deny", || exec::run("touch", ["created"]));"#)
        .expect(1);
    assert!(out.stderr.contains("not in [exec] allow"), "{}", out.stderr);
    assert!(
        !dir.path().join("created").exists(),
        "the denied program must not run"
    );
    let effect = out
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "effect")
        .unwrap();
    assert_eq!(effect["outcome"], "denied");
}

#[test]
fn policy_can_refuse_a_shell() {
    let (dir, out) = Test::new()
        .file("glow.toml", "[exec]\nshell = false\n")
        .script(r#"exec::sh("touch created");"#)
        .expect(1);
    assert!(
        out.stderr.contains("[exec] shell = false"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("created").exists());
}

#[test]
fn unknown_policy_key_is_a_config_error_naming_it() {
    let out = Test::new()
        .file("glow.toml", "[exec]\nallowed = []\n")
        .script("1")
        .status(2);
    assert!(out.stderr.contains("allowed"), "{}", out.stderr);
    assert!(out.stderr.contains("glow.toml"), "{}", out.stderr);
}

#[test]
fn dry_run_runs_read_only_exec_and_plans_the_rest() {
    let (dir, out) = Test::new()
        .script(
            r#"
            step("read", || exec::run("sh", ["-c", "echo seen > read.txt"], #{ read_only: true }));
            let r = step("write", || exec::run("touch", ["written.txt"]));
            print(`planned=${r.planned}`);
            let k = env::get("SOME_MISSING_VAR");
            "#,
        )
        .arg("--dry-run")
        .expect(0);
    assert!(
        dir.path().join("read.txt").exists(),
        "read_only commands run in a dry run"
    );
    assert!(
        !dir.path().join("written.txt").exists(),
        "other commands are only planned"
    );
    assert!(out.stdout.contains("planned=true"), "{}", out.stdout);
    assert!(
        out.stderr.contains("1. [write] exec run touch written.txt"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("env: SOME_MISSING_VAR"),
        "missing env is reported:\n{}",
        out.stderr
    );
    let events = out.journal();
    let plan = events.iter().find(|e| e["kind"] == "plan").unwrap();
    assert_eq!(plan["effects"].as_array().unwrap().len(), 1);
    assert_eq!(plan["effects"][0]["target"], "touch written.txt");
    assert_eq!(events[0]["mode"], "dry-run");
}

#[test]
fn missing_env_is_fatal_in_a_live_run_and_listed_together() {
    let out = Test::new()
        .args(&[
            "-e",
            r#"env::require(["GLOW_TEST_A", "GLOW_TEST_B", "PATH"])"#,
        ])
        .status(1);
    assert!(
        out.stderr.contains("GLOW_TEST_A, GLOW_TEST_B"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("PATH,"), "{}", out.stderr);
}

#[test]
fn env_file_values_reach_scripts_and_children() {
    let out = Test::new()
        .file("prod.env", "RELEASE_CHANNEL=stable\n")
        .args(&["-e", r#"env::get("RELEASE_CHANNEL") + ":" + exec::run("sh", ["-c", "printf %s $RELEASE_CHANNEL"]).stdout"#, "--env-file", "prod.env"])
        .status(0);
    assert_eq!(out.stdout.trim(), "stable:stable");
}

#[test]
fn secrets_are_redacted_in_plain_base64_and_percent_form() {
    let canary = "c4n4ry/S3cret+value";
    let b64 = base64::engine::general_purpose::STANDARD.encode(canary);
    let b64_newline = base64::engine::general_purpose::STANDARD.encode(format!("{canary}\n"));
    let pct = "c4n4ry%2FS3cret%2Bvalue";
    let out = Test::new()
        .script(&format!(
            r#"
            let s = env::secret("CANARY");
            print(s);
            log::info("token " + s);
            step("leak", || {{
                exec::run("sh", ["-c", "echo $CANARY; printf %s \"$CANARY\" | base64; echo $CANARY | base64; echo {pct}"]);
                print("{b64}");
                check(false, "bad " + s);
            }});
            "#
        ))
        .env("CANARY", canary)
        .status(1);
    let journal = out.journal_text();
    for (label, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("journal", &journal),
    ] {
        assert!(
            !text.contains(canary),
            "{label} has the plain secret:\n{text}"
        );
        assert!(
            !text.contains(&b64),
            "{label} has the base64 secret:\n{text}"
        );
        assert!(
            !text.contains(&b64_newline),
            "{label} has base64 of secret+newline:\n{text}"
        );
        assert!(
            !text.contains(pct),
            "{label} has the percent-encoded secret:\n{text}"
        );
    }
    assert!(out.stderr.contains("[redacted]"), "{}", out.stderr);
}

#[test]
fn json_format_prints_only_events_on_stdout() {
    let out = Test::new()
        .script(
            r#"
            step("one", || exec::run("echo", ["child output"]));
            print("script output");
            "#,
        )
        .args(&["--format", "json"])
        .status(0);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "output" && e["line"] == "child output")
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "output" && e["line"] == "script output")
    );
    assert_eq!(events.first().unwrap()["kind"], "run_start");
    assert_eq!(events.last().unwrap()["kind"], "run_end");
}

#[test]
fn continue_on_error_goes_on_and_rollbacks_run_newest_first() {
    let out = Test::new()
        .script(
            r#"
            step("soft", #{ continue_on_error: true }, || { throw "flaky"; });
            step("first", #{ rollback: || print("undo first") }, || print("do first"));
            step("second", #{ rollback: || print("undo second") }, || print("do second"));
            step("third", || { throw "deploy failed"; });
            "#,
        )
        .status(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["do first", "do second", "undo second", "undo first"],
        "{}",
        out.stderr
    );
    let events = out.journal();
    let rollback_steps: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "step_end" && e["rollback_of"].is_string())
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(rollback_steps, ["rollback: second", "rollback: first"]);
}

#[test]
fn rollback_closures_can_call_imported_modules() {
    let out = Test::new()
        .file("lib/undo.rhai", "fn it() { print(\"undone\"); }\n")
        .script(
            r#"
            import "lib/undo" as undo;
            step("deploy", #{ rollback: || undo::it() }, || print("deployed"));
            step("verify", || { throw "broken"; });
            "#,
        )
        .status(1);
    assert_eq!(out.stdout, "deployed\nundone\n", "{}", out.stderr);
    let events = out.journal();
    let rollback = events
        .iter()
        .find(|e| e["kind"] == "step_end" && e["step"] == "rollback: deploy")
        .unwrap();
    assert_eq!(rollback["outcome"], "ok");
}

#[test]
fn from_and_only_select_top_level_steps() {
    let script = r#"
        step("a", || print("a"));
        step("b", || print("b"));
        step("c", || print("c"));
    "#;
    let out = Test::new().script(script).args(&["--from", "b"]).status(0);
    assert_eq!(out.stdout, "b\nc\n");
    let out = Test::new().script(script).args(&["--only", "b"]).status(0);
    assert_eq!(out.stdout, "b\n");
    let out = Test::new()
        .script(script)
        .args(&["--only", "deploy"])
        .status(1);
    assert!(
        out.stderr.contains("no top-level step named 'deploy'"),
        "{}",
        out.stderr
    );
}

#[test]
fn stdlib_and_relative_imports_work_and_escapes_are_refused() {
    let out = Test::new()
        .file("scripts/lib/helpers.rhai", "fn twice(x) { x * 2 }\n")
        .file(
            "scripts/main.rhai",
            r#"
            import "glow/git" as git;
            import "lib/helpers" as h;
            print(h::twice(21));
            print(git::current_branch());
            "#,
        )
        .file("init.sh", "git init -q -b release/v1 . && git -c user.email=t@e -c user.name=t commit -q --allow-empty -m init\n")
        .arg("scripts/main.rhai")
        .timeout(Duration::from_secs(60));
    let init = std::process::Command::new("sh")
        .arg("init.sh")
        .current_dir(out.path())
        .status()
        .unwrap();
    assert!(init.success());
    let out = out.status(0);
    assert_eq!(out.stdout, "42\nrelease/v1\n", "{}", out.stderr);

    let out = Test::new()
        .file("outside.rhai", "fn x() { 1 }\n")
        .file(
            "scripts/main.rhai",
            "import \"../outside\" as o;\nprint(o::x());\n",
        )
        .arg("scripts/main.rhai")
        .status(2);
    assert!(
        out.stderr.contains("import \"../outside\" refused"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("outside the script's directory"),
        "{}",
        out.stderr
    );

    let out = Test::new()
        .file("scripts/main.rhai", "import \"/etc/passwd\" as p;\n")
        .arg("scripts/main.rhai")
        .status(2);
    assert!(
        out.stderr.contains("absolute paths are not allowed"),
        "{}",
        out.stderr
    );
}

#[test]
fn infinite_loop_stops_at_the_operation_limit() {
    let out = Test::new()
        .file("glow.toml", "[limits]\nmax_operations = 2_000_000\n")
        .script("let n = 0;\nloop { n += 1; }\n")
        .status(1);
    assert!(
        out.stderr.contains("operation limit exceeded"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("2000000 operations"), "{}", out.stderr);
}

#[test]
fn endless_array_stops_at_the_memory_cap_and_the_host_reports_it() {
    let out = Test::new()
        .file("glow.toml", "[limits]\nmemory = \"48MiB\"\n")
        .script("let a = [];\nloop { a.push(\"some text to keep\"); }\n")
        .status(1);
    assert!(
        out.stderr.contains("memory limit exceeded"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("48.0 MiB"), "{}", out.stderr);
    // The host lived on: it wrote the end of the run.
    let end = out.journal().into_iter().last().unwrap();
    assert_eq!(end["kind"], "run_end");
    assert_eq!(end["exit_code"], 1);
}

#[test]
fn endless_string_stops_at_the_memory_cap() {
    let out = Test::new()
        .script("let s = \"x\";\nloop { s += s; }\n")
        .status(1);
    assert!(
        out.stderr.contains("memory limit exceeded"),
        "{}",
        out.stderr
    );
}

/// Pids of every process in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // fields: state ppid pgrp ...
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
        {
            members.push(pid);
        }
    }
    members
}

fn wait_for_file(path: &std::path::Path) -> String {
    eventually(&path.display().to_string(), Duration::from_secs(20), || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|text| text.ends_with('\n'))
    })
}

#[test]
fn sigint_kills_the_whole_process_group_and_exits_130() {
    let test = Test::new().script(
        r#"step("long", || exec::run("sh", ["-c", "echo $$ > pgid; sleep 100 & sleep 100"]));"#,
    );
    let mut child = test
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pgid: i32 = wait_for_file(&test.path().join("pgid"))
        .trim()
        .parse()
        .unwrap();
    eventually("both sleeps run", Duration::from_secs(10), || {
        (group_members(pgid).len() >= 2).then_some(())
    });
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = wait_with_timeout_child(&mut child, Duration::from_secs(10));
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(output, Some(130));
    assert!(
        group_members(pgid).is_empty(),
        "left alive: {:?}",
        group_members(pgid)
    );
    let journal = std::fs::read_dir(test.path().join(".glow/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(journal.join("journal.jsonl")).unwrap();
    assert!(text.contains("\"outcome\":\"interrupted\""), "{text}");
}

fn wait_with_timeout_child(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let status = poll(timeout, || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
    }
    status.and_then(|s| s.code())
}

#[test]
fn step_timeout_kills_a_child_that_ignores_sigterm() {
    let started = Instant::now();
    let (dir, out) = Test::new()
        .script(
            r#"
            step("stubborn", #{ timeout: "1s" }, || {
                exec::run("sh", ["-c", "trap '' TERM; echo $$ > pgid; sleep 100; sleep 100"]);
            });
            "#,
        )
        .expect(1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("step 'stubborn' timed out after 1s"),
        "{}",
        out.stderr
    );
    let pgid: i32 = std::fs::read_to_string(dir.path().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        group_members(pgid).is_empty(),
        "left alive: {:?}",
        group_members(pgid)
    );
}

#[test]
fn exec_timeout_is_an_error_naming_the_command() {
    let out = Test::new()
        .args(&["-e", r#"exec::run("sleep", ["30"], #{ timeout: "300ms" })"#])
        .status(1);
    assert!(
        out.stderr.contains("`sleep 30` timed out after 300ms"),
        "{}",
        out.stderr
    );
}

#[test]
fn journal_stays_parseable_after_sigkill() {
    let test = Test::new().script(
        r#"
        step("noisy", || {
            for i in 0..200 { log::info(`line ${i} with "quotes" and \\ backslashes`); }
            exec::run("sh", ["-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo out $i; done; touch ready; sleep 100"]);
        });
        "#,
    );
    let mut child = test
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = test.path().join(".glow/runs");
    let journal = || {
        let run = std::fs::read_dir(&runs).ok()?.next()?.ok()?.path();
        std::fs::read_to_string(run.join("journal.jsonl")).ok()
    };
    // The child's last line reaches the journal while the host still runs; then kill it.
    eventually(
        "the child's output is journaled",
        Duration::from_secs(20),
        || journal().filter(|text| text.contains("\"line\":\"out 10\"")),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let text = journal().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 200, "{} lines", lines.len());
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(
        text.contains("\"line\":\"out 10\""),
        "child output is journaled as it arrives"
    );
    // Kill the sleep left behind by the SIGKILLed host.
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 100"])
        .status();
}

#[test]
fn time_and_json_helpers() {
    let out = Test::new()
        .args(&[
            "-e",
            r#"
            let m = json::parse(`{"a": [1, 2, {"b": true}], "s": "x"}`);
            let old = time::parse("2020-01-01T00:00:00Z");
            let age = time::age("2020-01-01T00:00:00Z");
            [json::stringify(m), old < time::now(), age.days > 365.0, old.to_string()]
            "#,
        ])
        .status(0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(value[0], r#"{"a":[1,2,{"b":true}],"s":"x"}"#);
    assert_eq!(value[1], true);
    assert_eq!(value[2], true);
    assert_eq!(value[3], "2020-01-01T00:00:00Z");
}

#[test]
fn fs_reads_and_globs() {
    let out = Test::new()
        .file("m/2_b.sql", "b")
        .file("m/1_a.sql", "a")
        .args(&[
            "-e",
            r#"let files = fs::glob("m/*.sql"); [files, fs::read(files[0]), fs::exists("m/none")]"#,
        ])
        .status(0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!([["m/1_a.sql", "m/2_b.sql"], "a\n", false])
    );
}

#[test]
fn check_reports_unknown_namespace_functions_and_duplicate_steps() {
    let out = Test::new()
        .file(
            "bad.rhai",
            "step(\"a\", || exec::runn(\"x\", []));\nstep(\"a\", || 1);\n",
        )
        .args(&["check", "bad.rhai"])
        .status(2);
    assert!(
        out.stderr
            .contains("unknown function exec::runn; did you mean exec::run?"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("duplicate step name \"a\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("bad.rhai:2:6"), "{}", out.stderr);
    Test::new()
        .file("good.rhai", "step(\"a\", || exec::run(\"x\", []));\n")
        .args(&["check", "good.rhai"])
        .status(0);
}
