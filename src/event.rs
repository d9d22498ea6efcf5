//! Framing a line into events and classifying each event's kind.
//!
//! A line is parsed once, by a borrowed visitor that reads only the fields
//! classification needs and skips (but still validates) the rest. The bytes
//! of an event are slices of the line as read: nothing is re-serialised.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The kind of an event: the one table of the SPEC, section 2, and of the README.
///
/// | kind | recognised by |
/// |---|---|
/// | `test` | `summary` starting with `[Test Message]` (any case), checked first |
/// | `hit` | `"object_type": "hit"`, or `notification_type` `new_hits` |
/// | `vulnerability` | `threat` beside `title` or `link`, or `notification_type` `vuln` (risk from `details.vuln.threat`) |
/// | `security_issue` | `notification_type` `security_issue` (risk from `details.security_issue.risk`) |
/// | `system` | a `notification_type` naming a user, integration or application change |
/// | `rule` | a `notification_type` naming a rule or a trigger created, updated or deleted |
/// | `trigger` | a trigger that fired: `ip_blocked`, `attacks_exceeded`, `api_structure_changed`, any `*_exceeded` |
/// | `scope` | a `notification_type` naming a scope (exposed assets) change |
/// | `other` | anything else, including notification types not known today |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The integration's test message; passes every selection.
    Test,
    /// An attack hit.
    Hit,
    /// A vulnerability, with its risk.
    Vulnerability,
    /// A security issue, with its risk.
    SecurityIssue,
    /// A user, integration or application change.
    System,
    /// A rule or trigger created, updated or deleted.
    Rule,
    /// A trigger that fired.
    Trigger,
    /// A scope (exposed assets) change.
    Scope,
    /// Anything else.
    Other,
}

impl Kind {
    /// Every kind, in the order of the table.
    pub const ALL: [Kind; 9] = [
        Kind::Test,
        Kind::Hit,
        Kind::Vulnerability,
        Kind::SecurityIssue,
        Kind::System,
        Kind::Rule,
        Kind::Trigger,
        Kind::Scope,
        Kind::Other,
    ];

    /// The name used in configs, logs and the README.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Test => "test",
            Kind::Hit => "hit",
            Kind::Vulnerability => "vulnerability",
            Kind::SecurityIssue => "security_issue",
            Kind::System => "system",
            Kind::Rule => "rule",
            Kind::Trigger => "trigger",
            Kind::Scope => "scope",
            Kind::Other => "other",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// The kind a current-shape `details.notification_type` stands for.
    pub fn of_notification_type(t: &str) -> Kind {
        match t {
            "new_hits" | "hit" | "hits" => Kind::Hit,
            "vuln" | "vulns" | "new_vuln" | "new_vulns" | "vulnerability" => Kind::Vulnerability,
            "security_issue" | "security_issues" | "new_security_issue" => Kind::SecurityIssue,
            "ip_blocked"
            | "attacks_exceeded"
            | "api_structure_changed"
            | "brute_force"
            | "bruteforce"
            | "forced_browsing"
            | "bola" => Kind::Trigger,
            _ if t.ends_with("_exceeded") => Kind::Trigger,
            _ if t.contains("scope") => Kind::Scope,
            _ if t.contains("rule") || t.contains("trigger") => Kind::Rule,
            _ if t.contains("user") || t.contains("integration") || t.contains("application") => {
                Kind::System
            }
            _ => Kind::Other,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A risk level of a vulnerability (`high`, `medium`, `low`) or a security
/// issue (also `critical`, `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// critical
    Critical,
    /// high
    High,
    /// medium
    Medium,
    /// low
    Low,
    /// info
    Info,
}

impl Risk {
    const ALL: [Risk; 5] = [
        Risk::Critical,
        Risk::High,
        Risk::Medium,
        Risk::Low,
        Risk::Info,
    ];

    /// The lower-case name used in selections.
    pub fn name(self) -> &'static str {
        match self {
            Risk::Critical => "critical",
            Risk::High => "high",
            Risk::Medium => "medium",
            Risk::Low => "low",
            Risk::Info => "info",
        }
    }

    /// Reads a risk level without regard to case.
    pub fn parse(s: &str) -> Option<Risk> {
        Risk::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s.trim()))
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// What classification found out about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class<'a> {
    /// The kind of the table.
    pub kind: Kind,
    /// The risk, for vulnerabilities and security issues that carry one.
    pub risk: Option<Risk>,
    /// The raw `details.notification_type`, when the event has one.
    pub notification_type: Option<Cow<'a, str>>,
}

/// The kinds one destination receives, parsed from its `events` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    all: bool,
    kinds: u16,
    vulnerability_risks: u8,
    security_issue_risks: u8,
    notification_types: Vec<String>,
}

impl Selection {
    /// Every event (the default when `events` is not set).
    pub fn all() -> Selection {
        Selection {
            all: true,
            kinds: 0,
            vulnerability_risks: 0,
            security_issue_risks: 0,
            notification_types: Vec::new(),
        }
    }

    /// Parses `["hit", "vulnerability:high", "notification:ip_blocked", …]`.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Selection, String> {
        let mut sel = Selection {
            all: false,
            ..Selection::all()
        };
        for item in items {
            let item = item.as_ref();
            let (name, qualifier) = match item.split_once(':') {
                Some((n, q)) => (n, Some(q)),
                None => (item, None),
            };
            if name == "notification" {
                match qualifier {
                    Some(t) if !t.is_empty() => sel.notification_types.push(t.to_string()),
                    _ => return Err(format!("`{item}`: `notification:` needs a notification type, as in `notification:ip_blocked`")),
                }
                continue;
            }
            let kind = Kind::from_name(name).ok_or_else(|| {
                format!(
                    "unknown event kind `{item}`; expected one of {}, a risk such as `vulnerability:high`, or `notification:<type>`",
                    Kind::ALL.map(Kind::name).join(", ")
                )
            })?;
            match (kind, qualifier) {
                (_, None) => sel.kinds |= kind.bit(),
                (Kind::Vulnerability, Some(q)) => match Risk::parse(q) {
                    Some(r @ (Risk::High | Risk::Medium | Risk::Low)) => {
                        sel.vulnerability_risks |= r.bit()
                    }
                    _ => {
                        return Err(format!(
                            "`{item}`: a vulnerability's risk is one of high, medium, low"
                        ))
                    }
                },
                (Kind::SecurityIssue, Some(q)) => match Risk::parse(q) {
                    Some(r) => sel.security_issue_risks |= r.bit(),
                    None => return Err(format!(
                        "`{item}`: a security issue's risk is one of critical, high, medium, low, info"
                    )),
                },
                (_, Some(_)) => {
                    return Err(format!(
                        "`{item}`: only vulnerability and security_issue take a risk level"
                    ))
                }
            }
        }
        Ok(sel)
    }

    /// True when the list was explicitly empty: nothing but test messages is sent.
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.kinds == 0
            && self.vulnerability_risks == 0
            && self.security_issue_risks == 0
            && self.notification_types.is_empty()
    }

    /// True when the destination receives every event.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether an event of this class goes to the destination.
    pub fn matches(&self, class: &Class<'_>) -> bool {
        if self.all || class.kind == Kind::Test || self.kinds & class.kind.bit() != 0 {
            return true;
        }
        let risk_bit = class.risk.map_or(0, Risk::bit);
        let by_risk = match class.kind {
            Kind::Vulnerability => self.vulnerability_risks & risk_bit != 0,
            Kind::SecurityIssue => self.security_issue_risks & risk_bit != 0,
            _ => false,
        };
        by_risk
            || class
                .notification_type
                .as_deref()
                .is_some_and(|t| self.notification_types.iter().any(|n| n == t))
    }
}

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
        LineShape::Object(probe) => sink.event(line.slice_ref(trimmed), &probe.class()),
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
            for (raw, probe) in raws.iter().zip(elements.iter()) {
                let bytes = line.slice_ref(raw.get().as_bytes());
                match probe {
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

fn trim_json_ws(s: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = s.iter().position(|b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Answers every scalar JSON value (and, with `str`, strings) with one value.
macro_rules! scalars_are {
    ($v:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
    ($v:expr, str) => {
        scalars_are!($v);
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
}

/// The top-level shape of a line, with the probe of each object.
enum LineShape<'a> {
    Object(Probe<'a>),
    /// One probe per element; `None` for an element that is not an object.
    Array(Vec<Option<Probe<'a>>>),
    Scalar,
}

impl<'de> Deserialize<'de> for LineShape<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LineShape<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object or array")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Probe::from_map(map).map(LineShape::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(el) = seq.next_element::<MaybeProbe<'de>>()? {
                    out.push(el.0);
                }
                Ok(LineShape::Array(out))
            }
            scalars_are!(LineShape::Scalar, str);
        }
        d.deserialize_any(V)
    }
}

/// The fields of one object that classification reads.
#[derive(Default)]
struct Probe<'a> {
    summary: Option<Cow<'a, str>>,
    object_type: Option<Cow<'a, str>>,
    threat: Option<Cow<'a, str>>,
    has_title_or_link: bool,
    details: Details<'a>,
}

#[derive(Default)]
struct Details<'a> {
    notification_type: Option<Cow<'a, str>>,
    vuln_threat: Option<Cow<'a, str>>,
    security_issue_risk: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TopField {
    Summary,
    ObjectType,
    Threat,
    Title,
    Link,
    Details,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DetailsField {
    NotificationType,
    Vuln,
    SecurityIssue,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum RiskField {
    Threat,
    Risk,
    #[serde(other)]
    Other,
}

impl<'a> Probe<'a> {
    fn from_map<A: MapAccess<'a>>(mut map: A) -> Result<Probe<'a>, A::Error> {
        let mut p = Probe::default();
        // Later duplicates win, as in most JSON readers; none is an error.
        while let Some(key) = map.next_key::<TopField>()? {
            match key {
                TopField::Summary => p.summary = map.next_value::<Text<'a>>()?.0,
                TopField::ObjectType => p.object_type = map.next_value::<Text<'a>>()?.0,
                TopField::Threat => p.threat = map.next_value::<Text<'a>>()?.0,
                TopField::Title | TopField::Link => {
                    map.next_value::<IgnoredAny>()?;
                    p.has_title_or_link = true;
                }
                TopField::Details => p.details = map.next_value::<Details<'a>>()?,
                TopField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }

    fn class(&self) -> Class<'a> {
        let risk_of = |s: &Option<Cow<'a, str>>| s.as_deref().and_then(Risk::parse);
        let is_test = self.summary.as_deref().is_some_and(|s| {
            s.len() >= 14 && s.as_bytes()[..14].eq_ignore_ascii_case(b"[test message]")
        });
        let notification_type = self.details.notification_type.clone();
        let (kind, risk) = if is_test {
            (Kind::Test, None)
        } else if let Some(t) = notification_type.as_deref() {
            match Kind::of_notification_type(t) {
                Kind::Vulnerability => (Kind::Vulnerability, risk_of(&self.details.vuln_threat)),
                Kind::SecurityIssue => (
                    Kind::SecurityIssue,
                    risk_of(&self.details.security_issue_risk),
                ),
                k => (k, None),
            }
        } else if self.object_type.as_deref() == Some("hit") {
            (Kind::Hit, None)
        } else if self.threat.is_some() && self.has_title_or_link {
            (Kind::Vulnerability, risk_of(&self.threat))
        } else {
            (Kind::Other, None)
        };
        Class {
            kind,
            risk,
            notification_type,
        }
    }
}

/// An array element: a probe when it is an object, `None` otherwise.
struct MaybeProbe<'a>(Option<Probe<'a>>);

impl<'de> Deserialize<'de> for MaybeProbe<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeProbe<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Probe::from_map(map).map(|p| MaybeProbe(Some(p)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| MaybeProbe(None))
            }
            scalars_are!(MaybeProbe(None), str);
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Details<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Details<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut d = Details::default();
                while let Some(key) = map.next_key::<DetailsField>()? {
                    match key {
                        DetailsField::NotificationType => {
                            d.notification_type = map.next_value::<Text<'de>>()?.0
                        }
                        DetailsField::Vuln => d.vuln_threat = map.next_value::<RiskOf<'de>>()?.0,
                        DetailsField::SecurityIssue => {
                            d.security_issue_risk = map.next_value::<RiskOf<'de>>()?.0
                        }
                        DetailsField::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Details::default())
            }
            scalars_are!(Details::default(), str);
        }
        d.deserialize_any(V)
    }
}

/// The `threat` or `risk` of a nested `vuln` / `security_issue` object.
struct RiskOf<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for RiskOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RiskOf<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut risk = None;
                while let Some(key) = map.next_key::<RiskField>()? {
                    match key {
                        RiskField::Threat | RiskField::Risk => {
                            risk = map.next_value::<Text<'de>>()?.0.or(risk)
                        }
                        RiskField::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(RiskOf(risk))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| RiskOf(None))
            }
            scalars_are!(RiskOf(None), str);
        }
        d.deserialize_any(V)
    }
}

/// A string value, borrowed when it has no escapes; `None` for any other type.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Text(None))
            }
            scalars_are!(Text(None));
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const SHAPES: &str = include_str!("../examples/sample-events.ndjson");

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
        let shapes = include_str!("../examples/sample-events.ndjson");
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
    fn notification_type_table() {
        for (t, k) in [
            ("attacks_exceeded", Kind::Trigger),
            ("api_structure_changed", Kind::Trigger),
            ("hits_exceeded", Kind::Trigger),
            ("new_scope_object_ips", Kind::Scope),
            ("create_rule", Kind::Rule),
            ("delete_trigger", Kind::Rule),
            ("delete_user", Kind::System),
            ("create_integration", Kind::System),
            ("update_application", Kind::System),
            ("something_new", Kind::Other),
        ] {
            assert_eq!(Kind::of_notification_type(t), k, "{t}");
        }
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

    #[test]
    fn selections() {
        let sel =
            Selection::parse(&["hit", "vulnerability:high", "notification:ip_blocked"]).unwrap();
        let c = |kind, risk, nt: Option<&'static str>| Class {
            kind,
            risk,
            notification_type: nt.map(Cow::Borrowed),
        };
        assert!(sel.matches(&c(Kind::Hit, None, None)));
        assert!(sel.matches(&c(Kind::Vulnerability, Some(Risk::High), None)));
        assert!(!sel.matches(&c(Kind::Vulnerability, Some(Risk::Low), None)));
        assert!(!sel.matches(&c(Kind::Vulnerability, None, None)));
        assert!(sel.matches(&c(Kind::Trigger, None, Some("ip_blocked"))));
        assert!(!sel.matches(&c(Kind::Trigger, None, Some("attacks_exceeded"))));
        assert!(sel.matches(&c(Kind::Test, None, None)));
        let none = Selection::parse::<&str>(&[]).unwrap();
        assert!(none.is_empty() && none.matches(&c(Kind::Test, None, None)));
        assert!(!none.matches(&c(Kind::Hit, None, None)));
        assert!(Selection::parse(&["hits"])
            .unwrap_err()
            .contains("unknown event kind `hits`"));
        assert!(Selection::parse(&["hit:high"]).is_err());
        assert!(Selection::parse(&["vulnerability:critical"]).is_err());
        assert!(Selection::parse(&["security_issue:info"]).is_ok());
    }
}
