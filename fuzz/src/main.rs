//! `citypulse-fuzz`: runs the fuzz targets and prints, per target, the inputs run, the outcomes
//! reached and the memory held; failing inputs are written out. Exit status 1 on any failure.

use citypulse_fuzz::{run, targets, Report};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: citypulse_fuzz::alloc::Counting = citypulse_fuzz::alloc::Counting;

/// Fuzz citypulse's decoders and loaders on the stable toolchain.
#[derive(Parser)]
#[command(name = "citypulse-fuzz", version)]
struct Args {
    /// Targets to run (repeatable); all when absent: reading, validate, batch, window, alert,
    /// subject, rules, city, checkpoint.
    #[arg(long = "target", env = "CITYPULSE_FUZZ_TARGETS", value_delimiter = ',')]
    targets: Vec<String>,
    /// Inputs per target.
    #[arg(long, env = "CITYPULSE_FUZZ_INPUTS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    inputs: u64,
    /// Seed of the input generator (runs are reproducible).
    #[arg(long, env = "CITYPULSE_FUZZ_SEED", default_value_t = 1)]
    seed: u64,
    /// Runs this one input (a file written by an earlier run) through the targets and prints the
    /// outcome and the memory held, instead of generating inputs.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Where failing inputs are written.
    #[arg(
        long,
        env = "CITYPULSE_FUZZ_OUT",
        default_value = "target/fuzz-failures"
    )]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let all = targets::all();
    let names: Vec<&str> = all.iter().map(|t| t.name).collect();
    if let Some(bad) = args.targets.iter().find(|t| !names.contains(&t.as_str())) {
        eprintln!("unknown target `{bad}`; targets: {}", names.join(", "));
        return ExitCode::from(2);
    }
    let chosen: Vec<&targets::Target> = all
        .iter()
        .filter(|t| args.targets.is_empty() || args.targets.iter().any(|n| n == t.name))
        .collect();
    if let Some(path) = &args.replay {
        return replay(path, &chosen);
    }
    // Panics are caught and reported per input; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}  failures",
        "target", "inputs", "ok", "rejected", "reasons", "largest B", "peak B"
    );
    let mut failed = false;
    for target in chosen {
        let report = run(target, args.inputs, args.seed);
        print_row(target.name, &report);
        failed |= !report.failures.is_empty();
        save_failures(&args.out, target.name, &report);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn replay(path: &std::path::Path, chosen: &[&targets::Target]) -> ExitCode {
    let input = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for target in chosen {
        match citypulse_fuzz::check(target, &input) {
            Ok((label, peak)) => println!("{}: {label}, held {peak} B", target.name),
            Err(e) => {
                failed = true;
                println!("{}: FAILED: {e}", target.name);
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_row(name: &str, r: &Report) {
    let ok = r.outcomes.get("ok").copied().unwrap_or(0);
    let reasons = r.outcomes.keys().filter(|k| **k != "ok").count();
    println!(
        "{name:<9} {:>9} {ok:>9} {:>9} {reasons:>8} {:>11} {:>11}  {}",
        r.inputs,
        r.inputs - ok - r.failures.len() as u64,
        r.largest_input,
        r.peak_alloc,
        r.failures.len()
    );
}

fn save_failures(dir: &std::path::Path, name: &str, r: &Report) {
    for (i, f) in r.failures.iter().enumerate() {
        let path = dir.join(format!("{name}-{i}.bin"));
        let saved = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &f.input));
        match saved {
            Ok(()) => eprintln!("{name}: {} (input: {})", f.message, path.display()),
            Err(e) => eprintln!("{name}: {} (input not saved: {e})", f.message),
        }
    }
}
