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

use crate::journal::Sink;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use serde_json::{Value, json};
use spans::SpanBuilder;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

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
            (Some(error), _) => Some(format!(
                "the trace could not be exported to {}: {error} (the run itself is unaffected)",
                self.endpoint
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

pub struct OtlpSink {
    config: Config,
    builder: Mutex<SpanBuilder>,
    queue: Mutex<Option<mpsc::Sender<SpanData>>>,
    dropped: AtomicU64,
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
        let (sender, receiver) = mpsc::channel(QUEUE_CAP);
        let task = runtime.spawn(export_loop(config.clone(), receiver));
        Self {
            config,
            builder: Mutex::new(SpanBuilder::new(trace_id, run_id)),
            queue: Mutex::new(Some(sender)),
            dropped: AtomicU64::new(0),
            task: Mutex::new(Some(task)),
            runtime,
        }
    }

    /// What `run_start` records: where the trace goes.
    pub fn describe(&self) -> Value {
        json!({ "endpoint": self.config.endpoint, "service": self.config.service_name })
    }

    fn enqueue(&self, span: SpanData) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let sent = queue.as_ref().is_some_and(|q| q.try_send(span).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds the root span, sends what is left and waits (at most the timeout) for the collector.
    /// Call on a thread that is not one of the runtime's (the engine thread).
    pub fn finish_run(&self, outcome: &str, error: Option<&str>) -> Summary {
        let root = self
            .builder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .root(outcome, error);
        self.enqueue(root);
        // Closing the queue tells the task to send the rest and stop.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
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
            dropped: self.dropped.load(Ordering::Relaxed),
            error,
        }
    }
}

impl Sink for OtlpSink {
    fn event(&self, event: &Value) {
        let span = self
            .builder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .event(event);
        if let Some(span) = span {
            self.enqueue(span);
        }
    }
}

fn exporter(config: &Config) -> Result<opentelemetry_otlp::SpanExporter, String> {
    // rustls needs its process-wide provider (ring, as everywhere in glow-run).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent(concat!("glow-run/", env!("CARGO_PKG_VERSION")))
        .timeout(config.timeout)
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
async fn export_loop(config: Config, mut receiver: mpsc::Receiver<SpanData>) -> Sent {
    let exporter = match exporter(&config) {
        Ok(exporter) => exporter,
        Err(error) => return (0, Some(error)),
    };
    let mut sent = 0_u64;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let wanted = BATCH - batch.len();
        // A long run sends what it has every few seconds, so its trace fills in as it goes.
        let (open, due) =
            match tokio::time::timeout(FLUSH_EVERY, receiver.recv_many(&mut batch, wanted)).await {
                Ok(received) => (received > 0, false),
                Err(_) => (true, true),
            };
        if batch.len() >= BATCH || ((due || !open) && !batch.is_empty()) {
            let spans = std::mem::take(&mut batch);
            let count = spans.len() as u64;
            if let Err(error) = exporter.export(spans).await {
                return (sent, Some(error.to_string()));
            }
            sent += count;
        }
        if !open {
            return (sent, None);
        }
    }
}

/// The report's line about the trace, from `run_start` and `run_end`.
pub fn report_line(events: &[Value]) -> Option<String> {
    let end = events.iter().rev().find(|e| e["kind"] == "run_end")?;
    let otlp = &end["otlp"];
    if otlp.is_null() {
        return Some("not exported (no OTLP endpoint configured)".into());
    }
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
