//! The Prometheus console templates (deploy/prometheus/consoles/): a real Prometheus serves the
//! City and Pipeline pages over the running pipeline, the pages hold exactly the Grafana
//! dashboards' queries, and every graph's query returns data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_e2e::pipeline::{Pipeline, PipelineOptions, Service, SimulatorOptions};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Debian's prometheus package ships the console libraries (prom.lib, menu.lib) as examples;
/// PROMETHEUS_CONSOLE_LIBRARIES overrides the directory.
fn console_libraries() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROMETHEUS_CONSOLE_LIBRARIES") {
        return dir.into();
    }
    [
        "/usr/share/prometheus/console_libraries",
        "/usr/share/doc/prometheus/examples/console_libraries",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| d.join("prom.lib").is_file())
    .expect(
        "no Prometheus console libraries (prom.lib): install Debian's `prometheus` \
         (scripts/install-deps) or set PROMETHEUS_CONSOLE_LIBRARIES",
    )
}

/// The Grafana variables at their "everything" values, as generate.py writes them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${district}", ".*")
        .replace("$district", ".*")
}

fn dashboard_exprs(file: &str) -> BTreeSet<String> {
    let path = repo().join("deploy/grafana/dashboards").join(file);
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    let mut panels: Vec<Value> = d["panels"].as_array().cloned().unwrap_or_default();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.insert(substitute(e));
            }
        }
    }
    out
}

/// The expressions of every `PromConsole.Graph` on a rendered page (`expr: [...]`, one line).
fn graph_exprs(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .flat_map(|rest| {
            let list: Vec<String> = serde_json::from_str(rest.trim_end_matches(',')).unwrap();
            list
        })
        .collect()
}

#[test]
fn the_console_pages_graph_the_dashboards_queries_and_each_returns_data() {
    let mut pipeline = Pipeline::launch(PipelineOptions {
        simulator: Some(SimulatorOptions {
            faults: "demo".to_owned(),
            ..SimulatorOptions::default()
        }),
        start_simulator: false,
        ..PipelineOptions::default()
    });
    let flags = vec![
        format!(
            "--web.console.templates={}",
            repo().join("deploy/prometheus/consoles").display()
        ),
        format!("--web.console.libraries={}", console_libraries().display()),
    ];
    let prom = pipeline.start_prometheus_with(None, &flags);
    pipeline.start(Service::Simulator);

    let (status, index) = prom.get("/consoles/index.html").unwrap();
    assert_eq!(status, 200, "{index}");
    assert!(index.contains("/consoles/citypulse-city.html"), "{index}");
    let mut all = Vec::new();
    for (page, dashboard) in [
        ("citypulse-city.html", "city.json"),
        ("citypulse-pipeline.html", "pipeline.json"),
    ] {
        let (status, body) = prom.get(&format!("/consoles/{page}")).unwrap();
        assert_eq!(status, 200, "{page}: {body}");
        assert!(!body.contains("error executing template"), "{page}: {body}");
        let exprs = graph_exprs(&body);
        let on_page: BTreeSet<String> = exprs.iter().cloned().collect();
        assert_eq!(
            on_page,
            dashboard_exprs(dashboard),
            "{page} must graph exactly the queries of {dashboard} (run \
             deploy/prometheus/consoles/generate.py)"
        );
        all.extend(exprs.into_iter().map(|e| (page, e)));
    }
    assert!(all.len() > 40, "{} graph queries", all.len());

    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let empty: Vec<String> = all
            .iter()
            .filter_map(|(page, e)| match prom.query(e) {
                Ok(r) if !r.is_empty() => None,
                Ok(_) => Some(format!("{page}: no data: {e}")),
                Err(err) => Some(format!("{page}: {err}")),
            })
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "graph queries without data:\n{}",
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The City page's table lists the districts with their AQI once the data is there.
    let (_, city) = prom.get("/consoles/citypulse-city.html").unwrap();
    assert!(city.contains("<td>d01</td>"), "{city}");
}
