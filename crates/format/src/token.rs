//! IETF Token Status List (draft-ietf-oauth-status-list-20): the compressed byte array,
//! its JSON and CBOR `StatusList` forms, and the Status List Token as JWT and CWT.

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coset::cbor::value::Value;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, Label, TaggedCborSerializable, iana};
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use serde::{Deserialize, Serialize};

use crate::{Bits, FormatError, MAX_DECODED_BYTES, SigningKey, StatusArray, VerifyingKey};

/// JWT header `typ` of a Status List Token.
pub const JWT_TYP: &str = "statuslist+jwt";
/// CWT protected header `typ` (label 16) of a Status List Token, and its media type.
pub const CWT_TYP: &str = "application/statuslist+cwt";
/// COSE header label of `typ` (RFC 9596).
const COSE_TYP_LABEL: i64 = 16;
/// CWT claim keys of draft -20 section 5.2.
const CWT_ISS: i64 = 1;
const CWT_SUB: i64 = 2;
const CWT_EXP: i64 = 4;
const CWT_IAT: i64 = 6;
const CWT_TTL: i64 = 65534;
const CWT_STATUS_LIST: i64 = 65533;

/// zlib level used when the caller has no reason to pick another. The draft recommends
/// the highest (9); with zlib-rs that costs 6.5 times the CPU of level 6 for lists 14%
/// smaller (32 ms against 4.9 ms per publish of a 1,000,000-entry list: the `publish`
/// and `encode` benchmarks, README, Performance), so 6 is the default and 9 a setting.
pub const DEFAULT_ZLIB_LEVEL: u32 = 6;

/// The status array compressed once (zlib), ready for both the JWT and the CWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedList {
    pub bits: Bits,
    pub zlib: Vec<u8>,
}

impl CompressedList {
    pub fn new(array: &StatusArray, level: u32) -> Self {
        let mut enc = ZlibEncoder::new(
            Vec::with_capacity(array.as_bytes().len() / 8 + 64),
            Compression::new(level.min(9)),
        );
        // Writing into a Vec cannot fail.
        let zlib = enc
            .write_all(array.as_bytes())
            .and_then(|()| enc.finish())
            .expect("zlib into a Vec is infallible");
        Self {
            bits: array.bits(),
            zlib,
        }
    }

    /// Inflates (bounded by [`MAX_DECODED_BYTES`]) into an array whose length is the
    /// byte array's full capacity (`bytes * 8 / bits`).
    pub fn decode(&self) -> Result<StatusArray, FormatError> {
        let bytes = inflate(ZlibDecoder::new(self.zlib.as_slice()))?;
        StatusArray::from_full_bytes(self.bits, bytes)
    }

    /// The JSON `StatusList` object (`{bits, lst}`).
    pub fn to_json(&self) -> StatusListJson {
        StatusListJson {
            bits: self.bits.get(),
            lst: URL_SAFE_NO_PAD.encode(&self.zlib),
            aggregation_uri: None,
        }
    }

    /// The CBOR `StatusList` map (`{"bits": uint, "lst": bstr}`).
    pub fn to_cbor_value(&self) -> Value {
        self.to_cbor_value_with(None)
    }

    /// The CBOR `StatusList` map, with `aggregation_uri` (a text string) when given.
    pub fn to_cbor_value_with(&self, aggregation_uri: Option<&str>) -> Value {
        let mut map = vec![
            (
                Value::Text("bits".into()),
                Value::Integer(self.bits.get().into()),
            ),
            (Value::Text("lst".into()), Value::Bytes(self.zlib.clone())),
        ];
        if let Some(uri) = aggregation_uri {
            map.push((
                Value::Text("aggregation_uri".into()),
                Value::Text(uri.to_owned()),
            ));
        }
        Value::Map(map)
    }

    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        coset::cbor::ser::into_writer(&self.to_cbor_value(), &mut out)
            .expect("CBOR into a Vec is infallible");
        out
    }

    pub fn from_cbor_value(value: &Value) -> Result<Self, FormatError> {
        let Value::Map(entries) = value else {
            return Err(FormatError::Token("StatusList must be a CBOR map".into()));
        };
        let (mut bits, mut lst) = (None, None);
        for (k, v) in entries {
            match (k.as_text(), v) {
                (Some("bits"), Value::Integer(i)) if bits.is_none() => {
                    let b = u64::try_from(*i).map_err(|_| FormatError::InvalidBits(u64::MAX))?;
                    bits = Some(Bits::try_from(b)?);
                }
                (Some("lst"), Value::Bytes(b)) if lst.is_none() => lst = Some(b.clone()),
                (Some("bits" | "lst"), _) => {
                    return Err(FormatError::Token(
                        "StatusList bits/lst of the wrong type or repeated".into(),
                    ));
                }
                _ => {}
            }
        }
        match (bits, lst) {
            (Some(bits), Some(zlib)) => Ok(Self { bits, zlib }),
            _ => Err(FormatError::Token("StatusList needs bits and lst".into())),
        }
    }

    pub fn from_cbor(bytes: &[u8]) -> Result<Self, FormatError> {
        let value: Value = coset::cbor::de::from_reader(bytes)
            .map_err(|e| FormatError::Token(format!("invalid CBOR: {e}")))?;
        Self::from_cbor_value(&value)
    }
}

/// The JSON `StatusList` object of draft -20 section 4.2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListJson {
    pub bits: u8,
    pub lst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_uri: Option<String>,
}

impl StatusListJson {
    pub fn to_compressed(&self) -> Result<CompressedList, FormatError> {
        Ok(CompressedList {
            bits: Bits::try_from(self.bits)?,
            zlib: URL_SAFE_NO_PAD.decode(&self.lst)?,
        })
    }

    pub fn decode(&self) -> Result<StatusArray, FormatError> {
        self.to_compressed()?.decode()
    }
}

/// Reads a decoder to the end, refusing more than [`MAX_DECODED_BYTES`].
pub(crate) fn inflate(reader: impl Read) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(FormatError::Decompress)?;
    if out.len() > MAX_DECODED_BYTES {
        return Err(FormatError::TooLarge {
            requested: out.len() as u64,
            bits: 8,
            max: MAX_DECODED_BYTES,
        });
    }
    Ok(out)
}

/// The claims of a Status List Token other than the list itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The list's URI: equal, byte for byte, to the `uri` handed to the issuer.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Seconds a consumer may cache the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// The Status List Aggregation of the list's pool (draft -20 section 9). A member of the
    /// `StatusList` object (`status_list.aggregation_uri`; in CBOR the text key
    /// `aggregation_uri` of claim 65533), not a top-level claim: kept out of the flattened
    /// claims and written there by [`sign_jwt`] and [`sign_cwt`].
    #[serde(skip)]
    pub aggregation_uri: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct JwtPayload {
    #[serde(flatten)]
    claims: TokenClaims,
    status_list: StatusListJson,
}

/// A verified Status List Token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListToken {
    pub claims: TokenClaims,
    pub list: StatusArray,
}

/// Signs a Status List Token JWT (`typ: statuslist+jwt`, ES256, `kid`).
pub fn sign_jwt(
    claims: &TokenClaims,
    list: &CompressedList,
    key: &SigningKey,
) -> Result<String, FormatError> {
    key.sign_jwt(
        JWT_TYP,
        &JwtPayload {
            claims: claims.clone(),
            status_list: StatusListJson {
                aggregation_uri: claims.aggregation_uri.clone(),
                ..list.to_json()
            },
        },
    )
}

/// Verifies a Status List Token JWT with `key` and decodes its list.
pub fn verify_jwt(token: &str, key: &VerifyingKey) -> Result<StatusListToken, FormatError> {
    let payload: JwtPayload = key.verify_jwt(token, JWT_TYP)?;
    let list = payload.status_list.decode()?;
    Ok(StatusListToken {
        claims: TokenClaims {
            aggregation_uri: payload.status_list.aggregation_uri,
            ..payload.claims
        },
        list,
    })
}

/// Signs a Status List Token CWT: `COSE_Sign1_Tagged`, protected `alg: ES256` and
/// `typ: application/statuslist+cwt` and `kid`; claims 2 (sub), 1 (iss),
/// 6 (iat), 4 (exp), 65534 (ttl), 65533 (status list, `lst` as a byte string).
///
/// The claims map is built as CBOR values: coset's `ClaimsSet` rejects 65533/65534, which
/// are registered after its IANA table was cut and lie outside the private-use range.
pub fn sign_cwt(
    claims: &TokenClaims,
    list: &CompressedList,
    key: &SigningKey,
) -> Result<Vec<u8>, FormatError> {
    let mut map = vec![(Value::from(CWT_SUB), Value::Text(claims.sub.clone()))];
    if let Some(iss) = &claims.iss {
        map.push((Value::from(CWT_ISS), Value::Text(iss.clone())));
    }
    map.push((Value::from(CWT_IAT), Value::from(claims.iat)));
    if let Some(exp) = claims.exp {
        map.push((Value::from(CWT_EXP), Value::from(exp)));
    }
    if let Some(ttl) = claims.ttl {
        map.push((Value::from(CWT_TTL), Value::from(ttl)));
    }
    map.push((
        Value::from(CWT_STATUS_LIST),
        list.to_cbor_value_with(claims.aggregation_uri.as_deref()),
    ));
    let mut payload = Vec::new();
    coset::cbor::ser::into_writer(&Value::Map(map), &mut payload)
        .expect("CBOR into a Vec is infallible");

    // `kid` goes in the protected header so that every byte of the token is signed.
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .key_id(key.kid().as_bytes().to_vec())
        .value(COSE_TYP_LABEL, Value::Text(CWT_TYP.into()))
        .build();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .try_create_signature(&[], |tbs| key.sign_raw(tbs))?
        .build();
    Ok(sign1.to_tagged_vec()?)
}

/// The `kid` of a CWT (unprotected or protected header), to pick the verifying key.
pub fn cwt_kid(cwt: &[u8]) -> Result<String, FormatError> {
    let sign1 = CoseSign1::from_tagged_slice(cwt)?;
    let kid = if sign1.protected.header.key_id.is_empty() {
        sign1.unprotected.key_id
    } else {
        sign1.protected.header.key_id
    };
    String::from_utf8(kid).map_err(|_| FormatError::Token("kid is not UTF-8".into()))
}

/// Verifies a Status List Token CWT with `key` and decodes its list.
pub fn verify_cwt(cwt: &[u8], key: &VerifyingKey) -> Result<StatusListToken, FormatError> {
    let sign1 = CoseSign1::from_tagged_slice(cwt)?;
    let header = &sign1.protected.header;
    if header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::ES256)) {
        return Err(FormatError::Token("protected alg must be ES256".into()));
    }
    let typ = header
        .rest
        .iter()
        .find(|(l, _)| *l == Label::Int(COSE_TYP_LABEL));
    if !matches!(typ, Some((_, Value::Text(t))) if t == CWT_TYP) {
        return Err(FormatError::Token(format!(
            "protected typ must be {CWT_TYP}"
        )));
    }
    sign1.verify_signature(&[], |sig, data| key.verify_raw(data, sig))?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or_else(|| FormatError::Token("CWT has no payload".into()))?;
    let Value::Map(entries) = coset::cbor::de::from_reader::<Value, _>(payload)
        .map_err(|e| FormatError::Token(format!("invalid CBOR claims: {e}")))?
    else {
        return Err(FormatError::Token("CWT claims must be a map".into()));
    };
    let mut claims = std::collections::BTreeMap::new();
    for (k, v) in entries {
        // Integer keys only matter here; text keys are other claims we do not read.
        if let Some(k) = k.as_integer().and_then(|i| i64::try_from(i).ok())
            && claims.insert(k, v).is_some()
        {
            return Err(FormatError::Token(format!("claim {k} appears twice")));
        }
    }
    let text = |k: i64| match claims.get(&k) {
        None => Ok(None),
        Some(Value::Text(t)) => Ok(Some(t.clone())),
        Some(_) => Err(FormatError::Token(format!(
            "claim {k} must be a text string"
        ))),
    };
    let int = |k: i64| match claims.get(&k) {
        None => Ok(None),
        Some(Value::Integer(i)) => i64::try_from(*i)
            .map(Some)
            .map_err(|_| FormatError::Token(format!("claim {k} is out of range"))),
        Some(_) => Err(FormatError::Token(format!("claim {k} must be an integer"))),
    };
    let ttl = int(CWT_TTL)?
        .map(|t| u64::try_from(t).map_err(|_| FormatError::Token("ttl must be positive".into())))
        .transpose()?;
    let list = claims
        .get(&CWT_STATUS_LIST)
        .ok_or_else(|| FormatError::Token("CWT has no status_list claim (65533)".into()))?;
    let aggregation_uri = aggregation_uri_of(list)?;
    let list = CompressedList::from_cbor_value(list)?.decode()?;
    let claims = TokenClaims {
        sub: text(CWT_SUB)?.ok_or_else(|| FormatError::Token("CWT has no sub (2)".into()))?,
        iss: text(CWT_ISS)?,
        iat: int(CWT_IAT)?.ok_or_else(|| FormatError::Token("CWT has no iat (6)".into()))?,
        exp: int(CWT_EXP)?,
        ttl,
        aggregation_uri,
    };
    Ok(StatusListToken { claims, list })
}

/// The `aggregation_uri` of a CBOR `StatusList` map, if it has one (a text string).
fn aggregation_uri_of(list: &Value) -> Result<Option<String>, FormatError> {
    let Value::Map(entries) = list else {
        return Ok(None);
    };
    match entries
        .iter()
        .find(|(k, _)| k.as_text() == Some("aggregation_uri"))
    {
        None => Ok(None),
        Some((_, Value::Text(uri))) => Ok(Some(uri.clone())),
        Some(_) => Err(FormatError::Token(
            "StatusList aggregation_uri must be a text string".into(),
        )),
    }
}
