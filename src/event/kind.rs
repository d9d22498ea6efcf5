//! The kinds of events and the risks of vulnerabilities and security
//! issues: what classification says of an event.

use std::borrow::Cow;
use std::fmt;

/// The kind of an event: the one table, also in the README (Configuration, `events`).
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

    pub(super) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub(super) fn bit(self) -> u16 {
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
    pub(super) const ALL: [Risk; 5] = [
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

    pub(super) fn bit(self) -> u8 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
