//! Every rule file in the repository loads to exactly the rules (or the errors) recorded in
//! `tests/rules/*.expected`: the default file, the examples of alerts/README.md, the rules of
//! the service-level tests (`common::TEST_RULES`) and the fixtures in `tests/rules/`. The expectations were written by the loader as it was before
//! conditions became a typed enum (issue 13, item 6), so they are not computed by the code
//! under test. Pure: no server.
//!
//! `BLESS_RULE_FIXTURES=1 cargo test -p citypulse-alerts --test rule_files` rewrites them;
//! review the diff: a change to a valid file's expectation is a change of behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_alerts::engine::rules::load;
use std::path::{Path, PathBuf};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rules");

/// What the loader makes of `text`: the rule set's Debug form or the error list.
fn outcome(text: &str) -> String {
    match load(text) {
        Ok(set) => format!("{set:#?}\n"),
        Err(e) => format!("{e}\n"),
    }
}

fn check(name: &str, text: &str) -> Option<String> {
    let expected_path = Path::new(DIR).join(format!("{name}.expected"));
    let got = outcome(text);
    if std::env::var_os("BLESS_RULE_FIXTURES").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&expected_path)
        .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
    (got != expected).then(|| format!("{name}: got\n{got}\nexpected\n{expected}"))
}

/// The ```toml blocks of a Markdown file.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_rule_file_loads_as_recorded() {
    let mut files: Vec<(String, String)> = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = std::fs::read_to_string(root.join("rules/default.toml")).unwrap();
    files.push(("default".into(), default));
    files.push(("test-rules".into(), common::TEST_RULES.to_owned()));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = toml_blocks(&readme);
    assert!(
        !blocks.is_empty(),
        "alerts/README.md has no ```toml example"
    );
    for (i, block) in blocks.into_iter().enumerate() {
        files.push((format!("readme-{}", i + 1), block));
    }
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 8, "{fixtures:?}");
    for path in fixtures {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        files.push((name, std::fs::read_to_string(&path).unwrap()));
    }
    let failures: Vec<String> = files
        .iter()
        .filter_map(|(name, text)| check(name, text))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn valid_fixtures_load_and_invalid_ones_do_not() {
    for entry in std::fs::read_dir(DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(load(&text).is_ok(), name.starts_with("valid-"), "{name}");
    }
}
