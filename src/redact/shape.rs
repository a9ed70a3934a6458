//! Secrets recognised by their shape rather than declared: at the start of a run every
//! environment variable whose name says it is a credential (ends in `_KEY`, `_TOKEN`,
//! `_SECRET`, `_PASSWORD`, `_DSN`; and `PGPASSWORD`) and every value holding a URL with a
//! password is registered, because a child inherits the environment and can print it before
//! the script ever calls `env::secret`. In running text, the password of any URL with user info
//! and the value after `Authorization:` or `Bearer` are masked wherever they appear.

use super::{Redactor, url};
use regex::Regex;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

const SECRET_SUFFIXES: [&str; 5] = ["_KEY", "_TOKEN", "_SECRET", "_PASSWORD", "_DSN"];

/// Whether an environment variable's name says its value is a credential.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "PGPASSWORD" || SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
}

/// Registers the credentials of the process environment and `overlay` (`--env-file`, which
/// children also get). Returns a warning for each credential too short to redact.
pub fn register_environment(
    redactor: &Redactor,
    overlay: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let process = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v)));
    let process: Vec<(String, String)> = process
        .filter_map(|(k, v)| Some((k, v.into_string().ok()?)))
        .collect();
    let all = process
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(overlay.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (name, value) in all {
        if value.is_empty() {
            continue;
        }
        if is_secret_name(name) && !redactor.register(value) {
            warnings.push(short_warning(name, value));
        }
        if value.contains("://") {
            for span in url::password_spans(value) {
                register_password(redactor, &value[span]);
            }
        }
    }
    warnings
}

/// Registers a URL password as given and percent-decoded.
pub fn register_password(redactor: &Redactor, password: &str) {
    redactor.register(password);
    if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8()
        && decoded != password
    {
        redactor.register(&decoded);
    }
}

pub fn short_warning(name: &str, value: &str) -> String {
    format!(
        "{name} looks like a credential but its value is {} character(s) long: values shorter than {} characters are not redacted",
        value.chars().count(),
        super::MIN_SECRET_LEN
    )
}

/// `Authorization: <scheme> VALUE`, `Authorization=VALUE` and `Bearer VALUE`: group 1 is the value.
fn credential_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(
            r#"(?i)(?:authorization["']?\s*[:=]\s*["']?\s*(?:(?:bearer|basic|token|digest)\s+)?|\bbearer\s+)([A-Za-z0-9._~+/=:-]{6,})"#,
        )
        .expect("a valid pattern")
    })
}

/// Ranges of `text` that are credentials by their shape.
pub fn shaped_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    if text.contains("://") {
        spans.extend(url::password_spans(text));
    }
    let lower_hint = text.contains("earer")
        || text.contains("EARER")
        || text.contains("uthoriz")
        || text.contains("UTHORIZ");
    if lower_hint {
        for captures in credential_pattern().captures_iter(text) {
            // A credential has a digit or is long; "Bearer authentication" is prose.
            if let Some(value) = captures.get(1)
                && (value.as_str().bytes().any(|b| b.is_ascii_digit()) || value.len() >= 20)
            {
                spans.push(value.range());
            }
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names() {
        for name in [
            "API_KEY",
            "GITHUB_TOKEN",
            "app_secret",
            "DB_PASSWORD",
            "SENTRY_DSN",
            "PGPASSWORD",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["KEYBOARD", "PATH", "TOKENS_USED"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn bearer_and_authorization_values_are_found() {
        let text = "curl -H 'Authorization: Bearer abc.def-123' and bearer zzzzzzzz9, Bearer authentication";
        let found: Vec<&str> = shaped_spans(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(found, ["abc.def-123", "zzzzzzzz9"]);
    }
}
