//! Signed tokens verify with the public key and fail after any single flipped byte.

use statuslist_format::bitstring::{self, CredentialMeta};
use statuslist_format::token::{self, CompressedList, TokenClaims};
use statuslist_format::{Bits, SigningKey, StatusArray, VerifyingKey, keys};

fn sample(bits: Bits, len: u64) -> StatusArray {
    let mut a = StatusArray::new(bits, len).expect("list");
    a.set(0, 1).expect("fits");
    a.set(len - 1, bits.max_value()).expect("fits");
    a.set(len / 3, 1).expect("fits");
    a
}

fn claims() -> TokenClaims {
    TokenClaims {
        sub: "https://status.example.gov.uk/t/A671FED3E9AD".into(),
        iss: Some("https://status.example.gov.uk".into()),
        iat: 1_760_000_000,
        exp: Some(1_760_086_400),
        ttl: Some(3600),
        aggregation_uri: None,
    }
}

#[test]
fn jwt_verifies_and_any_flipped_byte_fails() {
    let key = SigningKey::generate().expect("key");
    let list = sample(Bits::Two, 1000);
    let jwt = token::sign_jwt(&claims(), &CompressedList::new(&list, 9), &key).expect("sign");

    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').next().expect("header"),
        )
        .expect("b64"),
    )
    .expect("json");
    assert_eq!(
        header,
        serde_json::json!({"alg": "ES256", "typ": "statuslist+jwt", "kid": key.kid()})
    );

    let verified = token::verify_jwt(&jwt, key.verifying_key()).expect("verifies");
    assert_eq!(verified.claims, claims());
    assert_eq!(
        &verified.list.as_bytes()[..list.as_bytes().len()],
        list.as_bytes()
    );

    let bytes = jwt.as_bytes();
    for i in 0..bytes.len() {
        let mut tampered = bytes.to_vec();
        tampered[i] ^= 0x01;
        let Ok(tampered) = String::from_utf8(tampered) else {
            continue;
        };
        assert!(
            token::verify_jwt(&tampered, key.verifying_key()).is_err(),
            "flip at {i} accepted"
        );
    }
    let other = SigningKey::generate().expect("key");
    assert!(token::verify_jwt(&jwt, other.verifying_key()).is_err());
}

#[test]
fn cwt_verifies_and_any_flipped_byte_fails() {
    let key = SigningKey::generate().expect("key");
    let list = sample(Bits::One, 4096);
    let cwt = token::sign_cwt(&claims(), &CompressedList::new(&list, 9), &key).expect("sign");
    assert_eq!(cwt[0], 0xd2, "COSE_Sign1_Tagged (tag 18)");
    assert_eq!(token::cwt_kid(&cwt).expect("kid"), key.kid());

    let verified = token::verify_cwt(&cwt, key.verifying_key()).expect("verifies");
    assert_eq!(verified.claims, claims());
    assert_eq!(verified.list, list);

    for i in 0..cwt.len() {
        let mut tampered = cwt.clone();
        tampered[i] ^= 0x01;
        assert!(
            token::verify_cwt(&tampered, key.verifying_key()).is_err(),
            "flip at {i} accepted"
        );
    }
}

#[test]
fn vc_jwt_verifies_and_any_flipped_byte_fails() {
    let key = SigningKey::generate().expect("key");
    let list = sample(Bits::Two, bitstring::MIN_ENTRIES);
    let meta = CredentialMeta {
        uri: "https://status.example.gov.uk/b/0123456789AB".into(),
        issuer: "https://status.example.gov.uk".into(),
        valid_from: 1_760_000_000,
        valid_until: 1_760_086_400,
        ttl_seconds: Some(300),
    };
    let jwt = bitstring::sign_vc_jwt(&meta, &list, 9, &key).expect("sign");
    let (vc, decoded) = bitstring::verify_vc_jwt(&jwt, key.verifying_key()).expect("verifies");
    assert_eq!(decoded, list);
    assert_eq!(vc.id, meta.uri);
    assert_eq!(vc.valid_from, "2025-10-09T08:53:20Z");
    assert_eq!(vc.valid_until_unix().expect("parses"), meta.valid_until);
    let doc = serde_json::to_value(&vc).expect("json");
    assert_eq!(
        doc["type"],
        serde_json::json!(["VerifiableCredential", "BitstringStatusListCredential"])
    );
    let subject = &doc["credentialSubject"];
    assert_eq!(subject["type"], "BitstringStatusList");
    assert_eq!(subject["statusPurpose"], "message");
    assert_eq!(subject["statusSize"], 2);
    assert_eq!(subject["ttl"], 300_000);
    assert_eq!(
        subject["statusMessage"][1],
        serde_json::json!({"status": "0x1", "message": "INVALID"})
    );

    let bytes = jwt.as_bytes();
    for i in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        let mut tampered = bytes.to_vec();
        tampered[i] ^= 0x01;
        let Ok(tampered) = String::from_utf8(tampered) else {
            continue;
        };
        assert!(
            bitstring::verify_vc_jwt(&tampered, key.verifying_key()).is_err(),
            "flip at {i} accepted"
        );
    }
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    let key = SigningKey::generate().expect("key");
    let jwk = serde_json::to_value(key.public_jwk()).expect("json");
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().expect("x"),
        jwk["y"].as_str().expect("y")
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    let expected = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        digest.as_ref(),
    );
    assert_eq!(key.kid(), expected);

    // A JWKS of two keys round-trips through JSON into verifying keys with the same kids.
    let second = SigningKey::generate().expect("key");
    let doc = serde_json::to_string(&keys::jwks([&key, &second])).expect("json");
    let parsed: keys::Jwks = serde_json::from_str(&doc).expect("parses");
    let kids: Vec<String> = parsed
        .keys
        .iter()
        .map(|j| VerifyingKey::from_jwk(j).expect("EC key").kid().to_owned())
        .collect();
    assert_eq!(kids, vec![key.kid().to_owned(), second.kid().to_owned()]);
}

#[test]
fn the_spki_public_key_pem_verifies_the_keys_signatures() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use base64::Engine as _;
    let key = SigningKey::generate().expect("key");
    let pem = key.verifying_key().to_spki_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64");
    let signature = key.sign_raw(b"message").expect("sign");
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &der)
        .verify(b"message", &signature)
        .expect("the SPKI key verifies");
    assert!(
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &der)
            .verify(b"other", &signature)
            .is_err()
    );
}

/// `aggregation_uri` is a member of the `StatusList` object (draft -20 sections 4.2, 4.3,
/// 9.2), not a top-level claim, in both encodings, and reads back.
#[test]
fn the_aggregation_uri_sits_in_the_status_list_object() {
    let key = SigningKey::generate().expect("key");
    let list = CompressedList::new(&sample(Bits::Two, 1000), 6);
    let with = TokenClaims {
        aggregation_uri: Some("https://status.example.gov.uk/a/0123456789AB".into()),
        ..claims()
    };
    let jwt = token::sign_jwt(&with, &list, &key).expect("sign");
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').nth(1).expect("payload"),
        )
        .expect("b64"),
    )
    .expect("json");
    assert_eq!(
        payload["status_list"]["aggregation_uri"],
        "https://status.example.gov.uk/a/0123456789AB"
    );
    assert!(payload.get("aggregation_uri").is_none(), "{payload}");
    assert_eq!(
        token::verify_jwt(&jwt, key.verifying_key())
            .expect("verifies")
            .claims,
        with
    );

    let cwt = token::sign_cwt(&with, &list, &key).expect("sign");
    assert_eq!(
        token::verify_cwt(&cwt, key.verifying_key())
            .expect("verifies")
            .claims,
        with
    );
    // Without one, neither encoding carries the member.
    let jwt = token::sign_jwt(&claims(), &list, &key).expect("sign");
    assert!(!jwt.split('.').nth(1).is_some_and(|p| {
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p)
                .expect("b64"),
        )
        .expect("utf8")
        .contains("aggregation_uri")
    }));
}
