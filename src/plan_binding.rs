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
use crate::plan_file::{ModuleRef, PlanEffect, PlanFile};
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
pub fn secret_by_name(name: &str) -> bool {
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
        let value = settings
            .env_overlay
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty());
        let current = crate::plan::env_digest(value.as_deref());
        if &current != digest {
            out.push(format!("env {name}: {digest} in the plan, {current} now"));
        }
    }
    out
}

/// The binding for `--plan` (refusing a stale plan, exit 2), or none without it; with
/// `[approvals] require_signatures`, a live run without `--plan` is refused too.
pub fn binding_for(
    settings: &RunSettings,
    sources: &SharedSources,
) -> Result<Option<Binding>, Error> {
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
