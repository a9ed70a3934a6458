//! `http::wait_until(url, opts)`: poll with GET until `expect` holds or the deadline passes,
//! naming the attempts and the last status or error when it gives up.

use crate::host::HostContext;
use crate::options::{HostResult, Options, host_error};
use rhai::{Dynamic, Map};
use std::time::{Duration, Instant};

use super::*;

/// `wait_until`: poll with GET until `expect` holds or the deadline passes.
pub(super) fn wait_until(
    ctx: &HostContext,
    client: &Client,
    url: &str,
    options: Map,
) -> HostResult<Map> {
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
    ctx.perform(
        effect_for(&call_spec, extra),
        || Ok(planned_map()),
        |event| {
            let http = client.get(&ctx.policy)?;
            let trace = traceparent(ctx);
            let started = Instant::now();
            let (last, attempts) = ctx.block_on_local(async {
                let mut attempt = 0_u32;
                loop {
                    attempt += 1;
                    let remaining = deadline
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_millis(1));
                    let timeout = call_spec.timeout.min(remaining);
                    let attempt_started = Instant::now();
                    let result = send_once(&http, &call_spec, &trace, timeout).await;
                    let done =
                        matches!(&result, Ok(reply) if call_spec.expect.accepts(reply.status));
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
                    Ok(response_map(ctx, &call_spec, reply, attempts))
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
                        Err(failure) => {
                            format!("last error: {}", failure.describe(call_spec.max_body))
                        }
                    };
                    Err(host_error(ctx.redact(&format!(
                        "{what}: {} did not return {} within {} ({attempts} attempts; {seen})",
                        call_spec.label(),
                        call_spec.expect.describe(),
                        humantime::format_duration(deadline)
                    ))))
                }
            }
        },
    )
}
