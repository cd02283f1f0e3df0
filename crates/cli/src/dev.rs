//! `statuslist dev`: the whole service on one machine, for trying it and for developing
//! it. A throwaway PostgreSQL (unless `DATABASE_URL` is set), the StatusLists of
//! `examples/` through the operator's reconcile core, a worker, and a demo issuer (a fresh
//! key, its JWKS served locally, registered as the client of every example).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use statuslist_devdb::PgServer;
use statuslist_format::SigningKey;
use statuslist_format::keys::jwks;
use statuslist_operator::core;
use statuslist_process::LogFormat;
use statuslist_store::{PoolSpec, Store, StoreConfig};
use statuslist_worker::config::WorkerArgs;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Use this database instead of starting a throwaway PostgreSQL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A directory of StatusList manifests to load (default: the built-in examples, the
    /// same as the repository's `examples/`).
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// The worker's address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen_addr: SocketAddr,
    /// The demo issuer's JWKS address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    issuer_addr: SocketAddr,
    /// Where the demo issuer's private key is written.
    #[arg(long, default_value = ".statuslist-dev")]
    dir: PathBuf,
}

fn step(msg: &str) {
    println!("==> {msg}");
}

/// The name to print in commands: how this binary was invoked.
fn program() -> String {
    std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .unwrap_or_else(|| "statuslist".into())
}

pub async fn run(args: DevArgs) -> Result<(), String> {
    let _telemetry = statuslist_process::init_tracing(LogFormat::Text, "statuslist")?;
    // Held until the end: dropping it stops the server and deletes its data.
    let mut server = None;
    let url = match &args.database_url {
        Some(url) => {
            step("using DATABASE_URL");
            url.clone()
        }
        None => {
            step("starting a throwaway PostgreSQL");
            let s = tokio::task::spawn_blocking(PgServer::start)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            println!("    PostgreSQL on 127.0.0.1:{} (removed on exit)", s.port());
            let url = s.url("postgres");
            server = Some(s);
            url
        }
    };
    let result = serve(&args, &url).await;
    if server.take().is_some() {
        step("stopped; the throwaway database is removed");
    }
    result
}

async fn serve(args: &DevArgs, url: &str) -> Result<(), String> {
    step("applying migrations");
    let store = Store::connect(&StoreConfig::new(url))
        .await
        .map_err(|e| e.to_string())?;

    let worker_listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .map_err(|e| format!("{}: {e}", args.listen_addr))?;
    let issuer_listener = tokio::net::TcpListener::bind(args.issuer_addr)
        .await
        .map_err(|e| format!("{}: {e}", args.issuer_addr))?;
    let worker_url = format!(
        "http://{}",
        worker_listener.local_addr().map_err(|e| e.to_string())?
    );
    let jwks_url = format!(
        "http://{}/jwks.json",
        issuer_listener.local_addr().map_err(|e| e.to_string())?
    );

    step("creating the demo issuer");
    let issuer = SigningKey::generate().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let key_path = args.dir.join("issuer.pem");
    crate::client::write_private(
        &key_path,
        &issuer.to_pkcs8_pem().map_err(|e| e.to_string())?,
    )?;
    let doc = serde_json::to_value(jwks([&issuer])).map_err(|e| e.to_string())?;
    let issuer_app = Router::new().route(
        "/jwks.json",
        get(move || std::future::ready(axum::Json(doc.clone()))),
    );
    tokio::spawn(async move { axum::serve(issuer_listener, issuer_app).await });

    let source = args.manifests.as_ref().map_or_else(
        || "the built-in examples".to_owned(),
        |d| d.display().to_string(),
    );
    step(&format!("loading StatusLists from {source}"));
    let pools: Vec<PoolSpec> =
        statuslist_operator::process::read_manifests(args.manifests.as_deref())?
            .into_iter()
            .map(|(mut pool, _)| {
                // The examples point at this machine: at the worker and demo issuer started here.
                pool.settings.base_uri = worker_url.clone();
                for i in &mut pool.issuers {
                    i.jwks_uri = jwks_url.clone();
                }
                pool
            })
            .collect();
    if pools.is_empty() {
        return Err(format!("no valid StatusList manifest in {source}"));
    }
    for pool in &pools {
        let report = core::reconcile_pool(&store, pool, statuslist_format::unix_now())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(c) = report.conflicts.first() {
            return Err(format!(
                "clientId {} of {} is held by {}",
                c.client_id, pool.name, c.held_by
            ));
        }
        println!(
            "    {} ({:?}): {} list(s), clients {}",
            pool.name,
            pool.settings.format,
            report.capacity.lists.len(),
            pool.issuers
                .iter()
                .map(|i| i.client_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // The operator's periodic pass.
    let reconciler = {
        let (store, pools) = (store.clone(), pools.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                for pool in &pools {
                    if let Err(e) =
                        core::reconcile_pool(&store, pool, statuslist_format::unix_now()).await
                    {
                        tracing::warn!(pool = %pool.name, error = %e, "reconcile failed");
                    }
                }
            }
        })
    };

    step(&format!("starting the worker on {worker_url}"));
    // The worker's own defaults, with what dev mode needs on top.
    let listen = worker_listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let worker_args = WorkerArgs::try_parse_from([
        "worker",
        "--database-url",
        url,
        "--listen-addr",
        &listen,
        "--generate-signing-key",
        "--worker-id",
        "dev",
        "--jwks-allow-http",
        // The demo issuer's JWKS is served on this machine.
        "--jwks-allow-cidr",
        "127.0.0.0/8,::1/128",
        "--jwks-refetch-interval-seconds",
        "5",
        "--log-format",
        "text",
    ])
    .map_err(|e| e.to_string())?;
    let state = worker_args.state().await.map_err(|e| e.to_string())?;
    state.store.wait_migrated().await;
    let worker = statuslist_worker::Worker::start(state.clone(), worker_args.zlib_level);
    let app = statuslist_worker::router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(worker_listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });

    // A demo entry in each pool, so the commands below have something to check.
    let program = program();
    let key = key_path.display().to_string();
    println!();
    println!("Ready. Try it (copy and paste):");
    for pool in &pools {
        let Some(client) = pool.issuers.first() else {
            continue;
        };
        let (uri, idx) = demo_issue(&worker_url, &issuer, &client.client_id).await?;
        println!();
        println!(
            "  # {} ({:?} list), client {}",
            pool.name, pool.settings.format, client.client_id
        );
        println!(
            "  {program} issue --url {worker_url} --key {key} --client-id {}",
            client.client_id
        );
        println!("  {program} check --uri {uri} --idx {idx}");
        if pool.settings.suspension {
            for change in ["suspend", "reinstate"] {
                println!(
                    "  {program} {change} --url {worker_url} --key {key} --client-id {} --uri {uri} --idx {idx}",
                    client.client_id
                );
                println!("  {program} check --uri {uri} --idx {idx}");
            }
        }
        println!(
            "  {program} revoke --url {worker_url} --key {key} --client-id {} --uri {uri} --idx {idx}",
            client.client_id
        );
        println!("  {program} check --uri {uri} --idx {idx}");
    }
    println!();
    println!(
        "Lists: {worker_url}/t/{{ID}} and {worker_url}/b/{{ID}}; keys: {worker_url}/.well-known/jwks.json. Ctrl-C stops everything."
    );

    statuslist_process::shutdown_signal().await;
    step("stopping");
    let _ = stop_tx.send(());
    let _ = http.await;
    reconciler.abort();
    worker.shutdown().await;
    drop(state);
    Ok(())
}

/// Issues one entry through the worker, as a client would.
async fn demo_issue(
    worker_url: &str,
    key: &SigningKey,
    client_id: &str,
) -> Result<(String, u64), String> {
    let jwt = crate::client::request_jwt(
        key,
        key.kid(),
        &crate::client::issue_claims(client_id, None),
    )?;
    let response = reqwest::Client::new()
        .post(format!("{worker_url}/issue"))
        .header("content-type", "application/jwt")
        .body(jwt)
        .send()
        .await
        .map_err(|e| format!("demo issuance: {e}"))?;
    let text = response
        .text()
        .await
        .map_err(|e| format!("demo issuance: {e}"))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| format!("demo issuance failed: {text}"))?;
    match (body["uri"].as_str(), body["idx"].as_u64()) {
        (Some(uri), Some(idx)) => Ok((uri.to_owned(), idx)),
        _ => Err(format!("demo issuance failed: {body}")),
    }
}
