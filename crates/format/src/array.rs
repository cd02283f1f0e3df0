use crate::{FormatError, MAX_DECODED_BYTES};

/// Bits per entry: the only widths either standard allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bits {
    One = 1,
    Two = 2,
    Four = 4,
    Eight = 8,
}

impl Bits {
    pub const ALL: [Bits; 4] = [Bits::One, Bits::Two, Bits::Four, Bits::Eight];

    pub const fn get(self) -> u8 {
        self as u8
    }

    /// Largest status value an entry can hold.
    pub const fn max_value(self) -> u8 {
        ((1u16 << self as u16) - 1) as u8
    }

    /// Bytes needed for `len` entries.
    pub const fn bytes_for(self, len: u64) -> u64 {
        (len * self as u64).div_ceil(8)
    }
}

impl TryFrom<u64> for Bits {
    type Error = FormatError;
    fn try_from(v: u64) -> Result<Self, FormatError> {
        match v {
            1 => Ok(Bits::One),
            2 => Ok(Bits::Two),
            4 => Ok(Bits::Four),
            8 => Ok(Bits::Eight),
            other => Err(FormatError::InvalidBits(other)),
        }
    }
}

impl TryFrom<u8> for Bits {
    type Error = FormatError;
    fn try_from(v: u8) -> Result<Self, FormatError> {
        Bits::try_from(u64::from(v))
    }
}

impl std::fmt::Display for Bits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// A status value and its registered name (draft -20 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u8);

impl Status {
    pub const VALID: Status = Status(0);
    pub const INVALID: Status = Status(1);
    pub const SUSPENDED: Status = Status(2);

    /// The registered Status Type name; values not yet registered are `UNASSIGNED`.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x00 => "VALID",
            0x01 => "INVALID",
            0x02 => "SUSPENDED",
            0x03 | 0x0C..=0x0F => "APPLICATION_SPECIFIC",
            _ => "UNASSIGNED",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `len` statuses of `bits` bits each, packed as the IETF draft lays them out: index 0 in
/// the least significant bits of byte 0. The W3C layout is derived from this one on
/// encoding ([`crate::bitstring`]), so a list has exactly one source of truth.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusArray {
    bits: Bits,
    len: u64,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for StatusArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusArray")
            .field("bits", &self.bits)
            .field("len", &self.len)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl StatusArray {
    /// An all-VALID array of `len` entries.
    pub fn new(bits: Bits, len: u64) -> Result<Self, FormatError> {
        let bytes = checked_bytes(bits, len)?;
        Ok(Self {
            bits,
            len,
            bytes: vec![0; bytes],
        })
    }

    /// Wraps a byte array in IETF layout. `len` may be below the byte array's capacity
    /// (the trailing entries must then be zero, as nothing can address them).
    pub fn from_bytes(bits: Bits, len: u64, bytes: Vec<u8>) -> Result<Self, FormatError> {
        let needed = checked_bytes(bits, len)?;
        if bytes.len() != needed {
            return Err(FormatError::LengthMismatch {
                bytes: bytes.len(),
                len,
                bits: bits.get(),
            });
        }
        Ok(Self { bits, len, bytes })
    }

    /// Wraps a decoded byte array whose every entry is addressable: `len = bytes * 8 / bits`.
    pub fn from_full_bytes(bits: Bits, bytes: Vec<u8>) -> Result<Self, FormatError> {
        let len = bytes.len() as u64 * 8 / u64::from(bits.get());
        Self::from_bytes(bits, len, bytes)
    }

    pub fn bits(&self) -> Bits {
        self.bits
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed bytes, IETF layout.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn locate(&self, index: u64) -> Result<(usize, u32), FormatError> {
        if index >= self.len {
            return Err(FormatError::IndexOutOfRange {
                index,
                len: self.len,
            });
        }
        let bit = index * u64::from(self.bits.get());
        // In range: index < len and the byte vector holds len * bits bits.
        Ok(((bit / 8) as usize, (bit % 8) as u32))
    }

    pub fn get(&self, index: u64) -> Result<u8, FormatError> {
        let (byte, shift) = self.locate(index)?;
        Ok((self.bytes[byte] >> shift) & self.bits.max_value())
    }

    pub fn set(&mut self, index: u64, value: u8) -> Result<(), FormatError> {
        if value > self.bits.max_value() {
            return Err(FormatError::ValueOutOfRange {
                value,
                bits: self.bits.get(),
            });
        }
        let (byte, shift) = self.locate(index)?;
        let mask = self.bits.max_value() << shift;
        self.bytes[byte] = (self.bytes[byte] & !mask) | (value << shift);
        Ok(())
    }

    /// Every `(index, value)` with a non-zero value, in index order.
    pub fn non_zero(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        let per_byte = 8 / u64::from(self.bits.get());
        let (bits, mask, len) = (self.bits.get(), self.bits.max_value(), self.len);
        self.bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .flat_map(move |(i, &b)| {
                (0..per_byte).filter_map(move |j| {
                    let value = (b >> (j as u32 * u32::from(bits))) & mask;
                    let index = i as u64 * per_byte + j;
                    (value != 0 && index < len).then_some((index, value))
                })
            })
    }
}

fn checked_bytes(bits: Bits, len: u64) -> Result<usize, FormatError> {
    let bytes = len
        .checked_mul(u64::from(bits.get()))
        .map(|b| b.div_ceil(8))
        .filter(|&b| b <= MAX_DECODED_BYTES as u64);
    match bytes {
        Some(b) => Ok(b as usize),
        None => Err(FormatError::TooLarge {
            requested: len,
            bits: bits.get(),
            max: MAX_DECODED_BYTES,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn govuk_two_bit_bytes() {
        for (statuses, bytes) in [
            ([1, 0, 0, 1, 0, 1, 0, 1], [0x41, 0x44]),
            ([2, 3, 1, 0, 3, 0, 2, 1], [0x1e, 0x63]),
        ] {
            let mut a = StatusArray::new(Bits::Two, 8).expect("small list");
            for (i, v) in statuses.into_iter().enumerate() {
                a.set(i as u64, v).expect("in range");
            }
            assert_eq!(a.as_bytes(), &bytes);
            assert_eq!(
                (0..8)
                    .map(|i| a.get(i).expect("in range"))
                    .collect::<Vec<_>>(),
                statuses
            );
        }
    }

    #[test]
    fn typed_errors() {
        let mut a = StatusArray::new(Bits::Two, 10).expect("small list");
        assert!(matches!(
            a.get(10),
            Err(FormatError::IndexOutOfRange { index: 10, len: 10 })
        ));
        assert!(matches!(
            a.set(3, 4),
            Err(FormatError::ValueOutOfRange { value: 4, bits: 2 })
        ));
        assert!(matches!(
            a.set(u64::MAX, 1),
            Err(FormatError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            Bits::try_from(3u8),
            Err(FormatError::InvalidBits(3))
        ));
        assert!(matches!(
            StatusArray::new(Bits::Eight, u64::MAX),
            Err(FormatError::TooLarge { .. })
        ));
        assert!(matches!(
            StatusArray::from_bytes(Bits::One, 9, vec![0]),
            Err(FormatError::LengthMismatch { .. })
        ));
        // Nothing changed by the failed calls.
        assert!(a.non_zero().next().is_none());
    }

    #[test]
    fn non_zero_lists_sparse_entries() {
        let mut a = StatusArray::new(Bits::Four, 100).expect("small list");
        a.set(0, 1).expect("in range");
        a.set(57, 15).expect("in range");
        a.set(99, 2).expect("in range");
        assert_eq!(
            a.non_zero().collect::<Vec<_>>(),
            vec![(0, 1), (57, 15), (99, 2)]
        );
    }
}
