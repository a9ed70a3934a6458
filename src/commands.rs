//! The subcommands other than running a script: check, runs, show, resume, bundle, verify, defs,
//! unlock.

use crate::arguments::{GlobalFlags, RunFlags};
use crate::config::{Resume, RunSettings};
use crate::error::{EXIT_OK, Error};
use crate::redact::Redactor;
use crate::reporter::format_ms;
use crate::state::{self, RunRecord};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `glow-run check SCRIPT...`: compile without running.
pub fn check(scripts: &[PathBuf], stdlib: Option<PathBuf>) -> Result<i32, Error> {
    crate::lint::check(scripts, stdlib)
}

/// `glow-run runs`: recent runs, newest first (from the index; from the journals when the index
/// is missing or unreadable).
pub fn runs(global: &GlobalFlags, limit: usize) -> Result<i32, Error> {
    if let Some(url) = &global.state {
        return shared_runs(url, limit);
    }
    let (runs, source) = state::list_runs(&global.state_dir, limit)?;
    warn_source(&global.state_dir, &source);
    if runs.is_empty() {
        eprintln!("no runs recorded in {}", global.state_dir.display());
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|run| {
            [
                run.id.clone(),
                run.script.clone(),
                run.mode.clone(),
                run.status(),
                run.duration_ms.map_or_else(
                    || "-".into(),
                    |ms| format_ms(u64::try_from(ms).unwrap_or(0)),
                ),
                run.tag.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["RUN", "SCRIPT", "MODE", "OUTCOME", "DURATION", "TAG"].map(str::to_owned);
    print!("{}", table(&header, &rows));
    Ok(EXIT_OK)
}

fn table<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn warn_source(state_dir: &Path, source: &state::Source) {
    if let state::Source::Journals(Some(why)) = source {
        eprintln!(
            "warning: the run index {} is unreadable ({why}); reading the journals in {} instead\n\
             hint: move it away (`mv {0} {0}.broken`) and the next run starts a fresh index",
            state::db_path(state_dir).display(),
            state_dir.join("runs").display(),
        );
    }
}

fn unknown_run(global: &GlobalFlags, run_id: &str) -> Error {
    Error::usage(format!(
        "unknown run id '{run_id}': it is neither in {} nor under {} (`glow-run runs` lists recent runs)",
        state::db_path(&global.state_dir).display(),
        global.state_dir.join("runs").display()
    ))
}

fn load(global: &GlobalFlags, run_id: &str) -> Result<RunRecord, Error> {
    let (record, source) = state::load_run(&global.state_dir, run_id)?;
    warn_source(&global.state_dir, &source);
    record.ok_or_else(|| unknown_run(global, run_id))
}

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
    out
}

/// `glow-run resume RUN_ID`: the same script with the same vars, skipping the steps that
/// succeeded in that run. A changed script is refused unless `--force`.
pub fn resume(
    global: &GlobalFlags,
    run_id: &str,
    (force, rerun_in_doubt): (bool, bool),
    mut run: RunFlags,
    redactor: &Arc<Redactor>,
) -> Result<i32, Error> {
    let previous = load(global, run_id)?;
    if previous.script == crate::config::SNIPPET_NAME || previous.script.is_empty() {
        return Err(Error::usage(format!(
            "run {run_id} ran a -e snippet; only script runs can be resumed"
        )));
    }
    // Vars of the earlier run first; any given again on this command line win.
    let mut vars: Vec<(String, String)> = previous.vars.clone().into_iter().collect();
    for (key, value) in std::mem::take(&mut run.vars) {
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
    }
    run.vars = vars;
    let script = PathBuf::from(&previous.script);
    if !script.is_file() {
        let started_in = previous
            .cwd
            .as_deref()
            .map(|cwd| format!(" (it started in {cwd})"))
            .unwrap_or_default();
        return Err(Error::usage(format!(
            "cannot resume run {run_id}: its script {} is not here; run `glow-run resume` from the directory that run started in{started_in}",
            previous.script
        )));
    }
    let mut settings = RunSettings::load(Some(&script), None, run, global)?;
    if settings.sha256 != previous.sha256 {
        let lines_now = settings.text.lines().count();
        let change = format!(
            "{} changed since run {run_id}: sha256 was {}, is now {} ({lines_now} lines now)",
            previous.script,
            short(&previous.sha256),
            short(&settings.sha256),
        );
        if !force {
            return Err(Error::usage(format!(
                "{change}; steps are matched by name and order, so skipping them may no longer be right. \
                 Pass --force to resume anyway"
            )));
        }
        eprintln!("warning: {change}; resuming anyway (--force)");
    }
    let succeeded = previous.succeeded_steps();
    eprintln!(
        "resuming run {run_id}: {} step(s) that succeeded will be skipped",
        succeeded.len()
    );
    let in_doubt = previous.in_doubt_steps();
    for step in &in_doubt {
        eprintln!(
            "step '{}' is in doubt: run {run_id} started it and never ended it (last journaled effect: {})",
            step.name,
            step.last_effect.as_deref().unwrap_or("none")
        );
    }
    settings.resume = Some(Resume {
        run_id: previous.id.clone(),
        succeeded,
        in_doubt,
        rerun_in_doubt,
    });
    crate::run::execute(settings, redactor)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// `glow-run bundle RUN_ID -o FILE.tar.gz [--sign KEY]`: journal, report, manifest, artifacts
/// and the attestation, signed with `--sign` / `GLOW_SIGNING_KEY`, else `[evidence]
/// signing_key` of the glow.toml beside the run's script.
pub fn bundle(
    global: &GlobalFlags,
    run_id: &str,
    output: &Path,
    sign: Option<PathBuf>,
) -> Result<i32, Error> {
    let journal = state::journal_path(&global.state_dir, run_id);
    if run_id.contains('/') || !journal.is_file() {
        return Err(unknown_run(global, run_id));
    }
    let key = match sign {
        Some(key) => Some(key),
        None => policy_signing_key(&journal)?,
    };
    let signer = key
        .as_deref()
        .map(crate::attestation::Signer::load)
        .transpose()?;
    let summary = crate::bundle::bundle(&journal, output, signer.as_ref())?;
    eprintln!("{summary}");
    Ok(EXIT_OK)
}

/// `[evidence] signing_key` from the glow.toml beside the script the run ran (as its
/// `run_start` recorded it), or in the current directory for a snippet.
fn policy_signing_key(journal: &Path) -> Result<Option<PathBuf>, Error> {
    let events = crate::journal::read_events(journal)
        .map_err(|e| Error::host(format!("reading {}", journal.display()), e))?;
    let Some(start) = events.iter().find_map(|e| match &e.body {
        crate::event::Body::RunStart(start) => Some(start),
        _ => None,
    }) else {
        return Ok(None);
    };
    let script = start.script.as_str();
    let dir = if script == crate::config::SNIPPET_NAME {
        PathBuf::from(".")
    } else {
        let cwd = PathBuf::from(if start.cwd.is_empty() {
            "."
        } else {
            &start.cwd
        });
        cwd.join(script)
            .parent()
            .map_or(cwd.clone(), Path::to_path_buf)
    };
    Ok(crate::policy::Policy::load_from_dir(&dir)?
        .evidence
        .signing_key)
}

/// `glow-run verify RUN_DIR|BUNDLE|STORE|RUN_ID [--allowed-signers FILE]`: what held on
/// stdout, one `mismatch:` line per finding on stderr, exit 1 on any.
pub fn verify(global: &GlobalFlags, target: &str, allowed: Option<&Path>) -> Result<i32, Error> {
    let verified = crate::verify::verify(target, &global.state_dir, allowed)?;
    for line in &verified.lines {
        println!("{line}");
    }
    if !verified.findings.is_empty() {
        return Err(Error::Verify {
            problems: verified.findings,
        });
    }
    println!("{}", verified.summary);
    Ok(EXIT_OK)
}

/// `glow-run defs [--out DIR]`: Rhai definition files for editors (see `definitions.rs`).
/// With `--out`, one file per namespace plus Rhai's own built-ins, ready for a language server;
/// without, the glow-run API as one text on stdout.
pub fn defs(out: Option<&Path>) -> Result<i32, Error> {
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::host(format!("creating {}", dir.display()), e))?;
            let files = crate::definitions::generate(true)?;
            for file in &files {
                let path = dir.join(&file.name);
                std::fs::write(&path, &file.text)
                    .map_err(|e| Error::host(format!("writing {}", path.display()), e))?;
            }
            eprintln!(
                "defs: wrote {} definition file(s) to {}",
                files.len(),
                dir.display()
            );
        }
        None => {
            let text = crate::definitions::single_file()?;
            let mut stdout = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut stdout, text.as_bytes());
        }
    }
    Ok(EXIT_OK)
}

/// `glow-run unlock SCRIPT --env NAME --reason TEXT --state URL`: end a stuck release lock.
pub fn unlock(
    global: &GlobalFlags,
    script: &str,
    environment: &str,
    reason: &str,
    yes: bool,
) -> Result<i32, Error> {
    let Some(url) = &global.state else {
        return Err(Error::usage(
            "unlock needs --state postgres://... (the release lock lives in the shared state)",
        ));
    };
    crate::shared_state::unlock(url, script, environment, reason, yes)
}

/// `glow-run runs --state postgres://...`: the team's history from the shared state.
fn shared_runs(url: &str, limit: usize) -> Result<i32, Error> {
    let runs = crate::shared_state::list(url, limit)?;
    if runs.is_empty() {
        eprintln!("no runs recorded in the shared state");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 8]> = runs
        .into_iter()
        .map(|run| {
            [
                run.run_id,
                run.script,
                run.mode,
                run.environment,
                run.outcome,
                run.duration_ms.map_or_else(
                    || "-".into(),
                    |ms| format_ms(u64::try_from(ms).unwrap_or(0)),
                ),
                run.tag.unwrap_or_else(|| "-".into()),
                run.initiator.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "RUN",
        "SCRIPT",
        "MODE",
        "ENVIRONMENT",
        "OUTCOME",
        "DURATION",
        "TAG",
        "BY",
    ]
    .map(str::to_owned);
    print!("{}", table(&header, &rows));
    Ok(EXIT_OK)
}
