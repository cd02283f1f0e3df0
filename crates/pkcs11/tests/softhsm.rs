//! Keys in a real PKCS#11 module (SoftHSM2): generated in a token, never extractable,
//! signing lists that independent verifiers accept, and a token that goes away and comes
//! back. Each test runs in a process of its own with its own token directory.

use p256::ecdsa::signature::Verifier;
use statuslist_format::token::{self, CompressedList, TokenClaims};
use statuslist_format::{Bits, StatusArray};
use statuslist_pkcs11::Token;
use statuslist_pkcs11::testing::SoftHsm;

/// The list the tests sign: 1,000 entries, a few INVALID.
fn claims_and_list(kid_uri: &str) -> (TokenClaims, StatusArray) {
    let mut list = StatusArray::new(Bits::One, 1_000).expect("list");
    for idx in [3, 500, 999] {
        list.set(idx, 1).expect("set");
    }
    let claims = TokenClaims {
        sub: kid_uri.to_owned(),
        iat: 1_800_000_000,
        exp: Some(1_800_086_400),
        ttl: Some(300),
        aggregation_uri: None,
        iss: None,
    };
    (claims, list)
}

/// An independent ES256 check (RustCrypto's p256, not the module, not aws-lc-rs).
fn verifies_independently(jwt: &str, point: &[u8]) -> bool {
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("point");
    let (input, signature) = jwt.rsplit_once('.').expect("a JWS");
    let signature = base64_decode(signature);
    let signature = p256::ecdsa::Signature::from_slice(&signature).expect("r || s");
    key.verify(input.as_bytes(), &signature).is_ok()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

#[test]
fn a_key_generated_in_the_token_signs_lists_that_independent_verifiers_accept() {
    let Some(hsm) = SoftHsm::for_test(
        "a_key_generated_in_the_token_signs_lists_that_independent_verifiers_accept",
    ) else {
        return;
    };
    hsm.init_token("lists");
    let token = Token::open(&hsm.config("lists")).expect("token");
    assert!(token.keys().expect("keys").is_empty());
    let key = token.generate("statuslist-2026-12").expect("generate");
    assert!(key.is_external());
    assert!(key.to_pkcs8_pem().is_err(), "nothing to export");
    let (claims, list) = claims_and_list("https://s.example/t/AAAAAAAAAAAA");
    let jwt = token::sign_jwt(&claims, &CompressedList::new(&list, 6), &key).expect("JWT");
    let verified = token::verify_jwt(&jwt, key.verifying_key()).expect("verifies");
    assert_eq!(verified.list.get(500).expect("500"), 1);
    assert_eq!(verified.list.get(501).expect("501"), 0);
    let point = key.verifying_key().point().to_vec();
    assert!(
        verifies_independently(&jwt, &point),
        "p256 rejects the signature"
    );
    let cwt = token::sign_cwt(&claims, &CompressedList::new(&list, 6), &key).expect("CWT");
    token::verify_cwt(&cwt, key.verifying_key()).expect("the CWT verifies");
    // Listed again from the token, with the same kid (RFC 7638 thumbprint).
    let listed = token.keys().expect("keys");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "statuslist-2026-12");
    assert_eq!(listed[0].1.kid(), key.kid());
    let (signed, failed) = token.counts();
    assert!(signed >= 2 && failed == 0, "{signed} {failed}");
}

#[test]
fn the_private_key_cannot_leave_the_token() {
    let Some(hsm) = SoftHsm::for_test("the_private_key_cannot_leave_the_token") else {
        return;
    };
    hsm.init_token("custody");
    let token = Token::open(&hsm.config("custody")).expect("token");
    token.generate("statuslist-a").expect("generate");
    assert_eq!(
        token.protection("statuslist-a").expect("attributes"),
        (false, true),
        "CKA_EXTRACTABLE false, CKA_SENSITIVE true"
    );
    let refusal = token
        .private_value("statuslist-a")
        .expect_err("the module must refuse CKA_VALUE");
    let text = refusal.to_string();
    println!("the module's refusal: {text}");
    assert!(text.contains("CKR_ATTRIBUTE_SENSITIVE"), "{text}");
    // Labels without the prefix are not the service's; a second key of the same label
    // is refused.
    assert!(token.generate("other-key").is_err());
    assert!(token.generate("statuslist-a").is_err());
}

#[test]
fn newest_label_first_and_a_missing_token_is_named() {
    let Some(hsm) = SoftHsm::for_test("newest_label_first_and_a_missing_token_is_named") else {
        return;
    };
    hsm.init_token("rotation");
    let token = Token::open(&hsm.config("rotation")).expect("token");
    let a = token.generate("statuslist-2026-11").expect("a");
    let b = token.generate("statuslist-2027-01").expect("b");
    let labels: Vec<(String, String)> = token
        .keys()
        .expect("keys")
        .into_iter()
        .map(|(l, k)| (l, k.kid().to_owned()))
        .collect();
    assert_eq!(
        labels,
        [
            ("statuslist-2027-01".to_owned(), b.kid().to_owned()),
            ("statuslist-2026-11".to_owned(), a.kid().to_owned())
        ]
    );
    let err = Token::open(&hsm.config("absent")).expect_err("no such token");
    assert!(err.to_string().contains("rotation"), "{err}");
}

/// The key goes away under a running signer (its object files moved out of the module's
/// reach, as a token pulled or a network HSM unreachable looks from here) and comes back:
/// signatures fail meanwhile, with an error and no panic, one state change counted, and
/// resume by themselves once the module sees the key again.
#[test]
fn signatures_fail_while_the_key_is_away_and_resume_when_it_is_back() {
    let Some(hsm) =
        SoftHsm::for_test("signatures_fail_while_the_key_is_away_and_resume_when_it_is_back")
    else {
        return;
    };
    hsm.init_token("away");
    let token = Token::open(&hsm.config("away")).expect("token");
    let key = token.generate("statuslist-a").expect("generate");
    key.sign_raw(b"before").expect("signs");
    let away = hsm.take_keys_away();
    assert_eq!(away.objects.len(), 2, "the key pair's two object files");
    let err = key
        .sign_raw(b"while away")
        .expect_err("no key, no signature");
    println!("while away: {err}");
    assert!(token.failing());
    // Back, and another process writes to the token (so the running module looks again).
    away.bring_back();
    let other = hsm.token_dir().with_extension("pem");
    let pem = statuslist_format::SigningKey::generate()
        .and_then(|k| k.to_pkcs8_pem())
        .expect("a key");
    std::fs::write(&other, pem).expect("write");
    let out = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", hsm.conf())
        .arg("--import")
        .arg(&other)
        .args(["--token", "away", "--label", "unrelated", "--id", "01"])
        .args(["--pin", statuslist_pkcs11::testing::PIN])
        .output()
        .expect("softhsm2-util --import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signature = key.sign_raw(b"after").expect("signs again");
    key.verifying_key()
        .verify_raw(b"after", &signature)
        .expect("the signature verifies");
    assert!(!token.failing());
    assert_eq!(token.counts(), (2, 1));
}
