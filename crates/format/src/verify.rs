//! A published list as a verifier reads it: the body fetched from a list URI, checked
//! against the service's JWK Set (signature by the key its header names, subject or
//! credential id equal to the URI) and decoded.

use crate::bitstring;
use crate::keys::{Jwks, VerifyingKey};
use crate::token;
use crate::{FormatError, ListFormat, StatusArray};

/// A verified list: its statuses and its expiry (unix seconds), if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedList {
    pub list: StatusArray,
    pub exp: Option<i64>,
}

/// Verifies `body` (the compact JWT served at `uri`) with the key of `set` its header
/// names, and decodes it. Expiry is the caller's to judge (see [`VerifiedList::exp`]).
pub fn verify_list(uri: &str, body: &str, set: &Jwks) -> Result<VerifiedList, FormatError> {
    let kind = ListFormat::of_uri(uri)
        .ok_or_else(|| FormatError::Token(format!("{uri} is not a status list URI")))?;
    let kid = header_kid(body)?;
    let jwk = set.find(&kid).ok_or_else(|| {
        FormatError::Token(format!("signed by {kid}, which the JWK Set does not hold"))
    })?;
    let key = VerifyingKey::from_jwk(jwk)?;
    match kind {
        ListFormat::Token => {
            let verified = token::verify_jwt(body, &key)?;
            if verified.claims.sub != uri {
                return Err(FormatError::Token(format!(
                    "the list's sub {} is not {uri}",
                    verified.claims.sub
                )));
            }
            Ok(VerifiedList {
                list: verified.list,
                exp: verified.claims.exp,
            })
        }
        ListFormat::Bitstring => {
            let (vc, list) = bitstring::verify_vc_jwt(body, &key)?;
            if vc.id != uri {
                return Err(FormatError::Token(format!(
                    "the credential's id {} is not {uri}",
                    vc.id
                )));
            }
            Ok(VerifiedList {
                list,
                exp: Some(vc.valid_until_unix()?),
            })
        }
    }
}

/// The `kid` of a compact JWT's header.
pub fn header_kid(token: &str) -> Result<String, FormatError> {
    use base64::Engine as _;
    let not_jwt = || FormatError::Token("not a compact JWT".into());
    let header = token.split('.').next().ok_or_else(not_jwt)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| not_jwt())?;
    let header: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| FormatError::Token("header is not JSON".into()))?;
    header["kid"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| FormatError::Token("the JWT header has no kid".into()))
}
