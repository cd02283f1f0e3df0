//! StatusList manifests read from files (`statuslist operator --manifests DIR`): each
//! file's documents checked as the API server and the reconcile core would, with every
//! problem reported and nothing about an unreadable file guessed.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use statuslist_crd::{DeletionPolicy, StatusList};
use statuslist_store::PoolSpec;

use crate::core;

/// What one manifest file holds.
#[derive(Debug, Default)]
pub struct FileScan {
    /// Valid StatusLists: pool and deletion policy.
    pub pools: Vec<(PoolSpec, DeletionPolicy)>,
    /// Pools named by documents that failed validation: left as they were.
    pub invalid: Vec<String>,
    /// Problems found, one line each.
    pub problems: Vec<String>,
    /// Whether every document could be read and named (false: the file does not parse,
    /// or holds a StatusList without a name). Nothing is deleted while any file is not.
    pub complete: bool,
}

/// Every StatusList document of one file's text. Stops at the first YAML error (the
/// parser cannot resynchronise after one: the rest of the file is unknown).
pub fn scan_text(file: &str, text: &str) -> FileScan {
    let mut scan = FileScan {
        complete: true,
        ..FileScan::default()
    };
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = match serde_json::Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                scan.problems.push(format!("{file}: not YAML: {e}"));
                scan.complete = false;
                break;
            }
        };
        if value.is_null() || value["kind"] != "StatusList" {
            continue;
        }
        let namespace = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let Some(name) = value["metadata"]["name"].as_str().map(str::to_owned) else {
            scan.problems
                .push(format!("{file}: a StatusList without metadata.name"));
            scan.complete = false;
            continue;
        };
        let pool_name = core::pool_name(&namespace, &name);
        let checked = serde_json::from_value::<StatusList>(value)
            .map_err(|e| e.to_string())
            .and_then(|sl| {
                core::pool_spec(
                    pool_name.clone(),
                    sl.metadata.generation.unwrap_or(1),
                    &sl.spec,
                )
                .map(|pool| (pool, sl.spec.deletion_policy))
                .map_err(|problems| problems.join("; "))
            });
        match checked {
            Ok(found) => scan.pools.push(found),
            Err(problem) => {
                scan.problems
                    .push(format!("{file}: StatusList {pool_name}: {problem}"));
                scan.invalid.push(pool_name);
            }
        }
    }
    scan
}

/// Every `*.yaml`/`*.yml` file of `dir`, scanned; `Err` when the directory cannot be read.
pub fn scan_dir(dir: &Path) -> Result<Vec<FileScan>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read manifests in {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    Ok(paths
        .iter()
        .map(|path| {
            let file = path.display().to_string();
            match std::fs::read_to_string(path) {
                Ok(text) => scan_text(&file, &text),
                Err(e) => FileScan {
                    problems: vec![format!("{file}: {e}")],
                    ..FileScan::default()
                },
            }
        })
        .collect())
}
