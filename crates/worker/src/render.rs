//! Rendering one list: its status array (built from a full read, or from the publisher's
//! copy and the changes since), compressed and signed as JWT and CWT (Token lists) or as
//! a `vc+jwt` credential (Bitstring lists). Pure: no IO, no clock read.

use statuslist_format::bitstring::{self, CredentialMeta};
use statuslist_format::token::{self, CompressedList, TokenClaims};
use statuslist_format::{FormatError, SigningKey, StatusArray};
use statuslist_store::{Artifact, ArtifactKind, ListFormat, PublishJob};

/// `"` + 32 hex digits of SHA-256(body) + `"`: strong, and changes with every byte.
pub(crate) fn etag(body: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// The origin part of a list URI (`https://host/base` of `https://host/base/t/ID`): the
/// issuer of the list.
fn issuer_of(uri: &str) -> &str {
    uri.rsplitn(3, '/').nth(2).unwrap_or(uri)
}

/// Renders and signs one list: JWT and CWT for a Token list, a `vc+jwt` for a Bitstring one.
pub fn render(
    job: &PublishJob,
    key: &SigningKey,
    level: u32,
    now: i64,
) -> Result<Vec<Artifact>, FormatError> {
    // A full job: every non-zero entry (see `apply` for the incremental path).
    let mut array = StatusArray::new(job.list.bits, job.list.size)?;
    for (idx, status) in &job.entries {
        array.set(*idx, *status)?;
    }
    render_array(job, &array, key, level, now)
}

/// The list's status array: `copy` (the renderer's own, at `job.since`) with the job's
/// changes applied, or built from every entry of a full job.
pub fn apply(job: &PublishJob, copy: Option<StatusArray>) -> Result<StatusArray, String> {
    let mut array = match (job.since, copy) {
        (Some(_), Some(copy)) => copy,
        (Some(v), None) => {
            return Err(format!(
                "changes since version {v} of list {} but no copy of it",
                job.list.id
            ));
        }
        (None, _) => StatusArray::new(job.list.bits, job.list.size).map_err(|e| e.to_string())?,
    };
    for (idx, status) in &job.entries {
        array.set(*idx, *status).map_err(|e| e.to_string())?;
    }
    Ok(array)
}

/// Renders and signs `array` as the list of `job`.
pub fn render_array(
    job: &PublishJob,
    array: &StatusArray,
    key: &SigningKey,
    level: u32,
    now: i64,
) -> Result<Vec<Artifact>, FormatError> {
    let exp = now + job.validity_seconds as i64;
    let ttl = job.ttl_seconds as i64;
    let artifact = |kind, body: Vec<u8>| Artifact {
        kind,
        etag: etag(&body),
        body,
        iat: now,
        exp,
        ttl,
        kid: key.kid().to_owned(),
    };
    match job.list.format {
        ListFormat::Token => {
            let compressed =
                tracing::debug_span!("compress").in_scope(|| CompressedList::new(array, level));
            let _in = tracing::debug_span!("sign", kid = key.kid()).entered();
            let claims = TokenClaims {
                sub: job.list.uri.clone(),
                iss: Some(issuer_of(&job.list.uri).to_owned()),
                iat: now,
                exp: Some(exp),
                ttl: Some(job.ttl_seconds),
                aggregation_uri: job
                    .list
                    .pool
                    .as_deref()
                    .map(|pool| crate::aggregation::uri(issuer_of(&job.list.uri), pool)),
            };
            Ok(vec![
                artifact(
                    ArtifactKind::Jwt,
                    token::sign_jwt(&claims, &compressed, key)?.into_bytes(),
                ),
                artifact(
                    ArtifactKind::Cwt,
                    token::sign_cwt(&claims, &compressed, key)?,
                ),
            ])
        }
        ListFormat::Bitstring => {
            let meta = CredentialMeta {
                uri: job.list.uri.clone(),
                issuer: issuer_of(&job.list.uri).to_owned(),
                valid_from: now,
                valid_until: exp,
                ttl_seconds: Some(job.ttl_seconds),
            };
            // Compression happens inside the credential's encoding: one span for both.
            let _in = tracing::debug_span!("compress.sign", kid = key.kid()).entered();
            Ok(vec![artifact(
                ArtifactKind::Vc,
                bitstring::sign_vc_jwt(&meta, array, level, key)?.into_bytes(),
            )])
        }
    }
}

/// A stored artifact ready to send, prepared once per version (not per request): the
/// body as shared bytes, its gzip encoding, and both strong ETags (a content coding is a
/// representation of its own).
#[cfg(test)]
mod tests {
    use super::*;
    use statuslist_format::{Bits, unix_now};
    use statuslist_store::{ListInfo, ListState};
    use std::time::Instant;

    /// The largest list the CRD allows, 2^24 entries of 8 bits (16 MiB raw), renders
    /// correctly (its time is printed; the render bound is 15 s).
    #[test]
    fn the_largest_list_renders_and_decodes() {
        let size = 1u64 << 24;
        let entries: Vec<(u64, u8)> = (0..100_000u64)
            .map(|i| ((i * 2_654_435_761) % size, (i % 255 + 1) as u8))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let job = PublishJob {
            list: ListInfo {
                id: "AAAAAAAAAAAA".into(),
                pool: Some("p".into()),
                uri: "https://status.example.test/t/AAAAAAAAAAAA".into(),
                format: ListFormat::Token,
                bits: Bits::Eight,
                size,
                state: ListState::Active,
                version: 1,
            },
            ttl_seconds: 300,
            validity_seconds: 86_400,
            entries: entries.clone(),
            since: None,
        };
        let key = SigningKey::generate().expect("key");
        let started = Instant::now();
        let artifacts = render(&job, &key, token::DEFAULT_ZLIB_LEVEL, unix_now()).expect("render");
        let took = started.elapsed();
        let jwt = artifacts
            .iter()
            .find(|a| a.kind == ArtifactKind::Jwt)
            .expect("jwt");
        let text = std::str::from_utf8(&jwt.body).expect("text");
        let verified = token::verify_jwt(text, key.verifying_key()).expect("verify");
        for (idx, status) in entries.iter().step_by(997) {
            assert_eq!(verified.list.get(*idx).expect("idx"), *status);
        }
        assert_eq!(
            verified.list.get(size - 1).expect("last"),
            entries.iter().find(|e| e.0 == size - 1).map_or(0, |e| e.1)
        );
        println!(
            "2^24 x 8-bit list, {} set: rendered (JWT + CWT, zlib {}) in {took:?}, JWT {} bytes",
            entries.len(),
            token::DEFAULT_ZLIB_LEVEL,
            jwt.body.len()
        );
    }
}
