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
//!   Which requests may be repeated at all (POST and PATCH only when never sent, unless
//!   `retry_unsafe`) and the `Idempotency-Key` header are in `http/retry.rs`.
//! - Every request carries a W3C `traceparent` whose trace id is the run's.
//! - The bearer value and headers that carry credentials are registered as secrets before
//!   anything is journaled, so they are redacted everywhere.

mod options;
mod response;
mod retry;
mod wait;

use options::*;
pub use response::NotJson;
use response::*;
use wait::wait_until;

use super::{Effect, HostContext, add_fn, install};
use crate::event::{Body, Extra, Log};
use crate::options::{HostResult, Options, host_error};
use crate::policy::{Policy, Subject};
use crate::script_error::ScriptError;
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

/// The parent id is the span id the gate gave this effect (its span in the exported trace).
fn traceparent(ctx: &HostContext) -> String {
    format!("00-{}-{}-01", ctx.trace_id, ctx.effect_span_id.borrow())
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
    if let Some(key) = &call.retry.key {
        builder = builder.header("idempotency-key", key);
    }
    let exchange = async {
        let mut response = builder
            .send()
            .await
            .map_err(|e| match classify(&e, timeout) {
                Failure::Other(why) if retry::is_reset(&e) => Failure::Reset(why),
                failure => failure,
            })?;
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
    let mut extra = Extra::from_iter([
        ("method".to_owned(), json!(call.method.as_str())),
        ("url".to_owned(), json!(call.url.as_str())),
        ("attempt".to_owned(), json!(attempt)),
        (
            "duration_ms".to_owned(),
            json!(started.elapsed().as_millis() as u64),
        ),
    ]);
    let outcome = match result {
        Ok(reply) => {
            extra.insert("status".into(), json!(reply.status));
            reply.status.to_string()
        }
        Err(failure) => {
            extra.insert("error".into(), json!(failure.describe(call.max_body)));
            extra.insert("failure".into(), json!(failure.short()));
            failure.short().to_string()
        }
    };
    if let Some(delay) = retry_in {
        extra.insert("retry_in_ms".into(), json!(delay.as_millis() as u64));
    }
    // Journaled as a `log` event (DESIGN.md fixes the event kinds) at level "trace", which the
    // terminal does not show; `event: "http_attempt"` tells attempts apart.
    extra.insert("event".into(), json!("http_attempt"));
    let message = format!("{} {} attempt {attempt}: {outcome}", call.method, call.url);
    ctx.record(Body::Log(Log {
        level: "trace".into(),
        message,
        extra,
    }));
}

/// Sends with retries; returns the last reply (whatever its status) and how many attempts it took.
fn perform(ctx: &HostContext, client: &Client, call: &Call) -> HostResult<(Reply, u32)> {
    let client = client.get(&ctx.policy)?;
    let trace = traceparent(ctx);
    let (result, attempts, withheld) = ctx.block_on_local(async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = send_once(&client, call, &trace, call.timeout).await;
            let retry_in = call.retry.delay(attempt, &result, &call.expect);
            journal_attempt(ctx, call, attempt, started, &result, retry_in);
            let Some(delay) = retry_in else {
                let withheld = call.retry.withheld(attempt, &result);
                return (result, attempt, withheld);
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
                    call.retry.retries,
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
    if let (Some(why), Ok(reply)) = (withheld, &result) {
        let status = reply.status_text();
        ctx.log(
            "warn",
            &format!("{} {}: {status}; {why}", call.what, call.label()),
        );
    }
    match result {
        Ok(reply) => Ok((reply, attempts)),
        Err(failure) => {
            let message = ctx.redact(&format!(
                "{}: {} failed{after}: {}{}",
                call.what,
                call.label(),
                failure.describe(call.max_body),
                withheld.map(|why| format!("; {why}")).unwrap_or_default()
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
    if call.retry.retries > 0 {
        detail["retries"] = json!(call.retry.retries);
    }
    if call.retry.key.is_some() {
        // Whether, not which: the key is fresh per run and the plan must match the live run.
        detail["idempotency_key"] = json!(true);
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
    ctx.perform(
        effect_for(call, json!({})),
        || Ok(planned_map()),
        |event| {
            let (reply, attempts) = perform(ctx, client, call)?;
            event.insert("status".into(), json!(reply.status));
            event.insert("attempts".into(), json!(attempts));
            if !call.expect.accepts(reply.status) {
                return Err(expectation_error(ctx, call, &reply, attempts));
            }
            Ok(response_map(ctx, call, reply, attempts))
        },
    )
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
    register_not_json(engine);
    let client = Rc::new(Client::default());
    let mut module = Module::new();
    let result = "`#{ status, headers, body, json, attempts, planned }`";
    let options_doc = "Options: `headers` (map), `bearer`, `query` (map), `timeout` (default 30s), `retries` (retries after the first attempt on\n\
                       connect errors, timeouts, 5xx, 429; POST/PATCH only when never sent unless `retry_unsafe: true`),\n\
                       `idempotent`, `retry_unsafe`, `idempotency_key` (true or a string: one `Idempotency-Key` for every attempt), `backoff` (first retry delay, default 250ms), `expect` (status, \"2xx\" or a list;\n\
                       default any 2xx), `read_only`, `max_body` (default 32MiB).";

    let docs = format!("GET a URL; returns {result}. Runs in dry runs (a read).\n{options_doc}");
    let get = sender(ctx, &client, "http::get", "get");
    let send = get.clone();
    add_fn(
        &mut module,
        "get",
        &["url: String", "Map"],
        &docs,
        move |url: &str| send("GET", url, Dynamic::UNIT, Map::new()),
    );
    let send = get;
    add_fn(
        &mut module,
        "get",
        &["url: String", "options: Map", "Map"],
        &docs,
        move |url: &str, options: Map| send("GET", url, Dynamic::UNIT, options),
    );

    let docs = format!(
        "POST a body (a map or array is sent as JSON, a string as is); returns {result}.\n\
         Planned in a dry run unless `read_only: true`.\n{options_doc}"
    );
    let post = sender(ctx, &client, "http::post", "post");
    let send = post.clone();
    add_fn(
        &mut module,
        "post",
        &["url: String", "body: Dynamic", "Map"],
        &docs,
        move |url: &str, body: Dynamic| send("POST", url, body, Map::new()),
    );
    let send = post;
    add_fn(
        &mut module,
        "post",
        &["url: String", "body: Dynamic", "options: Map", "Map"],
        &docs,
        move |url: &str, body: Dynamic, options: Map| send("POST", url, body, options),
    );

    let docs = format!(
        "Any method (`\"PUT\"`, `\"DELETE\"`, `\"HEAD\"`, ...); `body` goes in the options. Returns {result}.\n\
         GET and HEAD run in dry runs; other methods are planned unless `read_only: true`.\n{options_doc}"
    );
    let request = sender(ctx, &client, "http::request", "request");
    let send = request.clone();
    add_fn(
        &mut module,
        "request",
        &["method: String", "url: String", "options: Map", "Map"],
        &docs,
        move |method: &str, url: &str, options: Map| send(method, url, Dynamic::UNIT, options),
    );
    let send = request;
    add_fn(
        &mut module,
        "request",
        &["method: String", "url: String", "Map"],
        &docs,
        move |method: &str, url: &str| send(method, url, Dynamic::UNIT, Map::new()),
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

/// [`send`] for one script function (`http::get`, ...), shared by its overloads:
/// `(method, url, body, options)`.
fn sender(
    ctx: &Rc<HostContext>,
    client: &Rc<Client>,
    what: &'static str,
    action: &'static str,
) -> impl Fn(&str, &str, Dynamic, Map) -> HostResult<Map> + Clone + 'static {
    let (ctx, client) = (ctx.clone(), client.clone());
    move |method, url, body, options| send(&ctx, &client, what, action, method, url, body, options)
}

/// A response body that is not JSON: indexing its `json` says so instead of yielding `()`.
fn register_not_json(engine: &mut Engine) {
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
