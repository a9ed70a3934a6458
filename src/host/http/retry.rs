//! Which failed HTTP attempts are sent again. A retry must never repeat a request the server
//! may have acted on unless the script says that is safe:
//! - Idempotent requests (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE and DELETE without a body,
//!   PUT with or without one; or anything with `idempotent: true`) are retried on connect
//!   errors, timeouts, a connection reset before any response byte, 5xx and 429.
//! - Everything else (POST, PATCH, other methods, a GET or DELETE carrying a body) is retried
//!   only when it was never sent: the connection could not be made (refused, DNS, the TLS
//!   handshake's I/O). A timeout, a reset or a 5xx may follow a request the server processed,
//!   so those are retried only with `retry_unsafe: true`.
//! - `idempotency_key: true` (a fresh random key) or `idempotency_key: "KEY"` sends one
//!   `Idempotency-Key` header, the same on every attempt, so a server that honours it can
//!   tell a retry from a new request.

use super::{Expect, Failure, Reply, backoff_delay};
use crate::options::{HostResult, Options, host_error};
use rhai::Dynamic;
use std::time::Duration;

/// First retry delay; doubled per retry (with jitter), capped at `MAX_BACKOFF`.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(250);

/// The retry options of one call.
pub struct Retry {
    /// Retries after the first attempt.
    pub retries: u32,
    pub backoff: Duration,
    /// Safe to repeat after the server may have seen it.
    pub idempotent: bool,
    /// `retry_unsafe: true`: retry a non-idempotent request as if it were idempotent.
    pub retry_unsafe: bool,
    /// The `Idempotency-Key` header value, the same for every attempt.
    pub key: Option<String>,
}

impl Retry {
    /// Reads `retries`, `backoff`, `idempotent`, `retry_unsafe` and `idempotency_key`.
    pub fn parse(
        what: &str,
        options: &mut Options,
        method: &reqwest::Method,
        has_body: bool,
        allow_retries: bool,
    ) -> HostResult<Self> {
        use reqwest::Method;
        if !allow_retries {
            // `wait_until` polls on its own: these options are not its own (unknown to it).
            return Ok(Self {
                retries: 0,
                backoff: DEFAULT_BACKOFF,
                idempotent: true,
                retry_unsafe: false,
                key: None,
            });
        }
        let retries = match options.int("retries")? {
            None => 0,
            Some(n) => u32::try_from(n).ok().filter(|n| *n <= 100).ok_or_else(|| {
                host_error(format!(
                    "{what}: option 'retries' must be between 0 and 100, got {n}"
                ))
            })?,
        };
        let backoff = options.duration("backoff")?.unwrap_or(DEFAULT_BACKOFF);
        let safe_method = *method == Method::PUT
            || (!has_body
                && [
                    Method::GET,
                    Method::HEAD,
                    Method::OPTIONS,
                    Method::TRACE,
                    Method::DELETE,
                ]
                .contains(method));
        let idempotent = options.bool("idempotent")?.unwrap_or(safe_method);
        let retry_unsafe = options.bool("retry_unsafe")?.unwrap_or(false);
        let key = match options.value("idempotency_key") {
            None => None,
            Some(value) if value.is_bool() => value.as_bool().unwrap_or(false).then(new_key),
            Some(value) if value.is_string() => {
                let key = value.to_string();
                if key.is_empty() || key.chars().any(|c| c.is_control()) {
                    return Err(host_error(format!(
                        "{what}: option 'idempotency_key' must be true or a non-empty string without control characters"
                    )));
                }
                Some(key)
            }
            Some(other) => {
                return Err(host_error(format!(
                    "{what}: option 'idempotency_key' must be true or a string, got {}",
                    Dynamic::type_name(&other)
                )));
            }
        };
        Ok(Self {
            retries,
            backoff,
            idempotent,
            retry_unsafe,
            key,
        })
    }

    /// How long to wait before attempt `attempt + 1`, or `None` to stop with this result.
    pub fn delay(
        &self,
        attempt: u32,
        result: &Result<Reply, Failure>,
        expect: &Expect,
    ) -> Option<Duration> {
        if attempt > self.retries {
            return None;
        }
        let repeatable = self.idempotent || self.retry_unsafe;
        let backoff = backoff_delay(self.backoff, attempt - 1);
        match result {
            Ok(reply)
                if repeatable
                    && (reply.status >= 500 || reply.status == 429)
                    && !expect.accepts(reply.status) =>
            {
                Some(reply.retry_after.unwrap_or(backoff))
            }
            Ok(_) => None,
            // Never sent: always safe.
            Err(Failure::Connect(_)) => Some(backoff),
            Err(Failure::TimedOut(_) | Failure::Reset(_)) if repeatable => Some(backoff),
            Err(_) => None,
        }
    }

    /// Why a failed attempt was not retried although retries were asked for (for the error).
    pub fn withheld(&self, attempt: u32, result: &Result<Reply, Failure>) -> Option<&'static str> {
        let sent_maybe_acted_on = match result {
            Ok(reply) => reply.status >= 500 || reply.status == 429,
            Err(failure) => matches!(failure, Failure::TimedOut(_) | Failure::Reset(_)),
        };
        (attempt <= self.retries && !self.idempotent && !self.retry_unsafe && sent_maybe_acted_on)
            .then_some(
                "not retried: the server may have acted on it (pass `retry_unsafe: true`, ideally with `idempotency_key: true`, to retry)",
            )
    }
}

/// A random UUID (version 4 layout), for `idempotency_key: true`.
fn new_key() -> String {
    let bits = (rand::random::<u128>() & !(0xf000_u128 << 64) | (0x4000_u128 << 64))
        & !(0xc000_u128 << 48)
        | (0x8000_u128 << 48);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A connection closed or reset before any byte of the response arrived.
pub fn is_reset(error: &reqwest::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        let text = error.to_string();
        if text.contains("connection closed before message completed")
            || text.contains("connection reset")
        {
            return true;
        }
        current = error.source();
    }
    false
}
