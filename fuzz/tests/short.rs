//! The CI form of `scripts/fuzz`: every target, a short budget, the counting allocator
//! installed. Besides "no failure", each target must have reached accepted inputs and several
//! kinds of rejection, so a broken generator cannot pass by testing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_fuzz::{run, targets};

#[global_allocator]
static ALLOC: citypulse_fuzz::alloc::Counting = citypulse_fuzz::alloc::Counting;

/// Inputs per target here; `CITYPULSE_FUZZ_INPUTS` overrides.
const INPUTS: u64 = 4_000;

#[test]
fn every_target_survives_a_short_run_and_reaches_accepted_and_rejected_inputs() {
    let inputs = std::env::var("CITYPULSE_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(INPUTS);
    let mut problems = Vec::new();
    for target in targets::all() {
        let r = run(&target, inputs, 2026);
        for f in &r.failures {
            let shown = &f.input[..f.input.len().min(200)];
            problems.push(format!(
                "{}: {} — input {shown:02x?}",
                target.name, f.message
            ));
        }
        let ok = r.outcomes.get("ok").copied().unwrap_or(0);
        let rejections = r.outcomes.keys().filter(|k| **k != "ok").count();
        if ok < (inputs / 1000).max(3) || rejections == 0 {
            problems.push(format!("{}: too narrow: {:?}", target.name, r.outcomes));
        }
        println!("{}: {:?}, peak {} B", target.name, r.outcomes, r.peak_alloc);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_allocation_bound_catches_a_decoder_that_holds_too_much() {
    // A check that allocates 1 KiB per input byte breaks any bound of a small multiple.
    let greedy = targets::Target {
        name: "greedy",
        seeds: || vec![vec![0; 100]],
        check: |input| {
            let held = vec![0u8; input.len() * 1024];
            Ok(if held.is_empty() { "empty" } else { "ok" })
        },
        alloc_factor: 8,
        alloc_slack: 1024,
    };
    let r = run(&greedy, 50, 1);
    assert!(
        r.failures.iter().any(|f| f.message.contains("bytes for a")),
        "{:?}",
        r.failures.first().map(|f| &f.message)
    );
    // And a panic is a failure, not a crash of the run.
    let panicky = targets::Target {
        name: "panicky",
        seeds: || vec![vec![1, 2, 3]],
        check: |input| {
            assert!(input.len() < 5, "long input");
            Ok("ok")
        },
        alloc_factor: 8,
        alloc_slack: 1 << 20,
    };
    let r = run(&panicky, 500, 1);
    assert!(r.failures.iter().any(|f| f.message.contains("long input")));
}
