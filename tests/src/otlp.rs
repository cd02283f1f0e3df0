//! An OTLP/HTTP trace receiver for tests: what an OpenTelemetry Collector's `otlp`
//! receiver does with `POST /v1/traces` (protobuf `ExportTraceServiceRequest`, decoded
//! with the protocol's own generated types), keeping every span it receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One span as received: ids in lowercase hex (the parent empty for a root).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// Server 2, client 3 (OTLP `SpanKind`).
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: BTreeMap<String, String>,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
}

impl Span {
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns.saturating_sub(self.start_ns))
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver: a server on a loopback port, and what it has received.
#[derive(Debug)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT`: what `OTEL_EXPORTER_OTLP_ENDPOINT` names.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Requests that were not a decodable trace export.
    rejected: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    out
}

impl Receiver {
    pub async fn start() -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode, header};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
        let (kept, refused) = (spans.clone(), rejected.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (kept, refused) = (kept.clone(), refused.clone());
                async move {
                    let content_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let decoded = (content_type == "application/x-protobuf")
                        .then(|| ExportTraceServiceRequest::decode(body.as_ref()).ok())
                        .flatten();
                    let Some(request) = decoded else {
                        refused
                            .lock()
                            .expect("lock")
                            .push(format!("{content_type}, {} bytes", body.len()));
                        return (StatusCode::BAD_REQUEST, Vec::new());
                    };
                    kept.lock().expect("lock").extend(spans_of(request));
                    (
                        StatusCode::OK,
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            spans,
            rejected,
            server,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("lock").clone()
    }

    /// Requests refused as not an OTLP protobuf trace export.
    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lock().expect("lock").clone()
    }

    /// Waits until `found` picks something out of the spans received, up to `timeout`.
    pub async fn wait_for<T>(&self, timeout: Duration, found: impl Fn(&[Span]) -> Option<T>) -> T {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = found(&self.spans()) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "not received within {timeout:?}; received: {:#?}",
                self.spans()
                    .iter()
                    .map(|s| (&s.service, &s.name, &s.trace_id))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
        }
    }
}
