//! Turns the journal's typed events into OpenTelemetry spans, as they arrive: the run is the
//! root span (CI/CD pipeline conventions), each step a child of the step around it (task
//! conventions), each effect a span under its step (HTTP client, process and database
//! conventions). Events are already redacted, so every attribute is too. Times are taken when
//! an event arrives (sinks run as it is emitted); an effect starts `duration_ms` before its
//! event, since the gate journals it when it ends.

use crate::event::{Body, EffectEvent, Event, StepEnd};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// A step that has started and not ended.
struct OpenStep {
    id: SpanId,
    name: String,
    start: SystemTime,
}

/// The run's spans so far: what is open, and the ids that tie children to parents.
pub struct SpanBuilder {
    trace_id: TraceId,
    root_id: SpanId,
    scope: InstrumentationScope,
    run_start: SystemTime,
    script: String,
    run_id: String,
    steps: Vec<OpenStep>,
}

fn random_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>() | 1)
}

/// The CI/CD conventions' result values for a step or run outcome.
fn result_of(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "success",
        "skipped" => "skip",
        "cancelled" | "interrupted" => "cancellation",
        _ => "failure",
    }
}

impl SpanBuilder {
    /// `trace_id` is the run's (the one every `traceparent` carries), 32 hex digits.
    pub fn new(trace_id: &str, run_id: &str) -> Self {
        Self {
            trace_id: TraceId::from_hex(trace_id).unwrap_or(TraceId::INVALID),
            root_id: random_span_id(),
            scope: InstrumentationScope::builder("glow-run")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            run_start: SystemTime::now(),
            script: String::new(),
            run_id: run_id.to_owned(),
            steps: Vec::new(),
        }
    }

    fn span(
        &self,
        (id, parent): (SpanId, SpanId),
        kind: SpanKind,
        name: String,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    fn parent(&self) -> SpanId {
        self.steps.last().map_or(self.root_id, |step| step.id)
    }

    /// Takes one event; returns the span it completes, if any.
    pub fn event(&mut self, event: &Event) -> Option<SpanData> {
        let now = SystemTime::now();
        let step = event.step.clone().unwrap_or_default();
        match &event.body {
            Body::RunStart(start) => {
                self.run_start = now;
                self.script = start.script.clone();
                None
            }
            Body::StepStart(_) => {
                self.steps.push(OpenStep {
                    id: random_span_id(),
                    name: step,
                    start: now,
                });
                None
            }
            Body::StepEnd(end) => Some(self.step_end(step, end, now)),
            Body::Effect(effect) => Some(self.effect(effect, now)),
            _ => None,
        }
    }

    fn step_end(&mut self, name: String, event: &StepEnd, now: SystemTime) -> SpanData {
        // A skipped step ends without having started: a span of no length.
        let open = match self.steps.last() {
            Some(step) if step.name == name => self.steps.pop(),
            _ => None,
        };
        let (id, start) = open.map_or((random_span_id(), now), |step| (step.id, step.start));
        let outcome = event.outcome.as_str();
        let mut attributes = vec![
            KeyValue::new("cicd.pipeline.task.name", name.clone()),
            KeyValue::new("cicd.pipeline.task.run.result", result_of(outcome)),
            KeyValue::new("cicd.pipeline.task.type", "deploy"),
        ];
        if let Some(reason) = &event.reason {
            attributes.push(KeyValue::new("glow.step.skip_reason", reason.clone()));
        }
        let status = match event.error.as_deref() {
            Some(error) if outcome != "ok" => {
                attributes.push(KeyValue::new("error.type", "step_failed"));
                Status::error(error.to_owned())
            }
            _ => Status::Unset,
        };
        self.span(
            (id, self.parent()),
            SpanKind::Internal,
            name,
            (start, now),
            attributes,
            status,
        )
    }

    fn effect(&self, event: &EffectEvent, now: SystemTime) -> SpanData {
        let namespace = event.namespace.clone();
        let action = event.action.clone();
        let target = event.target.clone();
        let outcome = event.outcome.clone();
        let took = Duration::from_millis(event.duration_ms.unwrap_or(0));
        let start = now.checked_sub(took).unwrap_or(now);
        let id = event
            .extra_str("span_id")
            .and_then(|hex| SpanId::from_hex(hex).ok())
            .unwrap_or_else(random_span_id);
        let mut attributes = vec![
            KeyValue::new("glow.effect.namespace", namespace.clone()),
            KeyValue::new("glow.effect.action", action.clone()),
            KeyValue::new("glow.effect.outcome", outcome.clone()),
            KeyValue::new("glow.effect.read_only", event.read_only),
        ];
        let (kind, name) = match namespace.as_str() {
            "http" => {
                let method = event.args["method"].as_str().unwrap_or("GET").to_owned();
                attributes.push(KeyValue::new("http.request.method", method.clone()));
                attributes.push(KeyValue::new(
                    "url.full",
                    event.args["url"].as_str().unwrap_or(&target).to_owned(),
                ));
                if let Some(status) = event.extra_i64("status") {
                    attributes.push(KeyValue::new("http.response.status_code", status));
                }
                (SpanKind::Client, method)
            }
            "exec" => {
                attributes.push(KeyValue::new("process.command_line", target.clone()));
                if let Some(code) = event.extra_i64("code") {
                    attributes.push(KeyValue::new("process.exit.code", code));
                }
                let program = target.split_whitespace().next().unwrap_or("").to_owned();
                (SpanKind::Internal, format!("exec {program}"))
            }
            "sql" => {
                let database = event.args["database"].as_str().unwrap_or(&target);
                let system = if database.starts_with("sqlite") {
                    "sqlite"
                } else {
                    "postgresql"
                };
                attributes.push(KeyValue::new("db.system.name", system));
                attributes.push(KeyValue::new("db.operation.name", action.clone()));
                attributes.push(KeyValue::new("db.query.text", target.clone()));
                (SpanKind::Client, format!("{action} {system}"))
            }
            _ => {
                attributes.push(KeyValue::new("glow.effect.target", target.clone()));
                (SpanKind::Internal, format!("{namespace} {action}"))
            }
        };
        let status = match event.error.as_deref() {
            Some(error) if matches!(outcome.as_str(), "failed" | "denied" | "cancelled") => {
                attributes.push(KeyValue::new("error.type", outcome.clone()));
                Status::error(error.to_owned())
            }
            _ => Status::Unset,
        };
        self.span(
            (id, self.parent()),
            kind,
            name,
            (start, now),
            attributes,
            status,
        )
    }

    /// The root span, once the run's outcome is known.
    pub fn root(&self, outcome: &str, error: Option<&str>) -> SpanData {
        let attributes = vec![
            KeyValue::new("cicd.pipeline.name", self.script.clone()),
            KeyValue::new("cicd.pipeline.run.id", self.run_id.clone()),
            KeyValue::new("cicd.pipeline.result", result_of(outcome)),
            KeyValue::new("cicd.pipeline.action.name", "RUN"),
        ];
        let status = match error {
            Some(error) if outcome != "ok" => Status::error(error.to_owned()),
            _ => Status::Unset,
        };
        self.span(
            (self.root_id, SpanId::INVALID),
            SpanKind::Server,
            format!("RUN {}", self.script),
            (self.run_start, SystemTime::now()),
            attributes,
            status,
        )
    }
}
