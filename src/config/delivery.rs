//! A destination's answers policy (`retry_on`, `dead_letter_on`) and its
//! `[destination.dead_letter]` table.

use std::fmt::{self, Write as _};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{Problems, Size};

/// What a destination does with an answer that is not 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// The collector, or its configuration, is wrong for now: send again later.
    Retry,
    /// The collector refuses these events: set them aside in the dead-letter file.
    DeadLetter,
}

/// One status code (`404`) or a class of them (`"4xx"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// Exactly this status.
    Code(u16),
    /// Every status whose first digit is this (4 for `"4xx"`).
    Class(u16),
}

impl StatusMatch {
    fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => c == status,
            StatusMatch::Class(c) => status / 100 == c,
        }
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMatch::Code(c) => write!(f, "{c}"),
            StatusMatch::Class(c) => write!(f, "\"{c}xx\""),
        }
    }
}

/// A status or class as written: an integer 300-599, or `"3xx"`, `"4xx"`, `"5xx"`.
impl<'de> Deserialize<'de> for StatusMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an HTTP status code such as 404, or a class such as \"5xx\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<StatusMatch, E> {
                match n {
                    200..=299 => Err(E::custom(format!(
                        "status {n} is a 2xx: a 2xx answer means delivered, it cannot be retried or dead-lettered"
                    ))),
                    300..=599 => Ok(StatusMatch::Code(n as u16)),
                    _ => Err(E::custom(format!(
                        "status {n} is not an HTTP status a collector answers; write one from 300 to 599, or a class such as \"5xx\""
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<StatusMatch, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusMatch, E> {
                let b = s.as_bytes();
                let class = (b.len() == 3 && b[1..].eq_ignore_ascii_case(b"xx"))
                    .then(|| u16::from(b[0].wrapping_sub(b'0')));
                match class {
                    Some(2) => Err(E::custom(
                        "class \"2xx\" means delivered: it cannot be retried or dead-lettered",
                    )),
                    Some(c @ 3..=5) => Ok(StatusMatch::Class(c)),
                    _ => Err(E::custom(format!(
                        "`{s}` is not a status class; write \"3xx\", \"4xx\" or \"5xx\", or a status code as a number such as 404"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Which answers a destination retries and which it dead-letters. Without
/// overrides: 400, 413, 415 and 422 say the events were refused and are
/// dead-lettered (a 413 after splitting the batch down to the single event
/// refused, unless `dead_letter_on` names 413 itself: see
/// [`crate::sink::verdict`]); every other answer that is not 2xx (401, 403, 404, 407,
/// 408, 429, 5xx, …) says the collector or its configuration is wrong for
/// now, and is retried. A code named in `retry_on` or `dead_letter_on`
/// beats a class named there, which beats the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusPolicy {
    /// `retry_on` as written.
    pub retry_on: Vec<StatusMatch>,
    /// `dead_letter_on` as written.
    pub dead_letter_on: Vec<StatusMatch>,
}

impl StatusPolicy {
    /// What to do with a status that is not 2xx.
    pub fn action(&self, status: u16) -> StatusAction {
        let named = |exact: bool| {
            let hit = |list: &[StatusMatch]| {
                list.iter()
                    .any(|m| matches!(m, StatusMatch::Code(_)) == exact && m.matches(status))
            };
            if hit(&self.dead_letter_on) {
                Some(StatusAction::DeadLetter)
            } else if hit(&self.retry_on) {
                Some(StatusAction::Retry)
            } else {
                None
            }
        };
        named(true)
            .or_else(|| named(false))
            .unwrap_or(match status {
                400 | 413 | 415 | 422 => StatusAction::DeadLetter,
                _ => StatusAction::Retry,
            })
    }

    /// True when `status` itself (not a class holding it) is in
    /// `dead_letter_on`: the user asked for exactly this status to be
    /// dead-lettered, so a 413 is not split first.
    pub fn dead_letters_code(&self, status: u16) -> bool {
        self.dead_letter_on.contains(&StatusMatch::Code(status))
    }

    /// True when nothing overrides the defaults.
    pub fn is_default(&self) -> bool {
        self.retry_on.is_empty() && self.dead_letter_on.is_empty()
    }
}

/// The `[destination.dead_letter]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterConfig {
    /// The most bytes the destination's dead-letter files may hold; an
    /// append that would pass it waits (the destination pauses).
    pub max_bytes: u64,
}

// ---- raw --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadLetter {
    #[serde(default = "gib1")]
    max_bytes: Spanned<Size>,
}

impl Default for RawDeadLetter {
    fn default() -> Self {
        RawDeadLetter { max_bytes: gib1() }
    }
}

fn gib1() -> Spanned<Size> {
    Spanned::new(0..0, Size(1 << 30))
}

/// Checks `retry_on` and `dead_letter_on` together.
pub(super) fn validate_status_policy(
    name: &str,
    retry_on: Option<Spanned<Vec<StatusMatch>>>,
    dead_letter_on: Option<Spanned<Vec<StatusMatch>>>,
    p: &mut Problems<'_>,
) -> StatusPolicy {
    if let (Some(retry), Some(dead)) = (&retry_on, &dead_letter_on) {
        for m in dead.get_ref() {
            if retry.get_ref().contains(m) {
                p.at(
                    dead.span(),
                    format!(
                        "destination `{name}`: {m} is in both retry_on and dead_letter_on; name it in one of them"
                    ),
                );
            }
        }
    }
    StatusPolicy {
        retry_on: retry_on.map(Spanned::into_inner).unwrap_or_default(),
        dead_letter_on: dead_letter_on.map(Spanned::into_inner).unwrap_or_default(),
    }
}

pub(super) fn validate_dead_letter(
    name: &str,
    raw: RawDeadLetter,
    p: &mut Problems<'_>,
) -> DeadLetterConfig {
    let max_bytes = raw.max_bytes.get_ref().0;
    if max_bytes == 0 {
        p.at(
            raw.max_bytes.span(),
            format!("destination `{name}`: dead_letter.max_bytes must be more than 0"),
        );
    }
    DeadLetterConfig { max_bytes }
}

/// Writes the policy as resolved TOML keys of the destination (for `check`):
/// the lists as written, empty when nothing overrides the defaults.
pub(super) fn write_status_policy(o: &mut String, policy: &StatusPolicy) {
    let list = |l: &[StatusMatch]| {
        l.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        o,
        "# besides these, 400, 415, 422 are dead-lettered, 413 splits the batch (a single event refused is dead-lettered) and any other failure is retried"
    );
    let _ = writeln!(o, "retry_on = [{}]", list(&policy.retry_on));
    let _ = writeln!(o, "dead_letter_on = [{}]", list(&policy.dead_letter_on));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &[StatusMatch], dead_letter_on: &[StatusMatch]) -> StatusPolicy {
        StatusPolicy {
            retry_on: retry_on.to_vec(),
            dead_letter_on: dead_letter_on.to_vec(),
        }
    }

    #[test]
    fn defaults_dead_letter_only_what_says_the_events_were_refused() {
        let p = StatusPolicy::default();
        for s in [400, 413, 415, 422] {
            assert_eq!(p.action(s), StatusAction::DeadLetter, "{s}");
        }
        for s in [
            401, 403, 404, 405, 407, 408, 409, 429, 500, 502, 503, 504, 301, 418,
        ] {
            assert_eq!(p.action(s), StatusAction::Retry, "{s}");
        }
    }

    #[test]
    fn a_code_beats_a_class_which_beats_the_default() {
        use StatusMatch::{Class, Code};
        let p = policy(&[Class(4)], &[Code(404)]);
        assert_eq!(p.action(404), StatusAction::DeadLetter);
        assert_eq!(p.action(400), StatusAction::Retry);
        assert_eq!(p.action(422), StatusAction::Retry);
        assert_eq!(p.action(503), StatusAction::Retry);
        let p = policy(&[Code(400)], &[Class(5)]);
        assert_eq!(p.action(400), StatusAction::Retry);
        assert_eq!(p.action(413), StatusAction::DeadLetter, "the default stays");
        assert_eq!(p.action(503), StatusAction::DeadLetter);
        assert_eq!(p.action(401), StatusAction::Retry);
    }

    #[test]
    fn statuses_are_parsed_in_words() {
        #[derive(Deserialize)]
        struct T {
            #[allow(dead_code)]
            l: Vec<StatusMatch>,
        }
        let parse = |v: &str| {
            toml::from_str::<T>(&format!("l = {v}"))
                .map(|t| t.l)
                .map_err(|e| e.message().to_string())
        };
        assert_eq!(
            parse(r#"[404, "5xx", "4XX"]"#).unwrap(),
            [
                StatusMatch::Code(404),
                StatusMatch::Class(5),
                StatusMatch::Class(4)
            ]
        );
        let e = parse("[204]").unwrap_err();
        assert!(e.contains("status 204 is a 2xx"), "{e}");
        let e = parse(r#"["2xx"]"#).unwrap_err();
        assert!(e.contains("class \"2xx\" means delivered"), "{e}");
        let e = parse("[42]").unwrap_err();
        assert!(e.contains("from 300 to 599"), "{e}");
        let e = parse(r#"["404"]"#).unwrap_err();
        assert!(e.contains("as a number such as 404"), "{e}");
        let e = parse("[true]").unwrap_err();
        assert!(e.contains("an HTTP status code such as 404"), "{e}");
    }
}

#[cfg(test)]
mod config_tests {
    use std::path::Path;

    use crate::config::{Config, StatusAction};

    const MIN: &str = r#"
[[source]]
name = "w"
type = "file"
include = ["/var/log/*.ndjson"]
[[destination]]
name = "fluentd"
url = "http://127.0.0.1:9880/wallarm.events"
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), text, |_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn overrides_and_the_dead_letter_bound_are_read() {
        let c = parse(MIN).unwrap();
        let d = &c.destinations[0];
        assert!(d.status_policy.is_default());
        let shown = c.to_redacted_toml();
        assert!(
            shown.contains("retry_on = []\ndead_letter_on = []\n"),
            "{shown}"
        );
        assert_eq!(d.dead_letter.max_bytes, 1 << 30);
        let c = parse(&format!(
            "{MIN}retry_on = [\"4xx\"]\ndead_letter_on = [404]\n[destination.dead_letter]\nmax_bytes = \"10MiB\"\n"
        ))
        .unwrap();
        let d = &c.destinations[0];
        assert_eq!(d.status_policy.action(404), StatusAction::DeadLetter);
        assert_eq!(d.status_policy.action(400), StatusAction::Retry);
        assert_eq!(d.dead_letter.max_bytes, 10 << 20);
        let shown = c.to_redacted_toml();
        assert!(
            shown.contains("retry_on = [\"4xx\"]\ndead_letter_on = [404]\n"),
            "{shown}"
        );
        assert!(
            shown.contains("[destination.dead_letter]\nmax_bytes = 10485760\n"),
            "{shown}"
        );
        let again = parse(&shown).unwrap();
        assert_eq!(again.destinations[0].status_policy, d.status_policy);
    }

    #[test]
    fn mistakes_are_told_in_words_at_their_line() {
        let e = parse(&format!(
            "{MIN}retry_on = [401, \"5xx\"]\ndead_letter_on = [\"5xx\", 401]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("t.toml:10:18: destination `fluentd`: \"5xx\" is in both retry_on and dead_letter_on"),
            "{e}"
        );
        assert!(e.contains("401 is in both"), "{e}");
        let e = parse(&format!("{MIN}retry_on = [200]\n")).unwrap_err();
        assert!(
            e.contains("t.toml:9:") && e.contains("status 200 is a 2xx"),
            "{e}"
        );
        let e = parse(&format!("{MIN}dead_letter_on = [\"2xx\"]\n")).unwrap_err();
        assert!(e.contains("class \"2xx\" means delivered"), "{e}");
        let e = parse(&format!("{MIN}[destination.dead_letter]\nmax_bytes = 0\n")).unwrap_err();
        assert!(
            e.contains(
                "t.toml:10:13: destination `fluentd`: dead_letter.max_bytes must be more than 0"
            ),
            "{e}"
        );
        let e = parse(&format!("{MIN}[destination.dead_letter]\nmax_size = 1\n")).unwrap_err();
        assert!(e.contains("unknown field `max_size`"), "{e}");
    }
}
