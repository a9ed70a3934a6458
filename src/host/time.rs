//! `time::now()`, `time::parse(text)`, `time::age(ts)`: timestamps that compare with `==` and
//! `<`, print as RFC 3339 UTC, and ages (`.days`, `.hours`, `.minutes`, `.seconds` as floats) for
//! checks like "the oldest cache entry is within 14 days".

use super::{HostContext, add_fn, install};
use crate::options::{HostResult, host_error};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rhai::{Dynamic, Engine, Module};
use std::rc::Rc;

/// A point in time, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// A length of time (what `time::age` returns).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Age {
    pub seconds: f64,
}

/// Accepts RFC 3339, PostgreSQL's text form (`2025-01-02 03:04:05.123+00`), a naive date-time
/// (taken as UTC) or a date.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
        return Ok(Timestamp(ts.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(ts) = DateTime::parse_from_str(text, format) {
            return Ok(Timestamp(ts.with_timezone(&Utc)));
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(ts) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Timestamp(ts.and_utc()));
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Timestamp(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()));
    }
    Err(format!("cannot parse '{text}' as a timestamp (expected RFC 3339, e.g. 2025-11-15T12:00:00Z)"))
}

fn timestamp_of(value: &Dynamic) -> HostResult<Timestamp> {
    if let Some(ts) = value.clone().try_cast::<Timestamp>() {
        return Ok(ts);
    }
    if value.is_string() {
        return parse_timestamp(&value.to_string()).map_err(host_error);
    }
    Err(host_error(format!("expected a timestamp or RFC 3339 string, got {}", value.type_name())))
}

pub fn register(engine: &mut Engine, _ctx: &Rc<HostContext>) {
    engine
        .register_type_with_name::<Timestamp>("Timestamp")
        .register_fn("to_string", |ts: &mut Timestamp| ts.to_string())
        .register_fn("to_debug", |ts: &mut Timestamp| ts.to_string())
        .register_fn("==", |a: Timestamp, b: Timestamp| a == b)
        .register_fn("!=", |a: Timestamp, b: Timestamp| a != b)
        .register_fn("<", |a: Timestamp, b: Timestamp| a < b)
        .register_fn("<=", |a: Timestamp, b: Timestamp| a <= b)
        .register_fn(">", |a: Timestamp, b: Timestamp| a > b)
        .register_fn(">=", |a: Timestamp, b: Timestamp| a >= b)
        .register_fn("-", |a: Timestamp, b: Timestamp| Age { seconds: (a.0 - b.0).num_milliseconds() as f64 / 1000.0 })
        .register_get("unix", |ts: &mut Timestamp| ts.0.timestamp());
    engine
        .register_type_with_name::<Age>("Age")
        .register_get("days", |age: &mut Age| age.seconds / 86_400.0)
        .register_get("hours", |age: &mut Age| age.seconds / 3_600.0)
        .register_get("minutes", |age: &mut Age| age.seconds / 60.0)
        .register_get("seconds", |age: &mut Age| age.seconds)
        .register_fn("to_string", |age: &mut Age| format!("{:.0}s", age.seconds))
        .register_fn("to_debug", |age: &mut Age| format!("{:.3}s", age.seconds));

    let mut module = Module::new();
    add_fn(&mut module, "now", &["Timestamp"], "The current time (UTC).", || Timestamp(Utc::now()));
    add_fn(
        &mut module,
        "parse",
        &["text: String", "Timestamp"],
        "Parses RFC 3339 (or PostgreSQL's timestamp text) into a timestamp.",
        |text: &str| parse_timestamp(text).map_err(host_error),
    );
    add_fn(
        &mut module,
        "age",
        &["ts: Dynamic", "Age"],
        "How long ago `ts` (a timestamp or RFC 3339 string) was: `.days`, `.hours`, `.minutes`, `.seconds`.",
        |ts: Dynamic| -> HostResult<Age> {
            let ts = timestamp_of(&ts)?;
            Ok(Age { seconds: (Utc::now() - ts.0).num_milliseconds() as f64 / 1000.0 })
        },
    );
    install(engine, "time", module);
}
