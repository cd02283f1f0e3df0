/// Everything that can go wrong while building, signing, parsing or verifying a list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("bits must be 1, 2, 4 or 8, got {0}")]
    InvalidBits(u64),
    #[error("index {index} is out of range for a list of {len} entries")]
    IndexOutOfRange { index: u64, len: u64 },
    #[error("status value {value} does not fit in {bits} bit(s)")]
    ValueOutOfRange { value: u8, bits: u8 },
    #[error("a list of {requested} entries of {bits} bit(s) exceeds the {max}-byte limit")]
    TooLarge {
        requested: u64,
        bits: u8,
        max: usize,
    },
    #[error("byte array of {bytes} bytes cannot hold {len} entries of {bits} bit(s)")]
    LengthMismatch { bytes: usize, len: u64, bits: u8 },
    #[error("invalid base64url: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("invalid compressed data: {0}")]
    Decompress(std::io::Error),
    #[error("encodedList must start with the multibase prefix 'u' (base64url)")]
    Multibase,
    #[error("a Bitstring Status List needs at least {min} entries, got {entries}")]
    TooFewEntries { entries: u64, min: u64 },
    #[error("invalid key: {0}")]
    Key(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("invalid token: {0}")]
    Token(String),
    #[error("permutation secret must be at least 16 bytes, got {0}")]
    ShortSecret(usize),
    #[error("a permutation needs a domain of at least one element")]
    EmptyDomain,
    #[error("invalid timestamp {0}")]
    Timestamp(i64),
    #[error("unknown list format {0:?} (Token or Bitstring)")]
    UnknownListFormat(String),
}

impl From<jsonwebtoken::errors::Error> for FormatError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            _ => Self::Token(e.to_string()),
        }
    }
}

impl From<coset::CoseError> for FormatError {
    fn from(e: coset::CoseError) -> Self {
        Self::Token(format!("COSE: {e}"))
    }
}
