//! The run as an OpenTelemetry trace, exported over OTLP/HTTP (protobuf) when an endpoint is
//! configured (see `config`). A sink on the journal turns events into spans (`spans`) and
//! queues them; a task on the run's runtime sends them in batches; the end of the run adds the
//! root span and waits for the last batch, bounded by the timeout. An export never fails the
//! run: what went wrong becomes one warning and a field of `run_end`.
//!
//! Why spans are built as `SpanData` and handed to the OTLP exporter directly rather than
//! through the SDK's tracer: the spans are reconstructed from events after the fact, with ids
//! fixed beforehand (the trace id is the run's, an HTTP effect's span id is the parent id its
//! request already carried in `traceparent`) and times taken from the events. The tracer API
//! would generate both. The exporter still does the protocol: protobuf encoding, headers,
//! retries on 429/5xx and connection errors, over the same reqwest and rustls as the rest.

mod config;
mod spans;

pub use config::Config;

use crate::event::{Event, RunEnd};
use crate::journal::Sink;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use serde_json::{Value, json};
use spans::SpanBuilder;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Spans waiting to be sent; beyond this they are dropped (and counted).
const QUEUE_CAP: usize = 4096;
/// Spans per export request.
const BATCH: usize = 512;
/// A batch that is not full is sent after this long.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What became of the trace: recorded in `run_end` and the report.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub endpoint: String,
    pub exported: u64,
    pub dropped: u64,
    pub error: Option<String>,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "exported": self.error.is_none(),
            "spans": self.exported,
            "dropped": self.dropped,
            "error": self.error,
        })
    }

    /// The one warning a failed or partial export gives, if any.
    pub fn warning(&self) -> Option<String> {
        match (&self.error, self.dropped) {
            (Some(error), dropped) => Some(format!(
                "the trace could not be exported to {}: {error}{} (the run itself is unaffected)",
                self.endpoint,
                if dropped > 0 {
                    format!("; {dropped} span(s) dropped from the full queue")
                } else {
                    String::new()
                }
            )),
            (None, 0) => None,
            (None, dropped) => Some(format!(
                "{dropped} span(s) of the trace were dropped: more than {QUEUE_CAP} were waiting to be sent to {}",
                self.endpoint
            )),
        }
    }
}

/// The result of the export task: spans sent, and the first error.
type Sent = (u64, Option<String>);

/// Spans waiting for the export task. The task is woken only when a batch is full (or the run
/// ends), not per span: a wake-up per effect would cost a thread switch on the run's path.
#[derive(Default)]
struct Queue {
    spans: Mutex<Vec<SpanData>>,
    full: Notify,
    closed: AtomicBool,
    dropped: AtomicU64,
}

impl Queue {
    fn push(&self, span: SpanData) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() >= QUEUE_CAP || self.closed.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        spans.push(span);
        if spans.len() == BATCH {
            self.full.notify_one();
        }
    }

    fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut *self.spans.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.full.notify_one();
    }
}

pub struct OtlpSink {
    config: Config,
    builder: Mutex<SpanBuilder>,
    queue: Arc<Queue>,
    task: Mutex<Option<tokio::task::JoinHandle<Sent>>>,
    runtime: tokio::runtime::Handle,
}

impl OtlpSink {
    /// Starts the export task on `runtime`. `trace_id` is the run's.
    pub fn start(
        config: Config,
        trace_id: &str,
        run_id: &str,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let queue = Arc::new(Queue::default());
        let task = runtime.spawn(export_loop(config.clone(), queue.clone()));
        Self {
            config,
            builder: Mutex::new(SpanBuilder::new(trace_id, run_id)),
            queue,
            task: Mutex::new(Some(task)),
            runtime,
        }
    }

    /// What `run_start` records: where the trace goes.
    pub fn describe(&self) -> Value {
        json!({ "endpoint": self.config.endpoint, "service": self.config.service_name })
    }

    /// Adds the root span, sends what is left and waits (at most the timeout) for the collector.
    /// Call on a thread that is not one of the runtime's (the engine thread).
    pub fn finish_run(&self, outcome: &str, error: Option<&str>) -> Summary {
        let root = self
            .builder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .root(outcome, error);
        self.queue.push(root);
        // Closing the queue tells the task to send the rest and stop.
        self.queue.close();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let timeout = self.config.timeout;
        let (exported, error) = match task {
            None => (0, Some("the export already finished".to_owned())),
            Some(task) => self.runtime.block_on(async move {
                match tokio::time::timeout(timeout, task).await {
                    Ok(Ok(sent)) => sent,
                    Ok(Err(e)) => (0, Some(format!("the export task failed: {e}"))),
                    Err(_) => (
                        0,
                        Some(format!(
                            "no answer within {}",
                            humantime::format_duration(timeout)
                        )),
                    ),
                }
            }),
        };
        Summary {
            endpoint: self.config.endpoint.clone(),
            exported,
            dropped: self.queue.dropped.load(Ordering::Relaxed),
            error,
        }
    }
}

impl Sink for OtlpSink {
    fn event(&self, event: &Event, _line: &str) {
        let span = self
            .builder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .event(event);
        if let Some(span) = span {
            self.queue.push(span);
        }
    }
}

fn exporter(config: &Config) -> Result<opentelemetry_otlp::SpanExporter, String> {
    // rustls needs its process-wide provider (ring, as everywhere in glow-run).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client = reqwest::Client::builder()
        .user_agent(concat!("glow-run/", env!("CARGO_PKG_VERSION")))
        .timeout(config.timeout);
    if config.endpoint.starts_with("http://") {
        // No TLS to a plain-HTTP collector: skip loading the system's CA store (milliseconds).
        client = client.tls_certs_only([]);
    }
    let client = client
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.timeout)
        .with_headers(config.headers.iter().cloned().collect())
        .build()
        .map_err(|e| e.to_string())?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build(),
    );
    Ok(exporter)
}

/// Sends spans in batches until the queue closes. After a failure it stops sending (an
/// unreachable collector would only make every batch wait) and reports the first error.
async fn export_loop(config: Config, queue: Arc<Queue>) -> Sent {
    let exporter = match exporter(&config) {
        Ok(exporter) => exporter,
        Err(error) => return (0, Some(error)),
    };
    let mut sent = 0_u64;
    loop {
        // A long run sends what it has every few seconds, so its trace fills in as it goes.
        let _ = tokio::time::timeout(FLUSH_EVERY, queue.full.notified()).await;
        let closed = queue.closed.load(Ordering::Acquire);
        let mut spans = queue.take();
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(BATCH));
            let count = spans.len() as u64;
            if let Err(error) = exporter.export(spans).await {
                return (sent, Some(error.to_string()));
            }
            sent += count;
            spans = rest;
        }
        if closed {
            return (sent, None);
        }
    }
}

/// The report's line about the trace, from `run_end`.
pub fn report_line(end: &RunEnd) -> Option<String> {
    let Some(otlp) = end.extra.get("otlp") else {
        return Some("not exported (no OTLP endpoint configured)".into());
    };
    let endpoint = otlp["endpoint"].as_str().unwrap_or("");
    Some(match otlp["error"].as_str() {
        Some(error) => format!("export to `{endpoint}` failed: {error}"),
        None => format!(
            "exported to `{endpoint}` ({} spans{})",
            otlp["spans"],
            match otlp["dropped"].as_u64() {
                Some(dropped) if dropped > 0 => format!(", {dropped} dropped"),
                _ => String::new(),
            }
        ),
    })
}
