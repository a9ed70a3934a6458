//! The shape of the host (issue 12): errors a script catches are typed, every file read is an
//! effect through the one gate, and reads can be confined by policy.

use crate::support::http_server::{HttpServer, Reply};
use crate::support::*;

#[test]
fn a_caught_http_error_has_kind_status_and_prints_as_its_message() {
    let server = HttpServer::start();
    server.route("/missing", [Reply::text(404, "no such page")]);
    let url = server.url("/missing");
    let out = Test::new()
        .script(&format!(
            r#"
            try {{ http::get("{url}") }} catch (e) {{
                print(e.kind + " " + e.status);
                print(e["status"] == 404);
                print("caught: " + e);
            }}
            "#
        ))
        .status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "http 404", "{}", out.stdout);
    assert_eq!(lines[1], "true");
    assert!(
        lines[2].starts_with("caught: http::get: GET ") && lines[2].contains("returned 404"),
        "{}",
        out.stdout
    );
}

#[test]
fn caught_errors_name_their_kind() {
    let out = Test::new()
        .file("glow.toml", "[exec]\nallow = [\"sleep\", \"false\"]\n")
        .script(
            r#"
            try { exec::run("false", []) } catch (e) { print(e.kind + " " + e.code) }
            try { check(false, "never") } catch (e) { print(e.kind + ": " + e.message) }
            try { exec::run("uname", []) } catch (e) { print(e.kind) }
            try { exec::run("sleep", ["5"], #{ timeout: "50ms" }) } catch (e) { print(e.kind) }
            try { http::get("http://127.0.0.1:1/") } catch (e) { print(e.kind) }
            try { throw "plain"; } catch (e) { print(type_of(e)) }
            "#,
        )
        .status(0);
    assert_eq!(
        out.stdout,
        "exec 1\ncheck: check failed: never\npolicy\ntimeout\nhttp\nstring\n"
    );
}

#[test]
fn an_uncaught_typed_error_renders_as_its_message() {
    let out = Test::new()
        .script("step(\"deploy\", || exec::run(\"false\", []));\n")
        .status(1);
    assert!(
        out.stderr
            .contains("error: exec::run: `false` exited with code 1\n"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("  = step: deploy\n"), "{}", out.stderr);
}

#[test]
fn file_reads_are_journaled_effects() {
    let out = Test::new()
        .file("notes/a.txt", "alpha")
        .script(
            r#"
            print(fs::read("notes/a.txt"));
            print(fs::exists("notes/missing.txt"));
            print(fs::glob("notes/*.txt").len());
            "#,
        )
        .status(0);
    assert_eq!(out.stdout, "alpha\n\nfalse\n1\n");
    let events = out.journal();
    let reads: Vec<(String, String)> = out
        .events(&events, "effect")
        .iter()
        .filter(|e| e["namespace"] == "fs")
        .map(|e| {
            assert_eq!(e["read_only"], true);
            assert_eq!(e["outcome"], "ok");
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reads,
        [
            ("read".to_owned(), "notes/a.txt".to_owned()),
            ("exists".to_owned(), "notes/missing.txt".to_owned()),
            ("glob".to_owned(), "notes/*.txt".to_owned()),
        ]
    );
}

#[test]
fn fs_allow_confines_reads_and_names_the_rule() {
    let out = Test::new()
        .file("glow.toml", "[fs]\nallow = [\"GO-LIVE/**\"]\n")
        .file("GO-LIVE/ok.md", "fine")
        .file("GO-LIVE/more/deep.md", "deep")
        .file(".env", "SECRET=1")
        .script(
            r#"
            print(fs::read("GO-LIVE/ok.md"));
            print(fs::glob("**/*.md").len());
            try { fs::read("GO-LIVE/../.env"); print("read it"); } catch (e) { print(e.kind) }
            fs::read(".env");
            "#,
        )
        .status(1);
    assert_eq!(out.stdout, "fine\n\n2\npolicy\n", "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: policy refuses reading '.env': it is not in [fs] allow = [\"GO-LIVE/**\"]"
        ),
        "{}",
        out.stderr
    );
    let events = out.journal();
    let denied = out
        .events(&events, "effect")
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .count();
    assert_eq!(denied, 2);
}
