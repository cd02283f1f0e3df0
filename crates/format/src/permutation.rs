//! A keyed bijection of `[0, N)`: position -> index and back.
//!
//! Leases hand out consecutive *positions*; the index a credential gets is
//! `forward(position)`, so consecutive issuances land on unrelated, unpredictable slots
//! (herd privacy, draft -20 section 12.5 and the W3C privacy section) without a free-slot
//! table. Construction: a balanced Feistel network over the smallest even-width domain
//! `2^(2h) >= N`, with SipHash-1-3 (a PRF keyed with 128 bits) as round function, and
//! cycle walking to stay inside `[0, N)`. The domain is at most `4N`, so a call walks fewer
//! than four times on average.

use siphasher::sip::SipHasher13;

use crate::FormatError;

/// Feistel rounds. Four suffice for a strong pseudo-random permutation (Luby-Rackoff);
/// eight keep a margin for small domains, at ~20 ns a round.
const ROUNDS: u8 = 8;
/// Minimum secret length in bytes (128 bits).
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Clone)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    half_mask: u64,
    prf: SipHasher13,
}

impl std::fmt::Debug for Permutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is secret: show the domain only.
        f.debug_struct("Permutation")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl Permutation {
    /// A permutation of `[0, n)` keyed by `secret` (at least 16 bytes). The same secret
    /// and `n` always give the same permutation; another `n` gives an unrelated one.
    pub fn new(secret: &[u8], n: u64) -> Result<Self, FormatError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(FormatError::ShortSecret(secret.len()));
        }
        if n == 0 {
            return Err(FormatError::EmptyDomain);
        }
        // Fold any secret length into the 128-bit SipHash key through SHA-256.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let d = digest.as_ref();
        let k0 = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes of a 32-byte digest"));
        let k1 = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes of a 32-byte digest"));
        // Smallest h >= 1 with 4^h >= n; h <= 32 because n < 2^64.
        let bits_needed = 64 - (n - 1).leading_zeros();
        let half_bits = bits_needed.div_ceil(2).max(1);
        let half_mask = if half_bits == 32 {
            u64::from(u32::MAX)
        } else {
            (1u64 << half_bits) - 1
        };
        Ok(Self {
            n,
            half_bits,
            half_mask,
            prf: SipHasher13::new_with_keys(k0, k1),
        })
    }

    /// Size of the domain.
    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn round(&self, r: u8, half: u64) -> u64 {
        let mut block = [0u8; 17];
        block[0] = r;
        block[1..9].copy_from_slice(&self.n.to_le_bytes());
        block[9..17].copy_from_slice(&half.to_le_bytes());
        self.prf.hash(&block) & self.half_mask
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half_bits, x & self.half_mask);
        for i in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(i, r));
        }
        (l << self.half_bits) | r
    }

    fn decrypt(&self, y: u64) -> u64 {
        let (mut l, mut r) = (y >> self.half_bits, y & self.half_mask);
        for i in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(i, l), l);
        }
        (l << self.half_bits) | r
    }

    /// Position -> index.
    pub fn forward(&self, position: u64) -> Result<u64, FormatError> {
        self.walk(position, Self::encrypt)
    }

    /// Index -> position: the exact inverse of [`Permutation::forward`].
    pub fn inverse(&self, index: u64) -> Result<u64, FormatError> {
        self.walk(index, Self::decrypt)
    }

    fn walk(&self, start: u64, step: fn(&Self, u64) -> u64) -> Result<u64, FormatError> {
        if start >= self.n {
            return Err(FormatError::IndexOutOfRange {
                index: start,
                len: self.n,
            });
        }
        // Cycle walking: the cycle through `start` re-enters [0, n) before returning to
        // `start`, so this terminates; the domain is under 4n, so it is short.
        let mut x = step(self, start);
        while x >= self.n {
            x = step(self, x);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_secret_and_empty_domain() {
        assert!(matches!(
            Permutation::new(&[0; 15], 10),
            Err(FormatError::ShortSecret(15))
        ));
        assert!(matches!(
            Permutation::new(&[0; 16], 0),
            Err(FormatError::EmptyDomain)
        ));
        let p = Permutation::new(&[7; 16], 10).expect("valid");
        assert!(matches!(
            p.forward(10),
            Err(FormatError::IndexOutOfRange { index: 10, len: 10 })
        ));
        assert!(matches!(
            p.inverse(u64::MAX),
            Err(FormatError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn single_element_and_huge_domains() {
        let p = Permutation::new(&[1; 32], 1).expect("valid");
        assert_eq!(p.forward(0).expect("in range"), 0);
        let p = Permutation::new(&[1; 32], u64::MAX).expect("valid");
        for pos in [0, 1, u64::MAX - 1, 1 << 40] {
            let idx = p.forward(pos).expect("in range");
            assert_eq!(p.inverse(idx).expect("in range"), pos);
        }
    }

    #[test]
    fn consecutive_positions_are_not_consecutive_indices() {
        let p = Permutation::new(b"0123456789abcdef", 1_000_000).expect("valid");
        let idx: Vec<u64> = (0..1000).map(|i| p.forward(i).expect("in range")).collect();
        let adjacent = idx.windows(2).filter(|w| w[0].abs_diff(w[1]) < 16).count();
        // For a random permutation of 10^6, about 1000 * 32 / 10^6 ~ 0.03 pairs are that close.
        assert!(adjacent <= 2, "{adjacent} adjacent pairs");
        // Another key, another order.
        let q = Permutation::new(b"0123456789abcdeF", 1_000_000).expect("valid");
        let same = (0..1000)
            .filter(|&i| q.forward(i).expect("in range") == idx[i as usize])
            .count();
        assert!(same <= 2);
    }
}
