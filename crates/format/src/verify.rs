//! A published list as a verifier reads it: the body fetched from a list URI, checked
//! against the service's JWK Set (signature by the key its header names, subject or
//! credential id equal to the URI) and decoded.

use crate::bitstring;
use crate::keys::{Jwks, VerifyingKey};
use crate::token;
use crate::{FormatError, StatusArray};

/// Which encoding a list URI serves: `.../t/ID` a Token Status List, `.../b/ID` a
/// Bitstring Status List credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Token,
    Bitstring,
}

impl ListKind {
    /// The kind of a list URI (`http(s)://host/.../t/ID` or `.../b/ID`), or `None`.
    pub fn of_uri(uri: &str) -> Option<Self> {
        if !(uri.starts_with("https://") || uri.starts_with("http://")) {
            return None;
        }
        let mut parts = uri.rsplitn(3, '/');
        let (_id, kind, _base) = (parts.next()?, parts.next()?, parts.next()?);
        match kind {
            "t" => Some(Self::Token),
            "b" => Some(Self::Bitstring),
            _ => None,
        }
    }

    /// The media type to ask for: the JWT encoding of either kind.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Token => "application/statuslist+jwt",
            Self::Bitstring => bitstring::VC_JWT_MEDIA_TYPE,
        }
    }
}

/// A verified list: its statuses and its expiry (unix seconds), if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedList {
    pub list: StatusArray,
    pub exp: Option<i64>,
}

/// Verifies `body` (the compact JWT served at `uri`) with the key of `set` its header
/// names, and decodes it. Expiry is the caller's to judge (see [`VerifiedList::exp`]).
pub fn verify_list(uri: &str, body: &str, set: &Jwks) -> Result<VerifiedList, FormatError> {
    let kind = ListKind::of_uri(uri)
        .ok_or_else(|| FormatError::Token(format!("{uri} is not a status list URI")))?;
    let kid = header_kid(body)?;
    let jwk = set.find(&kid).ok_or_else(|| {
        FormatError::Token(format!("signed by {kid}, which the JWK Set does not hold"))
    })?;
    let key = VerifyingKey::from_jwk(jwk)?;
    match kind {
        ListKind::Token => {
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
        ListKind::Bitstring => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_kinds_of_uris() {
        assert_eq!(ListKind::of_uri("https://h/x/t/ABC"), Some(ListKind::Token));
        assert_eq!(
            ListKind::of_uri("http://h/b/ABC"),
            Some(ListKind::Bitstring)
        );
        assert_eq!(ListKind::of_uri("https://h/x/ABC"), None);
        assert_eq!(ListKind::of_uri("ftp://h/t/ABC"), None);
        assert_eq!(ListKind::of_uri("t/ABC"), None);
    }
}
