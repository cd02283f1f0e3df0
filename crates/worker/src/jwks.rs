//! Issuer keys: each issuer's JWKS, fetched with a timeout and a size limit, cached,
//! refetched on an unknown `kid` at most once per interval, and kept while the endpoint
//! is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use statuslist_format::VerifyingKey;
use tokio::sync::Mutex;

use crate::egress::Egress;
pub use crate::metrics::JwksLabel;

#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Keys older than this are refreshed on the next use.
    pub max_age: Duration,
    /// At most one fetch per issuer in this interval, whatever the misses.
    pub min_refetch_interval: Duration,
    /// Accept `http://` JWKS URIs (local use and tests only).
    pub allow_http: bool,
    /// Non-public ranges JWKS fetches may reach anyway (see [`crate::egress`]).
    pub allow_cidrs: Vec<ipnet::IpNet>,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_bytes: 64 * 1024,
            max_age: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(30),
            allow_http: false,
            allow_cidrs: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("JWKS URI must be https")]
    NotHttps,
    #[error("JWKS URI is not a URL with a host")]
    BadUri,
    #[error(transparent)]
    Refused(#[from] crate::egress::Refused),
    #[error("JWKS fetch failed: {0}")]
    Http(String),
    #[error("JWKS larger than {0} bytes")]
    TooLarge(usize),
    #[error("JWKS is not a JWK Set: {0}")]
    Invalid(String),
}

/// `kid` -> key (`None`: the JWK is not an EC P-256 key, so it can verify nothing here).
type Keys = HashMap<String, Option<Arc<VerifyingKey>>>;

#[derive(Default)]
struct Entry {
    keys: Arc<Keys>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

pub struct JwksCache {
    http: reqwest::Client,
    settings: JwksSettings,
    egress: Egress,
    entries: Mutex<HashMap<String, Arc<Mutex<Entry>>>>,
    /// Each issuer's keys as last fetched, and when: what nearly every request needs,
    /// read without an allocation or an await (a miss, or keys past their age, takes the
    /// entry's lock above, where fetches are decided).
    fresh: std::sync::RwLock<HashMap<String, (Arc<Keys>, Instant)>>,
    /// Failed fetches by JWKS URI (`statuslist_jwks_fetch_failures_total{jwks_uri}`): only
    /// registered issuers' URIs are fetched, so the label set is bounded by them.
    pub failures: Family<JwksLabel, Counter>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a key lookup found.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<VerifyingKey>),
    /// The JWKS has this `kid` but not as a P-256 key.
    Unusable,
    /// No such `kid` (or no JWKS could be fetched).
    Missing,
}

impl JwksCache {
    pub fn new(settings: JwksSettings) -> Result<Self, FetchError> {
        let egress = Egress::new(settings.allow_cidrs.clone());
        Self::with_egress(settings, egress)
    }

    /// With an egress policy of the caller's (tests: one over a resolver of theirs).
    pub fn with_egress(settings: JwksSettings, egress: Egress) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A JWKS endpoint that redirects is refused: the registered URI is the trust anchor.
            .redirect(reqwest::redirect::Policy::none())
            // Every address connected to passes the egress policy; a proxy would hide them.
            .no_proxy()
            .dns_resolver(Arc::new(egress.clone()))
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(Self {
            http,
            settings,
            egress,
            entries: Mutex::default(),
            fresh: Default::default(),
            failures: Family::default(),
        })
    }

    /// The key `kid` of the issuer whose JWKS is at `uri`.
    pub async fn key(&self, uri: &str, kid: &str) -> Lookup {
        {
            let fresh = self
                .fresh
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((keys, fetched)) = fresh.get(uri)
                && fetched.elapsed() < self.settings.max_age
            {
                match keys.get(kid) {
                    Some(Some(key)) => return Lookup::Found(key.clone()),
                    Some(None) => return Lookup::Unusable,
                    // An unknown kid: the entry decides whether to fetch again.
                    None => {}
                }
            }
        }
        let entry = self
            .entries
            .lock()
            .await
            .entry(uri.to_owned())
            .or_default()
            .clone();
        // One fetch per issuer at a time; others wait for its result.
        let mut entry = entry.lock().await;
        let now = Instant::now();
        let fresh = entry
            .fetched
            .is_some_and(|t| now - t < self.settings.max_age);
        let known = entry.keys.contains_key(kid);
        let may_fetch = entry
            .attempted
            .is_none_or(|t| now - t >= self.settings.min_refetch_interval);
        if (!known || !fresh) && may_fetch {
            entry.attempted = Some(now);
            match self.fetch(uri).await {
                Ok(keys) => {
                    entry.keys = Arc::new(keys);
                    entry.fetched = Some(now);
                    self.fresh
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(uri.to_owned(), (entry.keys.clone(), now));
                }
                // Cached keys keep working while the endpoint is down. Fetches are at
                // most one per issuer per `min_refetch_interval`, and so is this line.
                Err(e) => {
                    self.failures
                        .get_or_create(&JwksLabel {
                            jwks_uri: uri.to_owned(),
                        })
                        .inc();
                    if entry.keys.is_empty() {
                        tracing::warn!(jwks_uri = uri, error = %e, "JWKS fetch failed and no keys are cached: this issuer's requests are refused (401) until a fetch succeeds");
                    } else {
                        tracing::warn!(jwks_uri = uri, error = %e, cached = entry.keys.len(), "JWKS fetch failed; using the keys cached before");
                    }
                }
            }
        }
        match entry.keys.get(kid) {
            Some(Some(key)) => Lookup::Found(key.clone()),
            Some(None) => Lookup::Unusable,
            None => Lookup::Missing,
        }
    }

    /// Fetches `uri` once, outside the cache: what the next refresh would meet.
    pub async fn check(&self, uri: &str) -> Result<usize, FetchError> {
        self.fetch(uri).await.map(|keys| keys.len())
    }

    #[tracing::instrument(level = "debug", name = "jwks.fetch", skip_all, fields(otel.kind = "client", url.full = uri))]
    async fn fetch(&self, uri: &str) -> Result<Keys, FetchError> {
        if !(uri.starts_with("https://")
            || (self.settings.allow_http && uri.starts_with("http://")))
        {
            return Err(FetchError::NotHttps);
        }
        let url = reqwest::Url::parse(uri).map_err(|_| FetchError::BadUri)?;
        // An IP literal is never resolved: checked here, before any connection.
        self.egress
            .check_literal(&url.host().ok_or(FetchError::BadUri)?)?;
        // The issuer's endpoint continues the trace of the request that needed its keys.
        let mut headers = reqwest::header::HeaderMap::new();
        statuslist_process::telemetry::inject_current(&mut headers);
        let mut response = self
            .http
            .get(url)
            .headers(headers)
            .send()
            .await
            // The causes name an egress refusal made at resolution.
            .map_err(|e| FetchError::Http(chain(&e)))?;
        if !response.status().is_success() {
            return Err(FetchError::Http(format!("status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.settings.max_bytes as u64)
        {
            return Err(FetchError::TooLarge(self.settings.max_bytes));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?
        {
            if body.len() + chunk.len() > self.settings.max_bytes {
                return Err(FetchError::TooLarge(self.settings.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| FetchError::Invalid(e.to_string()))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                Some((kid, VerifyingKey::from_jwk(jwk).ok().map(Arc::new)))
            })
            .collect())
    }
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}
