//! `dyno dashboard`: the web app where people review what nightly runs and tuning studies
//! recorded — an overview of every series, series with their change points, runs with latency
//! CDFs, run comparisons, alerts and their triage, and tuning studies.
//!
//! Server-side HTML (askama templates in `templates/`, auto-escaped) over the results store;
//! each page's data comes from one view model in [`views`], which the JSON API under `/api`
//! serves as is. Charts are drawn in the browser by a vendored, pinned uPlot (`assets/`,
//! served from the binary: no CDN) from specs in `data-chart` attributes ([`chart`]).
//! Read-only without a token; triage needs the token (a bearer header for the API, the form's
//! token field plus a CSRF cookie for the browser; see [`auth`]).

pub mod api;
pub mod auth;
pub mod chart;
pub mod error;
pub mod pages;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dyno_results::Store;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The results store.
    pub store: Store,
    /// The triage token; `None` makes the dashboard read-only.
    pub token: Option<Arc<str>>,
    /// The unfiltered overview and the store version it was built from (see
    /// [`views::overview_cached`]).
    pub overview: Arc<views::OverviewCache>,
}

/// Vendored and own front-end files, compiled in: (name, content type, bytes).
const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../assets/uPlot.min.css")),
    ("uPlot.LICENSE", "text/plain; charset=utf-8", include_bytes!("../assets/uPlot.LICENSE")),
    ("dyno.js", "text/javascript; charset=utf-8", include_bytes!("../assets/dyno.js")),
    ("dyno.css", "text/css; charset=utf-8", include_bytes!("../assets/dyno.css")),
];

/// `GET /assets/{name}`.
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Adds `Server-Timing: app;dur=MS` to every response: the server's own time for the
/// request, which browsers' developer tools show and benchmarks read (the overview and
/// series pages have a 200 ms budget on a year of nightly history).
async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}

/// The whole app: pages, assets and the JSON API.
pub fn router(store: Store, token: Option<String>) -> Router {
    let state = AppState {
        store,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
        overview: Arc::default(),
    };
    let api = Router::new()
        .route("/overview", get(api::overview))
        .route("/series", get(api::series))
        .route("/runs", get(api::runs))
        .route("/runs/{id}", get(api::run))
        .route("/compare", get(api::compare))
        .route("/alerts", get(api::alerts))
        .route("/alerts/{id}", get(api::alert))
        .route("/alerts/{id}/triage", post(api::triage))
        .route("/studies", get(api::studies))
        .route("/studies/{id}", get(api::study))
        .fallback(api::not_found);
    Router::new()
        .route("/", get(pages::overview))
        .route("/series", get(pages::series))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/compare", get(pages::compare))
        .route("/alerts", get(pages::alerts))
        .route("/alerts/{id}", get(pages::alert))
        .route("/alerts/{id}/triage", post(pages::triage))
        .route("/studies", get(pages::studies))
        .route("/studies/{id}", get(pages::study))
        .route("/studies/{id}/best-config.yaml", get(pages::best_config))
        .route("/assets/{name}", get(asset))
        .nest("/api", api)
        .fallback(pages::not_found)
        .layer(middleware::from_fn(server_timing))
        .with_state(state)
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    token: Option<String>,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, token)).await
}
