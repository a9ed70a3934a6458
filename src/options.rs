//! Typed access to a Rhai options map (`#{ timeout: "90s", check: false }`), shared by every
//! namespace. An unknown key is an error naming it, so a typo never silently changes behaviour.

use crate::script_error::{ScriptError, UNNAMED_KIND};
use rhai::{Dynamic, EvalAltResult, FnPtr, Map};
use std::time::Duration;

pub type HostResult<T> = Result<T, Box<EvalAltResult>>;

/// Builds the error a host function throws (a [`ScriptError`] whose kind the effect gate fills
/// in with its namespace). Rhai adds the call site's position.
pub fn host_error(message: impl Into<String>) -> Box<EvalAltResult> {
    ScriptError::new(UNNAMED_KIND, message).into_eval()
}

/// A host error of a known kind (`timeout`, `check`, `http`, ...).
pub fn kind_error(kind: &str, message: impl Into<String>) -> Box<EvalAltResult> {
    ScriptError::new(kind, message).into_eval()
}

pub struct Options {
    what: &'static str,
    map: Map,
}

impl Options {
    /// `what` names the function in errors, e.g. "exec::run".
    pub fn new(what: &'static str, map: Map) -> Self {
        Self { what, map }
    }

    pub fn empty(what: &'static str) -> Self {
        Self {
            what,
            map: Map::new(),
        }
    }

    fn take(&mut self, key: &str) -> Option<Dynamic> {
        self.map.remove(key).filter(|value| !value.is_unit())
    }

    fn type_error(&self, key: &str, expected: &str, value: &Dynamic) -> Box<EvalAltResult> {
        host_error(format!(
            "{}: option '{key}' must be {expected}, got {}",
            self.what,
            value.type_name()
        ))
    }

    pub fn bool(&mut self, key: &str) -> HostResult<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => value
                .as_bool()
                .map(Some)
                .map_err(|_| self.type_error(key, "a bool", &value)),
        }
    }

    pub fn string(&mut self, key: &str) -> HostResult<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) if value.is_string() => Ok(Some(value.to_string())),
            Some(value) => Err(self.type_error(key, "a string", &value)),
        }
    }

    pub fn int(&mut self, key: &str) -> HostResult<Option<i64>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => value
                .as_int()
                .map(Some)
                .map_err(|_| self.type_error(key, "an integer", &value)),
        }
    }

    pub fn map(&mut self, key: &str) -> HostResult<Option<Map>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) if value.is_map() => Ok(Some(value.cast::<Map>())),
            Some(value) => Err(self.type_error(key, "a map", &value)),
        }
    }

    pub fn fn_ptr(&mut self, key: &str) -> HostResult<Option<FnPtr>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) if value.is_fnptr() => Ok(Some(value.cast::<FnPtr>())),
            Some(value) => Err(self.type_error(key, "a closure", &value)),
        }
    }

    /// Any value, left for the caller to interpret.
    pub fn value(&mut self, key: &str) -> Option<Dynamic> {
        self.take(key)
    }

    /// A duration given as "90s", "10m", "1h 30m" or a number of seconds.
    pub fn duration(&mut self, key: &str) -> HostResult<Option<Duration>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => parse_duration_value(&value)
                .map(Some)
                .map_err(|why| host_error(format!("{}: option '{key}': {why}", self.what))),
        }
    }

    /// Call last: any key left over was not understood.
    pub fn finish(self) -> HostResult<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => Err(host_error(format!("{}: unknown option '{key}'", self.what))),
        }
    }
}

/// "90s", "10m", "1h30m", "250ms" (humantime), or an integer/float number of seconds.
pub fn parse_duration_value(value: &Dynamic) -> Result<Duration, String> {
    if let Ok(seconds) = value.as_int() {
        return u64::try_from(seconds)
            .map(Duration::from_secs)
            .map_err(|_| format!("a duration cannot be negative ({seconds})"));
    }
    if let Ok(seconds) = value.as_float() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{e} ({seconds})"));
    }
    if value.is_string() {
        return parse_duration(&value.to_string());
    }
    Err(format!(
        "expected a duration like \"90s\", got {}",
        value.type_name()
    ))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration \"{text}\" ({e}); use forms like \"90s\", \"10m\", \"1h\"")
    })
}
