//! Human-readable durations for command-line flags.

use std::time::Duration;

/// Parses "30s", "1m 30s", "2h", "500ms" (humantime syntax); for `#[arg(value_parser = ...)]`.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

/// Like [`parse`], but refuses zero.
pub fn parse_positive(s: &str) -> Result<Duration, String> {
    match parse(s)? {
        d if d.is_zero() => Err(format!("duration `{s}` must be greater than zero")),
        d => Ok(d),
    }
}

/// Whole milliseconds of `d`, saturating at `u64::MAX` (the unit of every timestamp and
/// interval in the pure cores).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse("soon").is_err());
        assert!(parse_positive("0s").is_err());
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1_500)), 1_500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
