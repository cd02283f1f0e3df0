//! `statuslist dev-issuer`: a demo issuer for development clusters (Tilt, kind). It holds
//! a key made at start, serves its JWKS (the URI the development StatusLists register),
//! and signs and forwards `/issue`, `/revoke`, `/suspend` and `/reinstate` to the service,
//! so a developer can try
//! the whole flow with curl and nothing built on their machine:
//!
//! - `POST /issue[?client=ID]` → the service's answer to a fresh signed request;
//! - `POST /revoke?uri=URI&idx=N[&client=ID]` → likewise, and `/suspend`, `/reinstate`
//!   (pools with `suspension: true`);
//! - `GET /check?uri=URI&idx=N` → the entry's status in the list as the service serves
//!   it, verified against the service's JWKS (fetched from `--service-url`: the list's
//!   own URI may name an address only the developer's machine reaches);
//! - `GET /jwks.json`, `GET /healthz`.
//!
//! Never for production: anyone who reaches it can issue and revoke as its clients.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use statuslist_format::SigningKey;
use statuslist_format::keys::jwks;

use crate::client::{http, issue_claims, request_jwt, revoke_claims, split_uri, without_url};

#[derive(Debug, clap::Args)]
pub struct DevIssuerArgs {
    /// Where to listen.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8082")]
    listen_addr: SocketAddr,
    /// The service's base URL as this process reaches it, e.g. http://statuslist-worker.
    #[arg(long, env = "SERVICE_URL")]
    service_url: String,
    /// The client ids it signs as (the first is the default); each StatusList that
    /// names this issuer's JWKS registers one of them.
    #[arg(
        long = "client-id",
        env = "CLIENT_IDS",
        value_delimiter = ',',
        default_value = "demo-token-issuer,demo-bitstring-issuer"
    )]
    client_ids: Vec<String>,
    /// Log format (the chart passes its `logFormat`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: statuslist_process::LogFormat,
}

struct Issuer {
    key: SigningKey,
    service_url: String,
    client_ids: Vec<String>,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct Which {
    client: Option<String>,
    uri: Option<String>,
    idx: Option<u64>,
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// A request this issuer cannot sign: answered 400 with its reason.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        problem(StatusCode::BAD_REQUEST, self.0)
    }
}

impl Issuer {
    fn client(&self, which: &Which) -> Result<String, BadRequest> {
        match &which.client {
            None => Ok(self.client_ids[0].clone()),
            Some(c) if self.client_ids.contains(c) => Ok(c.clone()),
            Some(c) => Err(BadRequest(format!(
                "unknown client {c}: one of {}",
                self.client_ids.join(", ")
            ))),
        }
    }

    fn entry<'a>(&self, which: &'a Which) -> Result<(&'a str, u64), BadRequest> {
        match (&which.uri, which.idx) {
            (Some(uri), Some(idx)) => Ok((uri.as_str(), idx)),
            _ => Err(BadRequest(
                "uri and idx are required (?uri=...&idx=...)".into(),
            )),
        }
    }

    /// Signs `claims` and sends them to the service; its answer goes back unchanged.
    async fn forward(&self, path: &str, claims: Value) -> Response {
        let jwt = match request_jwt(&self.key, self.key.kid(), &claims) {
            Ok(jwt) => jwt,
            Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        let url = format!("{}{path}", self.service_url);
        let sent = self
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/jwt")
            .body(jwt)
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                return problem(
                    StatusCode::BAD_GATEWAY,
                    format!("{url}: {}", without_url(&e)),
                );
            }
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        match answer.bytes().await {
            Ok(body) => {
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(e) => problem(
                StatusCode::BAD_GATEWAY,
                format!("{url}: {}", without_url(&e)),
            ),
        }
    }
}

async fn issue(State(issuer): State<Arc<Issuer>>, Query(which): Query<Which>) -> Response {
    match issuer.client(&which) {
        Ok(client) => issuer.forward("/issue", issue_claims(&client, None)).await,
        Err(bad) => bad.into_response(),
    }
}

async fn revoke(State(issuer): State<Arc<Issuer>>, Query(which): Query<Which>) -> Response {
    about_entry(&issuer, &which, "/revoke").await
}

async fn suspend(State(issuer): State<Arc<Issuer>>, Query(which): Query<Which>) -> Response {
    about_entry(&issuer, &which, "/suspend").await
}

async fn reinstate(State(issuer): State<Arc<Issuer>>, Query(which): Query<Which>) -> Response {
    about_entry(&issuer, &which, "/reinstate").await
}

/// `path` (`/revoke`, `/suspend`, `/reinstate`) for the entry `which` names.
async fn about_entry(issuer: &Issuer, which: &Which, path: &str) -> Response {
    let claims = issuer.client(which).and_then(|client| {
        issuer
            .entry(which)
            .map(|(uri, idx)| revoke_claims(&client, uri, idx))
    });
    match claims {
        Ok(claims) => issuer.forward(path, claims).await,
        Err(bad) => bad.into_response(),
    }
}

async fn check(State(issuer): State<Arc<Issuer>>, Query(which): Query<Which>) -> Response {
    let (uri, idx) = match issuer.entry(&which) {
        Ok(e) => e,
        Err(bad) => return bad.into_response(),
    };
    let path = match split_uri(uri) {
        Ok((base, _)) => &uri[base.len()..],
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let from = format!("{}{path}", issuer.service_url);
    let jwks_url = format!("{}/.well-known/jwks.json", issuer.service_url);
    match crate::client::verified_status(&issuer.http, uri, &from, idx, &jwks_url).await {
        Ok(status) => (StatusCode::OK, format!("{status}\n")).into_response(),
        Err(e) => problem(StatusCode::BAD_GATEWAY, e),
    }
}

pub async fn run(args: DevIssuerArgs) -> Result<(), String> {
    let _telemetry = statuslist_process::init_tracing(args.log_format, "statuslist-dev-issuer")?;
    if args.client_ids.is_empty() {
        return Err("at least one --client-id".into());
    }
    let key = SigningKey::generate().map_err(|e| e.to_string())?;
    let doc = serde_json::to_value(jwks([&key])).map_err(|e| e.to_string())?;
    let issuer = Arc::new(Issuer {
        key,
        service_url: args.service_url.trim_end_matches('/').to_owned(),
        client_ids: args.client_ids,
        http: http()?,
    });
    let app = Router::new()
        .route(
            "/jwks.json",
            get(move || std::future::ready(axum::Json(doc.clone()))),
        )
        .route("/healthz", get(|| std::future::ready("ok")))
        .route("/issue", post(issue))
        .route("/revoke", post(revoke))
        .route("/suspend", post(suspend))
        .route("/reinstate", post(reinstate))
        .route("/check", get(check))
        .with_state(issuer.clone());
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .map_err(|e| format!("{}: {e}", args.listen_addr))?;
    tracing::info!(
        addr = %args.listen_addr,
        service = %issuer.service_url,
        kid = %issuer.key.kid(),
        clients = %issuer.client_ids.join(","),
        "demo issuer running: POST /issue, POST /revoke?uri=&idx= (and /suspend, /reinstate), GET /check?uri=&idx="
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(statuslist_process::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
