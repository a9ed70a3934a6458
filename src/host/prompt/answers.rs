//! `--answers FILE`: answers for prompts keyed by prompt id, in TOML or JSON (by extension;
//! another extension is tried as JSON, then as TOML). Read once when the run's settings are
//! loaded, so a missing or malformed file is a configuration error (exit 2) before anything runs.
//!
//! ```toml
//! deploy_to_production = true
//! release_tag = "v1.4.0"
//! approve_security = "alice@example.com"
//! ```

use crate::error::Error;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Answers by prompt id. Values are booleans, strings or numbers.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    values: BTreeMap<String, Value>,
}

impl Answers {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let config_error = |message: String| Error::Config {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("cannot read the answers file: {e}")))?;
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let parsed: Value = match extension.as_str() {
            "json" => serde_json::from_str(&text)
                .map_err(|e| config_error(format!("invalid JSON: {e}")))?,
            "toml" => toml::from_str(&text)
                .map_err(|e| config_error(format!("invalid TOML: {}", e.to_string().trim_end())))?,
            _ => match serde_json::from_str(&text) {
                Ok(value) => value,
                Err(_) => toml::from_str(&text).map_err(|e| {
                    config_error(format!(
                        "neither JSON nor TOML: {}",
                        e.to_string().trim_end()
                    ))
                })?,
            },
        };
        Self::from_value(parsed).map_err(config_error)
    }

    fn from_value(value: Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("the answers file must be a table/object keyed by prompt id".into());
        };
        let mut values = BTreeMap::new();
        for (id, answer) in map {
            match answer {
                Value::Bool(_) | Value::String(_) | Value::Number(_) => {
                    values.insert(id, answer);
                }
                other => {
                    return Err(format!(
                        "answer '{id}' must be a boolean, a string or a number, not {}",
                        match other {
                            Value::Null => "null",
                            Value::Array(_) => "a list",
                            _ => "a table",
                        }
                    ));
                }
            }
        }
        Ok(Self { values })
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.values.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_are_refused_with_the_id() {
        let error =
            Answers::from_value(serde_json::json!({ "a": true, "b": { "c": 1 } })).unwrap_err();
        assert!(error.contains("'b'"), "{error}");
    }
}
