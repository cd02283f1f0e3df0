//! The binary as users run it: `statuslist dev` end to end (its printed commands, then
//! Ctrl-C), and bad input answered with one line and a non-zero exit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_statuslist");

/// Runs a printed command line with `sh`, in `dir`.
fn sh(dir: &std::path::Path, line: &str) -> (i32, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .output()
        .expect("sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// Run from a directory without `examples/`: the built-in examples are used.
#[test]
fn dev_runs_the_printed_commands_and_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("statuslist-dev-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--listen-addr",
            "127.0.0.1:0",
            "--issuer-addr",
            "127.0.0.1:0",
        ])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("statuslist dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut port = None;
    let mut commands = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(rest) = line.trim().strip_prefix("PostgreSQL on 127.0.0.1:") {
            port = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with(&format!("  {BIN} ")) {
            commands.push(line.trim().to_owned());
        }
        if line.starts_with("Lists: ") {
            break;
        }
    }
    let port = port.expect("a throwaway PostgreSQL was started");
    assert_eq!(
        commands.len(),
        12,
        "issue, check, revoke, check for each example, and suspend, check, reinstate, check \
         before the revocation where the pool allows suspension: {commands:?}"
    );

    // Each command in order; each check waits (bounded) for the status the command before
    // it set, as the publisher re-signs within moments.
    let mut uris = Vec::new();
    let mut expected = "VALID";
    for command in &commands {
        let sub = command.split_whitespace().nth(1).expect("a subcommand");
        if sub != "check" {
            let (code, out, err) = sh(&dir, command);
            assert_eq!(code, 0, "{command}: {err}");
            expected = match sub {
                "issue" => {
                    let issued: serde_json::Value =
                        serde_json::from_str(&out).expect("issue prints JSON");
                    assert!(issued["uri"].is_string() && issued["idx"].is_u64());
                    uris.push(issued["uri"].as_str().expect("uri").to_owned());
                    "VALID"
                }
                "suspend" => {
                    assert!(out.contains("Request processed for suspension"), "{out}");
                    "SUSPENDED"
                }
                "reinstate" => {
                    assert!(out.contains("Request processed for reinstatement"), "{out}");
                    "VALID"
                }
                "revoke" => {
                    assert!(out.contains("Request processed for revocation"), "{out}");
                    "INVALID"
                }
                other => panic!("unexpected command {other}"),
            };
            continue;
        }
        let want = (i32::from(expected != "VALID"), expected.to_owned());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, out, _) = sh(&dir, command);
            if (code, out.clone()) == want {
                break;
            }
            assert!(
                Instant::now() < until,
                "{command}: still {out}, not {expected}"
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a condition
        }
    }
    assert_eq!(uris.len(), 2, "{commands:?}");

    // Each example's pool aggregation: every list verified, the one revocation counted.
    for uri in &uris {
        let mut parts = uri.rsplitn(3, '/');
        let (_, kind, base) = (parts.next(), parts.next(), parts.next().expect("base"));
        let pool = match kind {
            Some("t") => "default/driving-licence",
            _ => "default/veteran-card",
        };
        let aggregation = statuslist_worker::aggregation::uri(base, pool);
        let out = Command::new(BIN)
            .args(["check", "--all", &aggregation])
            .output()
            .expect("check --all");
        let (code, out) = (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains(&format!("{uri}: verified, "))
                && out.contains(" VALID, 1 INVALID")
                && out.contains(&format!("1 list(s) in {aggregation}")),
            "{out}"
        );
    }

    // Ctrl-C: everything stops, the throwaway database is gone.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("the throwaway database is removed")),
        "{rest:?}"
    );
    let port: u16 = port.parse().expect("port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "PostgreSQL still listening"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], expected: &str) {
    let (code, err) = run(args);
    assert_ne!(code, 0, "{args:?}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("statuslist: "), "{err}");
    assert!(err.contains(expected), "{args:?}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = std::env::temp_dir().join(format!("statuslist-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let missing = dir.join("missing.pem");
    assert_one_line_error(
        &[
            "issue",
            "--url",
            "http://127.0.0.1:1",
            "--key",
            missing.to_str().expect("utf8"),
            "--client-id",
            "a",
        ],
        "cannot read key",
    );

    // A P-384 key is not an ES256 key; neither is garbage.
    let p384 = dir.join("p384.pem");
    let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .expect("p384");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, doc.as_ref())
    );
    std::fs::write(&p384, pem).expect("write");
    assert_one_line_error(
        &[
            "issue",
            "--url",
            "http://127.0.0.1:1",
            "--key",
            p384.to_str().expect("utf8"),
            "--client-id",
            "a",
        ],
        "P-256",
    );
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key").expect("write");
    assert_one_line_error(
        &[
            "revoke",
            "--url",
            "http://127.0.0.1:1",
            "--key",
            garbage.to_str().expect("utf8"),
            "--client-id",
            "a",
            "--uri",
            "http://x/t/ABCDEF012345",
            "--idx",
            "1",
        ],
        "PEM",
    );

    // Unreachable service (a closed port).
    let good = dir.join("good.pem");
    let (code, _) = run(&[
        "keygen",
        "--key",
        good.to_str().expect("utf8"),
        "--jwks",
        dir.join("good.jwks.json").to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0);
    assert_one_line_error(
        &[
            "issue",
            "--url",
            "http://127.0.0.1:1",
            "--key",
            good.to_str().expect("utf8"),
            "--client-id",
            "a",
        ],
        "http://127.0.0.1:1/issue",
    );
    // A URI of another host, and something that is no list URI at all.
    assert_one_line_error(
        &[
            "check",
            "--uri",
            "http://127.0.0.1:1/t/ABCDEF012345",
            "--idx",
            "1",
        ],
        "127.0.0.1:1",
    );
    assert_one_line_error(
        &[
            "check",
            "--uri",
            "https://example.test/x/ABCDEF012345",
            "--idx",
            "1",
        ],
        "not a status list URI",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
