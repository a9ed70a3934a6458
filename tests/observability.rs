//! Observability and CI: the run exported as an OpenTelemetry trace to a real OTLP/HTTP
//! receiver (the test HTTP server on 127.0.0.1, its protobuf decoded with the
//! `opentelemetry-proto` types), GitHub Actions workflow commands, the example workflow, and the
//! live status line under a real pseudo-terminal (expectrl).

use crate::support::http_server::{HttpServer, Reply, Request};
use crate::support::staging::{self, Faults, Staging};
use crate::support::*;
use expectrl::Expect;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::Value;
use std::time::Duration;

const CANARY: &str = "otel-canary-7f3a91c2";
const HEADER_CANARY: &str = "hdr-canary-22b9e4d1";

/// A collector: answers OTLP/HTTP export requests with 200.
fn collector() -> HttpServer {
    let server = HttpServer::start();
    server.route_method(
        "POST",
        "/v1/traces",
        [Reply::status(200).header("content-type", "application/x-protobuf")],
    );
    server
}

/// Every span the collector received, with the service name of its resource.
fn received(requests: &[Request]) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for request in requests.iter().filter(|r| r.path == "/v1/traces") {
        assert_eq!(
            request.header("content-type"),
            Some("application/x-protobuf")
        );
        let export = ExportTraceServiceRequest::decode(&request.body[..])
            .expect("an OTLP protobuf export request");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    spans
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
}

fn named<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
            panic!("no span named {name:?} in {names:?}")
        })
}

fn run_event<'a>(journal: &'a [Value], kind: &str) -> &'a Value {
    journal
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event"))
}

/// `00-TRACE-PARENT-01` -> (trace id, parent id).
fn traceparent(request: &Request) -> (String, String) {
    let header = request.header("traceparent").expect("a traceparent header");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[test]
fn otlp_trace_is_the_run_with_steps_effects_and_the_apis_parent_ids() {
    let api = HttpServer::start();
    api.route(
        "/health",
        [Reply::json(200, serde_json::json!({ "ok": true }))],
    );
    let otel = collector();
    let base = otel.url("");
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            let token = env::secret("API_TOKEN");
            step("deploy", || {{
                http::get("{}", #{{ bearer: token }});
                exec::run("sh", ["-c", "exit 0", token]);
                let db = sql::connect("sqlite:app.db");
                db.execute("create table releases (tag text)");
            }});
            step("verify", || {{
                throw "health check failed for " + token;
            }});
            "#,
            api.url("/health")
        ))
        .env("API_TOKEN", CANARY)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &base)
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            &format!("x-api-key={HEADER_CANARY}"),
        )
        .env("OTEL_SERVICE_NAME", "release-tests")
        .expect(1);
    let journal = out.journal();
    let start = run_event(&journal, "run_start");
    let end = run_event(&journal, "run_end");
    let trace_id = start["trace_id"].as_str().unwrap().to_owned();
    let endpoint = format!("{base}/v1/traces");
    assert_eq!(start["otlp"]["endpoint"], endpoint.as_str());
    assert_eq!(end["otlp"]["exported"], true, "{end}");

    let requests = otel.requests();
    assert_eq!(
        requests[0].header("x-api-key"),
        Some(HEADER_CANARY),
        "OTEL_EXPORTER_OTLP_HEADERS are sent"
    );
    let spans = received(&requests);
    assert_eq!(end["otlp"]["spans"], spans.len() as u64);
    assert!(spans.iter().all(|(service, _)| service == "release-tests"));
    // One trace, the run's: the one the API saw in traceparent.
    let (seen_trace, parent_id) = traceparent(&api.requests_to("/health")[0]);
    assert_eq!(seen_trace, trace_id);
    assert!(
        spans
            .iter()
            .all(|(_, s)| hex::encode(&s.trace_id) == trace_id)
    );

    let root = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.parent_span_id.is_empty())
        .expect("a root span");
    assert_eq!(root.name, "RUN script.rhai");
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(
        attr(root, "cicd.pipeline.name").as_deref(),
        Some("script.rhai")
    );
    assert_eq!(
        attr(root, "cicd.pipeline.run.id"),
        start["run"].as_str().map(str::to_owned)
    );
    assert_eq!(
        attr(root, "cicd.pipeline.result").as_deref(),
        Some("failure")
    );

    let deploy = named(&spans, "deploy");
    assert_eq!(deploy.parent_span_id, root.span_id);
    assert_eq!(
        attr(deploy, "cicd.pipeline.task.name").as_deref(),
        Some("deploy")
    );
    assert_eq!(
        attr(deploy, "cicd.pipeline.task.run.result").as_deref(),
        Some("success")
    );
    let verify = named(&spans, "verify");
    assert_eq!(verify.parent_span_id, root.span_id);
    assert_eq!(
        attr(verify, "cicd.pipeline.task.run.result").as_deref(),
        Some("failure")
    );
    let status = verify.status.as_ref().expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert!(
        status.message.contains("health check failed for"),
        "{status:?}"
    );

    // The HTTP effect: a CLIENT span under its step whose id the API received as parent id.
    let get = named(&spans, "GET");
    assert_eq!(get.kind, SpanKind::Client as i32);
    assert_eq!(get.parent_span_id, deploy.span_id);
    assert_eq!(hex::encode(&get.span_id), parent_id);
    assert_eq!(attr(get, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(get, "url.full"), Some(api.url("/health")));
    assert_eq!(
        attr(get, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(get.start_time_unix_nano <= get.end_time_unix_nano);
    assert!(deploy.start_time_unix_nano <= get.start_time_unix_nano);

    let exec = named(&spans, "exec sh");
    assert_eq!(exec.parent_span_id, deploy.span_id);
    assert_eq!(attr(exec, "process.exit.code").as_deref(), Some("0"));
    assert!(
        attr(exec, "process.command_line")
            .unwrap()
            .starts_with("sh -c")
    );
    let sql = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| attr(s, "db.query.text").is_some_and(|q| q.contains("create table")))
        .expect("the sql effect's span");
    assert_eq!(sql.parent_span_id, deploy.span_id);
    assert_eq!(attr(sql, "db.system.name").as_deref(), Some("sqlite"));

    // Redacted: the secret is in no attribute, status or name, nor the header value anywhere.
    let dump = format!("{spans:?}");
    assert!(!dump.contains(CANARY), "secret in an exported span");
    for text in [&out.stderr, &out.stdout, &out.journal_text()] {
        assert!(!text.contains(CANARY));
        assert!(!text.contains(HEADER_CANARY));
    }
    let report = std::fs::read_to_string(
        out.dir
            .join(".glow/runs")
            .join(start["run"].as_str().unwrap())
            .join("report.md"),
    )
    .unwrap();
    assert!(
        report.contains(&format!("exported to `{endpoint}`")),
        "{report}"
    );
}

#[test]
fn otlp_unreachable_collector_is_one_warning_and_exit_0() {
    // A port nothing listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, out) = Test::new()
        .script(r#"step("build", || { exec::run("true", []); });"#)
        .args(&["--otlp", &format!("http://127.0.0.1:{port}")])
        .expect(0);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("trace could not be exported"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(warnings[0].contains(&format!("127.0.0.1:{port}/v1/traces")));
    let journal = out.journal();
    let end = run_event(&journal, "run_end");
    assert_eq!(end["exit_code"], 0);
    assert_eq!(end["otlp"]["exported"], false);
    assert!(end["otlp"]["error"].is_string());
}

#[test]
fn otlp_queue_is_bounded_and_its_overflow_reported_once() {
    // The collector never answers: the first batch stays in flight, the queue fills up.
    let otel = HttpServer::start();
    otel.route_method("POST", "/v1/traces", [Reply::hang()]);
    let test = Test::new()
        .script(r#"for i in 0..6000 { step("s", || {}); }"#)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otel.url(""))
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000");
    // 12 000 step lines: more than a pipe holds while nobody reads it, so stderr goes to a file.
    let log = test.path().join("stderr.txt");
    let mut command = test.command();
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let output = wait_with_timeout(command.spawn().unwrap(), Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let out = Finished {
        status: 0,
        stdout: String::new(),
        stderr,
        dir: test.path().to_owned(),
        keep: None,
    };
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warn:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("dropped from the full queue"),
        "{}",
        warnings[0]
    );
    let journal = out.journal();
    let otlp = &run_event(&journal, "run_end")["otlp"];
    let dropped = otlp["dropped"].as_u64().unwrap();
    // 6001 spans (steps and the run), at most 4096 waiting and a few batches of 512 taken.
    assert!(
        (6001 - 4096 - 3 * 512..=6001 - 4096).contains(&dropped),
        "{otlp}"
    );
    assert_eq!(otlp["exported"], false);
}

#[test]
fn otlp_bad_endpoint_is_a_usage_error() {
    let out = Test::new()
        .script("1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector")
        .status(2);
    assert!(
        out.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{}",
        out.stderr
    );
}

#[test]
fn otlp_release_on_staging_is_one_trace_under_which_the_api_requests_hang() {
    let staging = Staging::start(Faults::default());
    let (status, stdout, stderr) = staging.run("release.rhai", &[]);
    assert_eq!(status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let journal = staging.journals().pop().unwrap();
    let trace_id = run_event(&journal, "run_start")["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let requests = staging.server.requests();
    let spans = received(&staging.collector.requests());
    assert!(spans.len() > 20, "{} spans", spans.len());
    assert!(
        spans
            .iter()
            .all(|(_, s)| hex::encode(&s.trace_id) == trace_id)
    );
    let roots: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(
        attr(roots[0], "cicd.pipeline.result").as_deref(),
        Some("success")
    );
    // Every API request carried the run's trace id and, as parent, an exported HTTP span.
    let client_spans: Vec<String> = spans
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Client as i32 && attr(s, "url.full").is_some())
        .map(|(_, s)| hex::encode(&s.span_id))
        .collect();
    // The browser's own page loads (the PWA under /app/) carry no traceparent: the README says why.
    let api_calls: Vec<&Request> = requests
        .iter()
        .filter(|r| !r.path.starts_with("/app/") && r.path != "/favicon.ico")
        .collect();
    assert!(!api_calls.is_empty());
    for request in api_calls {
        let (trace, parent) = traceparent(request);
        assert_eq!(trace, trace_id, "{}", request.path);
        assert!(
            client_spans.contains(&parent),
            "{}: parent {parent}",
            request.path
        );
    }
    let dump = format!("{spans:?}");
    for secret in [
        staging::JWT,
        staging::SERVICE_ROLE_KEY,
        staging::CONFIG_TOKEN,
    ] {
        assert!(!dump.contains(secret), "{secret} in an exported span");
    }
}

// --- GitHub Actions ----------------------------------------------------------------------------

#[test]
fn github_actions_groups_annotations_and_escaping() {
    let summary = "summary.md";
    let (dir, out) = Test::new()
        .script(
            r#"
            step("build", || {
                exec::run("echo", ["compiled"]);
                log::warn("cache 90% full, 2 entries: a,b");
            });
            step("check: db", || {
                let rows = 3;
                if rows > 0 {
                    throw "pending rows: 100%\nrun the migration first";
                }
            });
            "#,
        )
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", summary)
        .env("API_TOKEN", CANARY)
        .expect(1);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| *l == needle)
            .unwrap_or_else(|| panic!("no line {needle:?} in\n{}", out.stderr))
    };
    let open_build = at("::group::build");
    let output = lines
        .iter()
        .position(|l| l.contains("[build] compiled"))
        .unwrap();
    let close_build = at("::endgroup::");
    assert!(open_build < output && output < close_build);
    assert!(lines.contains(&"::warning title=build::cache 90%25 full, 2 entries: a,b"));
    assert!(lines.contains(&"::group::check: db"));
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("::error")).collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert_eq!(
        *errors[0],
        "::error file=script.rhai,line=8,col=9,title=check%3A db::pending rows: 100%25%0Arun the migration first"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("::group::")).count(),
        lines.iter().filter(|l| **l == "::endgroup::").count()
    );
    let summary = std::fs::read_to_string(dir.path().join(summary)).unwrap();
    assert!(summary.contains("# glow-run"), "{summary}");
}

#[test]
fn github_actions_redacts_secrets_in_annotations() {
    let out = Test::new()
        .script(r#"let t = env::secret("API_TOKEN"); log::warn("token " + t); throw "bad " + t;"#)
        .env("GITHUB_ACTIONS", "true")
        .env("API_TOKEN", CANARY)
        .status(1);
    assert!(out.stderr.contains("::warning::token "), "{}", out.stderr);
    assert!(
        out.stderr.contains("::error file=script.rhai"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(CANARY), "{}", out.stderr);
}

#[test]
fn github_example_workflow_plans_on_pull_requests_and_releases_bound_to_the_plan() {
    let path = staging::repo().join("examples/github/release.yml");
    let workflow: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid YAML");
    let on = &workflow["on"];
    assert!(on.get("pull_request").is_some());
    assert!(on["push"]["tags"].as_sequence().is_some());
    let runs = |job: &str| -> Vec<String> {
        workflow["jobs"][job]["steps"]
            .as_sequence()
            .unwrap_or_else(|| panic!("job {job} has steps"))
            .iter()
            .filter_map(|step| step["run"].as_str().map(str::to_owned))
            .collect()
    };
    let plan = runs("plan");
    assert!(
        plan.iter()
            .any(|r| r
                .contains("glow-run scripts/release.rhai --dry-run --plan-out release.plan.json")),
        "{plan:?}"
    );
    let uploads = workflow["jobs"]["plan"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
                && s["with"]["path"] == "release.plan.json"
        });
    assert!(uploads, "the plan is kept as a job artifact");
    let release = &workflow["jobs"]["release"];
    assert_eq!(release["environment"], "production");
    assert_eq!(release["needs"], "plan");
    assert!(release["if"].as_str().unwrap().contains("tag"));
    let live = runs("release");
    assert!(
        live.iter().any(
            |r| r.contains("glow-run scripts/release.rhai --plan release.plan.json")
                && !r.contains("--dry-run")
        ),
        "{live:?}"
    );
}

// --- the status line on a terminal -------------------------------------------------------------

const STATUS_SCRIPT: &str = r#"
    step("slow build", || {
        exec::run("sh", ["-c", "echo compiling; sleep 2; echo linked"]);
    });
    print("after the step");
"#;

/// Whether `text` holds a drawing of the status line for `step` (a braille spinner frame, the
/// step name, an elapsed time).
fn status_lines(text: &str, step: &str) -> Vec<usize> {
    let pattern = regex::Regex::new(&format!(
        r"[\u{{2800}}-\u{{28FF}}] {} \d+s",
        regex::escape(step)
    ))
    .unwrap();
    pattern.find_iter(text).map(|m| m.start()).collect()
}

/// The text without colour (SGR) codes; cursor and erase codes stay.
fn without_colour(text: &str) -> String {
    regex::Regex::new("\x1b\\[[0-9;]*m")
        .unwrap()
        .replace_all(text, "")
        .into_owned()
}

fn terminal_command(test: &Test) -> std::process::Command {
    let mut command = test.command();
    command
        .env_remove("NO_COLOR")
        .env_remove("CI")
        .env("TERM", "xterm-256color");
    command
}

#[test]
fn status_line_shows_the_running_step_and_is_gone_after_it() {
    let test = Test::new().script(STATUS_SCRIPT);
    let mut session =
        expectrl::Session::spawn(terminal_command(&test)).expect("spawn glow-run under a pty");
    session.set_expect_timeout(Some(Duration::from_secs(30)));
    let captured = session.expect(expectrl::Eof).expect("glow-run finishes");
    let text = without_colour(&String::from_utf8_lossy(captured.as_bytes()));
    let drawn = status_lines(&text, "slow build");
    assert!(!drawn.is_empty(), "no status line in\n{text}");
    // It showed the step's last output line while running.
    assert!(
        regex::Regex::new(r"slow build \d+s compiling")
            .unwrap()
            .is_match(&text),
        "{text}"
    );
    // Gone after: the last drawing is cleared before the step's finished line, and never drawn
    // again (the run's summary follows without it).
    let finished = text.find("✓ slow build").expect("the finished line");
    let last = *drawn.last().unwrap();
    assert!(last < finished, "{text}");
    assert!(
        text[last..finished].contains("\x1b[2K"),
        "cleared: {text:?}"
    );
    assert!(text[finished..].contains("after the step"));
}

#[test]
fn status_line_never_appears_when_stderr_is_a_pipe_or_in_ci() {
    for (ci, stderr_to_pipe) in [(false, true), (true, false)] {
        let test = Test::new().script(STATUS_SCRIPT);
        let mut inner = terminal_command(&test);
        if ci {
            inner.env("CI", "true");
        }
        // Through a shell so stderr can go to a file (a pipe read after the run) or the pty.
        let line = if stderr_to_pipe {
            r#"exec "$0" "$@" 2>&1 | cat"#
        } else {
            r#"exec "$0" "$@""#
        };
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(line)
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(test.path());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut session = expectrl::Session::spawn(command).expect("spawn under a pty");
        session.set_expect_timeout(Some(Duration::from_secs(30)));
        let captured = session.expect(expectrl::Eof).expect("glow-run finishes");
        let text = without_colour(&String::from_utf8_lossy(captured.as_bytes()));
        assert!(text.contains("✓ slow build"), "{text}");
        assert!(
            status_lines(&text, "slow build").is_empty() && !text.contains("\x1b[2K"),
            "a status line (ci={ci}, pipe={stderr_to_pipe}):\n{text:?}"
        );
    }
}

#[test]
fn status_line_is_cleared_before_a_prompt() {
    let test = Test::new().script(
        r#"
        step("gate", || {
            exec::run("sh", ["-c", "echo warming; sleep 1.5"]);
            let ok = prompt::confirm("Ship the release now?");
            print(`answer=${ok}`);
        });
        "#,
    );
    let mut session =
        expectrl::Session::spawn(terminal_command(&test)).expect("spawn glow-run under a pty");
    session.set_expect_timeout(Some(Duration::from_secs(30)));
    let before = session
        .expect("Ship the release now?")
        .expect("the question on the terminal");
    let before = without_colour(&String::from_utf8_lossy(before.before()));
    let drawn = status_lines(&before, "gate");
    assert!(
        !drawn.is_empty(),
        "no status line while the step ran:\n{before:?}"
    );
    let last = *drawn.last().unwrap();
    assert!(
        before[last..].contains("\x1b[2K"),
        "the status line was not cleared before the question: {before:?}"
    );
    session.send("y").unwrap();
    let rest = session.expect(expectrl::Eof).expect("glow-run finishes");
    let rest = without_colour(&String::from_utf8_lossy(rest.as_bytes()));
    assert!(rest.contains("answer=true"), "{rest}");
}
