//! The published test vectors: IETF draft -20 (every example file), GOV.UK, W3C.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use statuslist_format::token::{CompressedList, DEFAULT_ZLIB_LEVEL, StatusListJson};
use statuslist_format::{Bits, FormatError, SigningKey, StatusArray, bitstring, token};

const ENTRIES: u64 = 1 << 20;

fn vector(name: &str) -> String {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn unwrap_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The hex after "encoded:" (short examples) or the whole file (long ones).
fn hex_of(name: &str) -> Vec<u8> {
    let text = vector(name);
    let hex = text
        .split("encoded:")
        .last()
        .expect("split yields one part");
    let hex = unwrap_whitespace(hex);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn json_of(name: &str) -> StatusListJson {
    let text = vector(name);
    let json = text
        .split("encoded:")
        .last()
        .expect("split yields one part");
    serde_json::from_str(&unwrap_whitespace(json)).expect("example JSON")
}

/// `status[i] = 0bV` lines of the draft's appendix, per bit width.
fn listed_statuses() -> BTreeMap<u8, BTreeMap<u64, u8>> {
    let mut all: BTreeMap<u8, BTreeMap<u64, u8>> = BTreeMap::new();
    let mut bits = 0u8;
    for line in vector("draft-20-test-vectors.md").lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            bits = rest
                .split('-')
                .next()
                .expect("heading")
                .parse()
                .expect("N-bit heading");
        } else if let Some(rest) = line.strip_prefix("status[") {
            let (idx, val) = rest.split_once(']').expect("status[i] = 0b..");
            let val = val
                .trim()
                .trim_start_matches('=')
                .trim()
                .trim_start_matches("0b");
            let entry = all.entry(bits).or_default();
            let old = entry.insert(
                idx.parse().expect("index"),
                u8::from_str_radix(val, 2).expect("binary"),
            );
            assert!(old.is_none(), "index listed twice");
        }
    }
    all
}

fn assert_matches_listing(array: &StatusArray, listed: &BTreeMap<u64, u8>) {
    assert_eq!(array.len(), ENTRIES);
    let expected: Vec<(u64, u8)> = listed
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(i, v)| (*i, *v))
        .collect();
    assert_eq!(array.non_zero().collect::<Vec<_>>(), expected);
    for (i, v) in listed {
        assert_eq!(
            array.get(*i).expect("listed index in range"),
            *v,
            "status[{i}]"
        );
    }
}

#[test]
fn every_long_vector_decodes_to_its_listing_and_reencodes() {
    let listings = listed_statuses();
    assert_eq!(
        listings.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 4, 8]
    );
    assert_eq!(
        listings[&8].len(),
        256,
        "the 8-bit vector lists every value once"
    );
    let files = [
        (
            1,
            "status_list_encoding1_long_json.md",
            "status_list_encoding1_long_cbor.md",
        ),
        (
            2,
            "status_list_encoding2_long_json.md",
            "status_list_encoding2_long_cbor.md",
        ),
        (
            4,
            "status_list_encoding4_json.md",
            "status_list_encoding4_cbor.md",
        ),
        (
            8,
            "status_list_encoding8_json.md",
            "status_list_encoding8_cbor.md",
        ),
    ];
    for (bits, json, cbor) in files {
        let listed = &listings[&bits];
        let from_json = json_of(json);
        assert_eq!(from_json.bits, bits);
        let decoded = from_json.decode().expect("JSON vector decodes");
        assert_matches_listing(&decoded, listed);

        let from_cbor = CompressedList::from_cbor(&hex_of(cbor)).expect("CBOR vector parses");
        assert_eq!(from_cbor.bits.get(), bits);
        assert_eq!(from_cbor.decode().expect("CBOR vector decodes"), decoded);

        // Our encoding of the same statuses decodes back identical.
        let mut ours =
            StatusArray::new(Bits::try_from(bits).expect("valid"), ENTRIES).expect("list");
        for (i, v) in listed {
            ours.set(*i, *v).expect("listed entry fits");
        }
        assert_eq!(ours, decoded);
        let compressed = CompressedList::new(&ours, DEFAULT_ZLIB_LEVEL);
        assert_eq!(compressed.to_json().decode().expect("our JSON"), decoded);
        assert_eq!(
            CompressedList::from_cbor(&compressed.to_cbor())
                .expect("our CBOR")
                .decode()
                .expect("decodes"),
            decoded
        );
    }
}

#[test]
fn short_examples_decode_to_their_exact_bytes() {
    for (json, cbor, bytes) in [
        (
            "status_list_encoding_json.md",
            "status_list_encoding_cbor.md",
            vec![0xb9, 0xa3],
        ),
        (
            "status_list_encoding2_json.md",
            "status_list_encoding2_cbor.md",
            vec![0xc9, 0x44, 0xf9],
        ),
    ] {
        assert_eq!(
            json_of(json).decode().expect("decodes").as_bytes(),
            bytes.as_slice()
        );
        let list = CompressedList::from_cbor(&hex_of(cbor)).expect("parses");
        assert_eq!(list.decode().expect("decodes").as_bytes(), bytes.as_slice());
    }
    // The draft's one-bit walk-through, entry by entry.
    let a = json_of("status_list_encoding_json.md")
        .decode()
        .expect("decodes");
    let expected = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1];
    assert_eq!(
        (0..16)
            .map(|i| a.get(i).expect("in range"))
            .collect::<Vec<_>>(),
        expected
    );
    // ... and the two-bit one.
    let a = json_of("status_list_encoding2_json.md")
        .decode()
        .expect("decodes");
    let expected = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3];
    assert_eq!(
        (0..12)
            .map(|i| a.get(i).expect("in range"))
            .collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn draft_jwt_and_cwt_examples_parse() {
    // JWT example: header typ and the embedded list (no key is published for it).
    let raw = unwrap_whitespace(&vector("status_list_jwt_raw.md"));
    let mut parts = raw.split('.');
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts.next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["typ"], token::JWT_TYP);
    let payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts.next().expect("payload"))
            .expect("b64"),
    )
    .expect("json");
    let list: StatusListJson =
        serde_json::from_value(payload["status_list"].clone()).expect("status_list");
    assert_eq!(list.decode().expect("decodes").as_bytes(), &[0xb9, 0xa3]);

    // CWT example: it is structurally a Status List Token (tag 18, ES256, typ), its kid
    // is "12", and a key that did not sign it is rejected at the signature.
    let cwt = hex_of("status_list_cwt.md");
    assert_eq!(token::cwt_kid(&cwt).expect("kid"), "12");
    let other = SigningKey::generate().expect("key");
    assert!(matches!(
        token::verify_cwt(&cwt, other.verifying_key()),
        Err(FormatError::BadSignature)
    ));
}

#[test]
fn govuk_vectors() {
    let mut a = StatusArray::new(Bits::Two, 8).expect("list");
    for (i, v) in [1, 0, 0, 1, 0, 1, 0, 1].into_iter().enumerate() {
        a.set(i as u64, v).expect("fits");
    }
    assert_eq!(a.as_bytes(), &[0x41, 0x44]);
    let published = StatusListJson {
        bits: 2,
        lst: "eNpzdAEAAMgAhg".into(),
        aggregation_uri: None,
    };
    assert_eq!(published.decode().expect("GOV.UK lst decodes"), a);
    assert_eq!(
        CompressedList::new(&a, DEFAULT_ZLIB_LEVEL)
            .to_json()
            .decode()
            .expect("ours"),
        a
    );

    let mut b = StatusArray::new(Bits::Two, 8).expect("list");
    for (i, v) in [2, 3, 1, 0, 3, 0, 2, 1].into_iter().enumerate() {
        b.set(i as u64, v).expect("fits");
    }
    assert_eq!(b.as_bytes(), &[0x1e, 0x63]);
}

#[test]
fn w3c_empty_list_example_has_131072_entries() {
    let encoded = "uH4sIAAAAAAAAA-3BMQEAAADCoPVPbQwfoAAAAAAAAAAAAAAAAAAAAIC3AYbSVKsAQAAA";
    let list = bitstring::decode_list(encoded, Bits::One).expect("W3C example decodes");
    assert_eq!(list.len(), 131_072);
    assert_eq!(list.non_zero().count(), 0);
    // Read as 2-bit entries it would hold 65536: below the minimum, so an error.
    assert!(matches!(
        bitstring::decode_list(encoded, Bits::Two),
        Err(FormatError::TooFewEntries { .. })
    ));
}

#[test]
fn w3c_index_zero_is_the_leftmost_bit() {
    let mut a = StatusArray::new(Bits::One, bitstring::MIN_ENTRIES).expect("list");
    a.set(0, 1).expect("fits");
    a.set(9, 1).expect("fits");
    let encoded = bitstring::encode_list(&a, 6).expect("encodes");
    let gz = URL_SAFE_NO_PAD.decode(&encoded[1..]).expect("b64");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut raw)
        .expect("gzip");
    assert_eq!(&raw[..2], &[0b1000_0000, 0b0100_0000]);
    assert_eq!(
        bitstring::decode_list(&encoded, Bits::One).expect("decodes"),
        a
    );
}
