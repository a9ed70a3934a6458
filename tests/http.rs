//! The `http` namespace against real HTTP servers on 127.0.0.1: retries and backoff, timeouts,
//! Ctrl-C, redaction, dry runs, traceparent, policy, bad input, wait_until and the
//! `glow/release_controls` stdlib module.

use crate::support::http_server::{HttpServer, Reply};
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A privileged port nothing listens on. Not "a port that was free a moment ago": tests run in
/// parallel, and another test's server may be given that port and see our connections.
const CLOSED_PORT: u16 = 1;

/// The `http_attempt` events of a journal.
fn attempts(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "log" && e["event"] == "http_attempt")
        .collect()
}

#[test]
fn retries_5xx_with_backoff_until_success() {
    let server = HttpServer::start();
    server.route(
        "/deploy-status",
        [
            Reply::status(503),
            Reply::status(503),
            Reply::json(200, json!({ "ok": true })),
        ],
    );
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            let r = http::get("{}", #{{ retries: 3, backoff: "200ms" }});
            print(`${{r.status}} ${{r.attempts}} ${{r.json.ok}}`);
            "#,
            server.url("/deploy-status")
        ))
        .expect(0);
    assert_eq!(out.stdout.trim(), "200 3 true");
    let requests = server.requests_to("/deploy-status");
    assert_eq!(requests.len(), 3, "{requests:?}");
    // Backoff with jitter: the first delay is in [100ms, 200ms], the second in [200ms, 400ms].
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(first_gap >= Duration::from_millis(90), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(190), "{second_gap:?}");
    let journal = out.journal();
    let attempts = attempts(&journal);
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status"], 503);
    assert!(attempts[0]["retry_in_ms"].as_u64().unwrap() >= 100);
    assert_eq!(attempts[2]["status"], 200);
    assert!(attempts[2].get("retry_in_ms").is_none());
    assert!(out.stderr.contains("retry 1/3"), "{}", out.stderr);
}

#[test]
fn retry_after_is_honoured_on_429() {
    let server = HttpServer::start();
    server.route(
        "/busy",
        [
            Reply::status(429).header("retry-after", "1"),
            Reply::text(200, "fine"),
        ],
    );
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"print(http::get("{}", #{{ retries: 1 }}).body);"#,
            server.url("/busy")
        ))
        .expect(0);
    assert_eq!(out.stdout.trim(), "fine");
    let requests = server.requests_to("/busy");
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {gap:?}"
    );
}

#[test]
fn not_found_is_not_retried_and_the_error_names_the_call() {
    let server = HttpServer::start();
    server.route(
        "/missing",
        [Reply::json(404, json!({ "error": "no such release" }))],
    );
    let url = server.url("/missing");
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::get("{url}", #{{ retries: 3, backoff: "10ms" }});"#
        ))
        .expect(1);
    assert_eq!(server.requests_to("/missing").len(), 1);
    assert!(
        out.stderr.contains(&format!("http::get: GET {url} returned 404 Not Found, expected 2xx; body: {{\"error\":\"no such release\"}}")),
        "{}",
        out.stderr
    );
}

#[test]
fn exhausted_retries_say_how_many_attempts() {
    let server = HttpServer::start();
    server.route("/down", [Reply::text(503, "maintenance")]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::post("{}", #{{}}, #{{ retries: 2, backoff: "10ms", retry_unsafe: true }});"#,
            server.url("/down")
        ))
        .expect(1);
    assert_eq!(server.requests_to("/down").len(), 3);
    assert!(
        out.stderr.contains(
            "returned 503 Service Unavailable after 3 attempts, expected 2xx; body: maintenance"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(attempts(&out.journal()).len(), 3);
}

#[test]
fn expect_accepts_listed_statuses_without_retrying() {
    let server = HttpServer::start();
    server.route("/gone", [Reply::status(410)]);
    server.route("/flaky", [Reply::status(503)]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            print(http::get("{}", #{{ expect: [200, 410] }}).status);
            print(http::get("{}", #{{ expect: "5xx", retries: 3 }}).status);
            "#,
            server.url("/gone"),
            server.url("/flaky")
        ))
        .expect(0);
    assert_eq!(out.stdout.trim(), "410\n503");
    assert_eq!(
        server.requests_to("/flaky").len(),
        1,
        "an expected 503 must not be retried"
    );
}

#[test]
fn hanging_server_times_out_promptly() {
    let server = HttpServer::start();
    server.route("/hang", [Reply::hang()]);
    let url = server.url("/hang");
    let started = Instant::now();
    let (_dir, out) = Test::new()
        .script(&format!(r#"http::get("{url}", #{{ timeout: "1s" }});"#))
        .expect(1);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        out.stderr
            .contains(&format!("http::get: GET {url} failed: timed out after 1s")),
        "{}",
        out.stderr
    );
    assert_eq!(server.requests_to("/hang").len(), 1);
}

#[test]
fn sigint_during_a_hanging_request_exits_130() {
    let server = HttpServer::start();
    server.route("/hang", [Reply::hang()]);
    let test = Test::new().script(&format!(
        r#"step("wait for server", || http::get("{}", #{{ timeout: "60s" }}));"#,
        server.url("/hang")
    ));
    let mut command = test.command();
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    server.wait_for_requests(1, Duration::from_secs(20));
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = wait_with_timeout(child, Duration::from_secs(10));
    let took = signalled.elapsed();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} after SIGINT"
    );
}

#[test]
fn a_step_timeout_aborts_a_hanging_request() {
    let server = HttpServer::start();
    server.route("/hang", [Reply::hang()]);
    let started = Instant::now();
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"step("smoke", #{{ timeout: "1s" }}, || http::get("{}", #{{ timeout: "60s" }}));"#,
            server.url("/hang")
        ))
        .expect(1);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    let journal = out.journal();
    let effect = journal
        .iter()
        .find(|e| e["kind"] == "effect")
        .expect("the http effect");
    assert_eq!(effect["outcome"], "cancelled", "{effect}");
}

#[test]
fn connect_errors_are_retried() {
    let port = CLOSED_PORT;
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::get("http://127.0.0.1:{port}/", #{{ retries: 2, backoff: "10ms" }});"#
        ))
        .expect(1);
    assert!(
        out.stderr
            .contains("failed (after 3 attempts): cannot connect"),
        "{}",
        out.stderr
    );
    let journal = out.journal();
    let attempts = attempts(&journal);
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts.iter().all(|a| a["failure"] == "connect"),
        "{attempts:?}"
    );
}

#[test]
fn bearer_and_credential_headers_never_appear_in_output_or_journal() {
    let canary = "canary-jwt-7f3a9c2e51";
    let api_token = "tok-4b8d0e6a";
    let server = HttpServer::start();
    // The server echoes what it received, so the script gets the secrets back in the body.
    server.handle("/echo", |request| {
        Reply::json(
            418,
            json!({ "authorization": request.header("authorization"), "token": request.header("x-api-token") }),
        )
    });
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            let r = http::get("{url}", #{{ bearer: "{canary}", headers: #{{ "X-Api-Token": "{api_token}" }}, expect: 418 }});
            print(r.body);
            log::info(r.json.authorization);
            http::get("{url}?token={canary}", #{{ bearer: "{canary}" }});
            "#,
            url = server.url("/echo")
        ))
        .expect(1);
    let requests = server.requests_to("/echo");
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {canary}").as_str())
    );
    assert_eq!(requests[0].header("x-api-token"), Some(api_token));
    let journal = out.journal_text();
    for (name, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("journal", &journal),
    ] {
        assert!(!text.contains(canary), "bearer leaked into {name}:\n{text}");
        assert!(
            !text.contains(api_token),
            "token header leaked into {name}:\n{text}"
        );
    }
    assert!(out.stdout.contains("[redacted]"), "{}", out.stdout);
    assert!(out.stderr.contains("returned 418"), "{}", out.stderr);
}

#[test]
fn dry_run_sends_only_reads_and_plans_the_rest() {
    let server = HttpServer::start();
    server.route("/status", [Reply::json(200, json!({ "version": "1.2.3" }))]);
    server.route("/check", [Reply::json(200, json!({ "ok": true }))]);
    let base = server.url("");
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            print(http::get("{base}/status").json.version);
            let r = http::post("{base}/deploy", #{{ tag: "v1.2.3" }});
            print(`${{r.planned}} ${{r.status}}`);
            http::request("PUT", "{base}/flags", #{{ body: "on" }});
            http::request("DELETE", "{base}/cache", #{{}});
            http::get("{base}/would-change", #{{ read_only: false }});
            print(http::post("{base}/check", #{{}}, #{{ read_only: true }}).json.ok);
            "#
        ))
        .arg("--dry-run")
        .expect(0);
    assert_eq!(out.stdout.trim(), "1.2.3\ntrue 0\ntrue");
    let seen: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(seen, ["GET /status", "POST /check"]);
    let journal = out.journal();
    let plan = journal
        .iter()
        .find(|e| e["kind"] == "plan")
        .expect("a plan event");
    let text = plan.to_string();
    for planned in [
        format!("POST {base}/deploy"),
        format!("PUT {base}/flags"),
        format!("DELETE {base}/cache"),
        format!("GET {base}/would-change"),
    ] {
        assert!(text.contains(&planned), "{planned} not planned: {text}");
    }
    let deploy = journal
        .iter()
        .find(|e| e["kind"] == "effect" && e["target"] == format!("POST {base}/deploy"))
        .expect("effect for the planned POST");
    assert_eq!(deploy["planned"], true);
    let sha = hex_sha256(br#"{"tag":"v1.2.3"}"#);
    assert_eq!(deploy["args"]["body_sha256"], sha.as_str());
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn every_request_carries_the_runs_trace_id() {
    let server = HttpServer::start();
    server.route("/a", [Reply::text(200, "a")]);
    server.route("/b", [Reply::status(204)]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"http::get("{}"); http::request("HEAD", "{}", #{{}});"#,
            server.url("/a"),
            server.url("/b")
        ))
        .expect(0);
    let journal = out.journal();
    let trace_id = journal[0]["trace_id"]
        .as_str()
        .expect("run_start trace_id")
        .to_owned();
    assert_eq!(journal[0]["kind"], "run_start");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let mut spans = Vec::new();
    for request in &requests {
        let header = request.header("traceparent").expect("traceparent header");
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], trace_id);
        assert_eq!(parts[2].len(), 16);
        assert!(parts[2].chars().all(|c| c.is_ascii_hexdigit()) && parts[2] != "0000000000000000");
        assert_eq!(parts[3], "01");
        spans.push(parts[2].to_owned());
    }
    assert_ne!(spans[0], spans[1], "each request has its own span id");
    assert!(
        out.stderr.contains(&trace_id),
        "the trace id is printed at the end: {}",
        out.stderr
    );
}

#[test]
fn post_sends_json_query_and_headers_and_reads_the_response() {
    let server = HttpServer::start();
    server.route(
        "/v1/notifications/mark-all",
        [Reply::json(200, json!({ "marked": 3 })).header("X-Request-Id", "req-42")],
    );
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            let r = http::post("{}", #{{ orgSlug: "acme" }}, #{{ query: #{{ limit: 1, q: "a b" }}, headers: #{{ "X-Client": "glow" }} }});
            print(`${{r.status}} ${{r.json.marked}} ${{r.headers["x-request-id"]}} ${{r.planned}}`);
            let t = http::post("{}", "raw text", #{{}});
            print(t.status);
            "#,
            server.url("/v1/notifications/mark-all"),
            server.url("/v1/notifications/mark-all")
        ))
        .expect(0);
    assert_eq!(out.stdout.trim(), "200 3 req-42 false\n200");
    let requests = server.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].json(), json!({ "orgSlug": "acme" }));
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[0].header("x-client"), Some("glow"));
    assert_eq!(requests[0].query_param("limit").as_deref(), Some("1"));
    assert_eq!(requests[0].query_param("q").as_deref(), Some("a b"));
    assert_eq!(requests[1].body_text(), "raw text");
    let journal = out.journal();
    let effect = journal.iter().find(|e| e["kind"] == "effect").unwrap();
    assert!(
        effect["target"]
            .as_str()
            .unwrap()
            .contains("?limit=1&q=a+b"),
        "{effect}"
    );
    assert_eq!(effect["status"], 200);
}

#[test]
fn policy_refuses_hosts_outside_allow_hosts_before_connecting() {
    let server = HttpServer::start();
    server.route("/health", [Reply::status(200)]);
    let (_dir, out) = Test::new()
        .file(
            "glow.toml",
            "[http]\nallow_hosts = [\"api.staging.example.com\"]\n",
        )
        .script(&format!(r#"http::get("{}");"#, server.url("/health")))
        .expect(1);
    assert!(
        out.stderr.contains("policy refuses host '127.0.0.1': it is not in [http] allow_hosts = [\"api.staging.example.com\"]"),
        "{}",
        out.stderr
    );
    assert_eq!(server.connections(), 0, "no connection may be made");
    assert!(server.requests().is_empty());
}

#[test]
fn redirects_outside_allow_hosts_are_refused() {
    let server = HttpServer::start();
    let port = server.port();
    server.route(
        "/old",
        [Reply::status(302).header("location", &format!("http://localhost:{port}/new"))],
    );
    server.route("/moved", [Reply::status(302).header("location", "/new")]);
    server.route("/new", [Reply::text(200, "new place")]);
    let (_dir, out) = Test::new()
        .file("glow.toml", "[http]\nallow_hosts = [\"127.0.0.1\"]\n")
        .script(&format!(
            r#"
            print(http::get("{}").body);
            http::get("{}");
            "#,
            server.url("/moved"),
            server.url("/old")
        ))
        .expect(1);
    assert_eq!(out.stdout.trim(), "new place");
    assert!(
        out.stderr.contains(&format!(
            "redirect to http://localhost:{port}/new refused: policy refuses host 'localhost'"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        server.requests_to("/new").len(),
        1,
        "only the allowed redirect was followed"
    );
}

/// Runs a snippet that must fail, returning stderr.
fn failing(script: &str) -> String {
    Test::new().script(script).status(1).stderr
}

#[test]
fn bad_input_fails_with_clear_errors() {
    let server = HttpServer::start();
    server.route(
        "/page",
        [Reply::status(200)
            .header("content-type", "text/html")
            .body(b"<html>hello</html>")],
    );
    server.route("/big", [Reply::text(200, &"x".repeat(5000))]);

    let err = failing(r#"http::get("not a url");"#);
    assert!(
        err.contains("http::get: invalid URL 'not a url': relative URL without a base"),
        "{err}"
    );

    let err = failing(r#"http::get("ftp://example.com/file");"#);
    assert!(err.contains("unsupported URL scheme 'ftp' in 'ftp://example.com/file': only http and https are allowed"), "{err}");

    let port = CLOSED_PORT;
    let err = failing(&format!(r#"http::get("http://127.0.0.1:{port}/health");"#));
    assert!(
        err.contains(&format!(
            "GET http://127.0.0.1:{port}/health failed: cannot connect"
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connection refused"), "{err}");

    let err = failing(&format!(
        r#"http::get("https://127.0.0.1:{}/page");"#,
        server.port()
    ));
    assert!(err.contains("failed: TLS handshake failed"), "{err}");

    let err = failing(&format!(
        r#"http::get("{}", #{{ max_body: "1KiB" }});"#,
        server.url("/big")
    ));
    assert!(
        err.contains("the response body is larger than max_body (1024 bytes"),
        "{err}"
    );

    let err = failing(&format!(
        r#"http::get("{}", #{{ expect: 201 }});"#,
        server.url("/page")
    ));
    assert!(
        err.contains("returned 200 OK, expected 201; body: <html>hello</html>"),
        "{err}"
    );

    let err = failing(&format!(
        r#"let r = http::get("{}"); print(r.json.status);"#,
        server.url("/page")
    ));
    assert!(
        err.contains(&format!(
            "cannot read json.status: the response body of GET {} is not JSON (content-type text/html); it starts with: <html>hello</html>",
            server.url("/page")
        )),
        "{err}"
    );

    let err = failing(&format!(
        r#"http::get("{}", #{{ retry: 3 }});"#,
        server.url("/page")
    ));
    assert!(err.contains("http::get: unknown option 'retry'"), "{err}");
}

#[test]
fn wait_until_polls_until_ready_and_reports_attempts_when_it_gives_up() {
    let server = HttpServer::start();
    server.route(
        "/readiness",
        [
            Reply::status(503),
            Reply::status(503),
            Reply::json(200, json!({ "ready": true })),
        ],
    );
    server.route("/never", [Reply::text(503, "warming up")]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            let r = http::wait_until("{}", #{{ interval: "100ms", timeout: "20s" }});
            print(`${{r.status}} ${{r.json.ready}} ${{r.attempts}}`);
            http::wait_until("{}", #{{ interval: "200ms", deadline: "1s" }});
            "#,
            server.url("/readiness"),
            server.url("/never")
        ))
        .expect(1);
    assert_eq!(out.stdout.trim(), "200 true 3");
    assert_eq!(server.requests_to("/readiness").len(), 3);
    let polls = server.requests_to("/never").len();
    assert!((2..=7).contains(&polls), "{polls} polls");
    assert!(
        out.stderr.contains(&format!(
            "http::wait_until: GET {} did not return 2xx within 1s ({polls} attempts; last status 503 Service Unavailable; body: warming up)",
            server.url("/never")
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn connections_are_reused_and_non_json_responses_still_serialise() {
    let server = HttpServer::start();
    server.route("/page", [Reply::text(200, "plain words")]);
    let (_dir, out) = Test::new()
        .script(&format!(
            r#"
            for i in 0..19 {{ http::get("{url}"); }}
            let r = http::get("{url}");
            print(json::stringify(#{{ status: r.status, body: r.body, json: r.json }}));
            print(r.json);
            "#,
            url = server.url("/page")
        ))
        .expect(0);
    assert_eq!(
        out.stdout.trim(),
        "{\"body\":\"plain words\",\"json\":null,\"status\":200}\n(body is not JSON)"
    );
    assert_eq!(server.requests_to("/page").len(), 20);
    // Usually 1; hyper may open a second connection when the first has not gone back to the
    // pool yet (a busy machine), so allow a few, far fewer than one per request.
    let connections = server.connections();
    assert!(
        connections <= 5,
        "one client per run reuses connections: {connections} for 20 requests"
    );
}

fn release_controls_script(server: &HttpServer, extra: &str) -> String {
    format!(
        r#"
        import "glow/release_controls" as release_controls;
        let result = release_controls::check("{}/", "jwt-release-canary-1", "acme"{extra});
        print(`ok ${{result.autonomy}} ${{result.telemetry_open}}/${{result.max_open}}`);
        "#,
        server.url("")
    )
}

fn controls(autonomy: &str, mfa: &str, open: i64, max_open: i64) -> Reply {
    Reply::json(
        200,
        json!({ "environment": {
            "autonomy": { "state": autonomy },
            "mfa": { "state": mfa },
            "telemetry": { "open": open, "maxOpen": max_open }
        }}),
    )
}

#[test]
fn release_controls_pass_and_run_in_dry_runs() {
    let server = HttpServer::start();
    server.route_method(
        "POST",
        "/api/release-controls/check",
        [controls("satisfied", "satisfied", 2, 5)],
    );
    let (_dir, out) = Test::new()
        .script(&release_controls_script(&server, ""))
        .arg("--dry-run")
        .expect(0);
    assert_eq!(out.stdout.trim(), "ok satisfied 2/5");
    let requests = server.requests_to("/api/release-controls/check");
    assert_eq!(
        requests.len(),
        1,
        "the check is read-only, so it runs in a dry run"
    );
    assert_eq!(requests[0].json(), json!({ "orgSlug": "acme" }));
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer jwt-release-canary-1")
    );
    assert!(!out.journal_text().contains("jwt-release-canary-1"));
}

#[test]
fn release_controls_fail_naming_the_gates_and_values() {
    let server = HttpServer::start();
    server.route_method(
        "POST",
        "/api/release-controls/check",
        [controls("satisfied", "pending", 7, 5)],
    );
    let (_dir, out) = Test::new()
        .script(&release_controls_script(&server, ""))
        .expect(1);
    assert!(
        out.stderr
            .contains("release controls for org 'acme' not satisfied"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(r#"environment.mfa.state is "pending", expected "satisfied""#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("environment.telemetry.open is 7, expected <= maxOpen 5"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("autonomy.state is"), "{}", out.stderr);

    // The option overrides the server's maxOpen; autonomy failing is named too.
    let server = HttpServer::start();
    server.route_method(
        "POST",
        "/api/release-controls/check",
        [controls("blocked", "satisfied", 4, 10)],
    );
    let (_dir, out) = Test::new()
        .script(&release_controls_script(&server, ", #{ max_open: 3 }"))
        .expect(1);
    assert!(
        out.stderr
            .contains(r#"environment.autonomy.state is "blocked", expected "satisfied""#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("environment.telemetry.open is 4, expected <= maxOpen 3"),
        "{}",
        out.stderr
    );
}
