//! The forms one secret is looked for in, as they appear in the normalised view
//! (`normal.rs`): escapes, colour codes and line breaks are already undone there, so only the
//! encodings that cannot be undone without guessing are registered here: base64 (standard and
//! URL-safe, at each of the three alignments a secret can have inside a longer encoded text)
//! and hex. Wrapped base64 needs nothing extra: the view joins its lines.

use super::normal;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Secrets shorter than this (in characters) match their plain form only as a whole word, so
/// that a short secret such as "book" does not mask the inside of "facebook"; longer ones
/// match anywhere, since a credential glued to other text is still the credential.
pub const WHOLE_WORD_BELOW: usize = 8;

/// One pattern of the automaton.
#[derive(Debug, Clone)]
pub struct Form {
    pub bytes: Vec<u8>,
    /// Matches only when not glued to a letter, digit or `_` on a side where the form itself
    /// starts or ends with one.
    pub whole_word: bool,
    pub starts_with_word: bool,
    pub ends_with_word: bool,
}

pub fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

impl Form {
    fn new(bytes: Vec<u8>, whole_word: bool) -> Self {
        Self {
            starts_with_word: bytes.first().is_some_and(|b| is_word_byte(*b)),
            ends_with_word: bytes.last().is_some_and(|b| is_word_byte(*b)),
            bytes,
            whole_word,
        }
    }
}

/// Every form of `secret`, deduplicated.
pub fn forms_of(secret: &str) -> Vec<Form> {
    let whole_word = secret.chars().count() < WHOLE_WORD_BELOW;
    let mut forms: Vec<Form> = Vec::new();
    let mut add = |bytes: Vec<u8>, whole_word: bool| {
        if bytes.len() < 3 {
            return;
        }
        match forms.iter_mut().find(|f| f.bytes == bytes) {
            Some(existing) => existing.whole_word &= whole_word,
            None => forms.push(Form::new(bytes, whole_word)),
        }
    };
    // The plain text as the view shows it when printed as is: line breaks dropped, and any
    // escape-like text inside the secret itself decoded the way the view decodes output.
    let joined: Vec<u8> = secret
        .bytes()
        .filter(|b| !matches!(b, b'\n' | b'\r'))
        .collect();
    add(normal::view(secret.as_bytes()).bytes, whole_word);
    // Printed JSON- or percent-encoded, the view decodes it back to the secret itself.
    add(joined.clone(), whole_word);
    // Form encoding writes a space as `+`.
    if joined.contains(&b' ') {
        let plus = joined
            .iter()
            .map(|&b| if b == b' ' { b'+' } else { b })
            .collect();
        add(plus, whole_word);
    }
    for encoded in base64_forms(secret.as_bytes()) {
        add(encoded.into_bytes(), false);
    }
    if secret.len() >= 3 {
        let hex = hex::encode(secret.as_bytes());
        add(hex.to_ascii_uppercase().into_bytes(), false);
        add(hex.into_bytes(), false);
    }
    forms
}

/// Base64 of the secret at each alignment. When the secret starts at byte offset 1 or 2 of
/// the encoded input (`user:secret` in a Basic header, say), the first four characters mix in
/// the bytes before it and the characters after `end` mix in what follows, so only the
/// characters that depend on the secret alone are a pattern.
fn base64_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![STANDARD.encode(secret), URL_SAFE.encode(secret)];
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(secret);
            let encoded = engine.encode(&bytes);
            let start = if offset == 0 { 0 } else { 4 };
            let end = (bytes.len() / 3) * 4;
            if end > start && end - start >= 4 {
                forms.push(encoded[start..end].to_owned());
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_match_as_words_and_encodings_anywhere() {
        let forms = forms_of("book");
        assert!(forms.iter().any(|f| f.bytes == b"book" && f.whole_word));
        assert!(
            forms
                .iter()
                .any(|f| f.bytes == b"626f6f6b" && !f.whole_word)
        );
        let long = forms_of("hunter2hunter2");
        assert!(long.iter().all(|f| !f.whole_word));
    }

    #[test]
    fn a_multi_line_secret_is_registered_joined() {
        let forms = forms_of("-----BEGIN KEY-----\nabc\n-----END KEY-----\n");
        assert!(
            forms
                .iter()
                .any(|f| f.bytes == b"-----BEGIN KEY-----abc-----END KEY-----")
        );
    }
}
