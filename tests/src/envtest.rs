//! A real kube-apiserver and etcd for tests, found the way controller-runtime's envtest
//! finds them: the directory named by `KUBEBUILDER_ASSETS` holds `kube-apiserver` and
//! `etcd` (`setup-envtest use 1.33 -p path` prints one; `../shared/envtest/install.sh` in
//! this workplace).
//!
//! One server pair per test process, started on first use on free loopback ports in a
//! temporary directory, with a generated service-account key and a static admin token.
//! Both run under a shell that stops them and removes the directory when its standard
//! input closes; the write end of that pipe lives in this process, so when the process
//! exits for any reason (a panic, SIGKILL) the kernel closes it and nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use statuslist_crd::StatusList;
use tokio::sync::OnceCell;

use crate::process::free_port;

/// The admin user's bearer token (group `system:masters`), valid only for this server.
const ADMIN_TOKEN: &str = "envtest-admin-token";

/// A running kube-apiserver backed by its own etcd.
#[derive(Debug)]
pub struct ApiServer {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// A kubeconfig for the admin user, for processes under test (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// Directory with the server's files (certificates, logs).
    pub dir: PathBuf,
    /// The shell supervising both servers; its stdin is the lifeline.
    supervisor: Mutex<Child>,
}

static SERVER: OnceCell<Option<ApiServer>> = OnceCell::const_new();

/// The envtest binaries' directory, or why there is none.
pub fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .ok_or("KUBEBUILDER_ASSETS is not set (point it at a directory with kube-apiserver and etcd, e.g. `setup-envtest use 1.33 -p path`)")?;
    for bin in ["kube-apiserver", "etcd"] {
        if !dir.join(bin).is_file() {
            return Err(format!(
                "KUBEBUILDER_ASSETS ({}) has no {bin}",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// The process's API server, started on first use; `None` (with one line on stderr saying
/// why) when the envtest binaries are not available, so that callers skip.
pub async fn server() -> Option<&'static ApiServer> {
    SERVER
        .get_or_init(|| async {
            match assets() {
                Err(why) => {
                    eprintln!("skipped: no real kube-apiserver: {why}");
                    None
                }
                Ok(dir) => {
                    // Free ports are picked by binding and releasing them, so another
                    // process may take one first: start again on new ports then.
                    let mut attempt = 1;
                    loop {
                        match ApiServer::start(&dir).await {
                            Ok(server) => break Some(server),
                            Err(e) if attempt < 3 && e.contains("address already in use") => {
                                eprintln!("envtest: port taken, starting again: {e}");
                                attempt += 1;
                            }
                            Err(e) => panic!("envtest: {e}"),
                        }
                    }
                }
            }
        })
        .await
        .as_ref()
}

/// Skips the calling test (returns from it) when there is no API server.
#[macro_export]
macro_rules! require_apiserver {
    () => {
        match $crate::envtest::server().await {
            Some(server) => server,
            None => return,
        }
    };
}

/// Stops both servers and removes the directory once stdin closes.
const SUPERVISOR: &str = r#"
dir=$1; etcd=$2; apiserver=$3; shift 3
"$etcd" --data-dir "$dir/etcd" --listen-client-urls "$ETCD_CLIENT" --advertise-client-urls "$ETCD_CLIENT" \
  --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
  --initial-cluster "default=$ETCD_PEER" --unsafe-no-fsync >"$dir/etcd.log" 2>&1 &
e=$!
echo "$e" >"$dir/etcd.pid"
"$apiserver" "$@" >"$dir/kube-apiserver.log" 2>&1 &
a=$!
echo "$a" >"$dir/kube-apiserver.pid"
cat >/dev/null
kill $a 2>/dev/null; wait $a
kill $e 2>/dev/null; wait $e
rm -rf "$dir"
"#;

impl ApiServer {
    async fn start(assets: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("statuslist-envtest-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            // The supervisor removes it; a TempDir would race it.
            .keep();
        let (etcd_client, etcd_peer, port) = (free_port(), free_port(), free_port());
        let sa = statuslist_format::SigningKey::generate()
            .map_err(|e| format!("service-account key: {e}"))?;
        let sa_key = sa
            .to_pkcs8_pem()
            .map_err(|e| format!("service-account key: {e}"))?;
        let write = |name: &str, body: &str| {
            std::fs::write(dir.join(name), body).map_err(|e| format!("write {name}: {e}"))
        };
        write("sa.key", &sa_key)?;
        write("sa.pub", &sa.verifying_key().to_spki_pem())?;
        write(
            "tokens.csv",
            &format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n"),
        )?;
        let d = dir.display();
        let args = [
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={d}/certs"),
            format!("--token-auth-file={d}/tokens.csv"),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={d}/sa.pub"),
            format!("--service-account-signing-key-file={d}/sa.key"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--advertise-address=127.0.0.1".into(),
            "--endpoint-reconciler-type=none".into(),
        ];
        let supervisor = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("envtest")
            .arg(&dir)
            .arg(assets.join("etcd"))
            .arg(assets.join("kube-apiserver"))
            .args(&args)
            .env("ETCD_CLIENT", format!("http://127.0.0.1:{etcd_client}"))
            .env("ETCD_PEER", format!("http://127.0.0.1:{etcd_peer}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("kubeconfig");
        let server = Self {
            url,
            kubeconfig,
            dir: dir.clone(),
            // Its stdin stays open, unwritten, for the life of this process.
            supervisor: Mutex::new(supervisor),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    fn log_tail(&self, server: &str) -> String {
        let log =
            std::fs::read_to_string(self.dir.join(format!("{server}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let ca = self.dir.join("certs/apiserver.crt");
        loop {
            if let Ok(Some(status)) = self
                .supervisor
                .lock()
                .map(|mut c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "the servers exited ({status}):\n{}",
                    self.log_tail("kube-apiserver")
                ));
            }
            for server in ["etcd", "kube-apiserver"] {
                let pid = std::fs::read_to_string(self.dir.join(format!("{server}.pid")))
                    .unwrap_or_default();
                if !pid.trim().is_empty() && !Path::new(&format!("/proc/{}", pid.trim())).exists() {
                    return Err(format!("{server} exited:\n{}", self.log_tail(server)));
                }
            }
            if ca.is_file() {
                self.write_kubeconfig(&ca, ADMIN_TOKEN)?;
                if let Ok(client) = self.client().await {
                    let req = http::Request::get("/readyz")
                        .body(Vec::new())
                        .map_err(|e| e.to_string())?;
                    if client.request_text(req).await.is_ok_and(|t| t == "ok") {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready within 90 s at {}:\n{}",
                    self.url,
                    self.log_tail("kube-apiserver")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // polling a condition
        }
    }

    fn write_kubeconfig(&self, ca: &Path, token: &str) -> Result<(), String> {
        std::fs::write(&self.kubeconfig, self.kubeconfig_text(ca, token))
            .map_err(|e| format!("write kubeconfig: {e}"))
    }

    fn kubeconfig_text(&self, ca: &Path, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: user\n    namespace: default\ncurrent-context: envtest\n",
            self.url,
            ca.display()
        )
    }

    /// A kubeconfig file (in the server's directory) that authenticates with `token`.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(format!("kubeconfig-{name}"));
        std::fs::write(
            &path,
            self.kubeconfig_text(&self.dir.join("certs/apiserver.crt"), token),
        )
        .map_err(|e| format!("write kubeconfig: {e}"))?;
        Ok(path)
    }

    /// The client configuration of a kubeconfig file.
    pub async fn config_of(path: &Path) -> Result<Config, String> {
        let kc = Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())
    }

    /// An admin client (group `system:masters`) on the calling test's runtime.
    pub async fn client(&self) -> Result<Client, String> {
        let config = Self::config_of(&self.kubeconfig).await?;
        Client::try_from(config).map_err(|e| e.to_string())
    }

    /// An admin client; panics when the server cannot be reached.
    pub async fn admin(&self) -> Client {
        self.client().await.expect("admin client")
    }

    /// A fresh namespace `{prefix}-{random}` for one test (never deleted: envtest has no
    /// namespace controller, so deletion would never finish).
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .expect("namespace");
        Api::<Namespace>::all(self.admin().await)
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name
    }
}

/// Applies a CRD (server-side, as `kubectl apply --server-side`) and waits until it is
/// Established and served. Errors are the apiserver's own message.
pub async fn install_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().ok_or("the CRD has no name")?;
    api.patch(
        &name,
        &PatchParams::apply("statuslist-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| e.to_string())?;
    wait_established(client, &name).await
}

/// Waits for a CRD's `Established` condition.
pub async fn wait_established(client: &Client, name: &str) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = api.get(name).await.map_err(|e| e.to_string())?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("CRD {name} not Established within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
    }
}

pub use statuslist_testkit::eventually;

/// Waits until the StatusList `name` reports `Ready=True`.
pub async fn wait_ready(lists: &Api<StatusList>, name: &str, timeout: Duration) {
    eventually(timeout, &format!("{name}: Ready=True"), || async {
        let ready = lists
            .get(name)
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })
    .await
}
