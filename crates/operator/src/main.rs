//! `statuslist-operator`: the StatusList controller (until the `statuslist` CLI lands).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use statuslist_operator::controller::{Context, run};
use statuslist_operator::metrics::Metrics;
use statuslist_store::{Store, StoreConfig};

#[derive(Debug, Parser)]
#[command(name = "statuslist-operator", version)]
struct Args {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    listen_addr: SocketAddr,
    /// Reported in Events as the instance; defaults to POD_NAME.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let result = async {
        let store = Store::connect(&StoreConfig::new(&args.database_url))
            .await
            .map_err(|e| e.to_string())?;
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("Kubernetes client: {e}"))?;
        let ctx = Arc::new(Context::new(
            client,
            store,
            Metrics::default(),
            args.instance.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(args.listen_addr)
            .await
            .map_err(|e| format!("{}: {e}", args.listen_addr))?;
        let app = statuslist_operator::router(ctx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        tracing::info!(addr = %args.listen_addr, "operator running");
        run(ctx, shutdown()).await;
        Ok::<_, String>(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statuslist-operator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
