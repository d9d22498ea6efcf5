//! HTTPS destinations: a private CA (`ca_file`), verification turned off
//! (`verify_certificate = false`), bad CA files, and mutual TLS
//! (`client_cert_file` / `client_key_file`), through `tailhook test`,
//! `tailhook check` and `tailhook run`.
//!
//! Every certificate is made here with rcgen. "The system roots" are pinned
//! with `SSL_CERT_FILE` / `SSL_CERT_DIR` to an unrelated throw-away CA, so the
//! results do not depend on the machine's trust store: the collector's CA is
//! trusted only when `ca_file` names it.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::collector::{Collector, Options};
use support::process::{run_cmd, Exit, Tailhook};
use support::setup::{self, Setup};
use support::tls::{make_pki, TestPki};

/// The longest any test waits for something to happen.
const WAIT: Duration = Duration::from_secs(30);

/// The reference page's test message, as `tailhook test` sends it.
const TEST_BODY: &str = r#"[{"title":"Test","source":"Wallarm","type":"Info","domain":"example.com","threat":"Medium","link":"https://my.wallarm.com/object/555","summary":"[Test Message] New vulnerability identified"}]"#;

// ---- helpers ----------------------------------------------------------------

/// One test's directory plus the environment that replaces the system trust
/// store with an unrelated CA.
struct Env {
    setup: Setup,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new() -> Env {
        // Another subject name than the test CAs': a trust anchor of the same
        // name would make this a bad-signature case instead of an unknown CA.
        Env::with_system_roots(&Ca::new("unrelated system root CA").pem())
    }

    /// The system trust store holds exactly the certificates in `pem`.
    fn with_system_roots(pem: &str) -> Env {
        let setup = Setup::new();
        let roots = setup.dir.path().join("system-roots.pem");
        std::fs::write(&roots, pem).unwrap();
        let roots_dir = setup.dir.path().join("system-roots.d");
        std::fs::create_dir_all(&roots_dir).unwrap();
        let vars = vec![
            ("SSL_CERT_FILE".to_string(), roots.display().to_string()),
            ("SSL_CERT_DIR".to_string(), roots_dir.display().to_string()),
        ];
        Env { setup, vars }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Writes a file in the test directory and returns its path.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.setup.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// `config.toml` with one file source and one destination named
    /// `fluentd` (`extra`: keys inside the destination block).
    fn config(&self, url: &str, extra: &str) -> PathBuf {
        self.setup
            .builder()
            .extra("shutdown_timeout = \"1s\"")
            .file_source("wallarm", "*.ndjson")
            .destination("fluentd", url)
            .extra(extra)
            .write()
    }

    fn tailhook(&self, args: &[&str]) -> Exit {
        run_cmd(args, &self.env())
    }

    fn start(&self, config: &Path) -> Tailhook {
        Tailhook::start_with_env(config, &self.env())
    }
}

/// Runs tailhook with `config` until `collector` has every line, stops it
/// (it must exit 0), and checks the lines arrived in order, byte for byte.
fn run_until_delivered(env: &Env, config: &Path, collector: &Collector, lines: &[String]) -> Exit {
    let th = env.start(config);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "got {} of {} events\n{}",
        collector.event_count(),
        lines.len(),
        th.stderr()
    );
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let got: Vec<String> = collector
        .events()
        .iter()
        .map(|e| String::from_utf8(e.clone()).unwrap())
        .collect();
    assert_eq!(got, lines);
    exit
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A TOML basic string holding `p`.
fn toml_path(p: &Path) -> String {
    format!("{:?}", path_str(p))
}

fn https_collector(pki: &TestPki) -> Collector {
    Collector::start(Options {
        tls: Some(pki.server_config()),
        ..Options::fluentd()
    })
}

fn test_cmd(env: &Env, config: &Path) -> Exit {
    env.tailhook(&["test", "-c", &path_str(config)])
}

fn check_cmd(env: &Env, config: &Path) -> Exit {
    env.tailhook(&["check", "-c", &path_str(config)])
}

/// A CA of our own (TestPki does not hand out its CA key), to issue client
/// certificates and odd server certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` with extended key usage `usage`:
    /// (certificate PEM, PKCS#8 key PEM).
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tailhook test leaf");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration serving `cert_pem`/`key_pem`, and, with
/// `client_ca`, requiring a client certificate signed by that CA.
fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
) -> Arc<rustls::ServerConfig> {
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                ring(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(builder.with_single_cert(certs, key).unwrap())
}

/// The one line `tailhook test` printed for `name`.
fn report_line<'a>(exit: &'a Exit, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    let lines: Vec<&str> = exit
        .stdout
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one report line for {name}\n{}",
        exit.output()
    );
    lines[0]
}

// ---- 1. tailhook test and check against an HTTPS collector --------------------

// Regression guard: a server certificate that fails verification must be
// classified as `SendError::Tls` by `classify()` in src/sink/client.rs, so
// the user reads `TLS handshake failed: unknown CA: ...`. hyper-rustls wraps
// tokio-rustls's `io::Error(InvalidData, rustls::Error)` once more in
// `io::Error::other`, and `io::Error::source()` skips the error it wraps, so
// a chain walk that looks only one io::Error deep never meets the
// rustls::Error and prints `request failed: client error (Connect): invalid
// peer certificate: UnknownIssuer` instead.

/// Without `ca_file` the private CA is not trusted: `tailhook test` fails and
/// nothing gets through (the words are checked in the next test).
#[test]
fn test_without_ca_file_fails() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let url = collector.url("/wallarm.events");
    let config = env.config(&url, "");

    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let line = report_line(&exit, "fluentd");
    assert!(line.starts_with("fluentd: FAILED: "), "{line}");
    assert!(line.contains("certificate"), "{line}");
    assert!(line.ends_with(&format!("(POST {url})")), "{line}");
    // The collector saw the handshake fail, and no request got through.
    assert!(
        collector.wait_for_tls_failures(1, WAIT),
        "the collector saw no failed handshake\n{}",
        exit.output()
    );
    assert_eq!(collector.request_count(), 0);
    assert_eq!(collector.event_count(), 0);
}

/// The failure is told in words: "unknown CA", with the way out (`ca_file`).
/// The same for a `ca_file` holding another CA.
#[test]
fn test_without_ca_file_says_unknown_ca() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let url = collector.url("/wallarm.events");
    let other_ca = env.file("other-ca.pem", &Ca::new("another private CA").pem());
    for extra in [
        "".to_string(),
        format!("ca_file = {}", toml_path(&other_ca)),
    ] {
        let config = env.config(&url, &extra);
        let exit = test_cmd(&env, &config);
        assert_eq!(exit.code, Some(1), "{extra}\n{}", exit.output());
        let line = report_line(&exit, "fluentd");
        assert!(
            line.starts_with("fluentd: FAILED: TLS handshake failed: unknown CA"),
            "{extra}: {line}"
        );
        // The message tells the operator what to do about it.
        assert!(line.contains("ca_file"), "{line}");
        assert!(line.ends_with(&format!("(POST {url})")), "{line}");
    }
    assert!(collector.wait_for_tls_failures(2, WAIT));
    assert_eq!(collector.request_count(), 0);
}

#[test]
fn test_with_ca_file_succeeds() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let url = collector.url("/wallarm.events");
    let ca = pki.write_ca(env.setup.dir.path());
    let config = env.config(&url, &format!("ca_file = {}", toml_path(&ca)));

    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let line = report_line(&exit, "fluentd");
    assert!(line.starts_with("fluentd: OK: HTTP 200 in "), "{line}");
    assert!(line.ends_with(&format!("(POST {url})")), "{line}");
    let batches = collector.batches();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(String::from_utf8_lossy(&batches[0].body), TEST_BODY);
    assert_eq!(collector.tls_failures(), 0);
}

/// A ca_file may hold several certificates (a bundle): any of them is trusted.
#[test]
fn test_with_a_ca_bundle_succeeds() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let bundle = format!("{}{}", Ca::new("another private CA").pem(), pki.ca_pem);
    let ca = env.file("bundle.pem", &bundle);
    let config = env.config(
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        report_line(&exit, "fluentd").starts_with("fluentd: OK: HTTP 200 in "),
        "{}",
        exit.output()
    );
}

/// ca_file is trusted in addition to the system roots, not instead of them.
#[test]
fn system_roots_stay_trusted_beside_ca_file() {
    let pki = make_pki();
    let env = Env::with_system_roots(&pki.ca_pem);
    let collector = https_collector(&pki);
    let url = collector.url("/wallarm.events");
    let unrelated = env.file("unrelated-ca.pem", &Ca::new("another private CA").pem());

    for extra in [
        "".to_string(),
        format!("ca_file = {}", toml_path(&unrelated)),
    ] {
        let config = env.config(&url, &extra);
        let exit = test_cmd(&env, &config);
        assert_eq!(exit.code, Some(0), "{extra}\n{}", exit.output());
        assert!(
            report_line(&exit, "fluentd").starts_with("fluentd: OK: HTTP 200 in "),
            "{}",
            exit.output()
        );
    }
    assert_eq!(collector.event_count(), 2);
}

/// The certificate names `127.0.0.1` too: an IP-address URL verifies without
/// any name lookup.
#[test]
fn test_with_ca_file_and_ip_address_url_succeeds() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let url = format!("https://127.0.0.1:{}/wallarm.events", collector.port());
    let ca = pki.write_ca(env.setup.dir.path());
    let config = env.config(&url, &format!("ca_file = {}", toml_path(&ca)));

    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        report_line(&exit, "fluentd").starts_with("fluentd: OK: HTTP 200 in "),
        "{}",
        exit.output()
    );
    assert_eq!(collector.event_count(), 1);
}

/// A ca_file with another CA does not make the collector trusted.
#[test]
fn test_with_the_wrong_ca_file_fails() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let other_ca = env.file("other-ca.pem", &Ca::new("another private CA").pem());
    let config = env.config(
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&other_ca)),
    );

    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        report_line(&exit, "fluentd").starts_with("fluentd: FAILED: "),
        "{}",
        exit.output()
    );
    assert!(collector.wait_for_tls_failures(1, WAIT));
    assert_eq!(collector.request_count(), 0);
}

/// A certificate from the trusted CA, but for another host name: refused,
/// and said so.
#[test]
fn test_with_a_certificate_for_another_name_says_so() {
    let env = Env::new();
    let ca = Ca::new("tailhook test CA");
    let (cert, key) = ca.issue(&["collector.example"], ExtendedKeyUsagePurpose::ServerAuth);
    let collector = Collector::start(Options {
        tls: Some(server_config(&cert, &key, None)),
        ..Options::fluentd()
    });
    let ca_file = env.file("ca.pem", &ca.pem());
    let config = env.config(
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca_file)),
    );

    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        report_line(&exit, "fluentd").contains(
            "FAILED: TLS handshake failed: the collector's certificate is for collector.example, not for localhost"
        ),
        "{}",
        exit.output()
    );
    assert_eq!(collector.request_count(), 0);
}

#[test]
fn verification_off_succeeds_without_ca_file_and_check_warns() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let url = collector.url("/wallarm.events");
    let config = env.config(&url, "verify_certificate = false");

    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        report_line(&exit, "fluentd").starts_with("fluentd: OK: HTTP 200 in "),
        "{}",
        exit.output()
    );
    assert_eq!(collector.event_count(), 1);

    let check = check_cmd(&env, &config);
    assert_eq!(check.code, Some(0), "{}", check.output());
    let warning = check
        .stderr
        .lines()
        .find(|l| l.contains("verify_certificate = false"))
        .unwrap_or_else(|| panic!("no verify_certificate warning\n{}", check.output()));
    assert!(
        warning.starts_with("warning: destination `fluentd`"),
        "{warning}"
    );
    assert!(warning.contains("NOT verified"), "{warning}");
    assert!(warning.contains(&url), "{warning}");
    // The warning is for people, on stderr; stdout is the resolved config.
    assert!(
        check.stdout.contains("verify_certificate = false"),
        "{}",
        check.output()
    );
    assert!(!check.stdout.contains("warning"), "{}", check.output());
}

/// The verify_certificate warning names the URL, but never its password
/// (Logstash basic auth goes in the URL).
#[test]
fn verification_off_warning_does_not_print_the_url_password() {
    let env = Env::new();
    let pki = make_pki();
    let collector = Collector::start(Options {
        tls: Some(pki.server_config()),
        basic_auth: Some(("tailhook".to_string(), "pw-9d8e7f-secret".to_string())),
        ..Options::logstash()
    });
    setup::append(&env.setup.log("a.ndjson"), &setup::hits(0, 3, 100));
    let url = format!(
        "https://tailhook:${{TLS_TEST_PASSWORD}}@localhost:{}/",
        collector.port()
    );
    let config = env.config(&url, "verify_certificate = false");
    let mut vars = env.env();
    vars.push(("TLS_TEST_PASSWORD", "pw-9d8e7f-secret"));

    let check = run_cmd(&["check", "-c", &path_str(&config)], &vars);
    assert_eq!(check.code, Some(0), "{}", check.output());
    assert!(
        check.stderr.contains("verify_certificate = false"),
        "{}",
        check.output()
    );
    assert!(
        !check.stderr.contains("pw-9d8e7f-secret") && !check.stdout.contains("pw-9d8e7f-secret"),
        "check printed the password\n{}",
        check.output()
    );

    let th = Tailhook::start_with_env(&config, &vars);
    assert!(collector.wait_for_events(3, WAIT), "{}", th.stderr());
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stderr.contains("verify_certificate = false"),
        "{}",
        exit.output()
    );
    assert!(
        !exit.stderr.contains("pw-9d8e7f-secret") && !exit.stdout.contains("pw-9d8e7f-secret"),
        "run logged the password\n{}",
        exit.output()
    );
}

/// `check` says nothing about verification when it is on.
#[test]
fn check_does_not_warn_when_verification_is_on() {
    let env = Env::new();
    let pki = make_pki();
    let ca = pki.write_ca(env.setup.dir.path());
    let config = env.config(
        "https://localhost:9/wallarm.events",
        &format!("ca_file = {}", toml_path(&ca)),
    );
    let check = check_cmd(&env, &config);
    assert_eq!(check.code, Some(0), "{}", check.output());
    assert!(!check.stderr.contains("warning"), "{}", check.output());
    assert!(
        check.stdout.contains("verify_certificate = true"),
        "{}",
        check.output()
    );
    assert!(
        check
            .stdout
            .contains(&format!("ca_file = {}", toml_path(&ca))),
        "{}",
        check.output()
    );
}

/// A listener that takes the TCP connection but never answers the TLS
/// handshake: `connect_timeout` covers the handshake, and says so.
#[test]
fn test_with_a_handshake_that_never_completes_is_a_connect_timeout() {
    let env = Env::new();
    // Never accepted: the kernel completes the TCP handshake, nobody speaks TLS.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://localhost:{}/e",
        silent.local_addr().unwrap().port()
    );
    let config = env.config(&url, "connect_timeout = \"1s\"\nverify_certificate = false");
    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        report_line(&exit, "fluentd")
            .starts_with("fluentd: FAILED: connect timeout: no connection within 1s"),
        "{}",
        exit.output()
    );
    drop(silent);
}

// ---- 2. tailhook run ------------------------------------------------------------

/// Without ca_file the events wait at their source (handshakes fail, nothing
/// is delivered, the failure is logged); after a restart with ca_file every
/// event arrives exactly once, byte for byte, in order.
#[test]
fn run_delivers_nothing_without_ca_file_and_everything_with_it() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let url = collector.url("/wallarm.events");
    let lines = setup::hits(0, 25, 200);
    setup::append(&env.setup.log("a.ndjson"), &lines);

    let config = env.config(&url, "");
    let th = env.start(&config);
    assert!(
        collector.wait_for_tls_failures(1, WAIT),
        "no failed handshake\n{}",
        th.stderr()
    );
    assert!(
        th.wait_for_log("delivery failed", WAIT),
        "the failure is not logged\n{}",
        th.stderr()
    );
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let failure = exit
        .stderr
        .lines()
        .find(|l| l.contains("delivery failed"))
        .unwrap();
    assert!(failure.contains("certificate"), "{failure}");
    assert_eq!(collector.request_count(), 0);
    assert_eq!(collector.event_count(), 0);

    let ca = pki.write_ca(env.setup.dir.path());
    let config = env.config(&url, &format!("ca_file = {}", toml_path(&ca)));
    let exit = run_until_delivered(&env, &config, &collector, &lines);
    assert!(
        !exit.stderr.contains("delivery failed"),
        "{}",
        exit.output()
    );
}

/// The log of `run` says why delivery fails: unknown CA.
#[test]
fn run_without_ca_file_logs_unknown_ca() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    setup::append(&env.setup.log("a.ndjson"), &setup::hits(0, 3, 100));
    let config = env.config(&collector.url("/wallarm.events"), "");
    let th = env.start(&config);
    assert!(collector.wait_for_tls_failures(1, WAIT), "{}", th.stderr());
    assert!(
        th.wait_for_log("TLS handshake failed: unknown CA", WAIT),
        "the log does not say unknown CA\n{}",
        th.stderr()
    );
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(collector.event_count(), 0);
}

#[test]
fn run_with_verification_off_delivers_and_warns() {
    let env = Env::new();
    let pki = make_pki();
    let collector = https_collector(&pki);
    let lines = setup::hits(0, 5, 100);
    setup::append(&env.setup.log("a.ndjson"), &lines);
    let config = env.config(&collector.url("/e"), "verify_certificate = false");

    let th = env.start(&config);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "{}",
        th.stderr()
    );
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stderr.contains("verify_certificate = false") && exit.stderr.contains("NOT verified"),
        "no warning at start\n{}",
        exit.output()
    );
    assert_eq!(collector.event_count(), lines.len());
}

// ---- 3. bad CA files --------------------------------------------------------------

/// `check` and `run` both refuse the config, naming the file.
fn assert_bad_tls_file(env: &Env, config: &Path, file: &Path, words: &str) {
    let check = check_cmd(env, config);
    assert_eq!(check.code, Some(1), "{}", check.output());
    assert!(
        check.stderr.contains(&path_str(file)) && check.stderr.contains(words),
        "check does not name {} with {words:?}\n{}",
        file.display(),
        check.output()
    );
    assert!(
        !check.stderr.contains("config is valid"),
        "{}",
        check.output()
    );

    // `run` reads the files at start and exits by itself, before tailing.
    let run = env.tailhook(&["run", "-c", &path_str(config)]);
    assert_eq!(run.code, Some(1), "{}", run.output());
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("run printed no error\n{}", run.output()));
    assert!(
        error.contains("destination `fluentd`")
            && error.contains(&path_str(file))
            && error.contains(words),
        "run does not name {} with {words:?}\n{}",
        file.display(),
        run.output()
    );
    assert!(!run.stderr.contains("tailhook running"), "{}", run.output());
}

#[test]
fn missing_ca_file_is_an_error_naming_the_file() {
    let env = Env::new();
    let missing = env.setup.dir.path().join("no-such-ca.pem");
    let config = env.config(
        "https://localhost:9/e",
        &format!("ca_file = {}", toml_path(&missing)),
    );
    assert_bad_tls_file(&env, &config, &missing, "cannot read ca_file");
}

#[test]
fn ca_file_without_a_certificate_is_an_error_naming_the_file() {
    let env = Env::new();
    let pki = make_pki();
    // A common slip: the key where the certificate should be.
    let key_only = env.file("ca-key.pem", &pki.key_pem);
    let config = env.config(
        "https://localhost:9/e",
        &format!("ca_file = {}", toml_path(&key_only)),
    );
    assert_bad_tls_file(&env, &config, &key_only, "holds no PEM certificate");

    let empty = env.file("empty.pem", "");
    let config = env.config(
        "https://localhost:9/e",
        &format!("ca_file = {}", toml_path(&empty)),
    );
    assert_bad_tls_file(&env, &config, &empty, "holds no PEM certificate");

    let text = env.file("notes.pem", "this is not a certificate\n");
    let config = env.config(
        "https://localhost:9/e",
        &format!("ca_file = {}", toml_path(&text)),
    );
    assert_bad_tls_file(&env, &config, &text, "holds no PEM certificate");
}

// ---- 4. mutual TLS -------------------------------------------------------------------

struct Mtls {
    env: Env,
    collector: Collector,
    url: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// An HTTPS collector that requires a client certificate signed by its client
/// CA, and a client certificate and key from that CA written to files.
fn mtls() -> Mtls {
    let env = Env::new();
    let pki = make_pki();
    let client_ca = Ca::new("tailhook test client CA");
    let (cert, key) = client_ca.issue(&["tailhook-client"], ExtendedKeyUsagePurpose::ClientAuth);
    let collector = Collector::start(Options {
        tls: Some(server_config(
            &pki.cert_pem,
            &pki.key_pem,
            Some(&client_ca.pem()),
        )),
        ..Options::fluentd()
    });
    let url = collector.url("/wallarm.events");
    let ca_file = pki.write_ca(env.setup.dir.path());
    let cert_file = env.file("client.pem", &cert);
    let key_file = env.file("client-key.pem", &key);
    Mtls {
        env,
        collector,
        url,
        ca_file,
        cert_file,
        key_file,
    }
}

#[test]
fn mutual_tls_test_succeeds_only_with_the_client_certificate() {
    let m = mtls();

    // No client certificate: the collector refuses the handshake.
    let config = m
        .env
        .config(&m.url, &format!("ca_file = {}", toml_path(&m.ca_file)));
    let exit = test_cmd(&m.env, &config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    // With TLS 1.3 the client's side of the handshake is over before the
    // server judges its certificate, so the refusal reaches the client as an
    // alert or as a dropped connection, depending on timing: no fixed words.
    assert!(
        report_line(&exit, "fluentd").starts_with("fluentd: FAILED: "),
        "{}",
        exit.output()
    );
    assert!(m.collector.wait_for_tls_failures(1, WAIT));
    assert_eq!(m.collector.event_count(), 0);

    // With it: accepted.
    let config = m.env.config(
        &m.url,
        &format!(
            "ca_file = {}\nclient_cert_file = {}\nclient_key_file = {}",
            toml_path(&m.ca_file),
            toml_path(&m.cert_file),
            toml_path(&m.key_file)
        ),
    );
    let exit = test_cmd(&m.env, &config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        report_line(&exit, "fluentd").starts_with("fluentd: OK: HTTP 200 in "),
        "{}",
        exit.output()
    );
    let batches = m.collector.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(String::from_utf8_lossy(&batches[0].body), TEST_BODY);
}

#[test]
fn mutual_tls_with_a_certificate_from_another_ca_fails() {
    let m = mtls();
    let stranger = Ca::new("some other CA");
    let (cert, key) = stranger.issue(&["tailhook-client"], ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = m.env.file("stranger.pem", &cert);
    let key_file = m.env.file("stranger-key.pem", &key);
    let config = m.env.config(
        &m.url,
        &format!(
            "ca_file = {}\nclient_cert_file = {}\nclient_key_file = {}",
            toml_path(&m.ca_file),
            toml_path(&cert_file),
            toml_path(&key_file)
        ),
    );
    let exit = test_cmd(&m.env, &config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    // With TLS 1.3 the client's side of the handshake is over before the
    // server judges its certificate, so the refusal reaches the client as an
    // alert or as a dropped connection, depending on timing: no fixed words.
    assert!(
        report_line(&exit, "fluentd").starts_with("fluentd: FAILED: "),
        "{}",
        exit.output()
    );
    assert!(m.collector.wait_for_tls_failures(1, WAIT));
    assert_eq!(m.collector.event_count(), 0);
}

#[test]
fn mutual_tls_run_delivers_every_event() {
    let m = mtls();
    let lines = setup::hits(0, 12, 150);
    setup::append(&m.env.setup.log("a.ndjson"), &lines);
    let config = m.env.config(
        &m.url,
        &format!(
            "ca_file = {}\nclient_cert_file = {}\nclient_key_file = {}",
            toml_path(&m.ca_file),
            toml_path(&m.cert_file),
            toml_path(&m.key_file)
        ),
    );
    run_until_delivered(&m.env, &config, &m.collector, &lines);
    assert_eq!(m.collector.tls_failures(), 0);
}

#[test]
fn client_cert_without_key_is_a_config_error_naming_both_keys() {
    let m = mtls();
    for extra in [
        format!("client_cert_file = {}", toml_path(&m.cert_file)),
        format!("client_key_file = {}", toml_path(&m.key_file)),
    ] {
        let config = m.env.config(&m.url, &extra);
        for cmd in ["check", "test", "run"] {
            let exit = m.env.tailhook(&[cmd, "-c", &path_str(&config)]);
            assert_eq!(exit.code, Some(1), "{cmd} with {extra}\n{}", exit.output());
            let config_path = path_str(&config);
            let line = exit
                .stderr
                .lines()
                .find(|l| l.contains("client_cert_file and client_key_file go together"))
                .unwrap_or_else(|| panic!("{cmd} with {extra}\n{}", exit.output()));
            // file:line:col of the destination, and its name.
            assert!(line.starts_with(&format!("{config_path}:")), "{line}");
            assert!(line.contains("destination `fluentd`"), "{line}");
        }
    }
    assert_eq!(m.collector.request_count(), 0);
}

#[test]
fn missing_client_certificate_files_are_errors_naming_the_file() {
    let m = mtls();
    let missing = m.env.setup.dir.path().join("no-such-client.pem");
    let config = m.env.config(
        &m.url,
        &format!(
            "ca_file = {}\nclient_cert_file = {}\nclient_key_file = {}",
            toml_path(&m.ca_file),
            toml_path(&missing),
            toml_path(&m.key_file)
        ),
    );
    assert_bad_tls_file(&m.env, &config, &missing, "client_cert_file");

    let config = m.env.config(
        &m.url,
        &format!(
            "ca_file = {}\nclient_cert_file = {}\nclient_key_file = {}",
            toml_path(&m.ca_file),
            toml_path(&m.cert_file),
            toml_path(&missing)
        ),
    );
    assert_bad_tls_file(&m.env, &config, &missing, "client_key_file");
}

// ---- 5. self-signed collector certificates (issue 15) -------------------------

/// A self-signed certificate in the shape of `openssl req -x509 -newkey
/// rsa:2048 -nodes -subj /CN=localhost -addext subjectAltName=DNS:localhost`:
/// basic constraints CA:TRUE, issuer = subject = CN=localhost, SAN
/// DNS:localhost; valid from `from` to `until` (years) when given.
/// (certificate PEM, PKCS#8 key PEM)
fn self_signed(names: &[&str], years: Option<(i32, i32)>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    if let Some((from, until)) = years {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A collector serving `cert`/`key`.
fn collector_with(cert: &str, key: &str) -> Collector {
    Collector::start(Options {
        tls: Some(server_config(cert, key, None)),
        ..Options::fluentd()
    })
}

/// `tailhook test` against a collector serving `cert`, with `extra` in the
/// destination: the one report line.
fn test_line(env: &Env, url: &str, extra: &str) -> (Exit, String) {
    let config = env.config(url, extra);
    let exit = test_cmd(env, &config);
    let line = report_line(&exit, "fluentd").to_string();
    (exit, line)
}

/// The openssl-made Fluentd certificate, in ca_file: `test` succeeds (it
/// used to fail with `Other(OtherError(CaUsedAsEndEntity))`).
#[test]
fn self_signed_certificate_in_ca_file_passes_test() {
    let env = Env::new();
    let (cert, key) = self_signed(&["localhost"], None);
    let collector = collector_with(&cert, &key);
    let ca = env.file("fluentd.crt", &cert);
    let (exit, line) = test_line(
        &env,
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(line.starts_with("fluentd: OK: HTTP 200 in "), "{line}");
    assert_eq!(collector.event_count(), 1);
    assert_eq!(collector.tls_failures(), 0);
}

/// `run` delivers every event to that collector, in order.
#[test]
fn self_signed_certificate_in_ca_file_run_delivers() {
    let env = Env::new();
    let (cert, key) = self_signed(&["localhost"], None);
    let collector = collector_with(&cert, &key);
    let ca = env.file("fluentd.crt", &cert);
    let lines = setup::hits(0, 40, 200);
    setup::append(&env.setup.log("a.ndjson"), &lines);
    let config = env.config(
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    let exit = run_until_delivered(&env, &config, &collector, &lines);
    assert!(
        !exit.stderr.contains("delivery failed"),
        "{}",
        exit.output()
    );
}

/// `dead-letter resend` delivers the dead letters to that collector and
/// empties the file.
#[test]
fn self_signed_certificate_in_ca_file_dead_letter_resend_delivers() {
    let env = Env::new();
    let (cert, key) = self_signed(&["localhost"], None);
    let collector = collector_with(&cert, &key);
    let ca = env.file("fluentd.crt", &cert);
    let config = env.config(
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    let lines = setup::hits(0, 7, 150);
    let dead = env.setup.dead_letter("fluentd");
    std::fs::create_dir_all(dead.parent().unwrap()).unwrap();
    std::fs::write(
        &dead,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();

    let exit = env.tailhook(&["dead-letter", "resend", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(!exit.stderr.contains("panicked"), "{}", exit.output());
    let got: Vec<String> = collector
        .events()
        .iter()
        .map(|e| String::from_utf8(e.clone()).unwrap())
        .collect();
    assert_eq!(got, lines);
    assert_eq!(std::fs::read(&dead).unwrap_or_default(), b"");
}

/// Another self-signed certificate of the same name in ca_file does not
/// make the collector's trusted: refused, in words.
#[test]
fn a_different_self_signed_certificate_in_ca_file_is_refused() {
    let env = Env::new();
    let (cert, key) = self_signed(&["localhost"], None);
    let (other, _) = self_signed(&["localhost"], None);
    let collector = collector_with(&cert, &key);
    let ca = env.file("other.crt", &other);
    let (exit, line) = test_line(
        &env,
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("FAILED: TLS handshake failed: the collector presents a self-signed certificate that is not in ca_file"),
        "{line}"
    );
    assert!(!line.contains("OtherError"), "{line}");
    assert_eq!(collector.request_count(), 0);
}

/// An expired self-signed certificate is refused even in ca_file, and the
/// message gives its end date.
#[test]
fn an_expired_self_signed_certificate_in_ca_file_is_refused_with_its_dates() {
    let env = Env::new();
    let (cert, key) = self_signed(&["localhost"], Some((2020, 2021)));
    let collector = collector_with(&cert, &key);
    let ca = env.file("fluentd.crt", &cert);
    let (exit, line) = test_line(
        &env,
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("FAILED: TLS handshake failed: the collector's certificate expired on Fri, 01 Jan 2021 00:00:00 GMT (it is now "),
        "{line}"
    );
    assert!(line.contains("renew"), "{line}");
    assert_eq!(collector.request_count(), 0);
}

/// A pinned self-signed certificate must still name the host.
#[test]
fn a_self_signed_certificate_in_ca_file_for_another_name_is_refused() {
    let env = Env::new();
    let (cert, key) = self_signed(&["fluentd.example"], None);
    let collector = collector_with(&cert, &key);
    let ca = env.file("fluentd.crt", &cert);
    let (exit, line) = test_line(
        &env,
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("the collector's certificate is for fluentd.example, not for localhost"),
        "{line}"
    );
    assert_eq!(collector.request_count(), 0);
}

// ---- 6. every TLS failure in words ------------------------------------------------

/// A CA-signed certificate, expired or not valid yet: the dates.
#[test]
fn expired_and_not_yet_valid_certificates_are_told_with_their_dates() {
    let env = Env::new();
    let ca = Ca::new("tailhook test CA");
    let ca_file = env.file("ca.pem", &ca.pem());
    for (years, words) in [
        (
            (2019, 2020),
            "the collector's certificate expired on Wed, 01 Jan 2020 00:00:00 GMT (it is now ",
        ),
        (
            (2098, 2099),
            "the collector's certificate is not valid until Wed, 01 Jan 2098 00:00:00 GMT (it is now ",
        ),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let collector = collector_with(&cert.pem(), &key.serialize_pem());
        let (exit, line) = test_line(
            &env,
            &collector.url("/wallarm.events"),
            &format!("ca_file = {}", toml_path(&ca_file)),
        );
        assert_eq!(exit.code, Some(1), "{}", exit.output());
        assert!(line.contains(words), "{line}");
        assert_eq!(collector.request_count(), 0);
    }
}

/// A CA certificate (CA:TRUE) signed by the trusted CA, served as the
/// server's own.
#[test]
fn a_ca_certificate_served_as_the_server_certificate_is_told() {
    let env = Env::new();
    let ca = Ca::new("tailhook test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let collector = collector_with(&cert.pem(), &key.serialize_pem());
    let ca_file = env.file("ca.pem", &ca.pem());
    let (exit, line) = test_line(
        &env,
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca_file)),
    );
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("the collector presents a CA certificate (basic constraints CA:TRUE) as its own server certificate"),
        "{line}"
    );
    assert!(!line.contains("OtherError"), "{line}");
}

/// A collector that requires a client certificate, and none is set.
#[test]
fn a_required_client_certificate_is_told() {
    let env = Env::new();
    let pki = make_pki();
    let client_ca = Ca::new("client CA");
    let collector = Collector::start(Options {
        tls: Some(server_config(
            &pki.cert_pem,
            &pki.key_pem,
            Some(&client_ca.pem()),
        )),
        ..Options::fluentd()
    });
    let ca = pki.write_ca(env.setup.dir.path());
    let (exit, line) = test_line(
        &env,
        &collector.url("/wallarm.events"),
        &format!("ca_file = {}", toml_path(&ca)),
    );
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    // TLS 1.3 refuses the missing certificate after the handshake: as an
    // alert (told exactly) or by closing the connection (told as a hint).
    assert!(
        line.contains(
            "the server requires a client certificate (set client_cert_file and client_key_file)"
        ) || line.contains(
            "if it requires a client certificate, set client_cert_file and client_key_file"
        ),
        "{line}"
    );
}

/// A plain-HTTP collector behind an https:// url.
#[test]
fn a_plain_http_collector_on_an_https_url_is_told() {
    let env = Env::new();
    let collector = support::collector::fluentd();
    let url = format!("https://localhost:{}/wallarm.events", collector.port());
    let (exit, line) = test_line(&env, &url, "");
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("FAILED: TLS handshake failed: the collector did not answer in TLS: it is probably plain HTTP; use an http:// url"),
        "{line}"
    );
    assert_eq!(collector.event_count(), 0);
}

/// A server on 127.0.0.1 that answers every ClientHello with one fatal TLS
/// alert (`description`) and closes: a collector with no TLS version
/// (70, protocol_version) or no cipher suite (40, handshake_failure) in
/// common. Returns its port.
fn alerting_server(description: u8) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]);
        }
    });
    port
}

#[test]
fn protocol_version_and_cipher_mismatches_are_told() {
    let env = Env::new();
    for (alert, words) in [
        (70u8, "no TLS version in common: the collector refused TLS 1.2 and 1.3"),
        (40u8, "the collector refused the handshake: no TLS version and cipher suite in common, or it requires a client certificate"),
    ] {
        let port = alerting_server(alert);
        let url = format!("https://localhost:{port}/wallarm.events");
        let (exit, line) = test_line(&env, &url, "");
        assert_eq!(exit.code, Some(1), "{}", exit.output());
        assert!(line.contains(words), "{alert}: {line}");
    }
}

// ---- 7. tls.server_name -----------------------------------------------------------

/// A collector reached by IP address whose certificate names only
/// `collector.internal`.
fn internal_collector(ca: &Ca) -> Collector {
    let (cert, key) = ca.issue(&["collector.internal"], ExtendedKeyUsagePurpose::ServerAuth);
    collector_with(&cert, &key)
}

/// A collector whose certificate for `collector.internal` is served only to
/// a client that sends that name as SNI.
fn sni_only_collector(ca: &Ca) -> Collector {
    let (cert, key) = ca.issue(&["collector.internal"], ExtendedKeyUsagePurpose::ServerAuth);
    let provider = ring();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let certified = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        provider.key_provider.load_private_key(key).unwrap(),
    );
    let mut sni = rustls::server::ResolvesServerCertUsingSni::new();
    sni.add("collector.internal", certified).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(sni));
    Collector::start(Options {
        tls: Some(Arc::new(config)),
        ..Options::fluentd()
    })
}

#[test]
fn server_name_verifies_an_ip_address_url_against_the_certificate_name() {
    let env = Env::new();
    let ca = Ca::new("tailhook test CA");
    let collector = internal_collector(&ca);
    let ca_file = env.file("ca.pem", &ca.pem());
    let url = format!("https://127.0.0.1:{}/wallarm.events", collector.port());

    // Without tls.server_name: refused, naming what the certificate holds.
    let (exit, line) = test_line(&env, &url, &format!("ca_file = {}", toml_path(&ca_file)));
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("FAILED: TLS handshake failed: the collector's certificate is for collector.internal, not for 127.0.0.1"),
        "{line}"
    );
    assert!(line.contains("tls.server_name"), "{line}");
    assert_eq!(collector.request_count(), 0);

    // With it: delivered, and the Host header is still the url's. This
    // collector has a certificate only for the SNI name collector.internal:
    // the name is sent as SNI too.
    let collector = sni_only_collector(&ca);
    let url = format!("https://127.0.0.1:{}/wallarm.events", collector.port());
    let (exit, line) = test_line(&env, &url, &format!("ca_file = {}", toml_path(&ca_file)));
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("it has no certificate for the name we asked for (SNI)"),
        "{line}"
    );
    let extra = format!(
        "ca_file = {}\ntls.server_name = \"collector.internal\"",
        toml_path(&ca_file)
    );
    let (exit, line) = test_line(&env, &url, &extra);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(line.starts_with("fluentd: OK: HTTP 200 in "), "{line}");
    assert!(line.ends_with(&format!("(POST {url})")), "{line}");
    let batches = collector.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].header("host"),
        Some(format!("127.0.0.1:{}", collector.port()).as_str())
    );

    // `run` delivers through it too.
    let lines = setup::hits(0, 10, 150);
    setup::append(&env.setup.log("a.ndjson"), &lines);
    let config = env.config(&url, &extra);
    let th = env.start(&config);
    assert!(
        collector.wait_for_events(1 + lines.len(), WAIT),
        "got {} events\n{}",
        collector.event_count(),
        th.stderr()
    );
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
}

/// With `urls`, `tls.server_name` is verified and sent as SNI for every
/// one of them: two collectors by IP address, each serving its
/// `collector.internal` certificate only to that SNI name, both answer
/// `test` and both take batches in `run`.
#[test]
fn server_name_applies_to_every_url() {
    let env = Env::new();
    let ca = Ca::new("tailhook test CA");
    let ca_file = env.file("ca.pem", &ca.pem());
    let (a, b) = (sni_only_collector(&ca), sni_only_collector(&ca));
    let url_a = format!("https://127.0.0.1:{}/wallarm.events", a.port());
    let url_b = format!("https://127.0.0.1:{}/wallarm.events", b.port());
    let config = env
        .setup
        .builder()
        .extra("shutdown_timeout = \"1s\"")
        .file_source("wallarm", "*.ndjson")
        .destination_urls("fluentd", &[&url_a, &url_b])
        .extra(&format!(
            "ca_file = {}\ntls.server_name = \"collector.internal\"\n[destination.batch]\nmax_events = 2\ntimeout = \"100ms\"",
            toml_path(&ca_file)
        ))
        .write();
    let exit = test_cmd(&env, &config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let lines: Vec<&str> = exit.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", exit.output());
    for (line, url) in lines.iter().zip([&url_a, &url_b]) {
        assert!(
            line.starts_with("fluentd: OK: HTTP 200 in ")
                && line.ends_with(&format!("(POST {url})")),
            "{}",
            exit.output()
        );
    }

    let events = setup::wallarm_hits(0, 8);
    setup::append(&env.setup.log("a.ndjson"), &events);
    let th = env.start(&config);
    let deadline = std::time::Instant::now() + WAIT;
    while a.event_count() + b.event_count() < 1 + 1 + events.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "got {} and {} events\n{}",
            a.event_count(),
            b.event_count(),
            th.stderr()
        );
        a.wait_for_events(a.event_count() + 1, Duration::from_millis(20));
        b.wait_for_events(b.event_count() + 1, Duration::from_millis(20));
    }
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    // Beyond the test message, each took batches of the run.
    assert!(a.batches().len() >= 2 && b.batches().len() >= 2);
    assert_eq!(a.tls_failures() + b.tls_failures(), 0);
}

#[test]
fn check_prints_server_name_and_refuses_a_bad_one() {
    let env = Env::new();
    let config = env.config(
        "https://127.0.0.1:9880/wallarm.events",
        "tls.server_name = \"collector.internal\"",
    );
    let exit = check_cmd(&env, &config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stdout
            .contains("[destination.tls]\nserver_name = \"collector.internal\"\n"),
        "{}",
        exit.output()
    );

    let config = env.config(
        "https://127.0.0.1:9880/wallarm.events",
        "tls.server_name = \"not a name!\"",
    );
    let exit = check_cmd(&env, &config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.output()
            .contains("tls.server_name `not a name!` is neither a DNS name nor an IP address"),
        "{}",
        exit.output()
    );
}

/// An HTTPS collector that answers every request with `Connection: close`.
fn https_collector_closing_each_connection() -> (Collector, TestPki) {
    let pki = make_pki();
    let collector = https_collector(&pki);
    collector.close_after_each_request();
    (collector, pki)
}

/// Runs tailhook until the collector has 60 lines, in order, sent five a
/// batch, one batch at a time (so each batch takes a new connection).
fn run_in_batches_of_five(collector: &Collector, pki: &TestPki) -> Exit {
    let env = Env::new();
    let lines = setup::hits(0, 60, 300);
    setup::append(&env.setup.log("a.ndjson"), &lines);
    let ca = pki.write_ca(env.setup.dir.path());
    let config = env.config(
        &collector.url("/wallarm.events"),
        &format!(
            "ca_file = {}\nconcurrency = 1\n[destination.batch]\nmax_events = 5\ntimeout = \"100ms\"",
            toml_path(&ca)
        ),
    );
    run_until_delivered(&env, &config, collector, &lines)
}

/// A collector that closes the connection after every answer (as a load
/// balancer may): each batch needs a new connection, and after the first
/// full handshake tailhook resumes its TLS session instead of paying for a
/// full one each time. Every event still arrives, in order.
#[test]
fn sessions_are_resumed_when_the_collector_closes_each_connection() {
    let (collector, pki) = https_collector_closing_each_connection();
    run_in_batches_of_five(&collector, &pki);
    let (requests, connections) = (collector.request_count(), collector.connection_count());
    assert!(requests >= 12, "{requests} requests for 60 events in 5s");
    assert!(
        connections > requests,
        "{connections} connections for {requests} requests: the collector's Connection: close was not followed"
    );
    // The probe at start and the first request make full handshakes; every
    // later connection can resume.
    let resumed = collector.resumed_handshakes();
    assert!(
        resumed + 2 >= requests,
        "only {resumed} of {connections} TLS handshakes resumed a session ({requests} requests)"
    );
}

/// Fluentd's TLS server aborts every handshake that offers to resume a
/// session (seen with 1.16.11: "session id context uninitialized"). The
/// first refusal turns resumption off for that collector: the request goes
/// again at once with a full handshake, delivery is never reported failed,
/// and the log says so once.
#[test]
fn a_collector_that_cannot_resume_sessions_gets_full_handshakes() {
    let (collector, pki) = https_collector_closing_each_connection();
    collector.refuse_resumption();
    let exit = run_in_batches_of_five(&collector, &pki);
    assert_eq!(
        collector.refused_resumptions(),
        1,
        "resumption was offered again after the collector refused it"
    );
    assert_eq!(collector.resumed_handshakes(), 0);
    assert!(
        !exit.stderr.contains("delivery failed"),
        "a refused resumption was reported as a failed delivery:\n{}",
        exit.stderr
    );
    let told: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.contains("refused to resume a TLS session"))
        .collect();
    assert_eq!(told.len(), 1, "{}", exit.stderr);
    assert!(told[0].contains("full handshake"), "{}", told[0]);
}
