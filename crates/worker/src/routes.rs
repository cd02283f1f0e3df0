//! The HTTP handlers.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use statuslist_format::bitstring::VC_JWT_MEDIA_TYPE;
use statuslist_format::token::CWT_TYP;
use statuslist_store::{
    ArtifactKind, BatchRevokeOutcome, IssueRequest, RevokeOutcome, StatusChange,
    StatusChangeOutcome,
};

use crate::AppState;
use crate::error::{self as e, ApiError, Operation};
use crate::jwks::Lookup;
use statuslist_format::unix_now;

use crate::request::{Jws, MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES, is_list_id};
use crate::served::Served;

const JWT_MEDIA_TYPE: &str = "application/statuslist+jwt";

/// Content type `application/jwt`, parameters tolerated.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/jwt"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(e::CONTENT_TYPE))
    }
}

/// A verified request: its claims, and the issuer with its pool.
struct Verified {
    jws: Jws,
    /// Shared with the issuer cache: no copy per request.
    issuer: Arc<statuslist_store::pools::Issuer>,
}

/// Everything `/issue` and `/revoke` share: content type, size, decoding, header checks,
/// issuer lookup, key lookup and the ES256 signature.
async fn verify(state: &AppState, request: Request, op: Operation) -> Result<Verified, ApiError> {
    verify_within(state, request, op, (MAX_BODY_BYTES, e::BODY_TOO_LARGE)).await
}

/// [`verify`] with another bound on the body, and the text that refuses a longer one.
#[tracing::instrument(level = "debug", name = "jws.verify", skip_all, fields(client_id = tracing::field::Empty))]
async fn verify_within(
    state: &AppState,
    request: Request,
    op: Operation,
    (limit, too_large): (usize, &'static str),
) -> Result<Verified, ApiError> {
    check_content_type(request.headers())?;
    // A declared length over the limit is refused before reading any of the body.
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BadRequest(too_large));
    }
    // Reads at most the limit + 1 byte: a larger body is refused without reading the rest.
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::BadRequest(too_large))?;
    let jws = Jws::parse(&body)?;
    let kid = jws.check_header()?.to_owned();
    let client_id = jws.issuer()?;
    tracing::Span::current().record("client_id", client_id);
    let issuer = match state.issuers.get(&state.store, client_id).await {
        Ok(Some(issuer)) => issuer,
        Ok(None) => return Err(ApiError::Unauthorized(e::UNKNOWN_CLIENT)),
        Err(err) => return Err(ApiError::from_store(err, op)),
    };
    let key = match state.jwks.key(&issuer.jwks_uri, &kid).await {
        Lookup::Found(key) => key,
        Lookup::Unusable => return Err(ApiError::Unauthorized(e::BAD_SIGNATURE)),
        Lookup::Missing => return Err(ApiError::Unauthorized(e::INVALID_KID)),
    };
    key.verify_raw(jws.signing_input.as_bytes(), &jws.signature)
        .map_err(|_| ApiError::Unauthorized(e::BAD_SIGNATURE))?;
    Ok(Verified { jws, issuer })
}

pub async fn issue(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let Verified { jws, issuer } = verify(&state, request, Operation::Issue).await?;
    let now = unix_now();
    jws.iat(now)?;
    let req = IssueRequest {
        client_id: issuer.client_id.clone(),
        jti: jws.jti()?,
        status_expiry: jws.status_expiry(now, issuer.pool.settings.max_status_lifetime_seconds)?,
    };
    let out = state.leases.issue(&issuer.pool, &req).await?;
    tracing::debug!(client_id = %req.client_id, list = %out.list_id, created = out.created, "issued");
    Ok((
        StatusCode::OK,
        Json(json!({"idx": out.idx, "uri": out.uri})),
    )
        .into_response())
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let Verified { jws, issuer } = verify(&state, request, Operation::Revoke).await?;
    jws.iat(unix_now())?;
    jws.jti()?;
    let idx = jws.idx()?;
    let uri = jws.uri()?;
    let (message, at) = match state.store.revoke(uri, idx, &issuer.client_id).await {
        Ok(RevokeOutcome::Revoked { at }) => ("Request processed for revocation", at),
        Ok(RevokeOutcome::AlreadyRevoked { at }) => ("Credential already revoked", at),
        Ok(RevokeOutcome::NotFound) => return Err(ApiError::Forbidden(e::CANNOT_REVOKE)),
        Err(err) => return Err(ApiError::from_store(err, Operation::Revoke)),
    };
    tracing::debug!(client_id = %issuer.client_id, uri, idx, message, "revocation");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": message, "revokedAt": at})),
    )
        .into_response())
}

/// `POST /revoke-batch`: the entries of one signed request revoked in one commit, all or
/// none (an absent or foreign entry refuses the batch: 403 naming its position). Each
/// entry's answer as `/revoke` gives it, in the request's order.
pub async fn revoke_batch(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = (MAX_BATCH_BODY_BYTES, e::BATCH_BODY_TOO_LARGE);
    let Verified { jws, issuer } = verify_within(&state, request, Operation::Revoke, limit).await?;
    jws.iat(unix_now())?;
    jws.jti()?;
    let entries = jws.entries()?;
    let outcomes = match state.store.revoke_all(&entries, &issuer.client_id).await {
        Ok(BatchRevokeOutcome::Revoked(outcomes)) => outcomes,
        Ok(BatchRevokeOutcome::Refused { position }) => {
            return Err(ApiError::ForbiddenEntry(position));
        }
        Err(err) => return Err(ApiError::from_store(err, Operation::Revoke)),
    };
    let mut answers = Vec::with_capacity(entries.len());
    for ((uri, idx), outcome) in entries.iter().zip(outcomes) {
        let (message, at) = match outcome {
            RevokeOutcome::Revoked { at } => ("Request processed for revocation", at),
            RevokeOutcome::AlreadyRevoked { at } => ("Credential already revoked", at),
            // The store answers a refusal for the whole batch instead.
            RevokeOutcome::NotFound => return Err(ApiError::Internal(e::REVOKE_FAILED)),
        };
        answers.push(json!({"uri": uri, "idx": idx, "message": message, "revokedAt": at}));
    }
    tracing::debug!(client_id = %issuer.client_id, entries = answers.len(), "batch revocation");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "Request processed for revocation", "entries": answers})),
    )
        .into_response())
}

/// `POST /suspend`: entry `idx` of the list at `uri` to SUSPENDED, authenticated and
/// checked exactly as `/revoke`, in a pool with `suspension` enabled. Idempotent.
pub async fn suspend(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    change_status(&state, request, StatusChange::Suspend).await
}

/// `POST /reinstate`: a suspended entry back to VALID, as `/suspend`. Idempotent.
pub async fn reinstate(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    change_status(&state, request, StatusChange::Reinstate).await
}

async fn change_status(
    state: &AppState,
    request: Request,
    change: StatusChange,
) -> Result<Response, ApiError> {
    let (op, refused, done, already, time) = match change {
        StatusChange::Suspend => (
            Operation::Suspend,
            e::CANNOT_SUSPEND,
            "Request processed for suspension",
            "Credential already suspended",
            "suspendedAt",
        ),
        StatusChange::Reinstate => (
            Operation::Reinstate,
            e::CANNOT_REINSTATE,
            "Request processed for reinstatement",
            "Credential not suspended",
            "reinstatedAt",
        ),
    };
    let Verified { jws, issuer } = verify(state, request, op).await?;
    jws.iat(unix_now())?;
    jws.jti()?;
    let idx = jws.idx()?;
    let uri = jws.uri()?;
    // The client's own pool decides: its entries are in no other.
    if !issuer.pool.settings.suspension {
        return Err(ApiError::Forbidden(e::SUSPENSION_DISABLED));
    }
    let (message, at) = match state
        .store
        .set_suspended(uri, idx, &issuer.client_id, change)
        .await
    {
        Ok(StatusChangeOutcome::Changed { at }) => (done, Some(at)),
        Ok(StatusChangeOutcome::Unchanged { at }) => (already, at),
        Ok(StatusChangeOutcome::Revoked { .. }) => {
            return Err(ApiError::Conflict(e::REVOCATION_FINAL));
        }
        // The pool changed since the issuer was cached.
        Ok(StatusChangeOutcome::Disabled) => {
            return Err(ApiError::Forbidden(e::SUSPENSION_DISABLED));
        }
        Ok(StatusChangeOutcome::NotFound) => return Err(ApiError::Forbidden(refused)),
        Err(err) => return Err(ApiError::from_store(err, op)),
    };
    tracing::debug!(client_id = %issuer.client_id, uri, idx, message, "status change");
    let mut body = json!({ "message": message });
    if let Some(at) = at {
        body[time] = json!(at);
    }
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The media type of `offered` the `Accept` header prefers (RFC 9110: each candidate takes
/// the q of the most specific range matching it; ties go to the offered order); a missing
/// header allows the first.
fn negotiate(headers: &HeaderMap, offered: &[&'static str]) -> Option<&'static str> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return offered.first().copied();
    };
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .map(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                })
                .next()
                .unwrap_or(1.0);
            (media, q)
        })
        .collect();
    let quality = |candidate: &str| -> f32 {
        let specificity = |media: &str| {
            if media == candidate {
                Some(2)
            } else if media
                .strip_suffix("/*")
                .is_some_and(|t| candidate.split('/').next() == Some(t))
            {
                Some(1)
            } else if media == "*/*" {
                Some(0)
            } else {
                None
            }
        };
        ranges
            .iter()
            .filter_map(|(m, q)| specificity(m).map(|s| (s, *q)))
            .max_by_key(|(s, _)| *s)
            .map_or(0.0, |(_, q)| q)
    };
    offered
        .iter()
        .enumerate()
        .map(|(rank, c)| (quality(c), rank, *c))
        .filter(|(q, _, _)| *q > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, _, c)| c)
}

async fn serve(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    kind: ArtifactKind,
    media: &'static str,
) -> Result<Response, ApiError> {
    if !is_list_id(id) {
        return Err(ApiError::NotFound(e::LIST_NOT_FOUND));
    }
    let artifact = match state.cache.get(&state.store, id, kind).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(ApiError::NotFound(e::LIST_NOT_FOUND)),
        Err(err) => return Err(ApiError::from_store(err, Operation::ReadList)),
    };
    Ok(respond(headers, &artifact, media))
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*` with a non-zero q).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            (coding == "gzip" || coding == "*").then_some(q > 0.0)
        })
        .next_back()
        .unwrap_or(false)
}

/// Whether `If-None-Match` names one of `etags` (weak comparison, RFC 9110) or is `*`.
fn if_none_match(headers: &HeaderMap, etags: &[&str]) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim() == "*"
                || v.split(',').any(|t| {
                    let t = t.trim().trim_start_matches("W/");
                    etags.contains(&t)
                })
        })
}

fn respond(headers: &HeaderMap, served: &Served, media: &'static str) -> Response {
    let a = &served.stored.artifact;
    let gzip = accepts_gzip(headers);
    let etag = if gzip {
        &served.gzip_etag
    } else {
        &served.etag
    };
    // Never cache past exp, nor longer than the list's ttl.
    let max_age = a.ttl.min(a.exp - unix_now()).max(0);
    let not_modified = if_none_match(headers, &[&served.etag, &served.gzip_etag]);
    // Written into the answer's own map, sized once for every header it will carry
    // (these five, CORS's two, the request id, `Connection` while draining): no second
    // map copied in, no regrowth.
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if gzip {
        // Encoded once when the copy was cached.
        Response::new(Body::from(served.gzip.clone()))
    } else {
        Response::new(Body::from(served.body.clone()))
    };
    let h = response.headers_mut();
    h.reserve(9);
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if !not_modified {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    response
}

/// Refuses a request for a past version of a list (draft -20 section 8.4: `time`, a unix
/// timestamp; and `timestamp`, the same question asked of a W3C list): no history is
/// kept, and a 200 with the current list would answer another question than the one
/// asked. 501 is what the draft says a server without the feature SHOULD answer.
fn refuse_history(request: &Request) -> Result<(), ApiError> {
    let asks = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair.split('=').next(), Some("time" | "timestamp")))
    });
    if asks {
        Err(ApiError::NotImplemented(e::NO_HISTORY))
    } else {
        Ok(())
    }
}

/// The list GETs read the request's headers where they are (a `HeaderMap` extractor
/// would copy them for every request).
pub async fn token_list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    refuse_history(&request)?;
    let headers = request.headers();
    match negotiate(headers, &[JWT_MEDIA_TYPE, CWT_TYP]) {
        Some(JWT_MEDIA_TYPE) => {
            serve(&state, headers, &id, ArtifactKind::Jwt, JWT_MEDIA_TYPE).await
        }
        Some(_) => serve(&state, headers, &id, ArtifactKind::Cwt, CWT_TYP).await,
        None => Err(ApiError::NotAcceptable(e::NOT_ACCEPTABLE_TOKEN)),
    }
}

pub async fn bitstring_list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    refuse_history(&request)?;
    let headers = request.headers();
    match negotiate(headers, &[VC_JWT_MEDIA_TYPE]) {
        Some(_) => serve(&state, headers, &id, ArtifactKind::Vc, VC_JWT_MEDIA_TYPE).await,
        None => Err(ApiError::NotAcceptable(e::NOT_ACCEPTABLE_VC)),
    }
}

/// A pool's Status List Aggregation (`application/json`), with a strong ETag (304 on a
/// match), cached for the pool's `ttlSeconds`; CORS as the lists.
pub async fn aggregation(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !is_list_id(&id) {
        return Err(ApiError::NotFound(e::AGGREGATION_NOT_FOUND));
    }
    let doc = match state.cache.aggregations.get(&state.store, &id).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return Err(ApiError::NotFound(e::AGGREGATION_NOT_FOUND)),
        Err(err) => return Err(ApiError::from_store(err, Operation::ReadList)),
    };
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&doc.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", doc.max_age)) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if if_none_match(&headers, &[&doc.etag]) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok((StatusCode::OK, h, Body::from(doc.body.clone())).into_response())
}

/// The service's keys: its own, plus every key any worker announced that has not signed
/// yet or signed something still within its `exp` (recorded by the publishers), so a
/// rotation never hides a key a verifier needs. With the database down, its own keys and
/// the last keys read.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut doc = state.keys.jwks();
    // From memory (read from the database at most every few seconds).
    if let Some(keys) = state.cache.keys_in_use(&state.store).await {
        for (kid, jwk) in keys.iter() {
            if doc.find(kid).is_none()
                && let Ok(jwk) = serde_json::from_str(jwk)
            {
                doc.keys.push(jwk);
            }
        }
    }
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "public, max-age={}",
        state.keys.jwks_max_age.as_secs()
    )) {
        h.insert(header::CACHE_CONTROL, v);
    }
    (h, Json(doc)).into_response()
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Whether the database can be used now: schema current and the listener's connection
/// answering.
fn database_up(state: &AppState) -> Result<(), String> {
    if !state.store.is_migrated() {
        return Err(
            "schema not migrated yet (connecting, or migrating a database that lost it)".into(),
        );
    }
    let health = state.store.health();
    match health.down_reason() {
        Some(reason) => Err(reason),
        // Not subscribed to change notifications yet: a cached copy could not be told
        // apart from a stale one, so traffic waits for the first LISTEN.
        None if health.is_up().is_none() => Err("notifications not subscribed yet".into()),
        None => Ok(()),
    }
}

/// Readiness means "can answer verifiers": the database answers, or lists are cached
/// that can be served until their `exp`. A database outage alone must not take the
/// workers out of their Service (the lists are what verifiers need).
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: stopping").into_response();
    }
    match database_up(&state) {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(reason) => match state.cache.servable().await {
            0 => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: database unavailable ({reason}) and no list cached"),
            )
                .into_response(),
            n => (
                StatusCode::OK,
                format!(
                    "ready: serving {n} cached list artifacts; database unavailable ({reason})"
                ),
            )
                .into_response(),
        },
    }
}

/// The database's state alone (for people and alerts; not a probe).
pub async fn database(State(state): State<Arc<AppState>>) -> Response {
    match database_up(&state) {
        Ok(()) => (StatusCode::OK, "up").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("down: {reason}")).into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics
        .database_up
        .set(i64::from(database_up(&state).is_ok()));
    state.metrics.database_round_trip.set(
        state
            .store
            .health()
            .latency()
            .map_or(f64::NAN, |d| d.as_secs_f64()),
    );
    // Kept as last read while the database does not answer.
    if let Ok((lists, oldest)) = state.store.publish_backlog().await {
        state.metrics.lists_awaiting_publish.set(lists);
        state.metrics.publish_backlog_oldest.set(oldest.max(0.0));
    }
    state.metrics.failover(&state.store.failover_stats());
    state.metrics.signer(state.keys.token().map(|t| t.as_ref()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound(e::ROUTE_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn accept_negotiation() {
        let offered = [JWT_MEDIA_TYPE, CWT_TYP];
        assert_eq!(negotiate(&HeaderMap::new(), &offered), Some(JWT_MEDIA_TYPE));
        assert_eq!(negotiate(&accept("*/*"), &offered), Some(JWT_MEDIA_TYPE));
        assert_eq!(
            negotiate(&accept("application/*"), &offered),
            Some(JWT_MEDIA_TYPE)
        );
        assert_eq!(
            negotiate(&accept("application/statuslist+cwt"), &offered),
            Some(CWT_TYP)
        );
        assert_eq!(
            negotiate(
                &accept("application/statuslist+jwt;q=0.5, application/statuslist+cwt"),
                &offered
            ),
            Some(CWT_TYP)
        );
        assert_eq!(
            negotiate(
                &accept("application/statuslist+jwt;q=0, */*;q=0.1"),
                &offered
            ),
            Some(CWT_TYP)
        );
        assert_eq!(negotiate(&accept("text/html"), &offered), None);
        assert_eq!(
            negotiate(&accept("application/statuslist+jwt;q=0"), &offered),
            None
        );
    }
}
