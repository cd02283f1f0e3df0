#![allow(dead_code)] // each test binary uses a different part

#[allow(unused_imports)] // each test binary uses some of them
pub use statuslist_testkit::{eventually, eventually_every};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use statuslist_format::unix_now;
use statuslist_format::{Bits, SigningKey};
use statuslist_store::testing::TestDb;
use statuslist_store::{IssuerSpec, ListFormat, PoolSettings, PoolSpec, Store, StoreConfig};
use statuslist_worker::jwks::{JwksCache, JwksSettings};
use statuslist_worker::leases::Leases;
use statuslist_worker::metrics::Metrics;
use statuslist_worker::served::ArtifactCache;
use statuslist_worker::signing::SigningKeys;
use statuslist_worker::{AppState, Worker, router};

/// How an issuer's JWKS endpoint behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    Normal,
    Hang,
    Garbage,
    Redirect,
    Huge,
    Down,
}

/// Each fake issuer's key and the behaviour of its JWKS endpoint.
type IssuerKeys = HashMap<String, (Arc<SigningKey>, JwksMode)>;

/// Fake issuers: each has a key and a JWKS endpoint whose behaviour tests can change.
#[derive(Clone)]
pub struct Issuers {
    pub addr: SocketAddr,
    keys: Arc<Mutex<IssuerKeys>>,
    pub fetches: Arc<Mutex<HashMap<String, usize>>>,
}

async fn jwks_endpoint(State(issuers): State<Issuers>, Path(client): Path<String>) -> Response {
    *issuers
        .fetches
        .lock()
        .expect("lock")
        .entry(client.clone())
        .or_default() += 1;
    let entry = issuers.keys.lock().expect("lock").get(&client).cloned();
    let Some((key, mode)) = entry else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match mode {
        JwksMode::Normal => {
            let mut jwk = serde_json::to_value(key.public_jwk()).expect("jwk");
            // Issuers pick their own kids: not the thumbprint.
            jwk["kid"] = json!(format!("{client}-key-1"));
            axum::Json(json!({"keys": [jwk]})).into_response()
        }
        JwksMode::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        JwksMode::Garbage => (StatusCode::OK, "{not json").into_response(),
        JwksMode::Redirect => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("/{client}-elsewhere/jwks"))],
        )
            .into_response(),
        JwksMode::Huge => (StatusCode::OK, vec![b' '; 50 * 1024 * 1024]).into_response(),
        JwksMode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

impl Issuers {
    pub async fn start(clients: &[&str]) -> Self {
        let keys = clients
            .iter()
            .map(|c| {
                (
                    (*c).to_owned(),
                    (
                        Arc::new(SigningKey::generate().expect("key")),
                        JwksMode::Normal,
                    ),
                )
            })
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuers = Self {
            addr: listener.local_addr().expect("addr"),
            keys: Arc::new(Mutex::new(keys)),
            fetches: Arc::default(),
        };
        let app = Router::new()
            .route("/{client}/jwks", get(jwks_endpoint))
            .with_state(issuers.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuers
    }

    pub fn jwks_uri(&self, client: &str) -> String {
        format!("http://{}/{client}/jwks", self.addr)
    }

    pub fn key(&self, client: &str) -> Arc<SigningKey> {
        self.keys.lock().expect("lock")[client].0.clone()
    }

    pub fn set_mode(&self, client: &str, mode: JwksMode) {
        self.keys
            .lock()
            .expect("lock")
            .get_mut(client)
            .expect("client")
            .1 = mode;
    }

    pub fn fetches(&self, client: &str) -> usize {
        self.fetches
            .lock()
            .expect("lock")
            .get(client)
            .copied()
            .unwrap_or(0)
    }

    pub fn kid(client: &str) -> String {
        format!("{client}-key-1")
    }

    /// A request JWT signed by `client`'s key with the given header and claims.
    pub fn sign(&self, client: &str, header: &Value, claims: &Value) -> String {
        self.sign_text(client, &header.to_string(), &claims.to_string())
    }

    /// Signs raw header and claims text (duplicate members, huge numbers, ...).
    pub fn sign_text(&self, client: &str, header: &str, claims: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let c = URL_SAFE_NO_PAD.encode(claims);
        let input = format!("{h}.{c}");
        let sig = self.key(client).sign_raw(input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    pub fn header(client: &str) -> Value {
        json!({"alg": "ES256", "typ": "JWT", "kid": Self::kid(client)})
    }

    pub fn issue_claims(client: &str) -> Value {
        let now = unix_now();
        json!({"iss": client, "iat": now, "jti": uuid::Uuid::new_v4().to_string(), "statusExpiry": now + 86_400})
    }

    pub fn revoke_claims(client: &str, uri: &str, idx: u64) -> Value {
        json!({"iss": client, "iat": unix_now(), "jti": uuid::Uuid::new_v4().to_string(), "uri": uri, "idx": idx})
    }

    /// A valid `/issue` request of `client`.
    pub fn issue_jwt(&self, client: &str) -> String {
        self.sign(client, &Self::header(client), &Self::issue_claims(client))
    }
}

/// One worker serving on a local port.
pub struct TestWorker {
    pub url: String,
    /// Where its `/metrics` is served (a port of its own).
    pub metrics_url: String,
    pub state: Arc<AppState>,
    worker: Option<Worker>,
}

/// How a [`TestWorker`] differs from the defaults.
pub struct WorkerOptions {
    pub jwks: JwksSettings,
    /// The JWKS egress policy; `None`: the one `jwks.allow_cidrs` gives.
    pub egress: Option<statuslist_worker::egress::Egress>,
    pub request_timeout: Duration,
    /// How long a request waits for a database connection before its 503.
    pub db_wait: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            jwks: JwksSettings {
                timeout: Duration::from_millis(500),
                allow_http: true,
                allow_cidrs: statuslist_worker::egress::loopback(),
                ..JwksSettings::default()
            },
            egress: None,
            request_timeout: statuslist_worker::REQUEST_TIMEOUT,
            db_wait: StoreConfig::new("").wait_timeout,
        }
    }
}

impl TestWorker {
    pub async fn start(db_url: &str, keys: Vec<SigningKey>, name: &str) -> Self {
        Self::start_with(db_url, keys, name, WorkerOptions::default()).await
    }

    pub async fn start_with(
        db_url: &str,
        keys: Vec<SigningKey>,
        name: &str,
        options: WorkerOptions,
    ) -> Self {
        let mut config = StoreConfig::new(db_url);
        config.max_connections = 8;
        config.wait_timeout = options.db_wait;
        let store = Store::connect(&config).await.expect("store");
        let metrics = Metrics::default();
        let jwks = match options.egress {
            Some(egress) => JwksCache::with_egress(options.jwks, egress),
            None => JwksCache::new(options.jwks),
        }
        .map(|mut jwks| {
            // Counted in the worker's metrics, as `config` wires it.
            jwks.failures = metrics.jwks_fetch_failures.clone();
            jwks
        });
        let state = Arc::new(AppState {
            leases: Arc::new(Leases::new(
                store.clone(),
                name.to_owned(),
                Duration::from_secs(30),
                metrics.clone(),
            )),
            store,
            jwks: jwks.expect("jwks client"),
            keys: Arc::new(SigningKeys::new(keys).expect("a key")),
            cache: Arc::new(ArtifactCache::default()),
            issuers: Arc::default(),
            metrics,
            summary: Default::default(),
            draining: Default::default(),
            request_timeout: options.request_timeout,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let metrics_url = format!("http://{}", metrics_listener.local_addr().expect("addr"));
        let metrics_app = statuslist_worker::metrics_router(state.clone());
        tokio::spawn(async move { axum::serve(metrics_listener, metrics_app).await });
        let worker = Worker::start(state.clone(), 9);
        Self {
            url,
            metrics_url,
            state,
            worker: Some(worker),
        }
    }

    pub async fn stop(mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown().await;
        }
    }
}

/// A database, the fake issuers `a` and `b`, a Token pool `tok` (client `a`) and a
/// Bitstring pool `bit` (client `b`), each with a list, and one worker.
pub struct Env {
    pub db: TestDb,
    pub issuers: Issuers,
    pub worker: TestWorker,
    pub http: reqwest::Client,
}

pub fn spec(
    name: &str,
    format: ListFormat,
    base_uri: &str,
    clients: &[(&str, String)],
    entries: u64,
    lease: u64,
) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        uid: None,
        generation: 1,
        settings: PoolSettings {
            format,
            bits: Bits::Two,
            base_uri: base_uri.into(),
            entries_per_list: entries,
            min_free_entries: 0,
            lease_size: lease,
            ttl_seconds: 300,
            validity_seconds: 3600,
            max_status_lifetime_seconds: 31_536_000,
            suspension: false,
        },
        issuers: clients
            .iter()
            .map(|(c, uri)| IssuerSpec {
                client_id: (*c).into(),
                jwks_uri: uri.clone(),
            })
            .collect(),
    }
}

impl Env {
    pub async fn start() -> Self {
        Self::with_token_list(10_000, 1_000).await
    }

    pub async fn with_token_list(entries: u64, lease: u64) -> Self {
        Self::build(
            TestDb::new().await,
            entries,
            lease,
            WorkerOptions::default(),
        )
        .await
    }

    pub async fn with_worker_options(options: WorkerOptions) -> Self {
        Self::build(TestDb::new().await, 10_000, 1_000, options).await
    }

    /// On a database server of its own, which the test may stop.
    pub async fn with_own_server() -> Self {
        Self::build(
            TestDb::with_own_server().await,
            10_000,
            1_000,
            WorkerOptions::default(),
        )
        .await
    }

    async fn build(db: TestDb, entries: u64, lease: u64, options: WorkerOptions) -> Self {
        let issuers = Issuers::start(&["a", "b", "c", "d"]).await;
        let worker = TestWorker::start_with(
            &db.url,
            vec![SigningKey::generate().expect("key")],
            "w1",
            options,
        )
        .await;
        let store = &db.store;
        store
            .apply_pool(&spec(
                "tok",
                ListFormat::Token,
                &worker.url,
                &[("a", issuers.jwks_uri("a")), ("c", issuers.jwks_uri("c"))],
                entries,
                lease,
            ))
            .await
            .expect("token pool");
        store
            .apply_pool(&spec(
                "bit",
                ListFormat::Bitstring,
                &worker.url,
                &[("b", issuers.jwks_uri("b"))],
                131_072,
                1_000,
            ))
            .await
            .expect("bitstring pool");
        // Client d's pool never gets a list: no capacity.
        store
            .apply_pool(&spec(
                "empty",
                ListFormat::Token,
                &worker.url,
                &[("d", issuers.jwks_uri("d"))],
                1_000,
                100,
            ))
            .await
            .expect("empty pool");
        store
            .ensure_capacity("tok")
            .await
            .expect("provision")
            .expect("token list");
        store
            .ensure_capacity("bit")
            .await
            .expect("provision")
            .expect("bitstring list");
        let http = reqwest::Client::builder()
            .no_gzip()
            .build()
            .expect("client");
        Self {
            db,
            issuers,
            worker,
            http,
        }
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        post_to(&self.http, &self.worker.url, path, content_type, body).await
    }

    /// A GET on the worker.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.worker.url))
            .send()
            .await
            .expect("get")
    }

    /// The worker's `/metrics` (on its metrics port).
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.worker.metrics_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Status code of a GET on the worker.
    pub async fn get_status(&self, path: &str) -> u16 {
        self.get(path).await.status().as_u16()
    }

    /// Body of a GET on the worker.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("body")
    }

    /// A valid `/issue` request of `client`, whatever the answer.
    pub async fn try_issue(&self, client: &str) -> (u16, Value) {
        self.post(
            "/issue",
            Some("application/jwt"),
            self.issuers.issue_jwt(client),
        )
        .await
    }

    pub async fn issue(&self, client: &str) -> (String, u64) {
        let (status, body) = self.try_issue(client).await;
        assert_eq!(status, 200, "{body}");
        (
            body["uri"].as_str().expect("uri").to_owned(),
            body["idx"].as_u64().expect("idx"),
        )
    }

    pub async fn revoke(&self, client: &str, uri: &str, idx: u64) -> (u16, Value) {
        let jwt = self.issuers.sign(
            client,
            &Issuers::header(client),
            &Issuers::revoke_claims(client, uri, idx),
        );
        self.post("/revoke", Some("application/jwt"), jwt).await
    }

    /// `POST /suspend` or `/reinstate` (`path`) of `client`, signed as `/revoke` is.
    pub async fn change_status(
        &self,
        path: &str,
        client: &str,
        uri: &str,
        idx: u64,
    ) -> (u16, Value) {
        let jwt = self.issuers.sign(
            client,
            &Issuers::header(client),
            &Issuers::revoke_claims(client, uri, idx),
        );
        self.post(path, Some("application/jwt"), jwt).await
    }

    /// Pools `tok` and `bit` with suspension enabled (as the operator writes a StatusList
    /// with `suspension: true`), at [`Env::start`]'s sizes; `empty` (client `d`) without.
    pub async fn allow_suspension(&self) {
        for (name, format, clients, entries) in [
            ("tok", ListFormat::Token, &["a", "c"][..], 10_000),
            ("bit", ListFormat::Bitstring, &["b"][..], 131_072),
        ] {
            let clients: Vec<(&str, String)> = clients
                .iter()
                .map(|c| (*c, self.issuers.jwks_uri(c)))
                .collect();
            let mut s = spec(name, format, &self.worker.url, &clients, entries, 1_000);
            s.settings.suspension = true;
            self.db.store.apply_pool(&s).await.expect("suspension on");
        }
    }

    /// Waits until the worker's notification connection is up (it clears the caches
    /// when it connects).
    pub async fn wait_listening(&self) {
        statuslist_testkit::eventually_every(
            Duration::from_millis(20),
            Duration::from_secs(30),
            "the worker listening",
            || async { (self.worker.state.store.health().is_up() == Some(true)).then_some(()) },
        )
        .await;
    }

    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.client().await
    }

    /// Rows in `entries` (for "nothing changed" checks).
    pub async fn entry_rows(&self) -> Vec<(String, i64, i16)> {
        self.sql()
            .await
            .query(
                "SELECT e.list_id, e.idx, coalesce(rv.status, 0::smallint) FROM entries e
                 LEFT JOIN revocations rv ON rv.list_id = e.list_id AND rv.idx = e.idx
                 ORDER BY e.list_id, e.idx",
                &[],
            )
            .await
            .expect("entries")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

/// A `POST` to the worker at `base` that declares a `Content-Length` of `declared` bytes
/// (as `application/jwt`) and sends none of them, then reads the answer: how a client
/// with a body over the limit meets a refusal on the declared length. (Sending such a
/// body whole races the server closing the connection once it has answered: the client
/// may get a broken pipe instead of the answer.)
pub async fn post_declared(base: &str, path: &str, declared: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/jwt\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8(answer).expect("utf8");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub async fn post_to(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = http.post(format!("{base}{path}")).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status != 200 && status != 202 || json.is_object() {
        assert!(
            ct.starts_with("application/json"),
            "{status} with content type {ct}: {text}"
        );
    }
    (status, json)
}

/// `n` milliseconds (a polling interval).
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
