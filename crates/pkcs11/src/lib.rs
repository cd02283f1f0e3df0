//! Signing keys that never enter the process: ES256 keys held in a PKCS#11 token (a
//! network HSM, AWS CloudHSM, YubiHSM 2, a cloud KMS through its PKCS#11 library, or
//! SoftHSM2 in development and tests).
//!
//! A key is a pair of token objects with the same label (`CKA_LABEL`, also its `CKA_ID`):
//! the private key (`CKO_PRIVATE_KEY`, EC on P-256, `CKA_SENSITIVE` and not
//! `CKA_EXTRACTABLE`, generated in the token) and its public key. The service's keys are
//! the pairs whose label starts with a prefix (`statuslist-` by default); as with key
//! files, the label sorting last is the newest. Only the public point ever leaves the
//! token.
//!
//! Signing hashes the message here (SHA-256) and asks the module for `CKM_ECDSA` over the
//! digest, which every module of this kind supports (some lack `CKM_ECDSA_SHA256`). Sessions
//! are pooled (at most `sessions`, logged in once); a session that met an error is closed,
//! not pooled, so the next signature opens a fresh one (a token that came back, a network
//! HSM reconnected). Each signature runs on a thread of its own and is waited for at most
//! `sign_timeout`: a module that hangs fails the signature instead of the publisher, and
//! holds at most the pool's sessions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use statuslist_format::keys::ExternalSigner;
use statuslist_format::{FormatError, SigningKey};

/// DER of the P-256 curve's OID (`CKA_EC_PARAMS`).
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// The label prefix of the service's keys, by default.
pub const DEFAULT_PREFIX: &str = "statuslist-";

#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("PKCS#11 module {0}: {1}")]
    Module(String, String),
    #[error("no token labelled {0:?} in the PKCS#11 module (tokens: {1})")]
    NoToken(String, String),
    #[error("PKCS#11: {0}")]
    Call(#[from] CkError),
    #[error("PIN file {0}: {1}")]
    Pin(String, std::io::Error),
    #[error("PKCS#11 key {0}: {1}")]
    Key(String, String),
    #[error("no PKCS#11 session within {0:?} (every session is busy or hung)")]
    Busy(Duration),
    #[error("the PKCS#11 signature did not come back within {0:?}")]
    Timeout(Duration),
}

/// Where the token is and how it is used (worker flags `--pkcs11-*`).
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// The module (shared library) path.
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as `softhsm2-util --show-slots` shows).
    pub token_label: String,
    /// A file holding the user PIN (a mounted Secret): never a flag value, which any
    /// process listing would show. Trailing whitespace is ignored.
    pub pin_file: PathBuf,
    /// Keys are the pairs whose label starts with this.
    pub key_prefix: String,
    /// Sessions at most.
    pub sessions: usize,
    /// How long one signature may take.
    pub sign_timeout: Duration,
}

/// An open token: the module, the slot, the pooled sessions and the signer's health.
pub struct Token {
    ctx: Pkcs11,
    /// The token's slot; found again by label when a session cannot be opened (a token
    /// removed and put back, in this slot or another).
    slot: Mutex<Slot>,
    label: String,
    pin: String,
    key_prefix: String,
    pool: Mutex<Pool>,
    returned: Condvar,
    max_sessions: usize,
    sign_timeout: Duration,
    failing: AtomicBool,
    failures: AtomicU64,
    signatures: AtomicU64,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Session>,
    open: usize,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the PIN.
        f.debug_struct("Token")
            .field("label", &self.label)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// Reads a PIN file: its content without the trailing newline.
pub fn read_pin(path: &std::path::Path) -> Result<String, Pkcs11Error> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end().to_owned())
        .map_err(|e| Pkcs11Error::Pin(path.display().to_string(), e))
}

impl Token {
    /// Loads the module, initialises it and finds the token by its label.
    pub fn open(config: &TokenConfig) -> Result<Arc<Self>, Pkcs11Error> {
        let pin = read_pin(&config.pin_file)?;
        let shown = config.module.display().to_string();
        let ctx = Pkcs11::new(&config.module)
            .map_err(|e| Pkcs11Error::Module(shown.clone(), e.to_string()))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(Pkcs11Error::Module(shown, e.to_string())),
        }
        let slot = find_slot(&ctx, &config.token_label)?;
        Ok(Arc::new(Self {
            ctx,
            slot: Mutex::new(slot),
            label: config.token_label.clone(),
            pin,
            key_prefix: config.key_prefix.clone(),
            pool: Mutex::default(),
            returned: Condvar::new(),
            max_sessions: config.sessions.max(1),
            sign_timeout: config.sign_timeout,
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
        }))
    }

    /// A logged-in session from the pool, or a new one while fewer than the bound are
    /// open; waits (at most the signature bound) for one to come back otherwise.
    fn session(&self) -> Result<Session, Pkcs11Error> {
        let deadline = Instant::now() + self.sign_timeout;
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(session);
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                drop(pool);
                return self.open_session().inspect_err(|_| self.closed());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Pkcs11Error::Busy(self.sign_timeout));
            }
            pool = self
                .returned
                .wait_timeout(pool, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A new logged-in session. When that fails, the module's slots are listed again
    /// (which makes modules such as SoftHSM2 look at their tokens afresh) and the token is
    /// found again by its label, once.
    fn open_session(&self) -> Result<Session, Pkcs11Error> {
        let slot = *self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match self.login(slot) {
            Ok(session) => Ok(session),
            Err(first) => {
                let Ok(again) = find_slot(&self.ctx, &self.label) else {
                    return Err(first);
                };
                *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = again;
                self.login(again)
            }
        }
    }

    fn login(&self, slot: Slot) -> Result<Session, Pkcs11Error> {
        let session = self.ctx.open_rw_session(slot)?;
        match session.login(UserType::User, Some(&AuthPin::new(self.pin.clone().into()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(e.into()),
        }
    }

    /// A session goes back to the pool (`Ok`) or is closed (it met an error).
    fn give_back(&self, session: Session, healthy: bool) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if healthy {
            pool.idle.push(session);
        } else {
            pool.open -= 1;
            drop(pool);
            drop(session);
        }
        self.returned.notify_one();
    }

    fn closed(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.open -= 1;
        self.returned.notify_one();
    }

    /// Runs `f` with a session; the session is pooled again only if `f` succeeded.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let session = self.session()?;
        let result = f(&session);
        self.give_back(session, result.is_ok());
        result
    }

    fn find(
        &self,
        session: &Session,
        template: &[Attribute],
    ) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
        Ok(session.find_objects(template)?)
    }

    /// Every service key of the token (label with the prefix), newest (label sorting
    /// last) first, as signing keys whose private half stays in the token.
    pub fn keys(self: &Arc<Self>) -> Result<Vec<(String, SigningKey)>, Pkcs11Error> {
        let points = self.with_session(|session| {
            let mut found = Vec::new();
            let template = [
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
            ];
            for handle in self.find(session, &template)? {
                let attrs = session
                    .get_attributes(handle, &[AttributeType::Label, AttributeType::EcPoint])?;
                let mut label = None;
                let mut point = None;
                for attr in attrs {
                    match attr {
                        Attribute::Label(l) => label = String::from_utf8(l).ok(),
                        Attribute::EcPoint(p) => point = Some(p),
                        _ => {}
                    }
                }
                if let (Some(label), Some(point)) = (label, point)
                    && label.starts_with(&self.key_prefix)
                {
                    // Only pairs whose private half is there too.
                    let private = self.find(session, &private_template(&label))?;
                    if !private.is_empty() {
                        found.push((label, point));
                    }
                }
            }
            Ok(found)
        })?;
        let mut keys = Vec::new();
        for (label, point) in points {
            let key = self.signing_key(&label, &point)?;
            keys.push((label, key));
        }
        keys.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(keys)
    }

    fn signing_key(
        self: &Arc<Self>,
        label: &str,
        ec_point: &[u8],
    ) -> Result<SigningKey, Pkcs11Error> {
        let point = uncompressed_point(ec_point)
            .ok_or_else(|| Pkcs11Error::Key(label.to_owned(), "not a P-256 public point".into()))?;
        let signer = Arc::new(TokenKey {
            token: self.clone(),
            label: label.to_owned(),
        });
        SigningKey::external(point, signer)
            .map_err(|e| Pkcs11Error::Key(label.to_owned(), e.to_string()))
    }

    /// Generates a P-256 key pair in the token under `label` (which must carry the key
    /// prefix and be new): the private key sensitive, never extractable, for signing only.
    pub fn generate(self: &Arc<Self>, label: &str) -> Result<SigningKey, Pkcs11Error> {
        if !label.starts_with(&self.key_prefix) {
            return Err(Pkcs11Error::Key(
                label.to_owned(),
                format!("the label must start with {:?}", self.key_prefix),
            ));
        }
        let point = self.with_session(|session| {
            if !self
                .find(session, &[Attribute::Label(label.as_bytes().to_vec())])?
                .is_empty()
            {
                return Err(Pkcs11Error::Key(label.to_owned(), "exists already".into()));
            }
            let id = label.as_bytes().to_vec();
            let public = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Label(id.clone()),
                Attribute::Id(id.clone()),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Derive(false),
                Attribute::Label(id.clone()),
                Attribute::Id(id),
            ];
            let (public, _) =
                session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
            match session
                .get_attributes(public, &[AttributeType::EcPoint])?
                .pop()
            {
                Some(Attribute::EcPoint(p)) => Ok(p),
                _ => Err(Pkcs11Error::Key(label.to_owned(), "no public point".into())),
            }
        })?;
        self.signing_key(label, &point)
    }

    /// What the module answers when asked for the private key's value (`CKA_VALUE`):
    /// `Ok(bytes)` would mean the key can leave the token; a sensitive key's is refused
    /// (`CKR_ATTRIBUTE_SENSITIVE`), which comes back as an error naming the refusal.
    pub fn private_value(&self, label: &str) -> Result<Vec<u8>, Pkcs11Error> {
        self.with_session(|session| {
            let handle = *self
                .find(session, &private_template(label))?
                .first()
                .ok_or_else(|| Pkcs11Error::Key(label.to_owned(), "not in the token".into()))?;
            let info = session.get_attribute_info(handle, &[AttributeType::Value])?;
            match info.first() {
                Some(AttributeInfo::Available(_)) => {
                    match session
                        .get_attributes(handle, &[AttributeType::Value])?
                        .pop()
                    {
                        Some(Attribute::Value(v)) => Ok(v),
                        _ => Err(Pkcs11Error::Key(label.to_owned(), "no value".into())),
                    }
                }
                Some(AttributeInfo::Sensitive) => Err(Pkcs11Error::Key(
                    label.to_owned(),
                    "the module refuses CKA_VALUE: CKR_ATTRIBUTE_SENSITIVE".into(),
                )),
                other => Err(Pkcs11Error::Key(
                    label.to_owned(),
                    format!("CKA_VALUE: {other:?}"),
                )),
            }
        })
    }

    /// The private key's `CKA_EXTRACTABLE` and `CKA_SENSITIVE`, as the module reports them.
    pub fn protection(&self, label: &str) -> Result<(bool, bool), Pkcs11Error> {
        self.with_session(|session| {
            let handle = *self
                .find(session, &private_template(label))?
                .first()
                .ok_or_else(|| Pkcs11Error::Key(label.to_owned(), "not in the token".into()))?;
            let (mut extractable, mut sensitive) = (true, false);
            for attr in session.get_attributes(
                handle,
                &[AttributeType::Extractable, AttributeType::Sensitive],
            )? {
                match attr {
                    Attribute::Extractable(v) => extractable = v,
                    Attribute::Sensitive(v) => sensitive = v,
                    _ => {}
                }
            }
            Ok((extractable, sensitive))
        })
    }

    /// Signs the SHA-256 digest of `message` with the key labelled `label`, on a thread of
    /// its own, waiting at most the signature bound.
    fn sign(self: &Arc<Self>, label: &str, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let digest = digest.as_ref().to_vec();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let token = self.clone();
        let label = label.to_owned();
        std::thread::Builder::new()
            .name("pkcs11-sign".into())
            .spawn(move || {
                let result = token.with_session(|session| {
                    let key = *token
                        .find(session, &private_template(&label))?
                        .first()
                        .ok_or_else(|| {
                            Pkcs11Error::Key(label.clone(), "not in the token".into())
                        })?;
                    Ok(session.sign(&Mechanism::Ecdsa, key, &digest)?)
                });
                let _ = tx.send(result);
            })
            .map_err(|e| Pkcs11Error::Module("signing thread".into(), e.to_string()))?;
        let result = rx
            .recv_timeout(self.sign_timeout)
            .unwrap_or(Err(Pkcs11Error::Timeout(self.sign_timeout)));
        self.record(&result);
        result
    }

    /// One log line per change between signing and failing; the counters every time.
    fn record<T>(&self, result: &Result<T, Pkcs11Error>) {
        match result {
            Ok(_) => {
                self.signatures.fetch_add(1, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("signing through the PKCS#11 module works again");
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "signing through the PKCS#11 module failed: lists that need a new signature wait (served from memory until their exp) and are retried");
                }
            }
        }
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the last signature failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Signatures made and failed since the start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.signatures.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// The slot holding the token labelled `label`.
fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, Pkcs11Error> {
    let mut labels = Vec::new();
    for slot in ctx.get_slots_with_token()? {
        let found = ctx.get_token_info(slot)?.label().trim_end().to_owned();
        if found == label {
            return Ok(slot);
        }
        labels.push(found);
    }
    Err(Pkcs11Error::NoToken(label.to_owned(), labels.join(", ")))
}

fn private_template(label: &str) -> [Attribute; 3] {
    [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// `CKA_EC_POINT` is the DER OCTET STRING of the uncompressed point (most modules) or the
/// bare point (some): `04 || x || y` either way.
fn uncompressed_point(ec_point: &[u8]) -> Option<&[u8]> {
    match ec_point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => Some(rest),
        [0x04, ..] if ec_point.len() == 65 => Some(ec_point),
        _ => None,
    }
}

/// One key of the token, as a signer.
#[derive(Debug)]
struct TokenKey {
    token: Arc<Token>,
    label: String,
}

impl ExternalSigner for TokenKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, FormatError> {
        self.token
            .sign(&self.label, message)
            .map_err(|e| FormatError::Key(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::uncompressed_point;

    #[test]
    fn ec_points_wrapped_or_bare() {
        let mut bare = vec![0x04];
        bare.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&bare);
        assert_eq!(uncompressed_point(&bare), Some(bare.as_slice()));
        assert_eq!(uncompressed_point(&wrapped), Some(bare.as_slice()));
        assert_eq!(uncompressed_point(&bare[..64]), None);
        assert_eq!(uncompressed_point(&[0x02, 1, 2]), None);
    }
}

/// SoftHSM2 tokens for tests: a configuration and token directory of the test's own,
/// a token initialised in it by `softhsm2-util`, and its PIN in a file.
#[cfg(feature = "testing")]
pub mod testing {
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Duration;

    use super::{DEFAULT_PREFIX, TokenConfig};

    /// The SoftHSM2 module: `SOFTHSM2_MODULE`, else where Debian's package puts it.
    pub fn module() -> Option<PathBuf> {
        if let Some(m) = std::env::var_os("SOFTHSM2_MODULE") {
            return Some(PathBuf::from(m));
        }
        [
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    }

    /// A SoftHSM2 configuration with a token directory of its own (removed on drop by
    /// the process that made it).
    #[derive(Debug)]
    pub struct SoftHsm {
        _owned: Option<tempfile::TempDir>,
        dir: PathBuf,
        pub module: PathBuf,
    }

    pub const PIN: &str = "0123456789";

    /// Key objects moved aside by [`SoftHsm::take_keys_away`].
    #[derive(Debug)]
    pub struct KeysAway {
        pub objects: Vec<PathBuf>,
        aside: tempfile::TempDir,
    }

    impl KeysAway {
        /// Puts the objects back, as files the module has not seen (SoftHSM2 keeps those it
        /// found missing as gone). A running module looks again once another process
        /// writes to the token, which is how SoftHSM2's processes tell each other of a
        /// change: the caller does that next.
        pub fn bring_back(self) {
            for o in &self.objects {
                let name = o.file_name().and_then(|n| n.to_str()).expect("name");
                std::fs::rename(
                    self.aside.path().join(name),
                    o.with_file_name(format!("back-{name}")),
                )
                .expect("move back");
            }
        }
    }

    impl SoftHsm {
        /// For the test named `test`. The module reads `SOFTHSM2_CONF` when it is
        /// initialised, and a process cannot safely set its own environment, so the test
        /// runs again in a child process of the same test binary with it set: this returns
        /// `Some` in the child (go on with the test) and `None` in the parent, once the
        /// child passed (and where SoftHSM2 is not installed, with a line saying so).
        pub fn for_test(test: &str) -> Option<Self> {
            if let Some(hsm) = Self::of_parent() {
                return Some(hsm);
            }
            let hsm = Self::new()?;
            let exe = std::env::current_exe().expect("the test binary");
            let out = Command::new(exe)
                .args([test, "--exact", "--nocapture", "--test-threads", "1"])
                .env("SOFTHSM2_CONF", hsm.conf())
                .env("STATUSLIST_SOFTHSM_DIR", &hsm.dir)
                .output()
                .expect("run the test again");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            print!("{text}");
            assert!(
                out.status.success(),
                "{test} failed in its SoftHSM2 process"
            );
            assert!(text.contains("1 passed"), "{test} did not run in the child");
            None
        }

        /// [`SoftHsm::for_test`] for a benchmark binary (`harness = false`): runs it again
        /// with `SOFTHSM2_CONF` set; `Some` in that run.
        pub fn for_bench() -> Option<Self> {
            if let Some(hsm) = Self::of_parent() {
                return Some(hsm);
            }
            let hsm = Self::new()?;
            let status = Command::new(std::env::current_exe().expect("the bench binary"))
                .env("SOFTHSM2_CONF", hsm.conf())
                .env("STATUSLIST_SOFTHSM_DIR", &hsm.dir)
                .status()
                .expect("run the bench again");
            assert!(status.success(), "the bench failed in its SoftHSM2 process");
            None
        }

        /// In the process [`SoftHsm::for_test`] or [`SoftHsm::for_bench`] started: the
        /// configuration its parent made.
        fn of_parent() -> Option<Self> {
            let dir = std::env::var_os("STATUSLIST_SOFTHSM_DIR")?;
            Some(Self {
                _owned: None,
                dir: PathBuf::from(dir),
                module: module().expect("SoftHSM2 module"),
            })
        }

        /// The object files of the tokens other than the tokens' own.
        pub fn key_objects(&self) -> Vec<PathBuf> {
            let mut found = Vec::new();
            for token in std::fs::read_dir(self.token_dir()).expect("tokens") {
                for entry in std::fs::read_dir(token.expect("token").path()).expect("a token") {
                    let path = entry.expect("entry").path();
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    if name.ends_with(".object") && name != "token.object" {
                        found.push(path);
                    }
                }
            }
            found
        }

        /// Moves every key object out of the module's reach (a token pulled, a network
        /// HSM unreachable, as a running module sees it); [`KeysAway::bring_back`] undoes it.
        pub fn take_keys_away(&self) -> KeysAway {
            let objects = self.key_objects();
            assert!(!objects.is_empty(), "no key in the token");
            let aside = tempfile::tempdir().expect("a place aside");
            for o in &objects {
                std::fs::rename(o, aside.path().join(o.file_name().expect("name")))
                    .expect("move away");
            }
            KeysAway { objects, aside }
        }

        /// A configuration and token directory of its own, for processes started with
        /// `SOFTHSM2_CONF` = [`SoftHsm::conf`]; `None` (with a line saying so) where
        /// SoftHSM2 is not installed.
        pub fn new() -> Option<Self> {
            let Some(module) = module() else {
                println!("skipped: SoftHSM2 is not installed (apt-get install softhsm2)");
                return None;
            };
            let owned = tempfile::Builder::new()
                .prefix("statuslist-softhsm-")
                .tempdir()
                .expect("a temporary directory");
            let hsm = Self {
                dir: owned.path().to_owned(),
                _owned: Some(owned),
                module,
            };
            std::fs::create_dir(hsm.token_dir()).expect("token directory");
            std::fs::write(
                hsm.conf(),
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    hsm.token_dir().display()
                ),
            )
            .expect("configuration");
            std::fs::write(hsm.pin_file(), format!("{PIN}\n")).expect("PIN file");
            Some(hsm)
        }

        /// `SOFTHSM2_CONF` for processes that use this configuration.
        pub fn conf(&self) -> PathBuf {
            self.dir.join("softhsm2.conf")
        }

        pub fn token_dir(&self) -> PathBuf {
            self.dir.join("tokens")
        }

        pub fn pin_file(&self) -> PathBuf {
            self.dir.join("pin")
        }

        /// Initialises a token labelled `label` (`softhsm2-util --init-token --free`).
        pub fn init_token(&self, label: &str) {
            let out = Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", self.conf())
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--pin",
                    PIN,
                    "--so-pin",
                    "5432109876",
                ])
                .output()
                .expect("softhsm2-util (apt-get install softhsm2)");
            assert!(
                out.status.success(),
                "softhsm2-util --init-token: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// The worker's configuration for token `label`.
        pub fn config(&self, label: &str) -> TokenConfig {
            TokenConfig {
                module: self.module.clone(),
                token_label: label.to_owned(),
                pin_file: self.pin_file(),
                key_prefix: DEFAULT_PREFIX.to_owned(),
                sessions: 4,
                sign_timeout: Duration::from_secs(5),
            }
        }
    }
}
