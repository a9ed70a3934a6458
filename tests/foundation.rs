//! The foundation: exit codes, caret errors, steps, exec, env, redaction, dry-run, policy,
//! imports, engine limits, journal.

use crate::support::*;

#[test]
fn snippet_prints_its_value() {
    let out = Test::new().args(&["-e", "40 + 2"]).status(0);
    assert_eq!(out.stdout.trim(), "42");
}
