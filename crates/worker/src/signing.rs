//! The service's own signing keys: PKCS#8 PEM files in a directory (a mounted Secret).
//! The file whose name sorts last signs (name keys by date: `2026-11.pem`); every key
//! is published, so rotation never breaks a verifier. File names, unlike modification
//! times, are the same in every pod, so all workers sign with the same key.

use std::path::Path;
use std::sync::Arc;

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

    /// Loads every `*.pem` of `dir`; the one whose name sorts last signs.
    pub fn from_dir(dir: &Path) -> Result<Self, KeyError> {
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
        // The name sorting last first.
        found.sort_by(|a, b| b.0.cmp(&a.0));
        Self::new(found.into_iter().map(|(_, k)| k).collect()).ok_or(KeyError::Empty(shown))
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
