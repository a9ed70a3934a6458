//! The plan: the ordered list of effects a live run performs (or, in a dry run, would perform),
//! and what a live run still needs (environment, secrets, programs, answers, approvals).
//! Both are filled by the one effect gate, so a dry run's plan and a live run's effect list
//! come from the same calls.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedEffect {
    /// 1-based position in the plan.
    pub index: usize,
    pub step: Option<String>,
    pub namespace: String,
    pub action: String,
    /// What the effect acts on, redacted: a command line, a URL, a statement, a name.
    pub target: String,
    pub detail: serde_json::Value,
    pub planned: bool,
}

impl PlannedEffect {
    /// One line for the terminal and the report.
    pub fn summary(&self) -> String {
        format!("{} {} {}", self.namespace, self.action, self.target)
    }
}

/// What a live run still needs that this (dry) run found missing.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Needs {
    pub env: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    pub vars: BTreeSet<String>,
    pub programs: BTreeSet<String>,
    /// Questions a live run would ask, by prompt id.
    pub questions: Vec<String>,
    /// Sign-offs a live run needs, by role.
    pub approvals: Vec<String>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.secrets.is_empty()
            && self.vars.is_empty()
            && self.programs.is_empty()
            && self.questions.is_empty()
            && self.approvals.is_empty()
    }

    /// Lines like `env: A, B` for each non-empty group.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut group = |label: &str, items: Vec<&String>| {
            if !items.is_empty() {
                let joined: Vec<&str> = items.iter().map(|s| s.as_str()).collect();
                lines.push(format!("{label}: {}", joined.join(", ")));
            }
        };
        group("env", self.env.iter().collect());
        group("secrets", self.secrets.iter().collect());
        group("vars", self.vars.iter().collect());
        group("programs not on PATH", self.programs.iter().collect());
        group("questions", self.questions.iter().collect());
        group("approvals", self.approvals.iter().collect());
        lines
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    pub effects: Vec<PlannedEffect>,
    pub needs: Needs,
    /// Environment the script read: name -> `sha256:<digest of the value>` or `unset` (never
    /// the value), for the saved plan's stale check.
    pub env_reads: std::collections::BTreeMap<String, String>,
    /// Names read as secrets (`env::secret`): listed in a saved plan, never digested.
    pub secret_names: BTreeSet<String>,
}

/// How a saved plan records an env value: its digest, or `unset`.
pub fn env_digest(value: Option<&str>) -> String {
    match value {
        Some(value) => format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(value.as_bytes()))
        ),
        None => "unset".to_owned(),
    }
}
