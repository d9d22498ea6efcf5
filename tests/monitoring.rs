//! The operator's kit in `examples/`: the Prometheus alert rules
//! (`promtool check rules`, and the unit tests in
//! `tailhook-rules.test.yaml` run by `promtool test rules`) and the Grafana
//! dashboard, checked against what the real binary exports: every metric and
//! label their PromQL uses must be on a scraped `/metrics`.
//!
//! The PromQL is parsed by a real parser (`rusty-promql-parser`) to find the
//! metrics (selectors), their matchers and the labels grouped or matched on;
//! the dashboard's queries are also run through Prometheus's own parser
//! (`promtool check rules` on a recording rule each).
//!
//! `promtool` comes from Debian's `prometheus` package, which `.ci/run`
//! installs; without it these tests fail and say how to install it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use rusty_promql_parser::{Expr, LabelMatchOp, VectorSelector};
use serde_json::Value;
use support::check::{dead_port, ndjson, stop};
use support::collector::{Collector, Options};
use support::inputs::{input, listen_addr};
use support::metrics::{metrics_addr, promtool, wait_for_page, Page};
use support::process::Tailhook;
use support::setup::{append, destination, hits, Setup};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/tailhook-rules.yaml"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/tailhook-rules.test.yaml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/grafana/tailhook-dashboard.json"
);

/// Labels Prometheus adds to every series it scrapes: tailhook does not
/// export them, and every query may use them.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The series Prometheus makes itself for every target (`up`), with only the
/// target labels.
const PROMETHEUS_SERIES: &[&str] = &["up"];

const WAIT: Duration = Duration::from_secs(30);

// ---- reading the rules and the dashboard ------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// One alerting rule: its name, expression and annotation templates.
struct Alert {
    name: String,
    expr: String,
    annotations: Vec<String>,
}

fn alerts() -> Vec<Alert> {
    let rules = yaml(RULES);
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("only alerting rules are expected: {rule}"));
            out.push(Alert {
                name: name.to_string(),
                expr: rule["expr"].as_str().expect("expr").to_string(),
                annotations: rule["annotations"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{name} has no annotations"))
                    .values()
                    .map(|v| v.as_str().expect("annotation text").to_string())
                    .collect(),
            });
        }
    }
    out
}

/// A query of the dashboard, with what it is shown as.
struct Query {
    /// The panel's title, or the variable's name.
    place: String,
    /// PromQL with Grafana's interval variables replaced.
    expr: String,
    /// `legendFormat`, whose `{{label}}`s must be labels of the result.
    legend: String,
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Grafana's interval variables, as a duration PromQL takes. Label-value
/// variables (`$instance`) stand inside quoted matchers and stay.
fn grafana_to_promql(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    assert!(!e.contains("$__"), "a Grafana variable left in {e:?}");
    e
}

/// Every panel (rows' panels included).
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

fn dashboard_queries(dash: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!("panel `{}`", p["title"].as_str().unwrap_or("?")),
                expr: grafana_to_promql(t["expr"].as_str().expect("a target's expr")),
                legend: t["legendFormat"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    out
}

/// The `label_values(SELECTOR, LABEL)` queries of the dashboard's variables:
/// (variable, selector, label).
fn variable_queries(dash: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().expect("variable name").to_string();
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("a query variable's query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: expected label_values(...), got {q:?}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable {name}: label_values without a label: {q:?}"));
        out.push((name, selector.trim().to_string(), label.trim().to_string()));
    }
    out
}

// ---- PromQL: what a query uses ----------------------------------------------

/// The metrics and labels one PromQL expression uses.
#[derive(Debug, Default)]
struct Uses {
    /// Metric name → the labels its selectors match on.
    metrics: BTreeMap<String, BTreeSet<String>>,
    /// Labels named in `by`, `without`, `on`, `ignoring`, `group_left`,
    /// `group_right`.
    grouping: BTreeSet<String>,
}

fn uses(query: &str) -> Uses {
    let (rest, ast) = rusty_promql_parser::expr(query)
        .unwrap_or_else(|e| panic!("PromQL that does not parse: {query:?}: {e}"));
    assert!(
        rest.trim().is_empty(),
        "PromQL parsed only up to {rest:?}: {query:?}"
    );
    let mut u = Uses::default();
    walk(&ast, &mut u);
    u
}

fn walk(e: &Expr, u: &mut Uses) {
    match e {
        Expr::Number(_) | Expr::String(_) => {}
        Expr::VectorSelector(v) => selector(v, u),
        Expr::MatrixSelector(m) => selector(&m.selector, u),
        Expr::Call(c) => {
            // These name labels in string arguments, which this check would
            // not see.
            assert!(
                !matches!(c.name.as_str(), "label_replace" | "label_join"),
                "{}(): not checked here; extend `walk`",
                c.name
            );
            c.args.iter().for_each(|a| walk(a, u));
        }
        Expr::Aggregation(a) => {
            walk(&a.expr, u);
            if let Some(p) = &a.param {
                walk(p, u);
            }
            if let Some(g) = &a.grouping {
                u.grouping.extend(g.labels.iter().cloned());
            }
        }
        Expr::Binary(b) => {
            walk(&b.lhs, u);
            walk(&b.rhs, u);
            if let Some(m) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                u.grouping.extend(m.labels.iter().cloned());
                if let Some(g) = &m.group {
                    u.grouping.extend(g.labels.iter().cloned());
                }
            }
        }
        Expr::Unary(x) => walk(&x.expr, u),
        Expr::Paren(x) => walk(x, u),
        Expr::Subquery(s) => walk(&s.expr, u),
    }
}

fn selector(v: &VectorSelector, u: &mut Uses) {
    let name = v
        .name
        .clone()
        .or_else(|| {
            v.matchers
                .iter()
                .find(|m| m.name == "__name__" && m.op == LabelMatchOp::Equal)
                .map(|m| m.value.clone())
        })
        .unwrap_or_else(|| panic!("a selector without a metric name: {v:?}"));
    u.metrics.entry(name).or_default().extend(
        v.matchers
            .iter()
            .filter(|m| m.name != "__name__")
            .map(|m| m.name.clone()),
    );
}

/// The `{{ $labels.NAME }}` of an alert's annotation, or the `{{NAME}}` of a
/// Grafana legend.
fn template_labels(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("{{") {
        let Some(end) = rest[at..].find("}}") else {
            break;
        };
        let inside = rest[at + 2..at + end].trim();
        let name = inside.strip_prefix("$labels.").unwrap_or(inside);
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(name.to_string());
        }
        rest = &rest[at + end + 2..];
    }
    out
}

// ---- comparing with /metrics ------------------------------------------------

/// What a page exports: each sample name (histograms as `_bucket`, `_sum`,
/// `_count`) with the labels seen on it.
fn exported(page: &Page) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &page.samples {
        out.entry(s.name.clone())
            .or_default()
            .extend(s.labels.keys().cloned());
    }
    for name in PROMETHEUS_SERIES {
        out.entry(name.to_string()).or_default();
    }
    out
}

/// What is wrong with `query` (shown as `place`) against what is exported:
/// a metric not exported, a label it matches on that the metric does not
/// have, a label grouped or matched on that none of its metrics has, a
/// label shown (`templates`: a legend's or an annotation's) that the
/// result's series do not carry. Target labels are always there.
fn problems(
    place: &str,
    query: &str,
    templates: &BTreeSet<String>,
    exported: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let u = uses(query);
    let mut out = Vec::new();
    let mut available = target_labels();
    for (name, labels) in &u.metrics {
        let Some(has) = exported.get(name) else {
            out.push(format!(
                "{place}: tailhook exports no metric `{name}` (in {query:?})"
            ));
            continue;
        };
        for l in labels {
            if !has.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                out.push(format!(
                    "{place}: `{name}` has no label `{l}`; it has {has:?} (in {query:?})"
                ));
            }
        }
        available.extend(has.iter().cloned());
    }
    for l in &u.grouping {
        if !available.contains(l) {
            out.push(format!(
                "{place}: groups or matches on label `{l}`, which none of its metrics has (in {query:?})"
            ));
        }
    }
    let (_, ast) = rusty_promql_parser::expr(query).expect("parsed above");
    let shown = result_labels(&ast, exported).unwrap_or_default();
    for l in templates {
        if !shown.contains(l) {
            out.push(format!(
                "{place}: shows label `{l}`, which its result does not carry; it has {shown:?} (in {query:?})"
            ));
        }
    }
    out
}

fn target_labels() -> BTreeSet<String> {
    TARGET_LABELS.iter().map(|l| l.to_string()).collect()
}

/// The labels the series of `e`'s result can carry, following PromQL's
/// rules for functions, aggregations and vector matching; `None` for a
/// scalar.
fn result_labels(
    e: &Expr,
    exported: &BTreeMap<String, BTreeSet<String>>,
) -> Option<BTreeSet<String>> {
    use rusty_promql_parser::{BinaryOp, GroupSide, GroupingAction, VectorMatchingOp};
    let of_selector = |v: &VectorSelector| {
        let mut l = target_labels();
        if let Some(has) = v.name.as_ref().and_then(|n| exported.get(n)) {
            l.extend(has.iter().cloned());
        }
        l
    };
    match e {
        Expr::Number(_) | Expr::String(_) => None,
        Expr::VectorSelector(v) => Some(of_selector(v)),
        Expr::MatrixSelector(m) => Some(of_selector(&m.selector)),
        Expr::Paren(x) => result_labels(x, exported),
        Expr::Unary(x) => result_labels(&x.expr, exported),
        Expr::Subquery(s) => result_labels(&s.expr, exported),
        Expr::Call(c) => match c.name.as_str() {
            "time" | "scalar" | "pi" => None,
            "vector" => Some(BTreeSet::new()),
            // The labels of the selector's equality matchers.
            "absent" | "absent_over_time" => Some(match c.args.first() {
                Some(Expr::VectorSelector(v)) => v
                    .matchers
                    .iter()
                    .filter(|m| m.op == LabelMatchOp::Equal && m.name != "__name__")
                    .map(|m| m.name.clone())
                    .collect(),
                Some(Expr::MatrixSelector(m)) => m
                    .selector
                    .matchers
                    .iter()
                    .filter(|m| m.op == LabelMatchOp::Equal && m.name != "__name__")
                    .map(|m| m.name.clone())
                    .collect(),
                _ => BTreeSet::new(),
            }),
            "histogram_quantile" => c.args.get(1).and_then(|v| {
                let mut l = result_labels(v, exported)?;
                l.remove("le");
                Some(l)
            }),
            // rate, increase, deriv, …: the labels of their vector argument.
            _ => c.args.iter().find_map(|a| result_labels(a, exported)),
        },
        Expr::Aggregation(a) => {
            let inner = result_labels(&a.expr, exported).unwrap_or_default();
            assert!(
                a.op != "count_values",
                "count_values: not followed here; extend `result_labels`"
            );
            Some(match (a.op.as_str(), &a.grouping) {
                ("topk" | "bottomk" | "limitk" | "limit_ratio", _) => inner,
                (_, Some(g)) if g.action == GroupingAction::By => {
                    g.labels.iter().cloned().collect()
                }
                (_, Some(g)) => inner
                    .into_iter()
                    .filter(|l| !g.labels.contains(l))
                    .collect(),
                (_, None) => BTreeSet::new(),
            })
        }
        Expr::Binary(b) => {
            let lhs = result_labels(&b.lhs, exported);
            let rhs = result_labels(&b.rhs, exported);
            let (l, r) = match (lhs, rhs) {
                (Some(l), Some(r)) => (l, r),
                (one, other) => return one.or(other),
            };
            if b.op == BinaryOp::Or {
                return Some(l.union(&r).cloned().collect());
            }
            if b.op.is_set_operator() {
                return Some(l);
            }
            let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
            Some(match matching {
                None => l,
                Some(m) => match &m.group {
                    Some(g) => {
                        let mut many = if g.side == GroupSide::Left { l } else { r };
                        many.extend(g.labels.iter().cloned());
                        many
                    }
                    None if m.op == VectorMatchingOp::On => {
                        l.into_iter().filter(|x| m.labels.contains(x)).collect()
                    }
                    None => l.into_iter().filter(|x| !m.labels.contains(x)).collect(),
                },
            })
        }
    }
}

/// The problems of every alert rule and dashboard query, and how many
/// metric names they use in all.
fn all_problems(exported: &BTreeMap<String, BTreeSet<String>>) -> (Vec<String>, BTreeSet<String>) {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for a in alerts() {
        let templates = a
            .annotations
            .iter()
            .flat_map(|t| template_labels(t))
            .collect();
        out.extend(problems(
            &format!("alert {}", a.name),
            &a.expr,
            &templates,
            exported,
        ));
        names.extend(uses(&a.expr).metrics.into_keys());
    }
    let dash = dashboard();
    for q in dashboard_queries(&dash) {
        out.extend(problems(
            &q.place,
            &q.expr,
            &template_labels(&q.legend),
            exported,
        ));
        names.extend(uses(&q.expr).metrics.into_keys());
    }
    for (var, selector, label) in variable_queries(&dash) {
        let templates = BTreeSet::from([label]);
        out.extend(problems(
            &format!("variable ${var}"),
            &grafana_to_promql(&selector),
            &templates,
            exported,
        ));
    }
    (out, names)
}

// ---- tests ------------------------------------------------------------------

#[test]
fn promtool_check_rules_accepts_the_rules() {
    let (code, said) = promtool(&["check", "rules", RULES], None);
    assert_eq!(code, Some(0), "promtool check rules {RULES}:\n{said}");
    let n = alerts().len();
    assert!(
        said.contains(&format!("SUCCESS: {n} rules found")),
        "promtool check rules found other than the {n} rules in the file:\n{said}"
    );
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let (code, said) = promtool(&["test", "rules", RULE_TESTS], None);
    assert_eq!(code, Some(0), "promtool test rules {RULE_TESTS}:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}

/// Each alert is proved both ways: some test case expects it to fire, and
/// some evaluation expects it silent (and promtool compares the exact set
/// of alerts, so the healthy series beside a firing one stay silent too).
#[test]
fn every_alert_has_a_test_where_it_fires_and_one_where_it_is_silent() {
    let tests = yaml(RULE_TESTS);
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for group in tests["tests"].as_array().expect("tests") {
        for case in group["alert_rule_test"]
            .as_array()
            .expect("alert_rule_test")
        {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            match case["exp_alerts"].as_array() {
                Some(a) if !a.is_empty() => fires.insert(name),
                _ => silent.insert(name),
            };
        }
    }
    let names: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    assert_eq!(names.len(), 9, "the alerts: {names:?}");
    for name in &names {
        assert!(fires.contains(name), "no test expects {name} to fire");
        assert!(silent.contains(name), "no test expects {name} to be silent");
    }
    let unknown: Vec<_> = fires
        .union(&silent)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}

/// `promtool test rules` really fails a wrong expectation: here, that a
/// destination that has been up all along is reported down.
#[test]
fn promtool_test_rules_fails_when_an_expected_alert_does_not_fire() {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("wrong.test.yaml");
    std::fs::write(
        &test,
        format!(
            r#"rule_files: ["{RULES}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'tailhook_destination_up{{job="tailhook", instance="a:9598", destination="fine"}}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: TailhookDestinationDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: tailhook, instance: "a:9598", destination: fine}}
"#
        ),
    )
    .unwrap();
    let (code, said) = promtool(&["test", "rules", &test.display().to_string()], None);
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("FAILED"), "{said}");
}

#[test]
fn the_dashboard_has_a_datasource_variable_that_every_query_uses() {
    let dash = dashboard();
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let uses_variable = |v: &Value| v["uid"] == "${datasource}" && v["type"] == "prometheus";
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(uses_variable(&v["datasource"]), "variable {}", v["name"]);
    }
    let mut ids = BTreeSet::new();
    let mut targets = 0;
    for p in panels(&dash) {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id {}",
            p["id"]
        );
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("title");
        assert!(uses_variable(&p["datasource"]), "panel {title}");
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {title} has no description"
        );
        let ts = p["targets"].as_array().expect("targets");
        assert!(!ts.is_empty(), "panel {title} has no query");
        for t in ts {
            assert!(uses_variable(&t["datasource"]), "a query of {title}");
            targets += 1;
        }
    }
    assert!(targets >= 15, "{targets} queries");

    // What the issue asks the dashboard to show, each in some query.
    let used: BTreeSet<String> = dashboard_queries(&dash)
        .iter()
        .flat_map(|q| uses(&q.expr).metrics.into_keys())
        .collect();
    for m in [
        "tailhook_source_events_read_total",
        "tailhook_destination_events_sent_total",
        "tailhook_source_lag_bytes",
        "tailhook_destination_batches_sent_total",
        "tailhook_destination_request_duration_seconds_bucket",
        "tailhook_destination_retries_total",
        "tailhook_destination_responses_total",
        "tailhook_destination_events_dead_lettered_total",
        "tailhook_spool_bytes",
        "tailhook_spool_max_bytes",
        "tailhook_source_files_watched",
    ] {
        assert!(used.contains(m), "no panel shows {m}; it shows {used:?}");
    }
}

/// Prometheus's own parser takes every dashboard query (each as a recording
/// rule for `promtool check rules`).
#[test]
fn prometheus_parses_every_dashboard_query() {
    let dash = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let queries = dashboard_queries(&dash);
    for (i, q) in queries.iter().enumerate() {
        let expr = serde_json::to_string(&q.expr).unwrap();
        rules.push_str(&format!(
            "      - record: tailhook:dashboard:{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&path, rules).unwrap();
    let (code, said) = promtool(&["check", "rules", &path.display().to_string()], None);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{said}"
    );
}

/// The check itself: against a known page, an unknown metric, a label a
/// metric does not have, a grouping on a label that is not there, a
/// histogram queried without its `_bucket` suffix, and a legend or
/// annotation showing a label the result does not carry (dropped by an
/// aggregation, `histogram_quantile` or `on`) are each reported; good
/// queries are not.
#[test]
fn the_name_check_reports_what_is_not_exported() {
    let page = Page::parse(
        "# TYPE a_total counter\na_total{destination=\"d\",source=\"s\"} 1\n\
         # TYPE h histogram\nh_bucket{destination=\"d\",le=\"+Inf\"} 1\nh_sum{destination=\"d\"} 1\nh_count{destination=\"d\"} 1\n",
    );
    let ex = exported(&page);
    let labels = |ls: &[&str]| -> BTreeSet<String> { ls.iter().map(|l| l.to_string()).collect() };
    let good = [
        (
            "sum by (destination) (rate(a_total{instance=~\"$i\"}[5m]))",
            labels(&["destination"]),
        ),
        (
            "sum without (source) (a_total)",
            labels(&["destination", "instance"]),
        ),
        (
            "histogram_quantile(0.9, sum by (le, destination) (rate(h_bucket[5m])))",
            labels(&["destination"]),
        ),
        (
            "rate(h_sum[5m]) / on (destination, instance) rate(h_count[5m])",
            labels(&["instance"]),
        ),
        ("a_total > 1 and h_count", labels(&["source"])),
        ("up{job=\"tailhook\"} == 0", labels(&["instance", "job"])),
        ("absent(up{job=\"tailhook\"})", labels(&["job"])),
    ];
    for (q, shown) in good {
        assert_eq!(problems("q", q, &shown, &ex), Vec::<String>::new(), "{q}");
    }
    let bad = [
        ("rate(b_total[5m])", labels(&[]), "no metric `b_total`"),
        ("a_total{kind=\"k\"}", labels(&[]), "no label `kind`"),
        ("sum by (kind) (a_total)", labels(&[]), "label `kind`"),
        (
            "a_total / ignoring (kind) h_count",
            labels(&[]),
            "label `kind`",
        ),
        ("h", labels(&[]), "no metric `h`"),
        (
            "up{destination=\"d\"}",
            labels(&[]),
            "no label `destination`",
        ),
        // Shown labels that the result does not carry.
        (
            "sum(a_total)",
            labels(&["destination"]),
            "shows label `destination`",
        ),
        (
            "sum by (destination) (a_total)",
            labels(&["source"]),
            "shows label `source`",
        ),
        (
            "histogram_quantile(0.5, rate(h_bucket[5m]))",
            labels(&["le"]),
            "shows label `le`",
        ),
        (
            "a_total / on (destination) h_count",
            labels(&["source"]),
            "shows label `source`",
        ),
        (
            "absent(up{job=\"tailhook\"})",
            labels(&["instance"]),
            "shows label `instance`",
        ),
    ];
    for (q, shown, want) in bad {
        let p = problems("q", q, &shown, &ex);
        assert!(
            p.iter().any(|p| p.contains(want)),
            "{q}: expected a problem with {want:?}, got {p:?}"
        );
    }
    assert_eq!(
        template_labels(
            "{{ $labels.destination }} on {{$labels.instance}}: {{ $value | humanize }}"
        ),
        BTreeSet::from(["destination".to_string(), "instance".to_string()])
    );
    assert_eq!(
        template_labels("{{destination}} / {{source}}"),
        BTreeSet::from(["destination".to_string(), "source".to_string()])
    );
}

/// Runs tailhook with a file source and a TCP input into a collector that
/// answers 500 (retried), then 400 (dead-lettered), then 200; scrapes
/// `/metrics`; every metric and label the alert rules and the dashboard
/// use must be on the page.
#[test]
fn every_metric_and_label_the_rules_and_the_dashboard_use_is_exported() {
    let setup = Setup::new();
    let log = setup.log("app.ndjson");
    let lines = hits(0, 20, 120);
    append(&log, &lines);
    let collector = Collector::start(Options::fluentd());
    collector.fail_next(&[500, 400]);
    let mut text = "shutdown_timeout = \"1s\"\n\n[spool]\nmax_bytes = \"4MiB\"\n\n".to_string();
    text.push_str(&setup.source("app", "*.ndjson", ""));
    text.push_str(&input("net", "tcp", ""));
    text.push_str(&destination(
        "fluentd",
        &collector.url("/wallarm.events"),
        "concurrency = 1",
        "[destination.batch]\nmax_events = 5\ntimeout = \"100ms\"\n",
    ));
    // A second destination that is down: its `up` is 0, its lag is not.
    let dead = dead_port();
    text.push_str(&destination(
        "down",
        &format!("http://127.0.0.1:{}/t", dead.port),
        "",
        "",
    ));
    // A destination with two collectors, one of them down: its
    // per-endpoint metrics.
    let pair = Collector::start(Options::fluentd());
    let dead_of_pair = dead_port();
    text.push_str(&format!(
        "[[destination]]\nname = \"pair\"\nurls = [{:?}, \"http://127.0.0.1:{}/t\"]\n\n",
        pair.url("/t"),
        dead_of_pair.port
    ));
    let tailhook = Tailhook::start(&setup.config(&text));
    let net = listen_addr(&tailhook, "net");
    let addr = metrics_addr(&tailhook);
    let spooled = hits(100, 3, 120);
    TcpStream::connect(net)
        .unwrap()
        .write_all(&ndjson(&spooled))
        .unwrap();

    // 23 events: each is delivered or, in the batch answered 400 (after a
    // 500 that was retried), dead-lettered.
    let d = ("destination", "fluentd");
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "every event delivered or dead-lettered",
        &["events", "files_watched", "responses", "lag"],
        |p| {
            let dead = p.get("tailhook_destination_events_dead_lettered_total", &[d]);
            let sent = p.get("tailhook_destination_events_sent_total", &[d]);
            dead.unwrap_or(0.0) >= 1.0
                && sent.unwrap_or(0.0) + dead.unwrap_or(0.0) == (lines.len() + spooled.len()) as f64
                && p.get("tailhook_source_files_watched", &[("source", "app"), d]) == Some(1.0)
                && p.get(
                    "tailhook_source_lag_bytes",
                    &[("source", "app"), ("destination", "down")],
                )
                .unwrap_or(0.0)
                    > 0.0
                && p.get(
                    "tailhook_endpoint_up",
                    &[("destination", "pair"), ("endpoint", &pair.url("/t"))],
                ) == Some(1.0)
        },
    );
    assert_eq!(
        page.get("tailhook_spool_max_bytes", &[]),
        Some(4.0 * 1024.0 * 1024.0),
        "{}",
        page.matching("spool")
    );
    let (problems, names) = all_problems(&exported(&page));
    assert!(
        problems.is_empty(),
        "the rules or the dashboard use what tailhook does not export:\n{}\n--- /metrics ---\n{}",
        problems.join("\n"),
        page.text
    );
    // The check saw the queries: the rules and the dashboard use this many
    // metrics between them.
    assert!(
        names.len() >= 18,
        "only {} metrics used: {names:?}",
        names.len()
    );
    stop(tailhook);
    drop(dead);
    drop(dead_of_pair);
}

/// The paths in this file are the ones README.md tells operators to use.
#[test]
fn the_readme_names_the_files_and_the_commands() {
    let readme = read(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    for want in [
        "promtool check rules examples/prometheus/tailhook-rules.yaml",
        "promtool test rules examples/prometheus/tailhook-rules.test.yaml",
        "examples/grafana/tailhook-dashboard.json",
    ] {
        assert!(readme.contains(want), "README.md does not say `{want}`");
    }
    for a in alerts() {
        assert!(
            readme.contains(&a.name),
            "README.md does not describe the alert {}",
            a.name
        );
    }
    for p in panels(&dashboard()) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        assert!(
            readme.contains(&format!("**{title}**")),
            "README.md does not describe the panel **{title}**"
        );
    }
    assert!(Path::new(RULE_TESTS).exists());
}
