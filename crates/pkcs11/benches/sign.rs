//! `cargo bench -p statuslist-pkcs11 --features testing --bench sign`: ES256 signatures per
//! second through SoftHSM2 against aws-lc-rs in this process (one thread each), and what
//! one publish of a 1,000,000-entry 2-bit list (1% INVALID; compress at zlib 6, sign the
//! JWT and the CWT) costs in each mode. Medians of 5 rounds. The module reads
//! `SOFTHSM2_CONF` when it is initialised, so the bench runs itself again with it set.

use std::time::{Duration, Instant};

use statuslist_format::token::{self, CompressedList, TokenClaims};
use statuslist_format::{Bits, SigningKey, StatusArray};
use statuslist_pkcs11::Token;
use statuslist_pkcs11::testing::SoftHsm;

const SIGNATURES: usize = 2_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn signatures_per_second(key: &SigningKey) -> f64 {
    let message = [7u8; 200];
    let started = Instant::now();
    for _ in 0..SIGNATURES {
        key.sign_raw(&message).expect("sign");
    }
    SIGNATURES as f64 / started.elapsed().as_secs_f64()
}

fn publish(key: &SigningKey, list: &StatusArray) -> Duration {
    let claims = TokenClaims {
        sub: "https://s.example/t/AAAAAAAAAAAA".into(),
        iss: None,
        iat: 1_800_000_000,
        exp: Some(1_800_086_400),
        ttl: Some(300),
        aggregation_uri: None,
    };
    let started = Instant::now();
    let compressed = CompressedList::new(list, 6);
    token::sign_jwt(&claims, &compressed, key).expect("jwt");
    token::sign_cwt(&claims, &compressed, key).expect("cwt");
    started.elapsed()
}

fn main() {
    let Some(hsm) = SoftHsm::for_bench() else {
        return;
    };
    hsm.init_token("bench");
    let token = Token::open(&hsm.config("bench")).expect("token");
    let in_token = token.generate("statuslist-bench").expect("key");
    let local = SigningKey::generate().expect("key");
    let mut list = StatusArray::new(Bits::Two, 1_000_000).expect("list");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        list.set(x % 1_000_000, 1).expect("set");
    }
    let (mut local_rate, mut token_rate, mut local_pub, mut token_pub) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..5 {
        local_rate.push(signatures_per_second(&local));
        token_rate.push(signatures_per_second(&in_token));
        local_pub.push(publish(&local, &list).as_secs_f64() * 1e3);
        token_pub.push(publish(&in_token, &list).as_secs_f64() * 1e3);
    }
    let (lr, tr) = (median(local_rate), median(token_rate));
    println!(
        "ES256 signatures/s, one thread: aws-lc-rs in process {lr:.0}, SoftHSM2 (PKCS#11) {tr:.0} ({:.0}%)",
        tr / lr * 100.0
    );
    println!(
        "publish of a 1,000,000-entry 2-bit list (zlib 6, JWT + CWT): in process {:.2} ms, SoftHSM2 {:.2} ms",
        median(local_pub),
        median(token_pub)
    );
    println!(
        "list re-signs per second a worker can afford in HSM mode (two signatures a Token list): {:.0}",
        tr / 2.0
    );
}
