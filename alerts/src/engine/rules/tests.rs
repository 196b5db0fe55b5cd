//! Unit tests of the rule loader.

use super::*;

#[test]
fn an_oversized_rule_file_is_refused_before_parsing() {
    let default = include_str!("../../../rules/default.toml");
    let mut big = default.to_owned();
    while big.len() <= MAX_RULE_FILE_BYTES {
        big.push_str("# padding\n");
    }
    let e = load(&big).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.contains("the limit is 262144"), "{e}");
    assert!(load(default).is_ok());
}

#[test]
fn default_rules_load_and_cover_the_documented_alerts() {
    let set = RuleSet::default_rules().unwrap_or_else(|e| panic!("{e}"));
    let aqi = set.group("aqi").expect("aqi group");
    let sev: Vec<_> = aqi.levels.iter().map(|r| r.severity).collect();
    assert_eq!(sev, [Severity::Warning, Severity::Critical]);
    // EPA TAD 2024 Table 2: above 100 is Unhealthy for Sensitive Groups, above 150 Unhealthy.
    assert_eq!(aqi.levels[0].threshold(), 100.0);
    assert_eq!(aqi.levels[1].threshold(), 150.0);
    assert!(aqi.levels.iter().all(|r| r.clear() < r.threshold()));
    assert!(set
        .rules()
        .any(|r| matches!(r.condition, Condition::Offline { .. })));
    assert!(set
        .rules()
        .any(|r| matches!(r.condition, Condition::Stuck { .. }) && r.severity == Severity::Info));
    assert!(set
        .rules()
        .any(|r| r.kind == Kind::Traffic && r.metric == "los"));
}

#[test]
fn every_error_is_reported_with_its_line() {
    let text = r#"
[[rule]]
name = "a"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 120
severity = "warning"
summary = "x"

[[rule]]
name = "b"
kind = "bus"
metric = "aqii"
op = "=>"
threshold = 1
severity = "loud"
summary = "{nope}"

[[rule]]
name = "c"
kind = "air"
metric = "aqi"
op = ">"
threshold = 1
tresh = 2
severity = "info"
summary = "x"

[[rule]]
name = "a"
kind = "air"
condition = "offline"
intervals = 3
threshold = 4
for = "soon"
severity = "info"
summary = "x"
"#;
    let errs = load(text).unwrap_err().0;
    let has = |line: usize, needle: &str| {
        assert!(
            errs.iter()
                .any(|e| e.line == line && e.message.contains(needle)),
            "no error on line {line} containing {needle:?} in {errs:#?}"
        )
    };
    has(8, "wrong side");
    has(14, "unknown Kind `bus`");
    has(16, "=>");
    has(18, "unknown Severity `loud`");
    has(19, "unknown placeholder");
    has(27, "unknown field `tresh`");
    has(32, "duplicate rule name `a`");
    has(36, "`threshold` does not apply");
    has(37, "invalid duration `soon`");
    // Kind is unknown, so the metric cannot be checked; everything else is reported.
    assert!(errs.len() >= 9, "{errs:#?}");
    let sorted = errs.windows(2).all(|w| w[0].line <= w[1].line);
    assert!(sorted);
}

#[test]
fn unknown_metric_names_the_known_ones() {
    let text = r#"
[[rule]]
name = "a"
kind = "traffic"
metric = "aqi"
op = ">"
threshold = 1
severity = "info"
summary = "x"
"#;
    let errs = load(text).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 5);
    assert!(
        errs[0].message.contains("congestion_index"),
        "{:?}",
        errs[0]
    );
}

#[test]
fn syntax_errors_and_unknown_top_level_keys_have_lines() {
    let errs = load("[[rule]]\nname = \"a\nkind = 1\n").unwrap_err().0;
    assert_eq!(errs[0].line, 2, "{errs:?}");
    let errs = load("[settings]\nsilent_after = 0\n[alerts]\nx = 1\n")
        .unwrap_err()
        .0;
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!((errs[0].line, errs[1].line), (2, 3));
}

#[test]
fn groups_must_escalate_coherently() {
    let text = r#"
[[rule]]
name = "hi"
group = "g"
kind = "air"
metric = "aqi"
op = ">"
threshold = 150
severity = "warning"
summary = "x"

[[rule]]
name = "lo"
group = "g"
kind = "air"
metric = "aqi_pm25"
op = ">"
threshold = 100
severity = "critical"
summary = "x"
"#;
    let errs = load(text).unwrap_err().0;
    assert!(
        errs.iter()
            .any(|e| e.line == 12 && e.message.contains("worse condition")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.line == 12 && e.message.contains("metric `aqi_pm25`")),
        "{errs:#?}"
    );
}

#[test]
fn defaults_fill_in_scope_clear_and_group() {
    let text = r#"
[settings]
silent_after = 3

[[rule]]
name = "slow"
kind = "traffic"
metric = "speed_kmh"
op = "<"
threshold = 20
for = "5m"
severity = "info"
summary = "{subject} slow"

[[rule]]
name = "off"
kind = "air"
condition = "offline"
intervals = 4
severity = "warning"
summary = "{subject} offline"
"#;
    let set = load(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.silent_after, 3);
    let slow = &set.group("slow").unwrap().levels[0];
    assert_eq!(slow.scope, Scope::District);
    assert_eq!(slow.clear(), 20.0);
    assert_eq!(slow.for_ms, 300_000);
    let off = &set.group("off").unwrap().levels[0];
    assert_eq!(off.scope, Scope::Sensor);
    assert_eq!(off.metric, OFFLINE_METRIC);
    assert_eq!(set.rule_count(), 2);
}

#[test]
fn keys_are_checked_against_the_rules_own_condition() {
    let text = "[[rule]]\nname = \"s\"\nkind = \"air\"\ncondition = \"stuck\"\nmetric = \"aqi\"\n\
                for = \"1h\"\nop = \">\"\ntolerence = 1\nseverity = \"info\"\nsummary = \"x\"\n";
    let errs = load(text).unwrap_err().0;
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].line, 7);
    assert_eq!(
        errs[0].message,
        "`op` does not apply to a `stuck` rule (it is a field of `threshold` rules; \
         a `stuck` rule's own fields: `metric`, `tolerance`)"
    );
    assert_eq!(errs[1].line, 8);
    assert!(
        errs[1]
            .message
            .starts_with("unknown field `tolerence` in a `stuck` rule, expected one of `name`"),
        "{errs:#?}"
    );
    // Only what a stuck rule takes is offered.
    assert!(
        errs[1].message.ends_with("`metric`, `tolerance`"),
        "{errs:#?}"
    );
    assert!(!errs[1].message.contains("`op`"), "{errs:#?}");
}

#[test]
fn an_offline_rule_names_what_it_takes_instead_of_for() {
    let text = "[[rule]]\nname = \"o\"\nkind = \"air\"\ncondition = \"offline\"\nintervals = 2\n\
                for = \"5m\"\nseverity = \"info\"\nsummary = \"x\"\n";
    let errs = load(text).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].line, 6);
    assert!(
        errs[0]
            .message
            .starts_with("`for` does not apply to an `offline` rule (it fires after `intervals`"),
        "{errs:#?}"
    );
}
