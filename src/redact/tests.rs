//! Unit tests of the redactor: each form a secret takes, and the rules around it.

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const SECRET: &str = "s3cr3t/canary+value";

fn redactor() -> Redactor {
    let redactor = Redactor::new();
    assert!(redactor.register(SECRET));
    redactor
}

fn assert_masked(redactor: &Redactor, text: &str) {
    let out = redactor.redact(text);
    assert!(out.contains(MASK), "{text:?} -> {out:?}");
    for piece in ["s3cr3t", "canary", "value"] {
        assert!(!out.contains(piece), "{text:?} -> {out:?}");
    }
}

#[test]
fn plain_json_percent_and_ansi_forms_are_masked() {
    let r = redactor();
    assert_masked(&r, &format!("a {SECRET} b"));
    assert_masked(&r, "{\"v\":\"s3cr3t\\/canary+value\"}");
    assert_masked(&r, "s3cr3t%2Fcanary%2Bvalue");
    assert_masked(&r, "s3cr3t/canary%2bvalue");
    assert_masked(&r, "\x1b[01;31m\x1b[Ks3cr3t/cana\x1b[m\x1b[Kry+value");
    assert_masked(&r, &hex::encode(SECRET));
}

#[test]
fn json_escapes_inside_the_secret() {
    let r = Redactor::new();
    r.register("pa\"ss\\word-ä");
    let out = r.redact("{\"x\":\"pa\\\"ss\\\\word-\\u00e4\"}");
    assert_eq!(out, "{\"x\":\"[redacted]\"}");
    assert_eq!(r.redact("pa\"ss\\word-ä"), MASK);
}

#[test]
fn base64_at_any_alignment_and_wrapped() {
    let r = Redactor::new();
    r.register("hunter2hunter2");
    for prefix in ["", "u:", "us:", "use:"] {
        let encoded = STANDARD.encode(format!("{prefix}hunter2hunter2\n"));
        assert!(r.redact(&encoded).contains(MASK), "{prefix}");
    }
    let long = format!("{}{}", "x".repeat(40), "hunter2hunter2");
    let encoded = STANDARD.encode(long);
    let wrapped: Vec<String> = encoded
        .as_bytes()
        .chunks(7)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let out = r.redact(&wrapped.join("\n")).into_owned();
    assert!(out.contains(MASK), "{out}");
    assert_eq!(out.lines().count(), wrapped.len(), "line structure is kept");
}

#[test]
fn a_multi_line_secret_and_a_split_one() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
    let r = Redactor::new();
    r.register(pem);
    let out = r.redact(&format!("key:\n{pem}done")).into_owned();
    assert!(!out.contains("MIIEvQ") && !out.contains("AASCBK"), "{out}");
    assert!(out.starts_with("key:\n") && out.ends_with("done"), "{out}");
    let folded = "s3cr3\nt/can\nary+v\nalue";
    assert_masked(&redactor(), folded);
}

#[test]
fn short_secrets_match_whole_words_only() {
    let r = Redactor::new();
    assert!(r.register("book"));
    assert_eq!(r.redact("facebook"), "facebook");
    assert_eq!(r.redact("a book, books"), "a [redacted], books");
    assert_eq!(r.redact("x=book\n"), "x=[redacted]\n");
    assert!(!r.register("ab"));
    assert!(!r.register(""));
}

#[test]
fn keys_are_never_rewritten() {
    let r = Redactor::new();
    r.register("run");
    r.register("kind");
    let mut value = serde_json::json!({"run": "run_start", "kind": {"kind": "a kind of run"}});
    r.redact_json(&mut value);
    assert_eq!(value["run"], "run_start");
    assert_eq!(value["kind"]["kind"], "a [redacted] of [redacted]");
}

#[test]
fn url_passwords_with_slash_and_at() {
    let r = Redactor::new();
    let display = r.register_url("postgres://u:bad@pass/word@host/db");
    assert_eq!(display, "postgres://u@host/db");
    assert_eq!(r.redact("pw is bad@pass/word"), "pw is [redacted]");
    let unregistered = Redactor::new();
    assert_eq!(
        unregistered.redact("see postgres://app:hunter2@db/x"),
        "see postgres://app:[redacted]@db/x"
    );
    assert_eq!(
        unregistered.redact("Authorization: Bearer abcdef123"),
        "Authorization: Bearer [redacted]"
    );
}

#[test]
fn a_secret_named_like_the_mask_does_not_grow_it() {
    let r = Redactor::new();
    r.register("redacted");
    let once = r.redact("a redacted b").into_owned();
    assert_eq!(once, "a [redacted] b");
    assert_eq!(r.redact(&once), once);
}

#[test]
fn blobs_are_redacted_as_bytes() {
    let r = redactor();
    let mut blob = vec![0u8, 159, 146];
    blob.extend_from_slice(SECRET.as_bytes());
    blob.push(0xff);
    let out = r.redact_bytes(&blob);
    assert!(out.windows(6).all(|w| w != b"s3cr3t"));
}
