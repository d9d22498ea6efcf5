//! Framing one line into events: an object is an event, an array one event
//! per element; what is neither is invalid, and can be wrapped.

use std::fmt;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::visit::LineShape;
use super::Class;

/// Why a line (or one element of an array line) is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not valid UTF-8.
    Utf8,
    /// Not valid JSON (the parser's message).
    Json(String),
    /// Valid JSON, but not an object (nor an array of objects).
    NotObject,
    /// Longer than `max_line_bytes`.
    TooLong {
        /// The length of the whole line.
        len: u64,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Utf8 => f.write_str("line is not valid UTF-8"),
            Invalid::Json(e) => write!(f, "line is not valid JSON: {e}"),
            Invalid::NotObject => f.write_str("value is not a JSON object"),
            // The length is not given: a socket input keeps only the start
            // of a long line, so it is not known downstream.
            Invalid::TooLong { max, .. } => {
                write!(f, "line is longer than max_line_bytes ({max})")
            }
        }
    }
}

/// What framing one line produced, element by element.
pub trait FrameSink {
    /// An event that is a JSON object, with its class.
    fn event(&mut self, bytes: Bytes, class: &Class<'_>);
    /// A line, or an array element, that is not an event.
    fn invalid(&mut self, raw: Bytes, why: Invalid);
}

/// Splits one line (without its newline) into events and classifies them.
///
/// An object is one event; an array is one event per element; a blank line or
/// an empty array is nothing. Anything else is reported as invalid.
pub fn frame_line(line: &Bytes, sink: &mut impl FrameSink) {
    let trimmed = trim_json_ws(line);
    if trimmed.is_empty() {
        return;
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        sink.invalid(line.slice_ref(trimmed), Invalid::Utf8);
        return;
    };
    let shape = match serde_json::from_str::<LineShape<'_>>(text) {
        Ok(shape) => shape,
        Err(e) => {
            sink.invalid(line.slice_ref(trimmed), Invalid::Json(e.to_string()));
            return;
        }
    };
    match shape {
        LineShape::Object(fields) => sink.event(line.slice_ref(trimmed), &fields.class()),
        LineShape::Scalar => sink.invalid(line.slice_ref(trimmed), Invalid::NotObject),
        LineShape::Array(elements) => {
            if let [Some(only)] = elements.as_slice() {
                // One element: its bytes are the inside of the brackets.
                let inner = trim_json_ws(&trimmed[1..trimmed.len() - 1]);
                sink.event(line.slice_ref(inner), &only.class());
                return;
            }
            if elements.is_empty() {
                return;
            }
            // Several elements: find their bounds. The line is known to be valid.
            let raws: Vec<&RawValue> = match serde_json::from_str(text) {
                Ok(raws) => raws,
                Err(e) => {
                    sink.invalid(line.slice_ref(trimmed), Invalid::Json(e.to_string()));
                    return;
                }
            };
            for (raw, fields) in raws.iter().zip(elements.iter()) {
                let bytes = line.slice_ref(raw.get().as_bytes());
                match fields {
                    Some(p) => sink.event(bytes, &p.class()),
                    None => sink.invalid(bytes, Invalid::NotObject),
                }
            }
        }
    }
}

/// Classifies one JSON object given as text (used for bodies built elsewhere).
pub fn classify(object: &str) -> Option<Class<'_>> {
    match serde_json::from_str::<LineShape<'_>>(object).ok()? {
        LineShape::Object(p) => Some(p.class()),
        _ => None,
    }
}

/// Builds the event forwarded for an invalid line under `on_invalid = "wrap"`:
/// `{"message": "<the raw line>", "tailhook_error": "<why>"}`.
pub fn wrap_invalid(raw: &[u8], why: &Invalid) -> Bytes {
    let message = String::from_utf8_lossy(raw);
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(b"{\"message\":");
    // Serialising a str cannot fail.
    serde_json::to_writer(&mut out, message.as_ref()).expect("serialise str");
    out.extend_from_slice(b",\"tailhook_error\":");
    serde_json::to_writer(&mut out, &why.to_string()).expect("serialise str");
    out.push(b'}');
    Bytes::from(out)
}

pub(super) fn trim_json_ws(s: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = s.iter().position(|b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Risk};

    #[derive(Default)]
    struct Collect {
        events: Vec<(String, Kind, Option<Risk>, Option<String>)>,
        invalid: Vec<(String, Invalid)>,
    }

    impl FrameSink for Collect {
        fn event(&mut self, bytes: Bytes, class: &Class<'_>) {
            self.events.push((
                String::from_utf8(bytes.to_vec()).unwrap(),
                class.kind,
                class.risk,
                class.notification_type.as_deref().map(str::to_owned),
            ));
        }
        fn invalid(&mut self, raw: Bytes, why: Invalid) {
            self.invalid
                .push((String::from_utf8_lossy(&raw).into_owned(), why));
        }
    }

    fn frame(line: &str) -> Collect {
        let mut c = Collect::default();
        frame_line(&Bytes::copy_from_slice(line.as_bytes()), &mut c);
        c
    }

    fn kind_of(line: &str) -> (Kind, Option<Risk>) {
        let c = frame(line);
        assert_eq!(c.events.len(), 1, "{line}");
        (c.events[0].1, c.events[0].2)
    }

    const SHAPES: &str = include_str!("../../examples/sample-events.ndjson");

    #[test]
    fn reference_flat_shapes() {
        let hit = r#"[{"anomality":0.98,"domain":"example.com","type":"sqli","block_status":"monitored","id":["a","b"],"object_type":"hit"}]"#;
        assert_eq!(kind_of(hit), (Kind::Hit, None));
        let vuln = r#"[{"title":"Missing \"Strict-Transport-Security\" header","source":"93.184.216.34:443","type":"Info","domain":"www.example.com","threat":"Low","link":"https://my.wallarm.com/object/282157","summary":"New vulnerability identified"}]"#;
        assert_eq!(kind_of(vuln), (Kind::Vulnerability, Some(Risk::Low)));
        let test = r#"[{"title":"Test","source":"Wallarm","type":"Info","domain":"example.com","threat":"Medium","link":"https://my.wallarm.com/object/555","summary":"[Test Message] New vulnerability identified"}]"#;
        assert_eq!(kind_of(test), (Kind::Test, None));
    }

    #[test]
    fn current_shapes() {
        let cases = [
            ("new_hits", Kind::Hit, None),
            ("vuln", Kind::Vulnerability, Some(Risk::High)),
            ("security_issue", Kind::SecurityIssue, Some(Risk::Critical)),
            ("ip_blocked", Kind::Trigger, None),
            ("create_user", Kind::System, None),
        ];
        let shapes = include_str!("../../examples/sample-events.ndjson");
        for (nt, kind, risk) in cases {
            let line = shapes
                .lines()
                .find(|l| l.contains(&format!("\"notification_type\":\"{nt}\"")))
                .unwrap_or_else(|| panic!("sample for {nt}"));
            let c = frame(line);
            assert_eq!(c.events.len(), 1);
            assert_eq!((c.events[0].1, c.events[0].2), (kind, risk), "{nt}");
            assert_eq!(c.events[0].3.as_deref(), Some(nt));
        }
        let lower_test =
            r#"{"summary":"[Test message] hello","details":{"notification_type":"new_hits"}}"#;
        assert_eq!(kind_of(lower_test), (Kind::Test, None));
    }

    #[test]
    fn every_sample_line_is_valid() {
        let mut kinds = std::collections::BTreeSet::new();
        for line in SHAPES.lines().filter(|l| !l.trim().is_empty()) {
            let c = frame(line);
            assert!(c.invalid.is_empty(), "{line}");
            kinds.extend(c.events.iter().map(|e| e.1));
        }
        assert_eq!(kinds.len(), Kind::ALL.len(), "samples cover every kind");
    }

    #[test]
    fn arrays_split_byte_for_byte() {
        let c = frame(r#" [ {"a" : 1.50} ,{"b":[1, 2]},  {"c":"\u00e9"} ] "#);
        let got: Vec<_> = c.events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            got,
            [r#"{"a" : 1.50}"#, r#"{"b":[1, 2]}"#, r#"{"c":"\u00e9"}"#]
        );
        let one = frame("[ {\"z\":1,\"a\":2} ]\r");
        assert_eq!(one.events[0].0, "{\"z\":1,\"a\":2}");
        assert!(frame("[]").events.is_empty());
        assert!(frame("   ").events.is_empty() && frame("").invalid.is_empty());
    }

    #[test]
    fn invalid_lines() {
        assert!(matches!(frame("{nope").invalid[0].1, Invalid::Json(_)));
        assert_eq!(frame("42").invalid[0].1, Invalid::NotObject);
        assert_eq!(frame("\"s\"").invalid[0].1, Invalid::NotObject);
        let mixed = frame(r#"[{"a":1},2,"x"]"#);
        assert_eq!(mixed.events.len(), 1);
        assert_eq!(
            mixed.invalid,
            [
                ("2".into(), Invalid::NotObject),
                ("\"x\"".into(), Invalid::NotObject)
            ]
        );
        let mut c = Collect::default();
        frame_line(&Bytes::from_static(b"{\"a\":\"\xff\"}"), &mut c);
        assert_eq!(c.invalid[0].1, Invalid::Utf8);
        assert!(matches!(
            frame("{\"a\":1}\0").invalid[0].1,
            Invalid::Json(_)
        ));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(frame(&deep).invalid[0].1, Invalid::NotObject);
        // Deep objects parse without recursion (no stack overflow), as one event.
        let deep_obj = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
        assert_eq!(frame(&deep_obj).events.len(), 1);
        // Duplicate keys are valid JSON.
        assert_eq!(
            kind_of(r#"{"object_type":"x","object_type":"hit"}"#).0,
            Kind::Hit
        );
    }

    #[test]
    fn wrap_is_valid_json() {
        let w = wrap_invalid(b"bad \"line\" \xff", &Invalid::Utf8);
        let v: serde_json::Value = serde_json::from_slice(&w).unwrap();
        assert_eq!(v["message"], "bad \"line\" \u{fffd}");
        assert_eq!(v["tailhook_error"], "line is not valid UTF-8");
    }
}
