//! What came back: the `Reply`, why an attempt got none (`Failure`, classified from reqwest's
//! error chain), the error when `expect` does not hold, and the map a script receives.

use crate::host::{HostContext, map_of};
use crate::options::host_error;
use crate::script_error::ScriptError;
use rhai::{Dynamic, Map};
use serde_json::Value;
use std::time::Duration;

use super::*;

/// A response as read off the wire.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) retry_after: Option<Duration>,
}

impl Reply {
    pub(super) fn status_text(&self) -> String {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("");
        format!("{} {reason}", self.status).trim_end().to_owned()
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn excerpt(&self) -> String {
        // One line, whitespace collapsed: it is quoted inside a one-line error.
        let text = String::from_utf8_lossy(&self.body);
        let words: Vec<&str> = text.split_whitespace().collect();
        let text = words.join(" ");
        let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
        if excerpt.len() < text.len() {
            excerpt.push('…');
        }
        excerpt
    }
}

/// Why an attempt produced no response.
pub(super) enum Failure {
    TimedOut(Duration),
    Connect(String),
    Tls(String),
    /// Bytes announced by Content-Length (true) or read before giving up (false).
    TooLarge(u64, bool),
    /// The connection was closed or reset before any byte of the response arrived.
    Reset(String),
    Other(String),
}

impl Failure {
    pub(super) fn describe(&self, max_body: u64) -> String {
        match self {
            Self::TimedOut(after) => {
                format!("timed out after {}", humantime::format_duration(*after))
            }
            Self::Connect(why) => format!("cannot connect: {why}"),
            Self::Tls(why) => format!(
                "TLS handshake failed: {why} (is the server speaking plain HTTP, or is its certificate untrusted?)"
            ),
            Self::TooLarge(seen, announced) => format!(
                "the response body is larger than max_body ({max_body} bytes; {}); raise `max_body` to accept it",
                if *announced {
                    format!("the server announced {seen} bytes")
                } else {
                    format!("{seen} bytes read before stopping")
                }
            ),
            Self::Reset(why) => format!("connection reset before any response: {why}"),
            Self::Other(why) => why.clone(),
        }
    }

    pub(super) fn short(&self) -> &'static str {
        match self {
            Self::TimedOut(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::TooLarge(..) => "too_large",
            Self::Reset(_) => "reset",
            Self::Other(_) => "error",
        }
    }
}

/// The causes of an error, outermost first, without repeats (reqwest nests hyper nests io).
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        // reqwest's own outer message repeats the URL; the call is named by our message.
        // hyper's "client error (Connect)" says nothing the next cause does not say better.
        let noise = text.starts_with("error sending request") || text == "client error (Connect)";
        if !noise && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// True when a rustls error is somewhere in the chain (directly or inside an io::Error).
pub(super) fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if error.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        current = error.source();
    }
    // hyper-util wraps the connector's error in a boxed type that hides the rustls error from
    // downcasting; its text is distinctive enough.
    let text = error_chain(error).to_ascii_lowercase();
    [
        "corrupt message",
        "invalid peer certificate",
        "handshake",
        "unknownissuer",
        "peer is incompatible",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

pub(super) fn classify(error: &reqwest::Error, timeout: Duration) -> Failure {
    if error.is_timeout() {
        return Failure::TimedOut(timeout);
    }
    let chain = error_chain(error);
    if is_tls_error(error) {
        Failure::Tls(chain)
    } else if error.is_connect() {
        Failure::Connect(chain)
    } else {
        Failure::Other(chain)
    }
}

pub(super) fn expectation_error(
    ctx: &HostContext,
    call: &Call,
    reply: &Reply,
    attempts: u32,
) -> Box<rhai::EvalAltResult> {
    let after = if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    };
    let excerpt = reply.excerpt();
    let body = if excerpt.is_empty() {
        " (empty body)".to_owned()
    } else {
        format!("; body: {excerpt}")
    };
    let message = ctx.redact(&format!(
        "{}: {} returned {}{after}, expected {}{body}",
        call.what,
        call.label(),
        reply.status_text(),
        call.expect.describe()
    ));
    ScriptError::new("http", message)
        .with("status", i64::from(reply.status))
        .with("attempts", i64::from(attempts))
        .into_eval()
}

/// What `json` holds when the body is not JSON: reading anything from it is an error that says so.
#[derive(Clone)]
pub struct NotJson {
    pub(super) call: String,
    pub(super) content_type: String,
    pub(super) excerpt: String,
}

impl NotJson {
    pub(super) fn error(&self, key: &str) -> Box<rhai::EvalAltResult> {
        let content_type = if self.content_type.is_empty() {
            String::new()
        } else {
            format!(" (content-type {})", self.content_type)
        };
        let excerpt = if self.excerpt.is_empty() {
            "the body is empty".to_owned()
        } else {
            format!(
                "it starts with: {}",
                self.excerpt.chars().take(80).collect::<String>()
            )
        };
        host_error(format!(
            "cannot read json.{key}: the response body of {} is not JSON{content_type}; {excerpt}. Use `body` for the raw text",
            self.call
        ))
    }
}

pub(super) fn response_map(ctx: &HostContext, call: &Call, reply: Reply, attempts: u32) -> Map {
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    let json = match serde_json::from_str::<Value>(&body) {
        Ok(value) if !body.trim().is_empty() => crate::host::json::to_dynamic(&value),
        _ => Dynamic::from(NotJson {
            call: ctx.redact(&call.label()),
            content_type: reply.header("content-type").unwrap_or_default().to_owned(),
            excerpt: ctx.redact(&reply.excerpt()),
        }),
    };
    let headers: Map = reply
        .headers
        .into_iter()
        .map(|(key, value)| (key.into(), value.into()))
        .collect();
    map_of([
        ("status", Dynamic::from(i64::from(reply.status))),
        ("headers", Dynamic::from(headers)),
        ("body", Dynamic::from(body)),
        ("json", json),
        ("attempts", Dynamic::from(i64::from(attempts))),
        ("planned", Dynamic::FALSE),
    ])
}

pub(super) fn planned_map() -> Map {
    map_of([
        ("status", Dynamic::from(0_i64)),
        ("headers", Dynamic::from(Map::new())),
        ("body", Dynamic::from(String::new())),
        ("json", Dynamic::from(Map::new())),
        ("attempts", Dynamic::from(0_i64)),
        ("planned", Dynamic::TRUE),
    ])
}
