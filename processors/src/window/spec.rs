//! Window shapes: tumbling and hopping event-time windows, aligned to the Unix epoch.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The shape of the windows: `size` long, a new one every `hop` (tumbling when `hop == size`).
///
/// Windows are `[k·hop, k·hop + size)` for every integer `k ≥ 0`, in milliseconds of event time
/// since the Unix epoch, so every instance of the service cuts the same windows. `size` must be a
/// multiple of `hop`: every reading then falls into exactly `size / hop` windows, and the state
/// is kept per *pane* (one hop of readings), each pane shared by the windows that cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    size_ms: u64,
    hop_ms: u64,
}

/// A window shape that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The size or hop is zero.
    #[error("window size and hop must be positive (size {size_ms} ms, hop {hop_ms} ms)")]
    Zero {
        /// Window length, ms.
        size_ms: u64,
        /// Hop, ms.
        hop_ms: u64,
    },
    /// The hop is longer than the window, or the window is not a whole number of hops.
    #[error("window size {size_ms} ms must be a positive multiple of the hop {hop_ms} ms")]
    NotAMultiple {
        /// Window length, ms.
        size_ms: u64,
        /// Hop, ms.
        hop_ms: u64,
    },
}

impl WindowSpec {
    /// Tumbling windows of `size_ms`.
    pub fn tumbling(size_ms: u64) -> Result<WindowSpec, SpecError> {
        WindowSpec::hopping(size_ms, size_ms)
    }

    /// Hopping windows of `size_ms`, one starting every `hop_ms`.
    pub fn hopping(size_ms: u64, hop_ms: u64) -> Result<WindowSpec, SpecError> {
        if size_ms == 0 || hop_ms == 0 {
            return Err(SpecError::Zero { size_ms, hop_ms });
        }
        if hop_ms > size_ms || size_ms % hop_ms != 0 {
            return Err(SpecError::NotAMultiple { size_ms, hop_ms });
        }
        Ok(WindowSpec { size_ms, hop_ms })
    }

    /// Window length, ms.
    pub const fn size_ms(&self) -> u64 {
        self.size_ms
    }

    /// Distance between window starts, ms (= the pane length).
    pub const fn hop_ms(&self) -> u64 {
        self.hop_ms
    }

    /// Windows each reading falls into.
    pub const fn panes_per_window(&self) -> u64 {
        self.size_ms / self.hop_ms
    }

    /// Start of the pane holding event time `ts`.
    pub const fn pane_of(&self, ts: u64) -> u64 {
        ts - ts % self.hop_ms
    }

    /// The largest window end at or before `t` (window ends are multiples of the hop).
    pub const fn end_at_or_before(&self, t: u64) -> u64 {
        t - t % self.hop_ms
    }

    /// Start of the window ending at `end` (0 for the first windows after the epoch).
    pub const fn start_of(&self, end: u64) -> u64 {
        end.saturating_sub(self.size_ms)
    }

    /// Ends of the windows containing event time `ts`, ascending.
    pub fn window_ends(&self, ts: u64) -> impl Iterator<Item = u64> {
        let first = self.pane_of(ts) + self.hop_ms;
        let hop = self.hop_ms;
        (0..self.panes_per_window()).map(move |i| first + i * hop)
    }

    /// Whether this is a tumbling spec.
    pub const fn is_tumbling(&self) -> bool {
        self.size_ms == self.hop_ms
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_tumbling() {
            write!(f, "tumbling {} ms", self.size_ms)
        } else {
            write!(f, "hopping {} ms every {} ms", self.size_ms, self.hop_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopping_windows_cover_each_instant_size_over_hop_times() {
        let spec = WindowSpec::hopping(300_000, 60_000).expect("valid");
        let ends: Vec<u64> = spec.window_ends(125_000).collect();
        assert_eq!(ends, vec![180_000, 240_000, 300_000, 360_000, 420_000]);
        for end in ends {
            let start = spec.start_of(end);
            assert!(start <= 125_000 && 125_000 < end, "[{start}, {end})");
        }
        let tumbling = WindowSpec::tumbling(60_000).expect("valid");
        assert_eq!(
            tumbling.window_ends(60_000).collect::<Vec<_>>(),
            vec![120_000]
        );
        assert_eq!(
            tumbling.window_ends(59_999).collect::<Vec<_>>(),
            vec![60_000]
        );
    }

    #[test]
    fn invalid_shapes_are_refused() {
        assert!(WindowSpec::tumbling(0).is_err());
        assert!(WindowSpec::hopping(60_000, 0).is_err());
        assert!(WindowSpec::hopping(60_000, 120_000).is_err());
        assert!(WindowSpec::hopping(300_000, 70_000).is_err());
    }
}
