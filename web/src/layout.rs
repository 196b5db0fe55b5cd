//! PURE: the map's geometry, derived from the city model. City files carry no coordinates, so the
//! layout is deterministic: districts in file order on a grid of near-square cells, each
//! district's corridors as parallel horizontal lines (its segments, upstream to downstream, left
//! to right), its stations as dots along the bottom edge.
//!
//! A large city is aggregated: at most [`MAX_CORRIDORS`] corridors, [`MAX_SEGMENTS_PER_CORRIDOR`]
//! segments per corridor and [`MAX_STATIONS`] stations are drawn per district; the totals are
//! sent too. The map of a 100,000-sensor city is as heavy as that of a 350-sensor one.

use citypulse_simulator::city::City;
use serde::Serialize;
use std::collections::BTreeMap;

/// Width of one district cell, in SVG user units.
pub const CELL_W: f64 = 240.0;
/// Height of one district cell.
pub const CELL_H: f64 = 180.0;
/// Gap between cells.
pub const GAP: f64 = 12.0;
/// Corridors drawn per district.
pub const MAX_CORRIDORS: usize = 6;
/// Segments drawn per corridor.
pub const MAX_SEGMENTS_PER_CORRIDOR: usize = 8;
/// Stations drawn per district.
pub const MAX_STATIONS: usize = 8;

/// The map of a city.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Layout {
    /// City name.
    pub name: String,
    /// SVG view box width.
    pub width: f64,
    /// SVG view box height.
    pub height: f64,
    /// The districts.
    pub districts: Vec<DistrictShape>,
}

/// One district on the map.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DistrictShape {
    /// Subject token.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Area: `[x, y, w, h]`.
    pub rect: [f64; 4],
    /// Segments drawn.
    pub segments: Vec<SegmentShape>,
    /// Stations drawn.
    pub stations: Vec<StationShape>,
    /// Segments in the city file (drawn or not).
    pub segment_count: usize,
    /// Stations in the city file.
    pub station_count: usize,
    /// Loop detectors in the district.
    pub detector_count: usize,
}

/// A road segment drawn as a line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SegmentShape {
    /// Segment id.
    pub id: String,
    /// Corridor.
    pub corridor: String,
    /// `[x1, y1, x2, y2]`.
    pub line: [f64; 4],
    /// Lanes (line width on the map).
    pub lanes: u32,
}

/// A station drawn as a dot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StationShape {
    /// Sensor id.
    pub id: String,
    /// `[x, y]`.
    pub at: [f64; 2],
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The layout of `city`.
pub fn layout(city: &City) -> Layout {
    let n = city.districts.len().max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let districts = city
        .districts
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let x = GAP + (i % cols) as f64 * (CELL_W + GAP);
            let y = GAP + (i / cols) as f64 * (CELL_H + GAP);
            let segments = segment_shapes(&d.segments, x, y);
            let stations = station_shapes(&d.stations, x, y);
            DistrictShape {
                id: d.id.clone(),
                name: d.name.clone(),
                rect: [x, y, CELL_W, CELL_H],
                segments,
                stations,
                segment_count: d.segments.len(),
                station_count: d.stations.len(),
                detector_count: d.segments.iter().map(|s| s.detectors.len()).sum(),
            }
        })
        .collect();
    Layout {
        name: city.name.clone(),
        width: GAP + cols as f64 * (CELL_W + GAP),
        height: GAP + rows as f64 * (CELL_H + GAP),
        districts,
    }
}

/// Corridors as horizontal lanes in the middle band of the cell (the top holds the label).
fn segment_shapes(
    segments: &[citypulse_simulator::city::Segment],
    x: f64,
    y: f64,
) -> Vec<SegmentShape> {
    let mut corridors: BTreeMap<&str, Vec<&citypulse_simulator::city::Segment>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for s in segments {
        if !corridors.contains_key(s.corridor.as_str()) {
            order.push(&s.corridor);
        }
        corridors.entry(&s.corridor).or_default().push(s);
    }
    let drawn: Vec<&str> = order.into_iter().take(MAX_CORRIDORS).collect();
    let (top, bottom) = (y + 72.0, y + CELL_H - 36.0);
    let step = (bottom - top) / drawn.len().max(1) as f64;
    let mut out = Vec::new();
    for (ci, c) in drawn.iter().enumerate() {
        let segs = &corridors[c];
        let shown = segs.len().min(MAX_SEGMENTS_PER_CORRIDOR);
        let cy = round1(top + step * (ci as f64 + 0.5));
        let width = (CELL_W - 24.0) / shown.max(1) as f64;
        for (si, s) in segs.iter().take(shown).enumerate() {
            let x1 = x + 12.0 + si as f64 * width;
            out.push(SegmentShape {
                id: s.id.clone(),
                corridor: s.corridor.clone(),
                line: [round1(x1 + 2.0), cy, round1(x1 + width - 2.0), cy],
                lanes: s.lanes,
            });
        }
    }
    out
}

fn station_shapes(
    stations: &[citypulse_simulator::city::Station],
    x: f64,
    y: f64,
) -> Vec<StationShape> {
    let shown = stations.len().min(MAX_STATIONS);
    let step = (CELL_W - 24.0) / shown.max(1) as f64;
    stations
        .iter()
        .take(shown)
        .enumerate()
        .map(|(i, s)| StationShape {
            id: s.id.clone(),
            at: [
                round1(x + 12.0 + step * (i as f64 + 0.5)),
                round1(y + CELL_H - 12.0),
            ],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(r: [f64; 4], x: f64, y: f64) -> bool {
        x >= r[0] && x <= r[0] + r[2] && y >= r[1] && y <= r[1] + r[3]
    }

    #[test]
    fn the_builtin_city_is_a_grid_with_everything_inside_its_district() {
        let city = City::builtin();
        let l = layout(&city);
        assert_eq!(l.districts.len(), 12);
        // 12 districts: 4 columns, 3 rows.
        assert_eq!(l.width, GAP + 4.0 * (CELL_W + GAP));
        assert_eq!(l.height, GAP + 3.0 * (CELL_H + GAP));
        for (d, c) in l.districts.iter().zip(&city.districts) {
            assert_eq!(d.id, c.id);
            assert_eq!(d.segment_count, c.segments.len());
            assert_eq!(d.station_count, c.stations.len());
            for s in &d.segments {
                assert!(inside(d.rect, s.line[0], s.line[1]), "{}", s.id);
                assert!(inside(d.rect, s.line[2], s.line[3]), "{}", s.id);
                assert!(s.line[0] < s.line[2]);
            }
            for s in &d.stations {
                assert!(inside(d.rect, s.at[0], s.at[1]), "{}", s.id);
            }
        }
        // No two districts overlap.
        for a in &l.districts {
            for b in &l.districts {
                if a.id != b.id {
                    let apart = a.rect[0] + a.rect[2] <= b.rect[0]
                        || b.rect[0] + b.rect[2] <= a.rect[0]
                        || a.rect[1] + a.rect[3] <= b.rect[1]
                        || b.rect[1] + b.rect[3] <= a.rect[1];
                    assert!(apart, "{} overlaps {}", a.id, b.id);
                }
            }
        }
    }

    #[test]
    fn the_layout_is_deterministic_and_bounded_for_a_huge_city() {
        let big = City::builtin_scaled(100_000);
        let a = layout(&big);
        assert_eq!(a, layout(&big));
        let drawn: usize = a
            .districts
            .iter()
            .map(|d| d.segments.len() + d.stations.len())
            .sum();
        assert!(
            drawn <= 12 * (MAX_CORRIDORS * MAX_SEGMENTS_PER_CORRIDOR + MAX_STATIONS),
            "{drawn}"
        );
        let total: usize = a
            .districts
            .iter()
            .map(|d| d.detector_count + d.station_count)
            .sum();
        assert_eq!(total, 100_000);
        let json = serde_json::to_string(&a).unwrap_or_default();
        assert!(json.len() < 200_000, "{} bytes", json.len());
    }
}
