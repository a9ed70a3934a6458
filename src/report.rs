//! The run report: every run writes `report.md` beside its journal, the deployment log a
//! person reads or pastes into a change ticket: outcome, steps, the plan (dry run) or the
//! effects (live), migration hashes, artifacts with their hashes, approvals, and excerpts of
//! the output of the commands the run executed. When `GITHUB_STEP_SUMMARY` is set the report is
//! appended there too, so a CI job shows it on its summary page.
//!
//! It is rendered from the journal's events, which are redacted before they are written, so
//! the report cannot hold a secret the journal does not.

use crate::journal::Journal;
use crate::reporter::format_ms;
use crate::state::RunRecord;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;

pub const FILE_NAME: &str = "report.md";
/// Output excerpts: the first and last lines of each command, each line cut to a width.
const HEAD_LINES: usize = 10;
const TAIL_LINES: usize = 20;
const LINE_WIDTH: usize = 240;

/// Writes the report for a finished run (and appends it to `$GITHUB_STEP_SUMMARY`).
pub fn write(journal: &Journal) -> Result<(), String> {
    let (Some(path), Some(dir)) = (journal.path(), journal.run_dir()) else {
        return Ok(());
    };
    let events = crate::journal::read_events(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let text = render(&events);
    let report = dir.join(FILE_NAME);
    std::fs::write(&report, &text).map_err(|e| format!("writing {}: {e}", report.display()))?;
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty()) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .map_err(|e| {
                format!(
                    "opening GITHUB_STEP_SUMMARY {}: {e}",
                    summary.to_string_lossy()
                )
            })?;
        file.write_all(format!("{text}\n").as_bytes())
            .map_err(|e| format!("writing GITHUB_STEP_SUMMARY: {e}"))?;
    }
    Ok(())
}

/// A table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.lines().next().unwrap_or("").replace('|', "\\|")
}

fn ms(value: Option<i64>) -> String {
    value.map_or_else(
        || "-".into(),
        |ms| format_ms(u64::try_from(ms).unwrap_or(0)),
    )
}

/// The captured output of one executed command.
struct Excerpt {
    step: Option<String>,
    command: String,
    code: Option<i64>,
    lines: Vec<String>,
}

/// Pairs output lines with the exec effect they came from: an effect event is journaled when
/// the command ends, after its output, so the lines a step printed since its previous exec
/// belong to the next exec effect of that step.
fn excerpts(events: &[Value]) -> Vec<Excerpt> {
    let mut pending: HashMap<Option<String>, Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for event in events {
        let step = event["step"].as_str().map(str::to_owned);
        match event["kind"].as_str() {
            Some("output") if matches!(event["stream"].as_str(), Some("stdout" | "stderr")) => {
                pending
                    .entry(step)
                    .or_default()
                    .push(event["line"].as_str().unwrap_or("").to_owned());
            }
            Some("effect") if event["namespace"] == "exec" && event["planned"] != true => {
                let lines = pending.remove(&step).unwrap_or_default();
                if !lines.is_empty() {
                    out.push(Excerpt {
                        step,
                        command: event["target"].as_str().unwrap_or("").to_owned(),
                        code: event["code"].as_i64(),
                        lines,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn trimmed(lines: &[String]) -> Vec<String> {
    let cut = |line: &String| {
        if line.chars().count() > LINE_WIDTH {
            format!("{}…", line.chars().take(LINE_WIDTH).collect::<String>())
        } else {
            line.clone()
        }
    };
    if lines.len() <= HEAD_LINES + TAIL_LINES {
        return lines.iter().map(cut).collect();
    }
    let mut out: Vec<String> = lines[..HEAD_LINES].iter().map(cut).collect();
    out.push(format!(
        "… {} lines omitted (the journal has them all) …",
        lines.len() - HEAD_LINES - TAIL_LINES
    ));
    out.extend(lines[lines.len() - TAIL_LINES..].iter().map(cut));
    out
}

/// Renders the report from a run's journal events.
pub fn render(events: &[Value]) -> String {
    let run = RunRecord::from_events(events).unwrap_or_default();
    let mut out = String::new();
    let outcome = run.status();
    let _ = writeln!(out, "# glow-run {}: {}\n", run.id, outcome);
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Script | `{}` |", cell(&run.script));
    let _ = writeln!(out, "| Script SHA-256 | `{}` |", run.sha256);
    let _ = writeln!(out, "| Mode | {} |", run.mode);
    let _ = writeln!(
        out,
        "| Outcome | **{outcome}**{} |",
        run.exit_code
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "| Started | {} |", run.started);
    if let Some(ended) = &run.ended {
        let _ = writeln!(out, "| Ended | {ended} |");
    }
    let _ = writeln!(out, "| Duration | {} |", ms(run.duration_ms));
    if !run.vars.is_empty() {
        let vars: Vec<String> = run
            .vars
            .iter()
            .map(|(k, v)| format!("`{}={}`", cell(k), cell(v)))
            .collect();
        let _ = writeln!(out, "| Vars | {} |", vars.join(" "));
    }
    if let Some(trace) = &run.trace_id {
        let _ = writeln!(out, "| Trace id | `{trace}` |");
    }
    if let Some(resumes) = &run.resumes {
        let _ = writeln!(out, "| Resumes | run {resumes} |");
    }
    if let Some(error) = &run.error {
        let _ = writeln!(out, "\n**Error:** {}", error.trim());
    }

    let _ = writeln!(out, "\n## Steps\n");
    if run.steps.is_empty() {
        let _ = writeln!(out, "No steps ran.");
    } else {
        let _ = writeln!(
            out,
            "| Step | Outcome | Duration | Note |\n|---|---|---|---|"
        );
        for step in &run.steps {
            let depth = usize::try_from(step.depth.unwrap_or(0)).unwrap_or(0);
            let note = step
                .reason
                .as_deref()
                .or(step.error.as_deref())
                .unwrap_or("");
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {} |",
                "↳ ".repeat(depth),
                cell(&step.name),
                step.outcome.as_deref().unwrap_or("unfinished"),
                ms(step.duration_ms),
                cell(note)
            );
        }
    }

    let plan = events.iter().rev().find(|e| e["kind"] == "plan");
    if run.mode == "dry-run" {
        let _ = writeln!(out, "\n## Plan\n");
        let effects = plan
            .and_then(|p| p["effects"].as_array())
            .cloned()
            .unwrap_or_default();
        if effects.is_empty() {
            let _ = writeln!(out, "No effects: a live run would change nothing.");
        } else {
            let _ = writeln!(
                out,
                "What a live run would do, in order:\n\n| # | Step | Effect |\n|---|---|---|"
            );
            for effect in &effects {
                let _ = writeln!(
                    out,
                    "| {} | {} | `{} {} {}` |",
                    effect["index"],
                    cell(effect["step"].as_str().unwrap_or("-")),
                    effect["namespace"].as_str().unwrap_or(""),
                    effect["action"].as_str().unwrap_or(""),
                    cell(effect["target"].as_str().unwrap_or(""))
                );
            }
        }
        if let Some(needs) = plan.and_then(|p| p["needs"].as_object()) {
            let lines: Vec<String> = needs
                .iter()
                .filter_map(|(key, items)| {
                    let items: Vec<String> = items
                        .as_array()?
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect();
                    (!items.is_empty()).then(|| format!("- {key}: {}", items.join(", ")))
                })
                .collect();
            if !lines.is_empty() {
                let _ = writeln!(out, "\nA live run still needs:\n\n{}", lines.join("\n"));
            }
        }
    } else {
        let _ = writeln!(out, "\n## Effects\n");
        if run.effects.is_empty() {
            let _ = writeln!(out, "No effects.");
        } else {
            let _ = writeln!(
                out,
                "| # | Step | Effect | Outcome | Duration |\n|---|---|---|---|---|"
            );
            for (index, effect) in run.effects.iter().enumerate() {
                let mut outcome = effect.outcome.clone().unwrap_or_default();
                if let Some(code) = effect.code {
                    let _ = write!(outcome, " (exit {code})");
                }
                if let Some(error) = &effect.error {
                    let _ = write!(outcome, ": {error}");
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | `{} {} {}`{} | {} | {} |",
                    index + 1,
                    cell(effect.step.as_deref().unwrap_or("-")),
                    effect.namespace,
                    effect.action,
                    cell(&effect.target),
                    if effect.read_only { " (read-only)" } else { "" },
                    cell(&outcome),
                    ms(effect.duration_ms)
                );
            }
        }
    }

    if let Some(saved) = plan.map(|p| &p["saved_plan"]).filter(|s| s.is_object()) {
        let unreached = saved["unreached"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "\n## Saved plan\n\nBound to plan `{}`.",
            saved["hash"].as_str().unwrap_or("")
        );
        if unreached.is_empty() {
            let _ = writeln!(out, "Every planned effect was reached.");
        } else {
            let _ = writeln!(
                out,
                "\nPlanned effects this run never reached:\n\n| # | Step | Effect |\n|---|---|---|"
            );
            for effect in &unreached {
                let _ = writeln!(
                    out,
                    "| {} | {} | `{} {} {}` |",
                    effect["seq"],
                    cell(effect["step"].as_str().unwrap_or("-")),
                    effect["namespace"].as_str().unwrap_or(""),
                    effect["action"].as_str().unwrap_or(""),
                    cell(effect["target"].as_str().unwrap_or(""))
                );
            }
        }
    }

    let migrations: Vec<_> = run
        .effects
        .iter()
        .filter(|e| e.migration_hash.is_some())
        .collect();
    if !migrations.is_empty() {
        let _ = writeln!(out, "\n## Migrations\n");
        for effect in migrations {
            let _ = writeln!(
                out,
                "- migration hash `{}` ({} `{}`, step {}{})",
                effect.migration_hash.as_deref().unwrap_or(""),
                effect.action,
                cell(&effect.target),
                effect.step.as_deref().unwrap_or("-"),
                if effect.planned { ", planned" } else { "" }
            );
        }
    }

    let _ = writeln!(out, "\n## Artifacts\n");
    if run.artifacts.is_empty() {
        let _ = writeln!(out, "No artifacts.");
    } else {
        if let Some(root) = run.artifacts.iter().find_map(|a| a.root.as_deref()) {
            let _ = writeln!(out, "Store: `{root}` (manifest.json lists every file)\n");
        }
        let _ = writeln!(out, "| Name | Size | SHA-256 | Step |\n|---|---|---|---|");
        for artifact in &run.artifacts {
            let _ = writeln!(
                out,
                "| {}{} | {} | `{}` | {} |",
                cell(&artifact.name),
                if artifact.planned { " (planned)" } else { "" },
                artifact.size,
                artifact.sha256,
                cell(artifact.step.as_deref().unwrap_or("-"))
            );
        }
    }

    if !run.approvals.is_empty() {
        let _ = writeln!(
            out,
            "\n## Approvals\n\n| Role | Approver | Time | Plan SHA-256 |\n|---|---|---|---|"
        );
        for approval in &run.approvals {
            let _ = writeln!(
                out,
                "| {} | {} | {} | `{}` |",
                cell(&approval.role),
                cell(&approval.approver),
                approval.time.as_deref().unwrap_or("-"),
                approval.plan_hash.as_deref().unwrap_or("-")
            );
        }
    }

    let excerpts = excerpts(events);
    if !excerpts.is_empty() {
        let _ = writeln!(out, "\n## Command output\n");
        for excerpt in excerpts {
            let _ = writeln!(
                out,
                "**[{}] `{}`**{}\n\n````text\n{}\n````\n",
                excerpt.step.as_deref().unwrap_or("-"),
                cell(&excerpt.command),
                excerpt
                    .code
                    .map(|c| format!(" exited {c}"))
                    .unwrap_or_default(),
                trimmed(&excerpt.lines).join("\n")
            );
        }
    }
    let _ = writeln!(
        out,
        "\n_Journal: `{}`_",
        run.journal.as_deref().unwrap_or("-")
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// The events other namespaces emit (sql's migration hash, prompt's approval) reach the
    /// report's Migrations and Approvals sections.
    #[test]
    fn migration_hashes_and_approvals_are_reported() {
        let events = vec![
            json!({ "seq": 1, "time": "2026-01-01T00:00:00Z", "run": "R1", "kind": "run_start", "step": null,
                    "script": "release.rhai", "sha256": "ab", "mode": "live", "vars": { "tag": "v1" } }),
            json!({ "seq": 2, "run": "R1", "kind": "step_start", "step": "migrate", "occurrence": 1, "depth": 0 }),
            json!({ "seq": 3, "run": "R1", "kind": "effect", "step": "migrate", "namespace": "sql", "action": "migrate",
                    "target": "supabase/migrations", "read_only": false, "planned": false, "outcome": "ok",
                    "migration_hash": "feedface" }),
            json!({ "seq": 4, "run": "R1", "kind": "approval", "step": "migrate", "role": "release_manager",
                    "approver": "alice@example.com", "time": "2026-01-01T00:00:01Z", "plan_hash": "cafe" }),
            json!({ "seq": 5, "run": "R1", "kind": "step_end", "step": "migrate", "occurrence": 1, "outcome": "ok", "duration_ms": 5 }),
            json!({ "seq": 6, "time": "2026-01-01T00:00:02Z", "run": "R1", "kind": "run_end", "step": null,
                    "outcome": "ok", "exit_code": 0, "duration_ms": 7 }),
        ];
        let report = super::render(&events);
        assert!(
            report.contains(
                "- migration hash `feedface` (migrate `supabase/migrations`, step migrate)"
            ),
            "{report}"
        );
        assert!(
            report.contains(
                "| release_manager | alice@example.com | 2026-01-01T00:00:01Z | `cafe` |"
            ),
            "{report}"
        );
        assert!(report.contains("| migrate | ok | 5ms |"), "{report}");
        assert!(report.contains("| Vars | `tag=v1` |"), "{report}");
    }
}
