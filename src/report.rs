//! The run report: every run writes `report.md` beside its journal, the deployment log a
//! person reads or pastes into a change ticket: outcome, steps, the plan (dry run) or the
//! effects (live), migration hashes, artifacts with their hashes, approvals, and excerpts of
//! the output of the commands the run executed. When `GITHUB_STEP_SUMMARY` is set the report is
//! appended there too, so a CI job shows it on its summary page.
//!
//! It is built from the journal's events as they are emitted ([`ReportSink`], a journal sink:
//! no re-reading of the journal when the run ends), and those are redacted before any sink
//! sees them, so the report cannot hold a secret the journal does not. Output lines are kept
//! only as the excerpts need them (the first and last lines of each command), so a chatty
//! build does not grow the report's memory.

use crate::event::{Body, Event, PlanEvent};
use crate::journal::{Journal, Sink};
use crate::reporter::format_ms;
use crate::state::RunRecord;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;

pub const FILE_NAME: &str = "report.md";
/// Output excerpts: the first and last lines of each command, each line cut to a width.
const HEAD_LINES: usize = 10;
const TAIL_LINES: usize = 20;
const LINE_WIDTH: usize = 240;

/// What the report needs of a run, gathered event by event.
#[derive(Default)]
struct Gathered {
    run: Option<RunRecord>,
    plan: Option<PlanEvent>,
    /// Output lines of each step since its last exec effect.
    pending: HashMap<Option<String>, Lines>,
    excerpts: Vec<Excerpt>,
    /// Whether and where the trace was exported (from `run_end`).
    trace_export: Option<String>,
}

impl Gathered {
    fn add(&mut self, event: &Event) {
        if matches!(event.body, Body::RunStart(_)) {
            *self = Self::default();
            self.run = Some(RunRecord::default());
        }
        if let Some(run) = self.run.as_mut() {
            run.apply(event);
        }
        match &event.body {
            Body::Plan(plan) => self.plan = Some(plan.clone()),
            Body::RunEnd(end) => self.trace_export = crate::otlp::report_line(end),
            Body::Output(output) if matches!(output.stream.as_str(), "stdout" | "stderr") => {
                self.pending
                    .entry(event.step.clone())
                    .or_default()
                    .push(&output.line);
            }
            // An exec effect is journaled when the command ends, after its output, so the
            // lines a step printed since its previous exec belong to this one.
            Body::Effect(effect) if effect.namespace == "exec" && !effect.planned => {
                if let Some(lines) = self.pending.remove(&event.step) {
                    self.excerpts.push(Excerpt {
                        step: event.step.clone(),
                        command: effect.target.clone(),
                        code: effect.extra_i64("code"),
                        lines,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The journal sink that gathers the report while the run goes.
#[derive(Default)]
pub struct ReportSink {
    gathered: Mutex<Gathered>,
}

impl Sink for ReportSink {
    fn event(&self, event: &Event, _line: &str) {
        self.gathered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(event);
    }
}

impl ReportSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The report as gathered so far.
    pub fn render(&self) -> String {
        let gathered = self.gathered.lock().unwrap_or_else(|e| e.into_inner());
        render_gathered(&gathered)
    }

    /// Writes `report.md` beside the journal (and appends it to `$GITHUB_STEP_SUMMARY`).
    pub fn write(&self, journal: &Journal) -> Result<(), String> {
        let Some(dir) = journal.run_dir() else {
            return Ok(());
        };
        write_report(dir, &self.render())
    }
}

/// Writes `text` as the run's report in `dir` (and appends it to `$GITHUB_STEP_SUMMARY`).
fn write_report(dir: &std::path::Path, text: &str) -> Result<(), String> {
    let report = dir.join(FILE_NAME);
    std::fs::write(&report, text).map_err(|e| format!("writing {}: {e}", report.display()))?;
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
    lines: Lines,
}

/// The first [`HEAD_LINES`] and last [`TAIL_LINES`] lines of an output, and how many in all.
#[derive(Default)]
struct Lines {
    head: Vec<String>,
    tail: VecDeque<String>,
    total: usize,
}

impl Lines {
    fn push(&mut self, line: &str) {
        self.total += 1;
        let line = if line.chars().count() > LINE_WIDTH {
            format!("{}…", line.chars().take(LINE_WIDTH).collect::<String>())
        } else {
            line.to_owned()
        };
        if self.head.len() < HEAD_LINES {
            self.head.push(line);
            return;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The lines to show, with a marker where lines were left out.
    fn shown(&self) -> Vec<String> {
        let mut out = self.head.clone();
        let omitted = self.total - self.head.len() - self.tail.len();
        if omitted > 0 {
            out.push(format!(
                "… {omitted} lines omitted (the journal has them all) …"
            ));
        }
        out.extend(self.tail.iter().cloned());
        out
    }
}

/// Renders the report from a run's journal events (for a journal read back from disk).
pub fn render(events: &[Event]) -> String {
    let mut gathered = Gathered::default();
    for event in events {
        gathered.add(event);
    }
    render_gathered(&gathered)
}

fn render_gathered(gathered: &Gathered) -> String {
    let run = gathered.run.clone().unwrap_or_default();
    let mut out = String::new();
    header(&mut out, &run, gathered.trace_export.as_deref());
    steps(&mut out, &run);
    if run.mode == "dry-run" {
        plan(&mut out, gathered.plan.as_ref());
    } else {
        effects(&mut out, &run);
        saved_plan(&mut out, gathered.plan.as_ref());
    }
    migrations(&mut out, &run);
    artifacts(&mut out, &run);
    approvals(&mut out, &run);
    command_output(&mut out, &gathered.excerpts);
    let _ = writeln!(
        out,
        "\n_Journal: `{}`_",
        run.journal.as_deref().unwrap_or("-")
    );
    out
}

fn header(out: &mut String, run: &RunRecord, trace_export: Option<&str>) {
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
    if let Some(trace) = trace_export {
        let _ = writeln!(out, "| Trace export | {} |", cell(trace));
    }
    if let Some(resumes) = &run.resumes {
        let _ = writeln!(out, "| Resumes | run {resumes} |");
    }
    if let Some(error) = &run.error {
        let _ = writeln!(out, "\n**Error:** {}", error.trim());
    }
}

fn steps(out: &mut String, run: &RunRecord) {
    let _ = writeln!(out, "\n## Steps\n");
    if run.steps.is_empty() {
        let _ = writeln!(out, "No steps ran.");
        return;
    }
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

/// A dry run's plan: the effects a live run would perform and what it still needs.
fn plan(out: &mut String, plan: Option<&PlanEvent>) {
    let _ = writeln!(out, "\n## Plan\n");
    let effects = plan.map(|p| p.effects.as_slice()).unwrap_or_default();
    if effects.is_empty() {
        let _ = writeln!(out, "No effects: a live run would change nothing.");
    } else {
        let _ = writeln!(
            out,
            "What a live run would do, in order:\n\n| # | Step | Effect |\n|---|---|---|"
        );
        for effect in effects {
            let _ = writeln!(
                out,
                "| {} | {} | `{} {} {}` |",
                effect.index,
                cell(effect.step.as_deref().unwrap_or("-")),
                effect.namespace,
                effect.action,
                cell(&effect.target)
            );
        }
    }
    if let Some(plan) = plan {
        let lines: Vec<String> = plan
            .needs
            .lines()
            .iter()
            .map(|l| format!("- {l}"))
            .collect();
        if !lines.is_empty() {
            let _ = writeln!(out, "\nA live run still needs:\n\n{}", lines.join("\n"));
        }
    }
}

/// A live run's effects, with outcome and duration.
fn effects(out: &mut String, run: &RunRecord) {
    let _ = writeln!(out, "\n## Effects\n");
    if run.effects.is_empty() {
        let _ = writeln!(out, "No effects.");
        return;
    }
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

/// A run bound to a saved plan (`--plan`): the plan's hash and the planned effects never reached.
fn saved_plan(out: &mut String, plan: Option<&PlanEvent>) {
    let Some(saved) = plan
        .and_then(|p| p.extra.get("saved_plan"))
        .filter(|s| s.is_object())
    else {
        return;
    };
    let hash = saved["hash"].as_str().unwrap_or("");
    let _ = writeln!(out, "\n## Saved plan\n\nBound to plan `{hash}`.");
    let unreached = saved["unreached"].as_array().cloned().unwrap_or_default();
    if unreached.is_empty() {
        let _ = writeln!(out, "Every planned effect was reached.");
        return;
    }
    let _ = writeln!(
        out,
        "\nPlanned effects this run never reached:\n\n| # | Step | Effect |\n|---|---|---|"
    );
    for effect in &unreached {
        let text = |key: &str| effect[key].as_str().unwrap_or("").to_owned();
        let _ = writeln!(
            out,
            "| {} | {} | `{} {} {}` |",
            effect["seq"],
            cell(effect["step"].as_str().unwrap_or("-")),
            text("namespace"),
            text("action"),
            cell(&text("target"))
        );
    }
}

fn migrations(out: &mut String, run: &RunRecord) {
    let migrations: Vec<_> = run
        .effects
        .iter()
        .filter(|e| e.migration_hash.is_some())
        .collect();
    if migrations.is_empty() {
        return;
    }
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

fn artifacts(out: &mut String, run: &RunRecord) {
    let _ = writeln!(out, "\n## Artifacts\n");
    if run.artifacts.is_empty() {
        let _ = writeln!(out, "No artifacts.");
        return;
    }
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

fn approvals(out: &mut String, run: &RunRecord) {
    if run.approvals.is_empty() {
        return;
    }
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

fn command_output(out: &mut String, excerpts: &[Excerpt]) {
    if excerpts.is_empty() {
        return;
    }
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
            excerpt.lines.shown().join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// A long output keeps its first and last lines and says how many it left out.
    #[test]
    fn excerpts_keep_head_and_tail() {
        let mut lines = super::Lines::default();
        for i in 1..=100 {
            lines.push(&format!("line {i}"));
        }
        let shown = lines.shown();
        assert_eq!(shown.len(), super::HEAD_LINES + 1 + super::TAIL_LINES);
        assert_eq!(shown[0], "line 1");
        assert_eq!(
            shown[super::HEAD_LINES],
            "… 70 lines omitted (the journal has them all) …"
        );
        assert_eq!(shown.last().unwrap(), "line 100");
    }

    /// The events other namespaces emit (sql's migration hash, prompt's approval) reach the
    /// report's Migrations and Approvals sections.
    #[test]
    fn migration_hashes_and_approvals_are_reported() {
        let events = vec![
            json!({ "seq": 1, "time": "2026-01-01T00:00:00Z", "run": "R1", "kind": "run_start", "step": null,
                    "script": "release.rhai", "sha256": "ab", "mode": "live", "vars": { "tag": "v1" } }),
            json!({ "seq": 2, "time": "2026-01-01T00:00:00Z", "run": "R1", "kind": "step_start", "step": "migrate", "occurrence": 1, "depth": 0 }),
            json!({ "seq": 3, "time": "2026-01-01T00:00:00Z", "run": "R1", "kind": "effect", "step": "migrate", "namespace": "sql", "action": "migrate",
                    "target": "supabase/migrations", "read_only": false, "planned": false, "outcome": "ok",
                    "migration_hash": "feedface" }),
            json!({ "seq": 4, "time": "2026-01-01T00:00:01Z", "run": "R1", "kind": "approval", "step": "migrate", "role": "release_manager",
                    "approver": "alice@example.com", "plan_hash": "cafe" }),
            json!({ "seq": 5, "time": "2026-01-01T00:00:02Z", "run": "R1", "kind": "step_end", "step": "migrate", "occurrence": 1, "outcome": "ok", "duration_ms": 5 }),
            json!({ "seq": 6, "time": "2026-01-01T00:00:02Z", "run": "R1", "kind": "run_end", "step": null,
                    "outcome": "ok", "exit_code": 0, "duration_ms": 7 }),
        ];
        let events: Vec<crate::event::Event> = events
            .into_iter()
            .map(|event| serde_json::from_value(event).expect("a journal event"))
            .collect();
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
