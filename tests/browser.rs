//! The `browser` namespace and the runbook's front-end checks in a real headless Chromium (the
//! one `.ci/run` installs), against the small PWA of tests/support/pwa.rs: the release's
//! section 5 front-end steps on the simulated staging (good app, each fault failing its step,
//! dry run), the UI upload, policy on navigations, secrets typed with `fill`, a missing
//! browser, and no Chromium left behind after Ctrl-C, a step timeout or a SIGKILL.

use crate::support::http_server::Reply;
use crate::support::pwa::{self, PAGES, PwaFaults};
use crate::support::staging::{Faults, Staging};
use crate::support::{Test, poll, wait_with_timeout};
use serde_json::Value;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Processes whose command line mentions `needle` (a run's profile folder), from /proc.
fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && crate::support::process_alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Waits (bounded) until no process mentions `needle`; returns those still there.
fn survivors(needle: &str, within: Duration) -> Vec<(i32, String)> {
    match poll(within, || {
        processes_mentioning(needle).is_empty().then_some(())
    }) {
        Some(()) => Vec::new(),
        None => processes_mentioning(needle),
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn run_release(staging: &Staging, extra: &[&str]) -> (i32, String, String) {
    staging.run("release.rhai", extra)
}

fn failed_step(staging: &Staging) -> (String, String) {
    let journal = staging.journals().pop().unwrap();
    let failed = journal
        .iter()
        .find(|e| e["kind"] == "step_end" && e["outcome"] == "failed" && e["rollback_of"].is_null())
        .unwrap_or_else(|| panic!("no failed step in {journal:#?}"));
    (
        failed["step"].as_str().unwrap().to_owned(),
        failed["error"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn release_frontend_good_app_stores_a_real_png_per_page_and_uploads_through_the_ui() {
    let staging = Staging::start(Faults::default());
    std::fs::write(staging.root.join("release-check.txt"), "release check\n").unwrap();
    let (status, stdout, stderr) = run_release(&staging, &["--var", "storage_ui=true"]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let store = staging.store();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("manifest.json")).unwrap())
            .unwrap();
    for page in PAGES {
        let name = format!("frontend/{page}.png");
        let entry = manifest["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in {manifest:#}"));
        let path = store.join(&name);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.len() > PNG_SIGNATURE.len(),
            "{} is empty",
            path.display()
        );
        assert_eq!(
            &bytes[..8],
            PNG_SIGNATURE,
            "{} is not a PNG",
            path.display()
        );
        assert_eq!(entry["sha256"], sha256(&bytes), "{name}");
        assert_eq!(entry["size"], bytes.len() as u64, "{name}");
        assert_eq!(entry["step"], "5 Frontend: pages load");
        // Kept after the staging is gone, for a person to look at.
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("browser-e2e")
            .join(&name);
        std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
        std::fs::copy(&path, &kept).unwrap();
        eprintln!("screenshot: {}", kept.display());
    }
    // Every page was loaded by the browser, the PWA's manifest, icons and worker fetched.
    let server = &staging.server;
    for path in [
        "/app/tasks",
        "/app/documents",
        "/app/onboarding",
        "/app/assistant",
    ] {
        assert!(
            !server.requests_to(path).is_empty(),
            "{path} never requested"
        );
    }
    assert!(!server.requests_to("/app/manifest.webmanifest").is_empty());
    assert!(!server.requests_to("/app/icons/icon-192.png").is_empty());
    // The document went up through the form, then the signed URL and the direct GET were checked.
    let uploads = server.requests_to("/v1/storage/upload");
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].method, "POST");
    assert_eq!(
        uploads[0].query_param("name").as_deref(),
        Some("release-check.txt")
    );
    assert_eq!(uploads[0].body_text(), "release check\n");
    let sign = &server.requests_to("/v1/storage/sign")[0];
    assert!(sign.at > uploads[0].at);
    let verification: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("verification.json")).unwrap())
            .unwrap();
    assert_eq!(verification["storage_upload"], "uploaded release-check.txt");
    assert_eq!(verification["pwa"]["installable"], true);
    assert_eq!(verification["frontend_pages"][0]["status"], 200);
    // Every browser call is journaled with its URL (and selector where it has one).
    let journal = staging.journals().pop().unwrap();
    let browser: Vec<&Value> = journal
        .iter()
        .filter(|e| e["kind"] == "effect" && e["namespace"] == "browser")
        .collect();
    let click = browser
        .iter()
        .find(|e| e["action"] == "click")
        .expect("click journaled");
    assert_eq!(click["args"]["selector"], "#document-upload");
    assert!(
        click["target"]
            .as_str()
            .unwrap()
            .ends_with("/app/documents"),
        "{click}"
    );
    assert_eq!(click["read_only"], false);
    assert!(
        browser.iter().any(|e| e["action"] == "wait_for"
            && e["args"]["selector"] == "[data-testid=assistant-dock]")
    );
    assert!(browser.iter().all(|e| {
        e["target"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    }));
}

#[test]
fn release_frontend_faults_fail_their_steps_naming_the_page() {
    let cases: [(PwaFaults, &str, &[&str]); 4] = [
        (
            PwaFaults {
                no_dock: Some("onboarding"),
                ..PwaFaults::default()
            },
            "5 Frontend: assistant dock",
            &[
                "assistant dock missing on page",
                "/app/onboarding",
                "[data-testid=assistant-dock]",
            ],
        ),
        (
            PwaFaults {
                manifest_without_icons: true,
                ..PwaFaults::default()
            },
            "5 Frontend: PWA installable",
            &[
                "is not installable",
                "/app/tasks",
                "lacks icons",
                "manifest-missing-suitable-icon",
            ],
        ),
        (
            PwaFaults {
                console_error: Some("documents"),
                ..PwaFaults::default()
            },
            "5 Frontend: pages load",
            &[
                "page /documents",
                "console error",
                "documents: failed to load widgets",
            ],
        ),
        (
            PwaFaults {
                slow: Some("assistant"),
                ..PwaFaults::default()
            },
            "5 Frontend: pages load",
            &["/app/assistant did not load within 3s"],
        ),
    ];
    for (faults, step, needles) in cases {
        let staging = Staging::start(Faults {
            pwa: faults,
            ..Faults::default()
        });
        let (status, stdout, stderr) = run_release(&staging, &["--var", "frontend_timeout=3s"]);
        assert_eq!(
            status, 1,
            "{faults:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let (failed, error) = failed_step(&staging);
        assert_eq!(failed, step, "{faults:?}: {error}");
        for needle in needles {
            assert!(
                error.contains(needle),
                "{faults:?}: {needle:?} not in: {error}"
            );
            assert!(
                stderr.contains(needle),
                "{faults:?}: {needle:?} not in stderr"
            );
        }
    }
}

#[test]
fn release_dry_run_reads_the_frontend_and_plans_the_upload_without_posting() {
    let staging = Staging::start(Faults::default());
    std::fs::write(staging.root.join("release-check.txt"), "release check\n").unwrap();
    let (status, stdout, stderr) =
        run_release(&staging, &["--dry-run", "--var", "storage_ui=true"]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let requests = staging.server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.method == "GET" || r.method == "HEAD"),
        "{:?}",
        requests
            .iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
    // The pages were really read (a dry run checks staging) ...
    assert!(!staging.server.requests_to("/app/onboarding").is_empty());
    assert!(
        !staging
            .server
            .requests_to("/app/manifest.webmanifest")
            .is_empty()
    );
    // ... the upload never reached it, and nothing was stored.
    assert!(staging.server.requests_to("/v1/storage/upload").is_empty());
    assert!(!staging.store().exists());
    let journal = staging.journals().pop().unwrap();
    let plan = journal.iter().find(|e| e["kind"] == "plan").unwrap();
    let planned: Vec<String> = plan["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["namespace"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap()
            )
        })
        .collect();
    for page in PAGES {
        let line = format!("artifact write frontend/{page}.png");
        assert!(planned.contains(&line), "{line} not planned: {planned:#?}");
    }
    assert!(
        planned
            .iter()
            .any(|l| l.starts_with("browser upload ") && l.ends_with("/app/documents")),
        "{planned:#?}"
    );
    assert!(
        planned.iter().any(|l| l.starts_with("browser click ")),
        "{planned:#?}"
    );
    assert!(stderr.contains("browser click"), "{stderr}");
}

/// A script run in its own TMPDIR, so the browser profile it creates can be found in /proc.
fn isolated(script: &str) -> (Test, PathBuf) {
    let test = Test::new().script(script);
    let tmp = test.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let tmp_text = tmp.display().to_string();
    (test.env("TMPDIR", &tmp_text), tmp)
}

fn profile_needle(tmp: &Path) -> String {
    format!("{}/glow-browser-", tmp.display())
}

#[test]
fn ctrl_c_while_a_page_loads_exits_130_and_leaves_no_chromium() {
    let server = pwa::start(PwaFaults {
        slow: Some("tasks"),
        ..PwaFaults::default()
    });
    let (test, tmp) = isolated(&format!(
        "step(\"load\", || browser::open(\"{}\"));",
        server.url("/app/tasks")
    ));
    let child = test
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_for_requests(1, Duration::from_secs(30));
    assert!(
        !processes_mentioning(&profile_needle(&tmp)).is_empty(),
        "no browser running"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = wait_with_timeout(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert_eq!(survivors(&profile_needle(&tmp), Duration::from_secs(5)), []);
    // The temporary profile went with the browser.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

#[test]
fn step_timeout_while_a_page_loads_exits_1_and_leaves_no_chromium() {
    let server = pwa::start(PwaFaults {
        slow: Some("tasks"),
        ..PwaFaults::default()
    });
    let (test, tmp) = isolated(&format!(
        "step(\"load\", #{{ timeout: \"5s\" }}, || browser::open(\"{}\"));",
        server.url("/app/tasks")
    ));
    let finished = test.status(1);
    assert!(
        finished.stderr.contains("timed out after 5s"),
        "{}",
        finished.stderr
    );
    assert_eq!(server.requests_to("/app/tasks").len(), 1);
    assert_eq!(survivors(&profile_needle(&tmp), Duration::from_secs(5)), []);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "profile left in {}",
        tmp.display()
    );
}

#[test]
fn a_run_that_ends_normally_removes_its_browser_and_profile() {
    let server = pwa::start(PwaFaults::default());
    let (test, tmp) = isolated(&format!(
        "let page = browser::open(\"{}\");\ncheck(page.status() == 200, \"status\");",
        server.url("/app/tasks")
    ));
    let _kept = test.status(0);
    assert_eq!(survivors(&profile_needle(&tmp), Duration::from_secs(5)), []);
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

#[test]
fn sigkill_of_glow_run_takes_chromium_with_it() {
    let server = pwa::start(PwaFaults {
        slow: Some("tasks"),
        ..PwaFaults::default()
    });
    let (test, tmp) = isolated(&format!("browser::open(\"{}\");", server.url("/app/tasks")));
    let mut child = test.command().spawn().unwrap();
    server.wait_for_requests(1, Duration::from_secs(30));
    assert!(
        !processes_mentioning(&profile_needle(&tmp)).is_empty(),
        "no browser running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        survivors(&profile_needle(&tmp), Duration::from_secs(10)),
        []
    );
}

#[test]
fn page_functions_read_the_app_and_fill_redacts_secrets() {
    let server = pwa::start(PwaFaults::default());
    let login = "<!doctype html><title>Login</title><h1>Sign in</h1>\
        <input id=\"user\"><input id=\"pw\" type=\"password\"><input id=\"token\">\
        <button id=\"go\" onclick=\"document.body.dataset.sent = document.getElementById('user').value\">Go</button>";
    server.route(
        "/login",
        [Reply::status(200)
            .header("content-type", "text/html")
            .body(login.as_bytes())],
    );
    server.route(
        "/missing",
        [Reply::status(404)
            .header("content-type", "text/html")
            .body(b"<title>nope</title>")],
    );
    let finished = Test::new()
        .script(&format!(
            r##"
            let page = browser::open("{base}/login");
            check(page.title() == "Login", "title " + page.title());
            check(page.text("h1") == "Sign in", "text");
            check(page.exists("#pw") && !page.exists("#nope"), "exists");
            check(page.status() == 200, "status");
            page.fill("#user", "release-bot");
            page.fill("#pw", "pw-canary-11aa");
            page.fill("#token", "tok-canary-22bb", #{{ secret: true }});
            page.click("#go");
            page.wait_for("body[data-sent=release-bot]", #{{ timeout: "5s" }});
            check(page.console_errors().len() == 0, "console");
            page.close();
            let gone = browser::open("{base}/missing");
            check(gone.status() == 404, "404 status " + gone.status());
            let app = browser::open("{base}/app/tasks");
            let m = app.manifest();
            check(m.manifest.name == "Prisma Glow" && m.manifest.icons.len() == 2, "manifest");
            check(app.installability().len() == 0, "installable: " + app.installability());
            let shot = app.screenshot("tasks.png");
            check(shot.size > 0 && !shot.planned, "screenshot");
            check(app.url().ends_with("/app/tasks"), app.url());
            "##,
            base = server.url("")
        ))
        .status(0);
    for secret in ["pw-canary-11aa", "tok-canary-22bb"] {
        assert!(!finished.stderr.contains(secret) && !finished.stdout.contains(secret));
        assert!(
            !finished.journal_text().contains(secret),
            "{secret} in the journal"
        );
    }
    assert!(
        finished.journal_text().contains("release-bot"),
        "plain fill text journaled"
    );
}

#[test]
fn allow_hosts_applies_to_open_and_to_where_the_page_navigates() {
    let server = pwa::start(PwaFaults::default());
    let elsewhere = format!("http://localhost:{}/app/tasks", server.port());
    server.route("/hop", [Reply::status(302).header("location", &elsewhere)]);
    let policy = "[http]\nallow_hosts = [\"127.0.0.1\"]\n";
    let finished = Test::new()
        .file("glow.toml", policy)
        .script(&format!("browser::open(\"{elsewhere}\");"))
        .status(1);
    assert!(
        finished.stderr.contains("policy refuses host 'localhost'"),
        "{}",
        finished.stderr
    );
    assert!(
        server.requests().is_empty(),
        "the refused open reached the server"
    );
    let finished = Test::new()
        .file("glow.toml", policy)
        .script(&format!("browser::open(\"{}\");", server.url("/hop")))
        .status(1);
    assert!(
        finished
            .stderr
            .contains(&format!("navigation to {elsewhere} refused")),
        "{}",
        finished.stderr
    );
    assert!(server.requests_to("/app/tasks").is_empty());
}

#[test]
fn a_missing_browser_is_an_error_naming_what_was_looked_for_and_a_need_in_a_dry_run() {
    let empty = tempfile::tempdir().unwrap();
    let path = format!("{}:/usr/bin/env-not-here", empty.path().display());
    let script = "step(\"front\", || { let page = browser::open(\"http://127.0.0.1:9/app\"); page.click(\"#go\"); });";
    let finished = Test::new().script(script).env("PATH", &path).status(1);
    assert!(
        finished
            .stderr
            .contains("none of chromium, chromium-browser, google-chrome is on PATH"),
        "{}",
        finished.stderr
    );
    let finished = Test::new()
        .script(script)
        .env("GLOW_BROWSER", "/nonexistent/chrome")
        .status(1);
    assert!(
        finished.stderr.contains("GLOW_BROWSER=/nonexistent/chrome"),
        "{}",
        finished.stderr
    );
    let finished = Test::new()
        .script(script)
        .env("PATH", &path)
        .arg("--dry-run")
        .status(0);
    assert!(
        finished
            .stderr
            .contains("programs not on PATH: chromium (or GLOW_BROWSER)"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("browser click"),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_browser_that_dies_at_start_and_a_selector_that_never_matches_say_what_and_where() {
    let test = Test::new();
    let fake = test.path().join("fake-chrome");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake-chrome: cannot open display' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fake = fake.display().to_string();
    let finished = test
        .script("browser::open(\"http://127.0.0.1:9/\");")
        .env("GLOW_BROWSER", &fake)
        .status(1);
    assert!(
        finished
            .stderr
            .contains("it exited before printing its DevTools address")
            && finished.stderr.contains("fake-chrome: cannot open display"),
        "{}",
        finished.stderr
    );

    let server = pwa::start(PwaFaults::default());
    let url = server.url("/app/tasks");
    let finished = Test::new()
        .script(&format!(
            "let page = browser::open(\"{url}\");\npage.wait_for(\"#never\", #{{ timeout: \"300ms\" }});"
        ))
        .status(1);
    assert!(
        finished.stderr.contains(&format!(
            "page.wait_for: {url}: no element matches '#never' after 300ms"
        )),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("script.rhai:2"),
        "{}",
        finished.stderr
    );
}

#[test]
fn chromes_documented_criteria_agree_with_chromes_own_verdict() {
    for (faults, installable) in [
        (PwaFaults::default(), true),
        (
            PwaFaults {
                manifest_without_icons: true,
                ..PwaFaults::default()
            },
            false,
        ),
    ] {
        let server = pwa::start(faults);
        let finished = Test::new()
            .script(&format!(
                r#"
                let page = browser::open("{}");
                let chrome = page.installability().map(|e| e.id);
                let criteria = page.installability(#{{ criteria: true }}).map(|e| e.id);
                print(`chrome=${{chrome}}`);
                print(`criteria=${{criteria}}`);
                "#,
                server.url("/app/tasks")
            ))
            .status(0);
        let line = |prefix: &str| {
            finished
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {}", finished.stdout))
                .to_owned()
        };
        let (chrome, criteria) = (line("chrome="), line("criteria="));
        if installable {
            assert_eq!((chrome.as_str(), criteria.as_str()), ("[]", "[]"));
        } else {
            assert!(
                chrome.contains("manifest-missing-suitable-icon"),
                "{chrome}"
            );
            assert_eq!(criteria, "[\"manifest-missing-suitable-icon\"]");
        }
    }
}
