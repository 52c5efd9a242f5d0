//! deploy/grafana/lars.json cannot drift silently: every metric name its
//! queries use must be written by some `/metrics` writer (the sources of
//! lars-dns, lars-reporter, lars-agent and lars-net, which writes the TCP
//! limit counters under each service's prefix).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, read.
fn sources(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The `expr` strings of every panel target, recursively.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The `lars_...` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lars_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Whether some writer source writes `name`: quoted whole, or as a suffix
/// after a service prefix (`m("requests_total", ..)` under
/// `lars_reporter_{name}`, `"{prefix}_tcp_refused_total"` in lars-net).
fn written(name: &str, srcs: &[String]) -> bool {
    let quoted = format!("\"{name}\"");
    let labelled = format!("\"{name}{{");
    if srcs
        .iter()
        .any(|s| s.contains(&quoted) || s.contains(&labelled))
    {
        return true;
    }
    for prefix in ["lars_dns_", "lars_reporter_", "lars_agent_"] {
        let Some(suffix) = name.strip_prefix(prefix) else {
            continue;
        };
        let generic = format!("{{prefix}}_{suffix}\"");
        let service = format!("\"{suffix}\"");
        let service_prefix = format!("\"{prefix}{{name}}\"");
        if srcs
            .iter()
            .any(|s| s.contains(&generic) || (s.contains(&service_prefix) && s.contains(&service)))
        {
            return true;
        }
    }
    false
}

#[test]
fn every_dashboard_metric_is_written_by_a_metrics_writer() {
    let text = std::fs::read_to_string(root().join("deploy/grafana/lars.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut srcs = Vec::new();
    for dir in [
        "lars-dns/src",
        "lars-reporter/src",
        "lars-agent/src",
        "lars-net/src",
    ] {
        sources(&root().join(dir), &mut srcs);
    }
    let mut all = Vec::new();
    exprs(&dash["panels"], &mut all);
    let mut names: Vec<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 20, "too few metrics found: {names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !written(n, &srcs)).collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/lars.json uses metrics no /metrics writer writes: {missing:?}"
    );
    // The check itself can fail.
    assert!(!written("lars_dns_no_such_metric_total", &srcs));
    assert!(!written("lars_reporter_no_such_metric_total", &srcs));
    // The datasource is a variable, not a fixed uid.
    assert!(
        dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus")
    );
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum by (instance) (rate(lars_dns_pushes_total{a=\"b\"}[5m])) / lars_x"),
        vec!["lars_dns_pushes_total", "lars_x"]
    );
}
