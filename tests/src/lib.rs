//! Harness for the tests of the whole system (`tests/tests/`): a real kube-apiserver
//! ([`envtest`]) and helpers shared by those tests. The crate-level tests of each crate
//! keep covering that crate alone.

pub mod envtest;
pub mod failover;
pub mod helm;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod service;
pub mod soak;

/// The repository's root directory.
/// The program `name` on `PATH`, if there is one.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}
