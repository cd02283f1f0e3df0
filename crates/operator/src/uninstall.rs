//! The chart's uninstall guard (`statuslist uninstall-check`, a `pre-delete` hook).
//!
//! Every StatusList carries the operator's `statuslist.dev/cleanup` finalizer, which only a
//! running operator can honour. Were the operator removed first, deleting a StatusList (or
//! its namespace) would hang until the finalizer is patched out by hand, and a pool with
//! `deletionPolicy: Delete` would keep its rows. So `helm uninstall` refuses while any
//! StatusList exists: the platform team deletes them first, each by its own policy, while
//! the operator runs. Nothing is deleted on anyone's behalf.

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use statuslist_crd::StatusList;

/// The StatusLists that still exist, as `namespace/name (deletionPolicy)`, in every
/// namespace.
pub async fn remaining(client: Client) -> Result<Vec<String>, kube::Error> {
    let api: Api<StatusList> = Api::all(client);
    let mut found = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            // No CRD (never installed, or removed by hand): no StatusList either.
            Err(kube::Error::Api(e)) if e.code == 404 => break,
            Err(e) => return Err(e),
        };
        for list in &page.items {
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
         operator runs (`kubectl delete statuslists --all --all-namespaces`; each follows its \
         deletionPolicy), then run helm uninstall again. To uninstall anyway (the StatusLists \
         then keep their finalizer until an operator runs again), use `helm uninstall \
         --no-hooks`.",
        remaining.len(),
        remaining.join(", ")
    ))
}
