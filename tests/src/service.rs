//! The service as its users run it, for tests of the whole system: `statuslist worker` and
//! `statuslist operator --manifests` as real processes, an issuer (a key made by
//! `statuslist keygen`, its JWKS served over HTTP), and the `statuslist issue` / `revoke`
//! / `check` commands as the clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Process, free_port};

/// The `statuslist` binary: `$STATUSLIST_BIN`, else the one built beside this test.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("STATUSLIST_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> -> target/<profile>/statuslist
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("statuslist"))
        .filter(|p| p.is_file())
        .expect("the statuslist binary (cargo build -p statuslist-cli, or set STATUSLIST_BIN)")
}

/// Runs `statuslist ARGS`: `(exit code, stdout, stderr)`, trimmed.
pub async fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run statuslist");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// An issuer: its key, and its JWKS served on a loopback port by a thread of its own
/// (so that a test blocked on something else cannot stall the worker's key fetch).
#[derive(Debug)]
pub struct Issuer {
    pub client_id: String,
    pub key: PathBuf,
    pub jwks_url: String,
    /// The head (request line and headers) of every request its JWKS endpoint received.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    _server: std::thread::JoinHandle<()>,
}

impl Issuer {
    pub async fn start(bin: &Path, client_id: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let (key, jwks) = (dir.path().join("key.pem"), dir.path().join("jwks.json"));
        let (code, _, err) =
            run(bin, &["keygen", "--key", path(&key), "--jwks", path(&jwks)]).await;
        assert_eq!(code, 0, "keygen: {err}");
        let doc = std::fs::read(&jwks).expect("jwks");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let requests = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let seen = requests.clone();
        let server = std::thread::spawn(move || {
            serve_json_to(listener, move |head| {
                seen.lock().expect("lock").push(head.to_owned());
                Some(doc.clone())
            })
        });
        Self {
            client_id: client_id.to_owned(),
            key,
            jwks_url: format!("http://{addr}/jwks.json"),
            requests,
            _dir: dir,
            _server: server,
        }
    }
}

/// Answers every HTTP request, each on a thread of its own, with what `answer` returns
/// as a JSON body; `None` closes the connection without a word (after whatever wait
/// `answer` chose: a hanging endpoint).
pub fn serve_json(
    listener: std::net::TcpListener,
    answer: impl Fn() -> Option<Vec<u8>> + Send + Sync + 'static,
) {
    serve_json_to(listener, move |_| answer());
}

/// [`serve_json`], `answer` given each request's head (request line and headers).
pub fn serve_json_to(
    listener: std::net::TcpListener,
    answer: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static,
) {
    use std::io::{Read, Write};
    let answer = std::sync::Arc::new(answer);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let answer = answer.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let end = request
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(request.len());
            let Some(body) = answer(&String::from_utf8_lossy(&request[..end])) else {
                return;
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        });
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A StatusList manifest: one pool, one issuer.
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub format: &'a str,
    pub base_uri: &'a str,
    pub entries_per_list: u64,
    pub min_free_entries: u64,
    pub lease_size: u64,
    pub deletion_policy: &'a str,
    pub client_id: &'a str,
    pub jwks_uri: &'a str,
}

impl<'a> Pool<'a> {
    /// The tests' usual pool: namespace `tests`, lists of 1,000, `Delete`.
    pub fn new(
        name: &'a str,
        format: &'a str,
        base_uri: &'a str,
        client_id: &'a str,
        jwks_uri: &'a str,
    ) -> Self {
        Self {
            name,
            namespace: "tests",
            format,
            base_uri,
            entries_per_list: 1000,
            min_free_entries: 100,
            lease_size: 100,
            deletion_policy: "Delete",
            client_id,
            jwks_uri,
        }
    }

    /// The manifest; `extra` is appended to the spec (indented).
    pub fn yaml(&self, extra: &str) -> String {
        let Self {
            name,
            namespace,
            format,
            base_uri,
            entries_per_list,
            min_free_entries,
            lease_size,
            deletion_policy,
            client_id,
            jwks_uri,
        } = self;
        format!(
            "apiVersion: statuslist.dev/v1alpha1
kind: StatusList
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  format: {format}
  baseUri: {base_uri}
  entriesPerList: {entries_per_list}
  minFreeEntries: {min_free_entries}
  leaseSize: {lease_size}
  deletionPolicy: {deletion_policy}
  issuers: [{{clientId: {client_id}, jwksUri: '{jwks_uri}'}}]
{extra}"
        )
    }
}

/// A StatusList manifest of one issuer; `extra` is appended to the spec (indented).
pub fn manifest(
    name: &str,
    format: &str,
    base_uri: &str,
    policy: &str,
    issuer: &Issuer,
    extra: &str,
) -> String {
    Pool {
        deletion_policy: policy,
        ..Pool::new(name, format, base_uri, &issuer.client_id, &issuer.jwks_url)
    }
    .yaml(extra)
}

/// A worker process on a free port (and its metrics on another): generated signing key,
/// http JWKS on loopback allowed.
#[derive(Debug)]
pub struct Worker {
    pub process: Process,
    pub url: String,
    pub addr: SocketAddr,
    /// Where its `/metrics` is served.
    pub metrics_url: String,
}

impl Worker {
    pub fn start(bin: &Path, name: &str, database_url: &str, extra: &[(&str, &str)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let listen = addr.to_string();
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut env = vec![
            ("DATABASE_URL", database_url),
            ("LISTEN_ADDR", listen.as_str()),
            ("METRICS_ADDR", metrics.as_str()),
            ("GENERATE_SIGNING_KEY", "true"),
            ("WORKER_ID", name),
            ("JWKS_ALLOW_HTTP", "true"),
            ("JWKS_ALLOW_CIDRS", "127.0.0.0/8,::1/128"),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "info"),
        ];
        env.extend_from_slice(extra);
        Self {
            process: Process::start(name, bin, &["worker"], &env),
            url: format!("http://{addr}"),
            addr,
            metrics_url: format!("http://{metrics}"),
        }
    }
}

/// The operator's reconcile core on a manifest directory.
pub fn operator_on_manifests(bin: &Path, name: &str, database_url: &str, dir: &Path) -> Process {
    operator_on_manifests_with(bin, name, database_url, dir, &[])
}

/// [`operator_on_manifests`] with more environment variables.
pub fn operator_on_manifests_with(
    bin: &Path,
    name: &str,
    database_url: &str,
    dir: &Path,
    extra: &[(&str, &str)],
) -> Process {
    let mut env = vec![("DATABASE_URL", database_url), ("RUST_LOG", "info")];
    env.extend_from_slice(extra);
    Process::start(name, bin, &["operator", "--manifests", path(dir)], &env)
}

/// The operator's reconcile core on a directory holding one manifest: Token pool `pool` of
/// `issuer`, its lists under `worker_url`, deletion policy Delete. The directory goes
/// with the returned handle, so keep both as long as the operator runs.
pub fn operator_for_pool(
    bin: &Path,
    database_url: &str,
    worker_url: &str,
    issuer: &Issuer,
) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("manifest directory");
    std::fs::write(
        dir.path().join("pool.yaml"),
        manifest("pool", "Token", worker_url, "Delete", issuer, ""),
    )
    .expect("write the manifest");
    let operator = operator_on_manifests(bin, "operator", database_url, dir.path());
    (operator, dir)
}

/// An HTTP answer: status (`None`: no answer), body.
/// The `kid`s of the worker's JWKS.
pub async fn jwks_kids(worker: &Worker) -> Vec<String> {
    let (_, body) = get(&format!("{}/.well-known/jwks.json", worker.url)).await;
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JWKS");
    doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

/// The `kid` of the token served at `uri` (`None` while it is not served).
pub async fn signed_by(uri: &str) -> Option<String> {
    use base64::Engine as _;
    let (status, body) = get(uri).await;
    if status != Some(200) {
        return None;
    }
    let header = body.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    v["kid"].as_str().map(str::to_owned)
}

pub async fn get(url: &str) -> (Option<u16>, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (Some(status), r.text().await.unwrap_or_default())
        }
        Err(e) => (None, e.to_string()),
    }
}

/// `statuslist COMMAND --url WORKER --key .. --client-id .. EXTRA`: stdout, or `Err(the
/// HTTP status, when there was one, and the message)`.
async fn signed(
    bin: &Path,
    command: &str,
    worker: &str,
    issuer: &Issuer,
    extra: &[&str],
) -> Result<String, (Option<u16>, String)> {
    let mut args = vec![
        command,
        "--url",
        worker,
        "--key",
        path(&issuer.key),
        "--client-id",
        &issuer.client_id,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(bin, &args).await;
    if code == 0 {
        Ok(out)
    } else {
        Err((status_of(&err), err))
    }
}

/// `statuslist issue`: `Ok((uri, idx))`.
pub async fn issue(
    bin: &Path,
    worker: &str,
    issuer: &Issuer,
) -> Result<(String, u64), (Option<u16>, String)> {
    let out = signed(bin, "issue", worker, issuer, &[]).await?;
    let body: serde_json::Value = serde_json::from_str(&out).expect("issue prints JSON");
    match (body["uri"].as_str(), body["idx"].as_u64()) {
        (Some(uri), Some(idx)) => Ok((uri.to_owned(), idx)),
        _ => Err((None, out)),
    }
}

/// `statuslist revoke`.
pub async fn revoke(
    bin: &Path,
    worker: &str,
    issuer: &Issuer,
    uri: &str,
    idx: u64,
) -> Result<(), (Option<u16>, String)> {
    let idx = idx.to_string();
    signed(
        bin,
        "revoke",
        worker,
        issuer,
        &["--uri", uri, "--idx", &idx],
    )
    .await
    .map(drop)
}

/// `statuslist check`: the entry's status as printed (`VALID`, `INVALID`, ...), or the error.
pub async fn check(bin: &Path, uri: &str, idx: u64) -> Result<String, String> {
    let idx = idx.to_string();
    let (code, out, err) = run(bin, &["check", "--uri", uri, "--idx", &idx]).await;
    match code {
        0 | 1 => Ok(out),
        _ => Err(err),
    }
}

/// The HTTP status in a client error line (`...: 503 Service Unavailable: ...`).
fn status_of(message: &str) -> Option<u16> {
    message.split(": ").find_map(|part| {
        part.split(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..600).contains(s))
    })
}

/// Issues until it succeeds (a pool just applied needs a moment to provision), up to
/// `timeout`.
pub async fn issue_eventually(
    bin: &Path,
    worker: &str,
    issuer: &Issuer,
    timeout: Duration,
) -> (String, u64) {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        match issue(bin, worker, issuer).await {
            Ok(found) => return found,
            Err(e) if tokio::time::Instant::now() >= until => {
                panic!("issuance did not succeed within {timeout:?}: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await, // polling a condition
        }
    }
}

/// Waits until `url`/readyz answers 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str, timeout: Duration) {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        let ready = http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{url} not ready within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
    }
}
