//! HTTP: `http::get(url, opts?)`, `http::post(url, body, opts?)`, `http::request(method, url,
//! opts)` and `http::wait_until(url, opts)`, returning `#{ status, headers, body, json, planned }`.
//!
//! - One reqwest client per run (rustls with the ring provider, nothing else), built on first use
//!   so a run that never calls HTTP pays nothing; connections are reused across calls.
//! - Every call goes through the effect gate: policy (`[http] allow_hosts`) is checked before any
//!   connection, GET/HEAD (or `read_only: true`) run in a dry run, everything else is planned with
//!   method, URL and the SHA-256 of the body.
//! - Every attempt has a timeout and runs through `ctx.block_on`, so Ctrl-C and step timeouts
//!   abort a hanging request at once. Retries (opt-in) back off exponentially with jitter on
//!   connect errors, timeouts, 5xx and 429 (honouring `Retry-After`), never on other 4xx, and
//!   each attempt is journaled as an `http_attempt` event.
//! - Every request carries a W3C `traceparent` whose trace id is the run's.
//! - The bearer value and headers that carry credentials are registered as secrets before
//!   anything is journaled, so they are redacted everywhere.

use super::{DEFAULT_HTTP_TIMEOUT, Effect, HostContext, Outcome, add_fn, install, map_of};
use crate::options::{HostResult, Options, host_error};
use crate::policy::{Policy, Subject};
use crate::script_error::ScriptError;
use reqwest::header::{HeaderName, HeaderValue};
use rhai::{Dynamic, Engine, Map, Module};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Responses larger than this are refused unless `max_body` says otherwise: a runbook reads
/// health checks and small JSON documents, and the whole body lives in script memory.
pub const DEFAULT_MAX_BODY: u64 = 32 * 1024 * 1024;
/// Characters of a response body quoted in errors.
const EXCERPT_CHARS: usize = 300;
/// First retry delay; doubled per retry (with jitter), capped at `MAX_BACKOFF`.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A server's `Retry-After` is honoured up to this long (cancellation still interrupts it).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Redirects followed before giving up (each checked against `[http] allow_hosts`).
const MAX_REDIRECTS: usize = 10;
/// `wait_until` defaults: give up after this long, poll this often.
pub const DEFAULT_WAIT_DEADLINE: Duration = Duration::from_secs(120);
pub const DEFAULT_WAIT_INTERVAL: Duration = Duration::from_secs(2);

/// The run's HTTP client, built on first use.
#[derive(Default)]
struct Client {
    cell: OnceCell<reqwest::Client>,
}

impl Client {
    fn get(&self, policy: &Arc<Policy>) -> HostResult<reqwest::Client> {
        if let Some(client) = self.cell.get() {
            return Ok(client.clone());
        }
        install_crypto_provider();
        // A redirect must not lead outside `[http] allow_hosts`: the gate only saw the first URL.
        let policy = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let url = attempt.url().clone();
            match policy.check(&Subject::Host(url.host_str().unwrap_or_default())) {
                Ok(()) => attempt.follow(),
                Err(rule) => attempt.error(format!("redirect to {url} refused: {rule}")),
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("glow-run/", env!("CARGO_PKG_VERSION")))
            .redirect(redirects)
            .build()
            .map_err(|e| {
                host_error(format!(
                    "http: cannot build the HTTP client: {}",
                    error_chain(&e)
                ))
            })?;
        Ok(self.cell.get_or_init(|| client).clone())
    }
}

/// rustls needs a process-wide crypto provider; we ship ring only (no aws-lc, no OpenSSL).
/// Installed lazily so start-up stays fast; another subsystem may have installed it already.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Which statuses a call accepts.
#[derive(Debug, Clone)]
enum Expect {
    /// Any 2xx.
    Success,
    /// Exact statuses or classes ("2xx").
    Any(Vec<StatusPattern>),
}

#[derive(Debug, Clone, Copy)]
enum StatusPattern {
    Exact(u16),
    Class(u16),
}

impl Expect {
    fn parse(what: &str, value: Option<Dynamic>) -> HostResult<Self> {
        let Some(value) = value else {
            return Ok(Self::Success);
        };
        let items = if value.is_array() {
            value.cast::<rhai::Array>()
        } else {
            vec![value]
        };
        let mut patterns = Vec::new();
        for item in items {
            let pattern = if let Ok(code) = item.as_int() {
                u16::try_from(code)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(StatusPattern::Exact)
            } else if item.is_string() {
                let text = item.to_string().to_ascii_lowercase();
                match text.as_bytes() {
                    [d @ b'1'..=b'5', b'x', b'x'] => {
                        Some(StatusPattern::Class(u16::from(d - b'0')))
                    }
                    _ => text
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .map(StatusPattern::Exact),
                }
            } else {
                None
            };
            patterns.push(pattern.ok_or_else(|| {
                host_error(format!(
                    "{what}: option 'expect' must be a status (200), a class (\"2xx\") or a list of them, got {item}"
                ))
            })?);
        }
        Ok(Self::Any(patterns))
    }

    fn accepts(&self, status: u16) -> bool {
        match self {
            Self::Success => (200..300).contains(&status),
            Self::Any(patterns) => patterns.iter().any(|pattern| match pattern {
                StatusPattern::Exact(code) => *code == status,
                StatusPattern::Class(class) => status / 100 == *class,
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Success => "2xx".into(),
            Self::Any(patterns) => {
                let parts: Vec<String> = patterns
                    .iter()
                    .map(|pattern| match pattern {
                        StatusPattern::Exact(code) => code.to_string(),
                        StatusPattern::Class(class) => format!("{class}xx"),
                    })
                    .collect();
                parts.join(" or ")
            }
        }
    }
}

/// One call, parsed and validated before the gate sees it.
struct Call {
    what: &'static str,
    action: &'static str,
    method: reqwest::Method,
    url: url::Url,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    headers: Vec<(HeaderName, HeaderValue)>,
    bearer: Option<String>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    expect: Expect,
    read_only: bool,
    max_body: u64,
}

impl Call {
    /// `METHOD URL`: the effect's target and how errors name the call.
    fn label(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

/// Header names whose values are credentials.
fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authorization"
        || name == "proxy-authorization"
        || name == "cookie"
        || name.contains("token")
        || name.contains("secret")
        || name.contains("api-key")
        || name.contains("api_key")
        || name.contains("apikey")
        || name.contains("password")
}

/// Registers a credential and, for `Scheme credential` values, the credential alone.
fn register_credential(ctx: &HostContext, value: &str) {
    ctx.register_secret(value);
    if let Some((_, rest)) = value.split_once(' ') {
        ctx.register_secret(rest.trim());
    }
}

fn parse_url(ctx: &HostContext, what: &str, text: &str) -> HostResult<url::Url> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| host_error(format!("{what}: invalid URL '{}': {e}", ctx.redact(text))))?;
    if let Some(password) = url.password() {
        ctx.register_secret(password);
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
            ctx.register_secret(&decoded);
        }
    }
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(host_error(format!(
                "{what}: unsupported URL scheme '{other}' in '{}': only http and https are allowed",
                ctx.redact(text)
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(host_error(format!(
            "{what}: invalid URL '{}': it has no host",
            ctx.redact(text)
        )));
    }
    Ok(url)
}

/// What a script body becomes on the wire: maps and arrays as JSON, strings as they are.
fn encode_body(body: Dynamic) -> (Option<Vec<u8>>, Option<&'static str>) {
    if body.is_unit() {
        (None, None)
    } else if body.is_map() || body.is_array() {
        let value = super::json::from_dynamic(&body);
        (
            Some(value.to_string().into_bytes()),
            Some("application/json"),
        )
    } else if body.is_blob() {
        (
            Some(body.cast::<rhai::Blob>()),
            Some("application/octet-stream"),
        )
    } else {
        (Some(body.to_string().into_bytes()), None)
    }
}

fn parse_max_body(what: &str, value: Option<Dynamic>) -> HostResult<u64> {
    let Some(value) = value else {
        return Ok(DEFAULT_MAX_BODY);
    };
    if let Ok(bytes) = value.as_int() {
        return u64::try_from(bytes).map_err(|_| {
            host_error(format!(
                "{what}: option 'max_body' cannot be negative ({bytes})"
            ))
        });
    }
    if value.is_string() {
        let text = value.to_string();
        return text.trim().parse::<bytesize::ByteSize>().map(|size| size.as_u64()).map_err(|e| {
            host_error(format!("{what}: option 'max_body': invalid size \"{text}\" ({e}); use bytes or \"10MiB\""))
        });
    }
    Err(host_error(format!(
        "{what}: option 'max_body' must be a number of bytes or a size like \"10MiB\""
    )))
}

/// Parses the options every call shares; `options` may still hold keys the caller took first.
#[allow(clippy::too_many_arguments)]
fn parse_call(
    ctx: &HostContext,
    what: &'static str,
    action: &'static str,
    method: &str,
    url: &str,
    body: Dynamic,
    mut options: Options,
    allow_retries: bool,
) -> HostResult<Call> {
    let method = reqwest::Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| host_error(format!("{what}: invalid HTTP method '{method}'")))?;
    // Credentials first, so that even an error about a later option cannot leak them.
    let bearer = options.string("bearer")?.filter(|token| !token.is_empty());
    if let Some(token) = &bearer {
        ctx.register_secret(token);
    }
    let mut headers = Vec::new();
    for (name, value) in options.map("headers")?.unwrap_or_default() {
        let value = value.to_string();
        if is_sensitive_header(&name) {
            register_credential(ctx, &value);
        }
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| host_error(format!("{what}: invalid header name '{name}'")))?;
        let mut header_value = HeaderValue::from_str(&value).map_err(|_| {
            host_error(format!(
                "{what}: invalid value for header '{name}' (control characters?)"
            ))
        })?;
        header_value.set_sensitive(is_sensitive_header(&name));
        headers.push((header_name, header_value));
    }
    let query = options.map("query")?.unwrap_or_default();
    let mut url = parse_url(ctx, what, url)?;
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (key, value) in &query {
            let values = if value.is_array() {
                value.clone().cast::<rhai::Array>()
            } else {
                vec![value.clone()]
            };
            for value in values {
                let text = value.to_string();
                if is_sensitive_header(key) {
                    ctx.register_secret(&text);
                }
                pairs.append_pair(key, &text);
            }
        }
    }
    let body = match options.value("body") {
        Some(value) if body.is_unit() => value,
        Some(_) => {
            return Err(host_error(format!(
                "{what}: the body is given twice (argument and option 'body')"
            )));
        }
        None => body,
    };
    let (body, content_type) = encode_body(body);
    let timeout = options.duration("timeout")?.unwrap_or(DEFAULT_HTTP_TIMEOUT);
    if timeout.is_zero() {
        return Err(host_error(format!(
            "{what}: option 'timeout' must be more than zero"
        )));
    }
    let retries = if allow_retries {
        match options.int("retries")? {
            None => 0,
            Some(n) => u32::try_from(n).ok().filter(|n| *n <= 100).ok_or_else(|| {
                host_error(format!(
                    "{what}: option 'retries' must be between 0 and 100, got {n}"
                ))
            })?,
        }
    } else {
        0
    };
    let backoff = if allow_retries {
        options.duration("backoff")?.unwrap_or(DEFAULT_BACKOFF)
    } else {
        DEFAULT_BACKOFF
    };
    let expect = Expect::parse(what, options.value("expect"))?;
    let read_only = options
        .bool("read_only")?
        .unwrap_or(method == reqwest::Method::GET || method == reqwest::Method::HEAD);
    let max_body = parse_max_body(what, options.value("max_body"))?;
    options.finish()?;
    Ok(Call {
        what,
        action,
        method,
        url,
        body,
        content_type,
        headers,
        bearer,
        timeout,
        retries,
        backoff,
        expect,
        read_only,
        max_body,
    })
}

/// A response as read off the wire.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    retry_after: Option<Duration>,
}

impl Reply {
    fn status_text(&self) -> String {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("");
        format!("{} {reason}", self.status).trim_end().to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn excerpt(&self) -> String {
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
enum Failure {
    TimedOut(Duration),
    Connect(String),
    Tls(String),
    /// Bytes announced by Content-Length (true) or read before giving up (false).
    TooLarge(u64, bool),
    Other(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        matches!(self, Self::TimedOut(_) | Self::Connect(_))
    }

    fn describe(&self, max_body: u64) -> String {
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
            Self::Other(why) => why.clone(),
        }
    }

    fn short(&self) -> &'static str {
        match self {
            Self::TimedOut(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::TooLarge(..) => "too_large",
            Self::Other(_) => "error",
        }
    }
}

/// The causes of an error, outermost first, without repeats (reqwest nests hyper nests io).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
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

fn classify(error: &reqwest::Error, timeout: Duration) -> Failure {
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

fn traceparent(ctx: &HostContext) -> String {
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{}-{span:016x}-01", ctx.trace_id)
}

/// One attempt: send, read the body (bounded), all within `timeout`.
async fn send_once(
    client: &reqwest::Client,
    call: &Call,
    trace: &str,
    timeout: Duration,
) -> Result<Reply, Failure> {
    let mut builder = client
        .request(call.method.clone(), call.url.clone())
        .timeout(timeout);
    builder = builder.header("traceparent", trace);
    let has_content_type = call
        .headers
        .iter()
        .any(|(name, _)| name == reqwest::header::CONTENT_TYPE);
    if let Some(content_type) = call.content_type
        && !has_content_type
    {
        builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    for (name, value) in &call.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    if let Some(token) = &call.bearer {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = &call.body {
        builder = builder.body(body.clone());
    }
    let exchange = async {
        let mut response = builder.send().await.map_err(|e| classify(&e, timeout))?;
        if let Some(length) = response.content_length()
            && length > call.max_body
        {
            return Err(Failure::TooLarge(length, true));
        }
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.iter_mut().find(|(key, _)| key == name.as_str()) {
                Some((_, existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                None => headers.push((name.as_str().to_owned(), value)),
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, timeout))? {
            if (body.len() + chunk.len()) as u64 > call.max_body {
                return Err(Failure::TooLarge((body.len() + chunk.len()) as u64, false));
            }
            body.extend_from_slice(&chunk);
        }
        let retry_after = headers
            .iter()
            .find(|(key, _)| key == "retry-after")
            .and_then(|(_, v)| parse_retry_after(v));
        Ok(Reply {
            status,
            headers,
            body,
            retry_after,
        })
    };
    // reqwest's timeout covers connect, headers and body; this outer one guards
    // against anything that outlives it.
    match tokio::time::timeout(timeout + Duration::from_millis(100), exchange).await {
        Ok(result) => result,
        Err(_) => Err(Failure::TimedOut(timeout)),
    }
}

/// `Retry-After: 3` or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when
        .signed_duration_since(chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Exponential backoff with jitter: somewhere in [d/2, d] where d = backoff * 2^retry.
fn backoff_delay(base: Duration, retry: u32) -> Duration {
    let full = base.saturating_mul(1_u32 << retry.min(16)).min(MAX_BACKOFF);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(rand::random::<f64>())
}

/// Journals one attempt (status or failure, and the delay before the next one, if any).
fn journal_attempt(
    ctx: &HostContext,
    call: &Call,
    attempt: u32,
    started: Instant,
    result: &Result<Reply, Failure>,
    retry_in: Option<Duration>,
) {
    let mut fields = json!({
        "method": call.method.as_str(),
        "url": call.url.as_str(),
        "attempt": attempt,
        "duration_ms": started.elapsed().as_millis() as u64,
    });
    match result {
        Ok(reply) => fields["status"] = json!(reply.status),
        Err(failure) => {
            fields["error"] = json!(failure.describe(call.max_body));
            fields["failure"] = json!(failure.short());
        }
    }
    if let Some(delay) = retry_in {
        fields["retry_in_ms"] = json!(delay.as_millis() as u64);
    }
    // Journaled as a `log` event (DESIGN.md fixes the event kinds) at level "trace", which the
    // terminal does not show; `event: "http_attempt"` tells attempts apart.
    let message = match (&fields["status"], &fields["failure"]) {
        (serde_json::Value::Number(status), _) => {
            format!("{} {} attempt {attempt}: {status}", call.method, call.url)
        }
        (_, failure) => format!(
            "{} {} attempt {attempt}: {}",
            call.method,
            call.url,
            failure.as_str().unwrap_or("failed")
        ),
    };
    fields["level"] = json!("trace");
    fields["event"] = json!("http_attempt");
    fields["message"] = json!(message);
    ctx.emit("log", fields);
}

/// Sends with retries; returns the last reply (whatever its status) and how many attempts it took.
fn perform(ctx: &HostContext, client: &Client, call: &Call) -> HostResult<(Reply, u32)> {
    let client = client.get(&ctx.policy)?;
    let trace = traceparent(ctx);
    let (result, attempts) = ctx.block_on(async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = send_once(&client, call, &trace, call.timeout).await;
            let retry_in = match &result {
                _ if attempt > call.retries => None,
                Ok(reply)
                    if (reply.status >= 500 || reply.status == 429)
                        && !call.expect.accepts(reply.status) =>
                {
                    Some(
                        reply
                            .retry_after
                            .unwrap_or_else(|| backoff_delay(call.backoff, attempt - 1)),
                    )
                }
                Err(failure) if failure.retryable() => {
                    Some(backoff_delay(call.backoff, attempt - 1))
                }
                _ => None,
            };
            journal_attempt(ctx, call, attempt, started, &result, retry_in);
            let Some(delay) = retry_in else {
                return (result, attempt);
            };
            let seen = match &result {
                Ok(reply) => reply.status_text(),
                Err(failure) => failure.describe(call.max_body),
            };
            ctx.log(
                "warn",
                &format!(
                    "{} {}: {seen}; retry {attempt}/{} in {}",
                    call.what,
                    call.label(),
                    call.retries,
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                ),
            );
            tokio::time::sleep(delay).await;
        }
    })?;
    let after = if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    };
    match result {
        Ok(reply) => Ok((reply, attempts)),
        Err(failure) => {
            let message = ctx.redact(&format!(
                "{}: {} failed{after}: {}",
                call.what,
                call.label(),
                failure.describe(call.max_body)
            ));
            let kind = if matches!(failure, Failure::TimedOut(_)) {
                "timeout"
            } else {
                "http"
            };
            Err(ScriptError::new(kind, message)
                .with("attempts", i64::from(attempts))
                .into_eval())
        }
    }
}

fn expectation_error(
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
    call: String,
    content_type: String,
    excerpt: String,
}

impl NotJson {
    fn error(&self, key: &str) -> Box<rhai::EvalAltResult> {
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

fn response_map(ctx: &HostContext, call: &Call, reply: Reply, attempts: u32) -> Map {
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    let json = match serde_json::from_str::<Value>(&body) {
        Ok(value) if !body.trim().is_empty() => super::json::to_dynamic(&value),
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

fn planned_map() -> Map {
    map_of([
        ("status", Dynamic::from(0_i64)),
        ("headers", Dynamic::from(Map::new())),
        ("body", Dynamic::from(String::new())),
        ("json", Dynamic::from(Map::new())),
        ("attempts", Dynamic::from(0_i64)),
        ("planned", Dynamic::TRUE),
    ])
}

fn effect_for<'a>(call: &'a Call, extra: Value) -> Effect<'a> {
    let mut detail = json!({
        "method": call.method.as_str(),
        "url": call.url.as_str(),
        "headers": call.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
        "bearer": call.bearer.is_some(),
        "timeout_ms": call.timeout.as_millis() as u64,
        "expect": call.expect.describe(),
    });
    if let Some(body) = &call.body {
        detail["body_sha256"] = json!(hex::encode(Sha256::digest(body)));
        detail["body_bytes"] = json!(body.len());
    }
    if call.retries > 0 {
        detail["retries"] = json!(call.retries);
    }
    if let (Value::Object(detail), Value::Object(extra)) = (&mut detail, extra) {
        detail.extend(extra);
    }
    Effect {
        namespace: "http",
        action: call.action,
        target: call.label(),
        detail,
        read_only: call.read_only,
        subject: Subject::Host(call.url.host_str().unwrap_or_default()),
    }
}

/// `get`, `post`, `request`: one call through the gate.
fn call(ctx: &HostContext, client: &Client, call: &Call) -> HostResult<Map> {
    let outcome = ctx.effect(effect_for(call, json!({})), |event| {
        let (reply, attempts) = perform(ctx, client, call)?;
        event.insert("status".into(), json!(reply.status));
        event.insert("attempts".into(), json!(attempts));
        if !call.expect.accepts(reply.status) {
            return Err(expectation_error(ctx, call, &reply, attempts));
        }
        Ok((reply, attempts))
    })?;
    Ok(match outcome {
        Outcome::Planned => planned_map(),
        Outcome::Done((reply, attempts)) => response_map(ctx, call, reply, attempts),
    })
}

/// `wait_until`: poll with GET until `expect` holds or the deadline passes.
fn wait_until(ctx: &HostContext, client: &Client, url: &str, options: Map) -> HostResult<Map> {
    let what = "http::wait_until";
    let mut options = Options::new(what, options);
    let deadline = match (options.duration("deadline")?, options.duration("timeout")?) {
        (Some(_), Some(_)) => {
            return Err(host_error(format!(
                "{what}: give either 'deadline' or 'timeout' (the same thing), not both"
            )));
        }
        (Some(d), None) | (None, Some(d)) => d,
        (None, None) => DEFAULT_WAIT_DEADLINE,
    };
    let interval = options
        .duration("interval")?
        .unwrap_or(DEFAULT_WAIT_INTERVAL);
    let attempt_timeout = options.duration("attempt_timeout")?;
    let method = options.string("method")?.unwrap_or_else(|| "GET".into());
    // `timeout` is the deadline here, so parse_call sees none and uses the default per attempt.
    let mut call_spec = parse_call(
        ctx,
        what,
        "wait_until",
        &method,
        url,
        Dynamic::UNIT,
        options,
        false,
    )?;
    if let Some(timeout) = attempt_timeout.filter(|t| !t.is_zero()) {
        call_spec.timeout = timeout;
    }
    let extra = json!({ "deadline_ms": deadline.as_millis() as u64, "interval_ms": interval.as_millis() as u64 });
    let outcome = ctx.effect(effect_for(&call_spec, extra), |event| {
        let http = client.get(&ctx.policy)?;
        let trace = traceparent(ctx);
        let started = Instant::now();
        let (last, attempts) = ctx.block_on(async {
            let mut attempt = 0_u32;
            loop {
                attempt += 1;
                let remaining = deadline
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1));
                let timeout = call_spec.timeout.min(remaining);
                let attempt_started = Instant::now();
                let result = send_once(&http, &call_spec, &trace, timeout).await;
                let done = matches!(&result, Ok(reply) if call_spec.expect.accepts(reply.status));
                let out_of_time = started.elapsed() + interval >= deadline;
                let retry_in = (!done && !out_of_time).then_some(interval);
                journal_attempt(ctx, &call_spec, attempt, attempt_started, &result, retry_in);
                match retry_in {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return (result, attempt),
                }
            }
        })?;
        event.insert("attempts".into(), json!(attempts));
        match last {
            Ok(reply) if call_spec.expect.accepts(reply.status) => {
                event.insert("status".into(), json!(reply.status));
                Ok((reply, attempts))
            }
            last => {
                let seen = match &last {
                    Ok(reply) => {
                        let excerpt = reply.excerpt();
                        let body = if excerpt.is_empty() {
                            String::new()
                        } else {
                            format!("; body: {excerpt}")
                        };
                        format!("last status {}{body}", reply.status_text())
                    }
                    Err(failure) => format!("last error: {}", failure.describe(call_spec.max_body)),
                };
                Err(host_error(ctx.redact(&format!(
                    "{what}: {} did not return {} within {} ({attempts} attempts; {seen})",
                    call_spec.label(),
                    call_spec.expect.describe(),
                    humantime::format_duration(deadline)
                ))))
            }
        }
    })?;
    Ok(match outcome {
        Outcome::Planned => planned_map(),
        Outcome::Done((reply, attempts)) => response_map(ctx, &call_spec, reply, attempts),
    })
}

/// The body of `get`, `post` and `request`: parse the call, then perform it.
#[allow(clippy::too_many_arguments)]
fn send(
    ctx: &HostContext,
    client: &Client,
    what: &'static str,
    action: &'static str,
    method: &str,
    url: &str,
    body: Dynamic,
    options: Map,
) -> HostResult<Map> {
    let spec = parse_call(
        ctx,
        what,
        action,
        method,
        url,
        body,
        Options::new(what, options),
        true,
    )?;
    call(ctx, client, &spec)
}

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    engine
        .register_type_with_name::<NotJson>("NotJson")
        .register_indexer_get(|value: &mut NotJson, key: &str| -> HostResult<Dynamic> {
            Err(value.error(key))
        })
        .register_indexer_get(|value: &mut NotJson, index: i64| -> HostResult<Dynamic> {
            Err(value.error(&format!("[{index}]")))
        })
        .register_fn("to_string", |_: &mut NotJson| {
            "(body is not JSON)".to_owned()
        })
        .register_fn("to_debug", |_: &mut NotJson| {
            "(body is not JSON)".to_owned()
        });

    let client = Rc::new(Client::default());
    let mut module = Module::new();
    let result = "`#{ status, headers, body, json, attempts, planned }`";
    let options_doc = "Options: `headers` (map), `bearer`, `query` (map), `timeout` (default 30s), `retries` (retries after the first attempt on\n\
                       connect errors, timeouts, 5xx, 429), `backoff` (first retry delay, default 250ms), `expect` (status, \"2xx\" or a list;\n\
                       default any 2xx), `read_only`, `max_body` (default 32MiB).";

    let docs_get =
        format!("GET a URL; returns {result}. Runs in dry runs (a read).\n{options_doc}");
    let (c, k) = (ctx.clone(), client.clone());
    add_fn(
        &mut module,
        "get",
        &["url: String", "Map"],
        &docs_get,
        move |url: &str| {
            send(
                &c,
                &k,
                "http::get",
                "get",
                "GET",
                url,
                Dynamic::UNIT,
                Map::new(),
            )
        },
    );
    let (c, k) = (ctx.clone(), client.clone());
    add_fn(
        &mut module,
        "get",
        &["url: String", "options: Map", "Map"],
        &docs_get,
        move |url: &str, options: Map| {
            send(
                &c,
                &k,
                "http::get",
                "get",
                "GET",
                url,
                Dynamic::UNIT,
                options,
            )
        },
    );

    let docs_post = format!(
        "POST a body (a map or array is sent as JSON, a string as is); returns {result}.\n\
         Planned in a dry run unless `read_only: true`.\n{options_doc}"
    );
    let (c, k) = (ctx.clone(), client.clone());
    add_fn(
        &mut module,
        "post",
        &["url: String", "body: Dynamic", "Map"],
        &docs_post,
        move |url: &str, body: Dynamic| {
            send(&c, &k, "http::post", "post", "POST", url, body, Map::new())
        },
    );
    let (c, k) = (ctx.clone(), client.clone());
    add_fn(
        &mut module,
        "post",
        &["url: String", "body: Dynamic", "options: Map", "Map"],
        &docs_post,
        move |url: &str, body: Dynamic, options: Map| {
            send(&c, &k, "http::post", "post", "POST", url, body, options)
        },
    );

    let docs_request = format!(
        "Any method (`\"PUT\"`, `\"DELETE\"`, `\"HEAD\"`, ...); `body` goes in the options. Returns {result}.\n\
         GET and HEAD run in dry runs; other methods are planned unless `read_only: true`.\n{options_doc}"
    );
    let (c, k) = (ctx.clone(), client.clone());
    add_fn(
        &mut module,
        "request",
        &["method: String", "url: String", "options: Map", "Map"],
        &docs_request,
        move |method: &str, url: &str, options: Map| {
            send(
                &c,
                &k,
                "http::request",
                "request",
                method,
                url,
                Dynamic::UNIT,
                options,
            )
        },
    );
    let (c, k) = (ctx.clone(), client.clone());
    add_fn(
        &mut module,
        "request",
        &["method: String", "url: String", "Map"],
        &docs_request,
        move |method: &str, url: &str| {
            send(
                &c,
                &k,
                "http::request",
                "request",
                method,
                url,
                Dynamic::UNIT,
                Map::new(),
            )
        },
    );

    let docs_wait = "Polls a URL (GET) until `expect` holds (default any 2xx) or the deadline passes; returns the last response.\n\
                     Options: `timeout` or `deadline` (default 2m), `interval` (default 2s), `attempt_timeout` (default 30s, never past\n\
                     the deadline), `headers`, `bearer`, `query`, `expect`, `max_body`, `read_only`, `method`.\n\
                     The error says how many attempts were made and the last status or error.";
    let (c, k) = (ctx.clone(), client);
    add_fn(
        &mut module,
        "wait_until",
        &["url: String", "options: Map", "Map"],
        docs_wait,
        move |url: &str, options: Map| wait_until(&c, &k, url, options),
    );
    install(engine, "http", module);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff_delay(Duration::from_millis(100), 0);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        let third = backoff_delay(Duration::from_millis(100), 2);
        assert!(
            third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
            "{third:?}"
        );
        assert!(backoff_delay(Duration::from_secs(1), 30) <= MAX_BACKOFF);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("100000"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn expect_accepts_codes_classes_and_lists() {
        assert!(Expect::Success.accepts(204));
        assert!(!Expect::Success.accepts(301));
        let expect = Expect::parse(
            "t",
            Some(Dynamic::from(vec![
                Dynamic::from(404_i64),
                Dynamic::from("5xx"),
            ])),
        )
        .unwrap();
        assert!(expect.accepts(404) && expect.accepts(503) && !expect.accepts(200));
        assert_eq!(expect.describe(), "404 or 5xx");
    }
}
