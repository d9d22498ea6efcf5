//! The `http` input end to end: the real binary receives webhook requests on
//! 127.0.0.1 (plain HTTP/1.1 written by hand over a `TcpStream`, so every
//! status, header and byte is under the test's control), spools them, and its
//! destination delivers them to a collector emulator. What is checked is what
//! a sender and a user see: the status, the words and the headers of each
//! answer; the events the collector accepted (count, order, exact bytes);
//! what survives a restart; the files left in the spool; `tailhook test`
//! through one tailhook into another.

mod support;

use support::check::{stop, wait_events};

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::value::RawValue;
use support::check::{assert_each_exactly_once, dead_port, wait_for_all_seqs};
use support::collector::{fluentd, Collector, Options};
use support::http_client::{
    connect, exchange, find, post, read_reply, request_bytes, send, Reply, JSON,
};
use support::inputs::{listen_addr, spool_segments};
use support::process::{run_cmd, Exit, Tailhook};
use support::setup::{hits, seq_of, Setup};
use support::tls::{make_pki, ClientCa};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

/// The Wallarm samples shipped with the project: every kind, one per line.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample-events.ndjson");

/// The reference page's "Hit detected" notification, pretty-printed as
/// there (shared/reference/webhook-notifications.md).
const HIT_EXAMPLE: &str = r#"[
{
    "anomality": 0.9806949806949808,
    "domain": "example.com",
    "heur_distance": 36.28571421111111,
    "method": "GET",
    "parameter": "GET_id_value",
    "path": "/",
    "payloads": [
    "'or 1=1--"
    ],
    "point": [
    "get",
    "id"
    ],
    "probability": 36.11111118571429,
    "remote_country": null,
    "remote_port": 41616,
    "remote_addr4": "111.17.1.1",
    "remote_addr6": null,
    "datacenter": "unknown",
    "tor": "none",
    "request_time": 1591261367,
    "create_time": 1591261381,
    "response_len": 345,
    "response_status": 404,
    "response_time": 257,
    "stamps": [
    1173
    ],
    "regex": [],
    "stamps_hash": -1888294073,
    "regex_hash": -2147483648,
    "type": "sqli",
    "block_status": "monitored",
    "id": [
    "hits_production_6396_202006_v_1",
    "vpuRfnIBVc0URvOZ6ALA"
    ],
    "object_type": "hit"
}
]
"#;

/// The reference page's "Vulnerability detected" notification.
const VULN_EXAMPLE: &str = r#"[
{
    "title": "Missing \"Strict-Transport-Security\" header in server's response at '93.184.216.34:443'",
    "source": "93.184.216.34:443",
    "type": "Info",
    "domain": "www.example.com",
    "threat": "Low",
    "link": "https://my.wallarm.com/object/282157",
    "summary": "New vulnerability identified"
}
]
"#;

/// The reference page's test message, as `tailhook test` sends it.
const TEST_MESSAGE: &str = r#"{"title":"Test","source":"Wallarm","type":"Info","domain":"example.com","threat":"Medium","link":"https://my.wallarm.com/object/555","summary":"[Test Message] New vulnerability identified"}"#;

// ---- answers ------------------------------------------------------------------

fn assert_ok(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {reply:?}");
    assert_eq!(reply.body, "", "{what}: a 200 has an empty body");
}

/// A refusal: `status`, a text/plain body starting with `words`.
fn assert_refused(reply: &Reply, status: u16, words: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    assert!(
        reply.body.starts_with(words),
        "{what}: the answer should start with {words:?}, got {:?}",
        reply.body
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{what}: answers are text/plain: {reply:?}"
    );
}

// ---- setup ----------------------------------------------------------------------

/// A TOML basic string holding `p`.
fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// `[a,b,...]` of the given elements, exactly.
fn array_body(events: &[String]) -> Vec<u8> {
    format!("[{}]", events.join(",")).into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn seq_set(events: &[String]) -> BTreeSet<u64> {
    events.iter().map(|e| seq_of(e.as_bytes())).collect()
}

fn wait_seqs(collector: &Collector, tailhook: &Tailhook, events: &[String]) {
    let want = seq_set(events);
    if !wait_for_all_seqs(collector, &want, WAIT) {
        let got: BTreeSet<u64> = collector.events().iter().map(|e| seq_of(e)).collect();
        let missing: Vec<&u64> = want.difference(&got).take(50).collect();
        panic!(
            "within {WAIT:?} the collector got {} events; missing seqs: {missing:?}\n\
             statuses: {:?}\n--- tailhook stderr ---\n{}",
            collector.event_count(),
            collector.statuses(),
            tailhook.stderr()
        );
    }
}

/// Each element of each line of the samples file, exactly as written (an
/// object line is one element): 15 events of every kind.
fn sample_elements() -> Vec<String> {
    let text = std::fs::read_to_string(SAMPLES).expect("read examples/sample-events.ndjson");
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('{') {
            out.push(line.to_string());
        } else {
            let elements: Vec<&RawValue> = serde_json::from_str(line).expect("sample line");
            out.extend(elements.iter().map(|e| e.get().to_string()));
        }
    }
    assert_eq!(out.len(), 15, "examples/sample-events.ndjson changed");
    out
}

/// The one element of a pretty-printed one-element array, as it appears in
/// the body (line breaks and all).
fn only_element(body: &str) -> String {
    let elements: Vec<&RawValue> = serde_json::from_str(body).expect("example is JSON");
    assert_eq!(elements.len(), 1);
    elements[0].get().to_string()
}

/// What an element becomes on its way through: line breaks between tokens
/// turned into spaces, every other byte unchanged.
fn one_line(element: &str) -> String {
    element.replace(['\r', '\n'], " ")
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > 300 {
        let start: String = text.chars().take(300).collect();
        format!("{start:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// The collector's events are exactly `expected`, in order, byte for byte.
fn assert_same_events(collector: &Collector, expected: &[String], what: &str) {
    let got = collector.events();
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            g == e.as_bytes(),
            "{what}: event #{i} differs\n  got:      {}\n  expected: {}",
            show(g),
            show(e.as_bytes())
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{what}: {} events received, {} expected",
        got.len(),
        expected.len()
    );
}

// ---- 1. accepted bodies: every event, in order, byte for byte --------------------

/// The samples of every kind in one array, the reference's pretty-printed
/// notifications (POST and PUT, LF and CRLF line breaks), one bare object
/// and an empty array: each is answered 200 with an empty body, and the
/// collector receives exactly their elements, in order, each as it was sent
/// (a multi-line element with its line breaks turned into spaces, so with
/// the same JSON value).
#[test]
fn accepted_bodies_arrive_as_their_elements_in_order_byte_for_byte() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("hook", "http")
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");

    let samples = sample_elements();
    let reply = post(addr, &array_body(&samples));
    assert_ok(&reply, "the samples array");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{reply:?}"
    );

    // The reference's hit notification, pretty-printed over 40 lines.
    assert_ok(&post(addr, HIT_EXAMPLE.as_bytes()), "the hit example");
    // An empty array holds no event.
    assert_ok(&post(addr, b"[]"), "an empty array");
    // One object, not in an array.
    let single = hits(7, 1, 120).remove(0);
    assert_ok(&post(addr, single.as_bytes()), "a single object");
    // The vulnerability notification by PUT, with CRLF line breaks.
    let vuln_crlf = VULN_EXAMPLE.replace('\n', "\r\n");
    assert_ok(
        &send(addr, "PUT", "/", &[JSON], vuln_crlf.as_bytes()),
        "the vulnerability example by PUT",
    );
    // A pretty-printed single object.
    let pretty_object =
        "{\n  \"seq\": 8,\n  \"object_type\": \"hit\",\n  \"payloads\": [\n    \"a\\nb\"\n  ]\n}\n";
    assert_ok(
        &post(addr, pretty_object.as_bytes()),
        "a pretty-printed object",
    );

    let hit = only_element(HIT_EXAMPLE);
    let vuln = only_element(&vuln_crlf);
    assert!(hit.contains('\n') && vuln.contains("\r\n"));
    let mut expected = samples.clone();
    expected.push(one_line(&hit));
    expected.push(single.clone());
    expected.push(one_line(&vuln));
    expected.push(one_line(pretty_object.trim_end()));

    wait_events(&collector, &tailhook, expected.len());
    stop(tailhook);
    assert_same_events(&collector, &expected, "collector");

    // The same JSON values as sent (the multi-line ones included).
    let sent_values: Vec<serde_json::Value> = samples
        .iter()
        .map(String::as_str)
        .chain([hit.as_str(), single.as_str(), vuln.as_str(), pretty_object])
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(collector.events_json(), sent_values);
    // Every delivery is a JSON array by POST (the destination's method).
    for b in collector.batches() {
        assert_eq!(b.method, "POST");
        assert_eq!(b.path, "/wallarm.events");
    }
}

/// Senders posting at once, each over one keep-alive connection: every
/// request is answered 200, and each body's events arrive once, together
/// and in their order (bodies are not interleaved in the spool).
#[test]
fn concurrent_senders_on_keep_alive_connections_each_get_their_events_through_together() {
    const SENDERS: usize = 8;
    const REQUESTS: usize = 25;
    const PER_BODY: usize = 10;
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("hook", "http")
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let body_of = |sender: usize, request: usize| {
        hits((sender * REQUESTS + request) * PER_BODY, PER_BODY, 150)
    };
    std::thread::scope(|scope| {
        for sender in 0..SENDERS {
            scope.spawn(move || {
                let mut s = connect(addr);
                for request in 0..REQUESTS {
                    let body = array_body(&body_of(sender, request));
                    let req =
                        request_bytes("POST", "/", &[JSON, ("Connection", "keep-alive")], &body);
                    let reply = exchange(&mut s, &req).unwrap_or_else(|e| {
                        panic!("sender {sender}, request {request} on one connection: {e}")
                    });
                    assert_ok(&reply, &format!("sender {sender}, request {request}"));
                }
            });
        }
    });
    let all: Vec<String> = (0..SENDERS)
        .flat_map(|s| (0..REQUESTS).flat_map(move |r| body_of(s, r)))
        .collect();
    wait_seqs(&collector, &tailhook, &all);
    stop(tailhook);
    assert_each_exactly_once(&collector, &all, "concurrent senders");
    // Each body's events are consecutive and in order.
    let got: Vec<u64> = collector.events().iter().map(|e| seq_of(e)).collect();
    for body in got.chunks(PER_BODY) {
        let first = body[0];
        assert!(
            first % PER_BODY as u64 == 0
                && body.iter().enumerate().all(|(i, &s)| s == first + i as u64),
            "a body's events are split or out of order: {body:?}"
        );
    }
}

/// `max_body_bytes` is the largest body taken, whether framed by
/// Content-Length, chunked, or gzip-inflated to it; one byte more is 413.
/// A sender that waits for `100 Continue` is told 413 before it sends an
/// oversized body, and gets `100 Continue` for one that fits.
#[test]
fn max_body_bytes_is_the_largest_body_taken() {
    const LIMIT: usize = 64 * 1024;
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("hook", "http")
        .extra("max_body_bytes = \"64KiB\"")
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    // A one-event array body of exactly `size` bytes.
    let sized = |seq: usize, size: usize| -> (String, Vec<u8>) {
        let head = format!("{{\"seq\":{seq},\"object_type\":\"hit\",\"pad\":\"");
        let event = format!("{head}{}\"}}", "x".repeat(size - 2 - head.len() - 2));
        let body = format!("[{event}]").into_bytes();
        assert_eq!(body.len(), size);
        (event, body)
    };
    let over = "body is over max_body_bytes (65536 bytes)";
    let mut accepted = Vec::new();

    let (event, body) = sized(1, LIMIT);
    assert_ok(&post(addr, &body), "Content-Length = max_body_bytes");
    accepted.push(event);
    let (_, body) = sized(1001, LIMIT + 1);
    assert_refused(
        &post(addr, &body),
        413,
        over,
        "Content-Length = max_body_bytes + 1",
    );

    let (event, body) = sized(2, LIMIT);
    assert_ok(
        &send_chunked(addr, &body, true),
        "chunked, max_body_bytes in all",
    );
    accepted.push(event);
    let (_, body) = sized(1002, LIMIT + 1);
    assert_refused(
        &send_chunked(addr, &body, false),
        413,
        over,
        "chunked, max_body_bytes + 1 in all",
    );

    let gz = [JSON, ("Content-Encoding", "gzip")];
    let (event, body) = sized(3, LIMIT);
    assert_ok(
        &send(addr, "POST", "/", &gz, &gzip(&body)),
        "gzip inflating to max_body_bytes",
    );
    accepted.push(event);
    let (_, body) = sized(1003, LIMIT + 1);
    assert_refused(
        &send(addr, "POST", "/", &gz, &gzip(&body)),
        413,
        over,
        "gzip inflating to max_body_bytes + 1",
    );

    // Expect: 100-continue.
    let (event, body) = sized(4, 4096);
    let len = body.len().to_string();
    let mut s = connect(addr);
    let head = request_bytes(
        "POST",
        "/",
        &[JSON, ("Expect", "100-continue"), ("Content-Length", &len)],
        b"",
    );
    s.write_all(&head).unwrap();
    let mut interim = Vec::new();
    while find(&interim, b"\r\n\r\n").is_none() {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before 100 Continue");
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100 "),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    assert_ok(&exchange(&mut s, &body).unwrap(), "after 100 Continue");
    accepted.push(event);
    let len = (LIMIT + 1).to_string();
    let mut s = connect(addr);
    let reply = exchange(
        &mut s,
        &request_bytes(
            "POST",
            "/",
            &[JSON, ("Expect", "100-continue"), ("Content-Length", &len)],
            b"",
        ),
    )
    .unwrap();
    assert_refused(&reply, 413, over, "Expect: 100-continue over the limit");

    let last = hits(5, 1, 100);
    assert_ok(&post(addr, last[0].as_bytes()), "the last body");
    accepted.extend(last);
    wait_seqs(&collector, &tailhook, &accepted);
    stop(tailhook);
    assert_each_exactly_once(&collector, &accepted, "bodies up to max_body_bytes");
}

/// Sends `body` chunked in 4 KiB chunks, with the last chunk when
/// `complete` (else it stops there: the server must answer first), and
/// reads the answer.
fn send_chunked(addr: SocketAddr, body: &[u8], complete: bool) -> Reply {
    let mut s = connect(addr);
    let mut req = request_bytes("POST", "/", &[JSON, ("Transfer-Encoding", "chunked")], b"");
    for piece in body.chunks(4096) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    if complete {
        req.extend_from_slice(b"0\r\n\r\n");
    }
    exchange(&mut s, &req).expect("answer to a chunked body")
}

/// An element larger than the files' default `max_line_bytes` (1 MiB) is
/// still one event: an http source takes `max_body_bytes` (10 MiB by
/// default) as its only limit (README, `type = "http"`). So the body is
/// answered 200 and every element arrives whole, byte for byte.
#[test]
fn an_element_over_max_line_bytes_is_accepted_and_delivered_whole() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("hook", "http")
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let small = hits(1, 1, 200).remove(0);
    let big = hits(2, 1, (1 << 20) + 4096).remove(0);
    assert_ok(
        &post(addr, &array_body(&[small.clone(), big.clone()])),
        &format!(
            "a body under max_body_bytes with a {} byte element",
            big.len()
        ),
    );
    let marker = hits(3, 1, 200).remove(0);
    assert_ok(&post(addr, marker.as_bytes()), "the marker");
    let expected = vec![small, big, marker];
    wait_events(&collector, &tailhook, expected.len());
    stop(tailhook);
    assert_same_events(
        &collector,
        &expected,
        "a body with an element over 1 MiB, then a marker",
    );
}

// ---- 2. refusals: the status, the words, and nothing delivered ------------------

/// Every kind of refusal, each told in words, and none of the refused
/// events reaches the collector; the bodies that were accepted meanwhile
/// (the right token, gzip) do, once each.
#[test]
fn refused_requests_say_why_and_deliver_nothing() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("open", "http")
        .extra("max_body_bytes = \"64KiB\"")
        .input("guarded", "http")
        .extra(
            "path = \"/wallarm\"\nauth_header = \"X-Wallarm-Token\"\nauth_value = \"s3cret-token\"",
        )
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let open = listen_addr(&tailhook, "open");
    let guarded = listen_addr(&tailhook, "guarded");
    // Accepted events have seq < 100, refused ones seq >= 1000.
    let ev = |seq: usize| hits(seq, 1, 100).remove(0);
    let mut accepted: Vec<String> = Vec::new();

    // 400: not JSON, a non-object element, a scalar.
    let cut = ev(1000);
    let reply = post(open, &cut.as_bytes()[..cut.len() - 3]);
    assert_refused(&reply, 400, "body is not valid JSON: ", "cut-off JSON");
    assert!(reply.body.contains("EOF"), "{reply:?}");
    let reply = post(open, format!("[{},3]", ev(1001)).as_bytes());
    assert_refused(
        &reply,
        400,
        "element 2 of the array is a number, not a JSON object",
        "[object, 3]",
    );
    let reply = post(open, serde_json::to_string(&ev(1002)).unwrap().as_bytes());
    assert_refused(
        &reply,
        400,
        "body must be a JSON object or an array of objects, not a string",
        "a JSON string",
    );

    // 401: no token, a wrong one (even a prefix of the right one); the right one is taken.
    let body = array_body(&[ev(1003)]);
    let reply = send(guarded, "POST", "/wallarm", &[JSON], &body);
    assert_refused(
        &reply,
        401,
        "missing or wrong X-Wallarm-Token header",
        "no token",
    );
    for wrong in ["wrong", "s3cret", "s3cret-token2", "S3CRET-TOKEN"] {
        let reply = send(
            guarded,
            "POST",
            "/wallarm",
            &[JSON, ("X-Wallarm-Token", wrong)],
            &array_body(&[ev(1004)]),
        );
        assert_refused(
            &reply,
            401,
            "missing or wrong X-Wallarm-Token header",
            &format!("token {wrong:?}"),
        );
    }
    let good = ev(1);
    let reply = send(
        guarded,
        "POST",
        "/wallarm",
        &[JSON, ("X-Wallarm-Token", "s3cret-token")],
        &array_body(std::slice::from_ref(&good)),
    );
    assert_ok(&reply, "the right token");
    accepted.push(good);

    // 404: another path than `path`, even with the right token.
    for path in ["/", "/other", "/wallarm/x"] {
        let reply = send(
            guarded,
            "POST",
            path,
            &[JSON, ("X-Wallarm-Token", "s3cret-token")],
            &array_body(&[ev(1005)]),
        );
        assert_eq!(reply.status, 404, "POST {path}: {reply:?}");
    }

    // 405: GET and DELETE, with the methods that are accepted.
    for method in ["GET", "DELETE"] {
        let reply = send(open, method, "/", &[], b"");
        assert_refused(&reply, 405, "", method);
        assert_eq!(
            reply.header("allow"),
            Some("POST, PUT"),
            "{method}: {reply:?}"
        );
    }

    // 413: a Content-Length over max_body_bytes, answered before the body.
    let mut s = connect(open);
    let reply = exchange(
        &mut s,
        &request_bytes("POST", "/", &[JSON, ("Content-Length", "100000")], b""),
    )
    .expect("answer to an oversized Content-Length");
    assert_refused(
        &reply,
        413,
        "body is over max_body_bytes (65536 bytes)",
        "Content-Length 100000",
    );

    // 413: a chunked body that grows past it.
    let reply = chunked_over_limit(open, 1006, 64 * 1024);
    assert_refused(
        &reply,
        413,
        "body is over max_body_bytes (65536 bytes)",
        "chunked body",
    );

    // 413: a small gzip body that inflates past it.
    let bomb = format!(
        "[{{\"seq\":1007,\"object_type\":\"hit\",\"pad\":\"{}\"}}]",
        "x".repeat(1 << 20)
    );
    let packed = gzip(bomb.as_bytes());
    assert!(packed.len() < 16 * 1024, "{} bytes", packed.len());
    let reply = send(
        open,
        "POST",
        "/",
        &[JSON, ("Content-Encoding", "gzip")],
        &packed,
    );
    assert_refused(
        &reply,
        413,
        "body is over max_body_bytes (65536 bytes)",
        "gzip bomb",
    );

    // 415: an encoding other than gzip.
    let reply = send(
        open,
        "POST",
        "/",
        &[JSON, ("Content-Encoding", "br")],
        &array_body(&[ev(1008)]),
    );
    assert_refused(&reply, 415, "", "Content-Encoding br");
    assert!(reply.body.contains("br"), "{reply:?}");

    // gzip is taken.
    let zipped = vec![ev(2), ev(3)];
    let reply = send(
        open,
        "POST",
        "/",
        &[JSON, ("Content-Encoding", "gzip")],
        &gzip(&array_body(&zipped)),
    );
    assert_ok(&reply, "a gzip body");
    accepted.extend(zipped);

    // Last, one more accepted body on each source: the spool is read in
    // order, so once these arrived nothing refused before them can follow.
    for (addr, path, headers, seq) in [
        (open, "/", vec![JSON], 4),
        (
            guarded,
            "/wallarm",
            vec![JSON, ("X-Wallarm-Token", "s3cret-token")],
            5,
        ),
    ] {
        let e = ev(seq);
        assert_ok(
            &send(addr, "POST", path, &headers, e.as_bytes()),
            "the last body",
        );
        accepted.push(e);
    }
    wait_seqs(&collector, &tailhook, &accepted);
    stop(tailhook);
    assert_each_exactly_once(&collector, &accepted, "only the accepted events");
}

/// Sends a chunked body of seq-`seq` JSON that passes `limit` by 100 bytes,
/// then stops (no last chunk) and reads the answer.
fn chunked_over_limit(addr: SocketAddr, seq: usize, limit: usize) -> Reply {
    let mut s = connect(addr);
    let head = request_bytes("POST", "/", &[JSON, ("Transfer-Encoding", "chunked")], b"");
    s.write_all(&head).unwrap();
    let mut data = format!("[{{\"seq\":{seq},\"object_type\":\"hit\",\"pad\":\"").into_bytes();
    data.resize(limit + 100, b'x');
    // Up to the limit in 4 KiB chunks, then 100 bytes over it; every byte
    // sent is read before the answer, so the answer cannot be lost to a
    // reset.
    for piece in data.chunks(4096) {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(piece);
        c.extend_from_slice(b"\r\n");
        if s.write_all(&c).is_err() {
            break; // already answered and closed
        }
    }
    read_reply(&mut s).expect("answer to a chunked body over the limit")
}

// ---- 3. a full spool ----------------------------------------------------------

/// With the collector down and a 1 MiB spool, bodies of ~200 KiB are taken
/// until the spool is full, then refused with 503 and `Retry-After: 5`.
/// Once the collector is up, every accepted event is delivered once, none
/// of the refused one, and a sender that tries again gets its 200.
#[test]
fn a_full_spool_answers_503_with_retry_after_and_delivers_what_it_took() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let cfg = setup
        .builder()
        .extra("[spool]\nmax_bytes = \"1MiB\"\n")
        .input("hook", "http")
        .destination(
            "collector",
            &format!("http://127.0.0.1:{port}/wallarm.events"),
        )
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");

    const PER_BODY: usize = 100; // x 2 KiB = ~200 KiB a body
    let mut accepted: Vec<String> = Vec::new();
    let mut refused = None;
    for i in 0..12 {
        let events = hits(i * PER_BODY, PER_BODY, 2048);
        let reply = post(addr, &array_body(&events));
        match reply.status {
            200 => accepted.extend(events),
            503 => {
                refused = Some((reply, events));
                break;
            }
            _ => panic!("body #{i}: {reply:?}"),
        }
    }
    let (reply, refused_events) = refused.unwrap_or_else(|| {
        panic!(
            "12 bodies of ~200 KiB (2.4 MiB) into a 1 MiB spool with the collector down: no 503\n{}",
            tailhook.stderr()
        )
    });
    assert_refused(
        &reply,
        503,
        "the spool is full (",
        "the body that does not fit",
    );
    assert_eq!(reply.header("retry-after"), Some("5"), "{reply:?}");
    assert!(!accepted.is_empty(), "the first bodies fit");
    let spooled: usize = accepted.iter().map(|e| e.len() + 1).sum();
    assert!(
        spooled <= 1 << 20,
        "{spooled} bytes accepted into a 1 MiB spool"
    );
    // Still full: the next try is refused too.
    let again = post(addr, &array_body(&refused_events));
    assert_eq!(again.status, 503, "{again:?}");

    // The collector comes back on the destination's port.
    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    wait_seqs(&collector, &tailhook, &accepted);

    // Delivered segments are deleted and the room is given back: a sender
    // that tries again (as Retry-After tells it to) gets its 200. There is
    // no signal for it, so the sender's retries are bounded: 15 s.
    let later = hits(10_000, PER_BODY, 2048);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = post(addr, &array_body(&later));
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(
            Instant::now() < deadline,
            "the spool did not make room within 15 s of delivering everything\n{}",
            tailhook.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    accepted.extend(later);
    wait_seqs(&collector, &tailhook, &accepted);
    stop(tailhook);
    assert_each_exactly_once(&collector, &accepted, "after the outage");
    let refused_seqs = seq_set(&refused_events);
    assert!(
        collector
            .events()
            .iter()
            .all(|e| !refused_seqs.contains(&seq_of(e))),
        "a refused event was delivered"
    );
}

// ---- 4. durability ------------------------------------------------------------

/// Events answered 200 while the collector is down, then tailhook stopped
/// (SIGTERM, or kill -9) and started again with the collector up: every one
/// arrives, with those sent after the restart.
fn acknowledged_events_survive_a_restart(crash: bool) {
    let setup = Setup::new();
    let dead = dead_port();
    let config = |url: &str| {
        setup
            .builder()
            .extra("shutdown_timeout = \"1s\"")
            .input("hook", "http")
            .destination("collector", url)
            .extra("concurrency = 1")
            .write()
    };
    let cfg = config(&format!("http://127.0.0.1:{}/wallarm.events", dead.port));
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let mut acked = Vec::new();
    for i in 0..10 {
        let events = hits(i * 20, 20, 300);
        assert_ok(
            &post(addr, &array_body(&events)),
            "while the collector is down",
        );
        acked.extend(events);
    }
    // One more, acknowledged just before the stop.
    let last = hits(200, 1, 300);
    assert_ok(&post(addr, last[0].as_bytes()), "the last one");
    acked.extend(last);
    if crash {
        tailhook.kill9();
    } else {
        stop(tailhook);
    }

    let collector = fluentd();
    let cfg = config(&collector.url("/wallarm.events"));
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let after = hits(1000, 20, 300);
    assert_ok(&post(addr, &array_body(&after)), "after the restart");
    acked.extend(after);
    wait_seqs(&collector, &tailhook, &acked);
    stop(tailhook);
    if !crash {
        // Nothing had been delivered before the SIGTERM: nothing twice.
        assert_each_exactly_once(&collector, &acked, "after a SIGTERM restart");
    }
}

#[test]
fn acknowledged_events_survive_a_sigterm_restart() {
    acknowledged_events_survive_a_restart(false);
}

#[test]
fn acknowledged_events_survive_a_kill9_restart() {
    acknowledged_events_survive_a_restart(true);
}

// ---- 5. TLS -----------------------------------------------------------------

fn tls_exchange(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> io::Result<Reply> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, connect(addr));
    exchange(&mut stream, request)
}

/// An HTTPS input with a certificate from a private CA: a client that
/// trusts that CA is answered 200 and its events are delivered.
#[test]
fn tls_input_takes_events_from_a_client_that_trusts_its_ca() {
    let setup = Setup::new();
    let pki = make_pki();
    let (cert, key) = pki.write_server(setup.dir.path());
    let collector = fluentd();
    let tls = format!(
        "tls = {{ cert_file = {}, key_file = {} }}",
        toml_path(&cert),
        toml_path(&key)
    );
    let cfg = setup
        .builder()
        .input("hook", "http")
        .extra(&tls)
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    assert!(
        tailhook
            .stderr()
            .contains(&format!("address={addr} tls=true")),
        "{}",
        tailhook.stderr()
    );

    let events = hits(0, 5, 200);
    let reply = tls_exchange(
        addr,
        pki.client_config(),
        &request_bytes("POST", "/", &[JSON], &array_body(&events)),
    )
    .expect("an HTTPS request to a trusted certificate");
    assert_ok(&reply, "over TLS");

    // A client of another CA does not get through.
    let other = make_pki();
    let refused = tls_exchange(
        addr,
        other.client_config(),
        &request_bytes("POST", "/", &[JSON], &array_body(&hits(1000, 1, 200))),
    );
    assert!(refused.is_err(), "{refused:?}");

    wait_events(&collector, &tailhook, events.len());
    stop(tailhook);
    assert_same_events(&collector, &events, "over TLS");
}

/// With `client_ca_file`, a client without a certificate, or with one from
/// another CA, fails the handshake (and tailhook logs it); one with a
/// certificate from that CA is answered 200 and delivered.
#[test]
fn tls_input_with_client_ca_requires_a_client_certificate() {
    let setup = Setup::new();
    let pki = make_pki();
    let (cert, key) = pki.write_server(setup.dir.path());
    let client_ca = ClientCa::new("tailhook http input client CA");
    let ca_file = client_ca.write(setup.dir.path(), "client-ca.pem");
    let collector = fluentd();
    let tls = format!(
        "tls = {{ cert_file = {}, key_file = {}, client_ca_file = {} }}",
        toml_path(&cert),
        toml_path(&key),
        toml_path(&ca_file)
    );
    let cfg = setup
        .builder()
        .input("hook", "http")
        .extra(&tls)
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let request = |seq: usize| request_bytes("POST", "/", &[JSON], &array_body(&hits(seq, 1, 200)));

    // No client certificate. With TLS 1.3 the client's half of the handshake
    // ends before the server judges it, so the refusal shows as an alert or
    // a closed connection when the answer is read: no answer either way.
    let without = tls_exchange(addr, pki.client_config(), &request(1000));
    assert!(without.is_err(), "no client certificate: {without:?}");
    assert!(
        tailhook.wait_for_log("TLS handshake failed", WAIT),
        "{}",
        tailhook.stderr()
    );

    // A certificate from another CA.
    let (c, k) = ClientCa::new("a stranger CA").issue("stranger");
    let stranger = tls_exchange(addr, pki.client_config_with_cert(&c, &k), &request(1001));
    assert!(stranger.is_err(), "a stranger's certificate: {stranger:?}");
    assert!(tailhook.wait_for_log_count("TLS handshake failed", 2, WAIT));

    // A certificate from the client CA.
    let (c, k) = client_ca.issue("wallarm-cloud");
    let reply = tls_exchange(addr, pki.client_config_with_cert(&c, &k), &request(1))
        .expect("a request with the right client certificate");
    assert_ok(&reply, "with a client certificate");

    wait_events(&collector, &tailhook, 1);
    stop(tailhook);
    assert_same_events(&collector, &hits(1, 1, 200), "mutual TLS");
}

// ---- 6. one tailhook relaying to another ----------------------------------------

/// Tailhook A: an `http` input on `/wallarm` that requires
/// `Authorization: Bearer relay-token`, delivering to `collector`.
fn relay(setup: &Setup, collector: &Collector) -> (Tailhook, SocketAddr) {
    let cfg = setup.builder().input("relay", "http").extra("path = \"/wallarm\"\nauth_header = \"Authorization\"\nauth_value = \"Bearer relay-token\"").destination("collector", &collector.url("/wallarm.events")).extra("concurrency = 1").write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "relay");
    (tailhook, addr)
}

/// Tailhook B's config: a file source and a destination `to-a` sending to
/// A's input with `Authorization: Bearer <token>`.
fn sender_config(setup: &Setup, a: SocketAddr, token: &str) -> PathBuf {
    setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("to-a", &format!("http://{a}/wallarm"))
        .extra(&format!(
            "concurrency = 1\nheaders = {{ Authorization = \"Bearer {token}\" }}"
        ))
        .write()
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
        "one report line for {name}\n{}",
        exit.output()
    );
    lines[0]
}

/// `tailhook test` pointed at another tailhook's input succeeds (200), and
/// the test message goes on to the collector; with a wrong token it fails
/// with the 401 in words and nothing goes on.
#[test]
fn tailhook_test_through_another_tailhook_reaches_the_collector() {
    let a_setup = Setup::new();
    let collector = fluentd();
    let (a, addr) = relay(&a_setup, &collector);

    let b_setup = Setup::new();
    let b_cfg = sender_config(&b_setup, addr, "relay-token");
    let exit = run_cmd(&["test", "-c", &b_cfg.display().to_string()], &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let line = report_line(&exit, "to-a");
    assert!(line.starts_with("to-a: OK: HTTP 200 in "), "{line}");
    assert!(
        line.ends_with(&format!("(POST http://{addr}/wallarm)")),
        "{line}"
    );

    wait_events(&collector, &a, 1);
    let events = collector.events_json();
    assert!(
        events[0]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("[Test Message]")),
        "{events:?}"
    );
    assert_eq!(collector.events()[0], TEST_MESSAGE.as_bytes());

    // A wrong token: exit 1, the 401 and its reason.
    let bad_cfg = sender_config(&b_setup, addr, "not-the-token");
    let exit = run_cmd(&["test", "-c", &bad_cfg.display().to_string()], &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let line = report_line(&exit, "to-a");
    assert!(line.starts_with("to-a: FAILED: HTTP 401"), "{line}");
    assert!(
        line.contains("missing or wrong Authorization header"),
        "{line}"
    );
    assert!(
        !exit.output().contains("not-the-token"),
        "the token was printed"
    );

    // A marker after it: once it arrived, the refused message cannot follow.
    let marker = hits(1, 1, 100).remove(0);
    assert_ok(
        &send(
            addr,
            "POST",
            "/wallarm",
            &[JSON, ("Authorization", "Bearer relay-token")],
            marker.as_bytes(),
        ),
        "the marker",
    );
    wait_events(&collector, &a, 2);
    stop(a);
    assert_same_events(&collector, &[TEST_MESSAGE.to_string(), marker], "relayed");
}

/// `tailhook run` B tails the samples and ships them to A, which ships them
/// to the collector: every sample arrives once, in order, byte for byte.
#[test]
fn run_relays_every_sample_through_another_tailhook() {
    let a_setup = Setup::new();
    let collector = fluentd();
    let (a, addr) = relay(&a_setup, &collector);
    let b_setup = Setup::new();
    std::fs::copy(SAMPLES, b_setup.log("samples.ndjson")).unwrap();
    let b = Tailhook::start(&sender_config(&b_setup, addr, "relay-token"));

    let samples = sample_elements();
    wait_events(&collector, &a, samples.len());
    stop(b);
    stop(a);
    assert_same_events(&collector, &samples, "through two tailhooks");
}

// ---- 7. delivered segments leave the spool ------------------------------------

/// Segments whose events were all delivered are deleted: while running
/// (all but the one being written), and, after a restart, the previous
/// run's last one too.
#[test]
fn delivered_spool_segments_are_deleted() {
    let setup = Setup::new();
    let collector = fluentd();
    // A 1 MiB spool closes segments at 128 KiB.
    let cfg = setup
        .builder()
        .block("[spool]\nmax_bytes = \"1MiB\"")
        .input("hook", "http")
        .destination("collector", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let mut sent = Vec::new();
    for i in 0..6 {
        let events = hits(i * 50, 50, 1024); // ~50 KiB a body
        assert_ok(&post(addr, &array_body(&events)), "a body");
        sent.extend(events);
    }
    wait_seqs(&collector, &tailhook, &sent);
    assert!(
        wait_for_segments(&setup, |s| s.len() <= 1),
        "delivered segments were not deleted while running: {:?}\n{}",
        spool_segments(&setup, "hook"),
        tailhook.stderr()
    );
    stop(tailhook);
    let before = spool_segments(&setup, "hook");

    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let more = hits(1000, 10, 1024);
    assert_ok(&post(addr, &array_body(&more)), "after the restart");
    sent.extend(more);
    wait_seqs(&collector, &tailhook, &sent);
    assert!(
        wait_for_segments(&setup, |s| s.len() <= 1
            && s.iter().all(|p| !before.contains(p))),
        "after a restart, the previous run's delivered segments {before:?} are not all \
         deleted: {:?}\n{}",
        spool_segments(&setup, "hook"),
        tailhook.stderr()
    );
    stop(tailhook);
    assert_each_exactly_once(&collector, &sent, "across the restart");
}

/// Polls the spool of `hook` (there is no signal for a deletion) every
/// 50 ms for up to 10 s, until `done` holds.
fn wait_for_segments(setup: &Setup, done: impl Fn(&[PathBuf]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if done(&spool_segments(setup, "hook")) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that never finishes its request headers is closed after the
/// header timeout (10 s), by the `http` input and by the metrics listener
/// alike, instead of holding its connection (and a file descriptor) open.
#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("hook", "http")
        .destination("collector", &collector.url("/t"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addrs = [
        listen_addr(&tailhook, "hook"),
        support::metrics::metrics_addr(&tailhook),
    ];
    let mut conns: Vec<std::net::TcpStream> = addrs
        .iter()
        .map(|&a| {
            let mut s = connect(a);
            s.write_all(
                b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n",
            )
            .unwrap();
            s
        })
        .collect();
    for (s, a) in conns.iter_mut().zip(addrs) {
        // Longer than the header timeout, shorter than hyper's default
        // (30 s): without the setting this read times out instead of
        // seeing the close.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(
            read.is_ok(),
            "{a}: the connection was not closed: {read:?}\n{}",
            tailhook.stderr()
        );
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{a}: {text}"
        );
    }
    // The listener still serves a real request afterwards.
    assert_ok(&post(addrs[0], b"{\"a\":1}"), "a request after the cut one");
    stop(tailhook);
}

/// `max_connections` bounds the connections served at once: with 1, a
/// second client is not answered while the first holds its connection,
/// and is answered as soon as the first closes.
#[test]
fn max_connections_bounds_the_connections_served_at_once() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("hook", "http")
        .extra("max_connections = 1\n")
        .destination("collector", &collector.url("/t"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    // The first client keeps its connection (keep-alive) after a request.
    let mut first = connect(addr);
    let reply = exchange(
        &mut first,
        &request_bytes(
            "POST",
            "/",
            &[JSON, ("Connection", "keep-alive")],
            b"{\"n\":1}",
        ),
    )
    .unwrap();
    assert_ok(&reply, "the first client");
    // The second is accepted by the kernel but not served meanwhile.
    let mut second = connect(addr);
    second
        .write_all(&request_bytes("POST", "/", &[JSON], b"{\"n\":2}"))
        .unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = second.read(&mut byte);
    assert!(
        early.is_err(),
        "the second client was served while the first held the only connection: {early:?}"
    );
    drop(first);
    second.set_read_timeout(Some(WAIT)).unwrap();
    let reply = read_reply(&mut second).unwrap();
    assert_ok(&reply, "the second client, once the first closed");
    wait_events(&collector, &tailhook, 2);
    stop(tailhook);
}

/// A request head over `max_header_bytes` is answered 431 and nothing is
/// spooled; one just under it is served. The metrics listener caps its heads
/// at 32 KiB the same way.
#[test]
fn a_request_head_over_max_header_bytes_is_answered_431() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .input("hook", "http")
        .extra("max_header_bytes = \"4KiB\"")
        .destination("collector", &collector.url("/t"))
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");
    let big = "x".repeat(5 << 10);
    let reply = send(addr, "POST", "/", &[JSON, ("X-Big", &big)], b"{\"n\":1}");
    assert_eq!(reply.status, 431, "{reply:?}");
    let fits = "x".repeat(3 << 10);
    assert_ok(
        &send(addr, "POST", "/", &[JSON, ("X-Big", &fits)], b"{\"n\":2}"),
        "a head under max_header_bytes",
    );
    wait_events(&collector, &tailhook, 1);
    assert_eq!(collector.events(), vec![b"{\"n\":2}".to_vec()]);

    let metrics = support::metrics::metrics_addr(&tailhook);
    let mut s = connect(metrics);
    let big = "x".repeat(40 << 10);
    let reply = exchange(
        &mut s,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(reply.status, 431, "{reply:?}");
    stop(tailhook);
}
