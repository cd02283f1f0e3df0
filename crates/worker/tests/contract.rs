//! The contract, driven by `contract/*.yaml`: every documented status code of `/issue`,
//! `/revoke` and `/t/{id}` from a real request against a real worker and database, every
//! body valid against the spec's schema, every listed `error_description` produced by the
//! case it names; likewise for this service's extensions (`statuslist-extensions.yaml`).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};
use statuslist_format::unix_now;

fn spec(name: &str) -> Value {
    let path = format!("{}/../../contract/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).expect("OpenAPI YAML")
}

/// The OpenAPI 3.0 subset these specs use: $ref, type, properties, required, enum, minimum.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().expect("ref");
        return validate(spec, &spec["components"]["schemas"][name], value, at);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => assert!(value.is_object(), "{at}: {value} is not an object"),
        Some("string") => assert!(value.is_string(), "{at}: {value} is not a string"),
        Some("number") => assert!(value.is_number(), "{at}: {value} is not a number"),
        Some("array") => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: {value} is not an array"));
            for (i, item) in items.iter().enumerate() {
                validate(spec, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Some(other) => panic!("{at}: schema type {other} not handled"),
        None => {}
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required {
            let r = r.as_str().expect("name");
            assert!(value.get(r).is_some(), "{at}: missing {r} in {value}");
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            if let Some(v) = value.get(name) {
                validate(spec, sub, v, &format!("{at}.{name}"));
            }
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        assert!(
            value.as_f64().expect("number") >= min,
            "{at}: {value} below {min}"
        );
    }
}

fn response_schema(spec: &Value, path: &str, method: &str, status: u16) -> Value {
    let r = &spec["paths"][path][method]["responses"][status.to_string()];
    assert!(!r.is_null(), "{method} {path} documents no {status}");
    r["content"]["application/json"]["schema"].clone()
}

/// `(path, status, error_description)` of every example in the private spec.
fn documented_errors(spec: &Value) -> BTreeSet<(String, u16, String)> {
    let mut out = BTreeSet::new();
    for path in ["/issue", "/revoke"] {
        for (status, r) in spec["paths"][path]["post"]["responses"]
            .as_object()
            .expect("responses")
        {
            let examples = r["content"]["application/json"]["examples"].as_object();
            for (_, ex) in examples.into_iter().flatten() {
                if let Some(d) = ex["value"]["error_description"].as_str() {
                    out.insert((
                        path.to_owned(),
                        status.parse().expect("status"),
                        d.to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// Strings the contract README decided against (see README, HTTP API): never produced.
const DECIDED_OTHERWISE: &[(&str, u16, &str, &str)] = &[
    (
        "/issue",
        409,
        "Multiple concurrent idempotent requests in progress. Please retry after a short delay.",
        "concurrent duplicates all get the original answer (tested in api.rs)",
    ),
    (
        "/revoke",
        401,
        "The original clientId is different to the clientId in the request",
        "another client's entry is 403, the same answer as an absent one, so nobody can probe",
    ),
    (
        "/revoke",
        404,
        "Entry not found in status list table",
        "an absent entry is 403 (as above)",
    ),
    (
        "/revoke",
        500,
        "Error querying database for status list entry",
        "500 bodies are generic",
    ),
    (
        "/revoke",
        500,
        "Error updating revokedAt field",
        "500 bodies are generic",
    ),
];

/// Strings the contract README adds where the spec is silent for that path.
const DECIDED_IN_ADDITION: &[(&str, u16, &str)] = &[
    ("/issue", 400, "Invalid iat in Payload"),
    ("/issue", 400, "Invalid jti in Payload"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_of_issue_and_revoke() {
    // A server of its own: the 503s of /revoke come from stopping it.
    let mut env = Env::with_own_server().await;
    let private = spec("crs-private-spec.yaml");
    let mut produced: BTreeSet<(String, u16, String)> = BTreeSet::new();
    let (uri, idx) = env.issue("a").await;
    let now = unix_now();
    let iss = env.issuers.clone();
    let h = Issuers::header("a");
    let issue = Issuers::issue_claims("a");
    let revoke = Issuers::revoke_claims("a", &uri, idx);
    let with = |base: &Value, key: &str, v: Value| {
        let mut c = base.clone();
        c[key] = v;
        c
    };
    let without = |base: &Value, key: &str| {
        let mut c = base.clone();
        c.as_object_mut().expect("object").remove(key);
        c
    };

    // (path, content type, body) cases; the expected answer is whatever the spec lists
    // for it, checked below against the set of documented strings.
    let mut cases: Vec<(&str, Option<&str>, String)> = Vec::new();
    for (path, claims) in [("/issue", &issue), ("/revoke", &revoke)] {
        let good = iss.sign("a", &h, claims);
        cases.push((path, None, good.clone()));
        cases.push((path, Some("text/plain"), good.clone()));
        cases.push((path, Some("application/jwt"), "not a jwt".into()));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &without(&h, "kid"), claims),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &with(&h, "kid", json!("unknown")), claims),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &without(&h, "typ"), claims),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &with(&h, "typ", json!("JOSE+JSON")), claims),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &without(&h, "alg"), claims),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &with(&h, "alg", json!("RS256")), claims),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &h, &without(claims, "iss")),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &h, &with(claims, "iss", json!("nobody"))),
        ));
        // Signed by client c's key, claiming to be a.
        cases.push((path, Some("application/jwt"), iss.sign("c", &h, claims)));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &h, &without(claims, "iat")),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &h, &with(claims, "iat", json!(now + 3600))),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign("a", &h, &without(claims, "jti")),
        ));
        cases.push((
            path,
            Some("application/jwt"),
            iss.sign(
                "a",
                &h,
                &with(claims, "jti", json!("BCEA4E51-6ECA-4547-8D18-4B971B72C146")),
            ),
        ));
    }
    for bad in [
        json!(now - 1),
        json!(now + 2 * 31_536_000),
        json!("tomorrow"),
        json!(1.5e9),
    ] {
        cases.push((
            "/issue",
            Some("application/jwt"),
            iss.sign("a", &h, &with(&issue, "statusExpiry", bad)),
        ));
    }
    cases.push((
        "/issue",
        Some("application/jwt"),
        iss.sign("a", &h, &without(&issue, "statusExpiry")),
    ));
    // The accepted request above, replayed with a changed statusExpiry.
    let first = iss.sign("a", &h, &issue);
    cases.push(("/issue", Some("application/jwt"), first.clone()));
    cases.push((
        "/issue",
        Some("application/jwt"),
        iss.sign("a", &h, &with(&issue, "statusExpiry", json!(now + 7200))),
    ));
    for bad in [json!(-1), json!(1.5), json!("3")] {
        cases.push((
            "/revoke",
            Some("application/jwt"),
            iss.sign("a", &h, &with(&revoke, "idx", bad)),
        ));
    }
    let huge = with(&revoke, "idx", json!(0))
        .to_string()
        .replace("\"idx\":0", "\"idx\":18446744073709551616");
    cases.push((
        "/revoke",
        Some("application/jwt"),
        iss.sign_text("a", &h.to_string(), &huge),
    ));
    cases.push((
        "/revoke",
        Some("application/jwt"),
        iss.sign("a", &h, &without(&revoke, "idx")),
    ));
    cases.push((
        "/revoke",
        Some("application/jwt"),
        iss.sign("a", &h, &without(&revoke, "uri")),
    ));
    cases.push((
        "/revoke",
        Some("application/jwt"),
        iss.sign("a", &h, &with(&revoke, "uri", json!("not a uri"))),
    ));
    cases.push((
        "/revoke",
        Some("application/jwt"),
        iss.sign(
            "a",
            &h,
            &with(&revoke, "uri", json!("https://elsewhere.example/x/ABC")),
        ),
    ));

    for (path, ct, body) in cases {
        let (status, json) = env.post(path, ct, body).await;
        let schema = response_schema(&private, path, "post", status);
        validate(&private, &schema, &json, &format!("{path} {status}"));
        if let Some(d) = json["error_description"].as_str() {
            produced.insert((path.to_owned(), status, d.to_owned()));
        }
    }

    // 403 (another client's entry, and an absent one) and both 202s.
    let (status, body) = env.revoke("c", &uri, idx).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("FORBIDDEN")));
    produced.insert((
        "/revoke".into(),
        status,
        body["error_description"].as_str().expect("d").into(),
    ));
    for message in [
        "Request processed for revocation",
        "Credential already revoked",
    ] {
        let (status, body) = env.revoke("a", &uri, idx).await;
        assert_eq!((status, body["message"].as_str()), (202, Some(message)));
        validate(
            &private,
            &response_schema(&private, "/revoke", "post", 202),
            &body,
            "/revoke 202",
        );
    }

    // 503: a pool without capacity.
    let (status, body) = env.try_issue("d").await;
    assert_eq!(status, 503);
    produced.insert((
        "/issue".into(),
        status,
        body["error_description"].as_str().expect("d").into(),
    ));

    // 500: the database answers, but not as the service expects.
    env.sql()
        .await
        .batch_execute("ALTER TABLE entries RENAME TO entries_gone")
        .await
        .expect("rename");
    for path in ["/issue", "/revoke"] {
        let body = if path == "/issue" {
            env.issuers.issue_jwt("a")
        } else {
            iss.sign("a", &h, &Issuers::revoke_claims("a", &uri, idx))
        };
        let (status, json) = env.post(path, Some("application/jwt"), body).await;
        assert_eq!(status, 500, "{path}: {json}");
        validate(
            &private,
            &response_schema(&private, path, "post", 500),
            &json,
            "500",
        );
        produced.insert((
            path.to_owned(),
            status,
            json["error_description"].as_str().expect("d").into(),
        ));
    }
    env.sql()
        .await
        .batch_execute("ALTER TABLE entries_gone RENAME TO entries")
        .await
        .expect("rename back");

    // 503 on both: the database is down.
    tokio::task::block_in_place(|| {
        env.db
            .server_mut()
            .expect("own server")
            .stop()
            .expect("stop")
    });
    for path in ["/issue", "/revoke"] {
        let body = if path == "/issue" {
            env.issuers.issue_jwt("a")
        } else {
            iss.sign("a", &h, &Issuers::revoke_claims("a", &uri, idx))
        };
        let (status, json) = env.post(path, Some("application/jwt"), body).await;
        assert_eq!(status, 503, "{path}: {json}");
        validate(
            &private,
            &response_schema(&private, path, "post", 503),
            &json,
            "503",
        );
        produced.insert((
            path.to_owned(),
            status,
            json["error_description"].as_str().expect("d").into(),
        ));
    }

    let documented = documented_errors(&private);
    let exempt: BTreeSet<(String, u16, String)> = DECIDED_OTHERWISE
        .iter()
        .map(|(p, s, d, _)| ((*p).to_owned(), *s, (*d).to_owned()))
        .collect();
    let missing: Vec<_> = documented
        .difference(&produced)
        .filter(|d| !exempt.contains(*d))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never produced: {missing:#?}"
    );
    let added: BTreeSet<(String, u16, String)> = DECIDED_IN_ADDITION
        .iter()
        .map(|(p, s, d)| ((*p).to_owned(), *s, (*d).to_owned()))
        .collect();
    let undocumented: Vec<_> = produced
        .difference(&documented)
        // 500 bodies are generic by decision.
        .filter(|d| !added.contains(*d) && d.1 != 500)
        .collect();
    assert!(
        undocumented.is_empty(),
        "produced but not in the spec: {undocumented:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_status_of_the_token_list() {
    let env = Env::start().await;
    let public = spec("crs-public-spec.yaml");
    let (uri, _) = env.issue("a").await;
    let id = uri.rsplit('/').next().expect("id").to_owned();
    let url = format!("{}/t/{id}", env.worker.url);
    // 200, once the publisher has rendered the new list.
    let resp = statuslist_testkit::eventually_every(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(10),
        "the list published",
        || async {
            let resp = env.http.get(&url).send().await.expect("get");
            (resp.status() == 200).then_some(resp)
        },
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "application/statuslist+jwt");
    let body = Value::String(resp.text().await.expect("body"));
    let ok = &public["paths"]["/t/{statusListIdentifier}"]["get"]["responses"]["200"]["content"]["application/statuslist+jwt"]
        ["schema"];
    validate(&public, ok, &body, "/t 200");

    for missing in ["000000000000", "not-an-id", &id.to_lowercase()] {
        let resp = env.get(&format!("/t/{missing}")).await;
        assert_eq!(resp.status(), 404);
        let json: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
        assert_eq!(
            json,
            json!({"error": "NOT_FOUND", "error_description": "Status List not found for endpoint uri"})
        );
    }

    // 500: the database answers wrongly for a list not in memory (a worker that has not
    // served it yet; unknown ids are 404 from memory, so it is the real list's id).
    let cold = TestWorker::start(
        &env.db.url,
        vec![statuslist_format::SigningKey::generate().expect("key")],
        "cold",
    )
    .await;
    env.sql()
        .await
        .batch_execute("ALTER TABLE artifacts RENAME TO artifacts_gone")
        .await
        .expect("rename");
    let resp = env
        .http
        .get(format!("{}/t/{id}", cold.url))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 500);
    let json: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    let schema = &public["paths"]["/t/{statusListIdentifier}"]["get"]["responses"]["500"]["content"]
        ["application/json"]["schema"];
    validate(&public, schema, &json, "/t 500");
    assert_eq!(json["error"], "INTERNAL_SERVER_ERROR");
    env.sql()
        .await
        .batch_execute("ALTER TABLE artifacts_gone RENAME TO artifacts")
        .await
        .expect("rename back");
}

/// `contract/statuslist-extensions.yaml`: every documented answer of `/revoke-batch`,
/// `/a/{id}` and `/t/{id}?time=` produced by a real request, each body valid against its
/// schema, and every documented `error_description` produced (and no other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_answer_of_the_extensions() {
    let env = Env::start().await;
    let ext = spec("statuslist-extensions.yaml");
    let schema =
        |path: &str, method: &str, status: u16| response_schema(&ext, path, method, status);
    let (uri, idx) = env.issue("a").await;
    let (foreign_uri, foreign_idx) = env.issue("c").await;
    let batch = |header: &Value, entries: Option<Value>| {
        let mut claims = json!({
            "iss": "a",
            "iat": unix_now(),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(entries) = entries {
            claims["entries"] = entries;
        }
        env.issuers.sign("a", header, &claims)
    };
    let header = Issuers::header("a");
    let post = |body: String| env.post("/revoke-batch", Some("application/jwt"), body);
    let mut produced = BTreeSet::new();
    let mut seen = |status: u16, body: &Value, path: &str, method: &str| {
        validate(
            &ext,
            &schema(path, method, status),
            body,
            &format!("{path} {status}"),
        );
        if let Some(d) = body["error_description"].as_str() {
            produced.insert((path.to_owned(), status, d.to_owned()));
        }
    };

    let (status, body) = post(batch(&header, Some(json!([{"uri": uri, "idx": idx}])))).await;
    assert_eq!(status, 202, "{body}");
    seen(status, &body, "/revoke-batch", "post");
    for entries in [
        None,
        Some(json!([])),
        Some(json!([{"url": uri, "idx": idx}])),
        Some(json!([{"uri": uri, "index": idx}])),
        Some(json!([{"uri": uri, "idx": -1}])),
        Some(json!([{"uri": "not a uri", "idx": 1}])),
        Some(json!([{"uri": uri, "idx": idx}, {"uri": foreign_uri, "idx": foreign_idx}])),
    ] {
        let (status, body) = post(batch(&header, entries)).await;
        assert!(status == 400 || status == 403, "{body}");
        seen(status, &body, "/revoke-batch", "post");
    }
    let (status, body) = post_declared(&env.worker.url, "/revoke-batch", 262_145).await;
    seen(status, &body, "/revoke-batch", "post");
    let mut unknown_kid = header.clone();
    unknown_kid["kid"] = json!("no-such-key");
    let (status, body) = post(batch(&unknown_kid, Some(json!([{"uri": uri, "idx": idx}])))).await;
    assert_eq!(status, 401, "{body}");
    seen(status, &body, "/revoke-batch", "post");

    // Suspension and reinstatement, in pools that allow it (client d's does not).
    env.allow_suspension().await;
    let (other_uri, other_idx) = env.issue("a").await;
    for (path, client, target_idx, want) in [
        ("/reinstate", "a", other_idx, 202),
        ("/suspend", "a", other_idx, 202),
        ("/suspend", "a", other_idx, 202),
        ("/reinstate", "a", other_idx, 202),
        ("/suspend", "c", other_idx, 403),
        ("/reinstate", "c", other_idx, 403),
        ("/suspend", "d", other_idx, 403),
        ("/reinstate", "d", other_idx, 403),
        // Revoked by the batch above: final.
        ("/suspend", "a", idx, 409),
        ("/reinstate", "a", idx, 409),
    ] {
        let target = if target_idx == idx { &uri } else { &other_uri };
        let (status, body) = env.change_status(path, client, target, target_idx).await;
        assert_eq!(status, want, "{path} {client}: {body}");
        seen(status, &body, path, "post");
    }
    for path in ["/suspend", "/reinstate"] {
        let claims = |uri: &str, idx: Option<u64>| {
            let mut c = json!({"iss": "a", "iat": unix_now(), "jti": uuid::Uuid::new_v4().to_string(), "uri": uri});
            if let Some(idx) = idx {
                c["idx"] = json!(idx);
            }
            env.issuers.sign("a", &header, &c)
        };
        for jwt in [
            claims(&other_uri, None),
            claims("ftp://x/t/ABCDEF012345", Some(1)),
        ] {
            let (status, body) = env.post(path, Some("application/jwt"), jwt).await;
            assert_eq!(status, 400, "{body}");
            seen(status, &body, path, "post");
        }
        let mut unknown_kid = header.clone();
        unknown_kid["kid"] = json!("no-such-key");
        let jwt = env.issuers.sign(
            "a",
            &unknown_kid,
            &Issuers::revoke_claims("a", &other_uri, other_idx),
        );
        let (status, body) = env.post(path, Some("application/jwt"), jwt).await;
        assert_eq!(status, 401, "{body}");
        seen(status, &body, path, "post");
    }

    let aggregation = format!("/a/{}", statuslist_worker::aggregation::id("tok"));
    let resp = env.get(&aggregation).await;
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    seen(200, &body, "/a/{id}", "get");
    let resp = env.get("/a/000000000000").await;
    assert_eq!(resp.status(), 404);
    let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    seen(404, &body, "/a/{id}", "get");
    let path = uri.strip_prefix(&env.worker.url).expect("local");
    let resp = env.get(&format!("{path}?time=1686925000")).await;
    assert_eq!(resp.status(), 501);
    let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    seen(501, &body, "/t/{id}", "get");

    let mut documented = BTreeSet::new();
    for (path, method) in [
        ("/revoke-batch", "post"),
        ("/suspend", "post"),
        ("/reinstate", "post"),
        ("/a/{id}", "get"),
        ("/t/{id}", "get"),
    ] {
        for (status, r) in ext["paths"][path][method]["responses"]
            .as_object()
            .expect("responses")
        {
            let examples = r["content"]["application/json"]["examples"].as_object();
            for (_, ex) in examples.into_iter().flatten() {
                if let Some(d) = ex["value"]["error_description"].as_str() {
                    documented.insert((
                        path.to_owned(),
                        status.parse().expect("status"),
                        d.to_owned(),
                    ));
                }
            }
        }
    }
    // The 401's texts are /revoke's (documented there); the rest is one to one.
    produced.retain(|(_, status, _)| *status != 401);
    assert_eq!(produced, documented);
}
