//! Closed vocabularies of the contract: sensor kinds, pollutants, AQI categories, level of service,
//! severities. Each serializes as the lowercase (or letter) token documented in `docs/wire-format.md`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Declares a closed enum whose wire form is a fixed token, with `as_str`, `Display`, `FromStr`
/// and an `ALL` list (useful for bounded metric labels and exhaustive tests).
macro_rules! token_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $token:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $token)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire token.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $token),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownToken;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($token => Ok($name::$variant),)+
                    _ => Err(UnknownToken { what: stringify!($name), token: s.to_owned() }),
                }
            }
        }
    };
}

/// A token that is not part of a closed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{token}`")]
pub struct UnknownToken {
    /// Which vocabulary was expected.
    pub what: &'static str,
    /// The token that was given.
    pub token: String,
}

token_enum! {
    /// What a sensor measures. The third token of `sensors.<district>.<kind>.<sensor_id>`.
    Kind {
        /// A loop detector on a road segment.
        Traffic = "traffic",
        /// An air-quality station.
        Air = "air",
    }
}

token_enum! {
    /// Alert severity; the second token of `alerts.<severity>.<kind>.<district>`. Ordered: info < warning < critical.
    Severity {
        /// For information; nobody must act.
        Info = "info",
        /// Someone should look.
        Warning = "warning",
        /// Someone must act now.
        Critical = "critical",
    }
}

token_enum! {
    /// The pollutants of the US AQI (EPA) and the European AQI (EEA).
    Pollutant {
        /// Fine particulate matter, µg/m³.
        Pm25 = "pm25",
        /// Coarse particulate matter, µg/m³.
        Pm10 = "pm10",
        /// Ozone, ppb on the wire.
        O3 = "o3",
        /// Nitrogen dioxide, ppb.
        No2 = "no2",
        /// Sulphur dioxide, ppb.
        So2 = "so2",
        /// Carbon monoxide, ppm.
        Co = "co",
    }
}

token_enum! {
    /// US AQI category (EPA Technical Assistance Document, May 2024, Table 2).
    AqiCategory {
        /// AQI 0–50.
        Good = "good",
        /// AQI 51–100.
        Moderate = "moderate",
        /// AQI 101–150.
        UnhealthyForSensitiveGroups = "unhealthy_for_sensitive_groups",
        /// AQI 151–200.
        Unhealthy = "unhealthy",
        /// AQI 201–300.
        VeryUnhealthy = "very_unhealthy",
        /// AQI 301 and above.
        Hazardous = "hazardous",
    }
}

impl AqiCategory {
    /// The category of an AQI value (EPA TAD 2024, Table 2).
    pub const fn of(aqi: u16) -> AqiCategory {
        match aqi {
            0..=50 => AqiCategory::Good,
            51..=100 => AqiCategory::Moderate,
            101..=150 => AqiCategory::UnhealthyForSensitiveGroups,
            151..=200 => AqiCategory::Unhealthy,
            201..=300 => AqiCategory::VeryUnhealthy,
            _ => AqiCategory::Hazardous,
        }
    }
}

token_enum! {
    /// European Air Quality Index band (EEA, 2024 revision), best to worst.
    EaqiBand {
        /// Band 1.
        Good = "good",
        /// Band 2.
        Fair = "fair",
        /// Band 3.
        Moderate = "moderate",
        /// Band 4.
        Poor = "poor",
        /// Band 5.
        VeryPoor = "very_poor",
        /// Band 6.
        ExtremelyPoor = "extremely_poor",
    }
}

token_enum! {
    /// Highway Capacity Manual level of service, A (free flow) to F (breakdown).
    Los {
        /// Free flow.
        A = "A",
        /// Reasonably free flow.
        B = "B",
        /// Stable flow.
        C = "C",
        /// Approaching unstable flow.
        D = "D",
        /// Unstable flow, at capacity.
        E = "E",
        /// Forced or breakdown flow.
        F = "F",
    }
}

token_enum! {
    /// Where an alert is in its lifecycle, as published.
    AlertState {
        /// The condition has held for the rule's `for` duration.
        Firing = "firing",
        /// The condition cleared (or the subject went away); closes the incident with the same id.
        Resolved = "resolved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_from_str() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(*k));
        }
        for p in Pollutant::ALL {
            assert_eq!(p.as_str().parse::<Pollutant>(), Ok(*p));
        }
        for l in Los::ALL {
            assert_eq!(l.as_str().parse::<Los>(), Ok(*l));
        }
        assert!("bus".parse::<Kind>().is_err());
    }

    #[test]
    fn severity_orders_info_below_critical() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    }

    #[test]
    fn aqi_category_edges_follow_epa_table() {
        let cases = [
            (0, AqiCategory::Good),
            (50, AqiCategory::Good),
            (51, AqiCategory::Moderate),
            (100, AqiCategory::Moderate),
            (101, AqiCategory::UnhealthyForSensitiveGroups),
            (150, AqiCategory::UnhealthyForSensitiveGroups),
            (151, AqiCategory::Unhealthy),
            (200, AqiCategory::Unhealthy),
            (201, AqiCategory::VeryUnhealthy),
            (300, AqiCategory::VeryUnhealthy),
            (301, AqiCategory::Hazardous),
            (500, AqiCategory::Hazardous),
        ];
        for (aqi, cat) in cases {
            assert_eq!(AqiCategory::of(aqi), cat, "aqi {aqi}");
        }
    }
}
