//! The chart's uninstall guard (`statuslist uninstall-check`, a `pre-delete` hook).
//!
//! Every StatusList carries the operator's `statuslist.dev/cleanup` finalizer, which only a
//! running operator can honour. Were the operator removed first, deleting a StatusList (or
//! its namespace) would hang until the finalizer is patched out by hand, and a pool with
//! `deletionPolicy: Delete` would keep its rows. So `helm uninstall` refuses while any
//! StatusList exists: the platform team deletes them first, each by its own policy, while
//! the operator runs. Nothing is deleted on anyone's behalf.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use statuslist_crd::{OWNER_ANNOTATION, StatusList};

/// The StatusLists a release answers for: those in the namespace its operator watches
/// (every namespace when it watches all) that name its operator instance, or no instance
/// (not reconciled yet, or older than the annotation). Another release's StatusLists
/// never hold this one's uninstall.
#[derive(Debug, Clone)]
pub struct Scope {
    pub namespace: Option<String>,
    /// `namespace/lease name` of the release's operator.
    pub owner: String,
}

impl Scope {
    fn covers(&self, list: &StatusList) -> bool {
        list.annotations()
            .get(OWNER_ANNOTATION)
            .is_none_or(|o| *o == self.owner)
    }
}

/// The StatusLists of `scope` that still exist, as `namespace/name (deletionPolicy)`.
pub async fn remaining(client: Client, scope: &Scope) -> Result<Vec<String>, kube::Error> {
    let api: Api<StatusList> = match &scope.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut found = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            // No CRD (never installed, or removed by hand): no StatusList either.
            Err(kube::Error::Api(e)) if e.code == 404 => break,
            Err(e) => return Err(e),
        };
        for list in page.items.iter().filter(|l| scope.covers(l)) {
            found.push(format!(
                "{}/{} (deletionPolicy {:?})",
                list.namespace().unwrap_or_default(),
                list.name_any(),
                list.spec.deletion_policy
            ));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(found)
}

/// The guard's verdict: `Ok` when nothing is left, else the message telling the order.
pub fn verdict(remaining: &[String]) -> Result<(), String> {
    if remaining.is_empty() {
        return Ok(());
    }
    Err(format!(
        "refusing to uninstall: {} StatusList(s) still exist: {}. Delete them first while the \
         operator runs (`kubectl delete statuslist -n NAMESPACE NAME`; each follows its \
         deletionPolicy), then run helm uninstall again. The release stays deployed meanwhile \
         (helm upgrade works). To uninstall anyway (the StatusLists \
         then keep their finalizer until an operator runs again), use `helm uninstall \
         --no-hooks`.",
        remaining.len(),
        remaining.join(", ")
    ))
}

/// Sets the Helm release record `secret` (Helm's default Secret storage:
/// `data.release` = base64 of the gzipped release JSON) back to `deployed`, after Helm
/// marked it `uninstalling` before running this hook. Without it a refused uninstall
/// leaves the release `uninstalling`: `helm upgrade` then fails with "has no deployed
/// releases" until a `helm rollback`. The write is guarded by the resourceVersion.
pub async fn keep_deployed(client: Client, namespace: &str, secret: &str) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut record = api.get(secret).await.map_err(|e| e.to_string())?;
    let data = record.data.get_or_insert_with(Default::default);
    let encoded = data
        .get("release")
        .ok_or("the Secret has no release entry")?;
    let mut release = decode_release(&encoded.0)?;
    let info = release
        .get_mut("info")
        .and_then(|i| i.as_object_mut())
        .ok_or("the release has no info")?;
    if info.get("status").and_then(|s| s.as_str()) != Some("uninstalling") {
        return Err(format!(
            "the release is {}, not uninstalling: left as it is",
            info.get("status").unwrap_or(&serde_json::Value::Null)
        ));
    }
    info.insert("status".into(), "deployed".into());
    info.insert(
        "description".into(),
        "Uninstall refused by the StatusList guard: StatusLists of this release exist".into(),
    );
    info.remove("deleted");
    data.insert("release".into(), ByteString(encode_release(&release)?));
    record
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("status".into(), "deployed".into());
    api.replace(secret, &PostParams::default(), &record)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The release JSON of a Helm release record's `release` entry.
pub fn decode_release(entry: &[u8]) -> Result<serde_json::Value, String> {
    let raw = STANDARD
        .decode(entry)
        .map_err(|e| format!("release entry: {e}"))?;
    let mut json = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut json)
            .map_err(|e| format!("release entry: {e}"))?;
    } else {
        json = raw;
    }
    serde_json::from_slice(&json).map_err(|e| format!("release entry: {e}"))
}

/// A Helm release record's `release` entry for `release`.
pub fn encode_release(release: &serde_json::Value) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(release).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json).map_err(|e| e.to_string())?;
    let zipped = gz.finish().map_err(|e| e.to_string())?;
    Ok(STANDARD.encode(zipped).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_record_round_trips() {
        let release =
            serde_json::json!({"name": "sl", "info": {"status": "uninstalling"}, "version": 3});
        let entry = encode_release(&release).expect("encode");
        assert_eq!(decode_release(&entry).expect("decode"), release);
        // Helm reads records that were stored without gzip too.
        let plain = STANDARD.encode(serde_json::to_vec(&release).expect("json"));
        assert_eq!(decode_release(plain.as_bytes()).expect("decode"), release);
        assert!(decode_release(b"not base64!").is_err());
    }
}
