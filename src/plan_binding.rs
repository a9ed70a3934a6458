//! A run and its saved plan: writing one at the end of a dry run (`--plan-out FILE`), and binding
//! a live run to one (`--plan FILE|HASH`). Binding refuses, before anything runs, a plan that is
//! incomplete or stale (script, a module, glow.toml, vars or env digests differ from now: each
//! difference is named with both values); then the effect gate calls [`Binding::admit`] for
//! every effect that is not a read, and `prompt::approve` takes its approvals from here.
//!
//! Effects run by compensations (`rollback: NAME` steps, after a failure) are outside the
//! plan by nature: they are let through and journaled as such, because refusing them would
//! leave a half-made release in place.

use crate::approval::{AllowedSigners, Approval, Rules};
use crate::config::{Mode, RunSettings, sha256_hex};
use crate::error::Error;
use crate::host::HostContext;
use crate::plan_file::{self, ModuleRef, PlanEffect, PlanFile, ScriptRef};
use crate::resolver::{STDLIB, STDLIB_PREFIX, SharedSources};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a bound plan came from.
#[derive(Debug, Clone)]
pub enum Origin {
    File(PathBuf),
    Shared,
}

/// Env names that hold secrets by their shape (DESIGN.md "Redaction"): never digested.
fn secret_by_name(name: &str) -> bool {
    ["_KEY", "_TOKEN", "_SECRET", "_PASSWORD", "_DSN"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// The modules the run imported, by source name, with the SHA-256 of their text.
pub fn modules(settings: &RunSettings, sources: &SharedSources) -> Vec<ModuleRef> {
    let sources = sources.borrow();
    let mut modules: Vec<ModuleRef> = sources
        .texts
        .iter()
        .filter(|(name, _)| **name != settings.source_name)
        .map(|(name, text)| ModuleRef {
            name: name.clone(),
            sha256: sha256_hex(text.as_bytes()),
        })
        .collect();
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    modules
}

/// The SHA-256 of a module's text as it is now (embedded stdlib, else the file).
fn module_now(name: &str) -> Option<String> {
    if let Some(path) = name.strip_prefix(STDLIB_PREFIX)
        && let Some(file) = STDLIB.get_file(path)
    {
        return Some(sha256_hex(file.contents()));
    }
    std::fs::read(name).ok().map(|bytes| sha256_hex(&bytes))
}

pub fn policy_sha256(settings: &RunSettings) -> Option<String> {
    let path = settings.policy.source.as_ref()?;
    std::fs::read(path).ok().map(|bytes| sha256_hex(&bytes))
}

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

/// A plan named on the command line: a file, else a hash (or a prefix of one) in the shared state.
pub fn resolve(name: &str, state_url: Option<&str>) -> Result<(PlanFile, Origin), Error> {
    let path = Path::new(name);
    if path.exists() {
        return Ok((PlanFile::load(path)?, Origin::File(path.to_owned())));
    }
    let hexish = name.len() >= 8 && name.bytes().all(|b| b.is_ascii_hexdigit());
    match (hexish, state_url) {
        (true, Some(url)) => {
            let hash = name.to_ascii_lowercase();
            let plan = crate::shared_plans::blocking(url, async |c| {
                crate::shared_plans::load(c, &hash).await
            })?;
            Ok((plan, Origin::Shared))
        }
        (true, None) => Err(Error::usage(format!(
            "no plan file {name}; to name a plan by its hash give --state postgres://... (the shared state it was stored in)"
        ))),
        (false, _) => Err(Error::usage(format!("no plan file {name}"))),
    }
}

/// The allowed_signers file `[approvals] allowed_signers` names, if any.
pub fn load_signers(
    policy: &crate::policy::Policy,
    vars: &BTreeMap<String, String>,
) -> Result<Option<AllowedSigners>, String> {
    let Some(template) = &policy.approvals.allowed_signers else {
        return Ok(None);
    };
    let path = crate::approval::expand_path(template, vars).map_err(|why| {
        format!(
            "[approvals] allowed_signers {why} ({})",
            policy.file_label()
        )
    })?;
    AllowedSigners::load(&path).map(Some)
}

pub fn rules<'a>(
    policy: &'a crate::policy::Policy,
    signers: Option<&'a AllowedSigners>,
    initiator: Option<&'a str>,
) -> Rules<'a> {
    Rules {
        roles: &policy.approvals.roles,
        signers,
        initiator: initiator.filter(|_| policy.approvals.distinct_from_initiator),
        policy_file: policy.file_label(),
    }
}

/// A live run's saved plan and where the run is in it.
pub struct Binding {
    pub plan: PlanFile,
    pub origin: Origin,
    pub signers: Option<AllowedSigners>,
    cursor: Cell<usize>,
    violated: Cell<bool>,
    /// principal (lower case) -> the role it approved in this run.
    pub used: RefCell<BTreeMap<String, String>>,
}

/// Everything in `plan` that differs from the run about to start, one line each.
fn differences(plan: &PlanFile, settings: &RunSettings, sources: &SharedSources) -> Vec<String> {
    let mut out = Vec::new();
    if !plan.complete {
        let unset: Vec<&str> = plan
            .env
            .iter()
            .filter(|(_, d)| *d == "unset")
            .map(|(n, _)| n.as_str())
            .collect();
        out.push(format!(
            "the plan is incomplete (complete: false): the dry run that made it lacked environment, secrets, vars or programs a live run needs, or failed{}",
            if unset.is_empty() { String::new() } else { format!(" (unset there: {})", unset.join(", ")) }
        ));
    }
    let path = |p: &str| p.trim_start_matches("./").to_owned();
    if path(&plan.script.path) != path(&settings.source_name)
        || plan.script.sha256 != settings.sha256
    {
        out.push(format!(
            "script: the plan is of {} sha256 {}, this run is {} sha256 {}",
            plan.script.path, plan.script.sha256, settings.source_name, settings.sha256
        ));
    }
    let now: BTreeMap<String, String> = modules(settings, sources)
        .into_iter()
        .map(|m| (m.name, m.sha256))
        .collect();
    for module in &plan.modules {
        let current = now
            .get(&module.name)
            .cloned()
            .or_else(|| module_now(&module.name));
        if current.as_deref() != Some(module.sha256.as_str()) {
            out.push(format!(
                "module {}: sha256 {} in the plan, {} now",
                module.name,
                module.sha256,
                current.as_deref().unwrap_or("missing")
            ));
        }
    }
    for name in now
        .keys()
        .filter(|n| !plan.modules.iter().any(|m| &m.name == *n))
    {
        out.push(format!("module {name}: imported now, not in the plan"));
    }
    let policy = policy_sha256(settings);
    if policy != plan.policy_sha256 {
        let show = |h: &Option<String>| h.clone().unwrap_or_else(|| "none".into());
        out.push(format!(
            "glow.toml: sha256 {} in the plan, {} now",
            show(&plan.policy_sha256),
            show(&policy)
        ));
    }
    let keys: BTreeSet<&String> = plan.vars.keys().chain(settings.vars.keys()).collect();
    for key in keys {
        let (was, is) = (plan.vars.get(key), settings.vars.get(key));
        if was != is {
            let show =
                |v: Option<&String>| v.map_or_else(|| "(not given)".into(), |v| format!("\"{v}\""));
            out.push(format!(
                "var {key}: {} in the plan, {} now",
                show(was),
                show(is)
            ));
        }
    }
    for (name, digest) in &plan.env {
        let current = crate::plan::env_digest(crate::host::env::current(settings, name).as_deref());
        if &current != digest {
            out.push(format!("env {name}: {digest} in the plan, {current} now"));
        }
    }
    out
}

/// `--plan`: loads the plan and refuses a stale one before anything runs (exit 2); with
/// `[approvals] require_signatures`, a live run without `--plan` is refused too.
pub fn bind(ctx: &HostContext, sources: &SharedSources) -> Result<(), Error> {
    if let Some(binding) = binding_for(&ctx.settings, sources)? {
        let _ = ctx.binding.set(binding);
    }
    Ok(())
}

fn binding_for(settings: &RunSettings, sources: &SharedSources) -> Result<Option<Binding>, Error> {
    if settings.flags.plan_out.is_some() && settings.mode != Mode::DryRun {
        return Err(Error::usage(
            "--plan-out saves the plan of a dry run: add --dry-run",
        ));
    }
    let Some(name) = &settings.flags.plan else {
        if settings.mode == Mode::Live && settings.policy.approvals.require_signatures {
            return Err(Error::Refused {
                message: format!(
                    "[approvals] require_signatures = true ({}): a live run needs a signed plan; make one with --dry-run --plan-out FILE, have it approved (glow-run approve FILE --role ROLE), then run with --plan FILE",
                    settings.policy.file_label()
                ),
            });
        }
        return Ok(None);
    };
    let (plan, origin) = resolve(name, settings.state_url.as_deref())?;
    let stale = differences(&plan, settings, sources);
    if !stale.is_empty() {
        return Err(Error::Refused {
            message: format!(
                "the saved plan {} ({name}) does not match this run, so nothing ran:\n  - {}\nmake a new plan with --dry-run --plan-out and have it approved again",
                plan.hash,
                stale.join("\n  - ")
            ),
        });
    }
    let signers =
        load_signers(&settings.policy, &settings.vars).map_err(|message| Error::Config {
            path: settings
                .policy
                .source
                .clone()
                .unwrap_or_else(|| "glow.toml".into()),
            message,
        })?;
    Ok(Some(Binding {
        plan,
        origin,
        signers,
        cursor: Cell::new(0),
        violated: Cell::new(false),
        used: RefCell::new(BTreeMap::new()),
    }))
}

impl Binding {
    /// Lets an effect through when it is the plan's next one; else the refusal. A refusal ends
    /// the binding: nothing after it runs, whatever the script catches.
    pub fn admit(
        &self,
        step: Option<&str>,
        namespace: &str,
        action: &str,
        target: &str,
        compensation: bool,
    ) -> Result<(), String> {
        if compensation {
            return Ok(());
        }
        let attempted = format!("[{}] {namespace} {action} {target}", step.unwrap_or("-"));
        if self.violated.get() {
            return Err(format!(
                "the run already left its saved plan {}: {attempted} is refused",
                self.plan.hash
            ));
        }
        let index = self.cursor.get();
        let Some(planned) = self.plan.effects.get(index) else {
            self.violated.set(true);
            return Err(format!(
                "the saved plan {} refuses an extra effect: it lists {} effect(s), and #{} {attempted} is not one of them",
                self.plan.hash,
                self.plan.effects.len(),
                index + 1
            ));
        };
        if planned.step.as_deref() == step
            && planned.namespace == namespace
            && planned.action == action
            && planned.target == target
        {
            self.cursor.set(index + 1);
            return Ok(());
        }
        self.violated.set(true);
        Err(format!(
            "the saved plan {} refuses #{} {attempted}: it differs from the plan's next effect\n  planned:   {}\n  attempted: #{} {attempted}",
            self.plan.hash,
            index + 1,
            planned.summary(),
            index + 1
        ))
    }

    /// Planned effects the run never reached (for the report).
    pub fn unreached(&self) -> &[PlanEffect] {
        &self.plan.effects[self.cursor.get().min(self.plan.effects.len())..]
    }

    /// The approvals known now: the plan file as it is on disk (approvers may have signed since
    /// the run started), else the ones it was bound with.
    pub fn file_approvals(&self) -> Vec<Approval> {
        if let Origin::File(path) = &self.origin
            && let Ok(now) = PlanFile::load(path)
            && now.hash == self.plan.hash
        {
            return now.approvals;
        }
        self.plan.approvals.clone()
    }
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
