//! The files in `examples/` are what an operator copies, so each is checked
//! the way it would be used:
//!
//! - every TOML example passes `tailhook check`, and so does the config
//!   embedded in `kubernetes.yaml`;
//! - `quickstart.toml` delivers the sample events to a Fluentd emulator;
//! - `full.toml` holds every setting tailhook accepts (the lists come from
//!   tailhook's own error messages, so a new setting fails this test until
//!   it is documented there), and each value it states as a default is the
//!   default `check` fills in;
//! - the Kubernetes manifest, the systemd unit and the Dockerfile have the
//!   parts their comments promise (probes, volumes, non-root, hardening).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::collector::fluentd;
use support::process::{bin, run_cmd, Exit, Tailhook};
use tailhook::config::{expand_env, parse_duration, parse_size};
use toml::{Table, Value};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example(name: &str) -> String {
    let path = examples().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Real certificate files for the `${VAR:-default}` paths of the examples:
/// a CA and a server certificate (for `ca_file` and TLS listeners), a CA for
/// client certificates (`client_ca_file`) and a client certificate and key
/// (`client_cert_file`, `client_key_file`).
struct ExampleEnv {
    _dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl ExampleEnv {
    fn new() -> ExampleEnv {
        let dir = tempfile::tempdir().unwrap();
        let pki = support::tls::make_pki();
        let ca = pki.write_ca(dir.path());
        let (cert, key) = pki.write_server(dir.path());
        let clients = support::tls::ClientCa::new("tailhook example client CA");
        let client_ca = clients.write(dir.path(), "client-ca.pem");
        let (client_cert, client_key) = clients.issue("tailhook");
        let client_cert_path = dir.path().join("client.pem");
        let client_key_path = dir.path().join("client-key.pem");
        std::fs::write(&client_cert_path, client_cert).unwrap();
        std::fs::write(&client_key_path, client_key).unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let vars = vec![
            ("TAILHOOK_CA_FILE".to_string(), s(&ca)),
            ("TAILHOOK_TLS_CERT".to_string(), s(&cert)),
            ("TAILHOOK_TLS_KEY".to_string(), s(&key)),
            ("TAILHOOK_CLIENT_CA_FILE".to_string(), s(&client_ca)),
            ("TAILHOOK_CLIENT_CERT".to_string(), s(&client_cert_path)),
            ("TAILHOOK_CLIENT_KEY".to_string(), s(&client_key_path)),
            // The examples have no default tokens: they refuse to start
            // without these.
            ("FLUENTD_TOKEN".to_string(), "fl-6f1d0c9e2b7a".to_string()),
            (
                "FLUENTD_SHARED_KEY".to_string(),
                "fsk-0d3b8a71e5c4".to_string(),
            ),
            ("TAILHOOK_TOKEN".to_string(), "th-93b7e1a4c2d8".to_string()),
            (
                "LOGSTASH_BASIC_AUTH".to_string(),
                "dGFpbGhvb2s6czNjcmV0".to_string(),
            ),
        ];
        ExampleEnv { _dir: dir, vars }
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn get(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// `tailhook check -c <path>` with the example environment.
fn check(path: &Path, env: &ExampleEnv) -> Exit {
    run_cmd(&["check", "-c", path.to_str().unwrap()], &env.pairs())
}

/// Writes `text` to a temporary config file and runs `tailhook check` on it.
fn check_text(text: &str, env: &ExampleEnv) -> Exit {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tailhook.toml");
    std::fs::write(&path, text).unwrap();
    check(&path, env)
}

/// The resolved config `check` printed, parsed.
fn resolved(exit: &Exit) -> Table {
    assert!(exit.success(), "{}", exit.output());
    exit.stdout
        .parse::<Table>()
        .unwrap_or_else(|e| panic!("check's output is not TOML: {e}\n{}", exit.output()))
}

#[test]
fn every_example_config_passes_check() {
    let env = ExampleEnv::new();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let exit = check(&path, &env);
            assert!(exit.success(), "{}:\n{}", path.display(), exit.output());
            assert!(exit.stderr.contains("config is valid"), "{}", exit.output());
            checked.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    for name in ["quickstart.toml", "full.toml"] {
        assert!(checked.iter().any(|c| c == name), "{name} in {checked:?}");
    }
    assert!(checked.len() >= 7, "found {checked:?}");
}

/// No example has a default token: without its variable, `check` (and so
/// `run`) refuses the config and names the variable.
#[test]
fn examples_refuse_to_start_without_their_token() {
    let env = ExampleEnv::new();
    for (name, var) in [
        ("fluentd.toml", "FLUENTD_TOKEN"),
        ("relay.toml", "TAILHOOK_TOKEN"),
        ("relay.toml", "FLUENTD_TOKEN"),
        ("logstash.toml", "LOGSTASH_BASIC_AUTH"),
        ("forward.toml", "FLUENTD_SHARED_KEY"),
        ("full.toml", "TAILHOOK_TOKEN"),
        ("two-collectors.toml", "FLUENTD_TOKEN"),
    ] {
        let without: Vec<(&str, &str)> =
            env.pairs().into_iter().filter(|(k, _)| *k != var).collect();
        let mut cmd = bin();
        cmd.args(["check", "-c", examples().join(name).to_str().unwrap()])
            .env_remove(var);
        for (k, v) in &without {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name} without {var}: {err}");
        assert!(
            err.contains(&format!("environment variable `{var}` is not set")),
            "{name} without {var}: {err}"
        );
    }
}

/// `two-collectors.toml` resolves to one destination with both URLs.
#[test]
fn two_collectors_sends_to_both_urls() {
    let env = ExampleEnv::new();
    let shown = resolved(&check(&examples().join("two-collectors.toml"), &env));
    let d = array(&shown, "destination")[0];
    let urls: Vec<&str> = d["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "https://fluentd-a.example.com:9880/wallarm.events",
            "https://fluentd-b.example.com:9880/wallarm.events"
        ]
    );
    assert!(!d.contains_key("url"));
}

#[test]
fn quickstart_and_full_have_no_warnings() {
    let env = ExampleEnv::new();
    for name in ["quickstart.toml", "full.toml"] {
        let exit = check(&examples().join(name), &env);
        assert!(exit.success(), "{name}:\n{}", exit.output());
        assert!(
            !exit.stderr.contains("warning"),
            "{name}:\n{}",
            exit.output()
        );
    }
}

#[test]
fn quickstart_delivers_the_sample_events_to_fluentd() {
    let collector = fluentd();
    let data = tempfile::tempdir().unwrap();
    let text = example("quickstart.toml");
    let fluentd = "http://127.0.0.1:9880/wallarm.events";
    assert!(text.contains(fluentd), "quickstart.toml posts to {fluentd}");
    // The same config, pointed at the emulator's port, with metrics on a
    // free port so the test never collides with anything on 9598.
    let text = text.replace(fluentd, &collector.url("/wallarm.events"))
        + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let config = data.path().join("quickstart.toml");
    std::fs::write(&config, text).unwrap();
    let samples = examples().join("sample-events.ndjson");
    let data_dir = data.path().join("data");

    let mut want = Vec::new();
    for line in example("sample-events.ndjson").lines() {
        match serde_json::from_str::<serde_json::Value>(line).unwrap() {
            serde_json::Value::Array(items) => want.extend(items),
            other => want.push(other),
        }
    }
    let tailhook = Tailhook::start_with_env(
        &config,
        &[
            ("TAILHOOK_DATA_DIR", data_dir.to_str().unwrap()),
            ("TAILHOOK_INCLUDE", samples.to_str().unwrap()),
        ],
    );
    let arrived = collector.wait_for_events(want.len(), Duration::from_secs(30));
    let exit = tailhook.terminate();
    assert!(
        arrived,
        "{} of {} events arrived\n{}",
        collector.event_count(),
        want.len(),
        exit.output()
    );
    assert!(exit.success(), "{}", exit.output());
    let canon = |v: &[serde_json::Value]| {
        let mut s: Vec<String> = v.iter().map(|e| e.to_string()).collect();
        s.sort();
        s
    };
    assert_eq!(canon(&collector.events_json()), canon(&want));
    for batch in collector.batches() {
        assert_eq!(
            (batch.method.as_str(), batch.path.as_str()),
            ("POST", "/wallarm.events")
        );
    }
    assert!(
        collector.violations().is_empty(),
        "{:?}",
        collector.violations()
    );
    assert!(data_dir.join("checkpoints").join("fluentd.json").exists());
}

// ---- full.toml ----------------------------------------------------------------

/// A small valid config that the probes below break in one place each.
const BASE: &str = r#"
[[source]]
name = "s"
type = "file"
include = ["/nonexistent/*.ndjson"]

[[destination]]
name = "d"
url = "http://127.0.0.1:9/"
"#;

/// Runs `check` on `text`, which must fail, and returns its stderr.
fn check_error(text: &str, env: &ExampleEnv) -> String {
    let exit = check_text(text, env);
    assert!(!exit.success(), "expected an error for:\n{text}");
    exit.stderr
}

/// The settings a table takes, from tailhook's error for an unknown one:
/// "unknown field `zzz`, expected one of `a`, `b`" (or "expected `a` or `b`").
fn accepted(text: &str, env: &ExampleEnv) -> BTreeSet<String> {
    let err = check_error(text, env);
    let line = err
        .lines()
        .find(|l| l.contains("unknown field `zzz`"))
        .unwrap_or_else(|| panic!("no unknown-field error:\n{err}"));
    let list = &line[line.find("expected").expect("expected …")..];
    let keys: BTreeSet<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect();
    assert!(!keys.is_empty(), "{line}");
    keys
}

/// The settings of one source type, from tailhook's error for a setting of
/// another type: "… (its settings are listen, tls, …)".
fn settings_of_type(kind: &str, env: &ExampleEnv) -> BTreeSet<String> {
    let wrong = if kind == "file" {
        "listen = \"127.0.0.1:1\""
    } else {
        "include = [\"x\"]"
    };
    let text = format!(
        "[[source]]\nname = \"s\"\ntype = \"{kind}\"\n{wrong}\n\n[[destination]]\nname = \"d\"\nurl = \"http://127.0.0.1:9/\"\n"
    );
    let err = check_error(&text, env);
    let start = err
        .find("its settings are ")
        .unwrap_or_else(|| panic!("{kind}: no list of settings in:\n{err}"))
        + "its settings are ".len();
    let end = start + err[start..].find(')').unwrap();
    err[start..end].split(", ").map(String::from).collect()
}

/// The event kinds tailhook knows, from its error for an unknown one.
fn event_kinds(env: &ExampleEnv) -> BTreeSet<String> {
    let err = check_error(&format!("{BASE}events = [\"zzz\"]\n"), env);
    let start = err.find("expected one of ").expect("list of kinds") + "expected one of ".len();
    let end = start + err[start..].find(", a risk").expect("end of the kinds");
    err[start..end].split(", ").map(String::from).collect()
}

fn keys(t: &Table) -> BTreeSet<String> {
    t.keys().cloned().collect()
}

fn table<'a>(t: &'a Table, key: &str) -> &'a Table {
    t.get(key)
        .and_then(Value::as_table)
        .unwrap_or_else(|| panic!("no table `{key}`"))
}

fn array<'a>(t: &'a Table, key: &str) -> Vec<&'a Table> {
    t.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array `{key}`"))
        .iter()
        .map(|v| v.as_table().expect("array of tables"))
        .collect()
}

/// full.toml as tailhook reads it: `${VAR:-default}` expanded with `env`.
fn full_expanded(env: &ExampleEnv) -> Table {
    let text = expand_env(&example("full.toml"), |k| {
        env.get(k).or_else(|| std::env::var(k).ok())
    })
    .expect("full.toml expands");
    text.parse().expect("full.toml is TOML")
}

#[test]
fn full_toml_states_every_setting() {
    let env = ExampleEnv::new();
    let full = full_expanded(&env);
    let text = example("full.toml");

    assert_eq!(keys(&full), accepted(&format!("zzz = 1\n{BASE}"), &env));
    assert_eq!(
        keys(table(&full, "spool")),
        accepted(&format!("{BASE}[spool]\nzzz = 1\n"), &env)
    );
    assert_eq!(
        keys(table(&full, "metrics")),
        accepted(&format!("{BASE}[metrics]\nzzz = 1\n"), &env)
    );

    // A source of every type (stdin is shown commented out, see below), each
    // with every setting of its type.
    let sources = array(&full, "source");
    let tls_keys = accepted(
        &format!(
            "[[source]]\nname = \"t\"\ntype = \"tcp\"\nlisten = \"127.0.0.1:1\"\n\
             tls = {{ cert_file = \"a\", key_file = \"b\", zzz = 1 }}\n{BASE}"
        ),
        &env,
    );
    for kind in ["file", "tcp", "unix", "udp", "http"] {
        let of_kind: Vec<&&Table> = sources
            .iter()
            .filter(|s| s.get("type").and_then(Value::as_str) == Some(kind))
            .collect();
        assert_eq!(of_kind.len(), 1, "one {kind} source in full.toml");
        let mut want = settings_of_type(kind, &env);
        want.extend(["name".to_string(), "type".to_string()]);
        assert_eq!(keys(of_kind[0]), want, "settings of the {kind} source");
        if let Some(tls) = of_kind[0].get("tls") {
            assert_eq!(
                keys(tls.as_table().unwrap()),
                tls_keys,
                "{kind} source's tls"
            );
        }
    }
    let with_tls = sources.iter().filter(|s| s.contains_key("tls")).count();
    assert_eq!(with_tls, 2, "the tcp and http sources show tls");
    assert!(!sources.iter().any(|s| s["type"].as_str() == Some("stdin")));
    assert!(
        text.contains("# type = \"stdin\""),
        "stdin is shown commented out"
    );
    for setting in settings_of_type("stdin", &env) {
        assert!(
            text.contains(&format!("# {setting} = ")),
            "the commented stdin source shows {setting}"
        );
    }
    // Every source setting of any type appears somewhere.
    let all_source_keys = accepted(
        &BASE.replace("type = \"file\"", "type = \"file\"\nzzz = 1"),
        &env,
    );
    let shown: BTreeSet<String> = sources.iter().flat_map(|s| keys(s)).collect();
    assert_eq!(shown, all_source_keys);

    let destinations = array(&full, "destination");
    assert_eq!(destinations.len(), 1);
    let d = destinations[0];
    // The settings only a forward destination takes are in the commented
    // forward block at the end; the HTTP block holds all the others.
    let all_destination_keys = accepted(&format!("{BASE}zzz = 1\n"), &env);
    for setting in FORWARD_ONLY {
        assert!(all_destination_keys.contains(*setting), "{setting}");
        assert!(
            text.contains(&format!("# {setting} = ")),
            "the commented forward destination shows {setting}"
        );
    }
    // `urls` replaces `url`: it is shown commented out beside it.
    for setting in INSTEAD_OF_URL {
        assert!(all_destination_keys.contains(*setting), "{setting}");
        assert!(
            text.contains(&format!("# {setting} = ")),
            "the HTTP destination shows {setting} commented out"
        );
    }
    let http_keys: BTreeSet<String> = all_destination_keys
        .into_iter()
        .filter(|k| !FORWARD_ONLY.contains(&k.as_str()) && !INSTEAD_OF_URL.contains(&k.as_str()))
        .collect();
    assert_eq!(keys(d), http_keys);
    assert_eq!(
        keys(table(d, "batch")),
        accepted(&format!("{BASE}[destination.batch]\nzzz = 1\n"), &env)
    );
    assert_eq!(
        keys(table(d, "retry")),
        accepted(&format!("{BASE}[destination.retry]\nzzz = 1\n"), &env)
    );
    assert_eq!(
        keys(table(d, "tls")),
        accepted(&format!("{BASE}[destination.tls]\nzzz = 1\n"), &env)
    );
    // `events` says "every kind, as here": it lists every kind there is.
    let events: BTreeSet<String> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, event_kinds(&env));
}

/// Destination settings of `type = "forward"` only.
const FORWARD_ONLY: &[&str] = &[
    "address",
    "addresses",
    "tag",
    "time_key",
    "ack_timeout",
    "transport",
    "shared_key",
    "self_hostname",
    "username",
    "password",
];

/// Destination settings that take the place of `url` (one or the other).
const INSTEAD_OF_URL: &[&str] = &["urls"];

/// Whether a value as written in full.toml is the value `check` printed:
/// sizes are printed in bytes, durations normalised, secrets redacted.
fn same(path: &str, stated: &Value, shown: &Value) -> bool {
    match (stated, shown) {
        (Value::String(s), Value::String(r)) => {
            s == r
                || (r == "<redacted>"
                    && (path.contains(".headers.") || path.ends_with("auth_value")))
                || matches!((parse_duration(s), parse_duration(r)), (Ok(a), Ok(b)) if a == b)
        }
        // Sizes, and rates (`"1KiB/s"`), are printed in bytes.
        (Value::String(s), Value::Integer(n)) => {
            parse_size(s.trim_end_matches("/s")).ok() == u64::try_from(*n).ok()
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(path, x, y))
        }
        (Value::Table(a), Value::Table(b)) => {
            keys(a) == keys(b)
                && a.iter()
                    .all(|(k, v)| same(&format!("{path}.{k}"), v, &b[k.as_str()]))
        }
        (a, b) => a == b,
    }
}

/// Every setting in `t` as (path, value); arrays of tables are walked into
/// (`source.2.listen`), arrays of values are values.
fn leaves(t: &Table) -> Vec<(String, Value)> {
    fn walk(prefix: &str, t: &Table, out: &mut Vec<(String, Value)>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Table(sub) if k != "headers" && k != "tls" => walk(&path, sub, out),
                Value::Array(items) if items.iter().all(Value::is_table) && !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        walk(&format!("{path}.{i}"), item.as_table().unwrap(), out);
                    }
                }
                _ => out.push((path, v.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", t, &mut out);
    out
}

fn lookup<'a>(t: &'a Table, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = match v {
            Value::Table(t) => t.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Settings of a source or destination that full.toml shows with an example
/// value rather than a default: required ones and those without a default.
const NOT_DEFAULTS: &[&str] = &[
    "name", "type", "include", "listen", "path", "url", "headers",
];

#[test]
fn full_toml_values_are_what_check_prints_and_the_defaults() {
    let env = ExampleEnv::new();
    let full = full_expanded(&env);

    // 1. Each value in full.toml is the value check resolves it to.
    let shown = resolved(&check(&examples().join("full.toml"), &env));
    for (path, stated) in leaves(&full) {
        let got = lookup(&shown, &path)
            .unwrap_or_else(|| panic!("check does not print `{path}`:\n{shown}"));
        assert!(
            same(&path, &stated, got),
            "full.toml says {path} = {stated}, check prints {got}"
        );
    }

    // 2. The same sources and destination with only their required settings:
    // every default check fills in is the value full.toml states.
    let mut minimal = Table::new();
    let keep = |t: &Table, which: &[&str]| -> Value {
        Value::Table(
            t.iter()
                .filter(|(k, _)| which.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    minimal.insert(
        "source".into(),
        Value::Array(
            array(&full, "source")
                .into_iter()
                .map(|s| keep(s, &["name", "type", "include", "listen", "path"]))
                .map(|mut s| {
                    // An http source's `path` is optional: leave it out too.
                    let t = s.as_table_mut().unwrap();
                    if t["type"].as_str() == Some("http") {
                        t.remove("path");
                    }
                    s
                })
                .collect(),
        ),
    );
    minimal.insert(
        "destination".into(),
        Value::Array(
            array(&full, "destination")
                .into_iter()
                .map(|d| keep(d, &["name", "url"]))
                .collect(),
        ),
    );
    let defaults = resolved(&check_text(&toml::to_string(&minimal).unwrap(), &env));
    let mut compared = 0;
    for (path, default) in leaves(&defaults) {
        let last = path.rsplit('.').next().unwrap();
        let in_block = path.starts_with("source.") || path.starts_with("destination.");
        if in_block && NOT_DEFAULTS.contains(&last) {
            continue;
        }
        let stated = lookup(&full, &path)
            .unwrap_or_else(|| panic!("full.toml does not state `{path}` (default {default})"));
        assert!(
            same(&path, stated, &default),
            "full.toml says {path} = {stated}, but the default is {default}"
        );
        compared += 1;
    }
    // data_dir, shutdown_timeout, spool.max_bytes, metrics (2); the
    // sources' 15 and the destination's 12.
    assert!(compared >= 32, "compared only {compared} defaults");
    // `events` defaults to every kind, which check prints as a comment.
    assert!(
        defaults.to_string().contains("# events: every kind")
            || !defaults["destination"][0]
                .as_table()
                .unwrap()
                .contains_key("events")
    );
}

// ---- kubernetes.yaml ----------------------------------------------------------

/// The indentation of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The lines nested under the first line whose trimmed text is `key_line`
/// (everything more indented than it, up to the next line that is not),
/// dedented. For `key: |` this is a YAML literal block scalar's content.
fn yaml_block(text: &str, key_line: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == key_line)
        .unwrap_or_else(|| panic!("no line `{key_line}`"));
    let base = indent(lines[at]);
    let body: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .copied()
        .collect();
    let inner = body
        .iter()
        .find(|l| !l.trim().is_empty())
        .map_or(0, |l| indent(l));
    let mut out: String = body
        .iter()
        .map(|l| {
            if indent(l) >= inner {
                &l[inner..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Clip chomping: one final newline.
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[test]
fn kubernetes_manifest_embeds_a_valid_config_and_runs_it_as_promised() {
    let env = ExampleEnv::new();
    let manifest = example("kubernetes.yaml");
    let config = yaml_block(&manifest, "tailhook.toml: |");
    assert!(config.contains("[[destination]]"), "{config}");

    // The embedded config passes check with the token from the environment …
    let mut with_token = env.pairs();
    with_token.push(("FLUENTD_TOKEN", "s3cret-token"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tailhook.toml");
    std::fs::write(&path, &config).unwrap();
    let exit = run_cmd(&["check", "-c", path.to_str().unwrap()], &with_token);
    let shown = resolved(&exit);
    assert!(!exit.stdout.contains("s3cret-token"), "{}", exit.output());
    assert!(!exit.stderr.contains("warning"), "{}", exit.output());
    assert_eq!(shown["metrics"]["listen"].as_str(), Some("0.0.0.0:9598"));
    let data_dir = shown["data_dir"].as_str().unwrap().to_string();
    let include = shown["source"][0]["include"][0]
        .as_str()
        .unwrap()
        .to_string();
    let shutdown = parse_duration(shown["shutdown_timeout"].as_str().unwrap()).unwrap();
    // … and names it when the Secret's variable is missing.
    let out = bin()
        .args(["check", "-c", path.to_str().unwrap()])
        .env_remove("FLUENTD_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("FLUENTD_TOKEN"),
        "{err}"
    );

    let has = |block: &str, line: &str| block.lines().any(|l| l.trim() == line);
    // The sidecar: token from the Secret, probes on the metrics port.
    let tailhook = yaml_block(&manifest, "- name: tailhook");
    for line in [
        "- name: FLUENTD_TOKEN",
        "secretKeyRef:",
        "containerPort: 9598",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "args: [\"run\", \"-c\", \"/etc/tailhook/tailhook.toml\", \"--log-format\", \"json\"]",
        &format!("mountPath: {data_dir}"),
        "mountPath: /etc/tailhook",
    ] {
        assert!(
            has(&tailhook, line),
            "tailhook container lacks `{line}`:\n{tailhook}"
        );
    }
    let liveness = yaml_block(&tailhook, "livenessProbe:");
    assert!(
        has(&liveness, "path: /health") && has(&liveness, "port: metrics"),
        "{liveness}"
    );
    let readiness = yaml_block(&tailhook, "readinessProbe:");
    assert!(
        has(&readiness, "path: /ready") && has(&readiness, "port: metrics"),
        "{readiness}"
    );
    assert!(has(&tailhook, "- name: metrics"), "the port named metrics");
    let resources = yaml_block(&tailhook, "resources:");
    for part in ["requests:", "limits:"] {
        let b = yaml_block(&resources, part);
        assert!(b.contains("cpu:") && b.contains("memory:"), "{part} {b}");
    }
    // The log volume is shared with the application and read-only here.
    let log_dir = Path::new(&include)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mounts = yaml_block(&tailhook, "volumeMounts:");
    let logs_mount = mounts
        .split("- name: ")
        .find(|m| m.starts_with("logs"))
        .expect("logs mount");
    assert!(
        has(logs_mount, &format!("mountPath: {log_dir}")),
        "{logs_mount}"
    );
    assert!(has(logs_mount, "readOnly: true"), "{logs_mount}");
    let app = yaml_block(&manifest, "- name: app");
    assert!(has(&app, &format!("mountPath: {log_dir}")), "{app}");
    let volumes = yaml_block(&manifest, "volumes:");
    assert!(
        has(&yaml_block(&volumes, "- name: logs"), "emptyDir:"),
        "{volumes}"
    );

    // Scraping, a claim per pod for data_dir, a stop that outlasts shutdown_timeout.
    let annotations = yaml_block(&manifest, "annotations:");
    for line in [
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/port: \"9598\"",
        "prometheus.io/path: \"/metrics\"",
    ] {
        assert!(has(&annotations, line), "{annotations}");
    }
    assert!(has(&manifest, "kind: StatefulSet"));
    let claims = yaml_block(&manifest, "volumeClaimTemplates:");
    assert!(
        claims.contains("name: data") && claims.contains("ReadWriteOnce"),
        "{claims}"
    );
    let grace: u64 = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .expect("terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(
        Duration::from_secs(grace) > shutdown,
        "{grace}s vs {shutdown:?}"
    );
    let security = yaml_block(&manifest, "securityContext:");
    assert!(has(&security, "runAsNonRoot: true") && has(&security, "fsGroup: 65532"));
}

// ---- tailhook.service -----------------------------------------------------------

/// `(section, key, value)` for each setting of a unit file, in order.
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn systemd_unit_restarts_keeps_state_reloads_and_is_hardened() {
    let text = example("tailhook.service");
    let settings = unit_settings(&text);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        match get(key).as_slice() {
            [v] => v,
            other => panic!("[Service] {key}: {other:?}"),
        }
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/tailhook run -c /etc/tailhook/tailhook.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("EnvironmentFile").ends_with("/etc/tailhook/tailhook.env"));
    // StateDirectory=tailhook is /var/lib/tailhook, the default data_dir.
    assert_eq!(one("StateDirectory"), "tailhook");
    let defaults = resolved(&check_text(BASE, &ExampleEnv::new()));
    assert_eq!(defaults["data_dir"].as_str(), Some("/var/lib/tailhook"));
    let shutdown = parse_duration(defaults["shutdown_timeout"].as_str().unwrap()).unwrap();
    let stop = parse_duration(one("TimeoutStopSec")).unwrap();
    assert!(
        stop > shutdown,
        "TimeoutStopSec {stop:?} vs shutdown_timeout {shutdown:?}"
    );
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("ReadOnlyPaths", "-/var/log/wallarm"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(key), value, "[Service] {key}");
    }
    assert!(settings
        .iter()
        .any(|(s, k, v)| s == "Install" && k == "WantedBy" && v == "multi-user.target"));

    // Where systemd-analyze is installed, it verifies the unit (with
    // ExecStart pointing at this build, since verify wants the binary).
    let have_analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if have_analyze && Path::new("/bin/kill").exists() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("tailhook.service");
        std::fs::write(
            &unit,
            text.replace("/usr/local/bin/tailhook", env!("CARGO_BIN_EXE_tailhook")),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        // It exits 0 on warnings (an unknown key is ignored): any message
        // about this unit fails the test too.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !said.contains("tailhook.service"),
            "systemd-analyze verify:\n{said}"
        );
    } else {
        eprintln!("systemd-analyze not installed: the unit's syntax was not verified");
    }
}

// ---- Dockerfile -------------------------------------------------------------------

/// The newest `rust-version` among this crate and the packages Cargo.lock
/// builds for it (normal and build dependencies, on Linux), with the package
/// that sets it.
fn newest_rust_version_built() -> (String, String) {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &triple])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![meta["resolve"]["root"].as_str().unwrap().to_string()];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in node(&id)["deps"].as_array().unwrap() {
            let built = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"] != "dev");
            if built {
                stack.push(dep["pkg"].as_str().unwrap().to_string());
            }
        }
    }
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|x| x.parse().unwrap()).collect() };
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| seen.contains(p["id"].as_str().unwrap()))
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((
                v.to_string(),
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap(),
                    p["version"].as_str().unwrap()
                ),
            ))
        })
        .max_by_key(|(v, _)| parse(v))
        .expect("rust-version is set")
}

/// `(instruction, arguments)` for each instruction, continuation lines joined.
fn dockerfile(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(t.trim_end_matches('\\'));
        current.push(' ');
        if !t.ends_with('\\') {
            let (ins, args) = current
                .trim()
                .split_once(' ')
                .unwrap_or((current.trim(), ""));
            out.push((ins.to_uppercase(), args.trim().to_string()));
            current.clear();
        }
    }
    out
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_copies_what_the_build_needs() {
    let text = example("Dockerfile");
    let ins = dockerfile(&text);
    let froms: Vec<usize> = (0..ins.len()).filter(|&i| ins[i].0 == "FROM").collect();
    assert!(froms.len() >= 2, "multi-stage: {ins:?}");

    // Builder: a Rust at least as new as the newest rust-version among the
    // crate and what Cargo.lock builds for it on Linux, or `--locked` fails.
    let builder = &ins[froms[0]].1;
    let image = builder.split_whitespace().next().unwrap();
    let version = image
        .strip_prefix("rust:")
        .and_then(|v| v.split('-').next())
        .unwrap_or_else(|| panic!("builder is not rust:<version>: {builder}"));
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|x| x.parse().unwrap()).collect() };
    let (needed, by) = newest_rust_version_built();
    assert!(
        parse(version) >= parse(&needed),
        "builder rust {version} is older than the rust-version {needed} of {by}"
    );
    let build_stage = &ins[froms[0]..froms[1]];
    assert!(build_stage
        .iter()
        .any(|(i, a)| i == "RUN" && a.contains("cargo build --release --locked")));

    // Runtime: non-root, port 9598, tailhook as the entrypoint.
    let runtime = &ins[*froms.last().unwrap()..];
    let user = runtime
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, a)| a.clone())
        .expect("a USER in the final stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "USER {user}");
    let arg = |name: &str| -> Vec<String> {
        runtime
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.clone())
            .collect()
    };
    assert_eq!(arg("EXPOSE"), ["9598"]);
    let entrypoint = arg("ENTRYPOINT");
    assert!(
        entrypoint.len() == 1 && entrypoint[0].contains("tailhook\"]"),
        "{entrypoint:?}"
    );
    assert_eq!(
        arg("CMD"),
        ["[\"run\", \"-c\", \"/etc/tailhook/tailhook.toml\"]"]
    );

    // The context: what the build stage COPYs exists and is let through by
    // examples/Dockerfile.dockerignore.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ignore = example("Dockerfile.dockerignore");
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "an allow-list");
    let mut copied = Vec::new();
    for (_, args) in build_stage.iter().filter(|(i, _)| i == "COPY") {
        let words: Vec<&str> = args.split_whitespace().collect();
        for src in words[..words.len() - 1]
            .iter()
            .filter(|w| !w.starts_with("--"))
        {
            let src = src.trim_end_matches('/');
            assert!(root.join(src).exists(), "COPY {src}: not in the repository");
            assert!(
                allowed.contains(&src),
                "COPY {src}: left out by the dockerignore"
            );
            copied.push(src.to_string());
        }
    }
    // Everything the crate embeds from outside src/ is copied: the sample
    // events of `tailhook demo`, today.
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let code = std::fs::read_to_string(&path).unwrap_or_default();
            for part in code.split("include_").skip(1) {
                let Some(rest) = part
                    .strip_prefix("str!(\"")
                    .or_else(|| part.strip_prefix("bytes!(\""))
                else {
                    continue;
                };
                let rel = &rest[..rest.find('"').unwrap()];
                let target = path.parent().unwrap().join(rel);
                let target = target
                    .canonicalize()
                    .unwrap_or_else(|e| panic!("{}: {rel}: {e}", path.display()));
                let inside = target.strip_prefix(root.canonicalize().unwrap()).unwrap();
                let inside = inside.to_str().unwrap();
                assert!(
                    copied
                        .iter()
                        .any(|c| inside == c || inside.starts_with(&format!("{c}/"))),
                    "{} embeds {inside}, which the Dockerfile does not COPY",
                    path.display()
                );
            }
        }
    }
}
