//! The secret registry. Every value that must never be written (from `env::secret`, bearer
//! tokens, prompt secrets, database passwords, and the environment's credentials found by
//! their shape at start-up) is registered here once, and everything the host writes (terminal,
//! journal, artifacts, report, state) passes through [`Redactor::redact`].
//!
//! One mechanism covers every form a secret takes: the text is normalised (`normal.rs`: ANSI
//! colour codes and line breaks dropped, JSON and percent escapes undone), every form of every
//! secret (`forms.rs`: plain, base64 at each alignment, hex) is found in one pass of an
//! Aho-Corasick automaton over that view, and each match is mapped back to the original bytes
//! it came from, which become `[redacted]` (a line break inside a match is kept, so line
//! structure survives). Credentials recognisable by their shape (`shape.rs`: URL passwords,
//! `Authorization`/`Bearer` values) are masked in the same pass. Child output is redacted over
//! a window of lines (`lines.rs`), so a secret split across lines is caught too.
//!
//! Rules (README, "Redaction"): secrets of fewer than [`MIN_SECRET_LEN`] characters cannot be
//! registered (masking every "a" would destroy the journal as evidence): `env::secret` refuses
//! them with an error naming the variable, anything else registered that short is reported
//! with a warning. Secrets shorter than 8 characters match their plain form only as a whole
//! word. JSON keys and the journal's structure (`event.rs`) are never rewritten.

mod forms;
pub mod lines;
mod normal;
mod panic;
pub mod shape;
mod url;

use aho_corasick::{AhoCorasick, MatchKind};
use forms::{Form, is_word_byte};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, RwLock};

pub const MASK: &str = "[redacted]";

/// Secrets shorter than this (in characters) are not registered.
pub const MIN_SECRET_LEN: usize = 3;

#[derive(Default, Debug)]
pub struct Redactor {
    compiled: RwLock<Arc<Compiled>>,
}

#[derive(Default, Debug)]
struct Compiled {
    secrets: Vec<String>,
    forms: Vec<Form>,
    automaton: Option<AhoCorasick>,
    longest: usize,
}

pub use panic::install_panic_hook;

/// Every secret registered by any redactor in the process, for the panic hook.
fn everything() -> &'static Redactor {
    static ALL: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
    ALL.get_or_init(Redactor::default)
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret and its encoded forms. Returns false when it was too short to
    /// register (fewer than [`MIN_SECRET_LEN`] characters); an empty value is never a secret.
    pub fn register(&self, secret: &str) -> bool {
        let secret = secret.trim_end_matches(['\n', '\r']);
        // Counted without surrounding blanks: "  a" is a one-character secret.
        if secret.trim().chars().count() < MIN_SECRET_LEN {
            return false;
        }
        if !std::ptr::eq(self, everything()) {
            everything().register(secret);
        }
        let mut compiled = self.compiled.write().unwrap_or_else(|e| e.into_inner());
        if compiled.secrets.iter().any(|s| s == secret) {
            return true;
        }
        let mut secrets = compiled.secrets.clone();
        secrets.push(secret.to_owned());
        *compiled = Arc::new(Compiled::new(secrets));
        true
    }

    /// Registers a URL's password (user info, `?password=`, and `PGPASSWORD`, which sqlx falls
    /// back to) as a secret and returns the URL without it.
    pub fn register_url(&self, url: &str) -> String {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            self.register(&password);
        }
        let mut display = url.to_owned();
        if let Some(span) = url::password_span(url) {
            shape::register_password(self, &url[span.clone()]);
            // `user:` + password + `@` becomes `user@`.
            display = format!("{}{}", &url[..span.start - 1], &url[span.end..]);
        }
        let Ok(mut parsed) = ::url::Url::parse(&display) else {
            return display;
        };
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
                    kept.push((key, value));
                }
            }
            if kept.is_empty() {
                parsed.set_query(None);
            } else {
                parsed.query_pairs_mut().clear().extend_pairs(kept);
            }
            return parsed.to_string();
        }
        display
    }

    pub fn is_empty(&self) -> bool {
        self.compiled().secrets.is_empty()
    }

    /// The length of the longest form in the normalised view: how far a match can reach.
    pub fn longest_form(&self) -> usize {
        self.compiled().longest
    }

    /// Whether `text` ends with the beginning (4 bytes or more) of a form of a secret, in the
    /// normalised view: output that stops there may go on with the rest of the secret.
    pub fn may_continue_secret(&self, text: &str) -> bool {
        let compiled = self.compiled();
        let bytes = text.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(compiled.longest * 6)..];
        let view = normal::view(tail).bytes;
        compiled.forms.iter().any(|form| {
            (4..form.bytes.len().min(view.len() + 1)).any(|n| view.ends_with(&form.bytes[..n]))
        })
    }

    fn compiled(&self) -> Arc<Compiled> {
        self.compiled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces every registered secret, in every form, and every credential-shaped value in
    /// `text` with `[redacted]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans = self.compiled().spans(text.as_bytes());
        spans.extend(shape::shaped_spans(text));
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        let masked = mask(text.as_bytes(), spans);
        Cow::Owned(
            String::from_utf8(masked)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )
    }

    /// [`Redactor::redact`] for bytes that may not be text (an artifact blob).
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut spans = self.compiled().spans(bytes);
        if let Ok(text) = std::str::from_utf8(bytes) {
            spans.extend(shape::shaped_spans(text));
        }
        if spans.is_empty() {
            Cow::Borrowed(bytes)
        } else {
            Cow::Owned(mask(bytes, spans))
        }
    }

    /// Redacts every string value inside a JSON value, in place. Keys are never touched:
    /// they are the structure that readers of the journal rely on.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact(text) {
                    *text = redacted;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }
}

impl Compiled {
    fn new(secrets: Vec<String>) -> Self {
        let mut all: Vec<Form> = Vec::new();
        for secret in &secrets {
            for form in forms::forms_of(secret) {
                match all.iter_mut().find(|f| f.bytes == form.bytes) {
                    Some(existing) => existing.whole_word &= form.whole_word,
                    None => all.push(form),
                }
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(all.iter().map(|f| &f.bytes))
            .ok();
        Self {
            longest: all.iter().map(|f| f.bytes.len()).max().unwrap_or(0),
            secrets,
            forms: all,
            automaton,
        }
    }

    /// Original byte ranges of every match of every form in the normalised view of `text`.
    fn spans(&self, text: &[u8]) -> Vec<Range<usize>> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        if text.len() < 3 {
            return Vec::new();
        }
        let view = normal::needs_view(text).then(|| normal::view(text));
        let haystack = view.as_ref().map_or(text, |v| v.bytes.as_slice());
        let mut spans = Vec::new();
        for found in automaton.find_overlapping_iter(haystack) {
            let form = &self.forms[found.pattern().as_usize()];
            let (start, end) = (found.start(), found.end());
            if form.whole_word && !whole_word(form, haystack, view.as_ref(), text, start, end) {
                continue;
            }
            spans.push(match &view {
                Some(view) => view.start[start]..view.end[end - 1],
                None => start..end,
            });
        }
        spans
    }
}

/// Whether a match at `start..end` of the haystack stands as a word: not glued to a letter,
/// digit or `_` on a side where the form itself has one. A line break between counts as a gap.
fn whole_word(
    form: &Form,
    haystack: &[u8],
    view: Option<&normal::View>,
    text: &[u8],
    start: usize,
    end: usize,
) -> bool {
    let gap = |a: usize, b: usize| text[a..b].iter().any(|c| matches!(c, b'\n' | b'\r'));
    let left_free = !form.starts_with_word
        || start == 0
        || !is_word_byte(haystack[start - 1])
        || view.is_some_and(|v| gap(v.end[start - 1], v.start[start]));
    let right_free = !form.ends_with_word
        || end == haystack.len()
        || !is_word_byte(haystack[end])
        || view.is_some_and(|v| gap(v.end[end - 1], v.start[end]));
    left_free && right_free
}

/// Replaces the (possibly overlapping) spans of `text` with the mask, keeping line breaks
/// inside a span, and never masking inside an existing `[redacted]`.
fn mask(text: &[u8], mut spans: Vec<Range<usize>>) -> Vec<u8> {
    let existing = existing_masks(text);
    spans.retain(|span| {
        !existing
            .iter()
            .any(|m| m.start <= span.start && span.end <= m.end)
    });
    for span in &mut spans {
        while span.start > 0 && is_continuation(text[span.start]) {
            span.start -= 1;
        }
        while span.end < text.len() && is_continuation(text[span.end]) {
            span.end += 1;
        }
    }
    spans.sort_by_key(|s| s.start);
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for span in merge(spans) {
        out.extend_from_slice(&text[at..span.start]);
        let mut in_mask = false;
        for &byte in &text[span.clone()] {
            if matches!(byte, b'\n' | b'\r') {
                out.push(byte);
                in_mask = false;
            } else if !in_mask {
                out.extend_from_slice(MASK.as_bytes());
                in_mask = true;
            }
        }
        at = span.end;
    }
    out.extend_from_slice(&text[at..]);
    out
}

fn is_continuation(byte: u8) -> bool {
    (0x80..0xc0).contains(&byte)
}

fn existing_masks(text: &[u8]) -> Vec<Range<usize>> {
    let mask = MASK.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].windows(mask.len()).position(|w| w == mask) {
        found.push(from + at..from + at + mask.len());
        from += at + mask.len();
    }
    found
}

/// Sorted spans merged where they overlap or touch.
fn merge(spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

#[cfg(test)]
mod tests;
