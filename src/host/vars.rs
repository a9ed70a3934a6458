//! `vars::get(name)`, `vars::get(name, default)`, `vars::all()`: the `--var KEY=VALUE` values
//! (always strings). `var` itself is a reserved word in Rhai, hence the namespace.

use super::{HostContext, Need, add_fn, install};
use crate::options::{HostResult, kind_error};
use rhai::{Dynamic, Engine, Map, Module};
use std::rc::Rc;

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    let mut module = Module::new();
    let c = ctx.clone();
    add_fn(
        &mut module,
        "get",
        &["name: String", "String"],
        "The value of `--var name=VALUE`; an error naming the var when it was not given.",
        move |name: &str| -> HostResult<String> {
            match c.settings.vars.get(name) {
                Some(value) => Ok(value.clone()),
                None => c
                    .missing(Need::Var, &[name.to_owned()], || {
                        kind_error(
                            "var",
                            format!("missing var '{name}': pass --var {name}=VALUE"),
                        )
                    })
                    .map(|()| String::new()),
            }
        },
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "get",
        &["name: String", "default: Dynamic", "Dynamic"],
        "The value of `--var name=VALUE`, or `default` when it was not given.",
        move |name: &str, default: Dynamic| -> Dynamic {
            c.settings
                .vars
                .get(name)
                .map_or(default, |value| value.clone().into())
        },
    );
    let c = ctx.clone();
    add_fn(
        &mut module,
        "all",
        &["Map"],
        "Every `--var` as a map of strings.",
        move || -> Map {
            c.settings
                .vars
                .iter()
                .map(|(k, v)| (k.into(), v.clone().into()))
                .collect()
        },
    );
    install(engine, "vars", module);
}
