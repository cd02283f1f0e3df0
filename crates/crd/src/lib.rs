//! The `StatusList` custom resource (`statuslist.dev/v1alpha1`): one resource is one pool
//! of status lists of one format, the issuers that draw from it, and how it is published.
//! Types, defaults, schema rules and conditions only; no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "statuslist.dev";
pub const FINALIZER: &str = "statuslist.dev/cleanup";
/// Field manager of the operator's server-side applies.
pub const MANAGER: &str = "statuslist-operator";

/// Smallest W3C Bitstring Status List.
pub const BITSTRING_MIN_ENTRIES: u64 = 131_072;
pub const DEFAULT_TOKEN_ENTRIES: u64 = 100_000;

// Bounds of the spec, enforced by the CRD's schema and again by the reconcile core (for
// resources that bypassed the apiserver or came from files). Every string and list is
// bounded so that the apiserver's CEL cost estimate stays within its budget.
pub const MIN_ENTRIES_PER_LIST: u64 = 100;
/// 2^24 entries: an 8-bit list of this size is 16 MiB, the decoders' bound.
pub const MAX_ENTRIES_PER_LIST: u64 = 1 << 24;
pub const MIN_LEASE_SIZE: u64 = 10;
pub const MAX_LEASE_SIZE: u64 = 1_000_000;
pub const MIN_VALIDITY_SECONDS: u64 = 60;
pub const MAX_VALIDITY_SECONDS: u64 = 604_800;
pub const MAX_STATUS_LIFETIME_SECONDS: u64 = 315_360_000;
pub const MAX_ISSUERS: usize = 64;
pub const MAX_CLIENT_ID: usize = 256;
pub const MAX_BASE_URI: usize = 512;
pub const MAX_JWKS_URI: usize = 2048;
/// An absolute http(s) URI without whitespace.
pub const JWKS_URI_PATTERN: &str = "^https?://[^\\s/?#]+([/?#][^\\s]*)?$";

/// A pool of credential status lists: issuers registered here get `{idx, uri}` slots from
/// it with `POST /issue`, revoke them with `POST /revoke`, and verifiers read the lists at
/// `{baseUri}/t/{ID}` (Token) or `{baseUri}/b/{ID}` (Bitstring). The operator provisions a
/// new list whenever free capacity falls below `minFreeEntries`, and retires lists whose
/// every entry has passed its `statusExpiry`.
// Each `printcolumn(..)` repeats `type_ = ..`, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "statuslist.dev",
    version = "v1alpha1",
    kind = "StatusList",
    plural = "statuslists",
    shortname = "sl",
    namespaced,
    status = "StatusListStatus",
    derive = "PartialEq",
    doc = "A pool of credential status lists (IETF Token Status List or W3C Bitstring Status List) and the issuers that draw from it.",
    printcolumn(name = "Format", type_ = "string", json_path = ".spec.format"),
    printcolumn(name = "Lists", type_ = "integer", json_path = ".status.totals.lists"),
    printcolumn(
        name = "Allocated",
        type_ = "integer",
        json_path = ".status.totals.allocated"
    ),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.totals.free"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reconciled",
        type_ = "date",
        json_path = ".status.reconciledAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.format != 'Bitstring' || !has(self.entriesPerList) || self.entriesPerList >= 131072").message("entriesPerList must be at least 131072 for a Bitstring list (the W3C minimum)").field_path(".entriesPerList"))]
#[x_kube(validation = Rule::new("self.leaseSize <= (has(self.entriesPerList) ? self.entriesPerList : (self.format == 'Bitstring' ? 131072 : 100000))").message("leaseSize must not exceed entriesPerList").field_path(".leaseSize"))]
#[x_kube(validation = Rule::new("!has(self.minFreeEntries) || self.minFreeEntries < (has(self.entriesPerList) ? self.entriesPerList : (self.format == 'Bitstring' ? 131072 : 100000))").message("minFreeEntries must be less than entriesPerList").field_path(".minFreeEntries"))]
#[x_kube(validation = Rule::new("!has(self.suspension) || !self.suspension || !has(self.bits) || self.bits >= 2").message("suspension needs bits of 2 or more (status 2 is SUSPENDED)").field_path(".suspension"))]
#[x_kube(validation = Rule::new("self.ttlSeconds <= self.validitySeconds").message("ttlSeconds must not exceed validitySeconds").field_path(".ttlSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct StatusListSpec {
    /// `Token` (IETF Token Status List, a JWT or CWT served at `{baseUri}/t/{ID}`) or
    /// `Bitstring` (W3C BitstringStatusListCredential, a vc+jwt served at
    /// `{baseUri}/b/{ID}`). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("format is immutable"))]
    pub format: Format,

    /// Bits per entry: 1, 2, 4 or 8. With 2 (the default, as GOV.UK uses), 0 is VALID,
    /// 1 INVALID, 2 SUSPENDED. Immutable.
    #[serde(default = "default_bits")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bits is immutable"))]
    #[x_kube(validation = Rule::new("self in [1, 2, 4, 8]").message("bits must be 1, 2, 4 or 8"))]
    pub bits: u8,

    /// Public origin of the lists, e.g. `https://crs.example.gov.uk`: a list's URI is
    /// `{baseUri}/t/{ID}` or `{baseUri}/b/{ID}`, exactly as issuers receive it. An absolute
    /// http(s) URI without query or fragment, at most 512 characters.
    #[schemars(length(min = 8, max = MAX_BASE_URI))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message("baseUri must be an absolute http(s) URI without query or fragment"))]
    pub base_uri: String,

    /// Entries in each physical list, 100 to 16777216 (2^24). Default 100000 for Token
    /// lists and 131072 (the W3C minimum, also enforced) for Bitstring lists. Larger lists
    /// hide each credential in a bigger crowd; smaller ones are cheaper to download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_ENTRIES_PER_LIST, max = MAX_ENTRIES_PER_LIST))]
    pub entries_per_list: Option<u64>,

    /// Provision a new list when the free entries of the pool's active lists fall below
    /// this; less than entriesPerList. Default: 10% of entriesPerList.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_ENTRIES_PER_LIST))]
    pub min_free_entries: Option<u64>,

    /// Positions a worker claims at once, 10 to 1000000 and at most entriesPerList.
    /// Smaller leases spread issuance over more workers; larger ones need fewer claims.
    /// Default 1000.
    #[serde(default = "default_lease_size")]
    #[schemars(range(min = MIN_LEASE_SIZE, max = MAX_LEASE_SIZE))]
    pub lease_size: u64,

    /// Seconds a verifier may cache a published list (`ttl` claim, Cache-Control), 1 to
    /// validitySeconds. Default 300.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = MAX_VALIDITY_SECONDS))]
    pub ttl_seconds: u64,

    /// Lifetime of a published list (`exp - iat`), 60 to 604800 (7 days): a verifier may
    /// accept a list this old, so a long one lets a stale (pre-revocation) copy be replayed
    /// for longer. Lists are re-signed when half of it has passed, and at once after a
    /// revocation. Default 86400.
    #[serde(default = "default_validity")]
    #[schemars(range(min = MIN_VALIDITY_SECONDS, max = MAX_VALIDITY_SECONDS))]
    pub validity_seconds: u64,

    /// Upper bound of `statusExpiry - now` on `/issue`, 1 to 315360000 (10 years); a list
    /// is retired only when its last entry's statusExpiry has passed. Default 31536000
    /// (one year, as GOV.UK).
    #[serde(default = "default_max_lifetime")]
    #[schemars(range(min = 1, max = MAX_STATUS_LIFETIME_SECONDS))]
    pub max_status_lifetime_seconds: u64,

    /// Whether this pool's issuers may suspend entries (status 2, SUSPENDED) and
    /// reinstate them (`POST /suspend`, `POST /reinstate`); needs bits of 2 or more.
    /// Revocation stays final either way. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspension: bool,

    /// Clients allowed to issue and revoke on this pool, at most 64. A clientId belongs to
    /// exactly one StatusList in the cluster; one already held by another StatusList is
    /// reported in the IssuerConflict condition and not taken over.
    #[serde(default)]
    #[schemars(length(max = MAX_ISSUERS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["clientId"]))]
    pub issuers: Vec<IssuerSpec>,

    /// What deleting this resource does: `Retain` (default) stops new issuance only —
    /// its issuers can still revoke, every entry is kept, lists keep being re-signed and
    /// served; `Delete` removes the pool's entries and lists (their URIs answer 404; ids
    /// are never reused).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A client allowed to issue and revoke on this pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// The `iss` of the client's request JWTs, 1 to 256 characters.
    #[schemars(length(min = 1, max = MAX_CLIENT_ID))]
    pub client_id: String,
    /// Where the client's public keys (a JWK Set) are fetched: an absolute http(s) URI of
    /// at most 2048 characters; https in production.
    #[schemars(length(min = 8, max = MAX_JWKS_URI), pattern(JWKS_URI_PATTERN))]
    pub jwks_uri: String,
}

/// The list format of a pool (`spec.format`): the one type of `statuslist-format`.
pub use statuslist_format::ListFormat as Format;

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

fn default_bits() -> u8 {
    2
}
fn default_lease_size() -> u64 {
    1000
}
fn default_ttl() -> u64 {
    300
}
fn default_validity() -> u64 {
    86_400
}
fn default_max_lifetime() -> u64 {
    31_536_000
}

impl StatusListSpec {
    /// `entriesPerList` with its format's default.
    pub fn entries_per_list(&self) -> u64 {
        self.entries_per_list.unwrap_or(match self.format {
            Format::Token => DEFAULT_TOKEN_ENTRIES,
            Format::Bitstring => BITSTRING_MIN_ENTRIES,
        })
    }

    /// `minFreeEntries` with its default (10% of a list).
    pub fn min_free_entries(&self) -> u64 {
        self.min_free_entries
            .unwrap_or(self.entries_per_list() / 10)
    }
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusListStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` summarises the others: `InvalidSpec`, `IssuerConflict`, `CapacityLow`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The pool's newest live physical lists (at most 10; `totals` counts them all).
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub lists: Vec<ListStatus>,
    #[serde(default)]
    pub totals: Totals,
    /// When the operator last reconciled this resource (RFC 3339), refreshed at least every
    /// two minutes while an operator runs: older than that (`kubectl get sl` shows it as an
    /// age, RECONCILED), no operator is reconciling it and the rest of this status may be
    /// stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<String>,
}

/// One physical list.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListStatus {
    pub id: String,
    pub uri: String,
    /// `Active` (issuing), `Full` (every position handed out, still served).
    pub state: String,
    pub size: u64,
    pub allocated: u64,
    pub revoked: u64,
    pub free: u64,
}

/// Sums over the live lists.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub lists: u64,
    /// Lists issuing.
    #[serde(default)]
    pub active: u64,
    /// Lists with every position handed out, still served.
    #[serde(default)]
    pub full: u64,
    pub size: u64,
    pub allocated: u64,
    pub revoked: u64,
    /// Free entries of the Active lists.
    pub free: u64,
}

/// Condition types.
/// The specs the CRD must reject, for the tests of this crate and of the whole system.
#[cfg(feature = "testing")]
pub mod rejections;

pub mod conditions {
    pub const READY: &str = "Ready";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ISSUER_CONFLICT: &str = "IssuerConflict";
    pub const CAPACITY_LOW: &str = "CapacityLow";
    /// The database could not be used (unreachable, schema missing, an error): `Ready`
    /// is False with the same reason until a reconcile succeeds.
    pub const DATABASE_READY: &str = "DatabaseReady";
    /// Whether every commit waits for a standby, so that a failover loses no
    /// acknowledged issuance or revocation (False: asynchronous, or no standby).
    pub const REPLICATION_SYNCHRONOUS: &str = "ReplicationSynchronous";
    /// Present once a failover sealed lists of the pool: whether every acknowledgement
    /// made before it is on the new primary (False while workers have not written theirs
    /// back, or when some could not be).
    pub const FAILOVER_RESTORED: &str = "FailoverRestored";
}

/// The annotation naming the operator instance that reconciles a StatusList
/// (`namespace/lease name`): set by the first instance that reconciles it; every other
/// instance leaves the resource alone and says so in an Event.
pub const OWNER_ANNOTATION: &str = "statuslist.dev/operator";

/// The CRD as installed: the derived one with each description's lines joined (a doc
/// comment's line breaks are for the source; `kubectl explain` would print them in the
/// middle of its own wrapping). Blank-line paragraph breaks stay.
pub fn definition() -> serde_json::Value {
    use kube::CustomResourceExt;
    fn reflow(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match v {
                        serde_json::Value::String(text) if k == "description" => {
                            *text = text
                                .split("\n\n")
                                .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        other => reflow(other),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(reflow),
            _ => {}
        }
    }
    let mut crd = serde_json::to_value(StatusList::crd()).expect("the CRD serialises");
    reflow(&mut crd);
    crd
}

/// The CRD as YAML, as `crds/` holds it.
pub fn crd_yaml() -> String {
    let body = serde_yaml_ng::to_string(&definition()).expect("the CRD serialises");
    format!("# Generated from crates/crd by `statuslist crd`; do not edit.\n{body}")
}

/// The CRD as the chart's template (`charts/statuslist/templates/crd.yaml`): rendered
/// unless `crds.install=false` (when `kubectl apply --server-side -f crds/` manages it),
/// and kept by `helm uninstall` (deleting a CRD deletes every StatusList with it).
pub fn crd_helm_template() -> String {
    let body = serde_yaml_ng::to_string(&definition()).expect("the CRD serialises");
    let name = "metadata:\n  name: statuslists.statuslist.dev\n";
    // Extra annotations from `crds.annotations` (the Tiltfile's `tilt.dev/down-policy`).
    let kept = format!(
        "{name}  annotations:\n    helm.sh/resource-policy: keep\n    \
         {{{{- with .Values.crds.annotations }}}}\n    {{{{- toYaml . | nindent 4 }}}}\n    {{{{- end }}}}\n"
    );
    format!(
        "{{{{- if .Values.crds.install }}}}\n\
         # Generated from crates/crd by `statuslist crd --helm`; do not edit.\n{}{{{{- end }}}}\n",
        body.replacen(name, &kept, 1)
    )
}
