//! A destination's selection: which kinds (and risks, and notification
//! types) it receives, parsed from its `events` list.

use super::{Class, Kind, Risk};

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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

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
