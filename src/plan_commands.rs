//! `glow-run plan show FILE|HASH` and `glow-run approve FILE|HASH --role ROLE`: what a saved
//! plan will do and who approved it, and signing it. Both judge approvals with the policy in
//! force now (`glow.toml` beside the plan's script), through the same `approval::Rules` a live
//! run uses.

use crate::approval::{self, Approval};
use crate::arguments::{ApproveArgs, GlobalFlags, PlanAction};
use crate::error::{EXIT_OK, Error};
use crate::plan_binding::{self, Origin};
use crate::plan_file::PlanFile;
use crate::policy::Policy;
use crate::signing_key::{self, SigningKey};
use std::fmt::Write as _;
use std::path::Path;

pub fn plan(global: &GlobalFlags, action: PlanAction) -> Result<i32, Error> {
    match action {
        PlanAction::Show { plan } => show(global, &plan),
    }
}

/// The policy in force for a plan: glow.toml beside its script (permissive when absent).
fn policy_for(plan: &PlanFile) -> Result<Policy, Error> {
    let dir = Path::new(&plan.script.path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Policy::load_from_dir(dir)
}

fn summary(plan: &PlanFile, origin: &Origin) -> String {
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

/// Reads `--signature`: the armored text itself, or `@FILE`.
fn signature_text(given: &str) -> Result<String, Error> {
    match given.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read the signature file {path}: {e}"))),
        None => Ok(given.to_owned()),
    }
}

pub fn approve(global: &GlobalFlags, args: &ApproveArgs) -> Result<i32, Error> {
    let (name, role) = (args.plan.as_str(), args.role.as_str());
    let (key, principal) = (args.key.as_deref(), args.principal.as_deref());
    let signature = args.signature.as_deref();
    let (plan, origin) = plan_binding::resolve(name, global.state.as_deref())?;
    eprint!("{}", summary(&plan, &origin));
    if !plan.approvals_required.iter().any(|r| r == role) {
        return Err(Error::usage(format!(
            "plan {} asks for no '{role}' approval (it needs: {})",
            plan.hash,
            if plan.approvals_required.is_empty() {
                "none".into()
            } else {
                plan.approvals_required.join(", ")
            }
        )));
    }
    let policy = policy_for(&plan)?;
    let signers = plan_binding::load_signers(&policy, &plan.vars)
        .map_err(|message| Error::Refused { message })?;
    let approval = match signature {
        Some(given) => {
            let armored = signature_text(given)?;
            let parsed = approval::parse_signature(&armored)
                .map_err(|message| Error::Refused { message })?;
            Approval {
                role: role.to_owned(),
                principal: principal.unwrap_or_default().to_owned(),
                key: approval::fingerprint(parsed.public_key()),
                signature: armored.trim().to_owned() + "\n",
                time: crate::journal::now_rfc3339(),
            }
        }
        None => sign_here(&plan, &policy, signers.as_ref(), role, key, principal)?,
    };
    let rules = plan_binding::rules(&policy, signers.as_ref(), None);
    rules
        .verify(&approval, &plan.hash, chrono::Utc::now())
        .map_err(|why| Error::Refused {
            message: format!(
                "the approval as {role} by {} is refused: {why}",
                approval.principal
            ),
        })?;
    if let Some(other) = plan
        .approvals
        .iter()
        .find(|a| a.principal.eq_ignore_ascii_case(&approval.principal) && a.role != role)
    {
        return Err(Error::Refused {
            message: format!(
                "{} already approved this plan as {}: one principal cannot approve two roles of one plan",
                approval.principal, other.role
            ),
        });
    }
    if let Origin::File(path) = &origin {
        PlanFile::add_approval(path, &plan.hash, approval.clone())?;
    }
    if let Some(url) = &global.state {
        let (stored, hash) = (plan.clone(), plan.hash.clone());
        let approval = approval.clone();
        crate::shared_plans::blocking(url, async move |c| {
            crate::shared_plans::store(c, &stored).await?;
            crate::shared_plans::add(c, &hash, &approval).await
        })?;
    }
    eprintln!(
        "approved plan {} as {role} by {} with {}",
        plan.hash, approval.principal, approval.key
    );
    Ok(EXIT_OK)
}

/// Signs with the approver's key; the principal is `--principal`, else the one allowed_signers
/// lists for this key and `[approvals] roles` lists for the role.
fn sign_here(
    plan: &PlanFile,
    policy: &Policy,
    signers: Option<&approval::AllowedSigners>,
    role: &str,
    key: Option<&Path>,
    principal: Option<&str>,
) -> Result<Approval, Error> {
    let path = signing_key::default_path(key);
    let key = SigningKey::load(&path).map_err(Error::usage)?;
    let public = key.public();
    let principal = match principal {
        Some(principal) => principal.to_owned(),
        None => {
            let listed = policy
                .approvals
                .roles
                .get(role)
                .cloned()
                .unwrap_or_default();
            let held = signers
                .map(|s| s.principals_for(&public))
                .unwrap_or_default();
            let mut both = held
                .into_iter()
                .filter(|p| listed.iter().any(|l| l.eq_ignore_ascii_case(p)));
            match (both.next(), both.next()) {
                (Some(principal), None) => principal,
                (Some(_), Some(_)) => {
                    return Err(Error::usage(format!(
                        "the key {} is listed for several principals of role {role}: say which with --principal",
                        approval::fingerprint(&public)
                    )));
                }
                (None, _) => crate::identity::approver(),
            }
        }
    };
    let signature = key.sign(&plan.hash).map_err(Error::usage)?;
    Ok(Approval {
        role: role.to_owned(),
        principal,
        key: approval::fingerprint(&public),
        signature,
        time: crate::journal::now_rfc3339(),
    })
}
