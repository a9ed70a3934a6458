//! The release runbook end to end: scripts/release.rhai and scripts/rollback.rhai through the
//! real binary against the simulated staging of tests/support/staging.rs (HTTP API, real
//! PostgreSQL, stand-in tools, a copy of examples/prisma-glow).

use crate::support::postgres::{self, PASSWORD};
use crate::support::staging::{
    self, CONFIG_TOKEN, Faults, JWT, RELEASE_MIGRATIONS, SERVICE_ROLE_KEY, Staging,
};
use serde_json::Value;

fn position(calls: &[Vec<String>], prefix: &[&str]) -> usize {
    calls
        .iter()
        .position(|call| call.len() >= prefix.len() && call.iter().zip(prefix).all(|(a, b)| a == b))
        .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
}

fn effects(journal: &[Value]) -> Vec<&Value> {
    journal.iter().filter(|e| e["kind"] == "effect").collect()
}

fn key(effect: &Value) -> (String, String, String) {
    (
        effect["namespace"].as_str().unwrap_or("").to_owned(),
        effect["action"].as_str().unwrap_or("").to_owned(),
        effect["target"].as_str().unwrap_or("").to_owned(),
    )
}

fn history(staging: &Staging) -> Vec<String> {
    postgres::cluster()
        .psql(
            &staging.db.name,
            "select name from glow_migrations order by name",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_no_secrets(staging: &Staging, stdout: &str, stderr: &str) {
    for secret in [JWT, SERVICE_ROLE_KEY, CONFIG_TOKEN, PASSWORD] {
        assert!(!stdout.contains(secret), "{secret} in stdout");
        assert!(!stderr.contains(secret), "{secret} in stderr");
        for (path, text) in staging.written_files() {
            assert!(!text.contains(secret), "{secret} in {}", path.display());
        }
    }
}

#[test]
fn live_release_against_staging_succeeds_with_evidence() {
    let staging = Staging::start(Faults {
        readiness_503: 2,
        ..Faults::default()
    });
    let (status, stdout, stderr) = staging.run("release.rhai", &[]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    // Tools in the runbook's order: build & test, load tests, cache migration (check first,
    // then per project), frontend, image, rollout, RAG secrets.
    let calls = staging.calls();
    let order = [
        position(&calls, &["npm", "ci"]),
        position(&calls, &["npm", "run", "lint"]),
        position(&calls, &["npm", "run", "build"]),
        position(&calls, &["npm", "test"]),
        position(&calls, &["npm", "run", "test:playwright"]),
        position(&calls, &["npx", "--yes", "lighthouse"]),
        position(
            &calls,
            &[
                "k6",
                "run",
                "--summary-export",
                "autonomy-burst.summary.json",
            ],
        ),
        position(
            &calls,
            &[
                "k6",
                "run",
                "--summary-export",
                "archive-rebuild.summary.json",
            ],
        ),
        position(&calls, &["pnpm", "supabase:migrate:web-cache", "--dry-run"]),
        position(&calls, &["vercel", "deploy"]),
        position(&calls, &["docker", "build"]),
        position(&calls, &["docker", "push"]),
        position(&calls, &["fly", "deploy"]),
        position(&calls, &["pnpm", "openai:file-search:secrets"]),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "tool order {order:?} in {calls:#?}"
    );
    let live_cache: Vec<_> = calls
        .iter()
        .filter(|c| c[0] == "pnpm" && c.len() == 2 && c[1] == "supabase:migrate:web-cache")
        .collect();
    assert_eq!(live_cache.len(), 2, "one live cache migration per project");
    // The backend image is tagged with the release tag and the workspace's git sha.
    let build = &calls[position(&calls, &["docker", "build"])];
    assert!(
        build[3].starts_with("ghcr.io/prisma-glow/api:v1.0.0-"),
        "{build:?}"
    );

    // Migrations: applied in chronological order, recorded with their checksums.
    let mut expected = vec!["20250821115406_.sql".to_owned()];
    expected.extend(RELEASE_MIGRATIONS.iter().map(|s| s.to_string()));
    assert_eq!(history(&staging), expected);
    let journal = staging.journals().pop().unwrap();
    let migrated: Vec<String> = effects(&journal)
        .iter()
        .filter(|e| e["namespace"] == "sql" && e["action"] == "migrate")
        .map(|e| e["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(migrated, RELEASE_MIGRATIONS);
    let hash = effects(&journal)
        .iter()
        .find(|e| e["action"] == "migrations")
        .and_then(|e| e["migration_hash"].as_str())
        .expect("migration hash journaled")
        .to_owned();

    // HTTP: every section-5 call with the bearer JWT (the staging answers 401 otherwise),
    // readiness polled through its 503s, flags turned on.
    let server = &staging.server;
    assert_eq!(
        server.requests_to("/v1/tasks")[0]
            .query_param("orgSlug")
            .as_deref(),
        Some("staging")
    );
    assert_eq!(
        server.requests_to("/v1/notifications/mark-all")[0].method,
        "POST"
    );
    assert_eq!(server.requests_to("/readiness").len(), 3);
    let job = &server.requests_to("/v1/autopilot/jobs/run")[0];
    assert_eq!(job.json()["kind"], "extract_documents");
    assert_eq!(
        server
            .requests_to("/v1/storage/object/release-check.txt")
            .len(),
        1
    );
    assert_eq!(server.requests_to("/v1/debug/sentry-test").len(), 1);
    let flag = &server.requests_to("/v1/flags/assistant_dock")[0];
    assert_eq!(
        (flag.method.as_str(), flag.json()["enabled"].clone()),
        ("PUT", Value::Bool(true))
    );
    // glow-run's own requests, that is; the front end's (the browser loading /app) are the app's.
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| !r.path.starts_with("/app/") && r.path != "/favicon.ico")
            .all(|r| r.header("traceparent").is_some())
    );

    // Artifacts and manifest under GO-LIVE/artifacts/<tag>/.
    let store = staging.store();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("manifest.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for name in [
        "coverage/lcov.info",
        "screenshots/home.png",
        "lighthouse-axe-scores.json",
        "k6/autonomy-burst.summary.json",
        "k6/doc-ingestion-spike.summary.json",
        "k6/archive-rebuild.summary.json",
        "deployment-log.md",
        "GO-LIVE_SCORECARD.md",
        "verification.json",
        "evidence.json",
    ] {
        assert!(names.contains(&name), "{name} not in manifest {names:?}");
    }
    let scores: Value = serde_json::from_str(
        &std::fs::read_to_string(store.join("lighthouse-axe-scores.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(scores["lighthouse_accessibility"], 0.98);
    assert_eq!(scores["axe_violations"], 0);
    let log = std::fs::read_to_string(store.join("deployment-log.md")).unwrap();
    assert!(log.contains(&hash), "{log}");
    assert!(
        log.contains("web cache migration ok for production=ref-prod"),
        "{log}"
    );
    assert!(log.contains("helper functions present"), "{log}");
    let scorecard = std::fs::read_to_string(store.join("GO-LIVE_SCORECARD.md")).unwrap();
    assert!(
        !scorecard.contains("| pending |") && scorecard.contains(&hash),
        "{scorecard}"
    );

    // The report: migration hash, command output, the three approvals.
    let run_dir = std::fs::read_dir(staging.root.join(".glow/runs"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .unwrap();
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains(&hash), "{report}");
    assert!(report.contains("web cache migration ok"), "{report}");
    let approvals: Vec<(String, String)> = journal
        .iter()
        .filter(|e| e["kind"] == "approval")
        .map(|e| {
            (
                e["role"].as_str().unwrap().to_owned(),
                e["approver"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        approvals,
        [
            ("security", "sec@example.com"),
            ("devops", "ops@example.com"),
            ("product", "pm@example.com")
        ]
        .map(|(r, a)| (r.to_owned(), a.to_owned()))
    );
    for approver in ["sec@example.com", "ops@example.com", "pm@example.com"] {
        assert!(report.contains(approver), "{report}");
    }
    assert_no_secrets(&staging, &stdout, &stderr);
}

#[test]
fn dry_run_changes_nothing_and_plans_exactly_what_the_live_run_does() {
    let staging = Staging::start(Faults::default());
    let cluster = postgres::cluster();
    let before = cluster.dump(&staging.db.name);
    let (status, stdout, stderr) = staging.run("release.rhai", &["--dry-run"]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        cluster.dump(&staging.db.name),
        before,
        "the dry run changed the database"
    );
    let methods: Vec<String> = staging
        .server
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert!(
        methods.iter().all(|m| m == "GET" || m == "HEAD"),
        "{methods:?}"
    );
    // Only read-only tool calls ran: the secrets listing and the cache migration's --dry-run.
    for call in staging.calls() {
        let read_only = call[..] == ["gh", "secret", "list", "--env", "production"]
            || call[..] == ["pnpm", "supabase:migrate:web-cache", "--dry-run"];
        assert!(read_only, "mutating call in a dry run: {call:?}");
    }
    assert!(!staging.store().exists(), "the dry run wrote artifacts");
    for name in RELEASE_MIGRATIONS {
        assert!(stderr.contains(name), "plan lacks {name}:\n{stderr}");
    }
    assert!(
        stderr.contains("approvals: security, devops, product"),
        "{stderr}"
    );
    let dry = staging.journals().pop().unwrap();
    let plan_event = dry
        .iter()
        .find(|e| e["kind"] == "plan")
        .expect("plan event");
    let planned: Vec<(String, String, String)> = plan_event["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    assert_no_secrets(&staging, &stdout, &stderr);

    let (status, stdout, stderr) = staging.run("release.rhai", &[]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let live = staging.journals().pop().unwrap();
    let performed: Vec<(String, String, String)> = effects(&live)
        .into_iter()
        .filter(|e| e["read_only"] == false)
        .map(key)
        .collect();
    assert!(planned.len() > 40, "{planned:#?}");
    assert_eq!(planned, performed);
}

#[test]
fn failing_gate_exits_1_naming_it_and_compensates_newest_first() {
    let staging = Staging::start(Faults {
        gate_unsatisfied: true,
        ..Faults::default()
    });
    let (status, stdout, stderr) = staging.run("release.rhai", &[]);
    assert_eq!(status, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("environment.mfa.state is \"pending\""),
        "{stderr}"
    );
    let journal = staging.journals().pop().unwrap();
    let rollbacks: Vec<&str> = journal
        .iter()
        .filter(|e| e["kind"] == "step_end" && e["rollback_of"].is_string())
        .map(|e| e["rollback_of"].as_str().unwrap())
        .collect();
    assert_eq!(
        rollbacks,
        [
            "4 Deployment: feature flags",
            "4 Deployment: backend rollout",
            "4 Deployment: frontend",
            "3 Migrations: apply in chronological order",
        ]
    );
    assert!(
        journal
            .iter()
            .filter(|e| e["kind"] == "step_end" && e["rollback_of"].is_string())
            .all(|e| e["outcome"] == "ok")
    );
    // Flags off, backend back on the previous image, frontend rolled back, in that order.
    let calls = staging.calls();
    let back = position(
        &calls,
        &[
            "fly",
            "deploy",
            "--app",
            "prisma-glow-api",
            "--image",
            "ghcr.io/prisma-glow/api:v0.9.0-abc123",
        ],
    );
    let front = position(&calls, &["vercel", "rollback"]);
    assert!(back < front);
    let flag = staging.server.requests_to("/v1/flags/pwa_install");
    assert_eq!(flag.last().unwrap().json()["enabled"], false);
    // The migrations with a down path are reverted and leave the history; the others stay.
    assert_eq!(
        history(&staging),
        [
            "20250821115406_.sql",
            RELEASE_MIGRATIONS[0],
            RELEASE_MIGRATIONS[1]
        ]
    );
    let views = postgres::cluster().psql(
        &staging.db.name,
        "select count(*) from pg_views where viewname = 'web_fetch_cache_metrics'",
    );
    assert_eq!(views.trim(), "0");
    assert!(
        staging
            .server
            .requests_to("/v1/autopilot/jobs/run")
            .is_empty()
    );
    assert_no_secrets(&staging, &stdout, &stderr);
}

#[test]
fn storage_and_cache_faults_fail_their_steps() {
    let staging = Staging::start(Faults {
        storage_direct_allowed: true,
        ..Faults::default()
    });
    let (status, _, stderr) = staging.run("release.rhai", &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("direct GET of release-check.txt answered 200"),
        "{stderr}"
    );

    let staging = Staging::start(Faults {
        stale_cache: true,
        ..Faults::default()
    });
    let (status, _, stderr) = staging.run("release.rhai", &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("outside the 14-day retention window"),
        "{stderr}"
    );
}

#[test]
fn rollback_script_runs_on_its_own() {
    let staging = Staging::start(Faults::default());
    let (status, stdout, stderr) = staging.run("release.rhai", &[]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let (status, stdout, stderr) = staging.run("rollback.rhai", &[]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let calls = staging.calls();
    let last_fly = calls.iter().rposition(|c| c[0] == "fly").unwrap();
    assert!(calls[last_fly].contains(&"ghcr.io/prisma-glow/api:v0.9.0-abc123".to_owned()));
    assert!(calls.iter().any(|c| c[..2] == ["vercel", "rollback"]));
    assert_eq!(
        history(&staging),
        [
            "20250821115406_.sql",
            RELEASE_MIGRATIONS[0],
            RELEASE_MIGRATIONS[1]
        ]
    );
    assert_no_secrets(&staging, &stdout, &stderr);
}

#[test]
fn readme_main_command_plans_the_release_with_no_environment() {
    let state = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(crate::support::BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("GLOW_STATE_DIR", state.path())
        .current_dir(staging::repo())
        .args(readme_main_command());
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for name in RELEASE_MIGRATIONS {
        assert!(
            stderr.contains(&format!("sql migrate {name}")),
            "{name}:\n{stderr}"
        );
    }
    for needed in [
        "approvals: security, devops, product",
        "API_BASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "http post POST https://api-base-url.unset/v1/autopilot/jobs/run",
        "exec run npm ci",
    ] {
        assert!(stderr.contains(needed), "{needed}:\n{stderr}");
    }
    assert!(
        !staging::repo()
            .join("examples/prisma-glow/GO-LIVE/artifacts")
            .exists()
    );

    // Without vars the workspace is "." (the repository itself, not an application checkout):
    // the run stops before any step and says which var to pass.
    let output = std::process::Command::new(crate::support::BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("GLOW_STATE_DIR", state.path())
        .current_dir(staging::repo())
        .args(["scripts/release.rhai", "--dry-run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--var workspace=DIR"), "{stderr}");

    // The rollback plan on its own, in a dry run with no environment: planned, with its needs.
    let output = std::process::Command::new(crate::support::BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("GLOW_STATE_DIR", state.path())
        .current_dir(staging::repo())
        .args([
            "scripts/rollback.rhai",
            "--dry-run",
            "--var",
            "workspace=examples/prisma-glow",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for needed in [
        "vars: previous_image",
        "exec run vercel rollback --yes",
        "drop view if exists public.web_fetch_cache_metrics",
        "http wait_until GET https://api-base-url.unset/readiness",
    ] {
        assert!(stderr.contains(needed), "{needed}:\n{stderr}");
    }
}

/// The arguments of the README's main command (`cargo run --release -- ARGS`), so the README
/// cannot drift from what this test proves.
fn readme_main_command() -> Vec<String> {
    let readme = std::fs::read_to_string(staging::repo().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find_map(|line| line.trim().strip_prefix("cargo run --release -- "))
        .expect("the README shows the main command as `cargo run --release -- ...`");
    assert!(line.starts_with("scripts/release.rhai --dry-run"), "{line}");
    line.split_whitespace().map(str::to_owned).collect()
}
