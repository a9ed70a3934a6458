//! What a call asks for: the options map read into a `Call` (method, URL, headers, body,
//! timeout, retries, `expect`), with credentials registered as secrets before anything is
//! journaled.

use crate::host::{DEFAULT_HTTP_TIMEOUT, HostContext};
use crate::options::{HostResult, Options, host_error};
use reqwest::header::{HeaderName, HeaderValue};
use rhai::Dynamic;
use std::time::Duration;

use super::*;

/// Which statuses a call accepts.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// Any 2xx.
    Success,
    /// Exact statuses or classes ("2xx").
    Any(Vec<StatusPattern>),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum StatusPattern {
    Exact(u16),
    Class(u16),
}

impl Expect {
    pub(super) fn parse(what: &str, value: Option<Dynamic>) -> HostResult<Self> {
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

    pub(super) fn accepts(&self, status: u16) -> bool {
        match self {
            Self::Success => (200..300).contains(&status),
            Self::Any(patterns) => patterns.iter().any(|pattern| match pattern {
                StatusPattern::Exact(code) => *code == status,
                StatusPattern::Class(class) => status / 100 == *class,
            }),
        }
    }

    pub(super) fn describe(&self) -> String {
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
pub(super) struct Call {
    pub(super) what: &'static str,
    pub(super) action: &'static str,
    pub(super) method: reqwest::Method,
    pub(super) url: url::Url,
    pub(super) body: Option<Vec<u8>>,
    pub(super) content_type: Option<&'static str>,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) bearer: Option<String>,
    pub(super) timeout: Duration,
    pub(super) retry: retry::Retry,
    pub(super) expect: Expect,
    pub(super) read_only: bool,
    pub(super) max_body: u64,
}

impl Call {
    /// `METHOD URL`: the effect's target and how errors name the call.
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

/// Header names whose values are credentials.
pub(super) fn is_sensitive_header(name: &str) -> bool {
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
pub(super) fn register_credential(ctx: &HostContext, value: &str) {
    ctx.register_secret(value);
    if let Some((_, rest)) = value.split_once(' ') {
        ctx.register_secret(rest.trim());
    }
}

pub(super) fn parse_url(ctx: &HostContext, what: &str, text: &str) -> HostResult<url::Url> {
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
pub(super) fn encode_body(body: Dynamic) -> (Option<Vec<u8>>, Option<&'static str>) {
    if body.is_unit() {
        (None, None)
    } else if body.is_map() || body.is_array() {
        let value = crate::host::json::from_dynamic(&body);
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

pub(super) fn parse_max_body(what: &str, value: Option<Dynamic>) -> HostResult<u64> {
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
pub(super) fn parse_call(
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
    let retry = retry::Retry::parse(what, &mut options, &method, body.is_some(), allow_retries)?;
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
        retry,
        expect,
        read_only,
        max_body,
    })
}
