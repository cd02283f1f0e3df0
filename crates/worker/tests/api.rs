//! The worker end to end: published lists verified independently, revocation seen by
//! another worker, HTTP caching, hostile input, issuer JWKS failures, database outage.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use p256::ecdsa::signature::Verifier;
use serde_json::{Value, json};
use statuslist_format::SigningKey;

/// Verifies an ES256 signature with the RustCrypto p256 crate: nothing shared with the
/// signing side (aws-lc-rs).
fn p256_verify(jwk: &Value, message: &[u8], signature: &[u8]) -> bool {
    let coord = |k: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[k].as_str().expect("coordinate"))
            .expect("b64")
    };
    let (x, y) = (coord("x"), coord("y"));
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let Ok(point) = p256::EncodedPoint::from_bytes(&sec1) else {
        return false;
    };
    let Ok(key) = p256::ecdsa::VerifyingKey::from_encoded_point(&point) else {
        return false;
    };
    let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) else {
        return false;
    };
    key.verify(message, &sig).is_ok()
}

async fn service_jwks(env: &Env) -> Vec<Value> {
    let text = env.get_text("/.well-known/jwks.json").await;
    let doc: Value = serde_json::from_str(&text).expect("json");
    doc["keys"].as_array().expect("keys").clone()
}

/// Verifies a compact JWS against the service's JWKS; returns (header, payload).
fn verify_jws(token: &str, jwks: &[Value]) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let jwk = jwks
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid published in the JWKS");
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    assert!(
        p256_verify(jwk, format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig),
        "signature"
    );
    (header, payload)
}

/// Status of `idx` in an IETF byte array (index 0 in the low bits), 2-bit entries.
fn ietf_status(bytes: &[u8], idx: u64) -> u8 {
    (bytes[(idx / 4) as usize] >> ((idx % 4) * 2)) & 0b11
}

/// Status of `idx` in a W3C bitstring (index 0 in the high bits), 2-bit entries.
fn w3c_status(bytes: &[u8], idx: u64) -> u8 {
    (bytes[(idx / 4) as usize] >> (6 - (idx % 4) * 2)) & 0b11
}

/// A valid `/issue` of client `a` carrying one extra header; the whole answer.
async fn issue_with_header(env: &Env, name: &str, value: &str) -> reqwest::Response {
    env.http
        .post(format!("{}/issue", env.worker.url))
        .header("content-type", "application/jwt")
        .header(name, value)
        .body(env.issuers.issue_jwt("a"))
        .send()
        .await
        .expect("post")
}

/// Issues one entry of client "a" and waits until its list is published; its URI.
async fn issued_and_published(env: &Env) -> String {
    let (uri, _) = env.issue("a").await;
    token_list_when(env, &env.worker.url, &uri, Duration::from_secs(10), |_| {
        true
    })
    .await;
    uri
}

fn inflate(reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::BufReader::new(reader)
        .read_to_end(&mut out)
        .expect("inflate");
    out
}

/// The decoded Token list at `uri` once the condition holds (the publisher runs async).
/// The CWT of the Token list `uri`, as the worker serves it.
async fn cwt_of(env: &Env, uri: &str) -> Vec<u8> {
    let id = uri.rsplit('/').next().expect("id");
    let resp = env
        .http
        .get(format!("{}/t/{id}", env.worker.url))
        .header("accept", "application/statuslist+cwt")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["content-type"], "application/statuslist+cwt");
    resp.bytes().await.expect("body").to_vec()
}

async fn token_list_when(
    env: &Env,
    base: &str,
    uri: &str,
    deadline: Duration,
    ok: impl Fn(&[u8]) -> bool,
) -> (Value, Vec<u8>) {
    let id = uri.rsplit('/').next().expect("id");
    let jwks = service_jwks(env).await;
    let until = Instant::now() + deadline;
    loop {
        let resp = env
            .http
            .get(format!("{base}/t/{id}"))
            .send()
            .await
            .expect("get");
        if resp.status() == 200 {
            let (_, payload) = verify_jws(&resp.text().await.expect("body"), &jwks);
            let lst = URL_SAFE_NO_PAD
                .decode(payload["status_list"]["lst"].as_str().expect("lst"))
                .expect("b64");
            let bytes = inflate(flate2::read::ZlibDecoder::new(lst.as_slice()));
            if ok(&bytes) {
                return (payload, bytes);
            }
        }
        assert!(
            Instant::now() < until,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await; // polling a condition
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_lists_verify_independently_and_show_revocations() {
    let env = Env::start().await;
    let mut issued = Vec::new();
    for _ in 0..5 {
        issued.push(env.issue("a").await);
    }
    let uri = issued[0].0.clone();
    assert!(issued.iter().all(|(u, _)| *u == uri));
    let (payload, bytes) =
        token_list_when(&env, &env.worker.url, &uri, Duration::from_secs(10), |_| {
            true
        })
        .await;
    assert_eq!(
        payload["sub"].as_str(),
        Some(uri.as_str()),
        "sub equals the issued uri byte for byte"
    );
    assert_eq!(payload["status_list"]["bits"], 2);
    assert!(payload["exp"].as_i64() > payload["iat"].as_i64());
    assert_eq!(payload["ttl"], 300);
    for (_, idx) in &issued {
        assert_eq!(ietf_status(&bytes, *idx), 0, "VALID until revoked");
    }
    let (status, _) = env.revoke("a", &uri, issued[2].1).await;
    assert_eq!(status, 202);
    let revoked = issued[2].1;
    let (_, bytes) = token_list_when(&env, &env.worker.url, &uri, Duration::from_secs(10), |b| {
        ietf_status(b, revoked) == 1
    })
    .await;
    for (i, (_, idx)) in issued.iter().enumerate() {
        assert_eq!(ietf_status(&bytes, *idx), u8::from(i == 2));
    }

    // The CWT of the same list: COSE_Sign1 checked with p256 over a Sig_structure built here.
    let cwt = cwt_of(&env, &uri).await;
    use coset_cbor::Value as C;
    let value: C = coset_cbor::de::from_reader(cwt.as_slice()).expect("CBOR");
    let C::Tag(18, inner) = value else {
        panic!("COSE_Sign1_Tagged expected")
    };
    let C::Array(parts) = *inner else {
        panic!("array")
    };
    let (C::Bytes(protected), C::Bytes(payload), C::Bytes(signature)) =
        (&parts[0], &parts[2], &parts[3])
    else {
        panic!("parts")
    };
    let mut tbs = Vec::new();
    coset_cbor::ser::into_writer(
        &C::Array(vec![
            C::Text("Signature1".into()),
            C::Bytes(protected.clone()),
            C::Bytes(vec![]),
            C::Bytes(payload.clone()),
        ]),
        &mut tbs,
    )
    .expect("CBOR");
    let header: C = coset_cbor::de::from_reader(protected.as_slice()).expect("CBOR");
    let kid = header
        .as_map()
        .expect("map")
        .iter()
        .find(|(k, _)| k.as_integer() == Some(4.into()))
        .map(|(_, v)| v.clone());
    let kid = String::from_utf8(kid.and_then(|k| k.into_bytes().ok()).expect("kid")).expect("utf8");
    let jwks = service_jwks(&env).await;
    let jwk = jwks
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid published");
    assert!(p256_verify(jwk, &tbs, signature), "CWT signature");
    let claims: C = coset_cbor::de::from_reader(payload.as_slice()).expect("CBOR");
    let claim = |k: i64| {
        claims
            .as_map()
            .expect("map")
            .iter()
            .find(|(key, _)| key.as_integer() == Some(k.into()))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        claim(2).and_then(|v| v.into_text().ok()).as_deref(),
        Some(uri.as_str())
    );

    // The Bitstring list: a vc+jwt, encodedList gzip, index 0 in the high bits.
    let (buri, bidx) = env.issue("b").await;
    assert!(buri.contains("/b/"));
    env.revoke("b", &buri, bidx).await;
    let bid = buri.rsplit('/').next().expect("id");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = env.get(&format!("/b/{bid}")).await;
        if resp.status() == 200 {
            assert_eq!(resp.headers()["content-type"], "application/vc+jwt");
            let (header, vc) = verify_jws(&resp.text().await.expect("body"), &jwks);
            assert_eq!(header["typ"], "vc+jwt");
            assert_eq!(vc["id"].as_str(), Some(buri.as_str()));
            let subject = &vc["credentialSubject"];
            assert_eq!(
                (
                    subject["type"].as_str(),
                    subject["statusPurpose"].as_str(),
                    subject["statusSize"].as_u64()
                ),
                (Some("BitstringStatusList"), Some("message"), Some(2))
            );
            let encoded = subject["encodedList"].as_str().expect("encodedList");
            let gz = URL_SAFE_NO_PAD
                .decode(encoded.strip_prefix('u').expect("multibase u"))
                .expect("b64");
            let bits = inflate(flate2::read::GzDecoder::new(gz.as_slice()));
            assert_eq!(bits.len(), 131_072 * 2 / 8);
            if w3c_status(&bits, bidx) == 1 {
                break;
            }
        }
        assert!(Instant::now() < until, "revocation not published");
        tokio::time::sleep(Duration::from_millis(10)).await; // polling a condition
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_worker_is_served_by_another_within_a_second() {
    let env = Env::start().await;
    // Workers share the signing keys (one mounted Secret), as in production.
    let key =
        SigningKey::from_pkcs8_pem(&env.worker.state.keys.current().to_pkcs8_pem().expect("pem"))
            .expect("key");
    let second = TestWorker::start(&env.db.url, vec![key], "w2").await;
    let (uri, idx) = env.issue("a").await;
    // The second worker has the list in memory, VALID.
    token_list_when(&env, &second.url, &uri, Duration::from_secs(10), |b| {
        ietf_status(b, idx) == 0
    })
    .await;
    let start = Instant::now();
    let (status, _) = env.revoke("a", &uri, idx).await;
    assert_eq!(status, 202);
    token_list_when(&env, &second.url, &uri, Duration::from_secs(1), |b| {
        ietf_status(b, idx) == 1
    })
    .await;
    eprintln!(
        "revocation visible on the other worker after {:?}",
        start.elapsed()
    );
    second.stop().await;
}

/// What every route's edge adds, on a list GET, an issuance, a probe and an unknown path:
/// the caller's `x-request-id` echoed or one made (UUID-shaped, one per request); the
/// CORS preflight of the lists; gzip of the JWKS (the lists bring their own); the
/// answers counted by route and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_and_is_counted_by_route() {
    let env = Env::start().await;
    let uri = issued_and_published(&env).await;
    let id = uri.rsplit('/').next().expect("id");
    let request_id = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    let url = |path: &str| format!("{}{path}", env.worker.url);
    let list = format!("/t/{id}");

    let mut made = std::collections::HashSet::new();
    for path in [list.as_str(), "/healthz", "/no/such/path", "/t/x/y"] {
        let resp = env
            .http
            .get(url(path))
            .header("x-request-id", "issuer-trace-7")
            .send()
            .await
            .expect("get");
        assert_eq!(
            request_id(&resp).as_deref(),
            Some("issuer-trace-7"),
            "{path}"
        );
        for _ in 0..2 {
            let resp = env.get(path).await;
            let id = request_id(&resp).expect("a request id made");
            assert_eq!(id.len(), 36, "{id}");
            assert!(
                id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
                "{id}"
            );
            made.insert(id);
        }
    }
    assert_eq!(made.len(), 8, "one id per request: {made:?}");
    let resp = issue_with_header(&env, "x-request-id", "issuer-trace-8").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(request_id(&resp).as_deref(), Some("issuer-trace-8"));

    // A browser's preflight of a list GET (any origin, GET only).
    let resp = env
        .http
        .request(reqwest::Method::OPTIONS, url(&list))
        .header("origin", "https://verifier.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("preflight");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert_eq!(resp.headers()["access-control-allow-methods"], "GET");
    assert!(request_id(&resp).is_some());
    let resp = env.get(&list).await;
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(
        exposed.contains("etag") && exposed.contains("cache-control"),
        "{exposed}"
    );
    // Issuer answers are not for browsers: no CORS headers on them.
    let resp = issue_with_header(&env, "origin", "https://verifier.example").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        resp.headers()
    );

    let resp = env
        .http
        .get(url("/.well-known/jwks.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("jwks");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let jwks: Value = serde_json::from_slice(&inflate(flate2::read::GzDecoder::new(
        &resp.bytes().await.expect("body")[..],
    )))
    .expect("JSON");
    assert!(!jwks["keys"].as_array().expect("keys").is_empty());

    let metrics = env.metrics_text().await;
    let count = |labels: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("statuslist_http_requests_total{{{labels}}} ")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("route=\"/t/{id}\",status=\"200\"") >= 4, "{metrics}");
    assert!(count("route=\"/healthz\",status=\"200\"") >= 3, "{metrics}");
    assert!(
        count("route=\"unmatched\",status=\"404\"") >= 6,
        "{metrics}"
    );
    assert!(count("route=\"/issue\",status=\"200\"") >= 3, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_caching_negotiation_and_cors() {
    let env = Env::start().await;
    let uri = issued_and_published(&env).await;
    let id = uri.rsplit('/').next().expect("id");
    let url = format!("{}/t/{id}", env.worker.url);
    let resp = env
        .http
        .get(&url)
        .header("origin", "https://verifier.example")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong ETag"
    );
    let cc = resp.headers()["cache-control"]
        .to_str()
        .expect("cc")
        .to_owned();
    let max_age: i64 = cc
        .rsplit('=')
        .next()
        .expect("max-age")
        .parse()
        .expect("number");
    assert!(
        cc.starts_with("public, max-age=") && (0..=300).contains(&max_age),
        "{cc}"
    );
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let plain = resp.bytes().await.expect("body");

    let resp = env
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"].to_str().expect("etag"), etag);

    let resp = env
        .http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    // Another representation, so another strong ETag; either revalidates.
    let gzip_etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
    assert_ne!(gzip_etag, etag);
    let gz = resp.bytes().await.expect("body");
    assert_eq!(
        inflate(flate2::read::GzDecoder::new(&gz[..])),
        plain.to_vec()
    );
    let resp = env
        .http
        .get(&url)
        .header("accept-encoding", "gzip")
        .header("if-none-match", &gzip_etag)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 304);
    for refused in ["gzip;q=0", "identity", "br"] {
        let resp = env
            .http
            .get(&url)
            .header("accept-encoding", refused)
            .send()
            .await
            .expect("get");
        assert!(
            resp.headers().get("content-encoding").is_none(),
            "{refused}"
        );
        assert_eq!(resp.headers()["etag"].to_str().expect("etag"), etag);
    }

    for (accept, status) in [
        ("text/html", 406),
        ("application/statuslist+jwt;q=0", 406),
        ("application/*", 200),
        ("*/*;q=0.1", 200),
    ] {
        let resp = env
            .http
            .get(&url)
            .header("accept", accept)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status().as_u16(), status, "{accept}");
    }
    // A Token id asked at /b/ (and the reverse) is unknown there.
    let resp = env.get(&format!("/b/{id}")).await;
    assert_eq!(resp.status(), 404);
    let (buri, _) = env.issue("b").await;
    let bid = buri.rsplit('/').next().expect("id");
    let resp = env.get(&format!("/t/{bid}")).await;
    assert_eq!(resp.status(), 404);
    // Operations endpoints.
    assert_eq!(env.get_status("/healthz").await, 200);
    assert_eq!(env.get_status("/readyz").await, 200);
    // Metrics are on their own port only: the public one (what an Ingress routes) has none.
    assert_eq!(env.get_status("/metrics").await, 404);
    let metrics = env.metrics_text().await;
    assert!(
        metrics.contains("statuslist_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("statuslist_leases_held"));
    // The issuance above claimed a lease; the other outcomes are there from the start.
    let claimed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("statuslist_lease_claims_total{outcome=\"claimed\"} "))
        .and_then(|n| n.parse().ok())
        .expect("claims counted");
    assert!(claimed >= 1, "{metrics}");
    assert!(metrics.contains("statuslist_lease_claims_total{outcome=\"none_free\"} 0"));
    assert!(metrics.contains("statuslist_database_round_trip_seconds "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_over_http_get_one_answer() {
    let env = Env::start().await;
    let jwt = env.issuers.issue_jwt("a");
    let answers = futures_util::future::join_all(
        (0..20).map(|_| env.post("/issue", Some("application/jwt"), jwt.clone())),
    )
    .await;
    assert!(
        answers.iter().all(|(s, b)| *s == 200 && *b == answers[0].1),
        "{answers:?}"
    );
    assert_eq!(env.entry_rows().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_a_4xx_json_error_and_changes_nothing() {
    let env = Env::start().await;
    let (uri, idx) = env.issue("a").await;
    let (buri, bidx) = env.issue("b").await;
    let iss = &env.issuers;
    let h = Issuers::header("a");
    // An accepted request, replayed below with a changed statusExpiry.
    let original = Issuers::issue_claims("a");
    let (s, _) = env
        .post(
            "/issue",
            Some("application/jwt"),
            iss.sign("a", &h, &original),
        )
        .await;
    assert_eq!(s, 200);
    let before = env.entry_rows().await;
    let claims = Issuers::issue_claims("a");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let public_pem = iss.key("a").public_jwk();
    let hs256 = {
        // HS256 "signed" with the issuer's public key: the classic algorithm confusion.
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": Issuers::kid("a")});
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            serde_json::to_string(&public_pem).expect("json").as_bytes(),
        );
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()))
        )
    };
    let mut cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("/issue", Some("application/jwt"), format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": Issuers::kid("a")})), b64(&claims)).into_bytes()),
        ("/issue", Some("application/jwt"), hs256.into_bytes()),
        ("/issue", Some("application/jwt"), iss.sign("a", &json!({"alg": "RS256", "typ": "JWT", "kid": Issuers::kid("a")}), &claims).into_bytes()),
        ("/issue", Some("application/jwt"), iss.sign("a", &json!({"alg": "ES256", "typ": "JWT", "kid": "k".repeat(10_240)}), &claims).into_bytes()),
        ("/issue", Some("application/jwt"), iss.sign("a", &json!({"alg": "ES256", "typ": "JWT", "kid": "../../etc/passwd"}), &claims).into_bytes()),
        ("/issue", Some("application/jwt"), iss.sign("a", &json!({"alg": "ES256", "typ": "JWT", "kid": "nope"}), &claims).into_bytes()),
        ("/issue", Some("application/jwt"), format!("{}.{}.", b64(&h), b64(&claims)).into_bytes()),
        ("/issue", Some("application/jwt"), format!("{}.{}.AAAA.BBBB.CCCC", b64(&json!({"alg": "RSA-OAEP", "enc": "A256GCM"})), "x").into_bytes()),
        ("/issue", Some("application/jwt"), format!("{}.{}.AAAA", b64(&h), URL_SAFE_NO_PAD.encode("not json")).into_bytes()),
        ("/issue", Some("application/jwt"), iss.sign_text("a", &h.to_string(), r#"{"iss":"a","iss":"b","iat":1,"jti":"bcea4e51-6eca-4547-8d18-4b971b72c146","statusExpiry":1}"#).into_bytes()),
        ("/issue", None, iss.issue_jwt("a").into_bytes()),
        ("/issue", Some("application/json"), iss.issue_jwt("a").into_bytes()),
    ];
    for (k, v) in [
        ("iat", json!("now")),
        ("iat", json!(-5)),
        ("jti", json!(7)),
        ("statusExpiry", json!("2030-01-01")),
        ("statusExpiry", json!(-1)),
        ("iss", json!(["a"])),
    ] {
        let mut c = claims.clone();
        c[k] = v;
        cases.push((
            "/issue",
            Some("application/jwt"),
            iss.sign("a", &h, &c).into_bytes(),
        ));
    }
    for v in [json!("1"), json!(1.5), json!(-3), json!(null)] {
        cases.push(("/revoke", Some("application/jwt"), iss.sign("a", &h, &json!({"iss": "a", "iat": 1, "jti": uuid::Uuid::new_v4().to_string(), "uri": uri, "idx": v})).into_bytes()));
    }
    // Client a's valid token against client b's entry.
    cases.push((
        "/revoke",
        Some("application/jwt"),
        iss.sign("a", &h, &Issuers::revoke_claims("a", &buri, bidx))
            .into_bytes(),
    ));
    // The replay with a changed statusExpiry.
    let mut changed = original.clone();
    changed["statusExpiry"] = json!(original["statusExpiry"].as_i64().expect("n") + 1);
    cases.push((
        "/issue",
        Some("application/jwt"),
        iss.sign("a", &h, &changed).into_bytes(),
    ));

    for (i, (path, ct, body)) in cases.into_iter().enumerate() {
        let (status, json) = env.post(path, ct, body).await;
        assert!(
            (400..500).contains(&status),
            "case {i} {path}: {status} {json}"
        );
        assert!(
            json["error"].is_string() && json["error_description"].is_string(),
            "case {i}: {json}"
        );
    }
    // A 10 MB body: refused on its declared length, before any of it is read. (A raw
    // connection: an HTTP client still writing the body would see the early close.)
    let raw = tokio::task::spawn_blocking({
        let addr = env.worker.url.trim_start_matches("http://").to_owned();
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"POST /issue HTTP/1.1\r\nHost: x\r\nContent-Type: application/jwt\r\nContent-Length: 10485760\r\n\r\n").expect("write");
            let mut response = String::new();
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let mut buf = [0u8; 4096];
            while !response.contains("}") {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                response.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            response
        }
    })
    .await
    .expect("raw request");
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(
        raw.contains("Request body must not exceed 16384 bytes"),
        "{raw}"
    );

    assert_eq!(env.entry_rows().await, before, "no row changed");
    let _ = (idx, uri);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_jwks_failures_are_401_and_cached_keys_keep_working() {
    let env = Env::start().await;
    // a's keys are cached by a first request; then its endpoint fails in every way.
    env.issue("a").await;
    for mode in [
        JwksMode::Down,
        JwksMode::Garbage,
        JwksMode::Hang,
        JwksMode::Redirect,
        JwksMode::Huge,
    ] {
        env.issuers.set_mode("a", mode);
        env.issue("a").await;
    }
    // c was never fetched: each failure mode is a 401, never a 500 or a hang.
    for mode in [
        JwksMode::Hang,
        JwksMode::Garbage,
        JwksMode::Redirect,
        JwksMode::Huge,
        JwksMode::Down,
    ] {
        let env = Env::start().await;
        env.issuers.set_mode("c", mode);
        let start = Instant::now();
        let (status, body) = env.try_issue("c").await;
        assert_eq!(
            (status, body["error_description"].as_str()),
            (401, Some("Invalid Key ID in Header")),
            "{mode:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{mode:?} took {:?}",
            start.elapsed()
        );
        // Counted against the issuer's JWKS URI.
        let metrics = env.metrics_text().await;
        let counted = format!(
            "statuslist_jwks_fetch_failures_total{{jwks_uri=\"{}\"}} 1",
            env.issuers.jwks_uri("c")
        );
        assert!(metrics.contains(&counted), "{mode:?}: {metrics}");
    }
    // Unknown kids refetch at most once per interval.
    let fetches = env.issuers.fetches("a");
    env.issuers.set_mode("a", JwksMode::Normal);
    for _ in 0..5 {
        let jwt = env.issuers.sign(
            "a",
            &json!({"alg": "ES256", "typ": "JWT", "kid": "rotated-away"}),
            &Issuers::issue_claims("a"),
        );
        let (status, _) = env.post("/issue", Some("application/jwt"), jwt).await;
        assert_eq!(status, 401);
    }
    assert!(
        env.issuers.fetches("a") <= fetches + 1,
        "{} fetches",
        env.issuers.fetches("a") - fetches
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_lists_are_still_served_and_the_worker_stays_ready() {
    let mut env = Env::with_own_server().await;
    let uri = issued_and_published(&env).await;
    let aggregation = format!("/a/{}", statuslist_worker::aggregation::id("tok"));
    assert!(env.get_text(&aggregation).await.contains(&uri));
    tokio::task::block_in_place(|| {
        env.db
            .server_mut()
            .expect("own server")
            .stop()
            .expect("stop")
    });
    let id = uri.rsplit('/').next().expect("id");
    let resp = env.get(&format!("/t/{id}")).await;
    assert_eq!(
        resp.status(),
        200,
        "the last signed copy is served until it expires"
    );
    // Ready: it can answer verifiers from its cache. The database's state is separate.
    assert_eq!(env.get_status("/readyz").await, 200);
    assert_eq!(env.get_status("/healthz").await, 200);
    eventually_every(
        ms(20),
        Duration::from_secs(10),
        "the outage reported",
        || async { (env.get_status("/healthz/database").await == 503).then_some(()) },
    )
    .await;
    let (status, _) = env.try_issue("a").await;
    assert_eq!(status, 503);
    // The pool's aggregation, read before, is served too (from the last read).
    let resp = env.get(&aggregation).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("body").contains(&uri));
    tokio::task::block_in_place(|| {
        env.db
            .server_mut()
            .expect("own server")
            .start_again()
            .expect("start")
    });
    eventually_every(
        ms(50),
        Duration::from_secs(30),
        "issuance again",
        || async { (env.try_issue("a").await.0 == 200).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_stays_published_while_its_lists_live() {
    let env = Env::start().await;
    let (uri, _) = env.issue("a").await;
    // Signed by worker 1's key.
    token_list_when(&env, &env.worker.url, &uri, Duration::from_secs(10), |_| {
        true
    })
    .await;
    let old_kid = env.worker.state.keys.current().kid().to_owned();
    // Worker 2 holds only a new key (a rotation in progress).
    let second = TestWorker::start(
        &env.db.url,
        vec![SigningKey::generate().expect("key")],
        "w2",
    )
    .await;
    let new_kid = second.state.keys.current().kid().to_owned();
    let text = env
        .http
        .get(format!("{}/.well-known/jwks.json", second.url))
        .send()
        .await
        .expect("jwks")
        .text()
        .await
        .expect("body");
    let doc: Value = serde_json::from_str(&text).expect("json");
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()),
        "the key of a live list is published: {kids:?}"
    );
    assert!(kids.contains(&new_kid.as_str()), "{kids:?}");
    second.stop().await;
}

/// A stopping worker (draining) goes on answering, but each answer closes its connection
/// and `/readyz` says it is stopping: clients reconnect, through the Service, to another
/// worker instead of meeting a keep-alive connection closed under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_answers_and_closes_each_connection() {
    let env = Env::start().await;
    let path = "/.well-known/jwks.json";
    let before = env.get(path).await;
    assert_eq!(before.status(), 200);
    assert!(before.headers().get("connection").is_none());
    env.worker
        .state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let during = env.get(path).await;
    assert_eq!(during.status(), 200);
    assert_eq!(
        during.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_eq!(env.get_status("/readyz").await, 503);
    env.issue("a").await;
}

/// Draft -20 section 9: every Token list names its pool's aggregation in
/// `status_list.aggregation_uri` (JWT and CWT); the document lists the pool's live lists
/// as `application/json` with a strong ETag, the pool's ttl and CORS; a pool without lists
/// has an empty one; an unknown one is the contract's 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pool_has_an_aggregation_named_by_its_lists() {
    let env = Env::start().await;
    let (uri, _) = env.issue("a").await;
    let (payload, _) =
        token_list_when(&env, &env.worker.url, &uri, Duration::from_secs(10), |_| {
            true
        })
        .await;
    let aggregation = payload["status_list"]["aggregation_uri"]
        .as_str()
        .expect("aggregation_uri in the JWT's status_list")
        .to_owned();
    assert_eq!(
        aggregation,
        format!(
            "{}/a/{}",
            env.worker.url,
            statuslist_worker::aggregation::id("tok")
        )
    );
    let cwt = cwt_of(&env, &uri).await;
    let kid = statuslist_format::token::cwt_kid(&cwt).expect("kid");
    let key = service_jwks(&env)
        .await
        .into_iter()
        .find(|k| k["kid"] == kid)
        .expect("key");
    let key = statuslist_format::VerifyingKey::from_jwk(&serde_json::from_value(key).expect("jwk"))
        .expect("key");
    let verified = statuslist_format::token::verify_cwt(&cwt, &key).expect("verify");
    assert_eq!(
        verified.claims.aggregation_uri.as_deref(),
        Some(aggregation.as_str())
    );

    let resp = env
        .http
        .get(&aggregation)
        .header("origin", "https://verifier.example")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(etag.starts_with('"'), "strong: {etag}");
    let doc: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(doc, json!({"status_lists": [uri]}));
    let resp = env
        .http
        .get(&aggregation)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 304);

    // The Bitstring pool's lists are in its own document; a pool without lists has an
    // empty one; other ids are unknown.
    let (buri, _) = env.issue("b").await;
    let bit = format!("/a/{}", statuslist_worker::aggregation::id("bit"));
    let empty = format!("/a/{}", statuslist_worker::aggregation::id("empty"));
    eventually(
        Duration::from_secs(15),
        "the Bitstring list in its pool's aggregation",
        || async { env.get_text(&bit).await.contains(&buri).then_some(()) },
    )
    .await;
    assert_eq!(env.get_text(&empty).await, r#"{"status_lists":[]}"#);
    for unknown in ["/a/000000000000", "/a/not-an-id"] {
        let resp = env.get(unknown).await;
        assert_eq!(resp.status(), 404, "{unknown}");
        let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
        assert_eq!(
            body,
            json!({"error": "NOT_FOUND", "error_description": "Status list aggregation not found"})
        );
    }
}

/// Draft -20 section 8.4: a server without history SHOULD answer `?time=` with 501; the
/// current list would answer another question than the one asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_asked_for_its_past_is_501() {
    let env = Env::start().await;
    let (uri, _) = env.issue("a").await;
    let (buri, _) = env.issue("b").await;
    token_list_when(&env, &env.worker.url, &uri, Duration::from_secs(10), |_| {
        true
    })
    .await;
    let path = |u: &str| u.strip_prefix(&env.worker.url).expect("local").to_owned();
    assert_eq!(env.get_status(&path(&uri)).await, 200);
    for asked in [
        format!("{}?time=1686925000", path(&uri)),
        format!("{}?x=1&time=1686925000", path(&uri)),
        format!("{}?time", path(&uri)),
        format!("{}?time=1686925000", path(&buri)),
        format!("{}?timestamp=2026-01-01T00:00:00Z", path(&buri)),
        "/t/000000000000?time=1".to_owned(),
    ] {
        let resp = env.get(&asked).await;
        assert_eq!(resp.status(), 501, "{asked}");
        let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
        assert_eq!(body["error"], "NOT_IMPLEMENTED", "{asked}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("time parameter")),
            "{body}"
        );
    }
    // Other parameters are ignored, as before.
    assert_eq!(
        env.get_status(&format!("{}?timeout=5", path(&uri))).await,
        200
    );
}

/// `POST /revoke-batch`: a signed request's entries revoked in one commit, each answered
/// as `/revoke` answers; one absent or foreign entry refuses the whole batch (403 naming
/// it) and revokes nothing; malformed batches are the contract's 400s; the list shows
/// every revocation of a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_revoked_whole_or_not_at_all() {
    let env = Env::start().await;
    let batch = |client: &str, entries: Value| {
        let claims = json!({
            "iss": client,
            "iat": statuslist_format::unix_now(),
            "jti": uuid::Uuid::new_v4().to_string(),
            "entries": entries,
        });
        env.issuers.sign(client, &Issuers::header(client), &claims)
    };
    let post = |jwt: String| env.post("/revoke-batch", Some("application/jwt"), jwt);
    let mut mine = Vec::new();
    for _ in 0..4 {
        mine.push(env.issue("a").await);
    }
    let (foreign_uri, foreign_idx) = env.issue("c").await;
    let entry = |(uri, idx): &(String, u64)| json!({"uri": uri, "idx": idx});

    // Two entries (one twice): one commit, answers in order.
    let (status, body) = post(batch(
        "a",
        json!([entry(&mine[0]), entry(&mine[1]), entry(&mine[0])]),
    ))
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["message"], "Request processed for revocation");
    let answers = body["entries"].as_array().expect("entries");
    assert_eq!(answers.len(), 3);
    for (answer, (uri, idx)) in answers.iter().zip([&mine[0], &mine[1], &mine[0]]) {
        assert_eq!(answer["uri"], json!(uri));
        assert_eq!(answer["idx"], json!(idx));
        assert_eq!(answer["message"], "Request processed for revocation");
        assert!(answer["revokedAt"].is_i64(), "{answer}");
    }
    assert_eq!(answers[0]["revokedAt"], answers[2]["revokedAt"]);
    let first_at = answers[0]["revokedAt"].clone();

    // A foreign entry (client c's) or an absent one refuses the batch; nothing changes.
    for (bad, position) in [
        (json!({"uri": foreign_uri, "idx": foreign_idx}), 1),
        (json!({"uri": mine[3].0, "idx": 9_999_999}), 1),
    ] {
        let (status, body) = post(batch("a", json!([entry(&mine[2]), bad]))).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "FORBIDDEN");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("entries[{position}]"))),
            "{body}"
        );
    }
    let (status, body) = env.revoke("a", &mine[2].0, mine[2].1).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (202, Some("Request processed for revocation")),
        "mine[2] was left alone by the refused batches"
    );
    let (status, body) = env.revoke("c", &foreign_uri, foreign_idx).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (202, Some("Request processed for revocation"))
    );

    // Revoked entries again, with a new one: the earlier time, and the new one revoked.
    let (status, body) = post(batch("a", json!([entry(&mine[0]), entry(&mine[3])]))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["entries"][0]["message"], "Credential already revoked");
    assert_eq!(body["entries"][0]["revokedAt"], first_at);
    assert_eq!(
        body["entries"][1]["message"],
        "Request processed for revocation"
    );

    // The list shows all four (2-bit entries: INVALID is 1).
    let (uri, _) = &mine[0];
    let bit = |bytes: &[u8], idx: u64| (bytes[(idx / 4) as usize] >> ((idx % 4) * 2)) & 3;
    token_list_when(
        &env,
        &env.worker.url,
        uri,
        Duration::from_secs(10),
        |bytes| mine.iter().all(|(_, idx)| bit(bytes, *idx) == 1),
    )
    .await;

    // Malformed batches: the contract's 400 texts, nothing revoked.
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"uri": uri, "idx": i})).collect();
    for (entries, expected) in [
        (None, "No entries in Payload"),
        (
            Some(json!([])),
            "entries must be an array of 1 to 1000 objects, each with exactly uri and idx",
        ),
        (
            Some(json!(too_many)),
            "entries must be an array of 1 to 1000 objects, each with exactly uri and idx",
        ),
        (
            Some(json!([{"uri": uri, "idx": 1, "status": 2}])),
            "entries must be an array of 1 to 1000 objects, each with exactly uri and idx",
        ),
        (
            Some(json!(["x"])),
            "entries must be an array of 1 to 1000 objects, each with exactly uri and idx",
        ),
        (
            Some(json!([{"uri": uri, "index": 1}])),
            "No Index in Payload",
        ),
        (
            Some(json!([{"uri": uri, "idx": -1}])),
            "Index must be a valid non-negative integer",
        ),
        (
            Some(json!([{"uri": "ftp://x/t/ABCDEF012345", "idx": 1}])),
            "Invalid URI format in payload",
        ),
        (
            Some(json!([{"url": uri, "idx": 1}])),
            "No valid URI in Payload",
        ),
    ] {
        let mut claims = json!({
            "iss": "a",
            "iat": statuslist_format::unix_now(),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(entries) = entries {
            claims["entries"] = entries;
        }
        let (status, body) = post(env.issuers.sign("a", &Issuers::header("a"), &claims)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error_description"], expected);
    }
    // A body over 256 KiB is refused unread.
    let (status, body) = post_declared(&env.worker.url, "/revoke-batch", 300 * 1024).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Request body must not exceed 262144 bytes"))
    );
}

/// The status of `idx` in the Token list JWT `jwt` as the npm package
/// @sd-jwt/jwt-status-list decodes it (`SDJWT_STATUS_LIST`: its directory, which
/// scripts/test installs); `None` where it is not installed.
fn sd_jwt_status(jwt: &str, idx: u64) -> Option<u64> {
    let module = std::env::var("SDJWT_STATUS_LIST")
        .ok()
        .filter(|m| !m.is_empty())?;
    let mut child = std::process::Command::new("node")
        .args([
            "-e",
            "const { getListFromStatusListJWT } = require(process.argv[1]);
             let jwt = '';
             process.stdin.on('data', d => jwt += d);
             process.stdin.on('end', () =>
                 console.log(getListFromStatusListJWT(jwt.trim()).getStatus(Number(process.argv[2]))));",
            &module,
            &idx.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(jwt.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("node ran");
    assert!(out.status.success(), "{out:?}");
    Some(
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .parse()
            .expect("a status"),
    )
}

/// Suspension end to end: only the entry's own client, only in a pool that allows it,
/// idempotent both ways, visible on another worker within a second like a revocation
/// (SUSPENDED as @sd-jwt/jwt-status-list reads it), reversed by a reinstatement, and
/// never over a revocation; a W3C list says SUSPENDED through its statusMessage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_is_served_reversed_and_never_undoes_a_revocation() {
    let env = Env::start().await;
    env.allow_suspension().await;
    let key =
        SigningKey::from_pkcs8_pem(&env.worker.state.keys.current().to_pkcs8_pem().expect("pem"))
            .expect("key");
    let second = TestWorker::start(&env.db.url, vec![key], "w2").await;
    let (uri, idx) = env.issue("a").await;
    let (_, other) = env.issue("a").await;
    token_list_when(&env, &second.url, &uri, Duration::from_secs(10), |b| {
        ietf_status(b, idx) == 0
    })
    .await;

    // Another client of the pool, a client whose pool does not allow it, an absent entry.
    let (status, body) = env.change_status("/suspend", "c", &uri, idx).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (
            403,
            Some("Unable to suspend the specified status list entry")
        )
    );
    let (status, body) = env.change_status("/suspend", "d", &uri, idx).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (
            403,
            Some("Suspension is not enabled for the status lists of this client")
        )
    );
    let (status, body) = env.change_status("/reinstate", "a", &uri, 9_999).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (
            403,
            Some("Unable to reinstate the specified status list entry")
        )
    );
    // Reinstating an entry never suspended: nothing to do, and no time.
    let (status, body) = env.change_status("/reinstate", "a", &uri, other).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"message": "Credential not suspended"}));

    let start = Instant::now();
    let (status, body) = env.change_status("/suspend", "a", &uri, idx).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["message"], "Request processed for suspension");
    let suspended_at = body["suspendedAt"].as_i64().expect("suspendedAt");
    let (_, bytes) = token_list_when(&env, &second.url, &uri, Duration::from_secs(1), |b| {
        ietf_status(b, idx) == 2
    })
    .await;
    eprintln!(
        "suspension visible on the other worker after {:?}",
        start.elapsed()
    );
    assert_eq!(ietf_status(&bytes, other), 0);
    let jwt = env
        .http
        .get(format!(
            "{}/t/{}",
            second.url,
            uri.rsplit('/').next().expect("id")
        ))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    match sd_jwt_status(&jwt, idx) {
        Some(s) => {
            assert_eq!(s, 2, "@sd-jwt/jwt-status-list reads SUSPENDED");
            assert_eq!(sd_jwt_status(&jwt, other), Some(0));
        }
        None => eprintln!("SDJWT_STATUS_LIST not set: the npm decoder's check skipped"),
    }
    let (status, body) = env.change_status("/suspend", "a", &uri, idx).await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({"message": "Credential already suspended", "suspendedAt": suspended_at})
        )
    );

    let start = Instant::now();
    let (status, body) = env.change_status("/reinstate", "a", &uri, idx).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["message"], "Request processed for reinstatement");
    let reinstated_at = body["reinstatedAt"].as_i64().expect("reinstatedAt");
    token_list_when(&env, &second.url, &uri, Duration::from_secs(1), |b| {
        ietf_status(b, idx) == 0
    })
    .await;
    eprintln!(
        "reinstatement visible on the other worker after {:?}",
        start.elapsed()
    );
    let (status, body) = env.change_status("/reinstate", "a", &uri, idx).await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({"message": "Credential not suspended", "reinstatedAt": reinstated_at})
        )
    );

    // Suspended, then revoked: INVALID, final; neither change is taken any more.
    assert_eq!(env.change_status("/suspend", "a", &uri, idx).await.0, 202);
    let (status, body) = env.revoke("a", &uri, idx).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (202, Some("Request processed for revocation"))
    );
    for path in ["/suspend", "/reinstate"] {
        let (status, body) = env.change_status(path, "a", &uri, idx).await;
        assert_eq!(
            (
                status,
                body["error"].as_str(),
                body["error_description"].as_str()
            ),
            (
                409,
                Some("CONFLICT"),
                Some(
                    "Credential is revoked: revocation is final and cannot be suspended or reinstated"
                )
            )
        );
    }
    token_list_when(&env, &second.url, &uri, Duration::from_secs(1), |b| {
        ietf_status(b, idx) == 1
    })
    .await;

    // The Bitstring list: 2 in the bitstring, named by statusMessage.
    let (buri, bidx) = env.issue("b").await;
    assert_eq!(env.change_status("/suspend", "b", &buri, bidx).await.0, 202);
    let jwks = service_jwks(&env).await;
    let bid = buri.rsplit('/').next().expect("id");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = env.get(&format!("/b/{bid}")).await;
        if resp.status() == 200 {
            let (_, vc) = verify_jws(&resp.text().await.expect("body"), &jwks);
            let subject = &vc["credentialSubject"];
            assert!(
                subject["statusMessage"]
                    .as_array()
                    .expect("statusMessage")
                    .contains(&json!({"status": "0x2", "message": "SUSPENDED"})),
                "{subject}"
            );
            let encoded = subject["encodedList"].as_str().expect("encodedList");
            let gz = URL_SAFE_NO_PAD
                .decode(encoded.strip_prefix('u').expect("multibase u"))
                .expect("b64");
            let bits = inflate(flate2::read::GzDecoder::new(gz.as_slice()));
            if w3c_status(&bits, bidx) == 2 {
                break;
            }
        }
        assert!(Instant::now() < until, "suspension not published");
        tokio::time::sleep(Duration::from_millis(10)).await; // polling a condition
    }
    second.stop().await;
}
