//! Crash consistency with real processes and real `kill -9`: `resume` never repeats a step whose
//! `step_end ok` is journaled, `runs` lists every killed run, in-doubt steps are refused,
//! verified or rerun, no child outlives a killed glow-run, HTTP retries never repeat a request
//! the server may have acted on, and the shared release lock can be waited for and ended.
//!
//! Every wait polls for a condition with a deadline; nothing is decided by sleeping.

use crate::support::http_server::{HttpServer, Reply};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const STEPS: usize = 6;

/// Polls `condition` every few ms until it holds; panics naming `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    eventually(what, limit, || condition().then_some(()));
}

/// glow-run in `dir` with `PATH` starting at `dir/bin`.
fn glow(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(dir)
        .args(args)
        .env("PATH", tools::path_with(&dir.join("bin")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn finish(command: &mut Command) -> (i32, String, String) {
    let output: Output = wait_with_timeout(command.spawn().unwrap(), Duration::from_secs(60));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_tool(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Blocks (up to 60 s, never for ever) once `marker` is touched, until the host kills it.
const HOLD: &str = "i=0; while [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done";

/// The stand-ins: `tool N` records its call, may hold before or after its effect (`done-N`);
/// `gate N`, run between steps, may hold just after step N ended.
fn write_stand_ins(dir: &Path) {
    write_tool(
        dir,
        "tool",
        &format!(
            "echo \"$1\" >> calls.log\n\
             if [ -f \"hold-before-$1\" ]; then touch \"holding-$1\"; {HOLD}; fi\n\
             touch \"done-$1\"\n\
             if [ -f \"hold-after-$1\" ]; then touch \"holding-$1\"; {HOLD}; fi\n\
             exit 0"
        ),
    );
    write_tool(
        dir,
        "gate",
        &format!("if [ -f \"pause-$1\" ]; then touch \"paused-$1\"; {HOLD}; fi\nexit 0"),
    );
}

const SCRIPT: &str = r#"
let base = vars::get("base");
let verify_by = vars::get("verify", "none");
for i in 1..=6 {
    let name = `s${i}`;
    let options = if verify_by == "done-file" { #{ verify: || fs::exists(`done-${i}`) } } else { #{} };
    step(name, options, || {
        exec::run("tool", [`${i}`]);
        http::post(`${base}/${name}`, #{ step: i });
        artifact::write(`${name}.txt`, `step ${i} done`);
    });
    exec::run("gate", [`${i}`], #{ read_only: true });
}
"#;

/// How a trial stops the run.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// As soon as the journal has its `run_start` (inside the index's first 25 ms batch).
    Start,
    /// Just after step N's `step_end ok` (the gate between steps holds).
    AfterOk(usize),
    /// Inside step N before its exec finished (in doubt, effect not done).
    InsideBefore(usize),
    /// Inside step N after its exec's effect (in doubt, effect done).
    InsideAfter(usize),
}

fn journal_of(dir: &Path) -> Option<(String, Vec<serde_json::Value>)> {
    let runs = dir.join(".glow/runs");
    let mut ids: Vec<String> = std::fs::read_dir(&runs)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    let id = ids.first()?.clone();
    let text = std::fs::read_to_string(runs.join(&id).join("journal.jsonl")).ok()?;
    let events = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Some((id, events))
}

/// Every process whose parent chain leads to `root`.
fn descendants(root: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if let Some(ppid) = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        index += 1;
    }
    found.remove(0);
    found
}

fn kill9(child: &mut Child) -> Vec<i32> {
    let pid = child.id() as i32;
    let family = descendants(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    family
}

/// Waits up to 1 s for every process in `family` to be gone; returns those still alive.
fn leftovers(family: &[i32]) -> Vec<i32> {
    let alive = || -> Vec<i32> {
        family
            .iter()
            .copied()
            .filter(|p| process_alive(*p))
            .collect()
    };
    match poll(Duration::from_secs(1), || alive().is_empty().then_some(())) {
        Some(()) => Vec::new(),
        None => alive(),
    }
}

fn tool_calls(dir: &Path, step: usize) -> usize {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim() == step.to_string())
        .count()
}

fn ended_ok(events: &[serde_json::Value], step: usize) -> bool {
    events
        .iter()
        .any(|e| e["kind"] == "step_end" && e["step"] == format!("s{step}") && e["outcome"] == "ok")
}

struct Trial {
    dir: tempfile::TempDir,
    run_id: String,
    killed: Vec<serde_json::Value>,
    leftovers: Vec<i32>,
}

fn run_until_killed(server: &HttpServer, number: usize, kill: KillAt, verify: &str) -> Trial {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crash.rhai"), SCRIPT).unwrap();
    write_stand_ins(dir.path());
    let marker = match kill {
        KillAt::Start => None,
        KillAt::AfterOk(n) => Some((format!("pause-{n}"), format!("paused-{n}"))),
        KillAt::InsideBefore(n) => Some((format!("hold-before-{n}"), format!("holding-{n}"))),
        KillAt::InsideAfter(n) => Some((format!("hold-after-{n}"), format!("holding-{n}"))),
    };
    if let Some((hold, _)) = &marker {
        std::fs::write(dir.path().join(hold), "").unwrap();
    }
    for step in 1..=STEPS {
        server.route(&format!("/t{number}/s{step}"), [Reply::status(200)]);
    }
    let base = server.url(&format!("/t{number}"));
    let mut child = glow(
        dir.path(),
        &[
            "crash.rhai",
            "--var",
            &format!("base={base}"),
            "--var",
            &format!("verify={verify}"),
        ],
    )
    .spawn()
    .unwrap();
    let limit = Duration::from_secs(30);
    match &marker {
        None => wait_for("the run_start event", limit, || {
            journal_of(dir.path()).is_some_and(|(_, events)| !events.is_empty())
        }),
        Some((_, reached)) => wait_for(reached, limit, || dir.path().join(reached).exists()),
    }
    let family = kill9(&mut child);
    let leftovers = leftovers(&family);
    let (run_id, killed) = journal_of(dir.path()).expect("the killed run's journal");
    if let Some((hold, _)) = &marker {
        std::fs::remove_file(dir.path().join(hold)).unwrap();
    }
    Trial {
        dir,
        run_id,
        killed,
        leftovers,
    }
}

/// Resumes a killed trial to the end and checks that no step that ended ok ran again.
fn resume_and_check(server: &HttpServer, number: usize, trial: &Trial, extra: &[&str]) -> String {
    let dir = trial.dir.path();
    let (code, stdout, stderr) = finish(&mut glow(dir, &["runs"]));
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&trial.run_id))
        .unwrap_or_else(|| {
            panic!(
                "trial {number}: `runs` does not list killed run {}:\n{stdout}",
                trial.run_id
            )
        });
    assert!(row.contains("interrupted"), "trial {number}: {row}");
    let mut args = vec!["resume", trial.run_id.as_str()];
    args.extend_from_slice(extra);
    let (code, _, stderr) = finish(&mut glow(dir, &args));
    assert_eq!(code, 0, "trial {number}: resume failed:\n{stderr}");
    for step in 1..=STEPS {
        let posts = server.requests_to(&format!("/t{number}/s{step}")).len();
        if ended_ok(&trial.killed, step) {
            assert_eq!(
                tool_calls(dir, step),
                1,
                "trial {number}: ok step s{step} ran again"
            );
            assert_eq!(posts, 1, "trial {number}: ok step s{step} posted again");
        }
        assert!(
            tool_calls(dir, step) >= 1,
            "trial {number}: s{step} never ran"
        );
    }
    stderr
}

fn resumed_journal(dir: &Path, killed: &str) -> Vec<serde_json::Value> {
    let runs = dir.join(".glow/runs");
    // The newest run: a refused resume may have come between.
    let id = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| id != killed)
        .max()
        .expect("the resumed run");
    let text = std::fs::read_to_string(runs.join(id).join("journal.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn in_doubt_record(events: &[serde_json::Value], step: usize) -> serde_json::Value {
    events
        .iter()
        .find(|e| e["step"] == format!("s{step}") && e["in_doubt"].is_object())
        .map(|e| e["in_doubt"].clone())
        .unwrap_or_else(|| panic!("no in_doubt record for s{step}"))
}

#[test]
fn resume_after_kill_9_at_twenty_points_never_repeats_an_ok_step() {
    let server = HttpServer::start();
    let mut plan: Vec<(KillAt, &str)> = vec![(KillAt::Start, "none"); 3];
    plan.extend((1..=STEPS).map(|n| (KillAt::AfterOk(n), "none")));
    plan.extend((1..=STEPS).map(|n| (KillAt::InsideBefore(n), "none")));
    plan.extend([2, 4, 6].map(|n| (KillAt::InsideAfter(n), "done-file")));
    plan.extend([3, 5].map(|n| (KillAt::InsideBefore(n), "done-file")));
    assert!(plan.len() >= 20);
    for (number, (kill, verify)) in plan.into_iter().enumerate() {
        let trial = run_until_killed(&server, number, kill, verify);
        assert!(
            trial.leftovers.is_empty(),
            "trial {number} ({kill:?}): processes alive 1 s after kill -9: {:?}",
            trial.leftovers
        );
        let dir = trial.dir.path();
        match kill {
            KillAt::Start => {
                // Killed so early that no step may have started; if one did, it is in doubt.
                resume_and_check(&server, number, &trial, &["--rerun-in-doubt"]);
            }
            KillAt::AfterOk(n) => {
                assert!(
                    ended_ok(&trial.killed, n),
                    "trial {number}: s{n} did not end ok"
                );
                resume_and_check(&server, number, &trial, &[]);
                let resumed = resumed_journal(dir, &trial.run_id);
                assert!(resumed.iter().any(|e| e["kind"] == "step_end"
                    && e["step"] == format!("s{n}")
                    && e["outcome"] == "skipped"));
            }
            KillAt::InsideBefore(n) if verify == "none" => {
                let (code, _, stderr) = finish(&mut glow(dir, &["resume", &trial.run_id]));
                assert_eq!(
                    code, 2,
                    "trial {number}: an in-doubt step must be refused:\n{stderr}"
                );
                assert!(
                    stderr.contains(&format!("step 's{n}' is in doubt"))
                        && stderr.contains("last journaled effect")
                        && stderr.contains("--rerun-in-doubt"),
                    "{stderr}"
                );
                assert_eq!(tool_calls(dir, n), 1, "the refused resume ran nothing");
                resume_and_check(&server, number, &trial, &["--rerun-in-doubt"]);
                assert_eq!(tool_calls(dir, n), 2, "trial {number}: s{n} is run again");
                let record = in_doubt_record(&resumed_journal(dir, &trial.run_id), n);
                assert_eq!(record["decision"], "rerun");
                assert_eq!(record["by"], "--rerun-in-doubt");
            }
            KillAt::InsideBefore(n) => {
                // verify says not done (no done-N): it runs again without asking.
                resume_and_check(&server, number, &trial, &[]);
                assert_eq!(tool_calls(dir, n), 2, "trial {number}");
                let record = in_doubt_record(&resumed_journal(dir, &trial.run_id), n);
                assert_eq!(
                    (record["decision"].as_str(), record["by"].as_str()),
                    (Some("rerun"), Some("verify"))
                );
            }
            KillAt::InsideAfter(n) => {
                // verify finds done-N: skipped as done, its exec not repeated.
                resume_and_check(&server, number, &trial, &[]);
                assert_eq!(
                    tool_calls(dir, n),
                    1,
                    "trial {number}: verify should skip s{n}"
                );
                let resumed = resumed_journal(dir, &trial.run_id);
                let record = in_doubt_record(&resumed, n);
                assert_eq!(
                    (record["decision"].as_str(), record["by"].as_str()),
                    (Some("skip"), Some("verify"))
                );
                // A resume of that resume keeps treating it as done.
                assert!(resumed.iter().any(|e| e["kind"] == "step_end"
                    && e["step"] == format!("s{n}")
                    && e["outcome"] == "skipped"));
            }
        }
    }
}

#[test]
fn show_and_runs_read_a_run_killed_before_the_index_wrote_it() {
    let server = HttpServer::start();
    let trial = run_until_killed(&server, 0, KillAt::Start, "none");
    let dir = trial.dir.path();
    // The index file may not even exist yet; `runs` and `show` still find the run.
    let (code, stdout, stderr) = finish(&mut glow(dir, &["show", &trial.run_id]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&trial.run_id) && stdout.contains("interrupted"),
        "{stdout}"
    );
    // A later run's index catches up from the journal: the killed run gets its row.
    let (code, _, stderr) = finish(&mut glow(dir, &["-e", "exec::run(\"gate\", [\"0\"])"]));
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = finish(&mut glow(dir, &["runs"]));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&trial.run_id) && l.contains("interrupted")),
        "{stdout}"
    );
}

#[test]
fn no_child_of_a_sigkilled_run_is_alive_a_second_later() {
    let test = Test::new()
        .script(
            r#"
            // Leaves a background child behind in its group, then exits (the direct child dies first).
            step("leave", || exec::run("sh", ["-c", "sleep 300 & echo $! > background"]));
            // A child and a grandchild that ignore SIGTERM.
            step("hold", || exec::run("sh", ["-c", "trap '' TERM; (trap '' TERM; sleep 300) & echo $! > grandchild; echo $$ > child; wait"]));
            "#,
        );
    let mut child = test
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = test.path().to_owned();
    let pid_in = |name: &str| -> Option<i32> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    wait_for(
        "the child and grandchild pids",
        Duration::from_secs(30),
        || {
            pid_in("child").is_some()
                && pid_in("grandchild").is_some()
                && pid_in("background").is_some()
        },
    );
    let named = ["child", "grandchild", "background"].map(|f| pid_in(f).unwrap());
    for pid in named {
        assert!(process_alive(pid), "{pid} is alive before the kill");
    }
    let mut family = kill9(&mut child);
    family.extend(named);
    let alive = leftovers(&family);
    assert!(
        alive.is_empty(),
        "alive 1 s after kill -9 of glow-run: {alive:?}"
    );
}

// ---- HTTP retries ------------------------------------------------------------------------------

#[test]
fn a_post_that_times_out_is_sent_once() {
    let server = HttpServer::start();
    server.route("/slow", [Reply::hang()]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::post("{}", #{{ a: 1 }}, #{{ timeout: "300ms", retries: 2, backoff: "10ms" }});"#,
            server.url("/slow")
        ))
        .expect(1);
    assert_eq!(server.requests_to("/slow").len(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("not retried: the server may have acted on it"),
        "{}",
        out.stderr
    );
}

#[test]
fn retry_unsafe_with_an_idempotency_key_repeats_one_key() {
    let server = HttpServer::start();
    server.route("/slow", [Reply::hang()]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::post("{}", #{{ a: 1 }}, #{{ timeout: "300ms", retries: 2, backoff: "10ms", retry_unsafe: true, idempotency_key: true }});"#,
            server.url("/slow")
        ))
        .expect(1);
    let requests = server.wait_for_requests(3, Duration::from_secs(10));
    assert_eq!(requests.len(), 3, "{}", out.stderr);
    let keys: Vec<&str> = requests
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or(""))
        .collect();
    assert!(keys[0].len() >= 32, "{keys:?}");
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one key across attempts: {keys:?}"
    );
}

#[test]
fn a_connect_refused_post_is_retried_and_a_503_post_is_not() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::post("http://127.0.0.1:{port}/x", "{{}}", #{{ retries: 2, backoff: "10ms" }});"#
        ))
        .expect(1);
    let connects = out
        .journal()
        .into_iter()
        .filter(|e| e["event"] == "http_attempt" && e["failure"] == "connect")
        .count();
    assert_eq!(connects, 3, "{}", out.stderr);

    let server = HttpServer::start();
    server.route("/down", [Reply::status(503)]);
    server.route("/put", [Reply::status(503), Reply::status(200)]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::post("{}", #{{}}, #{{ retries: 2, backoff: "10ms" }});"#,
            server.url("/down")
        ))
        .expect(1);
    assert_eq!(server.requests_to("/down").len(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("not retried"), "{}", out.stderr);
    Test::new()
        .script(&format!(
            r#"http::request("PUT", "{}", #{{ body: #{{ a: 1 }}, retries: 2, backoff: "10ms" }});"#,
            server.url("/put")
        ))
        .status(0);
    assert_eq!(
        server.requests_to("/put").len(),
        2,
        "PUT is idempotent: retried"
    );
}

// ---- Shared state: the release lock ------------------------------------------------------------

const HOLDER: &str = r#"step("deploy", || exec::run("sh", ["-c", "touch started; i=0; while [ ! -f release ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done"]));"#;

fn spawn_holder(test: &Test) -> Child {
    test.command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn journal_events(dir: &Path) -> Vec<Vec<serde_json::Value>> {
    let runs: PathBuf = dir.join(".glow/runs");
    let mut ids: Vec<PathBuf> = std::fs::read_dir(&runs)
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    ids.sort();
    ids.iter()
        .map(|d| {
            std::fs::read_to_string(d.join("journal.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .collect()
}

#[test]
fn wait_lock_starts_the_second_run_after_the_first_ends() {
    let db = postgres::database();
    let first = Test::new()
        .script(HOLDER)
        .args(&["--state", &db.url, "--var", "env=prod"]);
    let holder = spawn_holder(&first);
    wait_for("the first run to start", Duration::from_secs(30), || {
        first.path().join("started").exists()
    });

    let second = Test::new()
        .script(r#"step("deploy", || exec::run("touch", ["second-ran"]));"#)
        .args(&[
            "--state",
            &db.url,
            "--var",
            "env=prod",
            "--wait-lock",
            "30s",
        ]);
    let waiter = second
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cluster = postgres::cluster();
    wait_for(
        "the second run to queue for the lock",
        Duration::from_secs(30),
        || {
            cluster
                .psql(
                    &db.name,
                    "select count(*) from pg_locks where locktype = 'advisory' and not granted",
                )
                .trim()
                == "1"
        },
    );
    assert!(
        !second.path().join("second-ran").exists(),
        "the second run waits"
    );
    std::fs::write(first.path().join("release"), "").unwrap();
    let first_out = wait_with_timeout(holder, Duration::from_secs(30));
    assert_eq!(first_out.status.code(), Some(0));
    let second_out = wait_with_timeout(waiter, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&second_out.stderr);
    assert_eq!(second_out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "waiting up to 30s for the release lock for script.rhai (environment prod), held by run"
        ),
        "{stderr}"
    );
    let first_end = journal_events(first.path())[0]
        .iter()
        .find(|e| e["kind"] == "run_end")
        .unwrap()["time"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_start = journal_events(second.path())[0][0]["time"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        second_start >= first_end,
        "second started {second_start}, first ended {first_end}"
    );
}

#[test]
fn unlock_ends_a_sleeping_holder_and_records_why() {
    let db = postgres::database();
    let first = Test::new()
        .script(HOLDER)
        .args(&["--state", &db.url, "--var", "env=prod"]);
    let holder = spawn_holder(&first);
    wait_for("the holder to start", Duration::from_secs(30), || {
        first.path().join("started").exists()
    });

    let refused = Test::new()
        .script(HOLDER)
        .args(&["--state", &db.url, "--var", "env=prod"])
        .status(1);
    assert!(
        refused.stderr.contains("is held by run") && refused.stderr.contains("glow-run unlock"),
        "{}",
        refused.stderr
    );

    let no_yes = Test::new()
        .args(&[
            "unlock",
            "script.rhai",
            "--env",
            "prod",
            "--reason",
            "stuck",
            "--state",
            &db.url,
        ])
        .status(2);
    assert!(no_yes.stderr.contains("--yes"), "{}", no_yes.stderr);

    let unlocked = Test::new()
        .env("GLOW_INITIATOR", "dana@example.com")
        .args(&[
            "unlock",
            "script.rhai",
            "--env",
            "prod",
            "--reason",
            "holder hung on a dead VPN",
            "--yes",
            "--state",
            &db.url,
        ])
        .status(0);
    assert!(
        unlocked.stderr.contains("is held by run"),
        "{}",
        unlocked.stderr
    );
    let out = wait_with_timeout(holder, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "the holder is ended: {stderr}");
    assert!(
        stderr.contains("lost the release lock") && stderr.contains("holder hung on a dead VPN"),
        "{stderr}"
    );
    assert!(!first.path().join("release").exists());
    let row = postgres::cluster().psql(&db.name, "select outcome || '|' || unlock_reason || '|' || unlocked_by from glow_runs where unlocked_at is not null");
    assert_eq!(
        row.trim(),
        "unlocked|holder hung on a dead VPN|dana@example.com"
    );
    // The lock is free again.
    Test::new()
        .script(r#"step("x", || 1);"#)
        .args(&["--state", &db.url, "--var", "env=prod"])
        .status(0);
}

#[test]
fn a_killed_live_run_reads_as_interrupted_in_the_shared_history() {
    let db = postgres::database();
    let first = Test::new()
        .script(HOLDER)
        .args(&["--state", &db.url, "--var", "env=prod"]);
    let mut holder = spawn_holder(&first);
    wait_for("the run to start", Duration::from_secs(30), || {
        first.path().join("started").exists()
    });
    kill9(&mut holder);
    wait_for(
        "the killed run's session to end",
        Duration::from_secs(10),
        || {
            postgres::cluster()
                .psql(
                    &db.name,
                    "select count(*) from pg_locks where locktype = 'advisory'",
                )
                .trim()
                == "0"
        },
    );
    let history = Test::new().args(&["runs", "--state", &db.url]).status(0);
    let row = history.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert!(row.contains(" interrupted "), "{}", history.stdout);
}

#[test]
fn a_reaper_that_died_does_not_break_later_children() {
    let test = Test::new().script(
        r#"
        exec::run("sh", ["-c", "touch first; i=0; while [ ! -f go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done"]);
        print(exec::run("echo", ["still spawns"]).stdout);
        "#,
    );
    let child = test
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first child", Duration::from_secs(30), || {
        test.path().join("first").exists()
    });
    let reaper = descendants(child.id() as i32)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__glow-run-reaper"))
        })
        .expect("the reaper process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(reaper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the reaper to die", Duration::from_secs(10), || {
        !process_alive(reaper)
    });
    std::fs::write(test.path().join("go"), "").unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still spawns\n\n");
}

#[test]
fn an_in_doubt_step_is_rerun_on_a_yes_at_a_terminal() {
    use expectrl::Expect;
    let server = HttpServer::start();
    let trial = run_until_killed(&server, 0, KillAt::InsideBefore(2), "none");
    let dir = trial.dir.path();
    let mut command = Command::new(BIN);
    hermetic(&mut command);
    command
        .current_dir(dir)
        .args(["resume", &trial.run_id])
        .env("PATH", tools::path_with(&dir.join("bin")));
    let mut session = expectrl::Session::spawn(command).expect("spawn glow-run under a pty");
    session.set_expect_timeout(Some(Duration::from_secs(30)));
    session
        .expect("Run it again?")
        .expect("the in-doubt question on the terminal");
    session.send("y").unwrap();
    session.expect(expectrl::Eof).expect("the resume finishes");
    let status = session.get_process().wait().unwrap();
    assert!(
        matches!(status, expectrl::process::unix::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    assert_eq!(tool_calls(dir, 2), 2, "s2 is run again");
    assert_eq!(tool_calls(dir, 1), 1, "s1 ended ok: not run again");
    let record = in_doubt_record(&resumed_journal(dir, &trial.run_id), 2);
    assert_eq!(record["by"], "terminal");
}

/// A server on 127.0.0.1 whose first connection is closed as soon as the request arrives (no
/// response byte), and whose later connections get `200 ok`. Returns its port and a counter of
/// connections.
fn resetting_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let number = seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buffer = [0_u8; 4096];
            let _ = stream.read(&mut buffer);
            if number == 0 {
                // SO_LINGER 0: the close is a reset, before any response byte.
                let socket = socket_of(&stream);
                let linger = libc_linger();
                unsafe {
                    nix::libc::setsockopt(
                        socket,
                        nix::libc::SOL_SOCKET,
                        nix::libc::SO_LINGER,
                        (&linger as *const nix::libc::linger).cast(),
                        std::mem::size_of::<nix::libc::linger>() as u32,
                    );
                }
                drop(stream);
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, count)
}

fn socket_of(stream: &std::net::TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    stream.as_raw_fd()
}

fn libc_linger() -> nix::libc::linger {
    nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    }
}

#[test]
fn a_reset_before_any_response_is_retried_for_get_but_not_for_post() {
    use std::sync::atomic::Ordering;
    let (port, connections) = resetting_server();
    let out = Test::new()
        .script(&format!(
            r#"print(http::get("http://127.0.0.1:{port}/", #{{ retries: 2, backoff: "10ms" }}).body);"#
        ))
        .status(0);
    assert_eq!(out.stdout, "ok\n", "{}", out.stderr);
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    let (port, connections) = resetting_server();
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::post("http://127.0.0.1:{port}/", "{{}}", #{{ retries: 2, backoff: "10ms" }});"#
        ))
        .expect(1);
    assert_eq!(connections.load(Ordering::SeqCst), 1, "{}", out.stderr);
    assert!(out.stderr.contains("not retried"), "{}", out.stderr);
}
