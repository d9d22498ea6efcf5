//! The tailhook destination blocks of `fluentd/README.md` and
//! `logstash/README.md` stay valid and keep working.
//!
//! For every ```` ```toml ```` block of each README:
//!
//! 1. the block, in a config with a file source and a `data_dir`, passes
//!    `tailhook check`;
//! 2. the same block, with only the host and port of its URL changed to a
//!    collector emulator on 127.0.0.1 (scheme, path, method, headers,
//!    `ca_file` and client certificate kept), delivers the sample events of
//!    `examples/sample-events.ndjson` through `tailhook run`: the emulator
//!    (Fluentd `in_http` for `fluentd/`, the Logstash `http` input with basic
//!    auth for `logstash/`; HTTPS when the URL is `https`, requiring a client
//!    certificate when the block sets `client_cert_file`) receives exactly
//!    those events, byte for byte, each request with the block's method,
//!    path and header values.
//!
//! A `type = "forward"` block is delivered instead to the forward-protocol
//! emulator (its `address` changed; TLS when the config has `<transport
//! tls>`, `<security>` with this test's shared key when it has
//! `<security>`), and the events compared as JSON; a `type = "beats"` block
//! to the Lumberjack v2 emulator (TLS when the config has `ssl_enabled =>
//! true`), the events compared byte for byte.
//!
//! The environment variables the blocks name are set here; a block naming
//! one this test does not know fails, so a README change cannot skip the
//! test silently. Each README must also have a block under a heading naming
//! each `*.conf` file of its folder.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use support::check::assert_clean_exit;
use support::collector::{base64, Collector, Flavor, Options};
use support::process::{run_cmd, Tailhook};
use support::setup::Setup;
use support::tls::{make_pki, ClientCa, TestPki};

/// The longest the test waits for the events to arrive.
const WAIT: Duration = Duration::from_secs(60);

const FLUENTD_TOKEN: &str = "fluentd-token-7f3a9c";
const LOGSTASH_USER: &str = "tailhook";
const LOGSTASH_PASSWORD: &str = "logstash-password-51d2";
const FLUENTD_SHARED_KEY: &str = "fluentd-shared-key-0c41";

#[test]
fn fluentd_readme_destination_blocks_check_and_deliver() {
    check_readme("fluentd", Flavor::Fluentd);
}

#[test]
fn logstash_readme_destination_blocks_check_and_deliver() {
    check_readme("logstash", Flavor::Logstash);
}

/// One ```` ```toml ```` block of a README and the `###` heading above it.
struct Block {
    heading: String,
    toml: String,
}

/// Every ```` ```toml ```` block of `text`, with the heading it is under.
fn toml_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("### ") {
            heading = h.trim().to_string();
        } else if line.trim_end() == "```toml" {
            let mut toml = String::new();
            for body in lines.by_ref() {
                if body.trim_end() == "```" {
                    break;
                }
                toml.push_str(body);
                toml.push('\n');
            }
            blocks.push(Block {
                heading: heading.clone(),
                toml,
            });
        }
    }
    blocks
}

/// The files and environment every block may use.
struct Fixtures {
    pki: TestPki,
    client_ca: ClientCa,
    vars: BTreeMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

impl Fixtures {
    fn new() -> Fixtures {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki();
        let ca = pki.write_ca(dir.path());
        let client_ca = ClientCa::new("tailhook collectors test client CA");
        let (cert, key) = client_ca.issue("tailhook");
        let cert_path = dir.path().join("client.crt");
        let key_path = dir.path().join("client.key");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let vars = BTreeMap::from([
            ("FLUENTD_TOKEN", FLUENTD_TOKEN.to_string()),
            ("FLUENTD_SHARED_KEY", FLUENTD_SHARED_KEY.to_string()),
            (
                "LOGSTASH_BASIC_AUTH",
                base64(format!("{LOGSTASH_USER}:{LOGSTASH_PASSWORD}").as_bytes()),
            ),
            ("TAILHOOK_CA_FILE", path(&ca)),
            ("TAILHOOK_CLIENT_CERT", path(&cert_path)),
            ("TAILHOOK_CLIENT_KEY", path(&key_path)),
        ]);
        Fixtures {
            pki,
            client_ca,
            vars,
            _dir: dir,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// `text` with `${NAME}` and `${NAME:-default}` replaced as tailhook
    /// does, from this test's variables; panics on a variable it does not
    /// set (its default is never used, so the test's files are).
    fn expand(&self, text: &str, what: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .unwrap_or_else(|| panic!("{what}: unterminated ${{ in {text:?}"))
                + start;
            let inner = &rest[start + 2..end];
            let name = inner.split(":-").next().unwrap();
            let value = self.vars.get(name).unwrap_or_else(|| {
                panic!(
                    "{what}: the block uses ${{{name}}}, which tests/collectors.rs does not set; \
                     add it to Fixtures::new"
                )
            });
            out.push_str(value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// An emulator of `flavor` that asks what the paired config asks: HTTPS,
    /// a client certificate from this test's client CA, basic auth.
    fn collector(&self, flavor: Flavor, requires: &Requires) -> Collector {
        let base = match flavor {
            Flavor::Fluentd => Options::fluentd(),
            Flavor::Logstash => Options::logstash(),
        };
        let basic_auth = requires
            .basic_auth
            .then(|| (LOGSTASH_USER.to_string(), LOGSTASH_PASSWORD.to_string()));
        let tls = match (requires.tls, requires.client_cert) {
            (false, false) => None,
            (true, false) => Some(self.pki.server_config()),
            (true, true) => Some(self.server_config_requiring_client_cert()),
            (false, true) => panic!("client certificates over plain http"),
        };
        Collector::start(Options {
            tls,
            basic_auth,
            ..base
        })
    }

    fn server_config_requiring_client_cert(&self) -> Arc<rustls::ServerConfig> {
        self.pki.server_config_requiring(&self.client_ca)
    }
}

/// What the collector config a block pairs with requires of tailhook, read
/// from the config itself (comment lines left out).
#[derive(Debug)]
struct Requires {
    /// HTTPS (`<transport tls>`, `ssl_enabled => true`).
    tls: bool,
    /// A client certificate (`client_cert_auth true`,
    /// `ssl_client_authentication => "required"`).
    client_cert: bool,
    /// Fluentd: the token in the `Origin` header (`cors_allow_origins`).
    origin_token: bool,
    /// Logstash: basic auth (`user =>`).
    basic_auth: bool,
    /// Fluentd `in_forward`: `<security>` (a shared key).
    security: bool,
}

fn requires(conf: &str) -> Requires {
    let live: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let has = |prefix: &str| live.iter().any(|l| l.starts_with(prefix));
    Requires {
        tls: has("<transport tls>") || has("ssl_enabled => true"),
        client_cert: has("client_cert_auth true")
            || has("ssl_client_authentication => \"required\""),
        origin_token: has("cors_allow_origins"),
        basic_auth: has("user =>"),
        security: has("<security>"),
    }
}

/// The parts of a destination block the test compares requests with.
struct Destination {
    name: String,
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    mtls: bool,
}

fn parse_destination(block: &str, what: &str) -> Destination {
    let table: toml::Table =
        toml::from_str(block).unwrap_or_else(|e| panic!("{what}: not TOML: {e}\n{block}"));
    let destinations = table
        .get("destination")
        .and_then(|d| d.as_array())
        .unwrap_or_else(|| panic!("{what}: no [[destination]] in\n{block}"));
    assert_eq!(
        destinations.len(),
        1,
        "{what}: one [[destination]] per block"
    );
    let d = destinations[0].as_table().unwrap();
    assert!(
        !d.contains_key("events") && !d.contains_key("sources"),
        "{what}: this test expects every sample event to reach the collector; \
         a block with `events` or `sources` needs the test taught to select"
    );
    let string = |key: &str| d.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let headers = d
        .get("headers")
        .and_then(|h| h.as_table())
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Destination {
        name: string("name").unwrap_or_else(|| panic!("{what}: no name")),
        url: string("url").unwrap_or_else(|| panic!("{what}: no url")),
        method: string("method").unwrap_or_else(|| "POST".to_string()),
        headers,
        mtls: d.contains_key("client_cert_file"),
    }
}

/// `(scheme, path)` of an `http(s)://` URL.
fn split_url(url: &str) -> (&str, &str) {
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    (scheme, path)
}

/// The events tailhook makes of `examples/sample-events.ndjson`, as the
/// bytes a collector records: each element of an array line, each object
/// line.
fn sample_events(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut events = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: &RawValue = serde_json::from_str(line).unwrap();
        if value.get().starts_with('[') {
            let elements: Vec<&RawValue> = serde_json::from_str(value.get()).unwrap();
            events.extend(elements.iter().map(|e| e.get().as_bytes().to_vec()));
        } else {
            events.push(value.get().as_bytes().to_vec());
        }
    }
    events
}

fn check_readme(folder: &str, flavor: Flavor) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme_path = root.join(folder).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = toml_blocks(&readme);

    // A block for every config of the folder.
    let mut confs: Vec<String> = std::fs::read_dir(root.join(folder))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    confs.sort();
    assert!(!confs.is_empty(), "no *.conf in {folder}/");
    for conf in &confs {
        assert!(
            blocks
                .iter()
                .any(|b| b.heading.contains(&format!("`{conf}`"))),
            "{folder}/README.md has no ```toml block under a heading naming `{conf}`"
        );
    }

    let fixtures = Fixtures::new();
    let samples = root.join("examples").join("sample-events.ndjson");
    let want = sample_events(&samples);
    assert!(want.len() >= 10, "only {} sample events", want.len());

    for block in &blocks {
        let what = format!("{folder}/README.md, block under `{}`", block.heading);
        let conf = confs
            .iter()
            .find(|c| block.heading.contains(&format!("`{c}`")))
            .unwrap_or_else(|| panic!("{what}: the heading names none of {confs:?}"));
        let requires = requires(&std::fs::read_to_string(root.join(folder).join(conf)).unwrap());
        // Every variable the block names is one this test sets.
        fixtures.expand(&block.toml, &what);
        check_block(&fixtures, &block.toml, &what);
        if block.toml.contains("type = \"forward\"") {
            deliver_forward_block(&fixtures, &requires, &block.toml, &samples, &want, &what);
            continue;
        }
        if block.toml.contains("type = \"beats\"") {
            deliver_beats_block(&fixtures, &requires, &block.toml, &samples, &want, &what);
            continue;
        }
        let dest = parse_destination(&block.toml, &what);
        deliver_block(
            &fixtures,
            flavor,
            &requires,
            &block.toml,
            &dest,
            &samples,
            &want,
            &what,
        );
    }
}

/// A `type = "forward"` block, its `address` pointed at the forward
/// emulator, delivers every sample event (compared as JSON: the emulator
/// decodes MessagePack), acknowledged.
fn deliver_forward_block(
    fixtures: &Fixtures,
    requires: &Requires,
    block: &str,
    samples: &Path,
    want: &[Vec<u8>],
    what: &str,
) {
    assert!(
        !requires.client_cert,
        "{what}: the forward test does not do client certificates"
    );
    let table: toml::Table = toml::from_str(block).unwrap();
    let d = table["destination"].as_array().unwrap()[0]
        .as_table()
        .unwrap();
    assert_eq!(
        d.get("transport").and_then(|t| t.as_str()) == Some("tls"),
        requires.tls,
        "{what}: `transport` does not match the config"
    );
    assert!(
        !d.contains_key("events") && !d.contains_key("sources"),
        "{what}: every sample event must reach the collector"
    );
    let address = d["address"].as_str().expect("address");
    let old_line = format!("address = {address:?}");
    assert!(
        block.contains(&old_line),
        "{what}: expected the line {old_line}"
    );
    assert_eq!(
        d.contains_key("shared_key"),
        requires.security,
        "{what}: `shared_key` does not match the config's <security>"
    );
    let fwd = support::forward::Forward::start_with(support::forward::Options {
        tls: requires.tls.then(|| fixtures.pki.server_config()),
        security: requires
            .security
            .then(|| support::forward::Security::key(FLUENTD_SHARED_KEY)),
        ..Default::default()
    });
    let pointed = block.replace(&old_line, &format!("address = {:?}", fwd.address()));

    let setup = Setup::new();
    std::fs::copy(samples, setup.log("sample-events.ndjson")).unwrap();
    let config = setup.config(&format!(
        "{}\n{pointed}",
        setup.source("wallarm", "*.ndjson", "")
    ));
    let tailhook = Tailhook::start_with_env(&config, &fixtures.env());
    let arrived = fwd.wait_accepted(want.len(), WAIT);
    let exit = tailhook.terminate();
    assert!(
        arrived,
        "{what}: the emulator did not get every event\n{}",
        exit.output()
    );
    assert_clean_exit(&exit);
    assert_eq!(fwd.violations(), Vec::<String>::new(), "{what}");
    let key = |v: &serde_json::Value| v.to_string();
    let mut got = fwd.accepted();
    let mut expected: Vec<serde_json::Value> = want
        .iter()
        .map(|e| serde_json::from_slice(e).unwrap())
        .collect();
    got.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(got, expected, "{what}: not exactly the sample events");
    let tag = d["tag"].as_str().expect("tag");
    assert!(fwd.received().iter().all(|r| r.tag == tag), "{what}: tag");
    if requires.security {
        let handshakes = fwd.handshakes();
        assert!(
            !handshakes.is_empty() && handshakes.iter().all(|h| h.refused.is_none()),
            "{what}: the <security> handshakes: {handshakes:?}"
        );
    }
}

/// A `type = "beats"` block, its `address` pointed at the Lumberjack v2
/// emulator (TLS when the config has `ssl_enabled => true`, requiring a
/// client certificate when it has `ssl_client_authentication =>
/// "required"`), delivers every sample event, byte for byte, acknowledged.
fn deliver_beats_block(
    fixtures: &Fixtures,
    requires: &Requires,
    block: &str,
    samples: &Path,
    want: &[Vec<u8>],
    what: &str,
) {
    let table: toml::Table = toml::from_str(block).unwrap();
    let d = table["destination"].as_array().unwrap()[0]
        .as_table()
        .unwrap();
    assert_eq!(
        d.get("transport").and_then(|t| t.as_str()) == Some("tls"),
        requires.tls,
        "{what}: `transport` does not match the config"
    );
    assert_eq!(
        d.contains_key("client_cert_file"),
        requires.client_cert,
        "{what}: client_cert_file does not match the config ({requires:?})"
    );
    assert!(
        !d.contains_key("events") && !d.contains_key("sources"),
        "{what}: every sample event must reach the collector"
    );
    let address = d["address"].as_str().expect("address");
    let old_line = format!("address = {address:?}");
    assert!(
        block.contains(&old_line),
        "{what}: expected the line {old_line}"
    );
    let bt = match (requires.tls, requires.client_cert) {
        (false, false) => support::beats::Beats::start(),
        (true, false) => support::beats::Beats::start_tls(fixtures.pki.server_config()),
        (true, true) => {
            support::beats::Beats::start_tls(fixtures.server_config_requiring_client_cert())
        }
        (false, true) => panic!("{what}: client certificates without TLS"),
    };
    // The certificate is for localhost and 127.0.0.1.
    let pointed = block.replace(&old_line, &format!("address = {:?}", bt.address()));

    let setup = Setup::new();
    std::fs::copy(samples, setup.log("sample-events.ndjson")).unwrap();
    let config = setup.config(&format!(
        "{}\n{pointed}",
        setup.source("wallarm", "*.ndjson", "")
    ));
    let tailhook = Tailhook::start_with_env(&config, &fixtures.env());
    let arrived = bt.wait_accepted(want.len(), WAIT);
    let exit = tailhook.terminate();
    assert!(
        arrived,
        "{what}: the emulator did not get every event\n{}",
        exit.output()
    );
    assert_clean_exit(&exit);
    assert_eq!(bt.violations(), Vec::<String>::new(), "{what}");
    let mut got = bt.accepted();
    let mut expected = want.to_vec();
    got.sort();
    expected.sort();
    assert!(
        got == expected,
        "{what}: the emulator did not get exactly the sample events, byte for byte \
         ({} received, {} sent)",
        got.len(),
        expected.len()
    );
    let compressed = d.get("compression").and_then(|c| c.as_str()) == Some("zlib");
    assert!(
        bt.windows().iter().all(|w| w.compressed == compressed),
        "{what}: compression"
    );
}

/// `tailhook check` accepts the block as it is, with a file source.
fn check_block(fixtures: &Fixtures, block: &str, what: &str) {
    let setup = Setup::new();
    let config = setup.config(&format!(
        "{}\n{block}",
        setup.source("wallarm", "*.ndjson", "")
    ));
    let exit = run_cmd(&["check", "-c", config.to_str().unwrap()], &fixtures.env());
    assert!(
        exit.success() && exit.stderr.contains("config is valid"),
        "{what}: tailhook check failed\n{block}\n{}",
        exit.output()
    );
    // The token never appears in what check prints.
    for secret in [FLUENTD_TOKEN, LOGSTASH_PASSWORD, FLUENTD_SHARED_KEY] {
        assert!(
            !exit.stdout.contains(secret) && !exit.stderr.contains(secret),
            "{what}: check printed a secret\n{}",
            exit.output()
        );
    }
}

/// The block, pointed at an emulator, delivers every sample event with its
/// method, path and headers.
#[allow(clippy::too_many_arguments)]
fn deliver_block(
    fixtures: &Fixtures,
    flavor: Flavor,
    requires: &Requires,
    block: &str,
    dest: &Destination,
    samples: &Path,
    want: &[Vec<u8>],
    what: &str,
) {
    let (scheme, path) = split_url(&dest.url);
    assert_eq!(
        scheme == "https",
        requires.tls,
        "{what}: the URL scheme does not match the config ({requires:?})"
    );
    assert_eq!(
        dest.mtls, requires.client_cert,
        "{what}: client_cert_file does not match the config ({requires:?})"
    );
    let collector = fixtures.collector(flavor, requires);
    let new_url = format!("{scheme}://127.0.0.1:{}{path}", collector.port());
    let old_url_line = format!("url = {:?}", dest.url);
    assert!(
        block.contains(&old_url_line),
        "{what}: expected the line {old_url_line}"
    );
    let pointed = block.replace(&old_url_line, &format!("url = {new_url:?}"));

    let setup = Setup::new();
    std::fs::copy(samples, setup.log("sample-events.ndjson")).unwrap();
    let config = setup.config(&format!(
        "{}\n{pointed}",
        setup.source("wallarm", "*.ndjson", "")
    ));
    let tailhook = Tailhook::start_with_env(&config, &fixtures.env());
    let arrived = collector.wait_for_events(want.len(), WAIT);
    let exit = tailhook.terminate();
    assert!(
        arrived,
        "{what}: the collector got {} of {} events within {WAIT:?}; statuses {:?}, TLS failures {}\n{pointed}\n{}",
        collector.event_count(),
        want.len(),
        collector.statuses(),
        collector.tls_failures(),
        exit.output()
    );
    assert_clean_exit(&exit);

    let mut got = collector.events();
    let mut expected = want.to_vec();
    got.sort();
    expected.sort();
    assert!(
        got == expected,
        "{what}: the collector did not get exactly the sample events, byte for byte \
         ({} received, {} sent)",
        got.len(),
        expected.len()
    );

    let headers: Vec<(String, String)> = dest
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), fixtures.expand(v, what)))
        .collect();
    for batch in collector.batches() {
        assert_eq!(batch.method, dest.method, "{what}: method");
        assert_eq!(batch.path, path, "{what}: path");
        assert!(
            batch
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{what}: content type {:?}",
            batch.header("content-type")
        );
        if requires.origin_token {
            assert_eq!(
                batch.header("origin"),
                Some(FLUENTD_TOKEN),
                "{what}: the config answers 403 without `Origin: <FLUENTD_TOKEN>`"
            );
        }
        for (name, value) in &headers {
            assert_eq!(
                batch.header(name),
                Some(value.as_str()),
                "{what}: header {name} of a request"
            );
        }
    }
    assert!(
        collector.violations().is_empty(),
        "{what}: {:?}",
        collector.violations()
    );
    assert!(
        !setup.dead_letter(&dest.name).exists(),
        "{what}: events were dead-lettered"
    );
}
