//! Physical limits a reading must respect, with where each number comes from.
//!
//! The limits are deliberately wide: they exist to catch broken sensors, unit mix-ups and
//! garbage, not to second-guess a plausible extreme. A value inside them is passed on as
//! measured; what is plausible is the processors' and alerts' business.

/// Shortest counting interval accepted, seconds.
pub const MIN_INTERVAL_S: u32 = 1;
/// Longest counting interval accepted, seconds (one hour; loop detectors report every 20 s to
/// 15 min).
pub const MAX_INTERVAL_S: u32 = 3600;
/// Fewest lanes a detector can cover.
pub const MIN_LANES: u32 = 1;
/// Most lanes a detector station covers (one carriageway of a very wide motorway).
pub const MAX_LANES: u32 = 8;

/// Highest vehicle rate a lane can carry, vehicles per second per lane: a one-second headway,
/// 3,600 veh/h/ln. HCM (7th ed., Chapter 12, basic freeway segments) puts the capacity of a
/// freeway lane at 2,400 pc/h/ln (a 1.5 s headway); the bound leaves 50 % headroom for bunching within a short
/// interval and for detectors that count motorcycles. A count above
/// `lanes × interval_s × MAX_VEHICLES_PER_S_PER_LANE` is a detector fault (chattering loop).
pub const MAX_VEHICLES_PER_S_PER_LANE: u64 = 1;

/// Highest mean speed accepted, km/h. No road traffic stream averages more; a higher value is a
/// unit error (mph/m·s⁻¹ mix-ups) or a fault.
pub const MAX_SPEED_KMH: f64 = 250.0;

/// Air temperature range, °C: the WMO-recognised world extremes are −89.2 °C (Vostok, 1983) and
/// 56.7 °C (Death Valley, 1913); the bounds leave a little headroom.
pub const MIN_TEMP_C: f64 = -90.0;
/// See [`MIN_TEMP_C`].
pub const MAX_TEMP_C: f64 = 60.0;
/// Relative humidity range, %.
pub const MIN_RH_PCT: f64 = 0.0;
/// See [`MIN_RH_PCT`].
pub const MAX_RH_PCT: f64 = 100.0;

/// The accepted range of one pollutant concentration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollutantRange {
    /// The reading's field name (also the `field` label of the clamp counter).
    pub field: &'static str,
    /// Negative noise tolerated near zero, in the field's unit (a positive number). Continuous
    /// analysers drift a little below zero in clean air (zero drift, baseline subtraction); a
    /// value in `[-tolerance, 0)` is a measurement of "about zero" and is clamped to 0 and
    /// counted, a value below it is a fault and rejected.
    pub tolerance: f64,
    /// Top of the instrument range. Each ceiling is above the top of the EPA AQI breakpoint
    /// table (40 CFR 58 App. G; PM2.5 as revised in 2024), so every index value, including
    /// "beyond the AQI", can still be computed: PM2.5 table top 325.4 µg/m³ (AQI 500; older
    /// tables 500.4), PM10 604 µg/m³, O3 1-h 604 ppb, NO2 2049 ppb, SO2 1004 ppb, CO 50.4 ppm.
    pub max: f64,
}

/// PM2.5, µg/m³.
pub const PM25: PollutantRange = PollutantRange {
    field: "pm25_ugm3",
    tolerance: 10.0,
    max: 1000.0,
};
/// PM10, µg/m³.
pub const PM10: PollutantRange = PollutantRange {
    field: "pm10_ugm3",
    tolerance: 10.0,
    max: 2000.0,
};
/// Ozone, ppb.
pub const O3: PollutantRange = PollutantRange {
    field: "o3_ppb",
    tolerance: 5.0,
    max: 1000.0,
};
/// Nitrogen dioxide, ppb.
pub const NO2: PollutantRange = PollutantRange {
    field: "no2_ppb",
    tolerance: 5.0,
    max: 3000.0,
};
/// Sulphur dioxide, ppb.
pub const SO2: PollutantRange = PollutantRange {
    field: "so2_ppb",
    tolerance: 5.0,
    max: 2000.0,
};
/// Carbon monoxide, ppm.
pub const CO: PollutantRange = PollutantRange {
    field: "co_ppm",
    tolerance: 0.5,
    max: 100.0,
};

/// Every pollutant range, in the contract's key order.
pub const POLLUTANTS: [PollutantRange; 6] = [PM25, PM10, O3, NO2, SO2, CO];
