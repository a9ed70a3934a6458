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
    Test::new()
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
        .stdout(
            "
            exec 1
            check: check failed: never
            policy
            timeout
            http
            string
            ",
        )
        .stderr(r"glow-run script\.rhai · live · run \S+\n.*✗ denied: exec run uname.*\nrun \S+ ok in .*")
        .status(0);
}

#[test]
fn a_failed_primitive_renders_its_message_at_the_call_site() {
    let out = Test::new()
        .script("let x = 1;\nstep(\"deploy\", || exec::run(\"false\", []));\n")
        .status(1);
    assert!(
        out.stderr.contains(
            "error: exec::run: `false` exited with code 1\n --> script.rhai:2:25\n  |\n2 | step(\"deploy\", || exec::run(\"false\", []));\n  |                         ^\n  = step: deploy\n"
        ),
        "{}",
        out.stderr
    );
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

/// The modules of `src/` (one per file) and the modules each one names through `crate::` or
/// `super::` paths: the dependency graph the layering in DESIGN.md speaks of.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let module_of = |path: &std::path::Path| {
        let relative = path.strip_prefix(&root).unwrap().with_extension("");
        relative.to_string_lossy().replace('/', "::")
    };
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(p)).collect();
    let mut graph = BTreeMap::new();
    for path in &files {
        let module = module_of(path);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let parent = module.rsplit_once("::").map(|(p, _)| p.to_owned());
        let mut targets = BTreeSet::new();
        let mut add = |segments: Vec<String>| {
            // The longest prefix that is a module file is the dependency.
            for len in (1..=segments.len()).rev() {
                let candidate = segments[..len].join("::");
                if modules.contains(&candidate) {
                    let is_ancestor = module.starts_with(&format!("{candidate}::"));
                    if candidate != module && !is_ancestor {
                        targets.insert(candidate);
                    }
                    return;
                }
            }
        };
        for (prefix, base) in [("crate::", None), ("super::", parent.clone())] {
            for path in paths_after(&text, prefix) {
                let mut segments: Vec<String> = base
                    .iter()
                    .flat_map(|b| b.split("::").map(str::to_owned))
                    .collect();
                if prefix == "super::" {
                    segments.pop();
                }
                segments.extend(path);
                add(segments);
            }
        }
        graph.insert(module, targets);
    }
    graph
}

/// Every path after `prefix` (`crate::a::b`, and each item of `crate::{a, b::c}`), as segments.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_ident = rest[..at].chars().next_back().is_some_and(is_ident);
        rest = &rest[at + prefix.len()..];
        if preceded_by_ident {
            continue;
        }
        let path = |text: &str| -> Vec<String> {
            text.split("::")
                .map(|s| s.chars().take_while(|c| is_ident(*c)).collect::<String>())
                .take_while(|s| !s.is_empty() && s.starts_with(|c: char| c.is_ascii_lowercase()))
                .collect()
        };
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(path(item.trim()));
            }
        } else {
            let end = rest
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(rest.len());
            out.push(path(&rest[..end]));
        }
    }
    out
}

#[test]
fn the_module_graph_of_src_has_no_cycles() {
    let graph = module_graph();
    assert!(graph.contains_key("run") && graph["cli"].contains("run"));
    // Depth-first search with colours; a grey target is a back edge: a cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        colour: &mut std::collections::BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        colour.insert(node, 1);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match colour.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|n| *n == next).unwrap();
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, colour, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        colour.insert(node, 2);
        None
    }
    let mut colour = std::collections::BTreeMap::new();
    for node in graph.keys() {
        if !colour.contains_key(node.as_str())
            && let Some(cycle) = visit(node, &graph, &mut colour, &mut Vec::new())
        {
            panic!("import cycle in src/: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn check_and_prompt_agree_on_the_id_of_a_question_without_letters() {
    // `prompt` answers "???" under the id `prompt`; `check` must see the same id.
    let test = Test::new()
        .file("answers.toml", "prompt = true\n")
        .script("print(prompt::confirm(\"???\"));\n");
    let out = test.args(&["--answers", "answers.toml"]).status(0);
    assert_eq!(out.stdout, "true\n");
    let out = Test::new()
        .file(
            "two.rhai",
            "prompt::confirm(\"???\");\nprompt::confirm(\"!!!\");\n",
        )
        .args(&["check", "two.rhai"])
        .status(2);
    assert!(
        out.stderr
            .contains("error: prompt id \"prompt\" is already used (line 1)"),
        "{}",
        out.stderr
    );
}

/// The host namespaces and their functions, as `glow-run defs` prints them.
fn exported_functions() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let out = Test::new().arg("defs").status(0);
    let mut namespaces = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.stdout.lines() {
        if let Some(rest) = line.strip_prefix("module ") {
            let name = rest.trim_end_matches(" {").trim_end_matches(';');
            // Host namespaces only: the stdlib modules are documented in their own section.
            current = (!name.starts_with('"') && name != "static").then(|| name.to_owned());
        } else if let (Some(namespace), Some(signature)) =
            (&current, line.trim().strip_prefix("fn "))
        {
            let name: String = signature
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            namespaces
                .entry(namespace.clone())
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(name);
        }
    }
    namespaces
}

#[test]
fn the_readme_api_section_matches_glow_run_defs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## Script API")
        .expect("a Script API section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 1)];
    let exported = exported_functions();
    assert!(exported.contains_key("exec") && exported.contains_key("sql"));
    // Every `ns::fn` the README names exists.
    for (namespace, functions) in &exported {
        let prefix = format!("{namespace}::");
        for (at, _) in section.match_indices(&prefix) {
            let name: String = section[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                functions.contains(&name),
                "README names {namespace}::{name}, which `glow-run defs` does not export"
            );
        }
    }
    // Every exported function is documented: as `ns::fn(` or, for methods, as `.fn(`.
    for (namespace, functions) in &exported {
        for name in functions {
            let documented = section.contains(&format!("{namespace}::{name}("))
                || section.contains(&format!(".{name}("));
            assert!(
                documented,
                "{namespace}::{name} is exported but not in the README's Script API"
            );
        }
    }
}
