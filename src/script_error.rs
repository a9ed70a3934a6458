//! The value a script catches when a primitive fails: `try { http::get(url) } catch (e) { ... }`.
//!
//! A plain string told a script only what to print; a release script needs to branch on *what*
//! failed (a 404 is not a timeout, a policy refusal is not a flaky network). So a host error is
//! an [`ScriptError`]: `e.kind` (`http`, `timeout`, `exec`, `sql`, `policy`, `check`, `prompt`,
//! ...), `e.message`, and the fields that matter for its kind (`e.status`, `e.code`, ...), read
//! as properties or with `e["status"]`. It still prints as its message (`print(e)`,
//! `"caught " + e`, `` `${e}` ``), so scripts written against plain-string errors keep working.

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};
use std::fmt;

/// The kind a host error has until the effect gate names the namespace it came from.
pub const UNNAMED_KIND: &str = "host";

#[derive(Debug, Clone)]
pub struct ScriptError {
    pub kind: ImmutableString,
    pub message: String,
    /// Kind-specific fields (`status`, `code`, `attempts`, `rule`, ...).
    pub fields: Map,
}

impl ScriptError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            fields: Map::new(),
        }
    }

    /// Adds a field a script can read (`e.status`).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Dynamic>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The error a host function returns; Rhai adds the call site's position.
    pub fn into_eval(self) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(self),
            Position::NONE,
        ))
    }

    /// The script error inside a Rhai error, if it carries one.
    pub fn of(error: &EvalAltResult) -> Option<Self> {
        match error {
            EvalAltResult::ErrorRuntime(value, _) => value.clone().try_cast::<Self>(),
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
            | EvalAltResult::ErrorInModule(_, inner, _) => Self::of(inner),
            _ => None,
        }
    }

    /// Names the kind of an error that has none yet (the gate passes its namespace).
    pub fn name_kind(mut error: Box<EvalAltResult>, kind: &str) -> Box<EvalAltResult> {
        if let EvalAltResult::ErrorRuntime(value, _) = error.as_mut()
            && let Some(mut inner) = value.write_lock::<Self>()
            && inner.kind == UNNAMED_KIND
        {
            inner.kind = kind.into();
        }
        error
    }

    /// A field by name: `kind`, `message` or a kind-specific one; `()` when absent.
    pub fn get(&self, key: &str) -> Dynamic {
        match key {
            "kind" => self.kind.clone().into(),
            "message" => self.message.clone().into(),
            _ => self.fields.get(key).cloned().unwrap_or(Dynamic::UNIT),
        }
    }

    /// Every field as a map (`e.to_map()`), for `json::stringify` or logging.
    pub fn to_map(&self) -> Map {
        let mut map = self.fields.clone();
        map.insert("kind".into(), self.kind.clone().into());
        map.insert("message".into(), self.message.clone().into());
        map
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Makes the type usable from scripts: properties, indexer, printing, comparison with strings.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<ScriptError>("Error")
        .register_get("kind", |e: &mut ScriptError| e.kind.clone())
        .register_get("message", |e: &mut ScriptError| e.message.clone())
        .register_indexer_get(|e: &mut ScriptError, key: &str| e.get(key))
        .register_fn("to_map", |e: &mut ScriptError| e.to_map())
        .register_fn("to_string", |e: &mut ScriptError| e.message.clone())
        .register_fn("to_debug", |e: &mut ScriptError| {
            format!("Error(kind: {}, message: {:?})", e.kind, e.message)
        });
    rhai::FuncRegistration::new("contains")
        .with_params_info(["error: Error", "text: &str", "bool"])
        .with_comments(["/// Whether the error's message contains `text`."])
        .register_into_engine(engine, |e: &mut ScriptError, text: &str| {
            e.message.contains(text)
        });
    // The fields kinds carry, as properties (`e.status`); others are reached with `e["name"]`.
    for field in [
        "status", "code", "attempts", "rule", "step", "id", "sqlstate",
    ] {
        engine.register_get(field, move |e: &mut ScriptError| e.get(field));
    }
}
