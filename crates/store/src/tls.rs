//! TLS to PostgreSQL with rustls, configured from the connection string as libpq does.
//!
//! tokio-postgres understands `sslmode` `disable`, `prefer` and `require` only and
//! verifies nothing by itself; libpq's other TLS parameters are taken out of the
//! connection string here and turned into a rustls client configuration:
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | when the server offers it | checked against the root file when there is one |
//! | `require` | always | checked against the root file when there is one (libpq's compatibility rule) |
//! | `verify-ca` | always | chain checked against the roots |
//! | `verify-full` | always | chain and host name checked |
//!
//! `sslrootcert` is a PEM file of trusted roots (default `~/.postgresql/root.crt` when it
//! exists) or `system` (the platform's roots; implies `verify-full`). `sslcert`/`sslkey`
//! name a client certificate chain and its key (defaults `~/.postgresql/postgresql.crt`
//! and `.key`, when both exist). `allow` behaves as `prefer` (TLS is tried first).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Result, StoreError};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(StoreError::Config(format!(
                    "invalid sslmode {other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    fn tokio_postgres(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Allow | Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS parameters of a connection string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl Params {
    fn set(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// Splits the TLS parameters out of a `postgres://` URL or a key=value string; the rest
/// is returned for tokio-postgres to parse.
pub fn split(conn: &str) -> Result<(String, Params)> {
    let mut params = Params::default();
    for scheme in ["postgres://", "postgresql://"] {
        if conn.starts_with(scheme) {
            let Some((base, query)) = conn.split_once('?') else {
                return Ok((conn.to_owned(), params));
            };
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decoded = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| {
                        StoreError::Config(format!("invalid database URL: {key} is not UTF-8"))
                    })?;
                if !params.set(key, decoded.into_owned()) {
                    kept.push(pair);
                }
            }
            let rest = if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            };
            return Ok((rest, params));
        }
    }
    let mut kept = Vec::new();
    for (key, value, raw) in key_values(conn)? {
        if !params.set(key, value.into_owned()) {
            kept.push(raw);
        }
    }
    Ok((kept.join(" "), params))
}

/// `key = value` pairs of a libpq key/value string (values optionally single-quoted, `\`
/// escaping), each with its original text.
fn key_values(s: &str) -> Result<Vec<(&str, Cow<'_, str>, &str)>> {
    let bad = |why: &str| StoreError::Config(format!("invalid connection string: {why}"));
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i == bytes.len() {
            return Ok(out);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        i = skip_ws(i);
        if bytes.get(i) != Some(&b'=') {
            return Err(bad(&format!("missing = after {key:?}")));
        }
        i = skip_ws(i + 1);
        let mut value = String::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(bad(&format!("unterminated quoted value of {key:?}"))),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => i += 1,
                    _ => {}
                }
                let ch = s[i..].chars().next().ok_or_else(|| bad("truncated"))?;
                value.push(ch);
                i += ch.len_utf8();
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch = s[i..].chars().next().ok_or_else(|| bad("truncated"))?;
                value.push(ch);
                i += ch.len_utf8();
            }
        }
        out.push((key, Cow::Owned(value), &s[start..i]));
    }
}

/// A parsed connection string: tokio-postgres settings and the TLS connector for them.
pub(crate) fn configure(conn: &str) -> Result<(tokio_postgres::Config, Tls)> {
    let (rest, params) = split(conn)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        StoreError::Config(format!("invalid database URL: {}", crate::error::chain(&e)))
    })?;
    let tls = Tls::new(&params)?;
    config.ssl_mode(tls.mode.tokio_postgres());
    Ok((config, tls))
}

fn home_file(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("HOME")?)
        .join(".postgresql")
        .join(name);
    path.is_file().then_some(path)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_roots(path: &Path) -> Result<RootCertStore> {
    let bad = |why: String| StoreError::Config(format!("sslrootcert {}: {why}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificates in the file".into()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(StoreError::Config(
            "sslrootcert=system: no trusted roots found on this system".into(),
        ));
    }
    Ok(roots)
}

/// Connects with TLS as the connection string's `ssl*` parameters say, and names the
/// server in a handshake failure.
#[derive(Clone)]
pub struct Tls {
    mode: Mode,
    inner: MakeRustlsConnect,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("mode", &self.mode).finish()
    }
}

impl Tls {
    pub fn new(params: &Params) -> Result<Self> {
        let system = params.sslrootcert.as_deref() == Some("system");
        let mode = match params.sslmode.as_deref() {
            Some(m) => Mode::parse(m)?,
            None if system => Mode::VerifyFull,
            None => Mode::Prefer,
        };
        if system && mode != Mode::VerifyFull {
            return Err(StoreError::Config(
                "sslrootcert=system requires sslmode=verify-full".into(),
            ));
        }
        let root_file = match params.sslrootcert.as_deref() {
            Some("system") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => home_file("root.crt"),
        };
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = if mode == Mode::Disable {
            Arc::new(NoVerification(provider.clone()))
        } else {
            let roots = match (&root_file, system) {
                (_, true) => Some(system_roots()?),
                (Some(path), _) if path.is_file() => Some(read_roots(path)?),
                (Some(path), _) if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
                    return Err(StoreError::Config(format!(
                        "root certificate file {} does not exist: provide it, use sslrootcert=system, or choose an sslmode that does not verify the server",
                        path.display()
                    )));
                }
                (None, _) if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
                    return Err(StoreError::Config(format!(
                        "sslmode={} needs trusted roots: set sslrootcert (a PEM file, or system)",
                        params.sslmode.as_deref().unwrap_or_default()
                    )));
                }
                (Some(path), _) => {
                    // libpq's rule: without the file, the weaker modes do not verify.
                    tracing::warn!(sslrootcert = %path.display(), ?mode, "root certificate file not found: the server certificate is not verified");
                    None
                }
                _ => None,
            };
            match roots {
                None => Arc::new(NoVerification(provider.clone())),
                Some(roots) => {
                    let webpki = WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| StoreError::Config(format!("trusted roots: {e}")))?;
                    if mode == Mode::VerifyFull {
                        webpki
                    } else {
                        Arc::new(ChainOnly(webpki))
                    }
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        // libpq's rule: a client certificate is sent when its file exists (named, or the
        // default), and then its key must be there too.
        let cert_file = params
            .sslcert
            .clone()
            .map(PathBuf::from)
            .or_else(|| home_file("postgresql.crt"))
            .filter(|p| p.is_file());
        let client_cert = match cert_file {
            None => None,
            Some(cert) => {
                let key = params
                    .sslkey
                    .clone()
                    .map(PathBuf::from)
                    .or_else(|| home_file("postgresql.key"))
                    .filter(|p| p.is_file())
                    .ok_or_else(|| {
                        StoreError::Config(format!(
                            "client certificate {} has no key: set sslkey to its private key file",
                            cert.display()
                        ))
                    })?;
                Some((cert, key))
            }
        };
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(&cert)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| StoreError::Config(format!("sslcert {}: {e}", cert.display())))?;
                if chain.is_empty() {
                    return Err(StoreError::Config(format!(
                        "sslcert {}: no certificates in the file",
                        cert.display()
                    )));
                }
                let key_der = PrivateKeyDer::from_pem_file(&key)
                    .map_err(|e| StoreError::Config(format!("sslkey {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| StoreError::Config(format!("sslcert/sslkey: {e}")))?
            }
        };
        Ok(Self {
            mode,
            inner: MakeRustlsConnect::new(config),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}

type Inner = <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::TlsConnect;
type InnerStream = <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream;

impl MakeTlsConnect<tokio_postgres::Socket> for Tls {
    type Stream = Stream;
    type TlsConnect = Connect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, host: &str) -> std::result::Result<Connect, Self::Error> {
        Ok(Connect {
            host: host.to_owned(),
            inner: MakeTlsConnect::<tokio_postgres::Socket>::make_tls_connect(
                &mut self.inner,
                host,
            )?,
        })
    }
}

/// One handshake, its failure naming the server.
pub struct Connect {
    host: String,
    inner: Inner,
}

/// A handshake failure with the server it was with.
#[derive(Debug, thiserror::Error)]
#[error("TLS with {host}: {source}")]
pub struct HandshakeError {
    host: String,
    #[source]
    source: io::Error,
}

impl TlsConnect<tokio_postgres::Socket> for Connect {
    type Stream = Stream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Stream, HandshakeError>> + Send>>;

    fn connect(self, socket: tokio_postgres::Socket) -> Self::Future {
        let Connect { host, inner } = self;
        Box::pin(async move {
            inner
                .connect(socket)
                .await
                .map(Stream)
                .map_err(|source| HandshakeError { host, source })
        })
    }
}

/// The TLS stream (tokio-postgres-rustls's, with channel binding).
pub struct Stream(InnerStream);

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stream")
    }
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect").field("host", &self.host).finish()
    }
}

impl TlsStream for Stream {
    fn channel_binding(&self) -> ChannelBinding {
        self.0.channel_binding()
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `prefer`/`require` without roots: encryption without authentication of the server,
/// as libpq does (the handshake signatures are still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_split_and_decoded() {
        let (rest, p) = split(
            "postgres://u:p@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem",
        )
        .expect("split");
        assert_eq!(rest, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca b.pem"));
        let (rest, p) = split("postgresql://db/app?sslmode=require").expect("split");
        assert_eq!(
            (rest.as_str(), p.sslmode.as_deref()),
            ("postgresql://db/app", Some("require"))
        );
        let (rest, p) = split("postgres://db/app").expect("split");
        assert_eq!((rest.as_str(), p), ("postgres://db/app", Params::default()));
    }

    #[test]
    fn key_value_parameters_are_split_with_quotes() {
        let (rest, p) =
            split(r"host=db user='a b' sslmode = verify-ca sslrootcert='/x/it\'s.pem' dbname=app")
                .expect("split");
        assert_eq!(rest, "host=db user='a b' dbname=app");
        assert_eq!(p.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/x/it's.pem"));
        assert!(split("host=db sslmode").is_err());
        assert!(split("host='db").is_err());
    }

    #[test]
    fn modes_and_missing_roots_are_reported() {
        let params = |mode: &str, root: Option<&str>| Params {
            sslmode: Some(mode.into()),
            sslrootcert: root.map(Into::into),
            ..Params::default()
        };
        let err = |p: Params| Tls::new(&p).expect_err("must fail").to_string();
        assert!(err(params("verify-everything", None)).contains("invalid sslmode"));
        assert!(err(params("verify-full", Some("/nonexistent/ca.pem"))).contains("does not exist"));
        assert!(err(params("require", Some("system"))).contains("requires sslmode=verify-full"));
        let dir = tempfile::tempdir().expect("dir");
        let cert = dir.path().join("client.crt");
        std::fs::write(&cert, "not used").expect("write");
        assert!(
            err(Params {
                sslcert: Some(cert.display().to_string()),
                sslkey: Some("/nonexistent/client.key".into()),
                ..Params::default()
            })
            .contains("has no key")
        );
        for (mode, expected) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
        ] {
            let tls = Tls::new(&params(mode, None)).expect("mode");
            assert_eq!(tls.mode().tokio_postgres(), expected);
        }
        let (config, tls) = configure("postgres://db/app?sslmode=require").expect("configure");
        assert_eq!(
            (config.get_ssl_mode(), tls.mode()),
            (SslMode::Require, Mode::Require)
        );
        let (config, _) = configure("host=db dbname=app").expect("configure");
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer);
    }
}
