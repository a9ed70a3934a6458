//! The saved plan (`--plan-out FILE`): what a dry run found a live run would do, in a form
//! approvers sign and a live run (`--plan FILE`) is bound to. Format `glow-run-plan/1`, JSON:
//! see DESIGN.md "Saved plans and signed approvals".
//!
//! `hash` is the SHA-256 of the canonical JSON (keys sorted, no whitespace) of everything but
//! `hash` and `approvals`, computed from the parsed file itself rather than from the fields
//! glow-run knows, so any edit to a plan after it was made (even an added field) is caught.

use crate::approval::Approval;
use crate::config::sha256_hex;
use crate::error::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub const FORMAT: &str = "glow-run-plan/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRef {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    pub name: String,
    pub sha256: String,
}

/// One effect of the plan: what the gate compares a live run's effects with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEffect {
    pub seq: usize,
    pub step: Option<String>,
    pub namespace: String,
    pub action: String,
    /// Redacted, as the journal has it.
    pub target: String,
    /// SHA-256 of the canonical JSON of the effect's (redacted) arguments.
    pub detail_sha256: String,
}

impl PlanEffect {
    pub fn summary(&self) -> String {
        format!(
            "#{} [{}] {} {} {}",
            self.seq,
            self.step.as_deref().unwrap_or("-"),
            self.namespace,
            self.action,
            self.target
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    pub format: String,
    pub hash: String,
    pub created: String,
    pub created_by: String,
    pub glow_run_version: String,
    pub script: ScriptRef,
    /// Every module the script imports (stdlib included), by name, sorted.
    pub modules: Vec<ModuleRef>,
    /// SHA-256 of `glow.toml` beside the script; `null` when there is none.
    pub policy_sha256: Option<String>,
    pub vars: BTreeMap<String, String>,
    /// `NAME: "sha256:..."` of the non-secret env values the dry run read (`unset` when absent).
    pub env: BTreeMap<String, String>,
    /// Names of the secrets the run reads (never their values or digests).
    pub secrets: Vec<String>,
    pub effects: Vec<PlanEffect>,
    pub questions: Vec<String>,
    pub approvals_required: Vec<String>,
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// False when the dry run lacked something a live run needs (env, secret, var, program) or
    /// failed: such a plan cannot be applied.
    pub complete: bool,
}

/// JSON with keys sorted at every level and no whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// The plan hash of a parsed plan file: everything but `hash` and `approvals`.
pub fn hash_of(value: &Value) -> String {
    let mut value = value.clone();
    if let Value::Object(map) = &mut value {
        map.remove("hash");
        map.remove("approvals");
    }
    sha256_hex(canonical_json(&value).as_bytes())
}

pub fn is_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PlanFile {
    /// Sets `hash` from the content.
    pub fn seal(&mut self) {
        let value = serde_json::to_value(&*self).unwrap_or(Value::Null);
        self.hash = hash_of(&value);
    }

    /// Parses a plan and checks its format and that its content still matches its hash.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("{origin} is not a plan file (invalid JSON: {e})"))?;
        let format = value["format"].as_str().unwrap_or("");
        if format != FORMAT {
            return Err(format!(
                "{origin} is not a plan file of format {FORMAT} (format: {:?})",
                value["format"]
            ));
        }
        let recorded = value["hash"].as_str().unwrap_or("").to_owned();
        let actual = hash_of(&value);
        if recorded != actual {
            return Err(format!(
                "{origin} was edited after it was made: it says its hash is {recorded} but its content hashes to {actual}; make a new plan with --dry-run --plan-out"
            ));
        }
        serde_json::from_value(value).map_err(|e| format!("{origin}: invalid plan file: {e}"))
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read plan file {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string()).map_err(Error::usage)
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes the plan atomically (a temp file in the same directory, then rename).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let context = || format!("writing plan file {}", path.display());
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let mut temp =
            tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::host(context(), e))?;
        temp.write_all(self.to_json().as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| Error::host(context(), e))?;
        temp.persist(path)
            .map_err(|e| Error::host(context(), e.error))?;
        Ok(())
    }

    /// Adds an approval to the plan file at `path` (read, add, atomic write) under an exclusive
    /// lock on its directory, so approvers signing at the same moment do not lose each other's
    /// approval. Refuses a file whose content changed since `expected_hash`.
    pub fn add_approval(
        path: &Path,
        expected_hash: &str,
        approval: Approval,
    ) -> Result<Self, Error> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let lock = std::fs::File::open(&dir)
            .map_err(|e| Error::host(format!("opening {}", dir.display()), e))?;
        let locked = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::host(format!("locking {}", dir.display()), e))?;
        let mut plan = Self::load(path)?;
        if plan.hash != expected_hash {
            return Err(Error::usage(format!(
                "{} changed while signing: its hash is now {}",
                path.display(),
                plan.hash
            )));
        }
        plan.approvals
            .retain(|a| !(a.role == approval.role && a.principal == approval.principal));
        plan.approvals.push(approval);
        plan.write(path)?;
        drop(locked);
        Ok(plan)
    }

    /// Effects per namespace, for summaries: `exec 12, http 9`.
    pub fn counts(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for effect in &self.effects {
            *counts.entry(effect.namespace.as_str()).or_default() += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(ns, n)| format!("{ns} {n}")).collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_without_whitespace() {
        let value = serde_json::json!({ "b": [1, { "d": "x y", "c": null }], "a": true });
        assert_eq!(
            canonical_json(&value),
            r#"{"a":true,"b":[1,{"c":null,"d":"x y"}]}"#
        );
    }
}
