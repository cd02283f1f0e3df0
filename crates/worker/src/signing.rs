//! The service's own signing keys: PKCS#8 PEM files in a directory (a mounted Secret).
//! The newest file signs; every key is published, so rotation never breaks a verifier.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use statuslist_format::SigningKey;
use statuslist_format::keys::{Jwks, jwks};

#[derive(Debug)]
pub struct SigningKeys {
    /// Newest first.
    keys: Vec<Arc<SigningKey>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("signing key {0}: {1}")]
    Key(String, String),
    #[error("no signing key (*.pem) in {0}")]
    Empty(String),
}

impl SigningKeys {
    pub fn new(keys: Vec<SigningKey>) -> Option<Self> {
        (!keys.is_empty()).then(|| Self {
            keys: keys.into_iter().map(Arc::new).collect(),
        })
    }

    /// Loads every `*.pem` of `dir`; the most recently modified one signs.
    pub fn from_dir(dir: &Path) -> Result<Self, KeyError> {
        let shown = dir.display().to_string();
        let mut found: Vec<(SystemTime, String, SigningKey)> = Vec::new();
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
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((modified, name, key));
        }
        // Newest first; the name breaks ties so every worker picks the same key.
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        Self::new(found.into_iter().map(|(_, _, k)| k).collect()).ok_or(KeyError::Empty(shown))
    }

    /// The key that signs new lists.
    pub fn current(&self) -> Arc<SigningKey> {
        self.keys[0].clone()
    }

    /// The JWKS of every key.
    pub fn jwks(&self) -> Jwks {
        jwks(self.keys.iter().map(|k| k.as_ref()))
    }
}
