//! `statuslist`: one binary for the service (`operator`, `worker`, `dev`) and its users
//! (`issue`, `revoke`, `check`, `keygen`, `crd`).

mod dev;
mod dev_issuer;

use statuslist_cli::client;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "statuslist",
    version,
    about = "Credential status lists: IETF Token Status List and W3C Bitstring Status List"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the StatusList controller (against the Kubernetes API, or on manifest files).
    Operator(statuslist_operator::process::OperatorArgs),
    /// Run a worker: /issue, /revoke, the published lists, the publisher.
    Worker(Box<statuslist_worker::config::WorkerArgs>),
    /// Run everything on this machine: database, examples, worker, a demo issuer.
    Dev(dev::DevArgs),
    /// Print the StatusList CRD as YAML.
    Crd {
        /// As the chart's template (`charts/statuslist/templates/crd.yaml`).
        #[arg(long)]
        helm: bool,
    },
    /// Ask a service for a status list entry (signs the request JWT).
    Issue(client::IssueArgs),
    /// Revoke an entry (signs the request JWT).
    Revoke(client::RevokeArgs),
    /// Suspend an entry, in a pool with `suspension: true` (signs the request JWT).
    Suspend(client::RevokeArgs),
    /// Reinstate a suspended entry (signs the request JWT).
    Reinstate(client::RevokeArgs),
    /// Fetch a list, verify it against the service's JWKS, print the entry's status.
    /// Exit code: 0 VALID, 1 any other status, 2 error.
    Check(client::CheckArgs),
    /// The chart's pre-delete guard: fails, naming them, while a StatusList of the
    /// release exists (and keeps the release deployed).
    UninstallCheck(statuslist_operator::process::UninstallCheckArgs),
    /// A demo issuer for development clusters: serves its JWKS, signs and forwards
    /// `/issue` and `/revoke` to the service.
    DevIssuer(dev_issuer::DevIssuerArgs),
    /// Generate an ES256 key: PKCS#8 PEM and its public JWKS.
    Keygen {
        /// Where to write the private key (PEM); stdout when absent. Not with
        /// `--pkcs11-module`: the key is made in the token and never leaves it.
        #[arg(long, conflicts_with = "pkcs11_module")]
        key: Option<PathBuf>,
        /// Where to write the public JWKS; stdout when absent.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Generate the key in a PKCS#11 token instead (sensitive, not extractable):
        /// the module (shared library) to load.
        #[arg(long, env = "PKCS11_MODULE", requires_all = ["pkcs11_token_label", "pkcs11_pin_file", "label"])]
        pkcs11_module: Option<PathBuf>,
        /// The token's label.
        #[arg(long, env = "PKCS11_TOKEN_LABEL")]
        pkcs11_token_label: Option<String>,
        /// A file holding the token's user PIN.
        #[arg(long, env = "PKCS11_PIN_FILE")]
        pkcs11_pin_file: Option<PathBuf>,
        /// The new key's label: the key prefix and something that sorts after the labels
        /// already there (a date: `statuslist-2027-01`), since the label sorting last signs.
        #[arg(long)]
        label: Option<String>,
        /// The label prefix of the service's keys.
        #[arg(long, env = "PKCS11_KEY_PREFIX", default_value = statuslist_pkcs11::DEFAULT_PREFIX)]
        pkcs11_key_prefix: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Operator(args) => statuslist_operator::process::operator(args).await,
        Command::Worker(args) => {
            match statuslist_process::init_tracing(args.log_format, "statuslist-worker") {
                Ok(telemetry) => {
                    let result = statuslist_worker::config::run(
                        *args,
                        statuslist_process::shutdown_signal(),
                    )
                    .await
                    .map_err(|e| e.to_string());
                    telemetry.shutdown(std::time::Duration::from_secs(5)).await;
                    result
                }
                Err(e) => Err(e),
            }
        }
        Command::Dev(args) => dev::run(args).await,
        Command::Crd { helm } => {
            if helm {
                print!("{}", statuslist_crd::crd_helm_template());
            } else {
                print!("{}", statuslist_crd::crd_yaml());
            }
            Ok(())
        }
        Command::Issue(args) => client::issue(args).await,
        Command::Revoke(args) => client::revoke(args).await,
        Command::Suspend(args) => client::change_status(args, false).await,
        Command::Reinstate(args) => client::change_status(args, true).await,
        Command::Check(args) => match client::check(args).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Keygen {
            key: _,
            jwks,
            pkcs11_module: Some(module),
            pkcs11_token_label,
            pkcs11_pin_file,
            label,
            pkcs11_key_prefix,
        } => client::keygen_in_token(
            &statuslist_pkcs11::TokenConfig {
                module,
                token_label: pkcs11_token_label.unwrap_or_default(),
                pin_file: pkcs11_pin_file.unwrap_or_default(),
                key_prefix: pkcs11_key_prefix,
                sessions: 1,
                sign_timeout: std::time::Duration::from_secs(30),
            },
            &label.unwrap_or_default(),
            jwks,
        ),
        Command::Keygen { key, jwks, .. } => client::keygen(key, jwks),
        Command::UninstallCheck(args) => statuslist_operator::process::uninstall_check(args).await,
        Command::DevIssuer(args) => dev_issuer::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statuslist: {e}");
            ExitCode::from(2)
        }
    }
}
