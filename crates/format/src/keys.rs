//! ES256 keys: PKCS#8 PEM in, public JWK out, `kid` = RFC 7638 thumbprint.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::FormatError;

/// A JSON Web Key Set document (`{"keys": [...]}`).
pub type Jwks = JwkSet;

/// Where a key's private half lives and signs: in this process, or behind an interface
/// that never lets it out (a PKCS#11 token: see `statuslist-pkcs11`).
pub trait ExternalSigner: Send + Sync + std::fmt::Debug {
    /// The ES256 signature of `message` (SHA-256, then ECDSA on P-256), as `r || s`
    /// (64 bytes).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, FormatError>;
}

enum Private {
    Local(EcdsaKeyPair),
    External(std::sync::Arc<dyn ExternalSigner>),
}

/// A P-256 private key that signs lists (ES256), with its public JWK and `kid`.
pub struct SigningKey {
    private: Private,
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a `-----BEGIN PRIVATE KEY-----` (PKCS#8) P-256 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, FormatError> {
        let parsed =
            pem::parse(pem).map_err(|e| FormatError::Key(format!("not a PEM document: {e}")))?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(FormatError::Key(format!(
                "expected a PKCS#8 \"PRIVATE KEY\" PEM block, found \"{}\"",
                parsed.tag()
            )));
        }
        Self::from_pkcs8_der(parsed.contents())
    }

    /// Loads a PKCS#8 DER P-256 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, FormatError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|e| {
                FormatError::Key(format!("not a PKCS#8 P-256 (ES256) private key: {e}"))
            })?;
        let point = pair.public_key().as_ref();
        let public = VerifyingKey::from_point(point)?;
        Ok(Self {
            private: Private::Local(pair),
            public,
        })
    }

    /// A key whose private half is held elsewhere (`signer`), with its public point
    /// (uncompressed SEC1: `04 || x || y`).
    pub fn external(
        point: &[u8],
        signer: std::sync::Arc<dyn ExternalSigner>,
    ) -> Result<Self, FormatError> {
        Ok(Self {
            private: Private::External(signer),
            public: VerifyingKey::from_point(point)?,
        })
    }

    /// Whether the private half is held outside this process.
    pub fn is_external(&self) -> bool {
        matches!(self.private, Private::External(_))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, FormatError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| FormatError::Key("key generation failed".into()))?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// The key as PKCS#8 PEM (secret material: write it only where secrets belong).
    pub fn to_pkcs8_pem(&self) -> Result<String, FormatError> {
        let Private::Local(pair) = &self.private else {
            return Err(FormatError::Key(
                "the key is held outside this process and cannot be exported".into(),
            ));
        };
        let doc = pair
            .to_pkcs8v1()
            .map_err(|_| FormatError::Key("cannot serialise the key".into()))?;
        Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref())))
    }

    /// RFC 7638 SHA-256 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The public JWK (`kty`, `crv`, `x`, `y`, `kid`, `use: sig`, `alg: ES256`).
    pub fn public_jwk(&self) -> Jwk {
        self.public.jwk()
    }

    /// Signs `claims` as a compact JWS with header `{alg: ES256, typ, kid}` (the header
    /// and claims serialised as `jsonwebtoken` does; ES256's JWS signature is `r || s`).
    pub fn sign_jwt<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, FormatError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.public.kid.clone());
        let json = |v: &dyn erased::Json| v.to_vec().map_err(|e| FormatError::Token(e.to_string()));
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json(&header)?),
            URL_SAFE_NO_PAD.encode(json(claims)?)
        );
        let signature = self.sign_raw(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// Raw ES256 signature (`r || s`, 64 bytes), as COSE wants it.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, FormatError> {
        match &self.private {
            Private::Local(pair) => {
                let sig = pair
                    .sign(&SystemRandom::new(), message)
                    .map_err(|_| FormatError::Key("signing failed".into()))?;
                Ok(sig.as_ref().to_vec())
            }
            Private::External(signer) => {
                let sig = signer.sign(message)?;
                if sig.len() != 64 {
                    return Err(FormatError::Key(format!(
                        "the signer answered {} bytes, not an ES256 signature (64)",
                        sig.len()
                    )));
                }
                Ok(sig)
            }
        }
    }
}

mod erased {
    /// Serialising either the header or the claims through one closure.
    pub trait Json {
        fn to_vec(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize + ?Sized> Json for T {
        fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
    }
}

/// A P-256 public key with its `kid`.
#[derive(Clone)]
pub struct VerifyingKey {
    /// Uncompressed SEC1 point: `04 || x || y`.
    point: Vec<u8>,
    /// The point parsed and checked once, not at every verification (parsing and
    /// validating a point costs a good part of a verification).
    parsed: ParsedPublicKey,
    kid: String,
    decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.point == other.point
    }
}

impl VerifyingKey {
    fn from_point(point: &[u8]) -> Result<Self, FormatError> {
        if point.len() != 65 || point[0] != 0x04 {
            return Err(FormatError::Key(
                "expected an uncompressed P-256 point".into(),
            ));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let decoding = DecodingKey::from_ec_components(&x, &y)?;
        let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .map_err(|e| FormatError::Key(format!("not a P-256 point: {e}")))?;
        let mut key = Self {
            point: point.to_vec(),
            parsed,
            kid: String::new(),
            decoding,
        };
        key.kid = key.jwk().thumbprint(ThumbprintHash::SHA256)?;
        Ok(key)
    }

    /// The key as a PEM `PUBLIC KEY` (X.509 SubjectPublicKeyInfo, RFC 5480).
    pub fn to_spki_pem(&self) -> String {
        // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (point) }: for an
        // uncompressed P-256 point everything but the point is this fixed prefix.
        const PREFIX: [u8; 26] = [
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        let mut der = PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    /// A key from a JWK; only `kty: EC`, `crv: P-256` is accepted. The `kid` is always
    /// recomputed as the thumbprint, whatever the JWK claims.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, FormatError> {
        let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
            return Err(FormatError::Key("expected an EC key".into()));
        };
        if ec.curve != EllipticCurve::P256 {
            return Err(FormatError::Key("expected curve P-256".into()));
        }
        let x = URL_SAFE_NO_PAD.decode(&ec.x)?;
        let y = URL_SAFE_NO_PAD.decode(&ec.y)?;
        if x.len() != 32 || y.len() != 32 {
            return Err(FormatError::Key(
                "P-256 coordinates must be 32 bytes".into(),
            ));
        }
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Self::from_point(&point)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The uncompressed SEC1 point (`04 || x || y`).
    pub fn point(&self) -> &[u8] {
        &self.point
    }

    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            common: Default::default(),
            algorithm: AlgorithmParameters::EllipticCurve(
                jsonwebtoken::jwk::EllipticCurveKeyParameters {
                    key_type: Default::default(),
                    curve: EllipticCurve::P256,
                    x: URL_SAFE_NO_PAD.encode(&self.point[1..33]),
                    y: URL_SAFE_NO_PAD.encode(&self.point[33..]),
                },
            ),
        };
        if !self.kid.is_empty() {
            jwk.common.key_id = Some(self.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        }
        jwk
    }

    /// Verifies a compact ES256 JWS whose header `typ` is `expected_typ` and returns its
    /// claims. Time claims are not checked here: the caller owns the clock.
    pub fn verify_jwt<T: DeserializeOwned>(
        &self,
        token: &str,
        expected_typ: &str,
    ) -> Result<T, FormatError> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::ES256 {
            return Err(FormatError::Token(format!(
                "alg must be ES256, got {:?}",
                header.alg
            )));
        }
        if header.typ.as_deref() != Some(expected_typ) {
            return Err(FormatError::Token(format!("typ must be {expected_typ}")));
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(jsonwebtoken::decode::<T>(token, &self.decoding, &validation)?.claims)
    }

    /// Verifies a raw ES256 signature (`r || s`).
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> Result<(), FormatError> {
        self.parsed
            .verify_sig(message, signature)
            .map_err(|_| FormatError::BadSignature)
    }
}

/// The JWKS document publishing `keys`.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Jwks {
    JwkSet {
        keys: keys.into_iter().map(SigningKey::public_jwk).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_kid() {
        let key = SigningKey::generate().expect("generate");
        let pem = key.to_pkcs8_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SigningKey::from_pkcs8_pem(&pem).expect("parse");
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.kid().len(), 43, "base64url SHA-256");
    }

    #[test]
    fn rejects_non_pkcs8_and_garbage() {
        assert!(matches!(
            SigningKey::from_pkcs8_pem("hello"),
            Err(FormatError::Key(_))
        ));
        let pem = pem::encode(&pem::Pem::new("EC PRIVATE KEY", vec![1, 2, 3]));
        assert!(matches!(
            SigningKey::from_pkcs8_pem(&pem),
            Err(FormatError::Key(_))
        ));
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![0x30, 0x03, 1, 2, 3]));
        assert!(matches!(
            SigningKey::from_pkcs8_pem(&pem),
            Err(FormatError::Key(_))
        ));
    }

    #[test]
    fn jwk_round_trip_keeps_the_kid_and_no_private_part() {
        // The jwk round trip gives the same kid as the signing key.
        let key = SigningKey::generate().expect("generate");
        let jwk = key.public_jwk();
        let parsed = VerifyingKey::from_jwk(&jwk).expect("from jwk");
        assert_eq!(parsed.kid(), key.kid());
        let doc = serde_json::to_value(jwks([&key])).expect("json");
        assert_eq!(doc["keys"][0]["kid"], key.kid());
        assert_eq!(doc["keys"][0]["kty"], "EC");
        assert_eq!(doc["keys"][0]["crv"], "P-256");
        assert_eq!(doc["keys"][0]["alg"], "ES256");
        assert!(doc["keys"][0].get("d").is_none(), "no private part");
    }
}
