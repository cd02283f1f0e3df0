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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.format != 'Bitstring' || !has(self.entriesPerList) || self.entriesPerList >= 131072").message("entriesPerList must be at least 131072 for a Bitstring list (the W3C minimum)").field_path(".entriesPerList"))]
#[x_kube(validation = Rule::new("self.leaseSize <= (has(self.entriesPerList) ? self.entriesPerList : (self.format == 'Bitstring' ? 131072 : 100000))").message("leaseSize must not exceed entriesPerList").field_path(".leaseSize"))]
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
    /// http(s) URI without query or fragment.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message("baseUri must be an absolute http(s) URI without query or fragment"))]
    pub base_uri: String,

    /// Entries in each physical list. Default 100000 for Token lists and 131072 (the W3C
    /// minimum, also enforced) for Bitstring lists. Larger lists hide each credential in a
    /// bigger crowd; smaller ones are cheaper to download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16_777_216))]
    pub entries_per_list: Option<u64>,

    /// Provision a new list when the free entries of the pool's active lists fall below
    /// this. Default: 10% of entriesPerList.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_entries: Option<u64>,

    /// Positions a worker claims at once. Smaller leases spread issuance over more
    /// workers; larger ones need fewer claims. Default 1000.
    #[serde(default = "default_lease_size")]
    #[schemars(range(min = 1))]
    pub lease_size: u64,

    /// Seconds a verifier may cache a published list (`ttl` claim, Cache-Control).
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: u64,

    /// Lifetime of a published list (`exp - iat`); lists are re-signed when half of it has
    /// passed, and at once after a revocation.
    #[serde(default = "default_validity")]
    #[schemars(range(min = 60))]
    pub validity_seconds: u64,

    /// Upper bound of `statusExpiry - now` on `/issue` (default one year, as GOV.UK).
    #[serde(default = "default_max_lifetime")]
    #[schemars(range(min = 1))]
    pub max_status_lifetime_seconds: u64,

    /// Clients allowed to issue and revoke on this pool. A clientId belongs to exactly
    /// one StatusList in the cluster; one already held by another StatusList is reported
    /// in the IssuerConflict condition and not taken over.
    #[serde(default)]
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
    /// The `iss` of the client's request JWTs.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 256").message("clientId must be 1 to 256 characters"))]
    pub client_id: String,
    /// Where the client's public keys (a JWK Set) are fetched; https in production.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s]+$')").message("jwksUri must be an absolute http(s) URI"))]
    pub jwks_uri: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Format {
    Token,
    Bitstring,
}

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
    /// The pool's live physical lists.
    #[serde(default)]
    pub lists: Vec<ListStatus>,
    #[serde(default)]
    pub totals: Totals,
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
    pub size: u64,
    pub allocated: u64,
    pub revoked: u64,
    /// Free entries of the Active lists.
    pub free: u64,
}

/// Condition types.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ISSUER_CONFLICT: &str = "IssuerConflict";
    pub const CAPACITY_LOW: &str = "CapacityLow";
}

/// The CRD as YAML, as `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let body = serde_yaml_ng::to_string(&StatusList::crd()).expect("the CRD serialises");
    format!("# Generated from crates/crd by `statuslist crd`; do not edit.\n{body}")
}
