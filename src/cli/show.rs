//! `glow-run show RUN_ID`: a run's steps, effects, artifacts and approvals.

use super::lookup::load;
use crate::arguments::GlobalFlags;
use crate::error::{EXIT_OK, Error};
use crate::reporter::format_ms;
use crate::state::{self, RunRecord};
use std::fmt::Write as _;
use std::path::Path;

/// `glow-run show RUN_ID`: a run's steps, effects, artifacts and approvals.
pub fn show(global: &GlobalFlags, run_id: &str) -> Result<i32, Error> {
    let run = load(global, run_id)?;
    let mut text = render_run(&run);
    // Whether the journal's hash chain verifies, under the header.
    if let Some(at) = text.find("\n\nsteps (") {
        text.insert_str(
            at + 1,
            &chain_line(&state::journal_path(&global.state_dir, run_id)),
        );
    }
    print!("{text}");
    Ok(EXIT_OK)
}

fn chain_line(journal: &Path) -> String {
    let Ok(bytes) = std::fs::read(journal) else {
        return format!("  journal: cannot read {}\n", journal.display());
    };
    let run_id = journal
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy());
    let check = crate::verify::journal::check(&bytes, run_id.as_deref());
    match check.findings.first() {
        None => format!("  journal verifies: {}\n", check.summary()),
        Some(first) => format!(
            "  journal does not verify: {}; {first}{}\n",
            check.summary(),
            if check.findings.len() > 1 {
                format!(
                    " (and {} more: `glow-run verify RUN_ID`)",
                    check.findings.len() - 1
                )
            } else {
                String::new()
            }
        ),
    }
}

fn ms(value: Option<i64>) -> String {
    value.map_or_else(
        || "-".into(),
        |ms| format_ms(u64::try_from(ms).unwrap_or(0)),
    )
}

fn render_run(run: &RunRecord) -> String {
    let mut out = String::new();
    render_header(&mut out, run);
    render_steps(&mut out, run);
    render_effects(&mut out, run);
    render_evidence(&mut out, run);
    out
}

fn render_header(out: &mut String, run: &RunRecord) {
    let _ = writeln!(
        out,
        "run {}  {}  {}  {}  {}",
        run.id,
        run.script,
        run.mode,
        run.status(),
        ms(run.duration_ms)
    );
    let _ = writeln!(out, "  script sha256 {}", run.sha256);
    let _ = writeln!(
        out,
        "  started {}{}",
        run.started,
        run.ended
            .as_ref()
            .map(|e| format!(", ended {e}"))
            .unwrap_or_default()
    );
    if let Some(code) = run.exit_code {
        let _ = writeln!(out, "  exit code {code}");
    }
    if let Some(tag) = &run.tag {
        let _ = writeln!(out, "  tag {tag}");
    }
    if !run.vars.is_empty() {
        let vars: Vec<String> = run.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  vars {}", vars.join(" "));
    }
    if let Some(trace) = &run.trace_id {
        let _ = writeln!(out, "  trace id {trace}");
    }
    if let Some(resumes) = &run.resumes {
        let _ = writeln!(out, "  resumes run {resumes}");
    }
    if let Some(journal) = &run.journal {
        let _ = writeln!(out, "  journal {journal}");
    }
    if let Some(error) = &run.error {
        let _ = writeln!(out, "  error: {error}");
    }
}

fn render_steps(out: &mut String, run: &RunRecord) {
    let _ = writeln!(out, "\nsteps ({}):", run.steps.len());
    for step in &run.steps {
        let indent = "  ".repeat(usize::try_from(step.depth.unwrap_or(0)).unwrap_or(0) + 1);
        let outcome = step.outcome.clone().unwrap_or_else(|| "unfinished".into());
        let mut line = format!(
            "{indent}{:<10} {}  {}",
            outcome,
            step.name,
            ms(step.duration_ms)
        );
        if let Some(reason) = &step.reason {
            let _ = write!(line, "  ({reason})");
        }
        if let Some(error) = &step.error {
            let _ = write!(line, "  {}", error.lines().next().unwrap_or(""));
        }
        let _ = writeln!(out, "{line}");
    }
}

fn render_effects(out: &mut String, run: &RunRecord) {
    let _ = writeln!(out, "\neffects ({}):", run.effects.len());
    for (index, effect) in run.effects.iter().enumerate() {
        let mut line = format!(
            "  {:>3}. [{}] {}::{} {}  {}",
            index + 1,
            effect.step.as_deref().unwrap_or("-"),
            effect.namespace,
            effect.action,
            effect.target,
            effect.outcome.as_deref().unwrap_or("-")
        );
        if effect.read_only {
            line.push_str(" (read-only)");
        }
        if let Some(code) = effect.code {
            let _ = write!(line, " exit {code}");
        }
        if effect.duration_ms.is_some() {
            let _ = write!(line, " {}", ms(effect.duration_ms));
        }
        if let Some(hash) = &effect.migration_hash {
            let _ = write!(line, " migration hash {hash}");
        }
        if let Some(error) = &effect.error {
            let _ = write!(line, "  {}", error.lines().next().unwrap_or(""));
        }
        let _ = writeln!(out, "{line}");
    }
}

/// Artifacts and approvals.
fn render_evidence(out: &mut String, run: &RunRecord) {
    let _ = writeln!(out, "\nartifacts ({}):", run.artifacts.len());
    for artifact in &run.artifacts {
        let _ = writeln!(
            out,
            "  {}{}  {} bytes  sha256 {}",
            if artifact.planned { "(planned) " } else { "" },
            artifact.name,
            artifact.size,
            artifact.sha256
        );
    }
    let _ = writeln!(out, "\napprovals ({}):", run.approvals.len());
    for approval in &run.approvals {
        let _ = writeln!(
            out,
            "  {} by {} at {}  plan sha256 {}",
            approval.role,
            approval.approver,
            approval.time.as_deref().unwrap_or("-"),
            approval.plan_hash.as_deref().unwrap_or("-")
        );
    }
}
