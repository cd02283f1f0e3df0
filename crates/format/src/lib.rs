//! Status list encodings, with no IO: everything a verifier ever sees is built here.
//!
//! - [`StatusArray`]: N entries of 1, 2, 4 or 8 bits, in the IETF layout (index 0 in the
//!   least significant bits of byte 0). One logical array, two encodings:
//! - [`token`]: IETF Token Status List (draft -20): zlib + base64url, signed as a JWT
//!   (`statuslist+jwt`) or a CWT (`COSE_Sign1_Tagged`, `application/statuslist+cwt`);
//! - [`bitstring`]: W3C Bitstring Status List: index 0 in the most significant bits,
//!   gzip, multibase `u`, wrapped in a `BitstringStatusListCredential` signed as `vc+jwt`;
//! - [`keys`]: ES256 keys (PKCS#8 PEM), public JWKs with RFC 7638 thumbprint `kid`, JWKS;
//! - [`permutation`]: the keyed bijection of `[0, N)` that makes indices unlinkable;
//! - [`verify`]: a fetched list checked against a JWK Set, as a verifier does.

mod array;
pub mod bitstring;
mod clock;
mod error;
pub mod keys;
mod list_format;
pub mod permutation;
pub mod token;
pub mod verify;

pub use array::{Bits, Status, StatusArray};
pub use clock::unix_now;
pub use error::FormatError;
pub use keys::{Jwks, SigningKey, VerifyingKey};
pub use list_format::ListFormat;
pub use permutation::Permutation;

/// Largest decompressed list this crate will inflate (16 MiB: 2^27 one-bit entries, 2^24
/// eight-bit ones). Anything larger is treated as a decompression bomb.
pub const MAX_DECODED_BYTES: usize = 16 << 20;
