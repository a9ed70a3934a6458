//! The journal's vocabulary: one typed [`Event`] per line of `journal.jsonl`, and the only place
//! that knows how an event looks on the wire. The terminal, the report, the run index, the
//! shared state, bundles and the OTLP export read these types, never `event["kind"]` strings.
//!
//! Wire shape: `{"seq", "time", "run", "step", "kind", ...fields}`, `kind` one of the
//! [`Body`] variants in snake case. Fields may be added and none is renamed (DESIGN.md): each
//! body keeps the fields it does not know in `extra`, so reading and re-writing a journal made
//! by a newer glow-run loses nothing, and namespace-specific effect details (`code`, `status`,
//! `rows`, `migration_hash`, ...) travel without a type of their own.

use crate::plan::{Needs, PlannedEffect};
use crate::redact::Redactor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Fields a body does not name (kept as they came).
pub type Extra = Map<String, Value>;

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub time: String,
    pub run: String,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(flatten)]
    pub body: Body,
    /// The hash chain: SHA-256 of the previous line (see journal.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    RunStart(RunStart),
    StepStart(StepStart),
    StepEnd(StepEnd),
    Effect(EffectEvent),
    Output(Output),
    Log(Log),
    Artifact(ArtifactEvent),
    Prompt(PromptEvent),
    Approval(ApprovalEvent),
    Plan(PlanEvent),
    RunEnd(RunEnd),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunStart {
    #[serde(default)]
    pub script: String,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub trace_id: String,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub resumes: Option<String>,
    #[serde(default)]
    pub journal: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepStart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Set on the start of a compensation: the step it compensates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepEnd {
    /// `ok`, `failed`, `skipped` or `cancelled`.
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EffectEvent {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub args: Value,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub planned: bool,
    /// `ok`, `failed`, `denied`, `planned` or `cancelled`.
    #[serde(default)]
    pub outcome: String,
    /// Position in the plan (effects that change something only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the namespace adds: `code`, `status`, `rows`, `migration_hash`, ...
    #[serde(flatten)]
    pub extra: Extra,
}

impl EffectEvent {
    pub fn extra_i64(&self, key: &str) -> Option<i64> {
        self.extra.get(key).and_then(Value::as_i64)
    }

    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Output {
    /// `stdout` or `stderr` of a child, or `script` for the script's own `print`.
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub line: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Log {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub message: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ArtifactEvent {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub planned: bool,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PromptEvent {
    #[serde(default)]
    pub id: String,
    /// `confirm`, `input`, `select`, `secret` or `approve`.
    #[serde(rename = "type", default)]
    pub prompt_type: String,
    #[serde(default)]
    pub question: String,
    #[serde(default)]
    pub answer: Value,
    /// Where the answer came from: `terminal`, `answers_file`, `env`, `yes`, `default`, ...
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub planned: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ApprovalEvent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub approver: String,
    #[serde(default)]
    pub script_sha256: String,
    #[serde(default)]
    pub plan_hash: String,
    #[serde(default)]
    pub answer: String,
    #[serde(default)]
    pub source: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PlanEvent {
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub effects: Vec<PlannedEffect>,
    #[serde(default)]
    pub needs: Needs,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunEnd {
    /// `ok`, `failed` or `interrupted`.
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub trace_id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Body {
    /// The wire name of the kind (`run_start`, `effect`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RunStart(_) => "run_start",
            Self::StepStart(_) => "step_start",
            Self::StepEnd(_) => "step_end",
            Self::Effect(_) => "effect",
            Self::Output(_) => "output",
            Self::Log(_) => "log",
            Self::Artifact(_) => "artifact",
            Self::Prompt(_) => "prompt",
            Self::Approval(_) => "approval",
            Self::Plan(_) => "plan",
            Self::RunEnd(_) => "run_end",
        }
    }

    /// A log line (`log::info`, host warnings).
    pub fn log(level: &str, message: impl Into<String>) -> Self {
        Self::Log(Log {
            level: level.to_owned(),
            message: message.into(),
            extra: Extra::new(),
        })
    }
}

impl Event {
    /// Parses one journal line; `None` for a torn or foreign line.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }

    /// Masks every registered secret in every value (never in keys or structure).
    pub fn redact(&mut self, redactor: &Redactor) {
        // No early return when no secret is registered: credential shapes (a URL's password,
        // a bearer value) are masked all the same.
        let text = |value: &mut String| {
            if let std::borrow::Cow::Owned(masked) = redactor.redact(value) {
                *value = masked;
            }
        };
        let extra = |map: &mut Extra| {
            for value in map.values_mut() {
                redactor.redact_json(value);
            }
        };
        if let Some(step) = self.step.as_mut() {
            text(step);
        }
        match &mut self.body {
            Body::RunStart(e) => {
                text(&mut e.script);
                e.vars.values_mut().for_each(text);
                e.journal.iter_mut().for_each(text);
                text(&mut e.cwd);
                extra(&mut e.extra);
            }
            Body::StepStart(e) => {
                e.rollback_of.iter_mut().for_each(text);
                extra(&mut e.extra);
            }
            Body::StepEnd(e) => {
                e.error.iter_mut().for_each(text);
                e.reason.iter_mut().for_each(text);
                e.rollback_of.iter_mut().for_each(text);
                extra(&mut e.extra);
            }
            Body::Effect(e) => {
                text(&mut e.target);
                redactor.redact_json(&mut e.args);
                e.error.iter_mut().for_each(text);
                extra(&mut e.extra);
            }
            Body::Output(e) => {
                text(&mut e.line);
                extra(&mut e.extra);
            }
            Body::Log(e) => {
                text(&mut e.message);
                extra(&mut e.extra);
            }
            Body::Artifact(e) => {
                text(&mut e.name);
                text(&mut e.path);
                text(&mut e.root);
                e.source.iter_mut().for_each(text);
                extra(&mut e.extra);
            }
            Body::Prompt(e) => {
                text(&mut e.question);
                redactor.redact_json(&mut e.answer);
                extra(&mut e.extra);
            }
            Body::Approval(e) => {
                text(&mut e.approver);
                text(&mut e.answer);
                extra(&mut e.extra);
            }
            Body::Plan(e) => {
                for effect in &mut e.effects {
                    text(&mut effect.target);
                    redactor.redact_json(&mut effect.detail);
                }
                extra(&mut e.extra);
            }
            Body::RunEnd(e) => {
                e.error.iter_mut().for_each(text);
                extra(&mut e.extra);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as today's journal writes them: each reads into its typed body and writes back
    /// with the same fields and values.
    #[test]
    fn journal_lines_round_trip() {
        let lines = [
            r#"{"seq":1,"time":"2026-12-02T07:00:00.000Z","run":"r1","kind":"run_start","step":null,"script":"s.rhai","sha256":"ab","mode":"live","vars":{"tag":"v1"},"trace_id":"t","cwd":"/w","resumes":null,"journal":"/w/.glow/runs/r1/journal.jsonl"}"#,
            r#"{"seq":2,"time":"2026-12-02T07:00:00.001Z","run":"r1","kind":"step_start","step":"build","occurrence":1,"depth":0,"timeout_ms":null}"#,
            r#"{"seq":3,"time":"2026-12-02T07:00:00.002Z","run":"r1","kind":"output","step":"build","stream":"stdout","line":"ok"}"#,
            r#"{"seq":4,"time":"2026-12-02T07:00:00.003Z","run":"r1","kind":"effect","step":"build","namespace":"exec","action":"run","target":"npm ci","args":{"cwd":null},"read_only":false,"index":1,"planned":false,"code":0,"duration_ms":5,"outcome":"ok"}"#,
            r#"{"seq":5,"time":"2026-12-02T07:00:00.004Z","run":"r1","kind":"log","step":null,"level":"trace","message":"m","event":"http_attempt","status":200}"#,
            r#"{"seq":6,"time":"2026-12-02T07:00:00.005Z","run":"r1","kind":"step_end","step":"build","outcome":"ok","duration_ms":4,"occurrence":1}"#,
            r#"{"seq":7,"time":"2026-12-02T07:00:00.006Z","run":"r1","kind":"run_end","step":null,"outcome":"ok","exit_code":0,"duration_ms":6,"error":null,"trace_id":"t"}"#,
        ];
        for line in lines {
            let event = Event::parse(line).unwrap_or_else(|| panic!("parses: {line}"));
            let written: Value = serde_json::to_value(&event).unwrap();
            let mut original: Value = serde_json::from_str(line).unwrap();
            // `timeout_ms: null` is the one field written only when set.
            original.as_object_mut().unwrap().remove("timeout_ms");
            assert_eq!(written, original, "{line}");
        }
        let effect = Event::parse(lines[3]).unwrap();
        let Body::Effect(effect) = effect.body else {
            panic!("an effect")
        };
        assert_eq!(effect.extra_i64("code"), Some(0));
        assert_eq!(effect.index, Some(1));
    }

    #[test]
    fn redaction_masks_values_never_keys() {
        let redactor = Redactor::new();
        redactor.register("kind");
        redactor.register("hunter22");
        let mut event = Event {
            seq: 1,
            time: "t".into(),
            run: "r".into(),
            step: Some("deploy".into()),
            body: Body::log("info", "password hunter22 and kind"),
            prev: None,
        };
        event.redact(&redactor);
        let line = serde_json::to_string(&event).unwrap();
        assert!(line.contains(r#""kind":"log""#), "{line}");
        assert!(!line.contains("hunter22"), "{line}");
    }
}
