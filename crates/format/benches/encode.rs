//! Encode + compress + sign a 1,000,000-entry 2-bit list with 1% INVALID entries at
//! random, and decode it back, at every zlib level. Prints medians; run with
//! `cargo bench -p statuslist-format --bench encode`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use statuslist_format::bitstring::{self, CredentialMeta};
use statuslist_format::token::{self, CompressedList, TokenClaims};
use statuslist_format::{Bits, Permutation, SigningKey, Status, StatusArray};

const ENTRIES: u64 = 1_000_000;
const RUNS: usize = 21;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn time<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut samples = Vec::with_capacity(RUNS);
    let mut out = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        out = Some(black_box(f()));
        samples.push(start.elapsed());
    }
    (median(samples), out.expect("RUNS > 0"))
}

fn main() {
    // 1% of the list INVALID, at indices chosen by the keyed permutation (as issuance does).
    let p = Permutation::new(b"benchmark secret, not a key", ENTRIES).expect("valid");
    let mut list = StatusArray::new(Bits::Two, ENTRIES).expect("fits");
    for pos in 0..ENTRIES / 100 {
        list.set(p.forward(pos).expect("in range"), Status::INVALID.0)
            .expect("fits");
    }
    let key = SigningKey::generate().expect("key");
    let claims = TokenClaims {
        sub: "https://status.example.gov.uk/t/A671FED3E9AD".into(),
        iss: Some("https://status.example.gov.uk".into()),
        iat: 1_760_000_000,
        exp: Some(1_760_086_400),
        ttl: Some(3600),
        aggregation_uri: None,
    };

    println!("1,000,000 entries x 2 bits (250,000 bytes raw), 1% INVALID; median of {RUNS} runs");
    println!(
        "{:>5} {:>16} {:>12} {:>12} {:>12} {:>14}",
        "zlib", "compress+sign", "+CWT", "JWT bytes", "decode", "verify+decode"
    );
    for level in [1, 3, 6, 9] {
        let (jwt_ms, jwt) = time(|| {
            token::sign_jwt(&claims, &CompressedList::new(&list, level), &key).expect("sign")
        });
        let (both_ms, _) = time(|| {
            let c = CompressedList::new(&list, level);
            (
                token::sign_jwt(&claims, &c, &key).expect("sign"),
                token::sign_cwt(&claims, &c, &key).expect("sign"),
            )
        });
        let compressed = CompressedList::new(&list, level);
        let (decode_ms, decoded) = time(|| compressed.decode().expect("decodes"));
        assert_eq!(decoded, list);
        let (verify_ms, _) =
            time(|| token::verify_jwt(&jwt, key.verifying_key()).expect("verifies"));
        println!(
            "{level:>5} {jwt_ms:>13.2} ms {both_ms:>9.2} ms {:>12} {decode_ms:>9.2} ms {verify_ms:>11.2} ms",
            jwt.len()
        );
    }

    // The same list as a W3C credential (gzip, MSB-first) at the default level.
    let meta = CredentialMeta {
        uri: "https://status.example.gov.uk/b/A671FED3E9AD".into(),
        issuer: "https://status.example.gov.uk".into(),
        valid_from: 1_760_000_000,
        valid_until: 1_760_086_400,
        ttl_seconds: Some(3600),
    };
    let level = token::DEFAULT_ZLIB_LEVEL;
    let (vc_ms, vc) = time(|| bitstring::sign_vc_jwt(&meta, &list, level, &key).expect("sign"));
    let (vc_verify_ms, _) =
        time(|| bitstring::verify_vc_jwt(&vc, key.verifying_key()).expect("verifies"));
    println!(
        "vc+jwt level {level}: build+sign {vc_ms:.2} ms, {} bytes; verify+decode {vc_verify_ms:.2} ms",
        vc.len()
    );

    let (perm_ms, _) = time(|| {
        (0..ENTRIES / 100)
            .map(|i| p.forward(i).expect("in range"))
            .sum::<u64>()
    });
    println!(
        "permutation: {:.0} ns per forward()",
        perm_ms * 1e6 / (ENTRIES / 100) as f64
    );
}
