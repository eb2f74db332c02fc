//! What a chart shows, as the JSON `dyno.js` draws with uPlot.
//!
//! A page puts each chart's spec in the `data-chart` attribute of a `div.chart` (the template
//! HTML-escapes it; the browser un-escapes it before `JSON.parse`), so no script is generated
//! from data and the JSON API can serve the same spec.

use serde::Serialize;

/// How a chart is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    /// Series over a shared x (a time series ordered by commit).
    Line,
    /// A small line without axes or legend (the overview's sparklines).
    Spark,
    /// Points with their own x per series (Pareto frontier, predicted against measured).
    Scatter,
    /// Cumulative distributions: x a latency, y the fraction of requests at or below it.
    Cdf,
}

/// One line or point set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartSeries {
    /// Legend label.
    pub label: String,
    /// Values (`None` leaves a gap).
    pub y: Vec<Option<f64>>,
    /// This series' own x (scatter and CDF charts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<Vec<f64>>,
    /// Draw points only, no line.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub points_only: bool,
}

impl ChartSeries {
    /// A line over the chart's shared x.
    pub fn line(label: impl Into<String>, y: Vec<Option<f64>>) -> Self {
        ChartSeries { label: label.into(), y, x: None, points_only: false }
    }

    /// A series with its own x.
    pub fn xy(label: impl Into<String>, x: Vec<f64>, y: Vec<f64>, points_only: bool) -> Self {
        ChartSeries {
            label: label.into(),
            y: y.into_iter().map(Some).collect(),
            x: Some(x),
            points_only,
        }
    }
}

/// Bounds drawn as a band around series 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Band {
    /// Lower bound per x.
    pub lower: Vec<Option<f64>>,
    /// Upper bound per x.
    pub upper: Vec<Option<f64>>,
}

/// A vertical line at `x` (a change point, an alert).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    /// Where.
    pub x: f64,
    /// What.
    pub label: String,
}

/// A whole chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    /// How to draw it.
    pub kind: ChartKind,
    /// Title above the chart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// X axis label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x_label: Option<String>,
    /// Y axis label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y_label: Option<String>,
    /// Log-scaled x (latency CDFs).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub x_log: bool,
    /// The shared x of line and spark charts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<Vec<f64>>,
    /// The series.
    pub series: Vec<ChartSeries>,
    /// Bounds around series 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<Band>,
    /// Vertical markers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub markers: Vec<Marker>,
    /// Per x index of series 0: where clicking the point goes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Option<String>>,
    /// Per x index of series 0: the hover text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tooltips: Vec<String>,
}

impl Chart {
    /// An empty chart of `kind`.
    pub fn new(kind: ChartKind) -> Self {
        Chart {
            kind,
            title: None,
            x_label: None,
            y_label: None,
            x_log: false,
            x: None,
            series: Vec::new(),
            band: None,
            markers: Vec::new(),
            links: Vec::new(),
            tooltips: Vec::new(),
        }
    }

    /// The spec as JSON, for a `data-chart` attribute.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail; non-finite numbers
        // become null.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}
