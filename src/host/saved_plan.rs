//! The host side of saved plans (see `plan_binding`): binding a live run to its plan before the
//! script starts, the gate's per-effect check, and writing `--plan-out FILE` from the gate's
//! effect list at the end of a dry run.

use super::HostContext;
use crate::config::sha256_hex;
use crate::error::Error;
use crate::plan_binding::{modules, policy_sha256, secret_by_name};
use crate::plan_file::{self, PlanEffect, PlanFile, ScriptRef};
use crate::resolver::SharedSources;
use std::collections::{BTreeMap, BTreeSet};

/// The plan file of a finished dry run. `failed`: the dry run did not reach its end.
pub fn build(ctx: &HostContext, sources: &SharedSources, failed: bool) -> PlanFile {
    let settings = &ctx.settings;
    let plan = ctx.plan.lock().unwrap_or_else(|e| e.into_inner());
    let mut secrets: BTreeSet<String> = plan.secret_names.clone();
    secrets.extend(plan.needs.secrets.iter().cloned());
    let mut env = BTreeMap::new();
    for (name, digest) in &plan.env_reads {
        if secrets.contains(name) || secret_by_name(name) {
            secrets.insert(name.clone());
        } else {
            env.insert(name.clone(), digest.clone());
        }
    }
    let needs = &plan.needs;
    let complete = !failed
        && needs.env.is_empty()
        && needs.secrets.is_empty()
        && needs.vars.is_empty()
        && needs.programs.is_empty();
    let effects = plan
        .effects
        .iter()
        .map(|e| PlanEffect {
            seq: e.index,
            step: e.step.clone(),
            namespace: e.namespace.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail_sha256: sha256_hex(plan_file::canonical_json(&e.detail).as_bytes()),
        })
        .collect();
    let mut file = PlanFile {
        format: plan_file::FORMAT.to_owned(),
        hash: String::new(),
        created: crate::journal::now_rfc3339(),
        created_by: ctx.initiator().to_owned(),
        glow_run_version: env!("CARGO_PKG_VERSION").to_owned(),
        script: ScriptRef {
            path: settings.source_name.clone(),
            sha256: settings.sha256.clone(),
        },
        modules: modules(settings, sources),
        policy_sha256: policy_sha256(settings),
        vars: settings.vars.clone(),
        env,
        secrets: secrets.into_iter().collect(),
        effects,
        questions: needs.questions.clone(),
        approvals_required: needs.approvals.clone(),
        approvals: Vec::new(),
        complete,
    };
    file.seal();
    file
}

/// `--plan-out FILE` at the end of a dry run; false when the plan could not be saved (logged).
pub fn save(ctx: &HostContext, sources: &SharedSources, failed: bool) -> bool {
    match write_plan_out(ctx, sources, failed) {
        Ok(()) => true,
        Err(error) => {
            ctx.log("error", error.render().trim_end());
            false
        }
    }
}

/// The `saved_plan` field of the `plan` event: the bound plan and what the run never reached.
pub fn unreached_event(ctx: &HostContext) -> Option<serde_json::Value> {
    let binding = ctx.binding.get()?;
    Some(serde_json::json!({ "hash": binding.plan.hash, "unreached": binding.unreached() }))
}

/// `--plan-out FILE`: writes the plan (and stores it in the shared state with `--state`).
pub fn write_plan_out(
    ctx: &HostContext,
    sources: &SharedSources,
    failed: bool,
) -> Result<(), Error> {
    let Some(path) = &ctx.settings.flags.plan_out else {
        return Ok(());
    };
    let plan = build(ctx, sources, failed);
    plan.write(path)?;
    if let Some(url) = &ctx.settings.state_url {
        let stored = ctx.runtime.block_on(async {
            let mut connection = crate::shared_plans::connect(url).await?;
            crate::shared_plans::store(&mut connection, &plan).await
        });
        if let Err(why) = stored {
            return Err(Error::host(
                "storing the plan in the shared state",
                ctx.redact(&why),
            ));
        }
    }
    let roles = if plan.approvals_required.is_empty() {
        String::new()
    } else {
        format!(
            "; approvers sign it with `glow-run approve {} --role ROLE` (needed: {})",
            path.display(),
            plan.approvals_required.join(", ")
        )
    };
    let incomplete = if plan.complete {
        ""
    } else {
        " (incomplete: the dry run lacked something a live run needs, so --plan will refuse it)"
    };
    ctx.log(
        "info",
        &format!(
            "plan saved to {} with {} effect(s), hash {}{incomplete}{roles}",
            path.display(),
            plan.effects.len(),
            plan.hash
        ),
    );
    Ok(())
}

/// `--plan`: loads the plan and refuses a stale one before anything runs (exit 2); with
/// `[approvals] require_signatures`, a live run without `--plan` is refused too.
pub fn bind(ctx: &HostContext, sources: &SharedSources) -> Result<(), Error> {
    if let Some(binding) = crate::plan_binding::binding_for(&ctx.settings, sources)? {
        let _ = ctx.binding.set(binding);
    }
    Ok(())
}

impl HostContext {
    /// The gate's saved-plan check: `Some(why)` refuses the effect (see [`Binding::admit`]).
    pub fn refused_by_plan(
        &self,
        step: Option<&str>,
        effect: &crate::host::Effect<'_>,
    ) -> Option<String> {
        let binding = self.binding.get().filter(|_| !effect.read_only)?;
        let compensation = self
            .steps
            .borrow()
            .iter()
            .any(|frame| frame.name.starts_with("rollback: "));
        let target = self.redact(&effect.target);
        binding
            .admit(step, effect.namespace, effect.action, &target, compensation)
            .err()
    }
}
