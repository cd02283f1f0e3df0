//! The table of StatusList specs the CRD must reject, kept once for the two places that
//! check it: the client-side approximation of admission (`crates/crd/tests/schema.rs`:
//! OpenAPI structure and CEL, no cluster) and the real kube-apiserver
//! (`tests/tests/crd.rs`). Each case names the message each of them gives.

use serde_json::{Value, json};

/// A spec the CRD rejects, and a part of the message each admission gives for it.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub spec: Value,
    /// In the client-side check's errors; `None` where it does not check this (string
    /// `pattern`s and lengths of nested strings are the apiserver's alone).
    pub locally: Option<&'static str>,
    /// In the real apiserver's refusal.
    pub by_the_apiserver: &'static str,
}

/// The smallest valid spec of `format`.
pub fn minimal_spec(format: &str) -> Value {
    json!({"format": format, "baseUri": "https://crs.example.gov.uk",
           "issuers": [{"clientId": "a", "jwksUri": "https://a.example/jwks"}]})
}

/// [`minimal_spec`] with `key` set to `value`.
pub fn spec_with(format: &str, key: &str, value: Value) -> Value {
    let mut spec = minimal_spec(format);
    spec[key] = value;
    spec
}

fn case(spec: Value, locally: Option<&'static str>, by_the_apiserver: &'static str) -> Rejection {
    Rejection {
        spec,
        locally,
        by_the_apiserver,
    }
}

/// Every bound and rule of the CRD, each broken once.
pub fn rejections() -> Vec<Rejection> {
    let long = |n: usize| "a".repeat(n);
    let issuer = |client_id: Value, jwks: Value| json!([{"clientId": client_id, "jwksUri": jwks}]);
    let token = |key: &str, value: Value| spec_with("Token", key, value);
    let absolute = "absolute http(s) URI without query or fragment";
    let bits = "bits must be 1, 2, 4 or 8";
    let free = "minFreeEntries must be less than entriesPerList";
    let lease = "leaseSize must not exceed entriesPerList";
    vec![
        case(
            spec_with("Bitstring", "entriesPerList", json!(131_071)),
            Some("at least 131072 for a Bitstring list"),
            "at least 131072 for a Bitstring list",
        ),
        case(token("bits", json!(3)), Some(bits), bits),
        case(token("bits", json!(16)), Some(bits), bits),
        case(
            token("format", json!("Other")),
            Some("not one of"),
            "supported values",
        ),
        case(
            token("baseUri", json!("crs.example.gov.uk")),
            Some(absolute),
            absolute,
        ),
        case(
            token("baseUri", json!("https://crs.example.gov.uk/?x=1")),
            Some("without query or fragment"),
            "without query or fragment",
        ),
        case(
            token("baseUri", json!("https://crs.example.gov.uk/#f")),
            Some("without query or fragment"),
            "without query or fragment",
        ),
        case(
            token("baseUri", json!(format!("https://{}", long(505)))),
            Some("longer than maxLength"),
            "spec.baseUri: Too long",
        ),
        case(
            token("entriesPerList", json!(99)),
            Some("below"),
            "spec.entriesPerList: Invalid value: 99",
        ),
        case(token("entriesPerList", json!(999)), Some(lease), lease),
        case(
            token("entriesPerList", json!(16_777_217)),
            Some("above"),
            "spec.entriesPerList: Invalid value: 16777217",
        ),
        case(token("leaseSize", json!(200_000)), Some(lease), lease),
        case(
            token("leaseSize", json!(0)),
            Some("below"),
            "spec.leaseSize: Invalid value: 0",
        ),
        case(
            token("leaseSize", json!(9)),
            Some("below"),
            "spec.leaseSize: Invalid value: 9",
        ),
        case(
            token("leaseSize", json!(1_000_001)),
            Some("above"),
            "spec.leaseSize: Invalid value",
        ),
        case(token("minFreeEntries", json!(100_000)), Some(free), free),
        case(
            spec_with("Bitstring", "minFreeEntries", json!(131_072)),
            Some(free),
            free,
        ),
        case(
            token("ttlSeconds", json!(0)),
            Some("below"),
            "spec.ttlSeconds: Invalid value: 0",
        ),
        case(
            {
                let mut spec = token("suspension", json!(true));
                spec["bits"] = json!(1);
                spec
            },
            Some("suspension needs bits of 2 or more"),
            "suspension needs bits of 2 or more",
        ),
        case(
            token("suspension", json!("yes")),
            Some("boolean"),
            ".spec.suspension: expected boolean",
        ),
        case(
            token("ttlSeconds", json!(86_401)),
            Some("ttlSeconds must not exceed validitySeconds"),
            "ttlSeconds must not exceed validitySeconds",
        ),
        case(
            token("validitySeconds", json!(59)),
            Some("below"),
            "spec.validitySeconds: Invalid value: 59",
        ),
        case(
            token("validitySeconds", json!(604_801)),
            Some("above"),
            "spec.validitySeconds: Invalid value: 604801",
        ),
        case(
            token("maxStatusLifetimeSeconds", json!(0)),
            Some("below"),
            "spec.maxStatusLifetimeSeconds: Invalid value: 0",
        ),
        case(
            token("maxStatusLifetimeSeconds", json!(315_360_001)),
            Some("above"),
            "spec.maxStatusLifetimeSeconds: Invalid value",
        ),
        case(
            token("deletionPolicy", json!("Keep")),
            Some("not one of"),
            "supported values",
        ),
        case(
            token(
                "issuers",
                json!((0..65)
                    .map(|i| json!({"clientId": format!("c{i}"), "jwksUri": "https://a.example/j"}))
                    .collect::<Vec<_>>()),
            ),
            Some("more than maxItems"),
            "spec.issuers: Too many",
        ),
        case(
            token(
                "issuers",
                json!([{"clientId": "a", "jwksUri": "https://a/j"}, {"clientId": "a", "jwksUri": "https://b/j"}]),
            ),
            Some("duplicate"),
            "duplicate entries for key [clientId=\"a\"]",
        ),
        case(
            token("issuers", issuer(json!(""), json!("https://a/j"))),
            Some("clientId: shorter than minLength"),
            "clientId: Invalid value: \"\"",
        ),
        case(
            token("issuers", issuer(json!(long(257)), json!("https://a/j"))),
            None,
            "clientId: Too long",
        ),
        case(
            token("issuers", issuer(json!("a"), json!("ftp://a/j"))),
            None,
            "jwksUri in body should match",
        ),
        case(
            token("issuers", issuer(json!("a"), json!("https://a b/j"))),
            None,
            "jwksUri in body should match",
        ),
        case(
            token(
                "issuers",
                issuer(json!("a"), json!(format!("https://a/{}", long(2040)))),
            ),
            None,
            "jwksUri: Too long",
        ),
        case(
            token("tll", json!(5)),
            Some("unknown field"),
            ".spec.tll: field not declared in schema",
        ),
    ]
}
