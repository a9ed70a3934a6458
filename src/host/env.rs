//! Environment: `env::get(name)`, `env::get(name, default)`, `env::require([names])` (one error
//! listing every missing name), `env::secret(name)` (the value is registered for redaction
//! before the script sees it). `--env-file` values are layered over the process environment.
//! In a dry run a missing name is recorded as something a live run needs, not an error.

use super::{HostContext, Need, add_fn, install};
use crate::options::{HostResult, host_error, kind_error};
use rhai::{Array, Dynamic, Engine, Map, Module};
use std::rc::Rc;

/// The value of `name`: `--env-file` first, then the process environment. Empty counts as unset.
pub fn lookup(ctx: &HostContext, name: &str) -> Option<String> {
    let value = current(&ctx.settings, name);
    // For a saved plan's stale check: which env the run depended on (a digest, never the value).
    let digest = crate::plan::env_digest(value.as_deref());
    let mut plan = ctx.plan.lock().unwrap_or_else(|e| e.into_inner());
    plan.env_reads.entry(name.to_owned()).or_insert(digest);
    if let Some(value) = &value
        && (ctx.redactor.redact(value) != *value
            || url::Url::parse(value).is_ok_and(|url| url.password().is_some()))
    {
        plan.secret_names.insert(name.to_owned());
    }
    value
}

/// The value a run sees for `name` (`--env-file` first, then the process), without recording it.
pub fn current(settings: &crate::config::RunSettings, name: &str) -> Option<String> {
    settings
        .env_overlay
        .get(name)
        .cloned()
        .or_else(|| std::env::var(name).ok())
        .filter(|value| !value.is_empty())
}

fn missing(ctx: &HostContext, names: &[String], secret: bool) -> HostResult<()> {
    let (need, kind) = if secret {
        (Need::Secret, "secret")
    } else {
        (Need::Env, "environment variable")
    };
    ctx.missing(need, names, || {
        kind_error(
            "env",
            if names.len() == 1 {
                format!("missing {kind} {}", names[0])
            } else {
                format!("missing {kind}s: {}", names.join(", "))
            },
        )
    })
}

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let mut module = Module::new();
    let c = ctx.clone();
    add_fn(
        &mut module,
        "get",
        &["name: String", "String"],
        "The value of an environment variable; an error naming it when unset (reported, not fatal, in a dry run).",
        move |name: &str| -> HostResult<String> {
            match lookup(&c, name) {
                Some(value) => Ok(value),
                None => missing(&c, &[name.to_owned()], false).map(|()| String::new()),
            }
        },
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "get",
        &["name: String", "default: Dynamic", "Dynamic"],
        "The value of an environment variable, or `default` when unset.",
        move |name: &str, default: Dynamic| -> Dynamic {
            lookup(&c, name).map_or(default, Dynamic::from)
        },
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "require",
        &["names: Array", "Map"],
        "Checks that every name is set; one error lists all that are missing. Returns a map name -> value.",
        move |names: Array| -> HostResult<Map> {
            let mut values = Map::new();
            let mut absent = Vec::new();
            for name in names {
                let name = name.to_string();
                match lookup(&c, &name) {
                    Some(value) => {
                        values.insert(name.as_str().into(), value.into());
                    }
                    None => absent.push(name),
                }
            }
            if !absent.is_empty() {
                missing(&c, &absent, false)?;
                for name in absent {
                    values.insert(name.as_str().into(), String::new().into());
                }
            }
            Ok(values)
        },
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "secret",
        &["name: String", "String"],
        "The value of a secret environment variable, registered so it is redacted everywhere the host writes.",
        move |name: &str| -> HostResult<String> {
            // A saved plan lists secrets by name only (see plan_binding).
            c.plan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .secret_names
                .insert(name.to_owned());
            match lookup(&c, name) {
                Some(value) => {
                    if !c.redactor.register(&value) {
                        return Err(host_error(format!(
                            "env::secret: {name} is {} character(s) long; secrets shorter than {} characters cannot be redacted \
                             (masking them would mask every such text), so glow-run refuses them: use a longer value",
                            value.chars().count(),
                            crate::redact::MIN_SECRET_LEN
                        )));
                    }
                    Ok(value)
                }
                None => missing(&c, &[name.to_owned()], true).map(|()| String::new()),
            }
        },
    );
    install(engine, "env", module);
}
