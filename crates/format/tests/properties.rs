//! Property tests: encodings round-trip for every width and size; the permutation is a
//! bijection with an exact inverse.

use proptest::prelude::*;
use statuslist_format::bitstring;
use statuslist_format::token::CompressedList;
use statuslist_format::{Bits, Permutation, StatusArray};

fn bits() -> impl Strategy<Value = Bits> {
    prop::sample::select(Bits::ALL.to_vec())
}

/// A width, a length, and up to 64 entries set to in-range values.
fn list(min_len: u64, max_len: u64) -> impl Strategy<Value = StatusArray> {
    (bits(), min_len..max_len).prop_flat_map(|(bits, len)| {
        prop::collection::vec((0..len, 0..=bits.max_value()), 0..64).prop_map(move |entries| {
            let mut a = StatusArray::new(bits, len).expect("length in range");
            for (i, v) in entries {
                a.set(i, v).expect("generated in range");
            }
            a
        })
    })
}

proptest! {
    #[test]
    fn token_round_trip(a in list(1, 20_000), level in 0u32..=9) {
        let compressed = CompressedList::new(&a, level);
        let via_json = compressed.to_json().decode().expect("decodes");
        let via_cbor = CompressedList::from_cbor(&compressed.to_cbor()).expect("parses").decode().expect("decodes");
        prop_assert_eq!(&via_json, &via_cbor);
        // Decoding yields the byte array's full capacity; the tail past `len` is zero.
        prop_assert!(via_json.len() >= a.len() && via_json.len() < a.len() + 8);
        prop_assert_eq!(via_json.non_zero().collect::<Vec<_>>(), a.non_zero().collect::<Vec<_>>());
        for i in 0..a.len().min(200) {
            prop_assert_eq!(via_json.get(i).expect("in range"), a.get(i).expect("in range"));
        }
    }

    #[test]
    fn get_returns_what_set_stored(bits in bits(), len in 1u64..5000, writes in prop::collection::vec((any::<u64>(), any::<u8>()), 1..200)) {
        let mut a = StatusArray::new(bits, len).expect("small");
        let mut model = vec![0u8; len as usize];
        for (i, v) in writes {
            let (i, v) = (i % len, v & bits.max_value());
            a.set(i, v).expect("in range");
            model[i as usize] = v;
        }
        for (i, v) in model.iter().enumerate() {
            prop_assert_eq!(a.get(i as u64).expect("in range"), *v);
        }
    }

    #[test]
    fn permutation_inverse_is_exact(secret in prop::collection::vec(any::<u8>(), 16..48), n in 1u64..u64::MAX, pos in any::<u64>()) {
        let p = Permutation::new(&secret, n).expect("valid");
        let pos = pos % n;
        let idx = p.forward(pos).expect("in range");
        prop_assert!(idx < n);
        prop_assert_eq!(p.inverse(idx).expect("in range"), pos);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn bitstring_round_trip(a in list(bitstring::MIN_ENTRIES, bitstring::MIN_ENTRIES + 5000)) {
        let encoded = bitstring::encode_list(&a, 6).expect("long enough");
        let decoded = bitstring::decode_list(&encoded, a.bits()).expect("decodes");
        prop_assert_eq!(decoded.non_zero().collect::<Vec<_>>(), a.non_zero().collect::<Vec<_>>());
    }
}

fn assert_bijection(p: &Permutation, seen: &mut Vec<bool>) {
    let n = p.len();
    seen.clear();
    seen.resize(n as usize, false);
    for pos in 0..n {
        let idx = p.forward(pos).expect("in range");
        assert!(idx < n, "n={n}: {pos} -> {idx}");
        assert!(
            !std::mem::replace(&mut seen[idx as usize], true),
            "n={n}: index {idx} hit twice"
        );
        assert_eq!(
            p.inverse(idx).expect("in range"),
            pos,
            "n={n}: inverse of {idx}"
        );
    }
}

#[test]
fn permutation_is_a_bijection_for_every_n_up_to_5000() {
    let mut seen = Vec::new();
    for n in 1..=5000 {
        assert_bijection(
            &Permutation::new(b"sixteen byte key", n).expect("valid"),
            &mut seen,
        );
    }
}

#[test]
fn permutation_is_a_bijection_for_100000() {
    let mut seen = Vec::new();
    for secret in [[0u8; 16], [0xa5; 16]] {
        assert_bijection(
            &Permutation::new(&secret, 100_000).expect("valid"),
            &mut seen,
        );
    }
}
