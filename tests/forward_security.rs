//! `in_forward`'s `<security>` handshake (shared_key, users) end to end:
//! the real binary against the forward emulator (`support::forward`) with
//! `<security>`, over TCP and TLS. Checked: the right key delivers every
//! event and the PING carries tailhook's `self_hostname` and user; a wrong
//! key, a wrong user, a server that cannot prove it knows the key, a server
//! of the same name, a server without `<security>` (no HELO) and one with
//! it when tailhook has no key all fail `tailhook test` in words; `run`
//! keeps the events while the key is wrong and delivers them all once it
//! is fixed, by a reload or a restart; `check` validates the settings and
//! never prints the key or the password.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::check::{assert_clean_exit, stop};
use support::forward::{Forward, Options, Security};
use support::process::{run_cmd, Tailhook};
use support::setup::{append, checkpointed_offset, wallarm_hits, Setup};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

const KEY: &str = "fwd-5hared-key-8842";
const WRONG_KEY: &str = "fwd-wr0ng-key-1177";
const PASSWORD: &str = "fwd-pa55word-3306";

/// A config: a file source `app` on `logs/*.ndjson` and a forward
/// destination `fluentd` to `address` with `extra` in its block, fast
/// retries and batches of at most 5 events. A reload stops a destination
/// that cannot deliver after `shutdown_timeout`: 2 s here.
fn config(setup: &Setup, address: &str, extra: &str) -> std::path::PathBuf {
    let source = setup.source("app", "*.ndjson", "");
    setup.config(&format!(
        "shutdown_timeout = \"2s\"\n{source}\n[[destination]]\nname = \"fluentd\"\ntype = \"forward\"\naddress = {address:?}\n\
         tag = \"wallarm.events\"\ntime_key = \"time\"\n{extra}\n\
         [destination.batch]\ntimeout = \"100ms\"\nmax_events = 5\n\
         [destination.retry]\ninitial = \"50ms\"\nmax = \"300ms\"\n"
    ))
}

fn key_env(key: &str) -> Vec<(&'static str, String)> {
    vec![("FLUENTD_SHARED_KEY", key.to_string())]
}

fn env_ref<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The records the emulator accepted, as JSON text, keys in the order sent.
fn accepted_texts(fwd: &Forward) -> Vec<String> {
    fwd.received()
        .into_iter()
        .filter(|r| r.acked)
        .flat_map(|r| r.texts)
        .collect()
}

/// `got` holds each of `want` once, byte for byte, in any order (batches
/// in flight may be acknowledged out of order); says briefly what differs.
fn assert_same_lines(got: &[String], want: &[String], what: &str) {
    let mut got = got.to_vec();
    let mut want = want.to_vec();
    got.sort();
    want.sort();
    if got != want {
        let missing = want.iter().filter(|w| !got.contains(w)).count();
        let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
        panic!(
            "{what}: {} records, {} wanted; {missing} missing; unexpected: {:?}",
            got.len(),
            want.len(),
            extra.iter().take(2).collect::<Vec<_>>()
        );
    }
}

fn checkpoint_of(setup: &Setup, file: &std::path::Path) -> Option<u64> {
    setup
        .read_checkpoint("fluentd")
        .and_then(|c| checkpointed_offset(&c, file))
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [KEY, WRONG_KEY, PASSWORD] {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

#[test]
fn the_right_shared_key_delivers_every_event_with_tailhooks_hostname() {
    for str_salts in [false, true] {
        let fwd = Forward::start_with(Options {
            security: Some(Security {
                str_salts,
                ..Security::key(KEY)
            }),
            ..Options::default()
        });
        let setup = Setup::new();
        let cfg = config(
            &setup,
            &fwd.address(),
            "shared_key = \"${FLUENTD_SHARED_KEY}\"\nself_hostname = \"tailhook-test\"",
        );
        let env = key_env(KEY);
        let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &env_ref(&env));
        assert!(out.success(), "{}", out.output());
        assert!(
            out.stdout.contains("fluentd: OK: acknowledged in "),
            "{}",
            out.output()
        );
        assert_no_secret("test", &out.output());

        let lines = wallarm_hits(0, 12);
        append(&setup.log("a.ndjson"), &lines);
        let th = Tailhook::start_with_env(&cfg, &env_ref(&env));
        assert!(fwd.wait_accepted(13, WAIT), "{}", th.stderr());
        let exit = stop(th);
        assert_no_secret("run", &exit.output());
        assert_eq!(fwd.violations(), Vec::<String>::new());
        // The test message first, then every line, byte for byte.
        let texts = accepted_texts(&fwd);
        assert!(texts[0].contains("[Test Message]"));
        assert_same_lines(&texts[1..], &lines, &format!("str salts: {str_salts}"));
        let handshakes = fwd.handshakes();
        assert!(!handshakes.is_empty());
        for h in &handshakes {
            assert_eq!(h.hostname, "tailhook-test");
            assert_eq!(h.username, "");
            assert_eq!(h.refused, None);
        }
        // Every connection that carried a message began with a handshake.
        for r in fwd.received() {
            assert!(handshakes.iter().any(|h| h.connection == r.connection));
        }
    }
}

#[test]
fn a_wrong_key_fails_test_in_words_and_run_keeps_the_events_until_a_reload_fixes_it() {
    let fwd = Forward::start_with(Options {
        security: Some(Security::key(KEY)),
        ..Options::default()
    });
    let setup = Setup::new();
    let wrong = config(
        &setup,
        &fwd.address(),
        &format!("shared_key = \"{WRONG_KEY}\""),
    );
    let out = run_cmd(&["test", "-c", wrong.to_str().unwrap()], &[]);
    assert!(!out.success(), "{}", out.output());
    assert!(
        out.stdout.contains(
            "fluentd: FAILED: <security> handshake failed: Fluentd refused the shared_key: shared_key mismatch (set shared_key to the shared_key of in_forward's <security>"
        ),
        "{}",
        out.output()
    );
    assert_no_secret("test with a wrong key", &out.output());

    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(0, 8);
    append(&log, &lines);
    let th = Tailhook::start(&wrong);
    assert!(
        th.wait_for_log("Fluentd refused the shared_key: shared_key mismatch", WAIT),
        "{}",
        th.stderr()
    );
    assert!(fwd.wait_handshakes(3, WAIT), "it keeps trying");
    assert!(fwd.received().is_empty(), "nothing is sent after a refusal");
    assert_eq!(checkpoint_of(&setup, &log).unwrap_or(0), 0);

    // The key fixed in the file, and a reload: every event arrives.
    config(&setup, &fwd.address(), &format!("shared_key = \"{KEY}\""));
    th.signal(Signal::SIGHUP);
    assert!(fwd.wait_accepted(8, WAIT), "{}", th.stderr());
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(setup
        .wait_checkpointed("fluentd", &log, len, WAIT)
        .is_some());
    let exit = th.terminate();
    assert_clean_exit(&exit);
    assert_no_secret("run", &exit.output());
    assert_same_lines(&accepted_texts(&fwd), &lines, "after the reload");
}

#[test]
fn a_wrong_key_from_the_environment_is_fixed_by_a_restart() {
    let fwd = Forward::start_with(Options {
        security: Some(Security::key(KEY)),
        ..Options::default()
    });
    let setup = Setup::new();
    let cfg = config(
        &setup,
        &fwd.address(),
        "shared_key = \"${FLUENTD_SHARED_KEY}\"",
    );
    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(100, 7);
    append(&log, &lines);
    let env = key_env(WRONG_KEY);
    let th = Tailhook::start_with_env(&cfg, &env_ref(&env));
    assert!(
        th.wait_for_log("Fluentd refused the shared_key", WAIT),
        "{}",
        th.stderr()
    );
    let exit = th.terminate();
    assert_clean_exit(&exit);
    assert_no_secret("run with a wrong key", &exit.output());
    assert!(fwd.received().is_empty());

    let env = key_env(KEY);
    let th = Tailhook::start_with_env(&cfg, &env_ref(&env));
    assert!(fwd.wait_accepted(7, WAIT), "{}", th.stderr());
    stop(th);
    assert_same_lines(&accepted_texts(&fwd), &lines, "after the restart");
}

#[test]
fn users_are_checked_with_the_password_digest() {
    let fwd = Forward::start_with(Options {
        security: Some(Security {
            users: vec![
                ("other".into(), "other-password".into()),
                ("tailhook".into(), PASSWORD.into()),
            ],
            ..Security::key(KEY)
        }),
        ..Options::default()
    });
    let setup = Setup::new();
    let test = |extra: &str| {
        let cfg = config(
            &setup,
            &fwd.address(),
            &format!("shared_key = \"{KEY}\"\n{extra}"),
        );
        run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[])
    };
    let out = test(&format!(
        "username = \"tailhook\"\npassword = \"{PASSWORD}\""
    ));
    assert!(out.success(), "{}", out.output());
    let h = fwd.handshakes();
    assert_eq!(h.last().unwrap().username, "tailhook");
    assert_eq!(h.last().unwrap().refused, None);
    assert_eq!(fwd.accepted().len(), 1);

    let out = test("username = \"tailhook\"\npassword = \"not-it\"");
    assert!(!out.success());
    assert!(
        out.stdout.contains(
            "FAILED: <security> handshake failed: Fluentd refused the user `tailhook`: username/password mismatch"
        ),
        "{}",
        out.output()
    );
    let out = test("");
    assert!(!out.success());
    assert!(
        out.stdout
            .contains("username/password mismatch (in_forward's <security> has user_auth true: set username and password"),
        "{}",
        out.output()
    );
    assert_no_secret("test", &out.output());
    assert_eq!(fwd.accepted().len(), 1, "nothing more was taken");
}

#[test]
fn a_server_that_does_not_prove_the_key_or_has_our_name_gets_nothing() {
    let fwd = Forward::start_with(Options {
        security: Some(Security::key(KEY)),
        ..Options::default()
    });
    fwd.set_bad_pong_digest(true);
    let setup = Setup::new();
    let cfg = config(&setup, &fwd.address(), &format!("shared_key = \"{KEY}\""));
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains(
            "FAILED: <security> handshake failed: the server's PONG digest is wrong: the server `fluentd-test` does not prove it knows the shared_key"
        ),
        "{}",
        out.output()
    );
    append(&setup.log("a.ndjson"), &wallarm_hits(0, 3));
    let th = Tailhook::start(&cfg);
    assert!(
        th.wait_for_log("PONG digest is wrong", WAIT),
        "{}",
        th.stderr()
    );
    assert!(fwd.wait_handshakes(3, WAIT));
    stop(th);
    assert!(fwd.received().is_empty(), "no event went to that server");

    // A server whose self_hostname is ours.
    fwd.set_bad_pong_digest(false);
    let cfg = config(
        &setup,
        &fwd.address(),
        &format!("shared_key = \"{KEY}\"\nself_hostname = \"fluentd-test\""),
    );
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains(
            "in_forward's self_hostname is `fluentd-test`, the same as this destination's"
        ),
        "{}",
        out.output()
    );
    assert!(fwd.received().is_empty());
}

#[test]
fn a_missing_helo_or_an_unexpected_one_is_told_in_words() {
    // shared_key set, in_forward without <security>: no HELO comes.
    let plain = Forward::start();
    let setup = Setup::new();
    let cfg = config(
        &setup,
        &plain.address(),
        &format!("shared_key = \"{KEY}\"\nconnect_timeout = \"300ms\""),
    );
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains(
            "FAILED: <security> handshake failed: no HELO from the server within connect_timeout (300ms): is <security> configured on in_forward?"
        ),
        "{}",
        out.output()
    );
    assert!(plain.received().is_empty());

    // in_forward with <security>, tailhook without shared_key.
    let secure = Forward::start_with(Options {
        security: Some(Security::key(KEY)),
        ..Options::default()
    });
    let cfg = config(&setup, &secure.address(), "");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains(
            "in_forward has <security>, and this destination has no shared_key; set shared_key"
        ),
        "{}",
        out.output()
    );
    assert_eq!(secure.accepted().len(), 0);
}

#[test]
fn tls_and_shared_key_together_deliver_everything() {
    let pki = support::tls::make_pki();
    let fwd = Forward::start_with(Options {
        tls: Some(pki.server_config()),
        security: Some(Security::key(KEY)),
        ..Options::default()
    });
    let setup = Setup::new();
    let ca = pki.write_ca(setup.dir.path());
    let cfg = config(
        &setup,
        &fwd.address(),
        &format!(
            "transport = \"tls\"\nca_file = {:?}\nshared_key = \"${{FLUENTD_SHARED_KEY}}\"",
            ca.to_str().unwrap()
        ),
    );
    let env = key_env(KEY);
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &env_ref(&env));
    assert!(out.success(), "{}", out.output());
    assert!(
        out.stdout.contains("fluentd: OK: acknowledged in ")
            && out
                .stdout
                .contains(&format!("(forward tls://{} ", fwd.address())),
        "{}",
        out.output()
    );
    let lines = wallarm_hits(0, 11);
    append(&setup.log("a.ndjson"), &lines);
    let th = Tailhook::start_with_env(&cfg, &env_ref(&env));
    assert!(fwd.wait_accepted(12, WAIT), "{}", th.stderr());
    stop(th);
    assert_same_lines(&accepted_texts(&fwd)[1..], &lines, "over TLS");
    assert!(fwd.handshakes().iter().all(|h| h.refused.is_none()));

    // The wrong key over TLS: refused in words (the TLS part went well).
    let env = key_env(WRONG_KEY);
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &env_ref(&env));
    assert!(!out.success());
    assert!(
        out.stdout
            .contains("Fluentd refused the shared_key: shared_key mismatch"),
        "{}",
        out.output()
    );
}

/// With `deny_keepalive true` every batch goes on a new connection; over
/// TLS, each of them makes a full handshake (Fluentd 1.16's TLS server
/// fails resumed ones: "session id context uninitialized").
#[test]
fn with_deny_keepalive_each_batch_gets_its_own_connection() {
    let pki = support::tls::make_pki();
    for tls in [false, true] {
        let fwd = Forward::start_with(Options {
            security: Some(Security::key(KEY)),
            deny_keepalive: true,
            tls: tls.then(|| pki.server_config()),
            ..Options::default()
        });
        let setup = Setup::new();
        let ca = pki.write_ca(setup.dir.path());
        let transport = if tls {
            format!(
                "transport = \"tls\"\nca_file = {:?}\n",
                ca.to_str().unwrap()
            )
        } else {
            String::new()
        };
        let cfg = config(
            &setup,
            &fwd.address(),
            &format!("{transport}shared_key = \"{KEY}\"\nconcurrency = 1"),
        );
        let lines = wallarm_hits(0, 20);
        append(&setup.log("a.ndjson"), &lines);
        let th = Tailhook::start(&cfg);
        assert!(fwd.wait_accepted(20, WAIT), "{}", th.stderr());
        let exit = stop(th);
        let received = fwd.received();
        assert!(received.len() >= 4, "batches of at most 5");
        assert!(
            received.iter().all(|r| r.acked),
            "none was lost to a closed connection"
        );
        let mut conns: Vec<usize> = received.iter().map(|r| r.connection).collect();
        conns.dedup();
        assert_eq!(conns.len(), received.len(), "one batch a connection");
        assert!(
            !exit.stderr.contains("closed the connection"),
            "a connection the server closes is not used again:\n{}",
            exit.stderr
        );
        assert_eq!(fwd.resumed_tls_handshakes(), 0, "tls: {tls}");
        // One batch at a time: in the order written.
        assert_eq!(accepted_texts(&fwd), lines, "in order");
    }
}

#[test]
fn check_validates_the_security_settings_and_never_prints_the_secrets() {
    let setup = Setup::new();
    let source = setup.source("app", "*.ndjson", "");
    let check = |dest: &str| {
        let cfg = setup.config(&format!(
            "{source}\n[[destination]]\nname = \"f\"\ntype = \"forward\"\naddress = \"127.0.0.1:24224\"\ntag = \"t\"\n{dest}\n"
        ));
        run_cmd(
            &["check", "-c", cfg.to_str().unwrap()],
            &key_env(KEY)
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let out = check(&format!(
        "shared_key = \"${{FLUENTD_SHARED_KEY}}\"\nusername = \"tailhook\"\npassword = \"{PASSWORD}\""
    ));
    assert!(out.success(), "{}", out.output());
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    for line in [
        "shared_key = \"<redacted>\"".to_string(),
        format!("self_hostname = {:?}", host.trim()),
        "username = \"tailhook\"".to_string(),
        "password = \"<redacted>\"".to_string(),
    ] {
        assert!(
            out.stdout.contains(&line),
            "check prints {line}:\n{}",
            out.output()
        );
    }
    assert_no_secret("check", &out.output());
    let out = check("");
    assert!(
        out.stdout
            .contains("# shared_key: none (no <security> handshake)"),
        "{}",
        out.output()
    );

    for (dest, words) in [
        ("shared_key = \"\"", "`shared_key` must not be empty"),
        (
            "self_hostname = \"me\"",
            "`self_hostname` belongs to in_forward's <security> handshake, which needs `shared_key`",
        ),
        (
            &format!("password = \"{PASSWORD}\""),
            "`password` belongs to in_forward's <security> handshake",
        ),
        (
            &format!("shared_key = \"{KEY}\"\nusername = \"tailhook\""),
            "`username` needs `password`",
        ),
        (
            &format!("shared_key = \"{KEY}\"\npassword = \"{PASSWORD}\""),
            "`password` needs `username`",
        ),
        (
            &format!("shared_key = \"{KEY}\"\nself_hostname = \" \""),
            "`self_hostname` must not be empty",
        ),
        (
            "shared_key = \"${FLUENTD_SHARED_KEY_UNSET}\"",
            "environment variable `FLUENTD_SHARED_KEY_UNSET` is not set",
        ),
    ] {
        let out = check(dest);
        assert_eq!(out.code, Some(1), "{dest}:\n{}", out.output());
        assert!(
            out.output().contains(words),
            "{dest}: want {words}:\n{}",
            out.output()
        );
        assert_no_secret("check of an invalid config", &out.output());
    }
    // On an HTTP destination, the forward settings are errors.
    let cfg = setup.config(&format!(
        "{source}\n[[destination]]\nname = \"h\"\nurl = \"http://127.0.0.1:9880/t\"\nshared_key = \"{KEY}\"\n"
    ));
    let out = run_cmd(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("`shared_key` is a setting of `type = \"forward\"` destinations"),
        "{}",
        out.output()
    );
    assert!(
        out.stderr.contains("shared_key = \"***\""),
        "{}",
        out.output()
    );
    assert_no_secret(
        "check of an HTTP destination with a shared_key",
        &out.output(),
    );
    // A placeholder is warned about.
    let out = check("shared_key = \"changeme\"");
    assert!(out.success(), "{}", out.output());
    assert!(
        out.output()
            .contains("destination `f`: shared_key is a placeholder (`changeme`)"),
        "{}",
        out.output()
    );
}
