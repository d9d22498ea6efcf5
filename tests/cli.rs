//! The command line as an operator meets it: `--version`, `--help`,
//! `check` (resolved config, redaction, errors with file:line:col), `test`
//! (the reference test message, failures in words), `demo`, and `run`'s exit
//! codes.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::check::dead_port;
use support::collector::{fluentd, Collector, Options};
use support::process::{bin, run_cmd, Exit, Tailhook, EXIT_TIMEOUT};
use support::setup::{self, Setup};

/// The longest any test waits for something to happen.
const WAIT: Duration = Duration::from_secs(30);

/// The test message of the reference page, as one JSON array, byte for byte.
const TEST_BODY: &str = r#"[{"title":"Test","source":"Wallarm","type":"Info","domain":"example.com","threat":"Medium","link":"https://my.wallarm.com/object/555","summary":"[Test Message] New vulnerability identified"}]"#;

/// The environment variable holding the secret header value.
const TOKEN_VAR: &str = "TAILHOOK_CLI_TEST_TOKEN";
/// Its value: must never be printed.
const TOKEN: &str = "tok-7f3a9c1e5b-secret";

// ---- helpers ----------------------------------------------------------------

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A config with a known layout (line numbers matter):
///
/// ```text
///  1 data_dir = "..."
///  2
///  3 [[source]]
///  4 name = "wallarm"
///  5 type = "file"
///  6 include = ["<logs>/*.ndjson"]
///  7 <source_extra>
///  . [[destination]]
///  . name = "fluentd"
///  . url = "<url>"
///  . headers = { Authorization = "Bearer ${TAILHOOK_CLI_TEST_TOKEN}" }
///  . <dest_extra>
/// ```
fn config_text(setup: &Setup, url: &str, source_extra: &str, dest_extra: &str) -> String {
    format!(
        "data_dir = {data:?}\n\n[[source]]\nname = \"wallarm\"\ntype = \"file\"\ninclude = [{glob:?}]\n{source_extra}\n[[destination]]\nname = \"fluentd\"\nurl = {url:?}\nheaders = {{ Authorization = \"Bearer ${{{TOKEN_VAR}}}\" }}\n{dest_extra}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        data = path_str(&setup.data),
        glob = path_str(&setup.logs.join("*.ndjson")),
    )
}

fn write_config(setup: &Setup, text: &str) -> PathBuf {
    let path = setup.dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
        + 1
}

/// `tailhook <args>` with the token variable set.
fn tailhook(args: &[&str]) -> Exit {
    run_cmd(args, &[(TOKEN_VAR, TOKEN)])
}

fn check(config: &Path) -> Exit {
    tailhook(&["check", "-c", &path_str(config)])
}

fn assert_no_secret(exit: &Exit) {
    assert!(
        !exit.stdout.contains(TOKEN) && !exit.stderr.contains(TOKEN),
        "the secret header value was printed\n{}",
        exit.output()
    );
}

/// The lines of stdout, each a `tailhook test` report.
fn report_lines(exit: &Exit) -> Vec<&str> {
    exit.stdout.lines().filter(|l| !l.is_empty()).collect()
}

// ---- 1. --version, --help ---------------------------------------------------

#[test]
fn version_is_printed() {
    for flag in ["--version", "-V"] {
        let exit = run_cmd(&[flag], &[]);
        assert_eq!(exit.code, Some(0), "{}", exit.output());
        assert_eq!(exit.stdout, "tailhook 0.1.0\n");
        assert_eq!(
            exit.stdout,
            format!("tailhook {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn help_lists_exactly_the_commands_that_are_built() {
    let exit = run_cmd(&["--help"], &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let commands: Vec<&str> = exit
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "run",
            "check",
            "test",
            "status",
            "dead-letter",
            "demo",
            "help"
        ],
        "{}",
        exit.output()
    );
    assert!(exit.stdout.contains("--version"), "{}", exit.output());
    // Each listed command exists and has its own help.
    for cmd in ["run", "check", "test", "status", "demo"] {
        let exit = run_cmd(&[cmd, "--help"], &[]);
        assert_eq!(exit.code, Some(0), "{cmd} --help\n{}", exit.output());
        assert!(
            exit.stdout.contains(&format!("Usage: tailhook {cmd}")),
            "{}",
            exit.output()
        );
    }
    let test_help = run_cmd(&["test", "--help"], &[]);
    assert!(
        test_help.stdout.contains("--destination <NAME>")
            && test_help.stdout.contains("--config <FILE>"),
        "{}",
        test_help.output()
    );
}

#[test]
fn usage_errors_exit_2_with_usage() {
    // No command.
    let exit = run_cmd(&[], &[]);
    assert_eq!(exit.code, Some(2), "{}", exit.output());
    assert!(exit.stderr.contains("Usage: tailhook"), "{}", exit.output());
    // A command that is not built.
    let exit = run_cmd(&["reload"], &[]);
    assert_eq!(exit.code, Some(2), "{}", exit.output());
    assert!(
        exit.stderr.contains("unrecognized subcommand 'reload'"),
        "{}",
        exit.output()
    );
    let exit = run_cmd(&["dead-letter", "resend"], &[]);
    assert_eq!(exit.code, Some(2), "{}", exit.output());
    assert!(exit.stderr.contains("--config <FILE>"), "{}", exit.output());
    // A command without its config.
    for cmd in ["run", "check", "test"] {
        let exit = run_cmd(&[cmd], &[]);
        assert_eq!(exit.code, Some(2), "{cmd}\n{}", exit.output());
        assert!(
            exit.stderr.contains("--config <FILE>"),
            "{cmd}\n{}",
            exit.output()
        );
    }
}

// ---- 2. check ---------------------------------------------------------------

#[test]
fn check_prints_the_resolved_config_with_defaults_and_no_secret() {
    let setup = Setup::new();
    let text = config_text(&setup, "http://127.0.0.1:9880/wallarm.events", "", "")
        .replace("}\" }", "}\", X-Tenant = \"acme-tenant-value\" }");
    assert!(text.contains("X-Tenant"), "{text}");
    let config = write_config(&setup, &text);

    let exit = check(&config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stderr.contains(&format!(
            "{}: config is valid (1 source(s), 1 destination(s))",
            path_str(&config)
        )),
        "{}",
        exit.output()
    );
    assert_no_secret(&exit);
    assert!(
        !exit.stdout.contains("acme-tenant-value") && !exit.stderr.contains("acme-tenant-value"),
        "a header value was printed\n{}",
        exit.output()
    );

    let resolved: toml::Table = toml::from_str(&exit.stdout)
        .unwrap_or_else(|e| panic!("stdout is not TOML: {e}\n{}", exit.output()));
    let dest = &resolved["destination"].as_array().expect("[[destination]]")[0];
    let s = |v: &toml::Value, k: &str| -> String {
        v.get(k)
            .unwrap_or_else(|| panic!("no `{k}` in {v}"))
            .as_str()
            .unwrap_or_else(|| panic!("`{k}` is not a string in {v}"))
            .to_string()
    };
    let i = |v: &toml::Value, k: &str| -> i64 {
        v.get(k)
            .unwrap_or_else(|| panic!("no `{k}` in {v}"))
            .as_integer()
            .unwrap_or_else(|| panic!("`{k}` is not an integer in {v}"))
    };
    assert_eq!(s(dest, "name"), "fluentd");
    assert_eq!(s(dest, "url"), "http://127.0.0.1:9880/wallarm.events");
    assert_eq!(s(dest, "method"), "POST");
    assert_eq!(s(dest, "request_timeout"), "15s");
    assert_eq!(s(dest, "connect_timeout"), "20s");
    assert_eq!(dest["verify_certificate"].as_bool(), Some(true));
    assert_eq!(i(dest, "concurrency"), 2);
    let batch = &dest["batch"];
    assert_eq!(i(batch, "max_events"), 500);
    assert_eq!(i(batch, "max_bytes"), 1_048_576);
    assert_eq!(s(batch, "timeout"), "1s");
    assert_eq!(i(&dest["dead_letter"], "max_bytes"), 1 << 30);
    let headers = dest["headers"].as_table().expect("headers table");
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert_eq!(headers["Authorization"].as_str(), Some("<redacted>"));
    assert_eq!(headers["X-Tenant"].as_str(), Some("<redacted>"));
    let source = &resolved["source"].as_array().expect("[[source]]")[0];
    assert_eq!(s(source, "read_from"), "beginning");
    assert_eq!(
        resolved["data_dir"].as_str(),
        Some(path_str(&setup.data).as_str())
    );

    // What check prints is a config that check accepts and prints the same.
    let again = setup.dir.path().join("resolved.toml");
    std::fs::write(&again, &exit.stdout).unwrap();
    let second = check(&again);
    assert_eq!(second.code, Some(0), "{}", second.output());
    assert_eq!(second.stdout, exit.stdout);
}

#[test]
fn check_warns_about_an_empty_events_list() {
    let setup = Setup::new();
    let config = write_config(
        &setup,
        &config_text(&setup, "http://127.0.0.1:9880/e", "", "events = []"),
    );
    let exit = check(&config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stderr
            .contains("warning: destination `fluentd` has an empty `events` list"),
        "{}",
        exit.output()
    );
    assert!(exit.stdout.contains("events = []"), "{}", exit.output());
}

#[test]
fn check_rejects_an_unknown_key_with_file_line_and_key() {
    let setup = Setup::new();
    // `retries` on line 9, the first line of the destination block.
    let text = config_text(&setup, "http://127.0.0.1:9880/e", "", "")
        .replace("[[destination]]\n", "[[destination]]\nretries = 3\n");
    assert_eq!(line_of(&text, "retries"), 9, "{text}");
    let config = write_config(&setup, &text);
    let exit = check(&config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr.contains(&format!(
            "{}:9:1: unknown field `retries`",
            path_str(&config)
        )),
        "{}",
        exit.output()
    );
    assert_eq!(exit.stdout, "", "nothing on stdout for an invalid config");
    assert_no_secret(&exit);

    // The same in a source block, on line 7.
    let text = config_text(&setup, "http://127.0.0.1:9880/e", "follow = true", "");
    let config = write_config(&setup, &text);
    let exit = check(&config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr.contains(&format!(
            "{}:7:1: unknown field `follow`",
            path_str(&config)
        )),
        "{}",
        exit.output()
    );
}

#[test]
fn check_rejects_bad_values_naming_the_value_and_the_line() {
    let setup = Setup::new();
    let url = "http://127.0.0.1:9880/e";
    // (source_extra, dest_extra, the bad line's text, words in the message)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "read_from = \"middle\"",
            "",
            "read_from",
            &["unknown variant `middle`", "`beginning` or `end`"],
        ),
        (
            "",
            "request_timeout = \"soon\"",
            "request_timeout",
            &["invalid duration `soon`"],
        ),
        (
            "",
            "events = [\"hits\"]",
            "events",
            &["unknown event kind `hits`"],
        ),
        (
            "",
            "method = \"GET\"",
            "method",
            &["method `GET` is not supported", "POST or PUT"],
        ),
        (
            "",
            "concurrency = 0",
            "concurrency",
            &["must be at least 1, not 0"],
        ),
        (
            "",
            "[destination.dead_letter]\nmax_bytes = 0",
            "max_bytes",
            &["destination `fluentd`: dead_letter.max_bytes must be more than 0"],
        ),
        (
            "",
            "[destination.dead_letter]\nmax_bytes = \"a lot\"",
            "max_bytes",
            &["invalid size `a lot`"],
        ),
        (
            "",
            "retry_on = [204]",
            "retry_on",
            &["status 204 is a 2xx", "means delivered"],
        ),
        (
            "",
            "dead_letter_on = [\"2xx\"]",
            "dead_letter_on",
            &["class \"2xx\" means delivered"],
        ),
        (
            "",
            "retry_on = [\"soon\"]",
            "retry_on",
            &["`soon` is not a status class", "\"4xx\""],
        ),
        (
            "",
            "retry_on = [\"4xx\", 404]\ndead_letter_on = [404, 422]",
            "dead_letter_on",
            &[
                "destination `fluentd`: 404 is in both retry_on and dead_letter_on",
                "name it in one of them",
            ],
        ),
    ];
    for (source_extra, dest_extra, key, words) in cases {
        let text = config_text(&setup, url, source_extra, dest_extra);
        let line = line_of(&text, &format!("{key} = "));
        let config = write_config(&setup, &text);
        let exit = check(&config);
        assert_eq!(exit.code, Some(1), "{key}\n{}", exit.output());
        let location = format!("{}:{line}:", path_str(&config));
        let message = exit
            .stderr
            .lines()
            .find(|l| l.starts_with(&location))
            .unwrap_or_else(|| panic!("no message at {location}\n{}", exit.output()));
        for w in *words {
            assert!(message.contains(w), "{key}: {w:?} not in {message:?}");
        }
        assert_eq!(exit.stdout, "", "{key}\n{}", exit.output());
    }

    // The url line, with the key named.
    let text = config_text(&setup, "ftp://x", "", "");
    let config = write_config(&setup, &text);
    let exit = check(&config);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr.contains(&format!(
            "{}:{}:7: url `ftp://x",
            path_str(&config),
            line_of(&text, "url = ")
        )),
        "{}",
        exit.output()
    );
    assert!(
        exit.stderr.contains("must be http:// or https://"),
        "{}",
        exit.output()
    );
}

#[test]
fn check_prints_retry_on_and_dead_letter_on_as_written() {
    let setup = Setup::new();
    let text = config_text(
        &setup,
        "http://127.0.0.1:9880/e",
        "",
        "retry_on = [\"4xx\"]\ndead_letter_on = [404, \"5xx\"]",
    );
    let config = write_config(&setup, &text);
    let exit = check(&config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let resolved: toml::Table = toml::from_str(&exit.stdout).unwrap();
    let dest = &resolved["destination"].as_array().unwrap()[0];
    assert_eq!(
        dest["retry_on"],
        toml::Value::Array(vec!["4xx".into()]),
        "{}",
        exit.stdout
    );
    assert_eq!(
        dest["dead_letter_on"],
        toml::Value::Array(vec![404.into(), "5xx".into()]),
        "{}",
        exit.stdout
    );
}

#[test]
fn check_names_a_missing_environment_variable_and_its_line() {
    let setup = Setup::new();
    let text = config_text(&setup, "http://127.0.0.1:9880/e", "", "");
    let line = line_of(&text, TOKEN_VAR);
    let config = write_config(&setup, &text);
    let mut cmd = bin();
    cmd.arg("check")
        .arg("-c")
        .arg(&config)
        .env_remove(TOKEN_VAR);
    let exit = Tailhook::spawn(cmd).wait_exit(EXIT_TIMEOUT);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr.contains(&format!(
            "{}:{line}: environment variable `{TOKEN_VAR}` is not set",
            path_str(&config)
        )),
        "{}",
        exit.output()
    );
    assert_eq!(exit.stdout, "");

    // With a default, the same file is valid.
    let text = text.replace(
        &format!("${{{TOKEN_VAR}}}"),
        &format!("${{{TOKEN_VAR}:-none}}"),
    );
    let config = write_config(&setup, &text);
    let mut cmd = bin();
    cmd.arg("check")
        .arg("-c")
        .arg(&config)
        .env_remove(TOKEN_VAR);
    let exit = Tailhook::spawn(cmd).wait_exit(EXIT_TIMEOUT);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
}

#[test]
fn a_missing_config_file_cannot_be_read() {
    let setup = Setup::new();
    let missing = setup.dir.path().join("no-such-config.toml");
    for cmd in ["check", "test", "run"] {
        let exit = tailhook(&[cmd, "-c", &path_str(&missing)]);
        assert_eq!(exit.code, Some(1), "{cmd}\n{}", exit.output());
        assert!(
            exit.stderr
                .contains(&format!("cannot read config file {}", path_str(&missing))),
            "{cmd}\n{}",
            exit.output()
        );
        assert!(
            exit.stderr.contains("No such file or directory"),
            "{cmd}\n{}",
            exit.output()
        );
    }
}

// ---- 3. test ----------------------------------------------------------------

#[test]
fn test_sends_the_reference_test_message_with_method_and_headers() {
    let setup = Setup::new();
    let collector = fluentd();
    let url = collector.url("/wallarm.events");
    let text = config_text(
        &setup,
        &url,
        "",
        // The test message passes every selection.
        "method = \"PUT\"\nevents = [\"hit\"]",
    )
    .replace("}\" }", "}\", X-Tenant = \"acme\" }");
    let config = write_config(&setup, &text);

    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 1, "{}", exit.output());
    let rest = lines[0]
        .strip_prefix("fluentd: OK: HTTP 200 in ")
        .unwrap_or_else(|| panic!("{}", exit.output()));
    let (ms, target) = rest.split_once(" ms ").expect("latency in ms");
    ms.parse::<u64>().expect("latency is a number of ms");
    assert_eq!(target, format!("(PUT {url})"));
    assert_no_secret(&exit);

    let batches = collector.batches();
    assert_eq!(batches.len(), 1, "{batches:?}");
    let b = &batches[0];
    assert_eq!(String::from_utf8_lossy(&b.body), TEST_BODY);
    assert_eq!(b.body, TEST_BODY.as_bytes());
    assert_eq!(b.events.len(), 1);
    assert_eq!(b.method, "PUT");
    assert_eq!(b.path, "/wallarm.events");
    assert_eq!(b.header("content-type"), Some("application/json"));
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(b.header("authorization"), Some(bearer.as_str()));
    assert_eq!(b.header("x-tenant"), Some("acme"));
    assert_eq!(collector.request_count(), 1);
}

/// Two destinations: `--destination` tests one; without it, both.
#[test]
fn test_destination_option_tests_only_that_one() {
    let setup = Setup::new();
    let fluentd = fluentd();
    let logstash = Collector::start(Options::logstash());
    let text = config_text(&setup, &fluentd.url("/wallarm.events"), "", "")
        + &format!(
            "\n[[destination]]\nname = \"logstash\"\nurl = {:?}\n",
            logstash.url("/")
        );
    let config = write_config(&setup, &text);

    let exit = tailhook(&[
        "test",
        "-c",
        &path_str(&config),
        "--destination",
        "logstash",
    ]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 1, "{}", exit.output());
    assert!(
        lines[0].starts_with("logstash: OK: HTTP 200 in "),
        "{}",
        exit.output()
    );
    assert!(
        lines[0].ends_with(&format!("(POST {})", logstash.url("/"))),
        "{}",
        exit.output()
    );
    let batches = logstash.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].method, "POST");
    assert_eq!(batches[0].body, TEST_BODY.as_bytes());
    assert_eq!(fluentd.request_count(), 0, "fluentd was not chosen");

    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 2, "{}", exit.output());
    assert!(
        lines[0].starts_with("fluentd: OK: HTTP 200 in "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("logstash: OK: HTTP 200 in "),
        "{lines:?}"
    );
    assert_eq!(fluentd.request_count(), 1);
    assert_eq!(logstash.request_count(), 2);
}

#[test]
fn test_unknown_destination_lists_the_names() {
    let setup = Setup::new();
    let fluentd = fluentd();
    let text = config_text(&setup, &fluentd.url("/e"), "", "")
        + "\n[[destination]]\nname = \"logstash\"\nurl = \"http://127.0.0.1:9/\"\n";
    let config = write_config(&setup, &text);
    let exit = tailhook(&["test", "-c", &path_str(&config), "--destination", "splunk"]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr
            .contains("error: no destination is named `splunk`; the config has: fluentd, logstash"),
        "{}",
        exit.output()
    );
    assert_eq!(exit.stdout, "");
    assert_eq!(fluentd.request_count(), 0);
}

#[test]
fn test_connection_refused() {
    let setup = Setup::new();
    let closed = dead_port();
    let url = format!("http://127.0.0.1:{}/wallarm.events", closed.port);
    let config = write_config(&setup, &config_text(&setup, &url, "", ""));
    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 1, "{}", exit.output());
    assert!(
        lines[0].starts_with("fluentd: FAILED: connection refused"),
        "{}",
        exit.output()
    );
    assert!(lines[0].ends_with(&format!("(POST {url})")), "{lines:?}");
}

#[test]
fn test_request_timeout_on_a_hanging_collector() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.set_hang(true);
    let text = config_text(
        &setup,
        &collector.url("/wallarm.events"),
        "",
        "request_timeout = \"1s\"",
    );
    let config = write_config(&setup, &text);
    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 1, "{}", exit.output());
    assert!(
        lines[0].starts_with("fluentd: FAILED: request timeout: no answer within 1s"),
        "{}",
        exit.output()
    );
    // The request did arrive, and the collector recorded the test message
    // before it stalled (as Fluentd does): it was the answer that never
    // came, so FAILED is all tailhook can say.
    assert!(collector.wait_for_requests(1, WAIT));
    assert!(collector.statuses().is_empty());
    assert!(collector.answered_events().is_empty());
    assert_eq!(
        collector.stalled_events(),
        [TEST_BODY.as_bytes()[1..TEST_BODY.len() - 1].to_vec()]
    );
}

#[test]
fn test_http_400_shows_the_status_and_the_start_of_the_body() {
    let setup = Setup::new();
    let collector = fluentd();
    let body = format!(
        "400 Bad Request: no <match> for tag wallarm.events {}",
        "x".repeat(2000)
    );
    collector.respond_with_body(400, &body);
    let config = write_config(
        &setup,
        &config_text(&setup, &collector.url("/wallarm.events"), "", ""),
    );
    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 1, "{}", exit.output());
    let shown = lines[0]
        .strip_prefix("fluentd: FAILED: HTTP 400 Bad Request: body starts: ")
        .unwrap_or_else(|| panic!("{}", exit.output()));
    let (shown, target) = shown.rsplit_once(" (").unwrap();
    assert_eq!(
        target,
        format!("POST {})", collector.url("/wallarm.events"))
    );
    assert!(
        shown.starts_with("400 Bad Request: no <match> for tag wallarm.events x"),
        "{shown}"
    );
    assert!(body.starts_with(shown), "{shown}");
    assert!(
        shown.len() < body.len(),
        "only the start of the body is shown"
    );
    assert_eq!(collector.statuses(), [400]);
    assert_eq!(collector.event_count(), 0);
}

#[test]
fn test_http_401_or_404_says_what_to_check() {
    let setup = Setup::new();
    let collector = fluentd();
    let config = write_config(
        &setup,
        &config_text(&setup, &collector.url("/wallarm.events"), "", ""),
    );
    for (status, words) in [
        (401, "check the destination's `headers`"),
        (404, "check the URL path"),
    ] {
        collector.respond_with_body(status, "nope");
        let exit = tailhook(&["test", "-c", &path_str(&config)]);
        assert_eq!(exit.code, Some(1), "{}", exit.output());
        let lines = report_lines(&exit);
        assert!(
            lines[0].starts_with(&format!("fluentd: FAILED: HTTP {status} ")),
            "{}",
            exit.output()
        );
        assert!(lines[0].contains(words), "{words:?} not in {}", lines[0]);
    }
}

#[test]
fn test_several_destinations_one_failing() {
    let setup = Setup::new();
    let fluentd = fluentd();
    let closed = dead_port();
    let down = format!("http://127.0.0.1:{}/", closed.port);
    let text = config_text(&setup, &fluentd.url("/e"), "", "")
        + &format!("\n[[destination]]\nname = \"logstash\"\nurl = {down:?}\n");
    let config = write_config(&setup, &text);
    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 2, "{}", exit.output());
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("fluentd: OK: HTTP 200 in "))
            .count(),
        1,
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("logstash: FAILED: connection refused"))
            .count(),
        1,
        "{lines:?}"
    );
    assert_eq!(fluentd.event_count(), 1);
}

// ---- 4. demo ----------------------------------------------------------------

/// How many events of each kind `examples/sample-events.ndjson` holds (the
/// demo's samples), counted by hand from the kind table in the README.
const SAMPLE_KINDS: [(&str, usize); 9] = [
    ("hit", 3),
    ("other", 1),
    ("rule", 1),
    ("scope", 1),
    ("security_issue", 1),
    ("system", 1),
    ("test", 1),
    ("trigger", 2),
    ("vulnerability", 4),
];

/// The events of the sample file, counted with `serde_json` alone (one per
/// object line, one per array element), not with tailhook's framing.
fn sample_event_count() -> usize {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample-events.ndjson");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(
            |l| match serde_json::from_str::<serde_json::Value>(l).unwrap() {
                serde_json::Value::Array(elements) => {
                    assert!(elements.iter().all(|e| e.is_object()), "{l}");
                    elements.len()
                }
                value => {
                    assert!(value.is_object(), "{l}");
                    1
                }
            },
        )
        .sum()
}

#[test]
fn demo_runs_without_setup_and_reports_every_event_and_kind() {
    // What the demo must report, known without asking tailhook.
    let written = sample_event_count();
    assert_eq!(
        SAMPLE_KINDS.iter().map(|(_, n)| n).sum::<usize>(),
        written,
        "SAMPLE_KINDS no longer matches examples/sample-events.ndjson"
    );

    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = path_str(tmp.path());
    let exit = run_cmd(&["demo"], &[("TMPDIR", &tmp_path)]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let out = &exit.stdout;

    // "The collector received B batches, N events (expected M):"
    let summary = out
        .lines()
        .find(|l| l.starts_with("The collector received "))
        .unwrap_or_else(|| panic!("no summary\n{out}"));
    let words: Vec<&str> = summary.split_whitespace().collect();
    let batches: usize = words[3].parse().unwrap();
    let received: usize = words[5].parse().unwrap();
    let expected: usize = words[8].trim_end_matches("):").parse().unwrap();
    assert_eq!(words[4], "batches,", "{summary}");
    assert_eq!(words[7], "(expected", "{summary}");
    assert_eq!(received, written, "{summary}");
    assert_eq!(expected, written, "{summary}");

    // One line per batch, adding up to the events received.
    let batch_lines: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("batch ") && l.ends_with("-> 200 OK"))
        .collect();
    assert_eq!(batch_lines.len(), batches, "{out}");
    let in_batches: usize = batch_lines
        .iter()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = w.iter().position(|x| *x == "events").unwrap();
            w[at - 1].parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(in_batches, received, "{out}");

    // Every kind, adding up to the events received.
    let by_kind: Vec<(String, usize)> = out
        .lines()
        .skip_while(|l| !l.starts_with("Events by kind:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[1].parse().unwrap())
        })
        .collect();
    let mut by_kind: Vec<(&str, usize)> = by_kind.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    by_kind.sort();
    assert_eq!(by_kind, SAMPLE_KINDS, "{out}");

    // Its temporary directory is gone.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}

// ---- 5. run -----------------------------------------------------------------

#[test]
fn run_with_an_invalid_config_exits_1_with_the_error() {
    let setup = Setup::new();
    let text = config_text(&setup, "http://127.0.0.1:9/e", "", "retries = 3");
    let line = line_of(&text, "retries");
    let config = write_config(&setup, &text);
    let exit = tailhook(&["run", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr.contains("error: invalid config"),
        "{}",
        exit.output()
    );
    assert!(
        exit.stderr.contains(&format!(
            "{}:{line}:1: unknown field `retries`",
            path_str(&config)
        )),
        "{}",
        exit.output()
    );
    assert!(
        !exit.stderr.contains("tailhook running"),
        "{}",
        exit.output()
    );
}

#[test]
fn run_with_a_data_dir_that_cannot_be_created_exits_1_naming_it() {
    let setup = Setup::new();
    // data_dir below a regular file cannot exist.
    let blocker = setup.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let data_dir = blocker.join("data");
    let text = config_text(&setup, "http://127.0.0.1:9/e", "", "").replacen(
        &format!("data_dir = {:?}", path_str(&setup.data)),
        &format!("data_dir = {:?}", path_str(&data_dir)),
        1,
    );
    let config = write_config(&setup, &text);
    let exit = tailhook(&["run", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr
            .contains(&format!("cannot create data_dir {}", path_str(&data_dir))),
        "{}",
        exit.output()
    );
}

/// A running pipeline stops on `signal` with exit code 0, having saved its
/// checkpoint: a restart sends only what is new.
fn run_until(signal: Signal) {
    let setup = Setup::new();
    let collector = fluentd();
    let lines = setup::hits(0, 10, 100);
    setup::append(&setup.log("a.ndjson"), &lines);
    let config = setup.config(&format!(
        "{}{}",
        setup.source("wallarm", "*.ndjson", ""),
        setup::destination("fluentd", &collector.url("/wallarm.events"), "", "")
    ));
    let th = Tailhook::start(&config);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "got {} of {} events\n{}",
        collector.event_count(),
        lines.len(),
        th.stderr()
    );
    th.signal(signal);
    let exit = th.wait_exit(EXIT_TIMEOUT);
    assert_eq!(exit.code, Some(0), "{signal}\n{}", exit.output());
    assert_eq!(collector.event_count(), lines.len());
    assert!(setup.checkpoint("fluentd").exists(), "{}", exit.output());

    let more = setup::hits(lines.len(), 1, 100);
    setup::append(&setup.log("a.ndjson"), &more);
    let th = Tailhook::start(&config);
    assert!(
        collector.wait_for_events(lines.len() + 1, WAIT),
        "{}",
        th.stderr()
    );
    let exit = th.terminate();
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let mut expected = lines.clone();
    expected.extend(more);
    let got: Vec<String> = collector
        .events()
        .iter()
        .map(|e| String::from_utf8(e.clone()).unwrap())
        .collect();
    assert_eq!(got, expected, "nothing sent twice after a clean stop");
}

#[test]
fn run_stops_on_sigterm_with_exit_0() {
    run_until(Signal::SIGTERM);
}

#[test]
fn run_stops_on_sigint_with_exit_0() {
    run_until(Signal::SIGINT);
}

/// Logstash `http` input with basic auth: the credentials go in the URL, are
/// sent as `Authorization: Basic`, and the password is never printed.
#[test]
fn credentials_in_the_url_authenticate_and_are_redacted() {
    let setup = Setup::new();
    let logstash = Collector::start(Options {
        basic_auth: Some(("tailhook".to_string(), TOKEN.to_string())),
        ..Options::logstash()
    });
    let url = format!(
        "http://tailhook:${{{TOKEN_VAR}}}@127.0.0.1:{}/",
        logstash.port()
    );
    // No `Authorization` header here: it would replace the basic auth.
    let text = config_text(&setup, &url, "", "");
    let text = text.replace(
        &text
            .lines()
            .find(|l| l.starts_with("headers"))
            .unwrap()
            .to_string(),
        "",
    );
    let config = write_config(&setup, &text);
    let shown = format!("http://tailhook:redacted@127.0.0.1:{}/", logstash.port());

    let exit = check(&config);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_no_secret(&exit);
    assert!(
        exit.stdout.contains(&format!("url = {shown:?}")),
        "{}",
        exit.output()
    );

    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_no_secret(&exit);
    let lines = report_lines(&exit);
    assert_eq!(lines.len(), 1, "{}", exit.output());
    assert!(
        lines[0].starts_with("fluentd: OK: HTTP 200 in "),
        "{}",
        exit.output()
    );
    assert!(
        lines[0].ends_with(&format!("(POST {shown})")),
        "{}",
        exit.output()
    );
    assert_eq!(logstash.statuses(), [200]);
    assert_eq!(logstash.batches()[0].body, TEST_BODY.as_bytes());
}

/// The body of the test message follows the destination's `format`.
#[test]
fn test_message_in_ndjson_format() {
    let setup = Setup::new();
    let collector = fluentd();
    let config = write_config(
        &setup,
        &config_text(&setup, &collector.url("/e"), "", "format = \"ndjson\""),
    );
    let exit = tailhook(&["test", "-c", &path_str(&config)]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let batches = collector.batches();
    assert_eq!(batches.len(), 1);
    let expected = format!("{}\n", &TEST_BODY[1..TEST_BODY.len() - 1]);
    assert_eq!(String::from_utf8_lossy(&batches[0].body), expected);
    assert_eq!(
        batches[0].header("content-type"),
        Some("application/x-ndjson")
    );
}
