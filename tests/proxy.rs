//! HTTP(S) destinations through an HTTP proxy, through the real binary:
//! `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the environment, an
//! explicit `proxy` with credentials, `proxy = "none"`, a proxy that wants
//! other credentials (407) or refuses the CONNECT (403), a dead proxy, a
//! TLS failure behind a proxy, `tls.server_name` through one, and the
//! config errors. The proxy is `support::proxy`'s, which records every
//! tunnel and request; credentials are checked absent from every output.

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
use support::check::{assert_clean_exit, dead_port};
use support::collector::{base64, fluentd, Collector, Options};
use support::process::{run_cmd, Exit, Tailhook};
use support::proxy::Proxy;
use support::setup::{append, bytes_of, wallarm_hits, Setup};
use support::tls::make_pki;

const WAIT: Duration = Duration::from_secs(30);

/// A proxy password given in the config, and one given in the environment.
const CONFIG_PASSWORD: &str = "px-5ecret-6612";
const ENV_PASSWORD: &str = "envpx-5ecret-3377";

/// One test's directory, an https collector whose CA is in `ca.pem`, and the
/// environment tailhook runs with.
struct Case {
    setup: Setup,
    collector: Collector,
    ca_file: PathBuf,
    env: Vec<(String, String)>,
}

impl Case {
    /// An https Fluentd emulator at `https://localhost:PORT`.
    fn https() -> Case {
        let pki = make_pki();
        let setup = Setup::new();
        let ca_file = pki.write_ca(setup.dir.path());
        let collector = Collector::start(Options {
            tls: Some(pki.server_config()),
            ..Options::fluentd()
        });
        Case {
            setup,
            collector,
            ca_file,
            env: Vec::new(),
        }
    }

    /// A plain-http Fluentd emulator at `http://127.0.0.1:PORT`.
    fn http() -> Case {
        Case {
            setup: Setup::new(),
            collector: fluentd(),
            ca_file: PathBuf::new(),
            env: Vec::new(),
        }
    }

    fn with_env(mut self, vars: &[(&str, &str)]) -> Case {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn url(&self) -> String {
        self.collector.url("/wallarm.events")
    }

    /// `config.toml`: a file source and the destination `fluentd` at `url`
    /// (with `ca_file` for https), `extra` inside its block.
    fn config_for(&self, url: &str, extra: &str) -> PathBuf {
        let ca = if url.starts_with("https") {
            format!("ca_file = {:?}\n", self.ca_file.display().to_string())
        } else {
            String::new()
        };
        let timeout = if extra.contains("connect_timeout") {
            ""
        } else {
            "connect_timeout = \"5s\"\n"
        };
        self.setup
            .builder()
            .extra("shutdown_timeout = \"2s\"")
            .file_source("wallarm", "*.ndjson")
            .destination("fluentd", url)
            .extra(&format!("{ca}{timeout}{extra}"))
            .write()
    }

    fn config(&self, extra: &str) -> PathBuf {
        self.config_for(&self.url(), extra)
    }

    fn tailhook(&self, args: &[&str]) -> Exit {
        run_cmd(args, &self.env())
    }

    /// `tailhook test`: its exit and its one report line.
    fn test(&self, config: &Path) -> (Exit, String) {
        let exit = self.tailhook(&["test", "-c", config.to_str().unwrap()]);
        let line = exit
            .stdout
            .lines()
            .find(|l| l.starts_with("fluentd: "))
            .unwrap_or_default()
            .to_string();
        (exit, line)
    }

    fn start(&self, config: &Path) -> Tailhook {
        Tailhook::start_with_env(config, &self.env())
    }

    /// Appends `n` events, runs tailhook until the collector has them all,
    /// stops it (exit 0), and checks they arrived once each, in order
    /// (after what the collector had before: test messages).
    fn deliver(&self, config: &Path, n: usize) -> Exit {
        let before = self.collector.event_count();
        let lines = wallarm_hits(0, n);
        append(&self.setup.log("a.ndjson"), &lines);
        let th = self.start(config);
        assert!(
            self.collector.wait_for_events(before + lines.len(), WAIT),
            "got {} of {} events\n{}",
            self.collector.event_count() - before,
            lines.len(),
            th.stderr()
        );
        let exit = th.terminate();
        assert_clean_exit(&exit);
        assert_eq!(self.collector.events()[before..], bytes_of(&lines));
        exit
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn assert_absent(what: &str, text: &str, secret: &str) {
    assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
}

// ---- through the proxy -------------------------------------------------------

/// `HTTPS_PROXY` with credentials: the start-up probe and every request go
/// through a CONNECT tunnel to the collector, with `Proxy-Authorization`;
/// `test` and `check` say so; the password is in no output.
#[test]
fn an_https_destination_follows_https_proxy_from_the_environment() {
    let proxy = Proxy::start();
    proxy.require_credentials("envuser", ENV_PASSWORD);
    let case = Case::https().with_env(&[
        ("HTTPS_PROXY", &proxy.url_with("envuser", ENV_PASSWORD)),
        // For http urls only: not used by an https destination.
        ("HTTP_PROXY", "http://127.0.0.1:9"),
    ]);
    let config = case.config("");
    let target = format!("localhost:{}", case.collector.port());
    let described = format!("{} from HTTPS_PROXY", proxy.url());

    let check = case.tailhook(&["check", "-c", config.to_str().unwrap()]);
    assert!(check.success(), "{}", check.output());
    assert!(
        check.stdout.contains(&format!(
            "# proxy: not set; from the environment: via {described}\n"
        )),
        "{}",
        check.stdout
    );
    assert_absent("check", &check.output(), ENV_PASSWORD);

    let (exit, line) = case.test(&config);
    assert!(exit.success(), "{}", exit.output());
    assert!(line.starts_with("fluentd: OK: HTTP 200 in "), "{line}");
    assert!(
        line.ends_with(&format!("(POST {} via proxy {described})", case.url())),
        "{line}"
    );
    assert_absent("test", &exit.output(), ENV_PASSWORD);
    let tunnels = proxy.seen();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(
        (tunnels[0].method.as_str(), tunnels[0].target.as_str()),
        ("CONNECT", target.as_str())
    );

    // run: the probe at start opens a tunnel and a TLS session before any
    // event exists.
    let th = case.start(&config);
    assert!(
        proxy.wait_until(WAIT, |s| s.len() >= 2),
        "no CONNECT at start\n{}",
        th.stderr()
    );
    assert!(
        th.wait_for_log(&format!("connections go through proxy {described}"), WAIT),
        "{}",
        th.stderr()
    );
    assert_eq!(case.collector.request_count(), 1, "only the test message");
    drop(th);

    let exit = case.deliver(&config, 300);
    assert_absent("run", &exit.output(), ENV_PASSWORD);
    let seen = proxy.seen();
    assert!(seen.len() >= 3, "{seen:?}");
    for s in &seen {
        assert_eq!(s.method, "CONNECT", "{s:?}");
        assert_eq!(s.target, target, "{s:?}");
        assert_eq!(s.status, 200, "{s:?}");
        assert_eq!(
            s.proxy_authorization.as_deref(),
            Some(basic("envuser", ENV_PASSWORD).as_str())
        );
    }
    let (up, down) = seen
        .iter()
        .fold((0, 0), |(u, d), s| (u + s.bytes_up, d + s.bytes_down));
    let body: usize = wallarm_hits(0, 300).iter().map(|l| l.len()).sum();
    assert!(
        up > body as u64 && down > 0,
        "the events went through the tunnels: {up} bytes up, {down} down"
    );
}

/// An explicit `proxy` with user and password wins over the environment;
/// `check` shows it with the password redacted; no output shows it.
#[test]
fn an_explicit_proxy_with_credentials_is_used_and_its_password_never_shown() {
    let proxy = Proxy::start();
    proxy.require_credentials("pxuser", CONFIG_PASSWORD);
    let dead = dead_port();
    let case =
        Case::https().with_env(&[("HTTPS_PROXY", &format!("http://127.0.0.1:{}", dead.port))]);
    let config = case.config(&format!(
        "proxy = {:?}",
        proxy.url_with("pxuser", CONFIG_PASSWORD)
    ));
    let check = case.tailhook(&["check", "-c", config.to_str().unwrap()]);
    assert!(check.success(), "{}", check.output());
    assert!(
        check.stdout.contains(&format!(
            "proxy = \"http://pxuser:redacted@127.0.0.1:{}\"\n",
            proxy.port()
        )),
        "{}",
        check.stdout
    );
    assert_absent("check", &check.output(), CONFIG_PASSWORD);

    let (exit, line) = case.test(&config);
    assert!(exit.success(), "{}", exit.output());
    assert!(
        line.ends_with(&format!("(POST {} via proxy {})", case.url(), proxy.url())),
        "{line}"
    );
    assert_absent("test", &exit.output(), CONFIG_PASSWORD);

    let exit = case.deliver(&config, 120);
    assert_absent("run", &exit.output(), CONFIG_PASSWORD);
    let seen = proxy.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.status == 200
        && s.proxy_authorization.as_deref() == Some(basic("pxuser", CONFIG_PASSWORD).as_str())));
}

/// `NO_PROXY` naming the collector's host: straight to the collector.
#[test]
fn no_proxy_naming_the_collector_goes_direct() {
    let proxy = Proxy::start();
    let case = Case::https().with_env(&[
        ("HTTPS_PROXY", &proxy.url()),
        ("NO_PROXY", "example.org, localhost"),
    ]);
    let config = case.config("");
    let (exit, line) = case.test(&config);
    assert!(exit.success(), "{}", exit.output());
    assert!(
        line.ends_with(&format!(
            "(POST {} direct (NO_PROXY matches localhost))",
            case.url()
        )),
        "{line}"
    );
    case.deliver(&config, 50);
    assert_eq!(proxy.seen(), [], "the proxy saw nothing");
}

/// `proxy = "none"`: straight to the collector, whatever the environment says.
#[test]
fn proxy_none_goes_direct_whatever_the_environment() {
    let proxy = Proxy::start();
    let case =
        Case::https().with_env(&[("HTTPS_PROXY", &proxy.url()), ("https_proxy", &proxy.url())]);
    let config = case.config("proxy = \"none\"");
    let check = case.tailhook(&["check", "-c", config.to_str().unwrap()]);
    assert!(
        check.stdout.contains("\nproxy = \"none\"\n"),
        "{}",
        check.stdout
    );
    let (exit, line) = case.test(&config);
    assert!(exit.success(), "{}", exit.output());
    assert!(
        line.ends_with("direct (proxy = \"none\": https_proxy not used))"),
        "{line}"
    );
    case.deliver(&config, 50);
    assert_eq!(proxy.seen(), [], "the proxy saw nothing");
}

/// A plain-http url follows `HTTP_PROXY`: each request goes to the proxy in
/// absolute form, with `Proxy-Authorization`.
#[test]
fn a_plain_http_destination_follows_http_proxy_in_absolute_form() {
    let proxy = Proxy::start();
    proxy.require_credentials("envuser", ENV_PASSWORD);
    let dead = dead_port();
    let case = Case::http().with_env(&[
        ("http_proxy", &proxy.url_with("envuser", ENV_PASSWORD)),
        ("HTTPS_PROXY", &format!("http://127.0.0.1:{}", dead.port)),
    ]);
    let config = case.config("");
    let (exit, line) = case.test(&config);
    assert!(exit.success(), "{}", exit.output());
    assert!(
        line.ends_with(&format!(
            "(POST {} via proxy {} from http_proxy)",
            case.url(),
            proxy.url()
        )),
        "{line}"
    );
    let exit = case.deliver(&config, 200);
    assert_absent("run", &exit.output(), ENV_PASSWORD);
    let seen = proxy.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.method, "POST", "{s:?}");
        assert_eq!(s.target, case.url(), "absolute form: {s:?}");
        assert_eq!(s.status, 200, "{s:?}");
        assert_eq!(
            s.proxy_authorization.as_deref(),
            Some(basic("envuser", ENV_PASSWORD).as_str())
        );
    }
    let relayed: u64 = seen.iter().map(|s| s.bytes_up).sum();
    let bodies: usize = case.collector.batches().iter().map(|b| b.body.len()).sum();
    assert_eq!(relayed, bodies as u64, "every body went through the proxy");
}

// ---- proxy failures, in words -------------------------------------------------

/// A proxy that answers 407: the events wait, are retried, and arrive once
/// each when the proxy takes the credentials; the log says 407 in words.
#[test]
fn a_proxy_answering_407_holds_the_events_until_it_lets_them_through() {
    let proxy = Proxy::start();
    proxy.require_credentials("pxuser", "the-right-one");
    let case = Case::https();
    let config = case.config(&format!(
        "proxy = {:?}",
        proxy.url_with("pxuser", CONFIG_PASSWORD)
    ));
    let lines = wallarm_hits(0, 150);
    append(&case.setup.log("a.ndjson"), &lines);
    let th = case.start(&config);
    let refusal = format!(
        "proxy {} answered 407 Proxy Authentication Required: it refused the user name and password in the proxy URL",
        proxy.url()
    );
    assert!(
        th.wait_for_log(
            &format!("collector not reachable at start: {refusal}"),
            WAIT
        ),
        "{}",
        th.stderr()
    );
    assert!(
        th.wait_for_log(&format!("delivery failed: {refusal}"), WAIT),
        "{}",
        th.stderr()
    );
    assert!(
        proxy.wait_until(WAIT, |s| s.iter().filter(|s| s.status == 407).count() >= 3),
        "retried: {:?}",
        proxy.seen()
    );
    assert_eq!(case.collector.event_count(), 0);

    proxy.require_credentials("pxuser", CONFIG_PASSWORD);
    assert!(
        case.collector.wait_for_events(lines.len(), WAIT),
        "got {} of {}\n{}",
        case.collector.event_count(),
        lines.len(),
        th.stderr()
    );
    let exit = th.terminate();
    assert_clean_exit(&exit);
    assert_eq!(
        case.collector.events(),
        bytes_of(&lines),
        "none lost, none twice"
    );
    assert!(
        exit.stderr.contains("delivering again after"),
        "{}",
        exit.stderr
    );
    assert_absent("run", &exit.output(), CONFIG_PASSWORD);
}

/// `tailhook test` and `run` through a proxy that is not there, and
/// `test` through one that never answers.
#[test]
fn a_dead_proxy_is_named_in_words() {
    let dead = dead_port();
    let proxy_url = format!("http://127.0.0.1:{}", dead.port);
    let case = Case::https().with_env(&[("HTTPS_PROXY", &proxy_url)]);
    let config = case.config("");
    let (exit, line) = case.test(&config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert_eq!(
        line,
        format!(
            "fluentd: FAILED: proxy {proxy_url} from HTTPS_PROXY not reachable: connection refused: nothing is listening at that address and port: check the proxy's address and port (POST {} via proxy {proxy_url} from HTTPS_PROXY)",
            case.url()
        )
    );
    let th = case.start(&config);
    assert!(
        th.wait_for_log(
            &format!("collector not reachable at start: proxy {proxy_url} from HTTPS_PROXY not reachable: connection refused"),
            WAIT
        ),
        "{}",
        th.stderr()
    );
    assert_clean_exit(&th.terminate());
    assert_eq!(case.collector.connection_count(), 0);

    // A proxy that takes the connection and never answers the CONNECT (the
    // kernel completes the handshake; nothing reads it).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let case = case.with_env(&[("https_proxy", &silent_url)]);
    let (exit, line) = case.test(&case.config("connect_timeout = \"1s\""));
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.starts_with(&format!(
            "fluentd: FAILED: connect timeout: no connection through proxy {silent_url} from https_proxy within 1s: the proxy, or the collector behind it, did not answer in time"
        )),
        "{line}"
    );
}

/// A proxy whose rules deny the CONNECT, or that cannot reach the
/// collector: its status, and what to change.
#[test]
fn a_proxy_refusing_the_connect_is_told_with_its_status() {
    let proxy = Proxy::start();
    proxy.refuse_connect(true);
    let case = Case::https().with_env(&[("https_proxy", &proxy.url())]);
    let (exit, line) = case.test(&case.config(""));
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.starts_with(&format!(
            "fluentd: FAILED: proxy {} from https_proxy refused to open a tunnel to localhost:{}: it answered CONNECT with 403 Forbidden: its rules must allow CONNECT to that host and port",
            proxy.url(),
            case.collector.port()
        )),
        "{line}"
    );
    assert_eq!(case.collector.connection_count(), 0);

    // A collector the proxy cannot reach: Squid's 503, told as such.
    proxy.refuse_connect(false);
    let dead = dead_port();
    let url = format!("https://localhost:{}/wallarm.events", dead.port);
    let (exit, line) = case.test(&case.config_for(&url, ""));
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains(&format!(
            "refused to open a tunnel to localhost:{}: it answered CONNECT with 503 Service Unavailable: the proxy could not reach the collector",
            dead.port
        )),
        "{line}"
    );
}

/// A collector certificate from a CA not in `ca_file`, behind the proxy:
/// the TLS failure in words, saying the connection went through the proxy.
#[test]
fn a_tls_failure_behind_the_proxy_is_in_words() {
    let proxy = Proxy::start();
    let case = Case::https().with_env(&[("HTTPS_PROXY", &proxy.url())]);
    // Another CA, of another name.
    std::fs::write(&case.ca_file, internal_collector().1).unwrap();
    let (exit, line) = case.test(&case.config(""));
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.starts_with("fluentd: FAILED: TLS handshake failed: unknown CA"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "(through proxy {} from HTTPS_PROXY: a proxy that inspects TLS presents a certificate of its own",
            proxy.url()
        )),
        "{line}"
    );
    assert_eq!(proxy.seen()[0].status, 200, "the tunnel was open");
}

// ---- tls.server_name through a proxy ------------------------------------------

/// A collector at an IP address whose certificate names only
/// `collector.internal`, and that CA's PEM.
fn internal_collector() -> (Collector, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "proxy test CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["collector.internal".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let collector = Collector::start(Options {
        tls: Some(Arc::new(config)),
        ..Options::fluentd()
    });
    (collector, ca.pem())
}

/// Through a proxy, the tunnel goes to the url's host (an IP address here)
/// and the certificate is checked against `tls.server_name`.
#[test]
fn tls_server_name_works_through_a_proxy() {
    let proxy = Proxy::start();
    let (collector, ca_pem) = internal_collector();
    let mut case = Case::https().with_env(&[("HTTPS_PROXY", &proxy.url())]);
    case.collector = collector;
    std::fs::write(&case.ca_file, ca_pem).unwrap();
    let url = format!("https://127.0.0.1:{}/wallarm.events", case.collector.port());

    let wrong = case.config_for(&url, "tls.server_name = \"other.internal\"");
    let (exit, line) = case.test(&wrong);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        line.contains("TLS handshake failed: the collector's certificate is for collector.internal, not for other.internal"),
        "{line}"
    );

    let config = case.config_for(&url, "tls.server_name = \"collector.internal\"");
    let (exit, line) = case.test(&config);
    assert!(exit.success(), "{}", exit.output());
    assert!(line.starts_with("fluentd: OK: HTTP 200 in "), "{line}");
    case.deliver(&config, 100);
    let target = format!("127.0.0.1:{}", case.collector.port());
    let seen = proxy.seen();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.iter().all(|s| s.target == target), "{seen:?}");
    let batches = case.collector.batches();
    assert_eq!(batches[0].header("host"), Some(target.as_str()));
}

// ---- config errors ----------------------------------------------------------------

#[test]
fn proxy_settings_that_cannot_work_are_config_errors_in_words() {
    let case = Case::https();
    for (setting, words) in [
        (
            "proxy = \"https://127.0.0.1:3128\"".to_string(),
            "a proxy reached over TLS (https://) is not supported; use the proxy's plain http:// address",
        ),
        (
            format!("proxy = \"socks5://u:{CONFIG_PASSWORD}@127.0.0.1:1080\""),
            "proxy `socks5://u:***@127.0.0.1:1080`: SOCKS proxies are not supported",
        ),
        (
            "proxy = \"proxy.example:3128\"".to_string(),
            "must start with http://",
        ),
    ] {
        let config = case.config(&setting);
        let check = case.tailhook(&["check", "-c", config.to_str().unwrap()]);
        assert_eq!(check.code, Some(1), "{}", check.output());
        assert!(check.stderr.contains(words), "{words}:\n{}", check.stderr);
        assert!(
            check.stderr.contains("destination `fluentd`: "),
            "{}",
            check.stderr
        );
        assert_absent("check", &check.output(), CONFIG_PASSWORD);
    }

    let forward = case.setup.config(&format!(
        "{}[[destination]]\nname = \"fwd\"\ntype = \"forward\"\naddress = \"127.0.0.1:24224\"\ntag = \"wallarm\"\nproxy = \"http://127.0.0.1:3128\"\n",
        case.setup.source("wallarm", "*.ndjson", "")
    ));
    let check = case.tailhook(&["check", "-c", forward.to_str().unwrap()]);
    assert_eq!(check.code, Some(1), "{}", check.output());
    assert!(
        check.stderr.contains("destination `fwd`: `proxy` is a setting of HTTP destinations; a `type = \"forward\"` destination connects straight to in_forward"),
        "{}",
        check.stderr
    );

    // A variable naming a proxy tailhook cannot use stops `check` (and
    // `run`), naming the variable, its password masked.
    let case = case.with_env(&[(
        "HTTPS_PROXY",
        &format!("socks5h://u:{ENV_PASSWORD}@127.0.0.1:1080"),
    )]);
    let config = case.config("");
    let check = case.tailhook(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(check.code, Some(1), "{}", check.output());
    assert!(
        check.stderr.contains("destination `fluentd`: HTTPS_PROXY: proxy `socks5h://u:***@127.0.0.1:1080`: SOCKS proxies are not supported"),
        "{}",
        check.stderr
    );
    assert!(
        check
            .stderr
            .contains("proxy = \"none\" ignores HTTPS_PROXY"),
        "{}",
        check.stderr
    );
    assert_absent("check", &check.output(), ENV_PASSWORD);
    let run = case.tailhook(&["run", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert_absent("run", &run.output(), ENV_PASSWORD);
}
