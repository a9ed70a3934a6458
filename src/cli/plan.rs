//! `glow-run plan show FILE|HASH`: what a saved plan will do, its hash and who approved it,
//! each approval judged with the policy in force now (`glow.toml` beside the plan's script)
//! through the same `approval::Rules` a live run uses.

use crate::arguments::{GlobalFlags, PlanAction};
use crate::error::{EXIT_OK, Error};
use crate::plan_binding::{self, Origin};
use crate::plan_file::PlanFile;
use crate::policy::Policy;
use std::fmt::Write as _;
use std::path::Path;

pub fn plan(global: &GlobalFlags, action: PlanAction) -> Result<i32, Error> {
    match action {
        PlanAction::Show { plan } => show(global, &plan),
    }
}

/// The policy in force for a plan: glow.toml beside its script (permissive when absent).
pub(super) fn policy_for(plan: &PlanFile) -> Result<Policy, Error> {
    let dir = Path::new(&plan.script.path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Policy::load_from_dir(dir)
}

pub(super) fn summary(plan: &PlanFile, origin: &Origin) -> String {
    let mut out = String::new();
    let from = match origin {
        Origin::File(path) => path.display().to_string(),
        Origin::Shared => "the shared state".to_owned(),
    };
    let _ = writeln!(out, "plan {} ({from})", plan.hash);
    let _ = writeln!(
        out,
        "  script   {} sha256 {}",
        plan.script.path, plan.script.sha256
    );
    let _ = writeln!(
        out,
        "  made     {} by {} (glow-run {}), {} module(s), complete: {}",
        plan.created,
        plan.created_by,
        plan.glow_run_version,
        plan.modules.len(),
        if plan.complete {
            "yes"
        } else {
            "NO (a live run will refuse it)"
        }
    );
    let vars: Vec<String> = plan.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "  vars     {}",
        if vars.is_empty() {
            "-".into()
        } else {
            vars.join(" ")
        }
    );
    let env: Vec<&str> = plan.env.keys().map(String::as_str).collect();
    let _ = writeln!(
        out,
        "  env      {} (digests only)",
        if env.is_empty() {
            "-".into()
        } else {
            env.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  secrets  {} (names only)",
        if plan.secrets.is_empty() {
            "-".into()
        } else {
            plan.secrets.join(", ")
        }
    );
    let _ = writeln!(out, "  effects  {} ({})", plan.effects.len(), plan.counts());
    out
}

fn show(global: &GlobalFlags, name: &str) -> Result<i32, Error> {
    let (plan, origin) = plan_binding::resolve(name, global.state.as_deref())?;
    let mut out = summary(&plan, &origin);
    let _ = writeln!(out, "\neffects, in order:");
    for effect in &plan.effects {
        let _ = writeln!(out, "  {}", effect.summary());
    }
    let _ = writeln!(out, "\nneeds:");
    let _ = writeln!(
        out,
        "  questions  {}",
        if plan.questions.is_empty() {
            "-".into()
        } else {
            plan.questions.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  approvals  {}",
        if plan.approvals_required.is_empty() {
            "-".into()
        } else {
            plan.approvals_required.join(", ")
        }
    );
    let policy = policy_for(&plan)?;
    if policy.source.is_some() && plan_binding_policy_changed(&plan, &policy) {
        let _ = writeln!(
            out,
            "  note: {} changed since the plan was made: a live run will refuse this plan",
            policy.file_label()
        );
    }
    let signers = plan_binding::load_signers(&policy, &plan.vars);
    let _ = writeln!(out, "\napprovals ({}):", plan.approvals.len());
    let mut approved = Vec::new();
    for approval in &plan.approvals {
        let verdict = match &signers {
            Err(why) => format!("cannot be checked: {why}"),
            Ok(signers) => {
                let rules = plan_binding::rules(&policy, signers.as_ref(), None);
                match rules.verify(approval, &plan.hash, chrono::Utc::now()) {
                    Ok(_) => {
                        approved.push(approval.role.clone());
                        "verifies".to_owned()
                    }
                    Err(why) => format!("does NOT verify: {why}"),
                }
            }
        };
        let _ = writeln!(
            out,
            "  {} by {} with {} at {}: {verdict}",
            approval.role, approval.principal, approval.key, approval.time
        );
    }
    let missing: Vec<&String> = plan
        .approvals_required
        .iter()
        .filter(|r| !approved.contains(r))
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|r| r.as_str()).collect();
        let _ = writeln!(out, "  still needed: {}", names.join(", "));
    }
    print!("{out}");
    Ok(EXIT_OK)
}

fn plan_binding_policy_changed(plan: &PlanFile, policy: &Policy) -> bool {
    let now = policy
        .source
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|bytes| crate::config::sha256_hex(&bytes));
    now != plan.policy_sha256
}
