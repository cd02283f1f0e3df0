//! The chart as `helm template` renders it. The helm binary is `$HELM` (the test command
//! sets it) or `helm` on `PATH`; without either, tests that need it skip.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The helm binary, or `None` (with one line on stderr) when there is none.
pub fn helm() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HELM").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    let found = crate::on_path("helm");
    if found.is_none() {
        eprintln!("skipped: no helm (set HELM or put helm on PATH)");
    }
    found
}

/// What `helm template RELEASE charts/statuslist ARGS..` says when it refuses (it must).
pub fn refusal(helm: &PathBuf, release: &str, args: &[&str]) -> String {
    let out = Command::new(helm)
        .arg("template")
        .arg(release)
        .arg(crate::repo_root().join("charts/statuslist"))
        .args(args)
        .output()
        .expect("run helm");
    assert!(!out.status.success(), "helm template accepted {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The documents `helm template RELEASE charts/statuslist --namespace NS ARGS..` renders.
pub fn template(helm: &PathBuf, release: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(helm)
        .arg("template")
        .arg(release)
        .arg(crate::repo_root().join("charts/statuslist"))
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}
