//! PURE: the colours of every category the map can show, the text colour drawn on each, and the
//! WCAG contrast arithmetic that proves the text is readable.
//!
//! The page receives this table from `/api/palette`, so the colours tested here are the colours
//! drawn. Sources:
//! - US AQI: EPA, *Technical Assistance Document for the Reporting of Daily Air Quality – the Air
//!   Quality Index (AQI)*, May 2024, Table 2 (RGB values of the six categories).
//! - European AQI: EEA, *European Air Quality Index*, 2024 revision, band colours of the EEA
//!   viewer (Good 80,240,230 … Extremely poor 125,33,129).
//! - Level of service: HCM 7th edition letters A–F; the colours are ours (a green-to-dark-red
//!   ramp), HCM prescribes none.
//! - Travel time index (Texas A&M Urban Mobility Report: congested over free-flow travel time):
//!   bands and colours are ours.
//!
//! Contrast: WCAG 2.2, §1.4.3 (AA: at least 4.5:1 for normal text), with the relative luminance
//! and contrast ratio definitions of its glossary.

use serde::Serialize;

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb`.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// WCAG 2.2 relative luminance.
    pub fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let s = f64::from(c) / 255.0;
            if s <= 0.04045 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }
}

/// WCAG 2.2 contrast ratio `(L1 + 0.05) / (L2 + 0.05)`, lighter over darker: 1 to 21.
pub fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    let (hi, lo) = if la >= lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// WCAG AA minimum for normal text.
pub const AA_NORMAL_TEXT: f64 = 4.5;

/// Near-black text.
pub const DARK_TEXT: Rgb = Rgb(0x11, 0x11, 0x11);
/// White text.
pub const LIGHT_TEXT: Rgb = Rgb(0xff, 0xff, 0xff);

/// The text colour (dark or light) with the higher contrast on `fill`.
pub fn text_on(fill: Rgb) -> Rgb {
    if contrast(fill, DARK_TEXT) >= contrast(fill, LIGHT_TEXT) {
        DARK_TEXT
    } else {
        LIGHT_TEXT
    }
}

/// One category of a measure: its wire token, label, fill and text colour.
#[derive(Debug, Clone, Serialize)]
pub struct Category {
    /// The wire token (`unhealthy`, `poor`, `E`) or, for numeric bands, the lower bound.
    pub token: String,
    /// What people read.
    pub label: String,
    /// Fill, `#rrggbb`.
    pub fill: String,
    /// Text drawn on the fill, `#rrggbb`.
    pub text: String,
    /// For numeric bands: the band holds values from this (inclusive) up to the next band's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<f64>,
}

fn category(token: &str, label: &str, fill: Rgb, from: Option<f64>) -> Category {
    Category {
        token: token.to_owned(),
        label: label.to_owned(),
        fill: fill.hex(),
        text: text_on(fill).hex(),
        from,
    }
}

/// EPA TAD 2024, Table 2: token, label, RGB.
pub const US_AQI: [(&str, &str, Rgb); 6] = [
    ("good", "Good", Rgb(0, 228, 0)),
    ("moderate", "Moderate", Rgb(255, 255, 0)),
    (
        "unhealthy_for_sensitive_groups",
        "Unhealthy for Sensitive Groups",
        Rgb(255, 126, 0),
    ),
    ("unhealthy", "Unhealthy", Rgb(255, 0, 0)),
    ("very_unhealthy", "Very Unhealthy", Rgb(143, 63, 151)),
    ("hazardous", "Hazardous", Rgb(126, 0, 35)),
];

/// EEA European AQI (2024): token, label, RGB.
pub const EAQI: [(&str, &str, Rgb); 6] = [
    ("good", "Good", Rgb(80, 240, 230)),
    ("fair", "Fair", Rgb(80, 204, 170)),
    ("moderate", "Moderate", Rgb(240, 230, 65)),
    ("poor", "Poor", Rgb(255, 80, 80)),
    ("very_poor", "Very poor", Rgb(150, 0, 50)),
    ("extremely_poor", "Extremely poor", Rgb(125, 33, 129)),
];

/// HCM level of service A–F.
pub const LOS: [(&str, &str, Rgb); 6] = [
    ("A", "LOS A · free flow", Rgb(26, 150, 65)),
    ("B", "LOS B", Rgb(166, 217, 106)),
    ("C", "LOS C", Rgb(255, 255, 191)),
    ("D", "LOS D", Rgb(253, 174, 97)),
    ("E", "LOS E · at capacity", Rgb(215, 25, 28)),
    ("F", "LOS F · breakdown", Rgb(120, 20, 20)),
];

/// Travel time index bands: lower bound, label, RGB.
pub const TTI: [(f64, &str, Rgb); 5] = [
    (0.0, "under 1.1 · free", Rgb(26, 150, 65)),
    (1.1, "1.1–1.3 · light", Rgb(166, 217, 106)),
    (1.3, "1.3–1.5 · moderate", Rgb(253, 174, 97)),
    (1.5, "1.5–2.0 · heavy", Rgb(215, 25, 28)),
    (2.0, "2.0 and over · severe", Rgb(120, 20, 20)),
];

/// Fill of a district with no value yet.
pub const NO_DATA: Rgb = Rgb(0xdd, 0xdd, 0xdd);

/// One selectable measure of the map.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// Key used by the page (`aqi`, `eaqi`, `los`, `tti`).
    pub key: &'static str,
    /// Menu label.
    pub label: &'static str,
    /// Where the figure comes from: `air` or `traffic` district results.
    pub kind: &'static str,
    /// The window-result field shown.
    pub field: &'static str,
    /// The field holding the category token (None: banded by `from`, or the value is the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category_field: Option<&'static str>,
    /// Categories, best first.
    pub categories: Vec<Category>,
}

/// The palette served to the page: every measure with its categories, and the no-data fill.
#[derive(Debug, Clone, Serialize)]
pub struct Palette {
    /// The measures, in menu order.
    pub measures: Vec<Measure>,
    /// Fill of a district without a value.
    pub no_data: Category,
}

/// The whole palette.
pub fn palette() -> Palette {
    let tokens = |t: &[(&str, &str, Rgb)]| -> Vec<Category> {
        t.iter().map(|(k, l, c)| category(k, l, *c, None)).collect()
    };
    Palette {
        measures: vec![
            Measure {
                key: "aqi",
                label: "US AQI (EPA)",
                kind: "air",
                field: "aqi",
                category_field: Some("category"),
                categories: tokens(&US_AQI),
            },
            Measure {
                key: "eaqi",
                label: "European AQI (EEA)",
                kind: "air",
                field: "eaqi",
                category_field: Some("eaqi"),
                categories: tokens(&EAQI),
            },
            Measure {
                key: "los",
                label: "Level of service (HCM)",
                kind: "traffic",
                field: "los",
                category_field: Some("los"),
                categories: tokens(&LOS),
            },
            Measure {
                key: "tti",
                label: "Travel time index",
                kind: "traffic",
                field: "travel_time_index",
                category_field: None,
                categories: TTI
                    .iter()
                    .map(|(from, l, c)| category(&format!("{from}"), l, *c, Some(*from)))
                    .collect(),
            },
        ],
        no_data: category("none", "no data", NO_DATA, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_hex(s: &str) -> Rgb {
        let v = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).unwrap();
        Rgb(v(1), v(3), v(5))
    }

    #[test]
    fn contrast_matches_the_wcag_reference_values() {
        // Black on white is the maximum, 21:1; a colour on itself 1:1.
        assert!((contrast(Rgb(0, 0, 0), Rgb(255, 255, 255)) - 21.0).abs() < 1e-9);
        assert!((contrast(Rgb(10, 200, 30), Rgb(10, 200, 30)) - 1.0).abs() < 1e-12);
        // #777777 on white is the classic near miss: 4.48:1, below AA.
        let grey = contrast(Rgb(0x77, 0x77, 0x77), Rgb(255, 255, 255));
        assert!((grey - 4.48).abs() < 0.01, "{grey}");
        // Pure red on white: 4.0:1.
        let red = contrast(Rgb(255, 0, 0), Rgb(255, 255, 255));
        assert!((red - 3.998).abs() < 0.01, "{red}");
    }

    #[test]
    fn text_on_every_category_colour_meets_wcag_aa() {
        let p = palette();
        let all = p
            .measures
            .iter()
            .flat_map(|m| m.categories.iter())
            .chain(std::iter::once(&p.no_data));
        let mut checked = 0;
        for c in all {
            let ratio = contrast(parse_hex(&c.fill), parse_hex(&c.text));
            assert!(
                ratio >= AA_NORMAL_TEXT,
                "{} text {} on {}: {ratio:.2}:1",
                c.label,
                c.text,
                c.fill
            );
            checked += 1;
        }
        assert_eq!(checked, 6 + 6 + 6 + 5 + 1);
    }

    #[test]
    fn red_categories_get_dark_text_and_dark_ones_light_text() {
        // White on EPA red would be 4.0:1 (fails AA): the palette must pick dark text there.
        let p = palette();
        let aqi = &p.measures[0];
        let unhealthy = aqi.categories.iter().find(|c| c.token == "unhealthy");
        assert_eq!(unhealthy.map(|c| c.text.as_str()), Some("#111111"));
        let hazardous = aqi.categories.iter().find(|c| c.token == "hazardous");
        assert_eq!(hazardous.map(|c| c.text.as_str()), Some("#ffffff"));
        assert_eq!(aqi.categories[0].fill, "#00e400");
    }

    #[test]
    fn category_tokens_are_the_wire_vocabularies() {
        use citypulse_schema::{AqiCategory, EaqiBand, Los};
        let p = palette();
        let tokens = |i: usize| -> Vec<String> {
            p.measures[i]
                .categories
                .iter()
                .map(|c| c.token.clone())
                .collect()
        };
        let aqi: Vec<String> = AqiCategory::ALL.iter().map(|c| c.to_string()).collect();
        let eaqi: Vec<String> = EaqiBand::ALL.iter().map(|c| c.to_string()).collect();
        let los: Vec<String> = Los::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(tokens(0), aqi);
        assert_eq!(tokens(1), eaqi);
        assert_eq!(tokens(2), los);
    }
}
