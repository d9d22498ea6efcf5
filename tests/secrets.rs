//! Secrets never printed, through the real binary: a config holds known
//! secrets — a header value from `${VAR}`, a literal `Authorization` header,
//! a URL password, an `http` input's `auth_value`, the password of the
//! `proxy` the destination goes through (and one in `HTTP_PROXY`, which
//! that `proxy` overrides) — and every output of
//! `check` (a valid and an invalid config), `test`, `run` (with a reload
//! that fails, and one that applies), `/metrics` and `dead-letter resend`
//! is scanned for them; so is every output of `check`, `test` and `run`
//! (with a refused key, a reload that fails and debug logs) for a forward
//! destination's `shared_key` (from `${VAR}`, right and wrong) and
//! `password`. And what tailhook writes under `data_dir` —
//! checkpoints, spool segments, dead letters and their directories — is
//! its user's only, even under `umask 000`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::check::{assert_clean_exit, dead_port};
use support::collector::fluentd;
use support::forward::{Forward, Options, Security};
use support::inputs::input;
use support::metrics::{metrics_addr, scrape};
use support::process::{bin, run_cmd, Tailhook};
use support::proxy::Proxy;
use support::setup::{append, wallarm_hits, Setup};

const WAIT: Duration = Duration::from_secs(30);

const API_KEY: &str = "key-5ecret-2288";
const BEARER: &str = "hdr-5ecret-7788";
const URL_PASSWORD: &str = "pw-5ecret-4411";
const INPUT_TOKEN: &str = "tok-5ecret-9931";
const PROXY_PASSWORD: &str = "px-5ecret-5150";
const ENV_PROXY_PASSWORD: &str = "envpx-5ecret-6061";
const SHARED_KEY: &str = "shk-5ecret-6120";
const WRONG_SHARED_KEY: &str = "shk-wr0ng-5ecret-3391";
const FORWARD_PASSWORD: &str = "fpw-5ecret-8052";
const SECRETS: [&str; 9] = [
    API_KEY,
    BEARER,
    URL_PASSWORD,
    INPUT_TOKEN,
    PROXY_PASSWORD,
    ENV_PROXY_PASSWORD,
    SHARED_KEY,
    WRONG_SHARED_KEY,
    FORWARD_PASSWORD,
];

/// The proxy every run goes through: it takes only `PROXY_PASSWORD`.
fn proxy() -> Proxy {
    let proxy = Proxy::start();
    proxy.require_credentials("px", PROXY_PASSWORD);
    proxy
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("SIEM_API_KEY", API_KEY.to_string()),
        ("HOOK_TOKEN", INPUT_TOKEN.to_string()),
        (
            "HTTP_PROXY",
            format!("http://envpx:{ENV_PROXY_PASSWORD}@127.0.0.1:9"),
        ),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

/// A config with a file source, an `http` input and one destination at
/// `port` through the proxy at `proxy_port`; `broken` adds an error on the
/// line that holds the headers.
fn config(setup: &Setup, port: u16, proxy_port: u16, broken: bool) -> PathBuf {
    let extra = if broken { ", Retries = 3" } else { "" };
    let text = format!(
        "shutdown_timeout = \"2s\"\n\n{}{}\
         [[destination]]\nname = \"siem\"\nurl = \"http://siem:{URL_PASSWORD}@127.0.0.1:{port}/t\"\n\
         proxy = \"http://px:{PROXY_PASSWORD}@127.0.0.1:{proxy_port}\"\n\
         headers = {{ Authorization = \"Bearer {BEARER}\", X-Api-Key = \"${{SIEM_API_KEY}}\"{extra} }}\n\
         sources = [\"app\", \"hook\"]\n\n[destination.retry]\ninitial = \"50ms\"\nmax = \"200ms\"\n\n",
        setup.source("app", "*.ndjson", ""),
        input(
            "hook",
            "http",
            "auth_header = \"X-Token\"\nauth_value = \"Bearer ${HOOK_TOKEN}\"\n"
        ),
    );
    setup.config(&text)
}

#[test]
fn no_output_of_any_command_shows_a_secret() {
    let setup = Setup::new();
    let collector = fluentd();
    let proxy = proxy();
    let cfg = config(&setup, collector.port(), proxy.port(), false);
    let path = cfg.to_str().unwrap();
    let env = env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let check = run_cmd(&["check", "-c", path], &env);
    assert!(check.success(), "{}", check.output());
    assert_no_secret("check of a valid config", &check.output());

    let bad_setup = Setup::new();
    let bad = config(&bad_setup, collector.port(), proxy.port(), true);
    let check = run_cmd(&["check", "-c", bad.to_str().unwrap()], &env);
    assert_eq!(check.code, Some(1), "{}", check.output());
    assert!(
        check.stderr.contains("Authorization = \"***\""),
        "the offending line is echoed with its secrets masked:\n{}",
        check.output()
    );
    assert!(
        check.stderr.contains("X-Api-Key = \"${SIEM_API_KEY}\""),
        "a ${{VAR}} is echoed as written:\n{}",
        check.output()
    );
    assert_no_secret("check of an invalid config", &check.output());

    let test = run_cmd(&["test", "-c", path], &env);
    assert!(test.success(), "{}", test.output());
    assert_no_secret("test", &test.output());

    // run: one batch rejected (a dead letter), a reload that fails on the
    // headers line, then one that applies.
    let events = wallarm_hits(0, 20);
    append(&setup.log("app.ndjson"), &events);
    collector.fail_next(&[400]);
    let tailhook = Tailhook::start_with_env(&cfg, &env);
    assert!(
        tailhook.wait_for_log("connections go through proxy", WAIT),
        "{}",
        tailhook.stderr()
    );
    assert!(
        tailhook.wait_for_log("its events go to the dead-letter file", WAIT),
        "{}",
        tailhook.stderr()
    );
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::copy(&bad, &cfg).unwrap();
    tailhook.signal(Signal::SIGHUP);
    assert!(
        tailhook.wait_for_log("config reload failed", WAIT),
        "{}",
        tailhook.stderr()
    );
    std::fs::write(&cfg, good).unwrap();
    tailhook.signal(Signal::SIGHUP);
    assert!(
        tailhook.wait_for_log_count("tailhook running", 2, WAIT),
        "{}",
        tailhook.stderr()
    );
    assert!(
        proxy.seen().iter().any(|s| s.status == 200),
        "the requests went through the proxy: {:?}",
        proxy.seen()
    );
    let page = scrape(metrics_addr(&tailhook)).matching("tailhook_");
    assert_no_secret("/metrics", &page);
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);
    assert_no_secret("run", &exit.output());

    // dead-letter resend, to a collector that is down and then up.
    let dead = dead_port();
    let down = config(&bad_setup, dead.port, proxy.port(), false);
    std::fs::create_dir_all(bad_setup.data.join("dead-letter")).unwrap();
    std::fs::copy(setup.dead_letter("siem"), bad_setup.dead_letter("siem")).unwrap();
    let resend = run_cmd(
        &["dead-letter", "resend", "-c", down.to_str().unwrap()],
        &env,
    );
    assert_eq!(resend.code, Some(1), "{}", resend.output());
    assert_no_secret(
        "dead-letter resend to a collector that is down",
        &resend.output(),
    );
    let resend = run_cmd(&["dead-letter", "resend", "-c", path], &env);
    assert!(resend.success(), "{}", resend.output());
    assert_no_secret("dead-letter resend", &resend.output());
}

/// A forward destination whose `shared_key` comes from `${FLUENTD_SHARED_KEY}`
/// and whose `password` is written in the file; `broken` leaves out its
/// `username`, an error on the `password` line.
fn forward_config(setup: &Setup, address: &str, broken: bool) -> PathBuf {
    let username = if broken {
        ""
    } else {
        "username = \"tailhook\"\n"
    };
    setup.config(&format!(
        "shutdown_timeout = \"2s\"\n\n{}\
         [[destination]]\nname = \"fwd\"\ntype = \"forward\"\naddress = {address:?}\ntag = \"wallarm.events\"\n\
         shared_key = \"${{FLUENTD_SHARED_KEY}}\"\n{username}password = \"{FORWARD_PASSWORD}\"\n\n\
         [destination.retry]\ninitial = \"50ms\"\nmax = \"200ms\"\n\n",
        setup.source("app", "*.ndjson", ""),
    ))
}

#[test]
fn no_output_shows_a_forward_shared_key_or_password() {
    let fwd = Forward::start_with(Options {
        security: Some(Security {
            users: vec![("tailhook".into(), FORWARD_PASSWORD.into())],
            ..Security::key(SHARED_KEY)
        }),
        ..Options::default()
    });
    let right = [("FLUENTD_SHARED_KEY", SHARED_KEY)];
    let wrong = [
        ("FLUENTD_SHARED_KEY", WRONG_SHARED_KEY),
        ("RUST_LOG", "info,tailhook=debug"),
    ];
    let setup = Setup::new();
    let cfg = forward_config(&setup, &fwd.address(), false);
    let path = cfg.to_str().unwrap();

    let check = run_cmd(&["check", "-c", path], &right);
    assert!(check.success(), "{}", check.output());
    assert!(check.stdout.contains("shared_key = \"<redacted>\""));
    assert_no_secret("check of a forward destination", &check.output());

    let bad_setup = Setup::new();
    let bad = forward_config(&bad_setup, &fwd.address(), true);
    let check = run_cmd(&["check", "-c", bad.to_str().unwrap()], &right);
    assert_eq!(check.code, Some(1), "{}", check.output());
    assert!(
        check.stderr.contains("`password` needs `username`")
            && check.stderr.contains("password = \"***\""),
        "the password line is echoed masked:\n{}",
        check.output()
    );
    assert_no_secret("check of an invalid forward destination", &check.output());

    let test = run_cmd(&["test", "-c", path], &right);
    assert!(test.success(), "{}", test.output());
    assert_no_secret("test with the right key", &test.output());
    let test = run_cmd(&["test", "-c", path], &wrong);
    assert!(!test.success(), "{}", test.output());
    assert!(test.stdout.contains("Fluentd refused the shared_key"));
    assert_no_secret("test with a wrong key", &test.output());

    // run with the wrong key and debug logs, a reload that fails on the
    // password line, then /metrics.
    append(&setup.log("app.ndjson"), &wallarm_hits(0, 5));
    let tailhook = Tailhook::start_with_env(&cfg, &wrong);
    assert!(
        tailhook.wait_for_log("Fluentd refused the shared_key", WAIT),
        "{}",
        tailhook.stderr()
    );
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::copy(&bad, &cfg).unwrap();
    tailhook.signal(Signal::SIGHUP);
    assert!(
        tailhook.wait_for_log("config reload failed", WAIT),
        "{}",
        tailhook.stderr()
    );
    std::fs::write(&cfg, good).unwrap();
    let page = scrape(metrics_addr(&tailhook)).matching("tailhook_");
    assert_no_secret("/metrics", &page);
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);
    assert!(
        exit.stderr.contains("password = \"***\""),
        "{}",
        exit.stderr
    );
    assert_no_secret("run", &exit.output());
    assert!(
        fwd.accepted().len() == 1,
        "only the test message with the right key"
    );
}

/// Under `umask 000`, every directory tailhook creates is 0700 and every
/// file 0600: checkpoints, spool segments and dead letters hold attack
/// payloads and request bodies.
#[test]
fn what_tailhook_writes_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup.config(&format!(
        "shutdown_timeout = \"2s\"\n\n{}{}\
         [[destination]]\nname = \"siem\"\nurl = \"{}\"\nsources = [\"app\", \"net\"]\n\n\
         [destination.batch]\nmax_events = 10\n\n",
        setup.source("app", "*.ndjson", ""),
        input("net", "tcp", ""),
        collector.url("/t"),
    ));
    let events = wallarm_hits(0, 20);
    append(&setup.log("app.ndjson"), &events);
    collector.fail_next(&[400]);
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$0\" run -c \"$1\"")
        .arg(bin().get_program())
        .arg(&cfg);
    let tailhook = Tailhook::spawn(cmd);
    let addr = support::inputs::listen_addr(&tailhook, "net");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut s, format!("{}\n", wallarm_hits(20, 1)[0]).as_bytes()).unwrap();
    drop(s);
    assert!(collector.wait_for_events(11, WAIT), "{}", tailhook.stderr());
    assert_clean_exit(&tailhook.terminate());

    let mut seen = (0, 0);
    let mut stack = vec![setup.data.clone()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        seen.0 += 1;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
                seen.1 += 1;
            }
        }
    }
    assert!(
        setup.dead_letter("siem").exists(),
        "a dead letter was written"
    );
    assert!(
        setup.data.join("spool").join("net").is_dir(),
        "the spool was made"
    );
    assert!(
        seen.1 >= 2,
        "checked {} directories and {} files",
        seen.0,
        seen.1
    );
}
