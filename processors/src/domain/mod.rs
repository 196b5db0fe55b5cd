//! The processors' domain arithmetic: pure, synchronous and deterministic. No I/O, no clock, no
//! randomness; every function maps its arguments to its result, so the shell can replay a window
//! and get the same numbers.
//!
//! - [`fixed`]: concentrations as integer billionths ([`fixed::Fixed`]) and exact means
//!   ([`fixed::Mean`]), so averaging cannot drift across a truncation edge.
//! - [`aqi`]: the US AQI, EPA *Technical Assistance Document for the Reporting of Daily Air
//!   Quality – the Air Quality Index (AQI)*, EPA-454/B-24-002, May 2024, with the PM2.5
//!   breakpoints of the PM NAAQS final rule of February 2024 (effective 6 May 2024).
//! - [`nowcast`]: the PM NowCast (EPA TAD 2024 §IV; AirNow-Tech, "The NowCast for PM2.5 and
//!   PM10").
//! - [`eaqi`]: the European Air Quality Index, EEA, 2024 band revision.
//! - [`traffic`]: loop-detector flow, space-mean speed, density, HCM 6th/7th ed. (metric) level of
//!   service for basic freeway segments, and the FHWA congestion criterion.

pub mod aqi;
pub mod eaqi;
pub mod fixed;
pub mod nowcast;
pub mod traffic;
