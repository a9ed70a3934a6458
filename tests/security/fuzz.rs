//! A bounded fuzz run (proptest): random scripts, glow.toml files and answers files, put
//! together from fragments that are valid, half valid and hostile, must end with exit code 0,
//! 1 or 2, never a panic, an abort or a signal. The case count keeps it well under 60 s.

use crate::support::Test;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::Duration;

const SCRIPT_PIECES: &[&str] = &[
    "let x = 1;",
    "print(x);",
    "step(\"a\", || { print(\"in a\"); });",
    "step(\"b\", #{ continue_on_error: true }, || { throw \"no\"; });",
    "let s = \"a\"; s.pad(1000000000000000, \"b\");",
    "let b = blob(99999999999999);",
    "[].pad(100000000000000, 0);",
    "fn f(n) { if n == 0 { 0 } else { f(n - 1) } } f(100000);",
    "((((((((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))))))));",
    "json::parse(\"{\\\"a\\\": [1, 2\");",
    "json::parse(\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\");",
    "time::parse(\"not a time\");",
    "vars::get(\"missing\");",
    "env::require([\"NOPE_A\", \"NOPE_B\"]);",
    "prompt::confirm(\"go on?\");",
    "prompt::input(\"name\", \"dflt\");",
    "prompt::approve(\"security\");",
    "sql::connect(\"sqlite:x.db\", #{ timeout: \"99999999999999999s\" });",
    "sql::connect(\"mysql://nope\");",
    "exec::run(\"definitely-not-a-program\", []);",
    "exec::run(\"true\", [], #{ timeout: \"99999999999999999s\" });",
    "http::get(\"http://[::1\");",
    "fs::read(\"/dev/zero\");",
    "artifact::write(\"../x\", \"y\");",
    "artifact::write(\"ok.txt\", #{ a: [1, 2, ()] });",
    "let m = #{}; m.x.y = 1;",
    "1 / 0;",
    "let a = [1, 2]; a[99];",
    "\"x\" + ;",
    "}}}",
    "import \"glow/nope\" as n;",
    "let s = \"\"; for i in 0..200 { s += \"ab\"; }",
];

const POLICY_PIECES: &[&str] = &[
    "[exec]\nallow = [\"echo\"]\n",
    "[exec]\nshell = false\n",
    "[sql]\nallow_writes = false\n",
    "[limits]\nmax_operations = 100000\n",
    "[limits]\nmemory = \"32MiB\"\n",
    "[limits]\ncall_levels = 0\n",
    "[limits]\nexpression_depth = 99999999\n",
    "[limits]\nstep_timeout = \"1x\"\n",
    "[limits]\nmemory = -1\n",
    "[http]\nallow_hosts = 3\n",
    "[nonsense]\n",
    "[[[",
    "[artifacts]\nroot = \"{unclosed\"\n",
    "",
];

const ANSWER_PIECES: &[&str] = &[
    "go_on_ = true\n",
    "name = \"alice\"\n",
    "approve_security = \"alice@example.com\"\n",
    "approve_security = 42\n",
    "{\"go_on_\": \"yes\"}",
    "= = =",
    "\u{0}\u{1}",
    "",
];

fn pick(pieces: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(pieces)
}

#[test]
fn random_scripts_policies_and_answers_exit_with_0_1_or_2() {
    let strategy = (
        proptest::collection::vec(pick(SCRIPT_PIECES), 1..5),
        proptest::collection::vec(pick(POLICY_PIECES), 0..3),
        proptest::collection::vec(pick(ANSWER_PIECES), 0..3),
        any::<bool>(),
        // Raw printable text: most of it does not parse, some of it does.
        proptest::string::string_regex("[ -~\n]{0,60}").unwrap(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(pieces, policy, answers, dry_run, raw)| {
            let mut script: Vec<String> = pieces.iter().map(|p| p.to_string()).collect();
            script.push(raw);
            let mut test = Test::new()
                .file("glow.toml", &policy.concat())
                .file("answers.toml", &answers.concat())
                .timeout(Duration::from_secs(30))
                .args(&["--answers", "answers.toml"]);
            if dry_run {
                test = test.arg("--dry-run");
            }
            let (_test, finished) = test.script(&script.join("\n")).run();
            prop_assert!(
                [0, 1, 2].contains(&finished.status),
                "exit {}\n--- script ---\n{}\n--- glow.toml ---\n{}\n--- stderr ---\n{}",
                finished.status,
                script.join("\n"),
                policy.concat(),
                finished.stderr
            );
            prop_assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
            Ok(())
        })
        .unwrap();
}
