//! W3C Bitstring Status List: index 0 in the most significant bits, gzip, multibase `u`
//! (base64url, no padding), published as a `BitstringStatusListCredential` signed as
//! `vc+jwt` with `statusPurpose: message`.

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::token::inflate;
use crate::{Bits, FormatError, SigningKey, Status, StatusArray, VerifyingKey};

/// Fewest entries a list may have: the W3C minimum of 131,072 (a 16 KiB bitstring at 1 bit).
pub const MIN_ENTRIES: u64 = 131_072;
/// JWT header `typ` of the credential.
pub const VC_JWT_TYP: &str = "vc+jwt";
/// HTTP media type of the credential.
pub const VC_JWT_MEDIA_TYPE: &str = "application/vc+jwt";
const VC_CONTEXT: &str = "https://www.w3.org/ns/credentials/v2";

/// Reorders the `bits`-wide groups of every byte: the IETF layout puts entry 0 of a byte
/// in its low bits, the W3C layout in its high bits. The bits inside a group keep their
/// order, so a value reads the same in both. The map is its own inverse.
fn swap_layout(bits: Bits, bytes: &mut [u8]) {
    if bits == Bits::Eight {
        return;
    }
    let b = u32::from(bits.get());
    let mask = bits.max_value();
    let mut table = [0u8; 256];
    for (x, out) in table.iter_mut().enumerate() {
        let x = x as u8;
        *out = (0..8 / b).fold(0u8, |acc, j| {
            acc | (((x >> (j * b)) & mask) << (8 - b - j * b))
        });
    }
    for byte in bytes {
        *byte = table[usize::from(*byte)];
    }
}

/// `encodedList`: `u` + base64url(gzip(bitstring)), index 0 in the most significant bit.
pub fn encode_list(array: &StatusArray, level: u32) -> Result<String, FormatError> {
    if array.len() < MIN_ENTRIES {
        return Err(FormatError::TooFewEntries {
            entries: array.len(),
            min: MIN_ENTRIES,
        });
    }
    let mut bytes = array.as_bytes().to_vec();
    swap_layout(array.bits(), &mut bytes);
    let mut enc = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 8 + 64),
        Compression::new(level.min(9)),
    );
    let gz = enc
        .write_all(&bytes)
        .and_then(|()| enc.finish())
        .expect("gzip into a Vec is infallible");
    Ok(format!("u{}", URL_SAFE_NO_PAD.encode(gz)))
}

/// Decodes an `encodedList` of `bits`-wide entries (bounded inflation). A list with fewer
/// than [`MIN_ENTRIES`] entries is an error, as the W3C validation algorithm requires.
pub fn decode_list(encoded: &str, bits: Bits) -> Result<StatusArray, FormatError> {
    let b64 = encoded.strip_prefix('u').ok_or(FormatError::Multibase)?;
    let gz = URL_SAFE_NO_PAD.decode(b64)?;
    let mut bytes = inflate(GzDecoder::new(gz.as_slice()))?;
    swap_layout(bits, &mut bytes);
    let array = StatusArray::from_full_bytes(bits, bytes)?;
    if array.len() < MIN_ENTRIES {
        return Err(FormatError::TooFewEntries {
            entries: array.len(),
            min: MIN_ENTRIES,
        });
    }
    Ok(array)
}

/// One `statusMessage` entry: `{"status": "0x1", "message": "INVALID"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    pub status: String,
    pub message: String,
}

/// The messages of every value a `bits`-wide entry can hold, named after the IETF
/// Status Types registry so both formats speak the same words.
pub fn status_messages(bits: Bits) -> Vec<StatusMessage> {
    (0..=bits.max_value())
        .map(|v| StatusMessage {
            status: format!("{v:#x}"),
            message: Status(v).name().to_owned(),
        })
        .collect()
}

/// `credentialSubject` of a `BitstringStatusListCredential`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSubject {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status_purpose: String,
    pub status_size: u8,
    pub status_message: Vec<StatusMessage>,
    pub encoded_list: String,
    /// Milliseconds, as W3C defines `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// A `BitstringStatusListCredential` (the `vc+jwt` payload). `iat`/`exp` mirror
/// `validFrom`/`validUntil` for verifiers using generic JWT libraries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusListCredential {
    #[serde(rename = "@context")]
    pub context: Vec<String>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Vec<String>,
    pub issuer: String,
    pub valid_from: String,
    pub valid_until: String,
    pub credential_subject: CredentialSubject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// What a published credential says besides its list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialMeta {
    /// The list URI: the credential `id`, equal to the `uri` handed to the issuer.
    pub uri: String,
    pub issuer: String,
    /// Unix seconds.
    pub valid_from: i64,
    pub valid_until: i64,
    /// Seconds a consumer may cache the credential (written as milliseconds).
    pub ttl_seconds: Option<u64>,
}

fn rfc3339(t: i64) -> Result<String, FormatError> {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .ok_or(FormatError::Timestamp(t))
}

impl StatusListCredential {
    pub fn new(
        meta: &CredentialMeta,
        array: &StatusArray,
        level: u32,
    ) -> Result<Self, FormatError> {
        Ok(Self {
            context: vec![VC_CONTEXT.to_owned()],
            id: meta.uri.clone(),
            kind: vec![
                "VerifiableCredential".into(),
                "BitstringStatusListCredential".into(),
            ],
            issuer: meta.issuer.clone(),
            valid_from: rfc3339(meta.valid_from)?,
            valid_until: rfc3339(meta.valid_until)?,
            credential_subject: CredentialSubject {
                id: format!("{}#list", meta.uri),
                kind: "BitstringStatusList".into(),
                status_purpose: "message".into(),
                status_size: array.bits().get(),
                status_message: status_messages(array.bits()),
                encoded_list: encode_list(array, level)?,
                ttl: meta.ttl_seconds.map(|s| s.saturating_mul(1000)),
            },
            iat: Some(meta.valid_from),
            exp: Some(meta.valid_until),
        })
    }

    /// Decodes `encodedList` with `statusSize` as the entry width.
    pub fn decode_list(&self) -> Result<StatusArray, FormatError> {
        let bits = Bits::try_from(self.credential_subject.status_size)?;
        decode_list(&self.credential_subject.encoded_list, bits)
    }

    /// `validUntil` as unix seconds.
    pub fn valid_until_unix(&self) -> Result<i64, FormatError> {
        OffsetDateTime::parse(&self.valid_until, &Rfc3339)
            .map(|d| d.unix_timestamp())
            .map_err(|e| FormatError::Token(format!("validUntil: {e}")))
    }
}

/// Builds and signs the credential as a `vc+jwt`.
pub fn sign_vc_jwt(
    meta: &CredentialMeta,
    array: &StatusArray,
    level: u32,
    key: &SigningKey,
) -> Result<String, FormatError> {
    key.sign_jwt(VC_JWT_TYP, &StatusListCredential::new(meta, array, level)?)
}

/// Verifies a `vc+jwt` credential and decodes its list.
pub fn verify_vc_jwt(
    token: &str,
    key: &VerifyingKey,
) -> Result<(StatusListCredential, StatusArray), FormatError> {
    let vc: StatusListCredential = key.verify_jwt(token, VC_JWT_TYP)?;
    if !vc.kind.iter().any(|t| t == "BitstringStatusListCredential") {
        return Err(FormatError::Token(
            "type must include BitstringStatusListCredential".into(),
        ));
    }
    let list = vc.decode_list()?;
    Ok((vc, list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_swap_is_an_involution_and_msb_first() {
        let mut a = StatusArray::new(Bits::Two, 4).expect("small");
        a.set(0, 1).expect("in range");
        a.set(3, 2).expect("in range");
        let mut bytes = a.as_bytes().to_vec();
        assert_eq!(bytes, [0b10_00_00_01]);
        swap_layout(Bits::Two, &mut bytes);
        // W3C: entry 0 in the two most significant bits, value bits in order.
        assert_eq!(bytes, [0b01_00_00_10]);
        swap_layout(Bits::Two, &mut bytes);
        assert_eq!(bytes, a.as_bytes());
        let mut one = vec![0b0000_0001];
        swap_layout(Bits::One, &mut one);
        assert_eq!(one, [0b1000_0000]);
        let mut four = vec![0x21];
        swap_layout(Bits::Four, &mut four);
        assert_eq!(four, [0x12]);
    }

    #[test]
    fn messages_cover_every_value() {
        let m = status_messages(Bits::Two);
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[0],
            StatusMessage {
                status: "0x0".into(),
                message: "VALID".into()
            }
        );
        assert_eq!(m[1].message, "INVALID");
        assert_eq!(status_messages(Bits::Eight)[255].status, "0xff");
    }

    #[test]
    fn short_lists_are_errors() {
        let a = StatusArray::new(Bits::One, MIN_ENTRIES - 1).expect("list");
        assert!(matches!(
            encode_list(&a, 6),
            Err(FormatError::TooFewEntries { .. })
        ));
        assert!(matches!(
            decode_list("xabc", Bits::One),
            Err(FormatError::Multibase)
        ));
    }
}
