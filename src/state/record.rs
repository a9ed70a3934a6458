//! [`RunRecord`]: the one model of a run that `runs`, `show` and `resume` present, read from
//! the index or rebuilt from the run's journal by applying its events in order.

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

pub(super) fn text(event: &Value, key: &str) -> Option<String> {
    match &event[key] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub(super) fn int(event: &Value, key: &str) -> Option<i64> {
    event[key].as_i64()
}

pub(super) fn flag(event: &Value, key: &str) -> bool {
    event[key].as_bool().unwrap_or(false)
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
    pub fn from_events(events: &[Value]) -> Option<Self> {
        let mut record: Option<Self> = None;
        for event in events {
            if event["kind"] == "run_start" {
                record = Some(Self::default());
            }
            if let Some(record) = record.as_mut() {
                record.apply(event);
            }
        }
        record
    }

    /// Applies one event (the same reading the index writer does in SQL).
    fn apply(&mut self, event: &Value) {
        let step = text(event, "step");
        let seq = int(event, "seq");
        if seq.is_some() && crate::state::is_indexed(event) {
            self.last_seq = seq;
        }
        match event["kind"].as_str().unwrap_or("") {
            "run_start" => {
                self.id = text(event, "run").unwrap_or_default();
                self.script = text(event, "script").unwrap_or_default();
                self.sha256 = text(event, "sha256").unwrap_or_default();
                self.mode = text(event, "mode").unwrap_or_default();
                self.vars = serde_json::from_value(event["vars"].clone()).unwrap_or_default();
                self.tag = self.vars.get("tag").cloned();
                self.trace_id = text(event, "trace_id");
                self.resumes = text(event, "resumes");
                self.journal = text(event, "journal");
                self.cwd = text(event, "cwd");
                self.pid = int(event, "pid");
                self.started = text(event, "time").unwrap_or_default();
            }
            "step_start" => self.steps.push(StepRecord {
                seq,
                name: step.unwrap_or_default(),
                occurrence: int(event, "occurrence"),
                depth: int(event, "depth"),
                ..StepRecord::default()
            }),
            "step_end" => {
                let name = step.unwrap_or_default();
                let occurrence = int(event, "occurrence");
                let open =
                    self.steps.iter_mut().rev().find(|s| {
                        s.outcome.is_none() && s.name == name && s.occurrence == occurrence
                    });
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
                target.outcome = text(event, "outcome");
                target.duration_ms = int(event, "duration_ms");
                target.error = text(event, "error");
                target.reason = text(event, "reason");
            }
            "effect" => self.effects.push(EffectRecord {
                seq,
                step,
                namespace: text(event, "namespace").unwrap_or_default(),
                action: text(event, "action").unwrap_or_default(),
                target: text(event, "target").unwrap_or_default(),
                read_only: flag(event, "read_only"),
                planned: flag(event, "planned"),
                outcome: text(event, "outcome"),
                duration_ms: int(event, "duration_ms"),
                error: text(event, "error"),
                code: int(event, "code"),
                migration_hash: text(event, "migration_hash"),
            }),
            "artifact" => self.artifacts.push(ArtifactRecord {
                step,
                name: text(event, "name").unwrap_or_default(),
                sha256: text(event, "sha256").unwrap_or_default(),
                size: int(event, "size").unwrap_or(0),
                planned: flag(event, "planned"),
                path: text(event, "path"),
                root: text(event, "root"),
            }),
            "approval" => self.approvals.push(ApprovalRecord {
                step,
                role: text(event, "role").unwrap_or_default(),
                approver: text(event, "approver").unwrap_or_default(),
                time: text(event, "time"),
                script_sha256: text(event, "script_sha256"),
                plan_hash: text(event, "plan_hash"),
            }),
            "run_end" => {
                self.ended = text(event, "time");
                self.outcome = text(event, "outcome");
                self.exit_code = int(event, "exit_code");
                self.duration_ms = int(event, "duration_ms");
                self.error = text(event, "error");
            }
            _ => {}
        }
    }
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
