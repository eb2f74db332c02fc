//! The HTML pages: one askama template per view (templates/, auto-escaped), and the
//! handlers that build the view, render it, and answer errors with an error page.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Redirect, Response};
use dyno_results::store::RunSummary;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{check_csrf, check_token, csrf_for};
use crate::error::DashError;
use crate::views::{self, fmt_value, short_sha};

/// Numbers as the templates show them: `x` or `&x`, optional or not.
pub trait Shown {
    /// The value, if any.
    fn shown(&self) -> Option<f64>;
}

impl Shown for f64 {
    fn shown(&self) -> Option<f64> {
        Some(*self)
    }
}

impl Shown for Option<f64> {
    fn shown(&self) -> Option<f64> {
        *self
    }
}

impl<T: Shown + ?Sized> Shown for &T {
    fn shown(&self) -> Option<f64> {
        (**self).shown()
    }
}

/// Formatting the templates call as `self.value(x)`, `self.pct(x)`, ...
pub trait Formatting {
    /// A value with sensible digits, or "–".
    fn value(&self, x: impl Shown) -> String {
        x.shown().map_or_else(|| "–".into(), fmt_value)
    }
    /// A relative change as a signed percentage.
    fn pct(&self, x: impl Shown) -> String {
        views::fmt_pct(&x.shown())
    }
    /// A ratio as "×1.042".
    fn ratio(&self, x: impl Shown) -> String {
        x.shown().map_or_else(|| "–".into(), |r| format!("×{r:.3}"))
    }
    /// A commit's short hash.
    fn sha(&self, sha: &str) -> String {
        short_sha(sha).to_string()
    }
}

macro_rules! page {
    ($(#[$meta:meta])* $name:ident, $path:literal { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Template)]
        #[template(path = $path)]
        pub struct $name {
            $(
                #[doc = concat!("The page's `", stringify!($field), "`.")]
                pub $field: $ty,
            )*
        }

        impl Formatting for $name {}
    };
}

page!(
    /// An error: status, heading and message.
    ErrorPage, "error.html" { status: u16, heading: &'static str, message: String }
);
page!(
    /// Every series.
    OverviewPage, "overview.html" { view: views::Overview }
);
page!(
    /// One series.
    SeriesPage, "series.html" { view: views::SeriesView }
);
page!(
    /// Recent runs.
    RunsPage, "runs.html" { runs: Vec<RunSummary> }
);
page!(
    /// One run.
    RunPage, "run.html" { view: views::RunView }
);
page!(
    /// Two runs side by side.
    ComparePage, "compare.html" { view: views::CompareView }
);
page!(
    /// Every alert.
    AlertsPage, "alerts.html" { view: views::AlertsView }
);
page!(
    /// One alert and its triage form.
    AlertPage, "alert.html" { view: views::AlertView, csrf: String }
);
page!(
    /// Every study.
    StudiesPage, "studies.html" { view: views::StudiesView }
);
page!(
    /// One study.
    StudyPage, "study.html" { view: views::StudyView }
);

/// Renders a page, or the error page when rendering fails.
fn render(page: &impl Template) -> Result<Html<String>, DashError> {
    page.render().map(Html).map_err(|e| DashError::Render(e.to_string()))
}

/// `GET /`.
pub async fn overview(
    State(state): State<AppState>,
    Query(query): Query<views::OverviewQuery>,
) -> Result<Html<String>, DashError> {
    let view = views::overview_cached(&state.store, &state.overview, query).await?;
    render(&OverviewPage { view })
}

/// `GET /series?scenario=&config=&measure=&testbed=&branch=`.
pub async fn series(
    State(state): State<AppState>,
    Query(query): Query<views::SeriesQuery>,
) -> Result<Html<String>, DashError> {
    let view = views::series(&state.store, &query).await?;
    render(&SeriesPage { view })
}

/// `GET /runs`: the latest 500 runs.
pub async fn runs(State(state): State<AppState>) -> Result<Html<String>, DashError> {
    let runs = state.store.runs(500).await?;
    render(&RunsPage { runs })
}

/// `GET /runs/{id}`.
pub async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, DashError> {
    let view = views::run(&state.store, views::parse_id("run", &id)?).await?;
    render(&RunPage { view })
}

/// The two runs of a comparison.
#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    /// Run A.
    pub a: String,
    /// Run B.
    pub b: String,
}

/// `GET /compare?a=&b=`.
pub async fn compare(
    State(state): State<AppState>,
    Query(q): Query<CompareQuery>,
) -> Result<Html<String>, DashError> {
    let (a, b) = (views::parse_id("run", &q.a)?, views::parse_id("run", &q.b)?);
    let view = views::compare_runs(&state.store, a, b).await?;
    render(&ComparePage { view })
}

/// `GET /alerts[?state=all]`.
pub async fn alerts(
    State(state): State<AppState>,
    Query(q): Query<views::AlertsQuery>,
) -> Result<Html<String>, DashError> {
    let view = views::alerts(&state.store, &q).await?;
    render(&AlertsPage { view })
}

/// `GET /alerts/{id}`: sets the CSRF cookie the triage form needs.
pub async fn alert(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DashError> {
    let view = views::alert(&state.store, views::parse_id("alert", &id)?).await?;
    let (csrf, set_cookie) = csrf_for(&headers);
    let mut response = render(&AlertPage { view, csrf })?.into_response();
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The triage form.
#[derive(Debug, Deserialize)]
pub struct TriageForm {
    /// `acknowledged`, `fixed`, `invalid` or `improvement`.
    pub action: String,
    /// Free text.
    #[serde(default)]
    pub note: String,
    /// The dashboard's token.
    #[serde(default)]
    pub token: String,
    /// The CSRF value the page put in the form.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /alerts/{id}/triage` (form): CSRF, then the token, then the action; on success back
/// to the alert.
pub async fn triage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TriageForm>,
) -> Result<Redirect, DashError> {
    let id = views::parse_id("alert", &id)?;
    check_csrf(&headers, &form.csrf)?;
    let token = (!form.token.is_empty()).then_some(form.token.as_str());
    check_token(state.token.as_deref(), token)?;
    let action = views::triage_action(&form.action)?;
    state.store.alert(id).await?;
    state.store.triage(id, action.as_str(), form.note.trim(), Some("dashboard")).await?;
    Ok(Redirect::to(&format!("/alerts/{id}")))
}

/// `GET /studies`.
pub async fn studies(State(state): State<AppState>) -> Result<Html<String>, DashError> {
    let view = views::studies(&state.store).await?;
    render(&StudiesPage { view })
}

/// `GET /studies/{id}`.
pub async fn study(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, DashError> {
    let view = views::study(&state.store, views::parse_id("study", &id)?).await?;
    render(&StudyPage { view })
}

/// `GET /studies/{id}/best-config.yaml`: the best trial's config as a YAML download.
pub async fn best_config(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let id = views::parse_id("study", &id)?;
    let view = views::study(&state.store, id).await?;
    let yaml = view
        .best_config
        .ok_or_else(|| DashError::NotFound(format!("study {id} has no completed trial yet")))?;
    let name: String = view
        .study
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    let disposition = format!("attachment; filename=\"{name}-best.yaml\"");
    let mut response = yaml.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Any other path.
pub async fn not_found() -> DashError {
    DashError::NotFound("no such page".into())
}
