//! The user-side commands: sign and send `/issue` and `/revoke`, verify a published list,
//! make keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use statuslist_format::ListFormat;
use statuslist_format::keys::{Jwks, jwks};
use statuslist_format::unix_now;
use statuslist_format::verify::verify_list;
use statuslist_format::{FormatError, SigningKey, Status};

pub fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

pub fn load_key(path: &Path) -> Result<SigningKey, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Debug, clap::Args)]
pub struct Signer {
    /// Base URL of the service, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// The client's private key (PKCS#8 PEM, P-256).
    #[arg(long)]
    key: PathBuf,
    /// The client id (the JWT's `iss`).
    #[arg(long)]
    client_id: String,
    /// The `kid` in the JWT header; default: the key's RFC 7638 thumbprint.
    #[arg(long)]
    kid: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    #[command(flatten)]
    signer: Signer,
    /// statusExpiry (unix seconds); default: 30 days from now.
    #[arg(long)]
    status_expiry: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    signer: Signer,
    /// The list URI the entry was issued in.
    #[arg(long)]
    uri: String,
    /// The entry's index.
    #[arg(long)]
    idx: u64,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The list URI (`.../t/{ID}` or `.../b/{ID}`).
    #[arg(long, required_unless_present = "all", requires = "idx")]
    uri: Option<String>,
    /// The entry's index.
    #[arg(long, required_unless_present = "all")]
    idx: Option<u64>,
    /// A Status List Aggregation URI (a list's `aggregation_uri`): verifies every list it
    /// names and prints one line each (its statuses counted); exit 1 if any fails.
    #[arg(long, conflicts_with_all = ["uri", "idx"])]
    all: Option<String>,
    /// The service's JWKS; default: `{origin of uri}/.well-known/jwks.json`.
    #[arg(long)]
    jwks: Option<String>,
}

/// A request JWT as the contract wants it: header `{alg: ES256, typ: JWT, kid}`.
pub fn request_jwt(key: &SigningKey, kid: &str, claims: &Value) -> Result<String, String> {
    let b64 = |v: &Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "ES256", "typ": "JWT", "kid": kid})),
        b64(claims)
    );
    let signature = key.sign_raw(input.as_bytes()).map_err(|e| e.to_string())?;
    Ok(format!(
        "{input}.{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
    ))
}

/// Fresh `/issue` claims.
pub fn issue_claims(client_id: &str, status_expiry: Option<i64>) -> Value {
    let now = unix_now();
    json!({
        "iss": client_id,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "statusExpiry": status_expiry.unwrap_or(now + 30 * 86_400),
    })
}

async fn send(signer: &Signer, path: &str, claims: Value) -> Result<(), String> {
    let key = load_key(&signer.key)?;
    let kid = signer.kid.clone().unwrap_or_else(|| key.kid().to_owned());
    let jwt = request_jwt(&key, &kid, &claims)?;
    let url = format!("{}{path}", signer.url.trim_end_matches('/'));
    let response = http()?
        .post(&url)
        .header("content-type", "application/jwt")
        .body(jwt)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", body.trim()));
    }
    println!("{}", body.trim());
    Ok(())
}

/// reqwest's message without the URL it repeats.
pub fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

pub async fn issue(args: IssueArgs) -> Result<(), String> {
    let claims = issue_claims(&args.signer.client_id, args.status_expiry);
    send(&args.signer, "/issue", claims).await
}

/// Fresh `/revoke` claims for entry `idx` of the list at `uri`.
pub fn revoke_claims(client_id: &str, uri: &str, idx: u64) -> Value {
    json!({
        "iss": client_id,
        "iat": unix_now(),
        "jti": uuid::Uuid::new_v4().to_string(),
        "uri": uri,
        "idx": idx,
    })
}

pub async fn revoke(args: RevokeArgs) -> Result<(), String> {
    let claims = revoke_claims(&args.signer.client_id, &args.uri, args.idx);
    send(&args.signer, "/revoke", claims).await
}

/// `POST /suspend` (`reinstate` false) or `/reinstate` of an entry: the same request as
/// `/revoke`.
pub async fn change_status(args: RevokeArgs, reinstate: bool) -> Result<(), String> {
    let claims = revoke_claims(&args.signer.client_id, &args.uri, args.idx);
    let path = if reinstate { "/reinstate" } else { "/suspend" };
    send(&args.signer, path, claims).await
}

/// `(origin, kind, id)` of a list URI.
pub fn split_uri(uri: &str) -> Result<(&str, &str), String> {
    let bad = || format!("{uri} is not a status list URI (http(s)://host/.../t/ID or .../b/ID)");
    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
        return Err(bad());
    }
    let mut parts = uri.rsplitn(3, '/');
    let (_id, kind, base) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    if !matches!(kind, "t" | "b") {
        return Err(bad());
    }
    Ok((base, kind))
}

async fn fetch(client: &reqwest::Client, url: &str, accept: &str) -> Result<Vec<u8>, String> {
    let response = client
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?;
    if !status.is_success() {
        return Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(body.to_vec())
}

/// Verifies the list at `uri` and prints the status of `idx`; `Ok(true)` when VALID.
pub async fn check(args: CheckArgs) -> Result<bool, String> {
    if let Some(aggregation) = &args.all {
        return check_all(aggregation, args.jwks.as_deref()).await;
    }
    let (Some(uri), Some(idx)) = (&args.uri, args.idx) else {
        return Err("--uri and --idx, or --all".into());
    };
    let jwks_url = jwks_of(uri, args.jwks.as_deref())?;
    let status = verified_status(&http()?, uri, uri, idx, &jwks_url).await?;
    println!("{status}");
    Ok(status == Status::VALID)
}

/// The JWKS that verifies the list `uri`: `given`, or the one beside the list.
fn jwks_of(uri: &str, given: Option<&str>) -> Result<String, String> {
    let (base, _) = split_uri(uri)?;
    Ok(given.map_or_else(|| format!("{base}/.well-known/jwks.json"), str::to_owned))
}

/// `check --all`: every list of a Status List Aggregation verified, one line each; a list
/// that fails is reported and the others are still checked (draft -20 section 9).
/// `Ok(true)` when all verify.
async fn check_all(aggregation: &str, jwks: Option<&str>) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        status_lists: Vec<String>,
    }
    let client = http()?;
    let doc: Doc = serde_json::from_slice(&fetch(&client, aggregation, "application/json").await?)
        .map_err(|e| format!("{aggregation}: not a Status List Aggregation: {e}"))?;
    let mut all_ok = true;
    for uri in &doc.status_lists {
        let listed = match jwks_of(uri, jwks) {
            Ok(jwks_url) => verified_list(&client, uri, uri, &jwks_url).await,
            Err(e) => Err(e),
        };
        match listed {
            Ok(list) => {
                let mut counts = std::collections::BTreeMap::<u8, u64>::new();
                for (_, status) in list.non_zero() {
                    *counts.entry(status).or_default() += 1;
                }
                let others: u64 = counts.values().sum();
                let mut line = format!(
                    "{uri}: verified, {} entries: {} VALID",
                    list.len(),
                    list.len() - others
                );
                for (status, n) in counts {
                    line.push_str(&format!(", {n} {}", Status(status)));
                }
                println!("{line}");
            }
            Err(e) => {
                all_ok = false;
                println!("{uri}: FAILED: {e}");
            }
        }
    }
    println!("{} list(s) in {aggregation}", doc.status_lists.len());
    Ok(all_ok)
}

/// The status of `idx` in the list `uri`, fetched from `from` (the same URI, or the same
/// path on another worker), verified against the JWKS at `jwks_url`.
pub async fn verified_status(
    client: &reqwest::Client,
    uri: &str,
    from: &str,
    idx: u64,
    jwks_url: &str,
) -> Result<Status, String> {
    let list = verified_list(client, uri, from, jwks_url).await?;
    Ok(Status(list.get(idx).map_err(|e| e.to_string())?))
}

/// The list `uri`, fetched from `from`, verified against the JWKS at `jwks_url`
/// (signature, subject, expiry) and decoded.
async fn verified_list(
    client: &reqwest::Client,
    uri: &str,
    from: &str,
    jwks_url: &str,
) -> Result<statuslist_format::StatusArray, String> {
    split_uri(uri)?;
    let kind = ListFormat::of_uri(uri).ok_or_else(|| format!("{uri} is not a status list URI"))?;
    let set: Jwks = serde_json::from_slice(&fetch(client, jwks_url, "application/json").await?)
        .map_err(|e| format!("{jwks_url}: not a JWK Set: {e}"))?;
    let body = fetch(client, from, kind.media_type()).await?;
    let text = String::from_utf8(body).map_err(|_| "the list is not a compact JWT".to_owned())?;
    let verified = verify_list(uri, &text, &set).map_err(|e| match e {
        FormatError::Token(m) if m.starts_with("signed by") => {
            format!("the list is {m} ({jwks_url})")
        }
        e => format!("the list does not verify: {e}"),
    })?;
    if verified.exp.is_some_and(|e| e <= unix_now()) {
        return Err("the list has expired".into());
    }
    Ok(verified.list)
}

pub fn keygen(key_path: Option<PathBuf>, jwks_path: Option<PathBuf>) -> Result<(), String> {
    let key = SigningKey::generate().map_err(|e| e.to_string())?;
    let pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
    match key_path {
        Some(path) => write_private(&path, &pem)?,
        None => print!("{pem}"),
    }
    write_jwks(&key, jwks_path)
}

/// `keygen --pkcs11-module ...`: a key pair generated in the token under `label`; only
/// its public JWKS is written.
pub fn keygen_in_token(
    config: &statuslist_pkcs11::TokenConfig,
    label: &str,
    jwks_path: Option<PathBuf>,
) -> Result<(), String> {
    let token = statuslist_pkcs11::Token::open(config).map_err(|e| e.to_string())?;
    let key = token.generate(label).map_err(|e| e.to_string())?;
    eprintln!(
        "generated {label} in token {} (kid {})",
        config.token_label,
        key.kid()
    );
    write_jwks(&key, jwks_path)
}

fn write_jwks(key: &SigningKey, jwks_path: Option<PathBuf>) -> Result<(), String> {
    let doc = serde_json::to_string_pretty(&jwks([key])).map_err(|e| e.to_string())?;
    match jwks_path {
        Some(path) => std::fs::write(&path, format!("{doc}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => println!("{doc}"),
    }
    Ok(())
}

/// Writes a private key readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}
