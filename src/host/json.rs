//! `json::parse(text)` and `json::stringify(value)` / `json::stringify(value, pretty)`.

use super::{HostContext, add_fn, install};
use crate::options::{HostResult, host_error};
use rhai::{Dynamic, Engine, Module};
use std::rc::Rc;

/// Converts JSON into Rhai values (objects become maps, arrays arrays, null `()`).
pub fn to_dynamic(value: &serde_json::Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// Converts a Rhai value into JSON; closures and custom types become their text.
pub fn from_dynamic(value: &Dynamic) -> serde_json::Value {
    rhai::serde::from_dynamic::<serde_json::Value>(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()))
}

pub fn parse(text: &str) -> HostResult<Dynamic> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|value| to_dynamic(&value))
        .map_err(|e| host_error(format!("json::parse: invalid JSON at line {} column {}: {e}", e.line(), e.column())))
}

pub fn register(engine: &mut Engine, _ctx: &Rc<HostContext>) {
    let mut module = Module::new();
    add_fn(
        &mut module,
        "parse",
        &["text: String", "Dynamic"],
        "Parses JSON text into maps, arrays, strings, numbers, bools and `()`.",
        |text: &str| parse(text),
    );
    add_fn(
        &mut module,
        "stringify",
        &["value: Dynamic", "String"],
        "Compact JSON text of a value.",
        |value: Dynamic| from_dynamic(&value).to_string(),
    );
    add_fn(
        &mut module,
        "stringify",
        &["value: Dynamic", "pretty: bool", "String"],
        "JSON text of a value, indented when `pretty` is true.",
        |value: Dynamic, pretty: bool| {
            let json = from_dynamic(&value);
            if pretty { serde_json::to_string_pretty(&json).unwrap_or_default() } else { json.to_string() }
        },
    );
    install(engine, "json", module);
}
