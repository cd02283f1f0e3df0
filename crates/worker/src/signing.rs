//! The service's own signing keys: PKCS#8 PEM files in a directory (a mounted Secret),
//! re-read when the directory changes (a Secret updates in place; no restart). Every key
//! is published; which one signs is the publisher's choice (see `publisher`): the newest
//! (the name sorting last: name keys by date, `2026-11.pem`) once verifiers have had time
//! to see it. File names, unlike modification times, are the same in every pod.

use statuslist_process::fingerprint;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use statuslist_format::SigningKey;
use statuslist_format::keys::{Jwks, jwks};

/// `Cache-Control: max-age` of the JWKS by default, and so how long a new key is
/// announced in it before it signs: a verifier holding the previous JWKS has refreshed it
/// by then.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// How often the key directory is checked for changes, by default.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

type Keys = Arc<Vec<Arc<SigningKey>>>;

#[derive(Debug)]
pub struct SigningKeys {
    /// Newest first.
    keys: RwLock<Keys>,
    /// Where they come from.
    source: Source,
    seen: RwLock<Vec<(PathBuf, Option<SystemTime>, u64)>>,
    /// The JWKS `max-age`, and the announcement period of a new key.
    pub jwks_max_age: Duration,
    pub reload_every: Duration,
}

/// Where the keys come from.
#[derive(Debug)]
enum Source {
    /// Generated at start (development).
    Generated,
    /// PKCS#8 PEM files in a directory (a mounted Secret).
    Dir(PathBuf),
    /// Key pairs in a PKCS#11 token: only their public halves are here.
    Token(Arc<statuslist_pkcs11::Token>),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Token(#[from] statuslist_pkcs11::Pkcs11Error),
    #[error("cannot read signing key directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("signing key {0}: {1}")]
    Key(String, String),
    #[error("no signing key (*.pem) in {0}")]
    Empty(String),
}

fn read_dir(dir: &Path) -> Result<Vec<Arc<SigningKey>>, KeyError> {
    let shown = dir.display().to_string();
    let mut found: Vec<(String, SigningKey)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| KeyError::Dir(shown.clone(), e))? {
        let entry = entry.map_err(|e| KeyError::Dir(shown.clone(), e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let name = path.display().to_string();
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| KeyError::Key(name.clone(), e.to_string()))?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| KeyError::Key(name.clone(), e.to_string()))?;
        found.push((name, key));
    }
    if found.is_empty() {
        return Err(KeyError::Empty(shown));
    }
    // The name sorting last first.
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found.into_iter().map(|(_, k)| Arc::new(k)).collect())
}

/// The token's service keys, newest label first; a token without one is an error (as an
/// empty key directory is).
fn read_token(token: &Arc<statuslist_pkcs11::Token>) -> Result<Vec<Arc<SigningKey>>, KeyError> {
    let keys = token.keys()?;
    if keys.is_empty() {
        return Err(KeyError::Empty(
            "the PKCS#11 token (create one: statuslist keygen --pkcs11-module ...)".into(),
        ));
    }
    Ok(keys.into_iter().map(|(_, k)| Arc::new(k)).collect())
}

impl SigningKeys {
    pub fn new(keys: Vec<SigningKey>) -> Option<Self> {
        (!keys.is_empty()).then(|| Self {
            keys: RwLock::new(Arc::new(keys.into_iter().map(Arc::new).collect())),
            source: Source::Generated,
            seen: RwLock::default(),
            jwks_max_age: JWKS_MAX_AGE,
            reload_every: RELOAD_EVERY,
        })
    }

    /// Loads every `*.pem` of `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, KeyError> {
        let seen = fingerprint(dir);
        Ok(Self {
            keys: RwLock::new(Arc::new(read_dir(dir)?)),
            source: Source::Dir(dir.to_owned()),
            seen: RwLock::new(seen),
            jwks_max_age: JWKS_MAX_AGE,
            reload_every: RELOAD_EVERY,
        })
    }

    /// The keys of a PKCS#11 token (newest label first), checked again every
    /// `reload_every` as a key directory is.
    pub fn from_token(token: Arc<statuslist_pkcs11::Token>) -> Result<Self, KeyError> {
        let keys = read_token(&token)?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            source: Source::Token(token),
            seen: RwLock::default(),
            jwks_max_age: JWKS_MAX_AGE,
            reload_every: RELOAD_EVERY,
        })
    }

    /// The token the keys are in, if they are in one.
    pub fn token(&self) -> Option<&Arc<statuslist_pkcs11::Token>> {
        match &self.source {
            Source::Token(t) => Some(t),
            _ => None,
        }
    }

    /// Where the keys are, for the start-up log line.
    pub fn origin(&self) -> String {
        match &self.source {
            Source::Generated => "generated at start".into(),
            Source::Dir(dir) => format!("key files in {}", dir.display()),
            Source::Token(token) => format!("PKCS#11 token {}", token.label()),
        }
    }

    /// The kids of every key, newest first.
    pub fn kids(&self) -> Vec<String> {
        self.all().iter().map(|k| k.kid().to_owned()).collect()
    }

    /// Every key, newest first.
    pub fn all(&self) -> Keys {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The newest key.
    pub fn current(&self) -> Arc<SigningKey> {
        // Never empty: construction and reloads refuse an empty set.
        self.all()[0].clone()
    }

    /// The JWKS of every key.
    pub fn jwks(&self) -> Jwks {
        let keys = self.all();
        jwks(keys.iter().map(|k| k.as_ref()))
    }

    /// Re-reads the directory when it changed; a directory that cannot be read (or holds
    /// no valid key) leaves the keys as they were. `Ok(true)` when the keys changed.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let keys = match &self.source {
            Source::Generated => return Ok(false),
            Source::Token(token) => read_token(token)?,
            Source::Dir(dir) => {
                let now = fingerprint(dir);
                if *self.seen.read().unwrap_or_else(|e| e.into_inner()) == now {
                    return Ok(false);
                }
                let keys = read_dir(dir)?;
                *self.seen.write().unwrap_or_else(|e| e.into_inner()) = now;
                keys
            }
        };
        let changed = {
            let old = self.all();
            old.iter().map(|k| k.kid()).ne(keys.iter().map(|k| k.kid()))
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(changed)
    }

    /// Checks the directory every few seconds until the process stops.
    pub async fn watch(self: Arc<Self>) {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(self.reload_every).await;
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(kids = ?self.kids(), "signing keys reloaded");
                    last_error.clear();
                }
                Ok(false) => {}
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        tracing::error!(error = %text, "signing keys unreadable; keeping the keys loaded before");
                        last_error = text;
                    }
                }
            }
        }
    }
}
