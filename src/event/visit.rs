//! The serde visitors that read a line once, borrowing from it: its shape
//! (object, array, scalar) and, of each object, only the fields
//! classification needs, skipping (but still validating) the rest.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{Class, Kind, Risk};

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

/// The top-level shape of a line, with the fields of each object.
pub(super) enum LineShape<'a> {
    Object(Fields<'a>),
    /// The fields of each element; `None` for an element that is not an object.
    Array(Vec<Option<Fields<'a>>>),
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
                Fields::from_map(map).map(LineShape::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(el) = seq.next_element::<MaybeFields<'de>>()? {
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
pub(super) struct Fields<'a> {
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

impl<'a> Fields<'a> {
    fn from_map<A: MapAccess<'a>>(mut map: A) -> Result<Fields<'a>, A::Error> {
        let mut p = Fields::default();
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

    pub(super) fn class(&self) -> Class<'a> {
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

/// An array element: its fields when it is an object, `None` otherwise.
struct MaybeFields<'a>(Option<Fields<'a>>);

impl<'de> Deserialize<'de> for MaybeFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Fields::from_map(map).map(|p| MaybeFields(Some(p)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| MaybeFields(None))
            }
            scalars_are!(MaybeFields(None), str);
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
