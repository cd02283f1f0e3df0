//! The CPU one publish costs a worker after one revocation of a 1,000,000-entry 2-bit list
//! (1% INVALID at random), as the publisher does it: take its copy of the status array,
//! apply the change, compress once and sign the JWT and the CWT; then, for serving, the
//! gzip variant of each body. One thread, no I/O, so wall time is CPU time. Median of 21
//! runs at each zlib level. `cargo bench -p statuslist-worker --bench publish`

use std::hint::black_box;
use std::time::{Duration, Instant};

use statuslist_format::{Bits, Permutation, SigningKey, Status, StatusArray};
use statuslist_store::{ArtifactKind, ListFormat, ListInfo, ListState, PublishJob, StoredArtifact};
use statuslist_worker::render::{apply, render_array};
use statuslist_worker::served::Served;

const ENTRIES: u64 = 1_000_000;
const RUNS: usize = 21;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let p = Permutation::new(b"benchmark secret, not a key", ENTRIES).expect("valid");
    let mut copy = StatusArray::new(Bits::Two, ENTRIES).expect("fits");
    for pos in 0..ENTRIES / 100 {
        copy.set(p.forward(pos).expect("in range"), Status::INVALID.0)
            .expect("fits");
    }
    let key = SigningKey::generate().expect("key");
    let revoked = p.forward(ENTRIES / 100).expect("in range");
    let job = PublishJob {
        list: ListInfo {
            id: "A671FED3E9AD".into(),
            pool: Some("bench".into()),
            uri: "https://status.example.gov.uk/t/A671FED3E9AD".into(),
            format: ListFormat::Token,
            bits: Bits::Two,
            size: ENTRIES,
            state: ListState::Active,
            version: 2,
        },
        ttl_seconds: 3600,
        validity_seconds: 86_400,
        entries: vec![(revoked, Status::INVALID.0)],
        since: Some(1),
    };

    println!(
        "publish after one revocation: 1,000,000 entries x 2 bits, 1% INVALID; median of {RUNS} runs"
    );
    println!(
        "{:>5} {:>10} {:>14} {:>14} {:>10} {:>10}",
        "zlib", "apply", "render+sign", "gzip (serve)", "total", "JWT bytes"
    );
    for level in 1..=9 {
        let (mut applying, mut rendering, mut serving) = (Vec::new(), Vec::new(), Vec::new());
        let mut size = 0;
        for _ in 0..RUNS {
            // The copy is taken out of the publisher's map, as a move: no clone is timed.
            let taken = copy.clone();
            let start = Instant::now();
            let array = black_box(apply(&job, Some(taken)).expect("applies"));
            let applied = Instant::now();
            let artifacts =
                black_box(render_array(&job, &array, &key, level, 1_760_000_000).expect("renders"));
            let rendered = Instant::now();
            for artifact in &artifacts {
                black_box(Served::new(StoredArtifact {
                    list: job.list.clone(),
                    version: job.list.version,
                    artifact: artifact.clone(),
                }));
            }
            let served = Instant::now();
            applying.push(applied - start);
            rendering.push(rendered - applied);
            serving.push(served - rendered);
            size = artifacts
                .iter()
                .find(|a| a.kind == ArtifactKind::Jwt)
                .map_or(0, |a| a.body.len());
        }
        let (a, r, s) = (median(applying), median(rendering), median(serving));
        println!(
            "{level:>5} {a:>7.2} ms {r:>11.2} ms {s:>11.2} ms {:>7.2} ms {size:>10}",
            a + r
        );
    }
    println!(
        "(total: apply + render + sign, the publish itself; gzip is paid once per worker when it caches the new version)"
    );
}
