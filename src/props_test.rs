//! Properties of the parsers that take input from outside — line framing
//! and classification, the line cutter of stream inputs, the `http` input's
//! body handling and the config loader — over generated input: they never
//! panic, never lose the bytes of a valid object, and split arrays exactly
//! as `serde_json` reads them.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::event::{frame_line, wrap_invalid, Class, FrameSink, Invalid};
use crate::source::lines::LineBuffer;

/// What framing produced, in order.
#[derive(Default)]
struct Collected {
    events: Vec<Bytes>,
    invalid: Vec<(Bytes, Invalid)>,
}

impl FrameSink for Collected {
    fn event(&mut self, bytes: Bytes, _class: &Class<'_>) {
        self.events.push(bytes);
    }
    fn invalid(&mut self, raw: Bytes, why: Invalid) {
        self.invalid.push((raw, why));
    }
}

fn frame(line: &[u8]) -> Collected {
    let mut c = Collected::default();
    frame_line(&Bytes::copy_from_slice(line), &mut c);
    c
}

/// Any JSON value: unicode and escaped strings, integers up to u64 and
/// i64, floats, nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[\"\\\\/\\n\\t\\u{0}-\\u{1f}]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Wallarm-like object: the same keys first, the varying ones late.
fn json_object() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..5),
        any::<u64>(),
    )
        .prop_map(|(rest, seq)| {
            let mut m = serde_json::Map::new();
            m.insert("anomality".into(), Value::from(0.98));
            m.insert("domain".into(), Value::from("example.com"));
            for (k, v) in rest {
                m.insert(k, v);
            }
            m.insert("seq".into(), Value::from(seq));
            Value::Object(m)
        })
}

/// JSON whitespace that may surround a line's value or its elements.
fn ws() -> impl Strategy<Value = String> {
    "[ \t\r]{0,2}"
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes: no panic, and everything reported is a piece of
    /// the line; a wrapped invalid line is valid JSON holding the line.
    #[test]
    fn framing_any_bytes_never_panics(line in prop::collection::vec(any::<u8>(), 0..200)) {
        let c = frame(&line);
        for e in &c.events {
            prop_assert!(line.windows(e.len()).any(|w| w == e.as_ref()) || e.is_empty());
        }
        for (raw, why) in &c.invalid {
            let wrapped = wrap_invalid(raw, why);
            let v: Value = serde_json::from_slice(&wrapped).expect("wrapped is JSON");
            let lossy = String::from_utf8_lossy(raw).into_owned();
            prop_assert_eq!(v["message"].as_str().unwrap(), lossy.as_str());
        }
    }

    /// A line holding one object is one event: its exact bytes.
    #[test]
    fn an_object_line_is_one_event_byte_for_byte(obj in json_object(), a in ws(), b in ws()) {
        let text = serde_json::to_string(&obj).unwrap();
        let line = format!("{a}{text}{b}");
        let c = frame(line.as_bytes());
        prop_assert!(c.invalid.is_empty(), "{:?}", c.invalid);
        prop_assert_eq!(c.events.len(), 1);
        prop_assert_eq!(c.events[0].as_ref(), text.as_bytes());
    }

    /// An array line is split exactly as serde_json reads it: one event
    /// per object element (its raw bytes), an invalid entry per other
    /// element, in order.
    #[test]
    fn arrays_split_as_serde_json_reads_them(
        elements in prop::collection::vec(prop_oneof![3 => json_object(), 1 => json_value()], 0..6),
        seps in prop::collection::vec(ws(), 6),
    ) {
        let mut line = String::from("[");
        for (i, e) in elements.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&seps[i]);
            line.push_str(&serde_json::to_string(e).unwrap());
        }
        line.push(']');
        let c = frame(line.as_bytes());
        let raws: Vec<&RawValue> = serde_json::from_str(&line).unwrap();
        let objects: Vec<&str> = raws.iter().map(|r| r.get()).filter(|r| r.starts_with('{')).collect();
        let others = raws.len() - objects.len();
        let got: Vec<&[u8]> = c.events.iter().map(|e| e.as_ref()).collect();
        let want: Vec<&[u8]> = objects.iter().map(|o| o.as_bytes()).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(c.invalid.len(), others);
        prop_assert!(c.invalid.iter().all(|(_, why)| *why == Invalid::NotObject));
    }

    /// Stream input cut at any points: the lines that come out are the
    /// lines that went in, each whole, in order; a last line without a
    /// newline comes out at the end.
    #[test]
    fn the_line_cutter_keeps_every_byte_of_lines_within_the_limit(
        lines in prop::collection::vec("[ -~]{0,40}", 0..30),
        last in "[ -~]{0,40}",
        cuts in prop::collection::vec(1usize..64, 1..20),
    ) {
        let mut input = String::new();
        for l in &lines {
            input.push_str(l);
            input.push('\n');
        }
        input.push_str(&last);
        let mut lb = LineBuffer::new(64);
        let mut out = Vec::new();
        let mut rest = input.as_bytes();
        for &n in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            lb.space().extend_from_slice(piece);
            if let Some(b) = lb.take() {
                out.extend_from_slice(&b);
            }
            rest = tail;
        }
        if let Some(b) = lb.finish() {
            out.extend_from_slice(&b);
        }
        let mut want = input.clone();
        if last.trim().is_empty() {
            want.truncate(want.len() - last.len());
        } else {
            want.push('\n');
        }
        prop_assert_eq!(String::from_utf8(out).unwrap(), want);
        prop_assert_eq!(lb.cut, 0);
    }

    /// A webhook body of objects becomes one spool line per object, each
    /// the same JSON value; any bytes at all give lines or a refusal, never
    /// a panic.
    #[test]
    fn webhook_bodies_become_one_line_per_object(
        elements in prop::collection::vec(json_object(), 0..6),
        pretty in any::<bool>(),
        noise in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let body = if pretty {
            serde_json::to_string_pretty(&elements).unwrap()
        } else {
            serde_json::to_string(&elements).unwrap()
        };
        let (lines, n) = crate::source::http::body_lines(body.as_bytes(), false, usize::MAX).unwrap();
        prop_assert_eq!(n, elements.len());
        let text = String::from_utf8(lines).unwrap();
        let got: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // Compared as parsed on both sides (serde_json reads some floats
        // back one ulp off; the bytes tailhook passes on are the sender's).
        let want: Vec<Value> = elements
            .iter()
            .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
            .collect();
        prop_assert_eq!(got, want);
        let _ = crate::source::http::body_lines(&noise, false, 1 << 20);
        let _ = crate::source::http::body_lines(&noise, true, 1 << 20);
    }

    /// The config loader, on text that is nearly a config: no panic, and
    /// an error is words with a location.
    #[test]
    fn the_config_loader_never_panics(
        keys in prop::collection::vec(
            prop_oneof![
                Just("name"), Just("type"), Just("url"), Just("include"), Just("listen"),
                Just("headers"), Just("max_bytes"), Just("timeout"), Just("events"),
                Just("auth_value"), Just("[[source]]"), Just("[[destination]]"),
                Just("[destination.batch]"), Just("${X:-1}"), Just("$${")
            ],
            0..12
        ),
        values in prop::collection::vec("\\PC{0,12}", 12),
    ) {
        let mut text = String::new();
        for (k, v) in keys.iter().zip(&values) {
            if k.starts_with('[') {
                text.push_str(k);
            } else {
                text.push_str(&format!("{k} = {v:?}"));
            }
            text.push('\n');
        }
        if let Err(e) = crate::Config::parse(std::path::Path::new("p.toml"), &text, |_| None) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
