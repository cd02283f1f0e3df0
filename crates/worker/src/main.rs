use clap::Parser;
use statuslist_worker::config::{WorkerArgs, init_tracing, run, shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = WorkerArgs::parse();
    init_tracing(args.log_format);
    match run(args, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("statuslist-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
