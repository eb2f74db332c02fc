//! What each page shows, read from the store: one view model per page, serialized as is by
//! the JSON API and rendered by the page's template, so the two never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dyno_results::Store;
use dyno_results::compare::{CompareConfig, compare};
use dyno_results::store::{
    Alert, AlertState, RunRecord, RunSummary, SeriesFilter, SeriesKey, SeriesPoint, Study,
    StudySummary, TriageEvent, Trial, TrialStatus,
};
use dyno_results::tables::TriageAction;
use serde::{Deserialize, Serialize};

use crate::chart::{Band, Chart, ChartKind, ChartSeries, Marker};
use crate::error::DashError;

/// Points a sparkline shows (the latest ones).
const SPARK_POINTS: usize = 60;

// ---------------------------------------------------------------- helpers

/// `(value − reference) / |reference|`, when both exist and the reference is not zero.
fn change(value: f64, reference: Option<f64>) -> Option<f64> {
    reference.filter(|r| *r != 0.0).map(|r| (value - r) / r.abs())
}

/// A change as a signed percentage ("+4.2%"), or "–".
pub fn fmt_pct(x: &Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |x| format!("{:+.1}%", x * 100.0))
}

/// A value with a sensible number of digits.
pub fn fmt_value(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.3e}")
    }
}

/// The first 7 characters of a commit hash.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// A readable name for a testbed spec: its CPU model (and GPUs), else its hash's prefix.
fn testbed_label(hash: &str, spec: &serde_json::Value) -> String {
    let cpu = spec
        .get("cpu_model")
        .and_then(|v| v.as_str())
        .or_else(|| spec.get("name").and_then(|v| v.as_str()));
    let gpus: Vec<&str> = spec
        .get("gpus")
        .and_then(|g| g.as_array())
        .map(|g| g.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    match (cpu, gpus.first()) {
        (_, Some(gpu)) => format!("{} × {gpu}", gpus.len()),
        (Some(cpu), None) => cpu.to_string(),
        (None, None) => format!("testbed {}", short_sha(hash)),
    }
}

/// Testbed labels by hash.
async fn testbed_labels(store: &Store) -> Result<HashMap<String, String>, DashError> {
    Ok(store
        .testbeds()
        .await?
        .into_iter()
        .map(|(hash, spec)| {
            let label = testbed_label(&hash, &spec);
            (hash, label)
        })
        .collect())
}

/// Whether an alert belongs to the series `key`.
fn alert_of(alert: &Alert, key: &SeriesKey) -> bool {
    let s = &alert.info.series;
    s.scenario == key.scenario
        && s.config_hash == key.config_hash
        && s.measure == key.measure
        && s.testbed == key.testbed
        && s.branch == key.branch
}

/// The URL of a series page.
pub fn series_url(key: &SeriesKey) -> String {
    format!(
        "/series?scenario={}&config={}&measure={}&testbed={}&branch={}",
        urlencode(&key.scenario),
        urlencode(&key.config_hash),
        urlencode(&key.measure),
        urlencode(&key.testbed),
        urlencode(&key.branch)
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An alert with its triage history, and where that leaves it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// The alert.
    pub alert: Alert,
    /// Its triage steps, oldest first.
    pub history: Vec<TriageEvent>,
    /// The latest triage action, or `open`.
    pub triage: String,
    /// The series page of the alert.
    pub series_url: String,
    /// The commit's short hash.
    pub short_sha: String,
}

impl AlertView {
    fn new(alert: Alert, history: Vec<TriageEvent>) -> Self {
        let triage = history.last().map_or_else(|| "open".to_string(), |e| e.action.clone());
        let series_url = series_url(&alert.info.series);
        let short_sha = short_sha(&alert.info.commit).to_string();
        AlertView { alert, history, triage, series_url, short_sha }
    }

    /// `regression` or `improvement`.
    pub fn kind(&self) -> &'static str {
        if self.alert.info.regression { "regression" } else { "improvement" }
    }

    /// The state's name (`provisional`, `confirmed`, `retracted`).
    pub fn state(&self) -> &'static str {
        self.alert.info.state.as_str()
    }

    /// Whether triage settled it as not (or no longer) a regression.
    fn dismissed(&self) -> bool {
        ["fixed", "invalid", "improvement"].contains(&self.triage.as_str())
    }
}

/// Every alert with its history.
async fn alert_views(store: &Store) -> Result<Vec<AlertView>, DashError> {
    let mut out = Vec::new();
    for alert in store.alerts(None).await? {
        let history = store.triage_history(alert.id).await?;
        out.push(AlertView::new(alert, history));
    }
    Ok(out)
}

// ---------------------------------------------------------------- overview

/// How a series stands, from its alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing flagged.
    Ok,
    /// A provisional alert is open: the latest points look off, not yet confirmed.
    Suspect,
    /// A confirmed regression that triage has not fixed or dismissed.
    Regressed,
    /// The latest confirmed change is an improvement.
    Improved,
}

impl Status {
    /// `ok`, `suspect`, `regressed` or `improved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Suspect => "suspect",
            Status::Regressed => "regressed",
            Status::Improved => "improved",
        }
    }
}

/// The overview's filters (query parameters; empty means all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OverviewQuery {
    /// Model name.
    pub model: String,
    /// Workload name.
    pub workload: String,
    /// Testbed hash.
    pub hardware: String,
    /// Branch.
    pub branch: String,
    /// Text searched in scenario, measure, model, workload and branch.
    pub q: String,
}

/// One series in the overview.
#[derive(Debug, Clone, Serialize)]
pub struct OverviewRow {
    /// Which series.
    pub key: SeriesKey,
    /// Model of the scenario.
    pub model: String,
    /// Workload of the scenario.
    pub workload: String,
    /// The testbed's readable name.
    pub hardware: String,
    /// Points in the series.
    pub points: usize,
    /// The newest value.
    pub latest: f64,
    /// Its run.
    pub latest_run: i64,
    /// The value before it.
    pub previous: Option<f64>,
    /// Mean of the current segment before the newest point (points since the last confirmed
    /// change), as `dyno nightly` reports it.
    pub baseline: Option<f64>,
    /// Newest vs previous.
    pub change_previous: Option<f64>,
    /// Newest vs baseline.
    pub change_baseline: Option<f64>,
    /// Where the series stands.
    pub status: Status,
    /// The latest values, oldest first.
    pub spark: Vec<f64>,
    /// The series page.
    pub url: String,
}

impl OverviewRow {
    /// The sparkline's chart spec.
    pub fn spark_chart(&self) -> String {
        let mut c = Chart::new(ChartKind::Spark);
        c.x = Some((0..self.spark.len()).map(|i| i as f64).collect());
        c.series.push(ChartSeries::line(
            &self.key.measure,
            self.spark.iter().copied().map(Some).collect(),
        ));
        c.to_json()
    }
}

/// The overview page.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The filters applied.
    pub query: OverviewQuery,
    /// Series that pass them, by scenario, measure, hardware and branch.
    pub rows: Vec<OverviewRow>,
    /// Series before filtering.
    pub total: usize,
    /// Every model, workload, branch, and testbed (hash, label), for the filter form.
    pub models: Vec<String>,
    /// Workloads.
    pub workloads: Vec<String>,
    /// Branches.
    pub branches: Vec<String>,
    /// Testbeds: (hash, label).
    pub hardware: Vec<(String, String)>,
}

/// Builds one overview row from a series' points (commit order) and its alerts.
fn overview_row(
    points: &[SeriesPoint],
    alerts: &[&AlertView],
    labels: &HashMap<String, String>,
) -> Option<OverviewRow> {
    let last = points.last()?;
    let key = last.key();
    let ordinal_of: HashMap<&str, i64> =
        points.iter().map(|p| (p.sha.as_str(), p.ordinal)).collect();
    let live: Vec<&&AlertView> =
        alerts.iter().filter(|a| a.alert.info.state != AlertState::Retracted).collect();
    let latest_confirmed = live
        .iter()
        .filter(|a| a.alert.info.state == AlertState::Confirmed)
        .max_by_key(|a| ordinal_of.get(a.alert.info.commit.as_str()).copied().unwrap_or(i64::MIN));
    // The current segment starts at the latest confirmed change point.
    let segment_start = latest_confirmed
        .and_then(|a| ordinal_of.get(a.alert.info.commit.as_str()).copied())
        .unwrap_or(i64::MIN);
    let before_last = &points[..points.len() - 1];
    let segment: Vec<f64> =
        before_last.iter().filter(|p| p.ordinal >= segment_start).map(|p| p.value).collect();
    let baseline =
        (!segment.is_empty()).then(|| segment.iter().sum::<f64>() / segment.len() as f64);
    let previous = before_last.last().map(|p| p.value);
    let status = match latest_confirmed {
        Some(a) if a.alert.info.regression && !a.dismissed() => Status::Regressed,
        Some(a) if !a.alert.info.regression || a.triage == "improvement" => {
            if live.iter().any(|a| a.alert.info.state == AlertState::Provisional) {
                Status::Suspect
            } else {
                Status::Improved
            }
        }
        _ if live.iter().any(|a| a.alert.info.state == AlertState::Provisional) => Status::Suspect,
        _ => Status::Ok,
    };
    let spark_from = points.len().saturating_sub(SPARK_POINTS);
    Some(OverviewRow {
        url: series_url(&key),
        hardware: labels.get(&key.testbed).cloned().unwrap_or_else(|| key.testbed.clone()),
        model: last.model.clone(),
        workload: last.workload.clone(),
        points: points.len(),
        latest: last.value,
        latest_run: last.run_id,
        previous,
        baseline,
        change_previous: change(last.value, previous),
        change_baseline: change(last.value, baseline),
        status,
        spark: points[spark_from..].iter().map(|p| p.value).collect(),
        key,
    })
}

impl OverviewQuery {
    fn admits(&self, row: &OverviewRow) -> bool {
        let eq = |want: &str, have: &str| want.is_empty() || want == have;
        let q = self.q.trim().to_lowercase();
        eq(&self.model, &row.model)
            && eq(&self.workload, &row.workload)
            && eq(&self.hardware, &row.key.testbed)
            && eq(&self.branch, &row.key.branch)
            && (q.is_empty()
                || [
                    &row.key.scenario,
                    &row.key.measure,
                    &row.model,
                    &row.workload,
                    &row.key.branch,
                ]
                .iter()
                .any(|field| field.to_lowercase().contains(&q)))
    }
}

/// The unfiltered overview and the [`Store::content_version`] it was built from.
pub type OverviewCache = tokio::sync::Mutex<Option<(Vec<i64>, std::sync::Arc<Overview>)>>;

/// The overview through `cache`: rebuilt only when [`Store::content_version`] moved (reading
/// every point of a year of nightly history is most of a cold overview's time), then filtered
/// by `query`.
pub async fn overview_cached(
    store: &Store,
    cache: &OverviewCache,
    query: OverviewQuery,
) -> Result<Overview, DashError> {
    let version = store.content_version().await?;
    let mut cached = cache.lock().await;
    let full = match cached.as_ref() {
        Some((v, full)) if *v == version => full.clone(),
        _ => {
            let full = std::sync::Arc::new(overview(store, OverviewQuery::default()).await?);
            *cached = Some((version, full.clone()));
            full
        }
    };
    drop(cached);
    let mut view = (*full).clone();
    view.rows.retain(|r| query.admits(r));
    view.query = query;
    Ok(view)
}

/// The overview: every series with its latest value, changes, sparkline and status.
pub async fn overview(store: &Store, query: OverviewQuery) -> Result<Overview, DashError> {
    let points = store.all_series_points().await?;
    let labels = testbed_labels(store).await?;
    let alerts = alert_views(store).await?;
    let mut rows = Vec::new();
    let (mut models, mut workloads, mut branches) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut hardware = BTreeMap::new();
    let mut start = 0;
    while start < points.len() {
        let key = points[start].key();
        let end = start
            + points[start..]
                .iter()
                .take_while(|p| {
                    p.scenario == key.scenario
                        && p.config_hash == key.config_hash
                        && p.measure == key.measure
                        && p.testbed == key.testbed
                        && p.branch == key.branch
                })
                .count();
        let series_alerts: Vec<&AlertView> =
            alerts.iter().filter(|a| alert_of(&a.alert, &key)).collect();
        if let Some(row) = overview_row(&points[start..end], &series_alerts, &labels) {
            models.insert(row.model.clone());
            workloads.insert(row.workload.clone());
            branches.insert(row.key.branch.clone());
            hardware.insert(row.key.testbed.clone(), row.hardware.clone());
            rows.push(row);
        }
        start = end;
    }
    let total = rows.len();
    rows.retain(|r| query.admits(r));
    rows.sort_by(|a, b| {
        (&a.key.scenario, &a.key.measure, &a.hardware, &a.key.branch).cmp(&(
            &b.key.scenario,
            &b.key.measure,
            &b.hardware,
            &b.key.branch,
        ))
    });
    Ok(Overview {
        query,
        rows,
        total,
        models: models.into_iter().collect(),
        workloads: workloads.into_iter().collect(),
        branches: branches.into_iter().collect(),
        hardware: hardware.into_iter().collect(),
    })
}

// ---------------------------------------------------------------- series

/// The series page's parameters: the series key's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeriesQuery {
    /// Scenario name.
    pub scenario: String,
    /// Scenario config hash.
    pub config: String,
    /// Measure name.
    pub measure: String,
    /// Testbed hash.
    pub testbed: String,
    /// Branch.
    pub branch: String,
}

/// One point of the series page.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRow {
    /// Its run.
    pub run_id: i64,
    /// Commit hash.
    pub sha: String,
    /// Commit position.
    pub ordinal: i64,
    /// Value.
    pub value: f64,
    /// Lower bound.
    pub lower: Option<f64>,
    /// Upper bound.
    pub upper: Option<f64>,
    /// Run start, unix ms.
    pub started_at: i64,
    /// An alert at this commit: its id and kind.
    pub alert: Option<(i64, String)>,
}

/// The series page.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    /// The series.
    pub key: SeriesKey,
    /// The testbed's readable name.
    pub hardware: String,
    /// Points in commit order.
    pub points: Vec<SeriesRow>,
    /// Its alerts (every state), in commit order.
    pub alerts: Vec<AlertView>,
    /// The chart: values by commit, bounds as a band, alerts as markers; points link to runs.
    pub chart: Chart,
}

/// The series `q` names: its points, alerts and chart.
pub async fn series(store: &Store, q: &SeriesQuery) -> Result<SeriesView, DashError> {
    let filter = SeriesFilter {
        scenario: q.scenario.clone(),
        measure: q.measure.clone(),
        testbed: Some(q.testbed.clone()),
        branch: Some(q.branch.clone()),
        config_hash: Some(q.config.clone()),
    };
    let points = store.series(&filter).await?;
    if points.is_empty() {
        return Err(DashError::NotFound(format!(
            "no series {} / {} on testbed {} branch {}",
            q.scenario,
            q.measure,
            short_sha(&q.testbed),
            q.branch
        )));
    }
    // The measure's metadata, from the series keys of the newest run.
    let newest = points.last().map_or(0, |p| p.run_id);
    let meta = store
        .series_of_run(newest)
        .await?
        .into_iter()
        .find(|k| {
            k.scenario == q.scenario
                && k.config_hash == q.config
                && k.measure == q.measure
                && k.testbed == q.testbed
                && k.branch == q.branch
        })
        .ok_or_else(|| DashError::NotFound(format!("no series {}", q.scenario)))?;
    let labels = testbed_labels(store).await?;
    let alerts: Vec<AlertView> =
        alert_views(store).await?.into_iter().filter(|a| alert_of(&a.alert, &meta)).collect();
    let rows: Vec<SeriesRow> = points
        .iter()
        .map(|p| SeriesRow {
            run_id: p.run_id,
            sha: p.sha.clone(),
            ordinal: p.ordinal,
            value: p.value,
            lower: p.lower_bound,
            upper: p.upper_bound,
            started_at: p.started_at,
            alert: alerts
                .iter()
                .find(|a| a.alert.info.commit == p.sha)
                .map(|a| (a.alert.id, format!("{} {}", a.state(), a.kind()))),
        })
        .collect();
    let mut chart = Chart::new(ChartKind::Line);
    chart.x_label = Some("commit (nightly order)".into());
    chart.y_label = Some(format!("{} ({})", meta.measure, meta.unit));
    chart.x = Some(rows.iter().map(|r| r.ordinal as f64).collect());
    chart
        .series
        .push(ChartSeries::line(&meta.measure, rows.iter().map(|r| Some(r.value)).collect()));
    if rows.iter().any(|r| r.lower.is_some() || r.upper.is_some()) {
        chart.band = Some(Band {
            lower: rows.iter().map(|r| r.lower).collect(),
            upper: rows.iter().map(|r| r.upper).collect(),
        });
    }
    chart.markers = alerts
        .iter()
        .filter(|a| a.alert.info.state != AlertState::Retracted)
        .filter_map(|a| {
            let p = rows.iter().find(|r| r.sha == a.alert.info.commit)?;
            Some(Marker {
                x: p.ordinal as f64,
                label: format!("{} {} {:+.1}%", a.state(), a.kind(), a.alert.info.change_pct),
            })
        })
        .collect();
    chart.links = rows.iter().map(|r| Some(format!("/runs/{}", r.run_id))).collect();
    chart.tooltips = rows
        .iter()
        .map(|r| {
            let bounds = match (r.lower, r.upper) {
                (Some(l), Some(u)) => format!(" [{}, {}]", fmt_value(l), fmt_value(u)),
                _ => String::new(),
            };
            format!(
                "commit {} · run {} · {} {}{bounds}",
                short_sha(&r.sha),
                r.run_id,
                fmt_value(r.value),
                meta.unit
            )
        })
        .collect();
    Ok(SeriesView {
        hardware: labels.get(&meta.testbed).cloned().unwrap_or_else(|| meta.testbed.clone()),
        key: meta,
        points: rows,
        alerts,
        chart,
    })
}

// ---------------------------------------------------------------- runs

/// One latency CDF: each histogram of one scenario, as (ms, fraction ≤) points.
fn cdf_points(data: &[u8]) -> Option<(Vec<f64>, Vec<f64>)> {
    use hdrhistogram::serialization::Deserializer;
    let mut reader = data;
    let h: hdrhistogram::Histogram<u64> = Deserializer::new().deserialize(&mut reader).ok()?;
    if h.is_empty() {
        return None;
    }
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    // Every percentile to p98, then the tail up to the maximum, in increasing order.
    let tail = [0.99, 0.995, 0.999, 0.9999, 1.0];
    for q in (0..99).map(|i| f64::from(i) / 100.0).chain(tail) {
        // Histograms hold microseconds.
        let ms = h.value_at_quantile(q) as f64 / 1000.0;
        xs.push(ms.max(1e-3));
        ys.push(q);
    }
    Some((xs, ys))
}

/// Latency histograms the run pages draw, in this order.
const CDF_NAMES: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

/// A scenario of a run, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct RunScenario {
    /// Scenario name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Workload.
    pub workload: String,
    /// Engine config YAML.
    pub config: String,
    /// Its values: (measure, value, unit, lower, upper, n).
    pub values: Vec<RunValue>,
    /// Latency CDFs of its histograms (TTFT, TPOT, ITL, E2EL), one chart.
    pub cdf: Option<Chart>,
}

/// One stored value of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunValue {
    /// Measure.
    pub measure: String,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: String,
    /// Lower bound.
    pub lower: Option<f64>,
    /// Upper bound.
    pub upper: Option<f64>,
    /// Observations.
    pub n: i64,
    /// Raw samples stored.
    pub samples: usize,
}

/// The run page.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The run.
    pub run: RunSummary,
    /// Its testbed's readable name.
    pub hardware: String,
    /// Environment and testbed as (key, value) rows.
    pub environment: Vec<(String, String)>,
    /// Its scenarios.
    pub scenarios: Vec<RunScenario>,
    /// The run before it on the same branch and testbed, by commit order.
    pub previous: Option<i64>,
}

/// Flattens a JSON object into (dotted key, value) rows.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The CDF chart of one scenario's histograms.
fn scenario_cdf(record: &dyno_results::store::ScenarioResult, title: &str) -> Option<Chart> {
    let mut chart = Chart::new(ChartKind::Cdf);
    chart.title = Some(title.to_string());
    chart.x_label = Some("latency (ms)".into());
    chart.y_label = Some("fraction of requests ≤".into());
    chart.x_log = true;
    for name in CDF_NAMES {
        let Some(h) = record.histograms.iter().find(|h| h.name == name) else { continue };
        if let Some((x, y)) = cdf_points(&h.data) {
            chart.series.push(ChartSeries::xy(name.to_uppercase(), x, y, false));
        }
    }
    (!chart.series.is_empty()).then_some(chart)
}

/// The previous run of `run` on its branch and testbed.
async fn previous_run(store: &Store, run: &RunSummary) -> Result<Option<i64>, DashError> {
    let ordinal = run.commit.ordinal.unwrap_or(i64::MAX);
    let testbed = run.testbed.hash();
    Ok(store
        .runs(usize::MAX)
        .await?
        .into_iter()
        .filter(|r| r.id != run.id && r.branch == run.branch && r.testbed.hash() == testbed)
        .filter(|r| {
            let o = r.commit.ordinal.unwrap_or(i64::MIN);
            o < ordinal || (o == ordinal && r.id < run.id)
        })
        .max_by_key(|r| (r.commit.ordinal, r.id))
        .map(|r| r.id))
}

/// Parses a run id from a path segment (anything else is an unknown run).
pub fn parse_id(what: &str, text: &str) -> Result<i64, DashError> {
    text.parse().map_err(|_| DashError::NotFound(format!("no {what} {text:?}")))
}

/// One run: config, environment, values and latency CDFs.
pub async fn run(store: &Store, id: i64) -> Result<RunView, DashError> {
    let record = store.run_record(id).await?;
    let labels = testbed_labels(store).await?;
    let mut environment = Vec::new();
    flatten("testbed", &record.run.testbed.spec, &mut environment);
    flatten("", &record.run.environment, &mut environment);
    let scenarios = record
        .scenarios
        .iter()
        .map(|s| RunScenario {
            name: s.scenario.name.clone(),
            model: s.scenario.model.clone(),
            workload: s.scenario.workload.clone(),
            config: s.scenario.config.clone(),
            values: s
                .values
                .iter()
                .map(|v| RunValue {
                    measure: v.measure.clone(),
                    value: v.value,
                    unit: v.unit.clone(),
                    lower: v.lower,
                    upper: v.upper,
                    n: v.n,
                    samples: v.samples.len(),
                })
                .collect(),
            cdf: scenario_cdf(s, &format!("{}: latency CDFs", s.scenario.name)),
        })
        .collect();
    let previous = previous_run(store, &record.run).await?;
    Ok(RunView {
        hardware: labels
            .get(&record.run.testbed.hash())
            .cloned()
            .unwrap_or_else(|| record.run.testbed.hash()),
        environment,
        scenarios,
        previous,
        run: record.run,
    })
}

// ---------------------------------------------------------------- compare

/// One measure of the comparison, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct CompareLine {
    /// Scenario.
    pub scenario: String,
    /// Measure.
    pub measure: String,
    /// Unit.
    pub unit: String,
    /// Run A's value.
    pub a: f64,
    /// Run B's value.
    pub b: f64,
    /// B / A.
    pub ratio: Option<f64>,
    /// `better`, `worse` or `same` (B against A, in the measure's direction).
    pub verdict: String,
    /// Mann–Whitney p-value on the raw samples, when both runs stored enough.
    pub p_value: Option<f64>,
    /// Whether the difference is significant at the comparison's alpha.
    pub significant: bool,
}

/// The compare page.
#[derive(Debug, Clone, Serialize)]
pub struct CompareView {
    /// Run A (the reference).
    pub a: RunSummary,
    /// Run B.
    pub b: RunSummary,
    /// The significance level.
    pub alpha: f64,
    /// Measures in both runs.
    pub lines: Vec<CompareLine>,
    /// Per scenario in both runs: TTFT and E2EL CDFs of A and B overlaid.
    pub cdfs: Vec<Chart>,
}

/// Runs `a` and `b` side by side.
pub async fn compare_runs(store: &Store, a: i64, b: i64) -> Result<CompareView, DashError> {
    let (ra, rb): (RunRecord, RunRecord) = (store.run_record(a).await?, store.run_record(b).await?);
    let config = CompareConfig::default();
    let cmp = compare(&ra, &rb, &config).map_err(|e| DashError::BadRequest(e.to_string()))?;
    let lines = cmp
        .rows
        .iter()
        .map(|r| CompareLine {
            scenario: r.scenario.clone(),
            measure: r.measure.clone(),
            unit: r.unit.clone(),
            a: r.a,
            b: r.b,
            ratio: r.ratio,
            verdict: r.verdict.as_str().to_string(),
            p_value: r.significance.p_value(),
            significant: matches!(
                r.significance,
                dyno_results::compare::Significance::Significant { .. }
            ),
        })
        .collect();
    let mut cdfs = Vec::new();
    for sa in &ra.scenarios {
        let Some(sb) = rb.scenarios.iter().find(|s| s.scenario.name == sa.scenario.name) else {
            continue;
        };
        for name in ["ttft", "e2el"] {
            let mut chart = Chart::new(ChartKind::Cdf);
            chart.title = Some(format!("{}: {} CDF", sa.scenario.name, name.to_uppercase()));
            chart.x_label = Some("latency (ms)".into());
            chart.y_label = Some("fraction of requests ≤".into());
            chart.x_log = true;
            for (label, s) in [(format!("run {a}"), sa), (format!("run {b}"), sb)] {
                let points =
                    s.histograms.iter().find(|h| h.name == name).and_then(|h| cdf_points(&h.data));
                if let Some((x, y)) = points {
                    chart.series.push(ChartSeries::xy(label, x, y, false));
                }
            }
            if !chart.series.is_empty() {
                cdfs.push(chart);
            }
        }
    }
    Ok(CompareView { a: ra.run, b: rb.run, alpha: cmp.alpha, lines, cdfs })
}

// ---------------------------------------------------------------- alerts

/// Alerts of one commit range.
#[derive(Debug, Clone, Serialize)]
pub struct AlertGroupView {
    /// The group id, when grouped.
    pub group: Option<i64>,
    /// The range's first and last commits (short), when known.
    pub range: String,
    /// Its alerts.
    pub alerts: Vec<AlertView>,
}

/// Which alerts the alerts page lists: `state=all` shows retracted ones too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertsQuery {
    /// `all`, or empty for provisional and confirmed alerts only.
    pub state: String,
}

/// The alerts page: alerts grouped by commit range, newest group first.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    /// The groups.
    pub groups: Vec<AlertGroupView>,
    /// Alerts listed.
    pub total: usize,
    /// Retracted alerts left out (see [`AlertsQuery`]).
    pub hidden_retracted: usize,
}

/// The alerts `q` asks for, grouped.
pub async fn alerts(store: &Store, q: &AlertsQuery) -> Result<AlertsView, DashError> {
    let mut views = alert_views(store).await?;
    let before = views.len();
    if q.state != "all" {
        views.retain(|v| v.alert.info.state != AlertState::Retracted);
    }
    let hidden_retracted = before - views.len();
    let total = views.len();
    let mut groups: Vec<AlertGroupView> = Vec::new();
    for v in views {
        let found = v.alert.group.and_then(|g| groups.iter_mut().find(|x| x.group == Some(g)));
        match found {
            Some(g) => g.alerts.push(v),
            None => groups.push(AlertGroupView {
                group: v.alert.group,
                range: String::new(),
                alerts: vec![v],
            }),
        }
    }
    for g in &mut groups {
        let shas: BTreeSet<&str> = g.alerts.iter().map(|a| a.short_sha.as_str()).collect();
        g.range = match (shas.first(), shas.last()) {
            (Some(a), Some(b)) if a != b => format!("{a}…{b}"),
            (Some(a), _) => (*a).to_string(),
            _ => String::new(),
        };
    }
    groups.reverse();
    Ok(AlertsView { groups, total, hidden_retracted })
}

/// One alert with its history.
pub async fn alert(store: &Store, id: i64) -> Result<AlertView, DashError> {
    let alert = store.alert(id).await?;
    let history = store.triage_history(id).await?;
    Ok(AlertView::new(alert, history))
}

/// Parses a triage action name.
pub fn triage_action(name: &str) -> Result<TriageAction, DashError> {
    TriageAction::parse(name).ok_or_else(|| {
        let names: Vec<&str> = TriageAction::ALL.iter().map(|a| a.as_str()).collect();
        DashError::BadRequest(format!("action {name:?} is not one of {}", names.join(", ")))
    })
}

// ---------------------------------------------------------------- studies

/// The studies page.
#[derive(Debug, Clone, Serialize)]
pub struct StudiesView {
    /// Every study, newest first.
    pub studies: Vec<StudySummary>,
}

/// Every study.
pub async fn studies(store: &Store) -> Result<StudiesView, DashError> {
    let mut studies = store.studies().await?;
    studies.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(StudiesView { studies })
}

/// The figures of a trial the study page shows (the tuner's `TrialMetrics`, read leniently:
/// a field the trial did not store is absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrialFigures {
    /// Good requests per second.
    pub goodput: Option<f64>,
    /// Output tokens per second.
    pub output_throughput: Option<f64>,
    /// p99 TTFT, ms.
    pub ttft_p99_ms: Option<f64>,
    /// p99 TPOT, ms.
    pub tpot_p99_ms: Option<f64>,
    /// Whether the p99s met the SLOs.
    pub slo_met: Option<bool>,
}

impl TrialFigures {
    fn of(v: &Option<serde_json::Value>) -> Option<TrialFigures> {
        v.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// One trial, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct TrialRow {
    /// Trial number.
    pub number: i64,
    /// Status.
    pub status: String,
    /// The config's knobs, `k=v` joined (what tells trials apart).
    pub summary: String,
    /// Measured figures.
    pub measured: Option<TrialFigures>,
    /// Predicted figures.
    pub predicted: Option<TrialFigures>,
    /// The objective's value (measured, else predicted).
    pub objective: Option<f64>,
    /// On the Pareto frontier of throughput against p99 TTFT and TPOT.
    pub pareto: bool,
    /// Why it failed.
    pub error: Option<String>,
}

/// The study page.
#[derive(Debug, Clone, Serialize)]
pub struct StudyView {
    /// The study.
    pub study: Study,
    /// What its objective maximizes (goodput or output throughput).
    pub objective: String,
    /// Its trials by number.
    pub trials: Vec<TrialRow>,
    /// The best trial's number.
    pub best: Option<i64>,
    /// The best trial's config as YAML.
    pub best_config: Option<String>,
    /// Throughput against p99 TPOT: every trial, the frontier joined.
    pub pareto: Chart,
    /// The objective of each trial and the best so far, by trial number.
    pub convergence: Chart,
    /// Predicted against measured throughput, where a trial has both.
    pub predicted_vs_measured: Option<Chart>,
}

/// `k=v` pairs of a config's scalar fields, nested keys dotted.
fn config_summary(config: &serde_json::Value) -> String {
    let mut rows = Vec::new();
    flatten("", config, &mut rows);
    rows.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// One study: trials, frontier, convergence, best config, predicted against measured.
pub async fn study(store: &Store, id: i64) -> Result<StudyView, DashError> {
    let study = store.study(id).await?;
    let trials: Vec<Trial> = store.trials(id).await?;
    let objective =
        if study.objective.contains("throughput") { "output_throughput" } else { "goodput" };
    let pick = |f: &TrialFigures| {
        if objective == "goodput" { f.goodput } else { f.output_throughput }
    };
    let mut rows: Vec<TrialRow> = trials
        .iter()
        .map(|t| {
            let measured = TrialFigures::of(&t.measured);
            let predicted = TrialFigures::of(&t.predicted);
            let objective = measured.as_ref().or(predicted.as_ref()).and_then(pick);
            TrialRow {
                number: t.number,
                status: t.status.as_str().to_string(),
                summary: config_summary(&t.config),
                measured,
                predicted,
                objective: if t.status == TrialStatus::Completed { objective } else { None },
                pareto: false,
                error: t.error.clone(),
            }
        })
        .collect();
    rows.sort_by_key(|r| r.number);
    let figures: Vec<(usize, (f64, f64, f64))> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.objective.is_some())
        .filter_map(|(i, r)| {
            let f = r.measured.as_ref().or(r.predicted.as_ref())?;
            Some((i, (f.output_throughput?, f.ttft_p99_ms?, f.tpot_p99_ms?)))
        })
        .collect();
    let points: Vec<(f64, f64, f64)> = figures.iter().map(|(_, p)| *p).collect();
    let front = dyno_results::frontier::pareto_front(&points);
    for &k in &front {
        rows[figures[k].0].pareto = true;
    }
    let best = rows
        .iter()
        .filter_map(|r| r.objective.map(|o| (r.number, o)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(n, _)| n);
    let best_config = best
        .and_then(|n| trials.iter().find(|t| t.number == n))
        .and_then(|t| serde_yaml::to_string(&t.config).ok());

    let mut pareto_chart = Chart::new(ChartKind::Scatter);
    pareto_chart.x_label = Some("p99 TPOT (ms)".into());
    pareto_chart.y_label = Some("output throughput (tok/s)".into());
    pareto_chart.series.push(ChartSeries::xy(
        "trials",
        points.iter().map(|p| p.2).collect(),
        points.iter().map(|p| p.0).collect(),
        true,
    ));
    // The frontier is over three figures (throughput, p99 TTFT, p99 TPOT); drawn against one
    // latency its members are points, not a line (a line would zig-zag).
    let mut frontier: Vec<(f64, f64)> = front.iter().map(|&k| (points[k].2, points[k].0)).collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    pareto_chart.title =
        Some("throughput against p99 TPOT; frontier over throughput, p99 TTFT and p99 TPOT".into());
    pareto_chart.series.push(ChartSeries::xy(
        "Pareto frontier",
        frontier.iter().map(|p| p.0).collect(),
        frontier.iter().map(|p| p.1).collect(),
        true,
    ));

    let mut convergence = Chart::new(ChartKind::Line);
    convergence.x_label = Some("trial".into());
    convergence.y_label = Some(objective.replace('_', " "));
    convergence.x = Some(rows.iter().map(|r| r.number as f64).collect());
    let mut best_so_far = None::<f64>;
    let running: Vec<Option<f64>> = rows
        .iter()
        .map(|r| {
            if let Some(o) = r.objective {
                best_so_far = Some(best_so_far.map_or(o, |b| b.max(o)));
            }
            best_so_far
        })
        .collect();
    convergence.series.push(ChartSeries::line("best so far", running));
    convergence.series.push(ChartSeries {
        points_only: true,
        ..ChartSeries::line("trial", rows.iter().map(|r| r.objective).collect())
    });

    let both: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            let p = r.predicted.as_ref()?.output_throughput?;
            let m = r.measured.as_ref()?.output_throughput?;
            Some((p, m))
        })
        .collect();
    let predicted_vs_measured = (!both.is_empty()).then(|| {
        let mut c = Chart::new(ChartKind::Scatter);
        c.x_label = Some("predicted output throughput (tok/s)".into());
        c.y_label = Some("measured output throughput (tok/s)".into());
        c.series.push(ChartSeries::xy(
            "trials",
            both.iter().map(|p| p.0).collect(),
            both.iter().map(|p| p.1).collect(),
            true,
        ));
        let hi = both.iter().map(|p| p.0.max(p.1)).fold(0.0, f64::max);
        c.series.push(ChartSeries::xy("measured = predicted", vec![0.0, hi], vec![0.0, hi], false));
        c
    });
    Ok(StudyView {
        study,
        objective: objective.to_string(),
        trials: rows,
        best,
        best_config,
        pareto: pareto_chart,
        convergence,
        predicted_vs_measured,
    })
}
