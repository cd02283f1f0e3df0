//! Parse, don't validate: a request body becomes a typed, verified request here, or an
//! [`ApiError`] carrying the contract's text.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{self as e, ApiError};

/// Largest accepted body; anything longer is refused before it is read further.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest accepted body of `/revoke-batch` (1,000 entries of a 100-byte URI fit).
pub const MAX_BATCH_BODY_BYTES: usize = 256 * 1024;
/// Most entries in one `/revoke-batch` request.
pub const MAX_BATCH_ENTRIES: usize = 1000;
/// Largest `kid` accepted in a request header.
const MAX_KID_LEN: usize = 256;
/// Longest `iss` accepted: the CRD's `clientId` bound (longer names no issuer).
pub const MAX_ISS_LEN: usize = 256;
/// Longest `uri` accepted: the CRD's `baseUri` bound, with room for `/t/{id}`.
pub const MAX_URI_LEN: usize = 1024;
/// How far in the future `iat` may be (clock skew).
pub const IAT_LEEWAY_SECONDS: f64 = 300.0;

/// A JSON object whose keys are unique (a repeated claim is a decoding error, not
/// "last one wins").
#[derive(Debug)]
pub struct UniqueObject(pub BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with unique keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueObject, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.insert(k.clone(), v).is_some() {
                        return Err(serde::de::Error::custom(format!("duplicate member {k}")));
                    }
                }
                Ok(UniqueObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A compact JWS, decoded but not yet verified.
#[derive(Debug)]
pub struct Jws {
    pub header: BTreeMap<String, Value>,
    pub claims: BTreeMap<String, Value>,
    /// `base64url(header) . base64url(payload)`: what the signature covers.
    pub signing_input: String,
    pub signature: Vec<u8>,
}

fn decode_part(part: &str) -> Result<BTreeMap<String, Value>, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ApiError::BadRequest(e::DECODE))?;
    serde_json::from_slice::<UniqueObject>(&bytes)
        .map(|o| o.0)
        .map_err(|_| ApiError::BadRequest(e::DECODE))
}

impl Jws {
    /// Splits and decodes a compact JWS: exactly three parts, JSON objects with unique
    /// members in the first two. A JWE (five parts) or anything else is a decoding error.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest(e::DECODE))?
            .trim();
        let parts: Vec<&str> = text.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err(ApiError::BadRequest(e::DECODE));
        };
        Ok(Self {
            header: decode_part(header)?,
            claims: decode_part(payload)?,
            signing_input: format!("{header}.{payload}"),
            signature: URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| ApiError::BadRequest(e::DECODE))?,
        })
    }

    /// The header checks of the contract: `alg` ES256 only (`none`, HS*, RS* never,
    /// whatever key is offered), `typ` JWT, and a sane `kid`. Returns the `kid`.
    pub fn check_header(&self) -> Result<&str, ApiError> {
        match self.header.get("alg") {
            None => return Err(ApiError::Unauthorized(e::NO_ALG)),
            Some(Value::String(alg)) if alg == "ES256" => {}
            Some(_) => return Err(ApiError::Unauthorized(e::INVALID_ALG)),
        }
        match self.header.get("typ") {
            None => return Err(ApiError::Unauthorized(e::NO_TYP)),
            Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(ApiError::Unauthorized(e::INVALID_TYP)),
        }
        // RFC 7515: a critical extension we do not understand must be refused.
        if self.header.contains_key("crit") {
            return Err(ApiError::BadRequest(e::DECODE));
        }
        match self.header.get("kid") {
            None => Err(ApiError::Unauthorized(e::NO_KID)),
            Some(Value::String(kid))
                if !kid.is_empty()
                    && kid.len() <= MAX_KID_LEN
                    && kid.chars().all(|c| c.is_ascii_graphic()) =>
            {
                Ok(kid)
            }
            Some(_) => Err(ApiError::Unauthorized(e::INVALID_KID)),
        }
    }

    /// The `iss` claim, the client id.
    pub fn issuer(&self) -> Result<&str, ApiError> {
        match self.claims.get("iss") {
            Some(Value::String(iss)) if iss.len() > MAX_ISS_LEN => {
                Err(ApiError::Unauthorized(e::UNKNOWN_CLIENT))
            }
            Some(Value::String(iss)) if !iss.is_empty() => Ok(iss),
            _ => Err(ApiError::Unauthorized(e::NO_ISS)),
        }
    }

    /// `iat`: a number, at most five minutes in the future.
    pub fn iat(&self, now: i64) -> Result<f64, ApiError> {
        let iat = self
            .claims
            .get("iat")
            .ok_or(ApiError::BadRequest(e::NO_IAT))?;
        match iat.as_f64() {
            Some(t) if t.is_finite() && t >= 0.0 && t <= now as f64 + IAT_LEEWAY_SECONDS => Ok(t),
            _ => Err(ApiError::BadRequest(e::INVALID_IAT)),
        }
    }

    /// `jti`: a lowercase, hyphenated UUID.
    pub fn jti(&self) -> Result<Uuid, ApiError> {
        let jti = self
            .claims
            .get("jti")
            .ok_or(ApiError::BadRequest(e::NO_JTI))?;
        let Value::String(s) = jti else {
            return Err(ApiError::BadRequest(e::INVALID_JTI));
        };
        match Uuid::try_parse(s) {
            Ok(u) if u.hyphenated().to_string() == *s => Ok(u),
            _ => Err(ApiError::BadRequest(e::INVALID_JTI)),
        }
    }

    /// `statusExpiry`: an integer with `now < statusExpiry <= now + max_lifetime`.
    pub fn status_expiry(&self, now: i64, max_lifetime: u64) -> Result<i64, ApiError> {
        let v = self
            .claims
            .get("statusExpiry")
            .ok_or(ApiError::BadRequest(e::NO_STATUS_EXPIRY))?;
        let max = now.saturating_add(i64::try_from(max_lifetime).unwrap_or(i64::MAX));
        match v.as_i64() {
            Some(t) if t > now && t <= max => Ok(t),
            _ => Err(ApiError::BadRequest(e::INVALID_STATUS_EXPIRY)),
        }
    }

    /// `idx`: a non-negative integer (no float, no string, nothing past `i64::MAX`).
    pub fn idx(&self) -> Result<u64, ApiError> {
        let v = self
            .claims
            .get("idx")
            .ok_or(ApiError::BadRequest(e::NO_IDX))?;
        match v.as_u64() {
            Some(i) if i <= i64::MAX as u64 => Ok(i),
            _ => Err(ApiError::BadRequest(e::INVALID_IDX)),
        }
    }

    /// `uri`: a list URI this kind of service issues: `http(s)://host[/path]/{t|b}/{ID}`.
    pub fn uri(&self) -> Result<&str, ApiError> {
        let Some(Value::String(uri)) = self.claims.get("uri") else {
            return Err(ApiError::BadRequest(e::NO_URI));
        };
        checked_uri(uri)
    }

    /// `entries` of `/revoke-batch`: 1 to [`MAX_BATCH_ENTRIES`] objects `{uri, idx}`, each
    /// checked as `/revoke` checks its `uri` and `idx` (members other than those two are
    /// refused: a misspelt member must not pass unnoticed).
    pub fn entries(&self) -> Result<Vec<(String, u64)>, ApiError> {
        let Some(Value::Array(entries)) = self.claims.get("entries") else {
            return Err(ApiError::BadRequest(e::NO_ENTRIES));
        };
        if entries.is_empty() || entries.len() > MAX_BATCH_ENTRIES {
            return Err(ApiError::BadRequest(e::INVALID_ENTRIES));
        }
        entries
            .iter()
            .map(|entry| {
                let Value::Object(entry) = entry else {
                    return Err(ApiError::BadRequest(e::INVALID_ENTRIES));
                };
                if entry.len() != 2 {
                    return Err(ApiError::BadRequest(e::INVALID_ENTRIES));
                }
                let uri = match entry.get("uri") {
                    Some(Value::String(uri)) => checked_uri(uri)?,
                    _ => return Err(ApiError::BadRequest(e::NO_URI)),
                };
                let idx = match entry.get("idx").map(Value::as_u64) {
                    None => return Err(ApiError::BadRequest(e::NO_IDX)),
                    Some(Some(i)) if i <= i64::MAX as u64 => i,
                    Some(_) => return Err(ApiError::BadRequest(e::INVALID_IDX)),
                };
                Ok((uri.to_owned(), idx))
            })
            .collect()
    }
}

/// A list URI as `/revoke` accepts it.
fn checked_uri(uri: &str) -> Result<&str, ApiError> {
    if uri.len() > MAX_URI_LEN || parse_list_uri(uri).is_none() {
        return Err(ApiError::BadRequest(e::INVALID_URI));
    }
    Ok(uri)
}

/// Whether `id` is a list id: 12 uppercase hex characters.
pub fn is_list_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// `(format path, id)` of a list URI, or `None`.
pub fn parse_list_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut segments = rest.rsplitn(3, '/');
    let id = segments.next()?;
    let kind = segments.next()?;
    let host = segments.next()?;
    (!host.is_empty() && matches!(kind, "t" | "b") && is_list_id(id)).then_some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jws(header: &str, claims: &str) -> Vec<u8> {
        format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
        .into_bytes()
    }

    #[test]
    fn duplicate_members_and_non_objects_are_decoding_errors() {
        assert!(matches!(
            Jws::parse(&jws(r#"{"alg":"ES256","alg":"none"}"#, "{}")),
            Err(ApiError::BadRequest(e::DECODE))
        ));
        assert!(matches!(
            Jws::parse(&jws("{}", r#"{"iss":"a","iss":"b"}"#)),
            Err(ApiError::BadRequest(e::DECODE))
        ));
        assert!(matches!(
            Jws::parse(&jws("{}", "[1]")),
            Err(ApiError::BadRequest(e::DECODE))
        ));
        assert!(matches!(
            Jws::parse(b"a.b.c.d.e"),
            Err(ApiError::BadRequest(e::DECODE))
        ));
        assert!(matches!(
            Jws::parse(b"\xff\xfe"),
            Err(ApiError::BadRequest(e::DECODE))
        ));
    }

    #[test]
    fn list_uris() {
        assert_eq!(
            parse_list_uri("https://crs.example.gov.uk/t/A671FED3E9AD"),
            Some(("t", "A671FED3E9AD"))
        );
        assert_eq!(
            parse_list_uri("http://127.0.0.1:8080/base/b/A671FED3E9AD"),
            Some(("b", "A671FED3E9AD"))
        );
        for bad in [
            "https://crs.example.gov.uk/t/a671fed3e9ad",
            "https://crs.example.gov.uk/x/A671FED3E9AD",
            "https://crs.example.gov.uk/t/A671FED3E9AD?x=1",
            "ftp://crs.example.gov.uk/t/A671FED3E9AD",
            "/t/A671FED3E9AD",
            "https:///t/A671FED3E9AD",
        ] {
            assert_eq!(parse_list_uri(bad), None, "{bad}");
        }
    }
}
