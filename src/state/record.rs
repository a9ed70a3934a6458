//! [`RunRecord`]: the one model of a run that `runs`, `show` and `resume` present, read from
//! the index or rebuilt from the run's journal by applying its events in order.

use crate::event::{Body, Event, StepEnd};
use serde_json::Value;
use std::collections::BTreeMap;

/// One run as `runs` and `show` present it.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub id: String,
    pub script: String,
    pub sha256: String,
    pub mode: String,
    pub tag: Option<String>,
    pub vars: BTreeMap<String, String>,
    pub trace_id: Option<String>,
    pub resumes: Option<String>,
    pub journal: Option<String>,
    /// The working directory the run started in (scripts and stores resolve from it).
    pub cwd: Option<String>,
    pub pid: Option<i64>,
    pub started: String,
    pub ended: Option<String>,
    pub outcome: Option<String>,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub steps: Vec<StepRecord>,
    pub effects: Vec<EffectRecord>,
    pub artifacts: Vec<ArtifactRecord>,
    pub approvals: Vec<ApprovalRecord>,
    /// The last journal `seq` the record holds (what the index compares with the journal).
    pub last_seq: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct StepRecord {
    /// The `seq` of the step's first event (its start, or its end for a skipped step).
    pub seq: Option<i64>,
    pub name: String,
    pub occurrence: Option<i64>,
    pub depth: Option<i64>,
    pub outcome: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EffectRecord {
    pub seq: Option<i64>,
    pub step: Option<String>,
    pub namespace: String,
    pub action: String,
    pub target: String,
    pub read_only: bool,
    pub planned: bool,
    pub outcome: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub code: Option<i64>,
    pub migration_hash: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ArtifactRecord {
    pub step: Option<String>,
    pub name: String,
    pub sha256: String,
    pub size: i64,
    pub planned: bool,
    pub path: Option<String>,
    pub root: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ApprovalRecord {
    pub step: Option<String>,
    pub role: String,
    pub approver: String,
    pub time: Option<String>,
    pub script_sha256: Option<String>,
    pub plan_hash: Option<String>,
}

impl RunRecord {
    /// The outcome as shown: a run without `run_end` is "running" while its process lives,
    /// else "interrupted".
    pub fn status(&self) -> String {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        if self.pid.is_some_and(pid_alive) {
            "running".into()
        } else {
            "interrupted".into()
        }
    }

    /// The steps (name, occurrence) that succeeded, including those skipped because they had
    /// succeeded in the run this one resumed (so a resume of a resume keeps skipping them).
    pub fn succeeded_steps(&self) -> std::collections::BTreeSet<(String, usize)> {
        self.steps
            .iter()
            .filter(|s| {
                s.outcome.as_deref() == Some("ok")
                    || (s.outcome.as_deref() == Some("skipped")
                        && s.reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("succeeded in run")))
            })
            .filter_map(|s| Some((s.name.clone(), usize::try_from(s.occurrence?).ok()?)))
            .collect()
    }

    /// Builds the record from a journal's events (the fallback when the index cannot serve).
    pub fn from_events(events: &[Event]) -> Option<Self> {
        let mut record: Option<Self> = None;
        for event in events {
            if matches!(event.body, Body::RunStart(_)) {
                record = Some(Self::default());
            }
            if let Some(record) = record.as_mut() {
                record.apply(event);
            }
        }
        record
    }

    /// Applies one event (the same reading the index writer does in SQL).
    pub fn apply(&mut self, event: &Event) {
        let step = event.step.clone();
        let seq = Some(as_i64(event.seq));
        if is_indexed(&event.body) {
            self.last_seq = seq;
        }
        match &event.body {
            Body::RunStart(start) => {
                self.id.clone_from(&event.run);
                self.script.clone_from(&start.script);
                self.sha256.clone_from(&start.sha256);
                self.mode.clone_from(&start.mode);
                self.vars.clone_from(&start.vars);
                self.tag = self.vars.get("tag").cloned();
                self.trace_id = Some(start.trace_id.clone()).filter(|t| !t.is_empty());
                self.resumes.clone_from(&start.resumes);
                self.journal.clone_from(&start.journal);
                self.cwd = Some(start.cwd.clone()).filter(|c| !c.is_empty());
                self.pid = start.extra.get("pid").and_then(Value::as_i64);
                self.started.clone_from(&event.time);
            }
            Body::StepStart(start) => self.steps.push(StepRecord {
                seq,
                name: step.unwrap_or_default(),
                occurrence: start.occurrence.map(as_i64),
                depth: start.depth.map(as_i64),
                ..StepRecord::default()
            }),
            Body::StepEnd(end) => self.end_step(step.unwrap_or_default(), seq, end),
            Body::Effect(effect) => self.effects.push(EffectRecord {
                seq,
                step,
                namespace: effect.namespace.clone(),
                action: effect.action.clone(),
                target: effect.target.clone(),
                read_only: effect.read_only,
                planned: effect.planned,
                outcome: Some(effect.outcome.clone()).filter(|o| !o.is_empty()),
                duration_ms: effect.duration_ms.map(as_i64),
                error: effect.error.clone(),
                code: effect.extra_i64("code"),
                migration_hash: effect.extra_str("migration_hash").map(str::to_owned),
            }),
            Body::Artifact(artifact) => self.artifacts.push(ArtifactRecord {
                step,
                name: artifact.name.clone(),
                sha256: artifact.sha256.clone(),
                size: as_i64(artifact.size),
                planned: artifact.planned,
                path: Some(artifact.path.clone()),
                root: Some(artifact.root.clone()),
            }),
            Body::Approval(approval) => self.approvals.push(ApprovalRecord {
                step,
                role: approval.role.clone(),
                approver: approval.approver.clone(),
                time: Some(event.time.clone()),
                script_sha256: Some(approval.script_sha256.clone()),
                plan_hash: Some(approval.plan_hash.clone()),
            }),
            Body::RunEnd(end) => {
                self.ended = Some(event.time.clone());
                self.outcome = Some(end.outcome.clone());
                self.exit_code = Some(i64::from(end.exit_code));
                self.duration_ms = Some(as_i64(end.duration_ms));
                self.error.clone_from(&end.error);
            }
            Body::Output(_) | Body::Log(_) | Body::Prompt(_) | Body::Plan(_) => {}
        }
    }

    /// Closes the newest open step of that name and occurrence (a skipped step never opened).
    fn end_step(&mut self, name: String, seq: Option<i64>, end: &StepEnd) {
        let occurrence = end.occurrence.map(as_i64);
        let open = self
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.outcome.is_none() && s.name == name && s.occurrence == occurrence);
        let target = match open {
            Some(step) => step,
            None => {
                self.steps.push(StepRecord {
                    seq,
                    name,
                    occurrence,
                    ..StepRecord::default()
                });
                self.steps.last_mut().expect("just pushed")
            }
        };
        target.outcome = Some(end.outcome.clone());
        target.duration_ms = Some(as_i64(end.duration_ms));
        target.error.clone_from(&end.error);
        target.reason.clone_from(&end.reason);
    }
}

pub(super) fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The events the index holds (output lines, logs, prompts and the plan are not indexed).
pub fn is_indexed(body: &Body) -> bool {
    !matches!(
        body,
        Body::Output(_) | Body::Log(_) | Body::Prompt(_) | Body::Plan(_)
    )
}

/// Whether the process of a run is alive (a zombie or this very process does not count).
pub fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 || pid == i32::try_from(std::process::id()).unwrap_or(0) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    match state {
        Some("Z" | "X") => false,
        Some(_) => true,
        None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
    }
}

/// A step that started and has no end: the run was killed inside it, so its effect may or may
/// not have happened.
#[derive(Debug, Clone)]
pub struct InDoubtStep {
    pub name: String,
    pub occurrence: usize,
    /// The last effect journaled inside it, as `show` prints it, if any.
    pub last_effect: Option<String>,
}

impl RunRecord {
    /// The steps in doubt, outermost first (a killed nested step leaves its parents open too).
    pub fn in_doubt_steps(&self) -> Vec<InDoubtStep> {
        self.steps
            .iter()
            .filter(|s| s.outcome.is_none())
            .filter_map(|s| {
                let occurrence = usize::try_from(s.occurrence?).ok()?;
                let start = s.seq.unwrap_or(0);
                let last_effect = self
                    .effects
                    .iter()
                    .rev()
                    .find(|e| e.step.as_deref() == Some(&s.name) && e.seq.unwrap_or(0) > start)
                    .map(|e| {
                        format!(
                            "{}::{} {} ({})",
                            e.namespace,
                            e.action,
                            e.target,
                            e.outcome.as_deref().unwrap_or("no outcome")
                        )
                    });
                Some(InDoubtStep {
                    name: s.name.clone(),
                    occurrence,
                    last_effect,
                })
            })
            .collect()
    }
}
