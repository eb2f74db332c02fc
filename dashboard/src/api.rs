//! The JSON API under `/api`: the same view models the pages render, plus triage with a
//! bearer token. README documents every route.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use dyno_results::store::{RunSummary, TriageEvent};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{bearer, check_token};
use crate::error::ApiError;
use crate::pages::CompareQuery;
use crate::views;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// `GET /api/overview?model=&workload=&hardware=&branch=&q=`.
pub async fn overview(
    State(state): State<AppState>,
    Query(query): Query<views::OverviewQuery>,
) -> ApiResult<views::Overview> {
    Ok(Json(views::overview_cached(&state.store, &state.overview, query).await?))
}

/// `GET /api/series?scenario=&config=&measure=&testbed=&branch=`.
pub async fn series(
    State(state): State<AppState>,
    Query(query): Query<views::SeriesQuery>,
) -> ApiResult<views::SeriesView> {
    Ok(Json(views::series(&state.store, &query).await?))
}

/// `GET /api/runs`: the latest 500 runs.
pub async fn runs(State(state): State<AppState>) -> ApiResult<Vec<RunSummary>> {
    Ok(Json(state.store.runs(500).await?))
}

/// `GET /api/runs/{id}`.
pub async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<views::RunView> {
    Ok(Json(views::run(&state.store, views::parse_id("run", &id)?).await?))
}

/// `GET /api/compare?a=&b=`.
pub async fn compare(
    State(state): State<AppState>,
    Query(q): Query<CompareQuery>,
) -> ApiResult<views::CompareView> {
    let (a, b) = (views::parse_id("run", &q.a)?, views::parse_id("run", &q.b)?);
    Ok(Json(views::compare_runs(&state.store, a, b).await?))
}

/// `GET /api/alerts[?state=all]`.
pub async fn alerts(
    State(state): State<AppState>,
    Query(q): Query<views::AlertsQuery>,
) -> ApiResult<views::AlertsView> {
    Ok(Json(views::alerts(&state.store, &q).await?))
}

/// `GET /api/alerts/{id}`.
pub async fn alert(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<views::AlertView> {
    Ok(Json(views::alert(&state.store, views::parse_id("alert", &id)?).await?))
}

/// The body of `POST /api/alerts/{id}/triage`.
#[derive(Debug, Deserialize)]
pub struct TriageRequest {
    /// `acknowledged`, `fixed`, `invalid` or `improvement`.
    pub action: String,
    /// Free text.
    #[serde(default)]
    pub note: String,
    /// Who (defaults to `api`).
    #[serde(default)]
    pub author: Option<String>,
}

/// `POST /api/alerts/{id}/triage` with `Authorization: Bearer TOKEN`: records the step and
/// returns it.
pub async fn triage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<TriageRequest>,
) -> ApiResult<TriageEvent> {
    let id = views::parse_id("alert", &id)?;
    check_token(state.token.as_deref(), bearer(&headers))?;
    let action = views::triage_action(&req.action)?;
    let author = req.author.as_deref().unwrap_or("api");
    let event = state.store.triage(id, action.as_str(), req.note.trim(), Some(author)).await?;
    let history = state.store.triage_history(id).await?;
    let recorded = history.into_iter().find(|e| e.id == event).ok_or_else(|| {
        ApiError(crate::error::DashError::NotFound(format!("triage event {event} vanished")))
    })?;
    Ok(Json(recorded))
}

/// `GET /api/studies`.
pub async fn studies(State(state): State<AppState>) -> ApiResult<views::StudiesView> {
    Ok(Json(views::studies(&state.store).await?))
}

/// `GET /api/studies/{id}`.
pub async fn study(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<views::StudyView> {
    Ok(Json(views::study(&state.store, views::parse_id("study", &id)?).await?))
}

/// Any other `/api` path.
pub async fn not_found() -> ApiError {
    ApiError(crate::error::DashError::NotFound("no such API route".into()))
}
