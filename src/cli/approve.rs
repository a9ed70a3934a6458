//! `glow-run approve FILE|HASH --role ROLE`: shows the plan's summary and hash, signs it with
//! the approver's SSH key (or takes a signature made elsewhere), checks the approval under the
//! policy in force now, and adds it to the plan file (atomically) and the shared state.

use super::plan::{policy_for, summary};
use crate::approval::{self, Approval};
use crate::arguments::{ApproveArgs, GlobalFlags};
use crate::error::{EXIT_OK, Error};
use crate::plan_binding::{self, Origin};
use crate::plan_file::PlanFile;
use crate::policy::Policy;
use crate::signing_key::{self, SigningKey};
use std::path::Path;

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
