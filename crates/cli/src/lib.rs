//! What the `statuslist` binary and the benchmarks' load generator (`statuslist-bench`)
//! share: an issuer's client (signing request JWTs, issuing, revoking) and a verifier's
//! (fetching and verifying a list).

pub mod client;
