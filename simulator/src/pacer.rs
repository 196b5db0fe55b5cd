//! PURE: maps wall-clock time to the simulated time that may be published.
//!
//! Simulated time runs `speed` times faster than the wall clock from `(start_sim, start_wall)`,
//! but never ahead of the wall clock: `sim_now = min(start_sim + (now − start_wall)·speed, now)`.
//! A run that starts in the past at `--speed 60` therefore catches up with the wall clock and
//! then continues at real time (speed 1); `--speed max` is the wall clock itself (everything in
//! the past at once, then real time). Since a reading is published only once its emission time
//! is below `sim_now`, no reading carries a `ts` ahead of the wall clock, and ingest's
//! future-timestamp check never rejects a valid one (only the `clock_skew` fault does that, on
//! purpose).

use std::fmt;
use std::str::FromStr;

/// How fast simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as possible (capped at the wall clock).
    Max,
    /// This many simulated seconds per wall-clock second (> 0).
    Factor(f64),
}

impl Speed {
    /// True when simulated time runs faster than real time (the default start is then in the
    /// past, see the crate docs).
    pub fn is_accelerated(self) -> bool {
        match self {
            Speed::Max => true,
            Speed::Factor(f) => f > 1.0,
        }
    }
}

impl FromStr for Speed {
    type Err = String;

    /// `max`, `0` (= max), or a positive factor such as `60` or `0.5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(0.0) => Ok(Speed::Max),
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "invalid speed `{s}`: expected `max`, 0 (= max) or a positive number"
            )),
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(x) => write!(f, "{x}"),
        }
    }
}

/// The mapping of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacer {
    start_sim_ms: u64,
    start_wall_ms: u64,
    speed: Speed,
}

impl Pacer {
    /// Simulated time `start_sim_ms` corresponds to wall time `start_wall_ms`.
    pub fn new(start_sim_ms: u64, start_wall_ms: u64, speed: Speed) -> Pacer {
        Pacer {
            start_sim_ms,
            start_wall_ms,
            speed,
        }
    }

    /// The simulated time reached at wall time `now_wall_ms`: messages emitted before it may be
    /// published. Never above `now_wall_ms`.
    pub fn sim_now(&self, now_wall_ms: u64) -> u64 {
        self.paced(now_wall_ms).min(now_wall_ms)
    }

    /// The earliest wall time at which `sim_now` exceeds `sim_ms` (when a message emitted at
    /// `sim_ms` may go).
    pub fn wall_at(&self, sim_ms: u64) -> u64 {
        let at_wall_speed = sim_ms + 1;
        match self.speed {
            Speed::Max => at_wall_speed,
            Speed::Factor(f) => {
                let ahead = (sim_ms + 1).saturating_sub(self.start_sim_ms) as f64;
                let paced = self.start_wall_ms.saturating_add((ahead / f).ceil() as u64);
                paced.max(at_wall_speed)
            }
        }
    }

    /// True once simulated time has caught up with the wall clock (real time from then on).
    pub fn caught_up(&self, now_wall_ms: u64) -> bool {
        self.paced(now_wall_ms) >= now_wall_ms
    }

    /// Simulated time at `speed` alone, before the wall-clock cap (`Max`: unbounded).
    fn paced(&self, now_wall_ms: u64) -> u64 {
        match self.speed {
            Speed::Max => u64::MAX,
            Speed::Factor(f) => {
                let elapsed = now_wall_ms.saturating_sub(self.start_wall_ms) as f64;
                self.start_sim_ms.saturating_add((elapsed * f) as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: u64 = 3_600_000;
    const WALL: u64 = 1_767_225_600_000;

    #[test]
    fn accelerated_run_from_the_past_catches_up_then_runs_in_real_time() {
        let p = Pacer::new(WALL - 24 * H, WALL, Speed::Factor(60.0));
        // One wall minute is one simulated hour.
        assert_eq!(p.sim_now(WALL + 60_000), WALL - 23 * H);
        assert!(!p.caught_up(WALL + 60_000));
        // 24 h behind at 59 h/h gained: caught up after 24/59 h of wall time; then real time.
        let later = WALL + 2 * H;
        assert!(p.caught_up(later));
        assert_eq!(p.sim_now(later), later);
        assert_eq!(p.sim_now(later + 1234), later + 1234);
    }

    #[test]
    fn max_speed_is_the_wall_clock() {
        let p = Pacer::new(WALL - 24 * H, WALL, Speed::Max);
        assert_eq!(p.sim_now(WALL), WALL);
        assert_eq!(p.wall_at(WALL - H), WALL - H + 1);
    }

    #[test]
    fn slow_motion_lags_behind() {
        let p = Pacer::new(WALL, WALL, Speed::Factor(0.5));
        assert_eq!(p.sim_now(WALL + 10_000), WALL + 5_000);
        assert_eq!(p.wall_at(WALL + 5_000), WALL + 10_002);
    }

    #[test]
    fn speeds_parse() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("0".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("60".parse::<Speed>(), Ok(Speed::Factor(60.0)));
        assert!("-1".parse::<Speed>().is_err());
        assert!("inf".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }

    proptest! {
        #[test]
        fn never_ahead_of_the_wall_clock_and_never_backwards(
            behind in 0u64..(48 * H), speed in 0.01f64..10_000.0, a in 0u64..(96 * H), b in 0u64..(96 * H)
        ) {
            let p = Pacer::new(WALL - behind, WALL, Speed::Factor(speed));
            let (a, b) = (WALL + a.min(b), WALL + a.max(b));
            prop_assert!(p.sim_now(a) <= a);
            prop_assert!(p.sim_now(a) <= p.sim_now(b));
        }

        #[test]
        fn wall_at_is_when_the_time_is_reached(
            behind in 0u64..(48 * H), speed in 0.01f64..10_000.0, ahead in 0u64..(96 * H)
        ) {
            let p = Pacer::new(WALL - behind, WALL, Speed::Factor(speed));
            let t = WALL - behind + ahead;
            let w = p.wall_at(t);
            // Up to one millisecond of float rounding either way.
            prop_assert!(p.sim_now(w + 1) > t);
            prop_assert!(p.sim_now(w.saturating_sub(2)) <= t);
        }
    }
}
