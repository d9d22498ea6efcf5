//! Self-tests of the shared test support: the collector emulators answer like
//! the real Fluentd `in_http` and Logstash `http` input, record what they
//! accept, and inject faults on demand.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::collector::{base64, fluentd, Collector, Options};
use support::tls::make_pki;

const WAIT: Duration = Duration::from_secs(10);

/// A minimal HTTP/1.1 client over one connection (keep-alive capable).
struct Conn<S: Read + Write> {
    reader: BufReader<S>,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn connect(addr: SocketAddr) -> Conn<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect to collector");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    Conn {
        reader: BufReader::new(stream),
    }
}

fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

impl<S: Read + Write> Conn<S> {
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let bytes = request_bytes(method, path, headers, body);
        let stream = self.reader.get_mut();
        stream.write_all(&bytes).unwrap();
        stream.flush().unwrap();
    }

    fn read_response(&mut self) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header colon");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("body");
        Resp {
            status,
            headers,
            body,
        }
    }

    fn call(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.send(method, path, headers, body);
        self.read_response()
    }

    /// True when the server has closed the connection.
    fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn fluentd_accepts_array_post_and_object_put_on_one_connection() {
    let collector = fluentd();
    let mut conn = connect(collector.addr());

    let array = br#"[ {"a":1} ,{"b": "x\u00e9"}
]"#;
    let r = conn.call("POST", "/wallarm/events", &[JSON], array);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "Fluentd answers an empty body");

    let r = conn.call("PUT", "/other", &[JSON], br#" {"c":[1,2]} "#);
    assert_eq!(r.status, 200);

    assert!(collector.wait_for_events(3, WAIT));
    assert_eq!(
        collector.events(),
        vec![
            br#"{"a":1}"#.to_vec(),
            br#"{"b": "x\u00e9"}"#.to_vec(),
            br#"{"c":[1,2]}"#.to_vec(),
        ]
    );
    let batches = collector.batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].method, "POST");
    assert_eq!(batches[0].path, "/wallarm/events");
    assert_eq!(batches[0].body, array.to_vec());
    assert_eq!(batches[0].header("content-type"), Some("application/json"));
    assert_eq!(batches[1].method, "PUT");
    assert_eq!(collector.statuses(), vec![200, 200]);
    assert_eq!(collector.connection_count(), 1, "keep-alive");
    assert_eq!(collector.event_count(), 3);
}

#[test]
fn fluentd_ndjson_and_get() {
    let collector = fluentd();
    let mut conn = connect(collector.addr());
    let r = conn.call(
        "POST",
        "/t",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"a\":1}\r\n\n{\"b\":2}\n",
    );
    assert_eq!(r.status, 200);
    let r = conn.call("GET", "/t", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        collector.events(),
        vec![br#"{"a":1}"#.to_vec(), br#"{"b":2}"#.to_vec()]
    );
    assert_eq!(collector.batches().len(), 2, "GET is answered 200");
}

#[test]
fn fluentd_rejects_missing_json_content_type_and_non_objects() {
    let collector = fluentd();
    let mut conn = connect(collector.addr());

    let r = conn.call("POST", "/t", &[("Content-Type", "text/plain")], b"[{}]");
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("'json', 'ndjson' or 'msgpack' parameter is required"),
        "{}",
        r.text()
    );
    let r = conn.call("POST", "/t", &[], b"[{}]");
    assert_eq!(r.status, 400);

    let r = conn.call("POST", "/t", &[JSON], b"[1,2]");
    assert_eq!(r.status, 400);

    let r = conn.call(
        "POST",
        "/t",
        &[("Content-Type", "application/msgpack")],
        b"\x91\x80",
    );
    assert_eq!(r.status, 400);

    assert_eq!(collector.event_count(), 0);
    assert!(collector.batches().is_empty());
    assert_eq!(collector.statuses(), vec![400, 400, 400, 400]);
}

#[test]
fn fluentd_413_over_body_limit_closes_connection() {
    let collector = Collector::start(Options {
        body_limit: 16,
        ..Options::fluentd()
    });
    let mut conn = connect(collector.addr());
    let body = format!(r#"[{{"pad":"{}"}}]"#, "x".repeat(100));
    let r = conn.call("POST", "/t", &[JSON], body.as_bytes());
    assert_eq!(r.status, 413);
    assert_eq!(r.text(), "Too large");
    assert!(conn.is_closed(), "Fluentd closes the connection after 413");
    assert_eq!(collector.event_count(), 0);

    // Exactly at the limit is accepted.
    let mut conn = connect(collector.addr());
    let body = br#"[{"a":"123456"}]"#;
    assert_eq!(body.len(), 16);
    assert_eq!(conn.call("POST", "/t", &[JSON], body).status, 200);
    assert_eq!(collector.statuses(), vec![413, 200]);
}

#[test]
fn fluentd_malformed_json_is_200_but_a_violation() {
    let collector = fluentd();
    let mut conn = connect(collector.addr());
    let r = conn.call("POST", "/t", &[JSON], br#"[{"a":1},"#);
    assert_eq!(r.status, 200, "real Fluentd answers 200 to malformed JSON");
    assert_eq!(collector.event_count(), 0);
    let violations = collector.take_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("malformed JSON"), "{violations:?}");
}

#[test]
fn violation_makes_drop_panic() {
    let result = std::panic::catch_unwind(|| {
        let collector = fluentd();
        let mut conn = connect(collector.addr());
        conn.call("POST", "/t", &[JSON], b"{nope");
        drop(collector);
    });
    assert!(
        result.is_err(),
        "dropping a collector with violations panics"
    );
}

#[test]
fn logstash_answers_ok_and_429_when_busy() {
    let collector = Collector::start(Options::logstash());
    let mut conn = connect(collector.addr());
    let r = conn.call(
        "POST",
        "/",
        &[("Content-Type", "application/json; charset=utf-8")],
        br#"[{"a":1},{"b":2}]"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    let r = conn.call("POST", "/", &[JSON], br#"{"c":3}"#);
    assert_eq!(r.text(), "ok");

    collector.set_busy(true);
    let r = conn.call("POST", "/", &[JSON], br#"[{"d":4}]"#);
    assert_eq!(r.status, 429);
    assert!(!r.text().is_empty());
    collector.set_busy(false);
    let r = conn.call("POST", "/", &[JSON], br#"[{"e":5}]"#);
    assert_eq!(r.status, 200);

    assert_eq!(
        collector.events(),
        vec![
            br#"{"a":1}"#.to_vec(),
            br#"{"b":2}"#.to_vec(),
            br#"{"c":3}"#.to_vec(),
            br#"{"e":5}"#.to_vec(),
        ]
    );
    assert_eq!(collector.statuses(), vec![200, 200, 429, 200]);
}

#[test]
fn logstash_basic_auth() {
    let collector = Collector::start(Options {
        basic_auth: Some(("user".into(), "secret".into())),
        ..Options::logstash()
    });
    let mut conn = connect(collector.addr());
    assert_eq!(conn.call("POST", "/", &[JSON], b"[{}]").status, 401);
    let wrong = format!("Basic {}", base64(b"user:wrong"));
    assert_eq!(
        conn.call("POST", "/", &[JSON, ("Authorization", &wrong)], b"[{}]")
            .status,
        401
    );
    let right = format!("Basic {}", base64(b"user:secret"));
    let r = conn.call("POST", "/", &[JSON, ("Authorization", &right)], b"[{}]");
    assert_eq!(r.status, 200);
    assert_eq!(collector.event_count(), 1);
}

#[test]
fn base64_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"user:secret"), "dXNlcjpzZWNyZXQ=");
}

#[test]
fn fail_next_then_success() {
    let collector = fluentd();
    collector.fail_next(&[503, 500]);
    collector.fail_next_with_retry_after(429, 7);
    let mut conn = connect(collector.addr());

    let r = conn.call("POST", "/t", &[JSON], br#"[{"n":1}]"#);
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "injected failure 503");
    assert_eq!(r.header("retry-after"), None);
    let r = conn.call("POST", "/t", &[JSON], br#"[{"n":1}]"#);
    assert_eq!(r.status, 500);
    let r = conn.call("POST", "/t", &[JSON], br#"[{"n":1}]"#);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    let r = conn.call("POST", "/t", &[JSON], br#"[{"n":1}]"#);
    assert_eq!(r.status, 200);

    assert!(collector.wait_for_requests(4, WAIT));
    assert_eq!(collector.statuses(), vec![503, 500, 429, 200]);
    assert_eq!(collector.events(), vec![br#"{"n":1}"#.to_vec()]);
}

#[test]
fn set_delay_answers_late_and_records_the_batch() {
    let collector = fluentd();
    let delay = Duration::from_millis(300);
    collector.set_delay(delay);
    let mut conn = connect(collector.addr());
    let started = std::time::Instant::now();
    let r = conn.call("POST", "/t", &[JSON], br#"[{"n":1}]"#);
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    collector.set_delay(Duration::ZERO);
    let r = conn.call("POST", "/t", &[JSON], br#"[{"n":2}]"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        collector.events(),
        vec![br#"{"n":1}"#.to_vec(), br#"{"n":2}"#.to_vec()]
    );
}

#[test]
fn respond_with_body_override_until_cleared() {
    let collector = Collector::start(Options::logstash());
    let mut conn = connect(collector.addr());
    collector.respond_with_body(500, "pipeline down");
    for _ in 0..2 {
        let r = conn.call("POST", "/", &[JSON], br#"[{"a":1}]"#);
        assert_eq!(r.status, 500);
        assert_eq!(r.text(), "pipeline down");
    }
    collector.respond_with_body(204, "");
    assert_eq!(conn.call("POST", "/", &[JSON], br#"[{"a":2}]"#).status, 204);
    collector.clear_override();
    assert_eq!(
        conn.call("POST", "/", &[JSON], br#"[{"a":3}]"#).text(),
        "ok"
    );
    assert_eq!(
        collector.events(),
        vec![br#"{"a":2}"#.to_vec(), br#"{"a":3}"#.to_vec()]
    );
}

#[test]
fn hang_records_then_holds_the_connection_until_stop() {
    let collector = fluentd();
    collector.set_hang(true);
    let mut conn = connect(collector.addr());
    conn.send("POST", "/t", &[JSON], br#"[{"a":1}]"#);
    assert!(collector.wait_for_requests(1, WAIT));
    assert!(collector.statuses().is_empty());
    // Recorded, then never answered: like a Fluentd whose answer is lost.
    let batches = collector.batches();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].stalled);
    assert_eq!(collector.events(), vec![br#"{"a":1}"#.to_vec()]);
    assert_eq!(collector.stalled_events(), collector.events());
    assert!(collector.answered_events().is_empty());
    assert_eq!(collector.exchanges().len(), 1);
    assert_eq!(collector.exchanges()[0].answered, None);
    collector.stop();
    assert!(conn.is_closed(), "stop closes hung connections");
}

#[test]
fn a_held_request_is_recorded_once_and_answered_on_release() {
    let collector = Collector::start(Options::logstash());
    collector.hang_next(1);
    let mut held = connect(collector.addr());
    held.send("POST", "/", &[JSON], br#"[{"held":1}]"#);
    assert!(collector.wait_for_held(1, WAIT));
    assert_eq!(collector.stalled_events(), vec![br#"{"held":1}"#.to_vec()]);
    assert!(collector.statuses().is_empty());

    // The request after it is answered meanwhile.
    let mut conn = connect(collector.addr());
    let r = conn.call("POST", "/", &[JSON], br#"[{"next":2}]"#);
    assert_eq!(r.status, 200);
    assert_eq!(collector.answered_events(), vec![br#"{"next":2}"#.to_vec()]);
    assert!(collector.wait_for_answered_events(1, WAIT));
    assert_eq!(collector.statuses(), vec![200]);

    collector.release();
    let r = held.read_response();
    assert_eq!((r.status, r.text()), (200, "ok".to_owned()));
    assert_eq!(collector.statuses(), vec![200, 200]);
    assert_eq!(
        collector.event_count(),
        2,
        "a release records nothing again"
    );
    let exchanges = collector.exchanges();
    assert_eq!(exchanges.len(), 2);
    assert!(exchanges.iter().all(|e| e.answered.is_some()));
    assert!(exchanges[0].answered.unwrap().0 > exchanges[1].answered.unwrap().0);
}

#[test]
fn stall_before_recording_records_only_after_a_release() {
    use support::collector::Stall;

    let collector = fluentd();
    collector.set_stall(Stall::BeforeRecording);
    collector.hang_next(1);
    let mut held = connect(collector.addr());
    held.send("POST", "/t", &[JSON], br#"[{"held":1}]"#);
    assert!(collector.wait_for_held(1, WAIT));
    assert_eq!(collector.request_count(), 1);
    assert_eq!(collector.event_count(), 0);
    collector.release();
    assert_eq!(held.read_response().status, 200);
    assert_eq!(collector.request_count(), 1, "counted once");
    assert_eq!(collector.answered_events(), vec![br#"{"held":1}"#.to_vec()]);

    collector.set_hang(true);
    let mut hung = connect(collector.addr());
    hung.send("POST", "/t", &[JSON], br#"[{"hung":2}]"#);
    assert!(collector.wait_for_requests(2, WAIT));
    assert_eq!(collector.event_count(), 1, "a hung request records nothing");
}

/// A body is checked for violations whatever the answer: 413, 401, or a
/// request that is never answered.
#[test]
fn refused_and_stalled_bodies_are_checked_too() {
    let fluentd = Collector::start(Options {
        body_limit: 16,
        ..Options::fluentd()
    });
    let r = connect(fluentd.addr()).call("POST", "/t", &[JSON], br#"[{"a":1},{"b":2},"#);
    assert_eq!(r.status, 413);
    let violations = fluentd.take_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("malformed JSON"), "{violations:?}");

    fluentd.set_hang(true);
    let mut hung = connect(fluentd.addr());
    hung.send("POST", "/t", &[JSON], b"[{");
    assert!(fluentd.wait_for_requests(2, WAIT));
    let violations = fluentd.take_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("malformed JSON"), "{violations:?}");

    let logstash = Collector::start(Options {
        basic_auth: Some(("user".into(), "secret".into())),
        ..Options::logstash()
    });
    let r = connect(logstash.addr()).call("POST", "/", &[JSON], b"[1,");
    assert_eq!(r.status, 401);
    let violations = logstash.take_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("malformed JSON"), "{violations:?}");
}

#[test]
fn exchanges_tell_when_each_request_arrived_and_was_answered() {
    let collector = fluentd();
    collector.fail_next_with_retry_after(503, 1);
    let mut conn = connect(collector.addr());
    assert_eq!(conn.call("POST", "/t", &[JSON], b"{}").status, 503);
    let pause = Duration::from_millis(50);
    std::thread::sleep(pause); // the pause being measured, not a synchronisation
    assert_eq!(conn.call("POST", "/t", &[JSON], b"{}").status, 200);
    let exchanges = collector.exchanges();
    assert_eq!(exchanges.len(), 2);
    let (answered, status) = exchanges[0].answered.unwrap();
    assert_eq!(status, 503);
    assert!(answered >= exchanges[0].arrived);
    assert!(exchanges[1].arrived - answered >= pause);
    assert_eq!(exchanges[1].answered.unwrap().1, 200);
}

#[test]
fn wait_for_events_wakes_on_arrival_from_another_thread() {
    let collector = fluentd();
    let addr = collector.addr();
    let sender = std::thread::spawn(move || {
        let mut conn = connect(addr);
        for i in 0..5 {
            let body = format!(r#"[{{"i":{i}}},{{"j":{i}}}]"#);
            assert_eq!(
                conn.call("POST", "/t", &[JSON], body.as_bytes()).status,
                200
            );
        }
    });
    assert!(collector.wait_for_events(10, WAIT));
    sender.join().unwrap();
    assert!(!collector.wait_for_events(11, Duration::from_millis(50)));
}

#[test]
fn stopped_collector_port_can_be_reused() {
    // Held while the collector is down, so no other test takes the port.
    let held = support::check::dead_port();
    let port = held.port;
    let first = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    {
        let mut conn = connect(first.addr());
        assert_eq!(conn.call("POST", "/t", &[JSON], b"{}").status, 200);
        first.stop();
        assert!(conn.is_closed());
    }
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let second = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    assert_eq!(second.addr().port(), port);
    let mut conn = connect(second.addr());
    assert_eq!(conn.call("POST", "/t", &[JSON], b"{}").status, 200);
    assert_eq!(second.event_count(), 1);
    assert_eq!(second.url("/a/b"), format!("http://127.0.0.1:{port}/a/b"));
}

#[test]
fn tls_collector_accepts_client_trusting_test_ca() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = make_pki();
    let collector = Collector::start(Options {
        tls: Some(pki.server_config()),
        ..Options::fluentd()
    });
    let url = collector.url("/secure");
    assert_eq!(
        url,
        format!("https://localhost:{}/secure", collector.addr().port())
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = collector.addr();
    let connect_with = |config| {
        runtime.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await?;
            let mut req = request_bytes(
                "POST",
                "/secure",
                &[JSON, ("Connection", "close")],
                br#"[{"tls":true}]"#,
            );
            tls.write_all(&req).await?;
            req.clear();
            tls.read_to_end(&mut req).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&req).into_owned())
        })
    };

    let answer = connect_with(pki.client_config()).expect("TLS request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(collector.events(), vec![br#"{"tls":true}"#.to_vec()]);

    // A client trusting another CA fails the handshake; it is only counted.
    let other = make_pki();
    assert!(connect_with(other.client_config()).is_err());
    assert!(collector.wait_for_tls_failures(1, WAIT));
    assert_eq!(collector.tls_failures(), 1);
}

#[test]
fn tls_pki_writes_ca() {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let path = pki.write_ca(dir.path());
    assert_eq!(path, dir.path().join("ca.pem"));
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn run_cmd_is_bounded_and_collects_output() {
    use support::process::run_cmd;

    // Success: exit code 0 and stdout, nothing on stderr.
    let exit = run_cmd(&["--version"], &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(exit.signal, None);
    assert_eq!(
        exit.stdout,
        format!("tailhook {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(exit.stderr, "");

    // The environment given reaches the process: a config naming a variable
    // fails (exit 1, the reason on stderr) without it and passes with it.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "data_dir = \"${TAILHOOK_SELFTEST}\"\n[[source]]\nname = \"in\"\ntype = \"stdin\"\n\
         [[destination]]\nname = \"out\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let exit = run_cmd(&["check", "-c", config], &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr
            .contains("environment variable `TAILHOOK_SELFTEST` is not set"),
        "{}",
        exit.output()
    );
    assert_eq!(exit.stdout, "");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let exit = run_cmd(&["check", "-c", config], &[("TAILHOOK_SELFTEST", data)]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stdout.starts_with(&format!("data_dir = {data:?}\n")),
        "{}",
        exit.output()
    );
}

/// A long-running stand-in for tailhook: prints a line, then blocks until a
/// signal ends it.
fn stand_in() -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "echo ready >&2; echo out; exec tail -f /dev/null"]);
    cmd
}

#[test]
fn process_terminate_collects_output() {
    let process = support::process::Tailhook::spawn(stand_in());
    assert!(process.wait_for_log("ready", WAIT), "{}", process.stderr());
    assert!(process.wait_for_log("out", WAIT));
    assert!(!process.wait_for_log("never printed", Duration::from_millis(20)));
    let exit = process.terminate();
    assert_eq!(exit.code, None);
    assert_eq!(exit.signal, Some(libc_sigterm()));
    assert_eq!(exit.stderr, "ready\n");
    assert_eq!(exit.stdout, "out\n");
}

#[test]
fn process_drop_kills_and_reaps() {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;

    let process = support::process::Tailhook::spawn(stand_in());
    assert!(process.wait_for_log("ready", WAIT));
    let pid = Pid::from_raw(process.pid() as i32);
    drop(process);
    assert_eq!(kill(pid, None), Err(nix::errno::Errno::ESRCH));
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}
