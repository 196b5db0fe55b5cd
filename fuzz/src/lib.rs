//! Fuzzing on the stable toolchain (no nightly, no libFuzzer): a deterministic mutation engine
//! over every decoder and loader of citypulse.
//!
//! Each [`targets::Target`] starts from a corpus (golden fixtures, readings of a simulated city,
//! the shipped rule and city files). Every input is one of the corpus's entries mutated at the
//! byte level or at the CBOR-value level ([`mutate`]), now and then grown to about 1 MB. The
//! engine runs the target's check under `catch_unwind` and the counting allocator
//! ([`alloc::measure`]) and records a failure when it panics, breaks an invariant (round trips,
//! listed rejection reasons, idempotent validation) or holds more memory than the target's bound
//! (`factor × input + slack`). Inputs that produce a rare outcome join the corpus: crude
//! feedback, without coverage instrumentation.
//!
//! `scripts/fuzz` runs 1,000,000 inputs per target; `fuzz/tests/short.rs` runs a short budget
//! in CI.

pub mod alloc;
pub mod mutate;
pub mod targets;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use targets::Target;

/// A broken invariant and the input that broke it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
}

/// What a run of one target saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run.
    pub inputs: u64,
    /// Inputs per outcome label (`ok`, or the rejection's reason).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// The largest input, bytes.
    pub largest_input: usize,
    /// The most memory one input held, bytes.
    pub peak_alloc: usize,
    /// Failures (at most [`MAX_FAILURES`]; the run stops there).
    pub failures: Vec<Failure>,
}

/// A run stops after this many failures.
pub const MAX_FAILURES: usize = 5;
/// The corpus stops growing here.
const MAX_CORPUS: usize = 512;
/// About one input in this many is grown to roughly [`BIG_INPUT`] bytes.
const BIG_EVERY: usize = 5_000;
const BIG_INPUT: usize = 1 << 20;

/// Runs `inputs` inputs of `target` from `seed`.
pub fn run(target: &Target, inputs: u64, seed: u64) -> Report {
    let mut rng = mutate::Rng::new(seed);
    let mut corpus = (target.seeds)();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut report = Report::default();
    while report.inputs < inputs && report.failures.len() < MAX_FAILURES {
        let input = next_input(&mut rng, &corpus);
        report.inputs += 1;
        report.largest_input = report.largest_input.max(input.len());
        match check(target, &input) {
            Ok((label, peak)) => {
                report.peak_alloc = report.peak_alloc.max(peak);
                let seen = report.outcomes.entry(label).or_insert(0);
                *seen += 1;
                if *seen <= 4 && corpus.len() < MAX_CORPUS && input.len() < 1 << 16 {
                    corpus.push(input);
                }
            }
            Err(message) => report.failures.push(Failure { message, input }),
        }
    }
    report
}

fn next_input(rng: &mut mutate::Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let base = &corpus[rng.below(corpus.len())];
    let other = &corpus[rng.below(corpus.len())];
    let mut input = if rng.one_in(2) {
        mutate::structured(rng, base, other)
    } else {
        mutate::bytes(rng, base, other)
    };
    if rng.one_in(BIG_EVERY) && !input.is_empty() {
        while input.len() < BIG_INPUT {
            input.extend_from_within(..input.len().min(BIG_INPUT - input.len()).max(1));
        }
    }
    input
}

/// Runs the check once: its outcome label and the memory it held, or what went wrong.
pub fn check(target: &Target, input: &[u8]) -> Result<(&'static str, usize), String> {
    let (result, peak) =
        alloc::measure(|| catch_unwind(AssertUnwindSafe(|| (target.check)(input))));
    let label = match result {
        Ok(Ok(label)) => label,
        Ok(Err(broken)) => return Err(broken),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            return Err(format!("panicked: {what}"));
        }
    };
    let bound = target.alloc_factor.saturating_mul(input.len()) + target.alloc_slack;
    if peak > bound {
        return Err(format!(
            "held {peak} bytes for a {}-byte input (bound {bound})",
            input.len()
        ));
    }
    Ok((label, peak))
}
