//! `--state postgres://...`: the release lock (one live run per script and environment) and the
//! team's run history, against the real test PostgreSQL.

use crate::support::postgres;
use crate::support::*;
use std::time::Duration;

const SCRIPT: &str = r#"step("deploy", || exec::run("sh", ["-c", "touch started; sleep 3"]));"#;

#[test]
fn a_live_run_holds_the_release_lock_until_it_ends() {
    let db = postgres::database();
    let first = Test::new()
        .script(SCRIPT)
        .args(&["--state", &db.url, "--var", "env=production"]);
    let holder = first
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the first run starting", Duration::from_secs(30), || {
        first.path().join("started").exists().then_some(())
    });

    let (refused_dir, refused) = Test::new()
        .script(SCRIPT)
        .args(&["--state", &db.url, "--var", "env=production"])
        .expect(1);
    assert!(
        refused
            .stderr
            .contains("release lock for script.rhai (environment production) is held by run"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused_dir.path().join("started").exists(),
        "a refused run does nothing"
    );
    assert!(
        !refused_dir.path().join(".glow/runs").exists(),
        "a refused run leaves no journal"
    );

    // A dry run takes no lock, and another environment has its own.
    Test::new()
        .script(SCRIPT)
        .args(&["--state", &db.url, "--var", "env=production", "--dry-run"])
        .status(0);
    Test::new()
        .script(SCRIPT)
        .args(&["--state", &db.url, "--var", "env=staging"])
        .status(0);

    let output = wait_with_timeout(holder, Duration::from_secs(30));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The lock is free again.
    Test::new()
        .script(SCRIPT)
        .args(&["--state", &db.url, "--var", "env=production"])
        .status(0);

    let history = Test::new().args(&["runs", "--state", &db.url]).status(0);
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "header and four recorded runs:\n{}",
        history.stdout
    );
    assert!(lines[0].starts_with("RUN"), "{}", history.stdout);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" live ") && l.contains(" production ") && l.contains(" ok "))
            .count(),
        2,
        "{}",
        history.stdout
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(" dry-run ")).count(),
        1,
        "{}",
        history.stdout
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(" staging ")).count(),
        1,
        "{}",
        history.stdout
    );
    for text in [
        &history.stdout,
        &history.stderr,
        &refused.stderr,
        &refused.stdout,
    ] {
        assert!(
            !text.contains(postgres::PASSWORD),
            "the state password leaked:\n{text}"
        );
    }
}

#[test]
fn an_unreachable_shared_state_is_a_clear_error_without_the_password() {
    let out = Test::new()
        .script(SCRIPT)
        .args(&["--state", "postgres://glow:hunter2-state@127.0.0.1:1/glow"])
        .status(1);
    assert!(
        out.stderr
            .contains("shared state postgres://glow@127.0.0.1:1/glow"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    assert!(!out.stderr.contains("hunter2-state"), "{}", out.stderr);
}
