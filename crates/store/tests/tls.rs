//! TLS to a real PostgreSQL that accepts TLS connections only (`ssl = on`, `hostssl`
//! rules alone, as managed databases are set up), its certificate issued by a CA made in
//! the test: every `sslmode`, root and client certificates, and the errors a user sees.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use statuslist_devdb::{PgServer, ServerOptions};
use statuslist_store::notify::{CHANNEL_CONFIG, Event};
use statuslist_store::{Store, StoreConfig, connect_one};

struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Self { dir, ca }
    }

    /// A certificate for `names` (DNS names) with common name `cn`: (PEM, key PEM).
    fn issue(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A server with a certificate for `localhost` only (no IP address), TLS required on
/// TCP, and client certificates required for the role `certuser`.
fn tls_server(pki: &Pki) -> PgServer {
    let (cert, key) = pki.issue("localhost", &["localhost"]);
    PgServer::start_with(&ServerOptions {
        files: vec![
            ("server.crt".into(), cert.into_bytes()),
            ("server.key".into(), key.into_bytes()),
            ("root.crt".into(), pki.ca.pem().into_bytes()),
        ],
        settings: vec![
            "ssl = on".into(),
            "ssl_cert_file = 'server.crt'".into(),
            "ssl_key_file = 'server.key'".into(),
            "ssl_ca_file = 'root.crt'".into(),
        ],
        hba: Some(
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\n"
                .into(),
        ),
        ..ServerOptions::default()
    })
    .expect("start a TLS-only PostgreSQL")
}

async fn uses_tls(url: &str) -> Result<bool, String> {
    let client = connect_one(url).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_against_a_tls_only_server() {
    let pki = Pki::new("statuslist test CA");
    let other = Pki::new("someone else's CA");
    let server = tls_server(&pki);
    let port = server.port();
    let ca = pki.path("ca.pem");
    let at =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");

    // Encrypted without verification, as libpq does for these modes without a root file.
    for mode in ["require", "prefer", "allow"] {
        assert_eq!(
            uses_tls(&at("127.0.0.1", &format!("sslmode={mode}"))).await,
            Ok(true),
            "{mode}"
        );
    }
    assert_eq!(
        uses_tls(&at("127.0.0.1", "")).await,
        Ok(true),
        "default (prefer)"
    );
    // Verified: the name matches; verify-ca does not look at the name.
    let full = at(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(uses_tls(&full).await, Ok(true));
    let by_ip = at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(uses_tls(&by_ip).await, Ok(true));
    // key=value form, with hostaddr: the name checked is host's.
    let kv = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'"
    );
    assert_eq!(uses_tls(&kv).await, Ok(true));

    // Failures: one line, naming the host and the reason.
    let err = uses_tls(&at(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect_err("wrong host name");
    assert!(
        err.contains("TLS with 127.0.0.1") && err.contains("not valid for name"),
        "{err}"
    );
    let err = uses_tls(&at(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", other.path("ca.pem")),
    ))
    .await
    .expect_err("unknown CA");
    assert!(
        err.contains("TLS with localhost") && err.contains("UnknownIssuer"),
        "{err}"
    );
    // require with a root file verifies the chain (libpq's compatibility rule).
    let err = uses_tls(&at(
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={}", other.path("ca.pem")),
    ))
    .await
    .expect_err("require with a root file verifies");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = uses_tls(&at("127.0.0.1", "sslmode=disable"))
        .await
        .expect_err("plain text refused by hostssl-only rules");
    assert!(err.contains("no encryption"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");

    // Client certificates: certuser must present one issued by the server's CA.
    let (cert, key) = pki.issue("certuser", &[]);
    std::fs::write(pki.path("client.crt"), cert).expect("write");
    std::fs::write(pki.path("client.key"), key).expect("write");
    let client = server.url("postgres");
    let admin = connect_one(&client.replace("127.0.0.1", "localhost"))
        .await
        .expect("admin");
    admin
        .batch_execute("CREATE ROLE certuser LOGIN")
        .await
        .expect("role");
    let as_certuser =
        |query: String| format!("postgres://certuser@localhost:{port}/postgres?{query}");
    let with_cert = as_certuser(format!(
        "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        pki.path("client.crt"),
        pki.path("client.key")
    ));
    assert_eq!(uses_tls(&with_cert).await, Ok(true));
    let err = uses_tls(&as_certuser(format!(
        "sslmode=verify-full&sslrootcert={ca}"
    )))
    .await
    .expect_err("no client certificate");
    assert!(err.contains("requires a valid client certificate"), "{err}");

    // The whole store over TLS: migrations, queries, and the LISTEN connection.
    let store = Store::connect(&StoreConfig::new(&full))
        .await
        .expect("store over TLS");
    let (mut events, _task) = store.listen(&[CHANNEL_CONFIG]);
    assert_eq!(events.recv().await.expect("event"), Event::Connected);
    store
        .notify(CHANNEL_CONFIG, "over-tls")
        .await
        .expect("notify");
    assert_eq!(
        events.recv().await.expect("event"),
        Event::Notification {
            channel: CHANNEL_CONFIG.into(),
            payload: "over-tls".into()
        }
    );
    assert_eq!(store.health().is_up(), Some(true));

    // A store that cannot verify the server says so, naming it, as unavailable (the
    // process keeps retrying rather than exiting).
    let bad = at(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let err = Store::connect(&StoreConfig::new(&bad))
        .await
        .expect_err("verification fails");
    assert!(err.is_unavailable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("TLS with 127.0.0.1") && text.contains("not valid for name"),
        "{text}"
    );
}
