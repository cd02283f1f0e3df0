//! OpenTelemetry tracing: the process's `tracing` spans exported over OTLP (HTTP/protobuf),
//! off unless an endpoint is configured, by the standard variables only:
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is): turns export on;
//!   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keep it off;
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (the service name
//!   defaults to the process's role, `statuslist-worker` or `statuslist-operator`);
//! - `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`: the sampler (default
//!   `parentbased_always_on`: an issuer's `traceparent` decides);
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`: the exporter's requests;
//! - `OTEL_BSP_MAX_QUEUE_SIZE` (2048), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512),
//!   `OTEL_BSP_SCHEDULE_DELAY` (5000 ms), `OTEL_BSP_EXPORT_TIMEOUT` (30000 ms): the queue.
//!
//! Export never slows or fails a request: a finished span is put on a bounded queue
//! without waiting (a full queue drops it) and a task of its own sends the batches. Every
//! span not exported is counted (`statuslist_trace_spans_dropped_total{reason}`), every
//! one exported too (`statuslist_trace_spans_exported_total`). The SDK's own batch
//! processor does the same but keeps its drop count to itself (a log line at shutdown),
//! hence the processor here.
//!
//! W3C Trace Context: [`set_remote_parent`] continues an issuer's `traceparent` in a
//! request's span; [`inject_current`] sends the current span's on an outgoing request.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether spans are exported (set once at start): the propagation helpers do nothing
/// otherwise.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Why a span was not exported.
const QUEUE_FULL: &str = "queue_full";
const EXPORT_FAILED: &str = "export_failed";
const REASONS: [&str; 2] = [QUEUE_FULL, EXPORT_FAILED];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Default)]
struct Counters {
    exported: Counter,
    dropped: Family<ReasonLabel, Counter>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| {
    let counters = Counters::default();
    for reason in REASONS {
        let _ = counters.dropped.get_or_create(&ReasonLabel { reason });
    }
    counters
});

/// Registers the export counters in a process's registry (the worker's `/metrics`, under
/// its `statuslist` prefix; the operator's, under `statuslist_operator`):
/// `trace_spans_exported_total` and `trace_spans_dropped_total{reason}`. They stay at 0
/// while export is off.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "trace_spans_exported",
        "Spans sent to the OTLP endpoint and accepted",
        COUNTERS.exported.clone(),
    );
    registry.register(
        "trace_spans_dropped",
        "Spans not exported: queue_full (the export queue was full), export_failed (the endpoint refused them or did not answer in time)",
        COUNTERS.dropped.clone(),
    );
}

fn dropped(reason: &'static str, n: usize) {
    COUNTERS
        .dropped
        .get_or_create(&ReasonLabel { reason })
        .inc_by(n as u64);
}

/// The export queue's settings (the SDK's batch span processor variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub scheduled_delay: Duration,
    pub export_timeout: Duration,
}

impl Settings {
    /// What the environment asks for: `Ok(None)` when export is off, an error naming the
    /// variable for a value that cannot be used (the process refuses to start, rather
    /// than run without the traces it was asked for).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={other}: only otlp (or none) is supported"
                ));
            }
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = set(name).filter(|p| p.trim() != "http/protobuf") {
                return Err(format!(
                    "{name}={p}: only http/protobuf is supported (OTLP over HTTP)"
                ));
            }
        }
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match set(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}={v}: a positive integer is expected")),
            }
        };
        let max_queue_size = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)? as usize;
        Ok(Some(Self {
            max_queue_size,
            // Never more than the queue holds (as the SDK does).
            max_export_batch_size: (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)? as usize)
                .min(max_queue_size),
            scheduled_delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            export_timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?),
        }))
    }
}

/// What the export task receives. Nearly every message is a span: boxing it would cost an
/// allocation per span to shrink the rare flush.
#[allow(clippy::large_enum_variant)]
enum Message {
    Span(SpanData),
    /// Export everything queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// Puts each finished, sampled span on the export queue, never waiting.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<Message>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Message::Span(span)).is_err() {
            // Full, or the export task is gone (shutting down): not exported either way.
            dropped(QUEUE_FULL, 1);
        }
    }

    /// Flushing waits for the export task: [`Telemetry::shutdown`] does it, asynchronously
    /// (blocking here would block a runtime thread the task may need).
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends the queue's spans in batches of at most `max_export_batch_size`, a batch
/// leaving when full or `scheduled_delay` after its first span.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Message>,
    settings: Settings,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(settings.max_export_batch_size);
    while let Some(first) = rx.recv().await {
        let mut flush = None;
        match first {
            Message::Span(span) => batch.push(span),
            Message::Flush(done) => flush = Some(done),
        }
        let deadline = tokio::time::Instant::now() + settings.scheduled_delay;
        while flush.is_none() && batch.len() < settings.max_export_batch_size {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(Message::Span(span)) => batch.push(span),
                    Some(Message::Flush(done)) => flush = Some(done),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if flush.is_some() {
            // Everything queued before the flush was asked for.
            while let Ok(Message::Span(span)) = rx.try_recv() {
                batch.push(span);
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(settings.max_export_batch_size));
            let sending = std::mem::replace(&mut batch, rest);
            send(&exporter, sending, settings.export_timeout, &mut failing).await;
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    timeout: Duration,
    failing: &mut bool,
) {
    let n = batch.len();
    let error = match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(())) => {
            COUNTERS.exported.inc_by(n as u64);
            if std::mem::take(failing) {
                tracing::info!("trace export works again");
            }
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {timeout:?}"),
    };
    dropped(EXPORT_FAILED, n);
    // Once per failing period, not once per batch.
    if !std::mem::replace(failing, true) {
        tracing::warn!(error = %error, "trace export failing: spans are dropped (statuslist_trace_spans_dropped_total) until the OTLP endpoint answers");
    }
}

/// The exporting side of the tracing set-up, held by the process until it stops.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    queue: Option<mpsc::Sender<Message>>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is queued (waiting at most `limit`), then stops exporting.
    pub async fn shutdown(self, limit: Duration) {
        if let Some(queue) = &self.queue {
            let (done, finished) = oneshot::channel();
            if queue.send(Message::Flush(done)).await.is_ok() {
                let _ = tokio::time::timeout(limit, finished).await;
            }
        }
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// The tracer provider and its export task (spawned on the current Tokio runtime), with
/// `service` as the service name unless the environment names one.
pub(crate) fn start(
    settings: Settings,
    service: &str,
) -> Result<(Telemetry, opentelemetry_sdk::trace::Tracer), String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OpenTelemetry exporter: {e}"))?;
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(service.to_owned());
    }
    if let Ok(instance) = std::env::var("HOSTNAME") {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance,
        ));
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    exporter.set_resource(&resource);
    let (tx, rx) = mpsc::channel(settings.max_queue_size);
    tokio::spawn(export(exporter, rx, settings));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue { tx: tx.clone() })
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("statuslist");
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        Telemetry {
            provider: Some(provider),
            queue: Some(tx),
        },
        tracer,
    ))
}

/// Whether this process exports spans (its request spans then carry the OpenTelemetry
/// fields, which stay out of the log otherwise).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// Makes the remote span of an incoming request's `traceparent` (and `tracestate`) the
/// parent of `span`, which must not have been entered yet. Nothing when export is off or
/// the request carries none (the span starts a trace of its own).
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = PROPAGATOR.extract(&HeaderExtractor(headers));
    let _ = span.set_parent(cx);
}

/// Adds the current span's `traceparent` (and `tracestate`) to an outgoing request's
/// headers. Nothing when export is off.
pub fn inject_current(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    PROPAGATOR.inject_context(&cx, &mut HeaderInjector(headers));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(Settings::from_env(env(&[])), Ok(None));
        assert_eq!(
            Settings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Ok(None)
        );
        let on = Settings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]))
            .expect("valid")
            .expect("on");
        assert_eq!(on.max_queue_size, 2048);
        assert_eq!(on.max_export_batch_size, 512);
        assert_eq!(on.scheduled_delay, Duration::from_secs(5));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                Settings::from_env(env(&[
                    (
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                        "http://c:4318/v1/traces"
                    ),
                    off
                ])),
                Ok(None),
                "{off:?}"
            );
        }
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        for (bad, names) in [
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            ),
            (
                ("OTEL_TRACES_EXPORTER", "zipkin"),
                "OTEL_TRACES_EXPORTER=zipkin",
            ),
            (
                ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
                "OTEL_BSP_MAX_QUEUE_SIZE=0",
            ),
            (
                ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
                "OTEL_BSP_SCHEDULE_DELAY=soon",
            ),
        ] {
            let err = Settings::from_env(env(&[endpoint, bad])).expect_err("refused");
            assert!(err.starts_with(names), "{err}");
        }
        let small = Settings::from_env(env(&[
            endpoint,
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]))
        .expect("valid")
        .expect("on");
        assert_eq!(small.max_export_batch_size, 10);
    }
}
