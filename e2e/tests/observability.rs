//! Observability, tested for real:
//!
//! - `promtool` accepts `deploy/prometheus/*.yml` (with the rule files they load) and the rule
//!   files, the rules' unit tests (`deploy/prometheus/rules/tests/`) pass, and a broken rule is
//!   refused;
//! - the Grafana dashboards use the provisioned datasource and only metrics that the services
//!   register and `docs/metrics.md` documents;
//! - against the whole pipeline (real nats-server, PostgreSQL, the four service binaries, and a
//!   real Prometheus scraping them every second): every PromQL expression of the dashboards
//!   returns data through `/api/v1/query`, every pipeline alert rule evaluates with health `ok`,
//!   and freezing the processors (SIGSTOP) fires `CitypulseStageStalled{stage="processors"}` and
//!   `CitypulseServiceDown`, which resolve when they resume (SIGCONT). That run uses a copy of the
//!   rules with every `for:` shortened to 10 s; the expressions are the shipped ones.
//!
//! Needs `promtool` and `prometheus` 2.x (Debian's, from `scripts/install-deps`) and the service
//! binaries (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_e2e::deploy::repo;
use citypulse_e2e::pipeline::{
    Pipeline, PipelineOptions, Prometheus, Service, SimulatorOptions, StopSignal,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new(std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_owned()))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool (scripts/install-deps installs Debian's prometheus and promtool)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `*.yml` files of `dir`, sorted.
fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

fn rules_dir() -> PathBuf {
    repo().join("deploy/prometheus/rules")
}

#[test]
fn prometheus_configs_rules_and_rule_tests_pass_promtool() {
    let prom_dir = repo().join("deploy/prometheus");
    for config in ["prometheus.yml", "prometheus-compose.yml"] {
        let out = promtool(&["check", "config", config], &prom_dir);
        let t = text(&out);
        assert!(out.status.success(), "promtool check config {config}:\n{t}");
        // The config loads the pipeline rules (and promtool checked them too).
        assert!(
            t.contains("SUCCESS: 1 rule files found") && t.contains("citypulse-pipeline.yml"),
            "{config} does not load rules/citypulse-pipeline.yml:\n{t}"
        );
    }
    let rules = yml_files(&rules_dir());
    assert!(
        !rules.is_empty(),
        "no rule files in {}",
        rules_dir().display()
    );
    for file in &rules {
        let out = promtool(&["check", "rules", file.to_str().unwrap()], &prom_dir);
        assert!(
            out.status.success(),
            "promtool check rules {}:\n{}",
            file.display(),
            text(&out)
        );
    }
    let tests = yml_files(&rules_dir().join("tests"));
    assert!(!tests.is_empty(), "no rule unit tests");
    for file in &tests {
        let out = promtool(&["test", "rules", file.to_str().unwrap()], &prom_dir);
        assert!(
            out.status.success(),
            "promtool test rules {}:\n{}",
            file.display(),
            text(&out)
        );
    }
}

#[test]
fn promtool_refuses_a_broken_rule() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(rules_dir().join("citypulse-pipeline.yml")).unwrap();
    let broken = original.replacen(
        "expr: up{job=~\"citypulse-.*\"} == 0",
        "expr: up{job=~\"citypulse-.*\" == 0",
        1,
    );
    assert_ne!(
        broken, original,
        "the ServiceDown rule changed; update this test"
    );
    let path = dir.path().join("broken.yml");
    std::fs::write(&path, broken).unwrap();
    let out = promtool(&["check", "rules", path.to_str().unwrap()], dir.path());
    assert!(
        !out.status.success(),
        "promtool accepted a broken rule:\n{}",
        text(&out)
    );
}

// --- dashboards -----------------------------------------------------------------------------------

/// One PromQL expression of a dashboard.
#[derive(Debug, Clone)]
struct DashboardQuery {
    dashboard: String,
    panel: String,
    /// The expression as Grafana runs it, Grafana's variables replaced by values Prometheus
    /// accepts (`$district` → `.*`, `$__rate_interval` → `1m`).
    expr: String,
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let json = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().into_iter().flatten().cloned());
    }
    out
}

/// Grafana's variables → values a plain Prometheus query accepts.
fn substitute(expr: &str) -> String {
    let s = expr
        .replace("${__rate_interval}", "1m")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m")
        .replace("${district}", ".*")
        .replace("${district:regex}", ".*")
        .replace("$district", ".*");
    assert!(!s.contains('$'), "unknown Grafana variable in {expr}");
    s
}

/// Every `targets[].expr`, and each template variable's `label_values(selector, label)` as
/// `group by (label) (selector)`.
fn dashboard_queries() -> Vec<DashboardQuery> {
    let mut out = Vec::new();
    for (path, d) in dashboards() {
        let name = d["title"].as_str().unwrap_or("?").to_owned();
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| {
                    panic!(
                        "{}: panel {} has a target without expr",
                        path.display(),
                        p["title"]
                    )
                });
                out.push(DashboardQuery {
                    dashboard: name.clone(),
                    panel: p["title"].as_str().unwrap_or("?").to_owned(),
                    expr: substitute(expr),
                });
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable {}: not label_values(...): {q}", v["name"]));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            out.push(DashboardQuery {
                dashboard: name.clone(),
                panel: format!("variable ${}", v["name"].as_str().unwrap()),
                expr: format!(
                    "group by ({}) ({})",
                    label.trim(),
                    substitute(selector.trim())
                ),
            });
        }
    }
    out
}

/// Metric names in a PromQL expression (`citypulse_*`), histogram series mapped to their
/// family (`_bucket`, `_sum`, `_count`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("citypulse_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(family.to_owned());
        rest = &tail[end..];
    }
    out
}

/// The metric names the services' sources register (string literals `"citypulse_..."`), with
/// the crate that registers them. Catches names that exist but are only created on first use.
fn registered_metric_names() -> BTreeMap<String, String> {
    fn walk(dir: &Path, krate: &str, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, krate, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&p).unwrap();
                for piece in src.split("\"citypulse_").skip(1) {
                    if let Some(end) = piece.find('"') {
                        let name = format!("citypulse_{}", &piece[..end]);
                        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                            out.insert(name, krate.to_owned());
                        }
                    }
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for krate in [
        "simulator",
        "ingest",
        "processors",
        "alerts",
        "web",
        "runtime",
    ] {
        walk(&repo().join(krate).join("src"), krate, &mut out);
    }
    out
}

fn metrics_doc() -> String {
    std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md")
}

#[test]
fn dashboards_use_the_provisioned_datasource_and_documented_metrics() {
    let provisioning = std::fs::read_to_string(
        repo().join("deploy/grafana/provisioning/datasources/prometheus.yaml"),
    )
    .unwrap();
    let uid = provisioning
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid:"))
        .expect("the provisioned datasource has a fixed uid")
        .trim()
        .to_owned();
    let dashboards = dashboards();
    let titles: BTreeSet<String> = dashboards
        .iter()
        .map(|(_, d)| d["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        titles,
        BTreeSet::from([
            "citypulse / City".to_owned(),
            "citypulse / Pipeline".to_owned()
        ])
    );
    let mut uids = BTreeSet::new();
    for (path, d) in &dashboards {
        let f = path.display();
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{f}: duplicate uid"
        );
        assert!(
            d["schemaVersion"].as_u64().unwrap() >= 36,
            "{f}: old schemaVersion"
        );
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{f}: duplicate panel id in {title}"
            );
            if p["type"] == "row" {
                continue;
            }
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{f}: panel {title} has no description"
            );
            assert_eq!(p["datasource"]["uid"], uid.as_str(), "{f}: panel {title}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{f}: panel {title} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert_eq!(t["datasource"]["uid"], uid.as_str(), "{f}: panel {title}");
                assert!(
                    refs.insert(t["refId"].as_str().unwrap()),
                    "{f}: {title}: refId twice"
                );
            }
        }
    }
    // Every metric a dashboard or a rule uses is registered by a service and documented.
    let registered = registered_metric_names();
    let doc = metrics_doc();
    let mut used = BTreeSet::new();
    for q in dashboard_queries() {
        used.extend(metric_names(&q.expr));
    }
    for f in yml_files(&rules_dir()) {
        used.extend(metric_names(&std::fs::read_to_string(f).unwrap()));
    }
    for name in &used {
        assert!(
            registered.contains_key(name),
            "{name} is used but no service registers it"
        );
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is used but not in docs/metrics.md"
        );
    }
    // And the docs index every metric the services register.
    for (name, krate) in &registered {
        if matches!(
            name.as_str(),
            "citypulse_processors"
                | "citypulse_alerts"
                | "citypulse_ingest"
                | "citypulse_processors_group"
                | "citypulse_alerts_group"
                | "citypulse_ingest_group"
        ) {
            continue; // KV bucket names and metric prefixes, not metrics
        }
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} ({krate}) is not in docs/metrics.md"
        );
    }
}

// --- the live pipeline ----------------------------------------------------------------------------

/// Polls `f` every 250 ms until it returns `Ok`; panics with its last error after `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: not within {timeout:?}:\n{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A copy of the rule files with every `for:` set to `for_`.
fn rules_with_short_for(for_: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in yml_files(&rules_dir()) {
        let text = std::fs::read_to_string(&file).unwrap();
        let alerts = text.matches("- alert:").count();
        let mut rewritten = 0;
        let out: Vec<String> = text
            .lines()
            .map(|l| match l.trim_start().strip_prefix("for:") {
                Some(_) => {
                    rewritten += 1;
                    format!("{}for: {for_}", &l[..l.len() - l.trim_start().len()])
                }
                None => l.to_owned(),
            })
            .collect();
        assert_eq!(
            rewritten,
            alerts,
            "{}: every alert should have a `for:`",
            file.display()
        );
        std::fs::write(
            dir.path().join(file.file_name().unwrap()),
            out.join("\n") + "\n",
        )
        .unwrap();
    }
    dir
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or("")
}

/// The pending or firing alerts named `name` with `label` = `value`.
fn active<'a>(alerts: &'a [Value], name: &str, label_name: &str, value: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| label(a, "alertname") == name && label(a, label_name) == value)
        .collect()
}

fn sample_value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

fn values_by(prom: &Prometheus, expr: &str, by: &str) -> Result<BTreeMap<String, f64>, String> {
    let result = prom.query(expr)?;
    if result.is_empty() {
        return Err(format!("{expr}: no data"));
    }
    Ok(result
        .iter()
        .map(|s| {
            (
                s["metric"][by].as_str().unwrap_or("").to_owned(),
                sample_value(s),
            )
        })
        .collect())
}

#[test]
fn every_dashboard_query_returns_data_and_a_stopped_stage_fires_its_stall_alert() {
    let started = Instant::now();
    let phase = |what: &str| eprintln!("observability: {what} after {:?}", started.elapsed());
    let queries = dashboard_queries();
    assert!(
        queries.len() > 40,
        "only {} dashboard queries found",
        queries.len()
    );

    // Three hours of history at full speed (enough for hourly air-quality figures), then real
    // time; demo faults so that dead letters and late readings exist.
    // The simulator starts once Prometheus scrapes, so that the stall rules see the windows
    // closed during the catch-up (in real time they close once a minute).
    let mut pipeline = Pipeline::launch(PipelineOptions {
        simulator: Some(SimulatorOptions {
            faults: "demo".to_owned(),
            ..SimulatorOptions::default()
        }),
        start_simulator: false,
        ..PipelineOptions::default()
    });
    let rules = rules_with_short_for("10s");
    let prom = pipeline.start_prometheus(Some(rules.path()));
    pipeline.start(Service::Simulator);
    phase("pipeline and Prometheus up");

    // Every expression of both dashboards returns data.
    poll(
        Duration::from_secs(120),
        "every dashboard query returns data",
        || {
            let empty: Vec<String> = queries
                .iter()
                .filter_map(|q| match prom.query(&q.expr) {
                    Ok(r) if !r.is_empty() => None,
                    Ok(_) => Some(format!(
                        "{} / {}: no data: {}",
                        q.dashboard, q.panel, q.expr
                    )),
                    Err(e) => Some(format!("{} / {}: {e}", q.dashboard, q.panel)),
                })
                .collect();
            if empty.is_empty() {
                Ok(())
            } else {
                Err(empty.join("\n"))
            }
        },
    );
    phase("every dashboard query returned data");

    // The city panels show numbers in their domains.
    let aqi = values_by(
        &prom,
        "max by (district) (citypulse_district_aqi)",
        "district",
    )
    .unwrap();
    assert!(
        aqi.values().all(|v| (0.0..=500.0).contains(v)),
        "AQI out of range: {aqi:?}"
    );
    let ci = values_by(
        &prom,
        "max by (district) (citypulse_district_congestion_index)",
        "district",
    )
    .unwrap();
    assert!(
        ci.values().all(|v| (0.0..=1.0).contains(v)),
        "congestion out of range: {ci:?}"
    );
    let los = values_by(
        &prom,
        "sum by (district) (citypulse_district_los_share)",
        "district",
    )
    .unwrap();
    assert!(
        los.values().all(|v| (v - 1.0).abs() < 1e-9),
        "LOS shares of a district must sum to 1: {los:?}"
    );
    let up = values_by(&prom, r#"up{job=~"citypulse-.*"}"#, "job").unwrap();
    assert_eq!(up.len(), 4, "{up:?}");
    assert!(up.values().all(|v| *v == 1.0), "{up:?}");

    // Every pipeline rule evaluates without error.
    let rule_count: usize = yml_files(&rules_dir())
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .matches("- alert:")
                .count()
        })
        .sum();
    poll(
        Duration::from_secs(30),
        "every alert rule evaluates with health ok",
        || {
            let groups = prom.rule_groups()?;
            let rules: Vec<&Value> = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            if let Some(bad) = rules.iter().find(|r| r["health"] == "err") {
                panic!("rule {} failed: {}", bad["name"], bad["lastError"]);
            }
            if rules.len() != rule_count {
                return Err(format!(
                    "{} rules loaded, {rule_count} in the files",
                    rules.len()
                ));
            }
            match rules.iter().find(|r| r["health"] != "ok") {
                Some(r) => Err(format!("rule {} health {}", r["name"], r["health"])),
                None => Ok(()),
            }
        },
    );

    // Healthy pipeline: no stall and no service down, not even pending.
    let quiet_at = poll(
        Duration::from_secs(90),
        "no stall or down alert pending",
        || {
            let at = SystemTime::now();
            let alerts = prom.alerts()?;
            let noisy: Vec<&Value> = alerts
                .iter()
                .filter(|a| {
                    matches!(
                        label(a, "alertname"),
                        "CitypulseStageStalled" | "CitypulseServiceDown"
                    )
                })
                .collect();
            if noisy.is_empty() {
                Ok(at)
            } else {
                Err(format!("{noisy:#?}"))
            }
        },
    );

    phase("rules healthy, no stall");

    // Freeze the processors: readings keep arriving, nothing closes.
    pipeline.stop_signal(Service::Processors, StopSignal::Stop);
    let fired = poll(
        Duration::from_secs(120),
        "the processors' stall alert fires",
        || {
            let alerts = prom.alerts()?;
            let stalled = active(&alerts, "CitypulseStageStalled", "stage", "processors");
            let down = active(
                &alerts,
                "CitypulseServiceDown",
                "job",
                "citypulse-processors",
            );
            match (stalled.first(), down.first()) {
                (Some(s), Some(d)) if s["state"] == "firing" && d["state"] == "firing" => {
                    Ok((*s).clone())
                }
                _ => Err(format!("{alerts:#?}")),
            }
        },
    );
    phase("stall alert fired");
    let active_at = humantime::parse_rfc3339_weak(fired["activeAt"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("activeAt {}: {e}", fired["activeAt"]));
    assert!(
        active_at + Duration::from_secs(2) >= quiet_at,
        "the stall alert was already active before the processors stopped: {fired:#}"
    );
    assert_eq!(label(&fired, "severity"), "critical");
    let alerts = prom.alerts().unwrap();
    assert!(
        active(&alerts, "CitypulseStageStalled", "stage", "ingest").is_empty(),
        "ingest kept working, yet it is reported stalled: {alerts:#?}"
    );

    // Resume: the service is up again at once, and the processors close the windows they
    // missed. (The stall alert resolves at the next window closed after that, up to a minute
    // later in real time: the rules' unit tests cover it.)
    let before = prom
        .query("sum(citypulse_processors_windows_closed_total)")
        .unwrap()
        .first()
        .map(sample_value)
        .unwrap_or(0.0);
    pipeline.stop_signal(Service::Processors, StopSignal::Cont);
    poll(Duration::from_secs(30), "the processors resume", || {
        let alerts = prom.alerts()?;
        let down = active(
            &alerts,
            "CitypulseServiceDown",
            "job",
            "citypulse-processors",
        );
        let now = pipeline.metric_sum(
            Service::Processors,
            "citypulse_processors_windows_closed_total",
        );
        if down.is_empty() && now > before {
            Ok(())
        } else {
            Err(format!(
                "windows closed {now} (before the stop {before}); {down:#?}"
            ))
        }
    });
    phase("processors resumed");

    // Every metric the running services export is in the metrics index.
    let doc = metrics_doc();
    for s in pipeline.services() {
        let text = pipeline.metrics_text(s).unwrap();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} ({}) is not in docs/metrics.md",
                s.name()
            );
        }
    }
}

#[test]
fn grafana_variables_are_replaced_and_metric_names_found() {
    assert_eq!(
        substitute(
            r#"sum by (d) (rate(citypulse_x_total{district=~"$district"}[$__rate_interval]))"#
        ),
        r#"sum by (d) (rate(citypulse_x_total{district=~".*"}[1m]))"#
    );
    assert_eq!(
        metric_names("histogram_quantile(0.9, rate(citypulse_a_seconds_bucket[1m])) / citypulse_b"),
        BTreeSet::from(["citypulse_a_seconds".to_owned(), "citypulse_b".to_owned()])
    );
}
