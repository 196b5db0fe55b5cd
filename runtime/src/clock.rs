//! The wall clock, read once per use in the shells and passed into the pure cores as ms.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock now, ms since the Unix epoch (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, crate::duration::millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2026_and_moves_forward() {
        let a = now_ms();
        // 2026-01-01T00:00:00Z: a clock read as seconds or µs would be far off.
        assert!(a > 1_767_225_600_000 && a < 1_767_225_600_000 * 10, "{a}");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now_ms() > a);
    }
}
