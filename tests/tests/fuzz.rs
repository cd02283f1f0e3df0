//! Fuzzing, on the stable toolchain (cargo-fuzz needs nightly and libFuzzer): proptest over
//! arbitrary bytes and over structure-aware mutations of valid inputs, for the three
//! parsers that take input from outside:
//! - the request parser (`Jws::parse` and every header and claim check after it);
//! - the StatusList manifest parser (YAML documents, the CRD types, the spec checks);
//! - the list decoders `statuslist check` uses (JWT and `vc+jwt` lists verified against a
//!   JWK Set, CWTs, the Bitstring `encodedList`).
//!
//! Each target must never panic; the slowest input and the peak memory are reported.
//! `FUZZ_CASES` sets the inputs per target (default 2,000 here); `scripts/fuzz` runs a
//! million per target in release and then also fails on an input slower than
//! `FUZZ_MAX_MS` or a peak RSS over `FUZZ_MAX_RSS_MB`. Failures proptest finds are kept
//! in `tests/proptest-regressions/` and replayed first on every run.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use statuslist_format::bitstring::{self, CredentialMeta};
use statuslist_format::keys::jwks;
use statuslist_format::token::{self, CompressedList, TokenClaims};
use statuslist_format::verify::verify_list;
use statuslist_format::{Bits, SigningKey, StatusArray};
use statuslist_worker::request::Jws;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// One edit of a mutation.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Copy a chunk of the input elsewhere (repeats structure: keys, brackets, lines).
    Duplicate(usize, usize, usize),
    /// Insert one of the target's interesting tokens.
    Token(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Edit::Flip(p, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..256, any::<usize>())
            .prop_map(|(p, n, q)| Edit::Duplicate(p, n, q)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, t)| Edit::Token(p, t)),
    ]
}

fn apply(mut input: Vec<u8>, edits: &[Edit], tokens: &[&[u8]]) -> Vec<u8> {
    for e in edits {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match e {
            Edit::Set(p, b) if !input.is_empty() => {
                let i = p % input.len();
                input[i] = *b;
            }
            Edit::Flip(p, bit) if !input.is_empty() => {
                let i = p % input.len();
                input[i] ^= 1 << bit;
            }
            Edit::Insert(p, bytes) => {
                let i = at(*p, input.len());
                input.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(p, n) if !input.is_empty() => {
                let i = p % input.len();
                let end = (i + n).min(input.len());
                input.drain(i..end);
            }
            Edit::Truncate(p) => {
                let i = at(*p, input.len());
                input.truncate(i);
            }
            Edit::Duplicate(p, n, q) if !input.is_empty() => {
                let i = p % input.len();
                let chunk: Vec<u8> = input[i..(i + n).min(input.len())].to_vec();
                let j = at(*q, input.len());
                input.splice(j..j, chunk);
            }
            Edit::Token(p, t) if !tokens.is_empty() => {
                let i = at(*p, input.len());
                input.splice(i..i, tokens[t % tokens.len()].iter().copied());
            }
            _ => {}
        }
    }
    input
}

/// Arbitrary bytes, or a sample with up to 8 edits (the seeds' structure mostly kept).
fn inputs(samples: Vec<Vec<u8>>, tokens: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    let n = samples.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        4 => (0..n, proptest::collection::vec(edit(), 0..8))
            .prop_map(move |(i, edits)| apply(samples[i].clone(), &edits, tokens)),
    ]
    .boxed()
}

/// Peak resident memory of this process (kB), from `/proc/self/status`.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `target` on `FUZZ_CASES` inputs from `strategy`; reports the slowest input and
/// the peak memory, and (when `scripts/fuzz` sets the limits) fails past them. `target`
/// tells whether an input got past the first check (how deep the mutations reach).
fn fuzz(name: &str, strategy: BoxedStrategy<Vec<u8>>, target: impl Fn(&[u8]) -> bool) {
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/proptest-regressions/fuzz.txt"
            )),
        )),
        ..Config::default()
    });
    let slowest = Mutex::new((Duration::ZERO, Vec::new()));
    let deep = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&strategy, |input| {
        let start = Instant::now();
        if target(&input) {
            deep.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let took = start.elapsed();
        let mut s = slowest.lock().expect("lock");
        if took > s.0 {
            *s = (took, input);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let (took, input) = slowest.into_inner().expect("lock");
    let rss_mb = peak_rss_kb() / 1024;
    println!(
        "fuzz: target={name} inputs={cases} past_first_check={} slowest_ms={:.3} peak_rss_mb={rss_mb}",
        deep.into_inner(),
        took.as_secs_f64() * 1e3
    );
    if let Some(max) = std::env::var("FUZZ_MAX_MS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        assert!(
            took.as_secs_f64() * 1e3 <= max,
            "{name}: an input took {took:?} (over {max} ms): {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    if let Some(max) = std::env::var("FUZZ_MAX_RSS_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        assert!(
            rss_mb <= max,
            "{name}: peak RSS {rss_mb} MiB, over {max} MiB"
        );
    }
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The request parser and every check the handlers make after it.
#[test]
fn request_parser() {
    const TOKENS: &[&[u8]] = &[
        b".",
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"null",
        b"1e999",
        b"-1",
        b"9223372036854775808",
        b"\\u0000",
        b"\"crit\":[\"x\"]",
        b"\"alg\":\"none\"",
        b"==",
    ];
    let now = 1_760_000_000;
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
    let issue = json!({"iss": "client", "iat": now, "jti": "4a1c3f56-8c11-4c1e-9d5e-2b3a4c5d6e7f", "statusExpiry": now + 86_400});
    let revoke = json!({"iss": "client", "iat": now, "jti": "4a1c3f56-8c11-4c1e-9d5e-2b3a4c5d6e7f", "uri": "https://s.example/t/A671FED3E9AD", "idx": 7});
    let sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
    let mut samples = Vec::new();
    for claims in [&issue, &revoke] {
        // Compact, and with the JSON itself exposed to mutation (encoded after the edit
        // by the target below when it is not base64).
        samples.push(format!("{}.{}.{sig}", b64(&header), b64(claims)).into_bytes());
        samples.push(format!("{header}\n{claims}").into_bytes());
    }
    fuzz("request", inputs(samples, TOKENS), |input| {
        // Raw, and (for the JSON-level samples) as a JWS built from mutated JSON.
        let mut bodies = vec![input.to_vec()];
        if let Some(split) = input.iter().position(|b| *b == b'\n') {
            bodies.push(
                format!(
                    "{}.{}.{sig}",
                    URL_SAFE_NO_PAD.encode(&input[..split]),
                    URL_SAFE_NO_PAD.encode(&input[split + 1..])
                )
                .into_bytes(),
            );
        }
        let mut parsed = false;
        for body in bodies {
            if let Ok(jws) = Jws::parse(&body) {
                parsed = true;
                let _ = jws.check_header();
                let _ = jws.issuer();
                let _ = jws.iat(now);
                let _ = jws.jti();
                let _ = jws.status_expiry(now, 31_536_000);
                let _ = jws.idx();
                let _ = jws.uri();
            }
        }
        parsed
    });
}

/// StatusList manifests, as `statuslist operator --manifests` reads them.
#[test]
fn manifest_parser() {
    const TOKENS: &[&[u8]] = &[
        b"\n",
        b": ",
        b"- ",
        b"[",
        b"]",
        b"{",
        b"}",
        b"&a ",
        b"*a",
        b"<<: *a\n",
        b"!!binary ",
        b"---\n",
        b"'",
        b"\"",
        b"#",
        b"0x7fffffffffffffff",
        b"-1",
        b"1e400",
        b"~",
    ];
    let root = statuslist_tests::repo_root().join("examples");
    let samples: Vec<Vec<u8>> = ["token.yaml", "bitstring.yaml"]
        .iter()
        .map(|f| std::fs::read(root.join(f)).expect("example manifest"))
        .collect();
    fuzz("manifest", inputs(samples, TOKENS), |input| {
        let text = String::from_utf8_lossy(input);
        let scan = statuslist_operator::manifests::scan_text("fuzz.yaml", &text);
        !scan.pools.is_empty() || !scan.invalid.is_empty()
    });
}

/// The published lists as `statuslist check` verifies them.
#[test]
fn list_decoders() {
    const TOKENS: &[&[u8]] = &[
        b".",
        b"\"",
        b"{",
        b"}",
        b"u",
        b"eJ",
        b"H4sI",
        b"=",
        b"\xa1",
        b"\xd2\x84",
    ];
    let key = SigningKey::generate().expect("key");
    let set = jwks([&key]);
    let mut list = StatusArray::new(Bits::Two, 1_000).expect("list");
    list.set(3, 1).expect("set");
    let claims = TokenClaims {
        sub: "https://s.example/t/A671FED3E9AD".into(),
        iss: Some("https://s.example".into()),
        iat: 1_760_000_000,
        exp: Some(4_000_000_000),
        ttl: Some(300),
        aggregation_uri: None,
    };
    let compressed = CompressedList::new(&list, 9);
    let jwt = token::sign_jwt(&claims, &compressed, &key).expect("jwt");
    let cwt = token::sign_cwt(&claims, &compressed, &key).expect("cwt");
    let bits = StatusArray::new(Bits::One, 131_072).expect("list");
    let meta = CredentialMeta {
        uri: "https://s.example/b/A671FED3E9AD".into(),
        issuer: "https://s.example".into(),
        valid_from: 1_760_000_000,
        valid_until: 4_000_000_000,
        ttl_seconds: Some(300),
    };
    let vc = bitstring::sign_vc_jwt(&meta, &bits, 9, &key).expect("vc");
    let encoded = bitstring::encode_list(&bits, 9).expect("encoded");
    // The payloads too, so that mutations reach the JSON (and the compressed list) inside.
    let payload = |token: &str| {
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("payload"))
            .expect("base64")
    };
    let samples = vec![
        jwt.clone().into_bytes(),
        vc.clone().into_bytes(),
        cwt,
        encoded.into_bytes(),
        [b"T".as_slice(), &payload(&jwt)].concat(),
        [b"B".as_slice(), &payload(&vc)].concat(),
    ];
    let (jwt_header, vc_header) = (
        jwt.split('.').next().expect("header").to_owned(),
        vc.split('.').next().expect("header").to_owned(),
    );
    fuzz("lists", inputs(samples, TOKENS), |input| {
        let text = String::from_utf8_lossy(input);
        let mut decoded = verify_list("https://s.example/t/A671FED3E9AD", &text, &set).is_ok();
        decoded |= verify_list("https://s.example/b/A671FED3E9AD", &text, &set).is_ok();
        let _ = token::cwt_kid(input);
        decoded |= token::verify_cwt(input, key.verifying_key()).is_ok();
        decoded |= CompressedList::from_cbor(input)
            .and_then(|c| c.decode())
            .is_ok();
        decoded |= bitstring::decode_list(&text, Bits::One).is_ok();
        // A mutated payload behind a valid header (the signature fails, but only after
        // the header; the decoders below see the JSON directly).
        if let Some((kind, rest)) = input.split_first() {
            let header = if *kind == b'T' {
                &jwt_header
            } else {
                &vc_header
            };
            let token = format!("{header}.{}.AAAA", URL_SAFE_NO_PAD.encode(rest));
            let _ = verify_list("https://s.example/t/A671FED3E9AD", &token, &set);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
                if let Ok(l) =
                    serde_json::from_value::<token::StatusListJson>(v["status_list"].clone())
                {
                    let _ = l.decode();
                }
                if let Ok(c) = serde_json::from_value::<bitstring::StatusListCredential>(v) {
                    let _ = c.decode_list();
                    let _ = c.valid_until_unix();
                }
            }
        }
        decoded
    });
}
