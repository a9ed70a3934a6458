//! `prompt`: at a real pseudo-terminal (expectrl spawns the real binary with a pty as its
//! controlling terminal), and without any terminal (the child is put in a new session with
//! `setsid`, so `/dev/tty` cannot open): answers from `--answers`, `GLOW_ANSWER_*`, `--yes`,
//! fail-fast when unanswered, approvals and the `distinct_from_initiator` policy.

use crate::support::*;
use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession as Session;
use expectrl::{Eof, Expect};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PTY_TIMEOUT: Duration = Duration::from_secs(30);

// --- without a terminal ----------------------------------------------------------------------

/// Runs glow-run with stdin closed and no controlling terminal (a new session).
fn detached(test: &Test) -> (Finished, Duration) {
    let mut command = test.command();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let started = Instant::now();
    let child = command.spawn().expect("spawn glow-run");
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let elapsed = started.elapsed();
    let finished = Finished {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        dir: test.path().to_owned(),
        keep: None,
    };
    (finished, elapsed)
}

fn detached_status(test: &Test, expected: i32) -> Finished {
    let (finished, _) = detached(test);
    assert_eq!(
        finished.status, expected,
        "exit status\n--- stdout ---\n{}\n--- stderr ---\n{}",
        finished.stdout, finished.stderr
    );
    finished
}

fn prompt_events(finished: &Finished) -> Vec<Value> {
    finished
        .journal()
        .into_iter()
        .filter(|e| e["kind"] == "prompt")
        .collect()
}

const FOUR_PROMPTS: &str = r#"
    step("ask", || {
        let ok = prompt::confirm("Deploy to production?");
        let tag = prompt::input("Release tag?", #{ pattern: "v[0-9]+\\.[0-9]+\\.[0-9]+" });
        let env = prompt::select("Which environment?", ["staging", "production"]);
        let who = prompt::approve("security");
        print(`go=${ok} tag=${tag} env=${env} approver=${who.approver}`);
    });
"#;

#[test]
fn no_terminal_and_no_answer_fails_at_once_naming_the_prompt() {
    let test = Test::new().script(
        r#"
        step("gate", || {
            if prompt::confirm("Deploy to production?") { print("deployed"); }
        });
        "#,
    );
    let (finished, elapsed) = detached(&test);
    assert_eq!(finished.status, 1, "stderr: {}", finished.stderr);
    assert!(
        elapsed < Duration::from_secs(10),
        "took {elapsed:?}: it must not wait for an answer"
    );
    let run_end = finished
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "run_end")
        .unwrap();
    assert!(run_end["duration_ms"].as_u64().unwrap() < 1000, "{run_end}");
    assert!(
        !finished.stdout.contains("deployed"),
        "never assume yes: {}",
        finished.stdout
    );
    for needle in [
        "deploy_to_production",
        "--answers FILE",
        "GLOW_ANSWER_DEPLOY_TO_PRODUCTION",
        "--yes",
    ] {
        assert!(
            finished.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            finished.stderr
        );
    }
}

#[test]
fn unanswered_input_and_approval_fail_too_and_say_yes_does_not_answer_them() {
    let test = Test::new().script(r#"prompt::input("Release tag?");"#);
    let finished = detached_status(&test, 1);
    assert!(
        finished.stderr.contains("release_tag"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("GLOW_ANSWER_RELEASE_TAG"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("confirms only"),
        "{}",
        finished.stderr
    );
}

#[test]
fn answers_file_in_toml_answers_every_kind_of_prompt() {
    let test = Test::new()
        .file(
            "answers.toml",
            r#"
            deploy_to_production = true
            release_tag = "v1.4.0"
            which_environment = "production"
            approve_security = "sam@example.com"
            "#,
        )
        .script(FOUR_PROMPTS)
        .args(&["--answers", "answers.toml"]);
    let finished = detached_status(&test, 0);
    assert!(
        finished
            .stdout
            .contains("go=true tag=v1.4.0 env=production approver=sam@example.com"),
        "{}",
        finished.stdout
    );
    let prompts = prompt_events(&finished);
    assert_eq!(prompts.len(), 4, "{prompts:?}");
    assert!(
        prompts.iter().all(|p| p["source"] == "answers-file"),
        "{prompts:?}"
    );
    let ids: Vec<&str> = prompts.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "deploy_to_production_",
            "release_tag_",
            "which_environment_",
            "approve_security"
        ]
    );
}

#[test]
fn answers_file_in_json_answers_too_and_a_bad_answer_is_an_error() {
    let test = Test::new()
        .file(
            "answers.json",
            r#"{ "deploy_to_production": "no", "release_tag": "v2.0.0",
                 "which_environment": 0, "approve_security": "lee@example.com" }"#,
        )
        .script(FOUR_PROMPTS)
        .args(&["--answers", "answers.json"]);
    let finished = detached_status(&test, 0);
    assert!(
        finished
            .stdout
            .contains("go=false tag=v2.0.0 env=staging approver=lee@example.com"),
        "{}",
        finished.stdout
    );

    // An answer that does not match the input's pattern fails; it is not taken.
    let test = Test::new()
        .file(
            "answers.json",
            r#"{ "deploy_to_production": true, "release_tag": "latest" }"#,
        )
        .script(FOUR_PROMPTS)
        .args(&["--answers", "answers.json"]);
    let finished = detached_status(&test, 1);
    assert!(
        finished.stderr.contains("release_tag") && finished.stderr.contains("pattern"),
        "{}",
        finished.stderr
    );

    // A malformed answers file is a configuration error before anything runs.
    let test = Test::new()
        .file("answers.json", "{ nope")
        .script(FOUR_PROMPTS)
        .args(&["--answers", "answers.json"]);
    let finished = detached_status(&test, 2);
    assert!(
        finished.stderr.contains("answers.json"),
        "{}",
        finished.stderr
    );
}

#[test]
fn environment_variables_answer_prompts_by_id() {
    let test = Test::new()
        .script(FOUR_PROMPTS)
        .env("GLOW_ANSWER_DEPLOY_TO_PRODUCTION", "yes")
        .env("GLOW_ANSWER_RELEASE_TAG", "v3.1.4")
        .env("GLOW_ANSWER_WHICH_ENVIRONMENT", "staging")
        .env("GLOW_ANSWER_APPROVE_SECURITY", "true")
        .env("GLOW_APPROVER", "ops-bot@example.com");
    let finished = detached_status(&test, 0);
    assert!(
        finished
            .stdout
            .contains("go=true tag=v3.1.4 env=staging approver=ops-bot@example.com"),
        "{}",
        finished.stdout
    );
    assert!(
        prompt_events(&finished)
            .iter()
            .all(|p| p["source"] == "env")
    );

    // An explicit id from opts is what the variable is named after.
    let test = Test::new()
        .script(r#"print(prompt::confirm("Really?", #{ id: "go-live" }));"#)
        .env("GLOW_ANSWER_GO_LIVE", "n");
    let finished = detached_status(&test, 0);
    assert_eq!(finished.stdout.trim(), "false");
}

#[test]
fn yes_answers_confirms_but_never_an_approval() {
    let test = Test::new()
        .script(
            r#"
            step("gate", || {
                print(`confirmed=${prompt::confirm("Deploy to production?")}`);
                prompt::approve("security");
                print("approved");
            });
            "#,
        )
        .env("GLOW_APPROVER", "someone@example.com")
        .arg("--yes");
    let finished = detached_status(&test, 1);
    assert!(
        finished.stdout.contains("confirmed=true"),
        "{}",
        finished.stdout
    );
    assert!(!finished.stdout.contains("approved"), "{}", finished.stdout);
    assert!(
        finished.stderr.contains("approve_security"),
        "{}",
        finished.stderr
    );
    let events = finished.journal();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "prompt" && e["source"] == "yes")
    );
    assert!(
        !events.iter().any(|e| e["kind"] == "approval"),
        "no approval may be recorded"
    );
}

#[test]
fn approve_records_identity_time_script_hash_and_plan_hash() {
    let test = Test::new()
        .script(
            r#"
            step("build", || { exec::run("true", []); });
            step("sign-off", || {
                let a = prompt::approve("security");
                print(`approver=${a.approver} planned=${a.planned} plan=${a.plan_hash}`);
            });
            "#,
        )
        .env("GLOW_ANSWER_APPROVE_SECURITY", "true")
        .env("GLOW_APPROVER", "carol@example.com");
    let finished = detached_status(&test, 0);
    let events = finished.journal();
    let run_start = events.iter().find(|e| e["kind"] == "run_start").unwrap();
    let approvals: Vec<&Value> = events.iter().filter(|e| e["kind"] == "approval").collect();
    assert_eq!(approvals.len(), 1, "{events:?}");
    let approval = approvals[0];
    assert_eq!(approval["role"], "security");
    assert_eq!(approval["id"], "approve_security");
    assert_eq!(approval["approver"], "carol@example.com");
    assert_eq!(approval["answer"], "true");
    assert_eq!(approval["script_sha256"], run_start["sha256"]);
    // The plan hash covers the effects so far: exactly the one `exec run true` of step "build".
    let expected = hex::encode(Sha256::digest(b"build\texec\trun\ttrue"));
    assert_eq!(approval["plan_hash"], expected.as_str());
    let time = chrono::DateTime::parse_from_rfc3339(approval["time"].as_str().unwrap()).unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(run_start["time"].as_str().unwrap()).unwrap();
    assert!(time >= started, "{time} {started}");
    assert!(
        finished.stdout.contains(&format!(
            "approver=carol@example.com planned=false plan={expected}"
        )),
        "{}",
        finished.stdout
    );

    // "no" declines: the run fails and nothing is recorded as approved.
    let test = Test::new()
        .script(r#"prompt::approve("product");"#)
        .env("GLOW_ANSWER_APPROVE_PRODUCT", "no");
    let finished = detached_status(&test, 1);
    assert!(finished.stderr.contains("declined"), "{}", finished.stderr);
    assert!(!finished.journal().iter().any(|e| e["kind"] == "approval"));
}

#[test]
fn distinct_from_initiator_refuses_the_person_who_started_the_run() {
    let script = r#"let a = prompt::approve("devops"); print(`by ${a.approver}`);"#;
    let policy = "[approvals]\ndistinct_from_initiator = true\n";
    let test = Test::new()
        .file("glow.toml", policy)
        .script(script)
        .env("GLOW_INITIATOR", "alice@example.com")
        .env("GLOW_ANSWER_APPROVE_DEVOPS", "Alice@Example.com");
    let finished = detached_status(&test, 1);
    assert!(
        finished.stderr.contains("distinct_from_initiator"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("alice@example.com"),
        "{}",
        finished.stderr
    );
    assert!(!finished.journal().iter().any(|e| e["kind"] == "approval"));

    // `true` resolves to GLOW_APPROVER: the same person is refused as well.
    let test = Test::new()
        .file("glow.toml", policy)
        .script(script)
        .env("GLOW_INITIATOR", "alice@example.com")
        .env("GLOW_APPROVER", "alice@example.com")
        .env("GLOW_ANSWER_APPROVE_DEVOPS", "true");
    detached_status(&test, 1);

    // Someone else may approve.
    let test = Test::new()
        .file("glow.toml", policy)
        .script(script)
        .env("GLOW_INITIATOR", "alice@example.com")
        .env("GLOW_ANSWER_APPROVE_DEVOPS", "bob@example.com");
    let finished = detached_status(&test, 0);
    assert_eq!(finished.stdout.trim(), "by bob@example.com");
}

#[test]
fn dry_run_never_blocks_and_lists_questions_and_sign_offs_in_the_plan() {
    let test = Test::new()
        .script(
            r#"
            step("ask", || {
                let ok = prompt::confirm("Deploy to production?");
                let tag = prompt::input("Release tag?", "v0.0.1");
                let env = prompt::select("Which environment?", ["staging", "production"]);
                let key = prompt::secret("API key?");
                let who = prompt::approve("security");
                print(`go=${ok} tag=${tag} env=${env} key=${key.len()} planned=${who.planned}`);
            });
            "#,
        )
        .arg("--dry-run");
    let finished = detached_status(&test, 0);
    assert!(
        finished
            .stdout
            .contains("go=false tag=v0.0.1 env=staging key=0 planned=true"),
        "{}",
        finished.stdout
    );
    let plan = finished
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "plan")
        .unwrap();
    assert_eq!(
        plan["needs"]["questions"],
        serde_json::json!([
            "deploy_to_production_",
            "release_tag_",
            "which_environment_",
            "api_key_"
        ])
    );
    assert_eq!(plan["needs"]["approvals"], serde_json::json!(["security"]));
    assert!(
        finished.stderr.contains("approvals: security"),
        "{}",
        finished.stderr
    );
    assert!(!finished.journal().iter().any(|e| e["kind"] == "approval"));
}

// --- at a real terminal ----------------------------------------------------------------------

fn spawn_pty(command: std::process::Command) -> Session {
    let mut session = expectrl::Session::spawn(command).expect("spawn glow-run under a pty");
    session.set_expect_timeout(Some(PTY_TIMEOUT));
    session
}

/// Reads everything until the program closes the terminal, then its exit code.
fn finish(session: &mut Session) -> (String, i32) {
    let captured = session.expect(Eof).expect("glow-run should finish");
    let text = String::from_utf8_lossy(captured.as_bytes()).into_owned();
    let code = match session.get_process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("glow-run did not exit normally: {other:?}\n{text}"),
    };
    (text, code)
}

/// The test's command with stdout and stderr sent to `out.txt` and `err.txt` (by a shell, as
/// the pty spawner closes every other descriptor before exec).
fn redirected(test: &Test) -> std::process::Command {
    through_shell(&test.command(), r#"exec "$0" "$@" >out.txt 2>err.txt"#)
}

/// The test's command with the terminal's echo turned on first (see [`echo_on`]).
fn with_echo(test: &Test) -> std::process::Command {
    echo_on(&test.command())
}

fn read(test: &Test, name: &str) -> String {
    std::fs::read_to_string(test.path().join(name)).unwrap()
}

#[test]
fn pty_confirm_answered_y_and_n_with_output_piped() {
    for (key, expected) in [("y", "answer=true"), ("n", "answer=false")] {
        let test = Test::new().script(
            r#"
            step("gate", || {
                let ok = prompt::confirm("Ship the release now?");
                print(`answer=${ok}`);
            });
            "#,
        );
        // stdout and stderr go to files: the prompt must still reach the terminal (/dev/tty).
        let mut session = spawn_pty(redirected(&test));
        if let Err(e) = session.expect("Ship the release now?") {
            panic!(
                "the question on the terminal: {e}\n{}\n{}",
                read(&test, "out.txt"),
                read(&test, "err.txt")
            );
        }
        session.send(key).unwrap();
        let (_, code) = finish(&mut session);
        assert_eq!(code, 0, "{}", read(&test, "err.txt"));
        assert!(
            read(&test, "out.txt").contains(expected),
            "{}",
            read(&test, "out.txt")
        );
        let events = read(&test, "err.txt");
        assert!(events.contains("ship_the_release_now"), "{events}");
    }
}

#[test]
fn pty_select_by_arrow_keys() {
    let test = Test::new().script(
        r#"
        let env = prompt::select("Deploy where?", ["staging", "production", "canary"]);
        print(`chosen=${env}`);
        "#,
    );
    let mut session = spawn_pty(test.command());
    session
        .expect("canary")
        .expect("the options on the terminal");
    session.send("\x1b[B").unwrap();
    session.send("\r").unwrap();
    let (text, code) = finish(&mut session);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("chosen=production"), "{text}");
    let prompt = finish_journal(&test)
        .into_iter()
        .find(|e| e["kind"] == "prompt")
        .unwrap();
    assert_eq!(prompt["source"], "terminal");
    assert_eq!(prompt["answer"], "production");
}

fn finish_journal(test: &Test) -> Vec<Value> {
    Finished {
        status: 0,
        stdout: String::new(),
        stderr: String::new(),
        dir: test.path().to_owned(),
        keep: None,
    }
    .journal()
}

#[test]
fn pty_input_takes_its_default_on_enter() {
    let test = Test::new().script(
        r#"
        let tag = prompt::input("Release tag?", #{ default_value: "v1.2.3" });
        print(`tag=${tag}`);
        "#,
    );
    let mut session = spawn_pty(test.command());
    session
        .expect("v1.2.3")
        .expect("the question and its default");
    session.send("\r").unwrap();
    let (text, code) = finish(&mut session);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("tag=v1.2.3"), "{text}");
}

#[test]
fn pty_secret_is_not_echoed_and_never_written() {
    const SECRET: &str = "hunter2-Very-Secret-42";
    let test = Test::new().script(
        r#"
        step("login", || {
            let token = prompt::secret("API token?");
            print(`length=${token.len()}`);
            print(`token=${token}`);
            log::info(`using ${token}`);
        });
        "#,
    );
    let mut session = spawn_pty(with_echo(&test));
    session
        .expect("API token?")
        .expect("the question on the terminal");
    wait_for_echo_off(&session);
    session.send(format!("{SECRET}\r")).unwrap();
    let (text, code) = finish(&mut session);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("length={}", SECRET.len())), "{text}");
    assert!(text.contains("token=[redacted]"), "{text}");
    assert!(
        !text.contains(SECRET),
        "the secret reached the terminal:\n{text}"
    );
    assert!(
        session.get_process().get_echo().unwrap(),
        "echo must be back on"
    );
    let journal = std::fs::read_dir(test.path().join(".glow/runs"))
        .unwrap()
        .map(|dir| std::fs::read_to_string(dir.unwrap().path().join("journal.jsonl")).unwrap())
        .collect::<String>();
    assert!(!journal.contains(SECRET), "the secret reached the journal");
    let prompt = finish_journal(&test)
        .into_iter()
        .find(|e| e["kind"] == "prompt")
        .unwrap();
    assert_eq!(prompt["answer"], "[redacted]");
    assert_eq!(prompt["type"], "secret");
}

#[test]
fn pty_ctrl_c_in_a_prompt_exits_130_and_restores_the_terminal() {
    // In a raw-mode prompt (select) Ctrl-C arrives as a key: the cursor must be shown again.
    let test = Test::new().script(
        r#"
        step("choose", || { prompt::select("Deploy where?", ["staging", "production"]); print("chosen"); });
        "#,
    );
    let mut session = spawn_pty(test.command());
    let shown_so_far = session
        .expect("production")
        .expect("the options on the terminal");
    session.send("\x03").unwrap();
    let (rest, code) = finish(&mut session);
    let text = String::from_utf8_lossy(shown_so_far.as_bytes()).into_owned() + rest.as_str();
    assert_eq!(code, 130, "{text}");
    assert!(!text.contains("chosen"), "{text}");
    let shown = text.rfind("\x1b[?25h").expect("cursor shown again");
    let hidden = text.rfind("\x1b[?25l").expect("the select hid the cursor");
    assert!(shown > hidden, "the cursor is left hidden:\n{text:?}");

    // In a secret prompt (echo off, canonical) Ctrl-C is a signal: echo must come back on.
    let test = Test::new()
        .script(r#"step("login", || { prompt::secret("API token?"); print("got it"); });"#);
    let mut session = spawn_pty(with_echo(&test));
    session
        .expect("API token?")
        .expect("the question on the terminal");
    wait_for_echo_off(&session);
    session.send("\x03").unwrap();
    let (text, code) = finish(&mut session);
    assert_eq!(code, 130, "{text}");
    assert!(!text.contains("got it"), "{text}");
    assert!(
        session.get_process().get_echo().unwrap(),
        "echo must be back on after Ctrl-C"
    );
    let run_end = finish_journal(&test)
        .into_iter()
        .find(|e| e["kind"] == "run_end")
        .unwrap();
    assert_eq!(run_end["outcome"], "interrupted");
}

#[test]
fn pty_approver_types_their_identity() {
    let test = Test::new()
        .script(
            r#"
            let a = prompt::approve("product");
            print(`approved by ${a.approver}`);
            "#,
        )
        .env("GLOW_INITIATOR", "alice@example.com");
    let mut session = spawn_pty(test.command());
    session
        .expect("type your identity")
        .expect("the sign-off question");
    session.send("pat@example.com\r").unwrap();
    let (text, code) = finish(&mut session);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("approved by pat@example.com"), "{text}");
    let approval = finish_journal(&test)
        .into_iter()
        .find(|e| e["kind"] == "approval")
        .unwrap();
    assert_eq!(approval["approver"], "pat@example.com");
    assert_eq!(approval["source"], "terminal");
}

#[test]
fn pty_input_asks_again_until_the_pattern_matches() {
    let test = Test::new().script(
        r#"
        let tag = prompt::input("Release tag?", #{ pattern: "v[0-9]+\\.[0-9]+\\.[0-9]+" });
        print(`tag=${tag}`);
        "#,
    );
    let mut session = spawn_pty(test.command());
    session.expect("Release tag?").expect("the question");
    session.send("latest\r").unwrap();
    session
        .expect("must match")
        .expect("the pattern is enforced");
    session.send("v2.3.4\r").unwrap();
    let (text, code) = finish(&mut session);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("tag=v2.3.4"), "{text}");
    assert!(!text.contains("tag=latest"), "{text}");
}
