//! A simulated staging for the release runbook (scripts/release.rhai): an HTTP server with the
//! API the runbook calls (tasks, storage, notifications, release controls, health, readiness,
//! autopilot, signed URLs, Sentry test events, feature flags), a real PostgreSQL database with
//! the state staging has before a release (helper functions applied through glow-run's history,
//! `openai_debug_events` rows, the web fetch cache), stand-in tools on PATH that record their
//! argv and produce the files real ones would (coverage, screenshots, Lighthouse and axe JSON,
//! k6 summaries), and a copy of examples/prisma-glow as the application workspace (a git
//! checkout with a clean status).
//!
//! The deployed front end (`STAGING_URL` = the server's `/app`) is the small PWA of
//! tests/support/pwa.rs, its uploads going to `POST /v1/storage/upload`.
//!
//! Fault switches (`Faults`): a release-controls gate unsatisfied, readiness 503 a few times,
//! storage direct GET allowed by mistake, stale cache metrics, and the PWA's own (`pwa`).

use super::http_server::{HttpServer, Reply, Request};
use super::postgres::{self, Database};
use super::pwa::{self, PwaFaults};
use super::tools;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const JWT: &str = "jwt-canary-5d1e77b2";
pub const SERVICE_ROLE_KEY: &str = "srk-canary-90c4aa1f";
pub const CONFIG_TOKEN: &str = "cfg-canary-3b8e21d0";
pub const TAG: &str = "v1.0.0";
pub const FLAGS: &str = "assistant_dock,pwa_install";
pub const RELEASE_MIGRATIONS: [&str; 4] = [
    "20250926090000_tasks_documents_notifications.sql",
    "20250926181500_activity_event_catalog_rls.sql",
    "20251115122000_web_fetch_cache.sql",
    "20251115123000_web_fetch_cache_retention.sql",
];

#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// `environment.mfa.state` is "pending".
    pub gate_unsatisfied: bool,
    /// /readiness answers 503 this many times before 200.
    pub readiness_503: usize,
    /// A direct GET of a stored object answers 200 instead of 403.
    pub storage_direct_allowed: bool,
    /// The web fetch cache holds an entry older than the 14-day retention.
    pub stale_cache: bool,
    /// Faults of the front end.
    pub pwa: PwaFaults,
}

pub struct Staging {
    pub server: HttpServer,
    /// Staging's OTLP/HTTP collector (answers `POST /v1/traces`), apart from the API so the
    /// API's request log holds the runbook's calls only.
    pub collector: HttpServer,
    pub db: Database,
    /// Stand-in tools (and their `calls.log`).
    pub tools: PathBuf,
    /// The test's working directory (glow-run runs here); the workspace is `root/app`.
    pub root: PathBuf,
}

/// The repository root (where scripts/ and examples/ are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() == "artifacts" {
                continue;
            }
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.email=dev@example.com", "-c", "user.name=dev"])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .output()
        .expect("git");
    assert!(status.status.success(), "git {args:?}: {status:?}");
}

/// A stand-in that logs its argv like `tools::standin`, fails on `STANDIN_FAIL_<NAME>`, and
/// otherwise runs `body` (shell) to print or produce files.
fn standin(dir: &Path, name: &str, body: &str) {
    let log = dir.join("calls.log").display().to_string();
    let upper = name.to_uppercase().replace('-', "_");
    let script = [
        "#!/bin/sh".to_owned(),
        format!("printf '%s' '{name}' >> '{log}'"),
        format!("for a in \"$@\"; do printf '\\t%s' \"$a\" >> '{log}'; done"),
        format!("printf '\\n' >> '{log}'"),
        format!(
            "if [ -n \"$STANDIN_FAIL_{upper}\" ]; then echo '{name} failed' >&2; exit \"$STANDIN_FAIL_{upper}\"; fi"
        ),
        body.to_owned(),
        "exit 0".to_owned(),
    ]
    .join("\n");
    let path = dir.join(name);
    std::fs::write(&path, script + "\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn tools_in(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    standin(
        dir,
        "npm",
        "case \"$*\" in\n  test) mkdir -p coverage && echo 'TN:' > coverage/lcov.info ;;\n  'run test:playwright') mkdir -p test-results && printf 'png' > test-results/home.png ;;\nesac\necho \"npm $* ok\"",
    );
    standin(
        dir,
        "npx",
        "case \"$*\" in\n  *lighthouse*) echo '{\"categories\":{\"performance\":{\"score\":0.93},\"accessibility\":{\"score\":0.98}}}' > lighthouse.json ;;\n  *axe*) echo '[{\"url\":\"staging\",\"violations\":[]}]' > axe.json ;;\nesac",
    );
    standin(
        dir,
        "k6",
        "while [ $# -gt 0 ]; do if [ \"$1\" = --summary-export ]; then shift; echo '{\"metrics\":{\"http_req_failed\":{\"value\":0}}}' > \"$1\"; fi; shift; done\necho 'k6 done'",
    );
    standin(
        dir,
        "pnpm",
        "echo \"pnpm $*: web cache migration ok for $SUPABASE_PROJECTS\"",
    );
    standin(
        dir,
        "gh",
        "printf 'DOMAIN_TOOL_MODEL\\t2026-01-01\\nDOMAIN_IMAGE_MODEL\\t2026-01-01\\nOPENAI_WEB_SEARCH_ENABLED\\t2026-01-01\\n'",
    );
    for name in ["docker", "vercel", "netlify", "fly", "render", "kubectl"] {
        standin(dir, name, &format!("echo '{name} ok'"));
    }
}

fn json_reply(value: serde_json::Value) -> Reply {
    Reply::json(200, value)
}

fn authorized(request: &Request) -> bool {
    request.header("authorization") == Some(&format!("Bearer {JWT}"))
}

impl Staging {
    pub fn start(faults: Faults) -> Self {
        let root = tempfile::Builder::new()
            .prefix("glow-staging-")
            .tempdir()
            .unwrap()
            .keep();
        let tools = root.join("tools");
        tools_in(&tools);
        let app = root.join("app");
        copy_dir(&repo().join("examples/prisma-glow"), &app);
        git(&app, &["init", "-q", "-b", "release"]);
        git(&app, &["add", "-A"]);
        git(&app, &["commit", "-q", "-m", "prisma-glow"]);

        let server = HttpServer::start();
        Self::routes(&server, faults);
        let db = postgres::database();
        let collector = HttpServer::start();
        collector.route_method(
            "POST",
            "/v1/traces",
            [Reply::status(200).header("content-type", "application/x-protobuf")],
        );
        let staging = Self {
            server,
            collector,
            db,
            tools,
            root,
        };
        staging.seed_database(faults);
        staging
    }

    fn routes(server: &HttpServer, faults: Faults) {
        let guarded = |body: serde_json::Value| {
            move |request: &Request| {
                if authorized(request) {
                    json_reply(body.clone())
                } else {
                    Reply::json(401, serde_json::json!({ "error": "bad token" }))
                }
            }
        };
        server.handle("/v1/tasks", guarded(serde_json::json!({ "items": [] })));
        server.handle(
            "/v1/storage/documents",
            guarded(serde_json::json!({ "items": [] })),
        );
        server.handle(
            "/v1/notifications/mark-all",
            guarded(serde_json::json!({ "updated": 3 })),
        );
        let mfa = if faults.gate_unsatisfied {
            "pending"
        } else {
            "satisfied"
        };
        server.handle(
            "/api/release-controls/check",
            guarded(serde_json::json!({ "environment": {
                "autonomy": { "state": "satisfied" }, "mfa": { "state": mfa },
                "telemetry": { "open": 1, "maxOpen": 3 } } })),
        );
        server.route(
            "/health",
            [Reply::json(200, serde_json::json!({ "ok": true }))],
        );
        let mut readiness = vec![Reply::status(503); faults.readiness_503];
        readiness.push(Reply::json(200, serde_json::json!({ "ready": true })));
        server.route("/readiness", readiness);
        server.handle(
            "/v1/autopilot/jobs/run",
            guarded(serde_json::json!({ "id": "job-1", "kind": "extract_documents" })),
        );
        let signed = server.url("/signed/release-check.txt");
        server.handle(
            "/v1/storage/sign",
            guarded(serde_json::json!({ "signedUrl": format!("{signed}?token=t1") })),
        );
        server.route("/signed/release-check.txt", [Reply::text(200, "ok")]);
        server.route(
            "/v1/storage/object/release-check.txt",
            [if faults.storage_direct_allowed {
                Reply::text(200, "ok")
            } else {
                Reply::status(403)
            }],
        );
        pwa::mount(server, "/app", faults.pwa, "/v1/storage/upload");
        server.handle(
            "/v1/debug/sentry-test",
            guarded(serde_json::json!({ "eventId": "evt-1" })),
        );
        for flag in FLAGS.split(',') {
            server.handle(&format!("/v1/flags/{flag}"), |request: &Request| {
                if request.header("authorization") == Some(&format!("Bearer {CONFIG_TOKEN}")) {
                    json_reply(request.json())
                } else {
                    Reply::status(401)
                }
            });
        }
    }

    fn seed_database(&self, faults: Faults) {
        let cluster = postgres::cluster();
        // Staging was migrated by an earlier release: the helper functions are in glow-run's
        // history, so this release applies exactly the four seed migrations.
        let history = self.root.join("history");
        std::fs::create_dir_all(&history).unwrap();
        std::fs::copy(
            self.app().join("supabase/migrations/20250821115406_.sql"),
            history.join("20250821115406_.sql"),
        )
        .unwrap();
        let mut command = Command::new(super::BIN);
        super::hermetic(&mut command);
        let out = command
            .current_dir(&self.root)
            .args([
                "-e",
                "sql::connect(env::secret(\"DB\")).migrate(\"history\");",
            ])
            .env("DB", &self.db.url)
            .env("GLOW_STATE_DIR", self.root.join("seed-state"))
            .output()
            .unwrap();
        assert!(out.status.success(), "seeding staging: {out:?}");
        let fixtures = repo().join("tests/fixtures");
        cluster.psql(
            &self.db.name,
            &std::fs::read_to_string(
                fixtures.join("staging/20251120090000_openai_debug_events.sql"),
            )
            .unwrap(),
        );
        cluster.psql(
            &self.db.name,
            "insert into public.openai_debug_events (scope, vector_store_id, citations) values \
             ('rag_file_search', 'vs_staging', '[{\"file\": \"handbook.pdf\"}]'), ('chat', null, '[]')",
        );
        // The RAG service created its cache table before this release's retention migration.
        cluster.psql(
            &self.db.name,
            &std::fs::read_to_string(repo().join(
                "examples/prisma-glow/supabase/migrations/20251115122000_web_fetch_cache.sql",
            ))
            .unwrap(),
        );
        let age = if faults.stale_cache { 20 } else { 2 };
        cluster.psql(
            &self.db.name,
            &format!(
                "insert into public.web_fetch_cache (url, content, content_hash, fetched_at) values \
                 ('https://example.com/a', 'page', 'h1', now() - interval '{age} days')"
            ),
        );
    }

    pub fn app(&self) -> PathBuf {
        self.root.join("app")
    }

    /// The artifact store of the release: app/GO-LIVE/artifacts/<tag>.
    pub fn store(&self) -> PathBuf {
        self.app().join("GO-LIVE/artifacts").join(TAG)
    }

    pub fn calls(&self) -> Vec<Vec<String>> {
        tools::calls(&self.tools)
    }

    /// glow-run with the release environment, the stand-ins on PATH, approvals answered, in
    /// `root`, against the workspace `app`.
    pub fn command(&self, script: &str, extra: &[&str]) -> Command {
        self.command_at(&repo().join("scripts").join(script), extra)
    }

    /// Like `command`, for a script given by path (a copy of scripts/ the test may edit).
    pub fn command_at(&self, script: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(super::BIN);
        super::hermetic(&mut command);
        let api = self.server.url("");
        command
            .current_dir(&self.root)
            .arg(script)
            .args(["--var", "workspace=app", "--var", &format!("tag={TAG}")])
            .args(["--var", &format!("feature_flags={FLAGS}")])
            .args([
                "--var",
                "previous_image=ghcr.io/prisma-glow/api:v0.9.0-abc123",
            ])
            .args(extra)
            .env("PATH", tools::path_with(&self.tools))
            .env("SUPABASE_URL", "https://staging-ref.supabase.co")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", self.collector.url(""))
            .env("SENTRY_DSN", "https://public@sentry.example.com/1")
            .env("API_ALLOWED_ORIGINS", "https://app.example.com")
            .env("API_BASE_URL", &api)
            .env("STAGING_URL", format!("{api}/app"))
            .env(
                "SUPABASE_PROJECTS",
                "preview=ref-preview,production=ref-prod",
            )
            .env("CONFIG_SERVICE_URL", &api)
            .env("SUPABASE_SERVICE_ROLE_KEY", SERVICE_ROLE_KEY)
            .env("SUPABASE_DB_URL", &self.db.url)
            .env("RELEASE_JWT", JWT)
            .env("CONFIG_SERVICE_TOKEN", CONFIG_TOKEN)
            .env("GLOW_ANSWER_APPROVE_SECURITY", "sec@example.com")
            .env("GLOW_ANSWER_APPROVE_DEVOPS", "ops@example.com")
            .env("GLOW_ANSWER_APPROVE_PRODUCT", "pm@example.com");
        command
    }

    /// Runs a script (release.rhai, rollback.rhai) and returns (status, stdout, stderr).
    pub fn run(&self, script: &str, extra: &[&str]) -> (i32, String, String) {
        let mut command = self.command(script, extra);
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = command.spawn().expect("spawn glow-run");
        let output = super::wait_with_timeout(child, std::time::Duration::from_secs(240));
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The journals of the runs made in `root`, oldest first.
    pub fn journals(&self) -> Vec<Vec<serde_json::Value>> {
        super::Finished {
            status: 0,
            stdout: String::new(),
            stderr: String::new(),
            dir: self.root.clone(),
            keep: None,
        }
        .journals()
    }

    /// Every file glow-run wrote (state dir and artifact store), as text.
    pub fn written_files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for dir in [
            self.root.join(".glow"),
            self.app().join("GO-LIVE/artifacts"),
        ] {
            collect(&dir, &mut out);
        }
        out
    }
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
