//! `statuslist operator` as a real process against an envtest API server.

use std::path::Path;

use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::ApiServer;
use statuslist_tests::process::{Process, free_port};

/// An operator in Kubernetes mode watching `ns` (its Lease there too), named `name`
/// (`POD_NAME`), with `extra` environment on top.
pub fn operator(
    server: &ApiServer,
    db: &TestDb,
    ns: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Process {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("KUBECONFIG", server.kubeconfig.to_str().expect("path")),
        ("DATABASE_URL", db.url.as_str()),
        ("LISTEN_ADDR", listen.as_str()),
        ("WATCH_NAMESPACE", ns),
        ("POD_NAMESPACE", ns),
        ("POD_NAME", name),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    Process::start(
        name,
        Path::new(env!("CARGO_BIN_EXE_statuslist")),
        &["operator"],
        &env,
    )
}
