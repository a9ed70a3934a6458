//! The secret registry. Every value that must never be written (from `env::secret`, bearer
//! tokens, prompt secrets, database passwords) is registered here once, and everything the host
//! writes (terminal, journal, artifacts, report, state) passes through [`Redactor::redact`].
//!
//! A secret is also looked for in the encodings it commonly travels in: base64 (standard and
//! URL-safe, at any alignment inside a longer encoded text) and percent-encoding.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::borrow::Cow;
use std::sync::RwLock;

pub const MASK: &str = "[redacted]";

/// Secrets shorter than this are not registered: masking every "a" or "1" in the output would
/// destroy the journal as evidence while protecting nothing.
const MIN_SECRET_LEN: usize = 3;

#[derive(Default, Debug)]
pub struct Redactor {
    /// Every form to mask, longest first so that a longer form wins over a prefix of it.
    forms: RwLock<Vec<String>>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret and its encoded forms. Returns false when it was too short to register.
    pub fn register(&self, secret: &str) -> bool {
        let secret = secret.trim_end_matches(['\n', '\r']);
        if secret.chars().count() < MIN_SECRET_LEN {
            return false;
        }
        let mut new_forms = vec![secret.to_owned()];
        new_forms.extend(encoded_forms(secret.as_bytes()));
        let mut forms = self.forms.write().unwrap_or_else(|e| e.into_inner());
        for form in new_forms {
            if form.len() >= MIN_SECRET_LEN && !forms.contains(&form) {
                forms.push(form);
            }
        }
        forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        true
    }

    /// Registers a database URL's password's password (user-info or `?password=`) as a secret and returns the URL
    /// without it.
    pub fn register_url(&self, url: &str) -> String {
        // sqlx falls back to PGPASSWORD when the URL has none.
        if let Ok(password) = std::env::var("PGPASSWORD") {
            self.register(&password);
        }
        let Ok(mut parsed) = url::Url::parse(url) else {
            return self.mask_unparsed_password(url);
        };
        if let Some(password) = parsed.password().map(str::to_owned) {
            self.register(&password);
            if let Ok(decoded) = percent_encoding::percent_decode_str(&password).decode_utf8() {
                self.register(&decoded);
            }
            let _ = parsed.set_password(None);
        }
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.iter().any(|(key, _)| key == "password") {
            let mut kept = Vec::new();
            for (key, value) in &pairs {
                if key == "password" {
                    self.register(value);
                } else {
                    kept.push((key.clone(), value.clone()));
                }
            }
            if kept.is_empty() {
                parsed.set_query(None);
            } else {
                parsed.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        parsed.to_string()
    }

    /// For a URL the parser refuses (an unescaped `@` or `/` in the password, say): the text
    /// between the first `:` after `scheme://` and the last `@` of the authority is the password.
    fn mask_unparsed_password(&self, url: &str) -> String {
        let Some(start) = url.find("://").map(|i| i + 3) else {
            return url.to_owned();
        };
        let rest = &url[start..];
        let authority_end = rest.rfind('@').map(|at| {
            let after = &rest[at..];
            at + after.find(['/', '?']).unwrap_or(after.len())
        });
        let authority = &rest[..authority_end.unwrap_or(rest.len())];
        let (Some(at), Some(colon)) = (authority.rfind('@'), authority.find(':')) else {
            return url.to_owned();
        };
        if colon > at {
            return url.to_owned();
        }
        self.register(&authority[colon + 1..at]);
        format!(
            "{}{}{}",
            &url[..start + colon],
            &authority[at..],
            &rest[authority.len()..]
        )
    }

    pub fn is_empty(&self) -> bool {
        self.forms
            .read()
            .map(|forms| forms.is_empty())
            .unwrap_or(true)
    }

    /// Replaces every registered form in `text` with `[redacted]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let forms = self.forms.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Cow::Borrowed(text);
        for form in forms.iter() {
            if out.contains(form.as_str()) {
                out = Cow::Owned(out.replace(form.as_str(), MASK));
            }
        }
        out
    }

    /// Redacts every string (keys included) inside a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact(text) {
                    *text = redacted;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    self.redact_json(&mut item);
                    map.insert(self.redact(&key).into_owned(), item);
                }
            }
            _ => {}
        }
    }
}

/// The forms a secret takes when encoded. For base64 the secret can start at any of three
/// alignments inside a longer text (`user:secret` in a Basic header, `echo secret | base64`
/// with its newline), so for each alignment the characters that depend on the secret alone
/// are registered as well as the whole encodings.
fn encoded_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(secret));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(secret);
            let encoded = engine.encode(&bytes);
            // Characters before `start` mix in the padding bytes; after `end` they mix in
            // whatever follows the secret.
            let start = if offset == 0 { 0 } else { 4 };
            let end = (bytes.len() / 3) * 4;
            if end > start && end - start >= 4 {
                forms.push(encoded[start..end].to_owned());
            }
        }
    }
    let percent = percent_encoding::utf8_percent_encode_bytes(secret).to_string();
    forms.push(percent.clone());
    forms.push(percent.to_lowercase_escapes());
    forms.push(percent.replace("%20", "+"));
    forms
}

trait LowercaseEscapes {
    fn to_lowercase_escapes(&self) -> String;
}

impl LowercaseEscapes for String {
    /// `%2F` -> `%2f`: some encoders use lower-case hex.
    fn to_lowercase_escapes(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut chars = self.chars();
        while let Some(c) = chars.next() {
            out.push(c);
            if c == '%' {
                for _ in 0..2 {
                    if let Some(hex) = chars.next() {
                        out.push(hex.to_ascii_lowercase());
                    }
                }
            }
        }
        out
    }
}

mod percent_encoding {
    pub use ::percent_encoding::*;

    /// Everything but unreserved characters (RFC 3986) is escaped, as URL encoders do.
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');

    pub fn utf8_percent_encode_bytes(bytes: &[u8]) -> PercentEncode<'_> {
        percent_encode(bytes, COMPONENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_base64_and_percent_forms_are_masked() {
        let redactor = Redactor::new();
        redactor.register("s3cr3t/canary+value");
        let b64 = STANDARD.encode("s3cr3t/canary+value\n");
        let pct = "s3cr3t%2Fcanary%2Bvalue";
        let text = format!("a s3cr3t/canary+value b {b64} c {pct}");
        let redacted = redactor.redact(&text);
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert!(!redacted.contains(&b64), "{redacted}");
        assert!(!redacted.contains(&STANDARD.encode("s3cr3t/canary+value")));
    }

    #[test]
    fn base64_inside_a_longer_text_is_masked() {
        let redactor = Redactor::new();
        redactor.register("hunter2hunter2");
        for prefix in ["", "u:", "us:", "use:"] {
            let encoded = STANDARD.encode(format!("{prefix}hunter2hunter2"));
            let redacted = redactor.redact(&encoded);
            assert!(redacted.contains(MASK), "{prefix}: {encoded} -> {redacted}");
        }
    }

    #[test]
    fn short_values_are_not_registered() {
        let redactor = Redactor::new();
        assert!(!redactor.register("ab"));
        assert_eq!(redactor.redact("ab"), "ab");
    }
}
