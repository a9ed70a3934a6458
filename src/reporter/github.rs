//! GitHub Actions workflow commands (with `GITHUB_ACTIONS=true`): each top-level step's lines
//! inside `::group::`/`::endgroup::` (so the log folds by step), the run's failure as an
//! `::error file=…,line=…,col=…,title=STEP::` annotation at the script location, warnings as
//! `::warning`. Text is escaped as the runner requires (`%`, CR and LF in messages; also `:` and
//! `,` in properties); it comes from journal events, which are redacted before anyone sees them.

use crate::event::{Log, RunEnd};
use serde_json::Value;

pub fn enabled() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// A message: `%`, CR and LF are encoded, or the runner would cut the command at a newline.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A property value (`file=`, `title=`): also `:` and `,`, which separate properties.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

pub fn group(name: &str) -> String {
    format!("::group::{}", escape_data(name))
}

pub const END_GROUP: &str = "::endgroup::";

/// `::warning` / `::error` for a `log` event at that level (other levels: none).
pub fn log_command(step: Option<&str>, log: &Log) -> Option<String> {
    let command = match log.level.as_str() {
        "warn" => "warning",
        "error" => "error",
        _ => return None,
    };
    let message = escape_data(&log.message);
    Some(match step {
        Some(step) => format!("::{command} title={}::{message}", escape_property(step)),
        None => format!("::{command}::{message}"),
    })
}

/// The annotation for a failed run (`run_end`): at the script location when there is one.
pub fn failure_command(end: &RunEnd) -> Option<String> {
    if end.outcome != "failed" {
        return None;
    }
    let failure = end.extra.get("failure").unwrap_or(&Value::Null);
    let message = failure["message"]
        .as_str()
        .or(end.error.as_deref())
        .unwrap_or("the run failed");
    let mut properties = Vec::new();
    if let Some(file) = failure["file"].as_str() {
        properties.push(format!("file={}", escape_property(file)));
        properties.push(format!("line={}", failure["line"]));
        properties.push(format!("col={}", failure["column"]));
    }
    if let Some(step) = failure["step"].as_str() {
        properties.push(format!("title={}", escape_property(step)));
    }
    let properties = if properties.is_empty() {
        String::new()
    } else {
        format!(" {}", properties.join(","))
    };
    Some(format!("::error{properties}::{}", escape_data(message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_follows_the_runner_rules() {
        assert_eq!(escape_data("50% done\r\nnext"), "50%25 done%0D%0Anext");
        assert_eq!(escape_property("a:b,c%"), "a%3Ab%2Cc%25");
    }

    #[test]
    fn failure_points_at_the_script() {
        let mut end = RunEnd {
            outcome: "failed".into(),
            error: Some("x".into()),
            ..RunEnd::default()
        };
        end.extra.insert("failure".into(), json!({
            "message": "bad: 1%\nmore", "file": "s.rhai", "line": 3, "column": 5, "step": "check, db" }));
        assert_eq!(
            failure_command(&end).unwrap(),
            "::error file=s.rhai,line=3,col=5,title=check%2C db::bad: 1%25%0Amore"
        );
        end.outcome = "ok".into();
        assert!(failure_command(&end).is_none());
    }
}
