//! What can go wrong serving a request, and the status each gets: unknown ids are 404, bad
//! parameters 400, triage without the token 401 (403 when triage is off), and only a store
//! failure is a 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use dyno_results::StoreError;

use crate::pages::ErrorPage;

/// A request that cannot be answered with its page.
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    /// The id or page does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Triage needs the token, and none or a wrong one came.
    #[error("{0}")]
    Unauthorized(String),
    /// Triage is refused outright (no token configured, or a failed CSRF check).
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error("results store: {0}")]
    Store(StoreError),
    /// A page failed to render.
    #[error("rendering the page: {0}")]
    Render(String),
}

impl From<StoreError> for DashError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownRun(id) => DashError::NotFound(format!("no run {id}")),
            StoreError::UnknownStudy(id) => DashError::NotFound(format!("no study {id}")),
            StoreError::UnknownAlert(id) => DashError::NotFound(format!("no alert {id}")),
            StoreError::UnknownTrial(id) => DashError::NotFound(format!("no trial {id}")),
            other => DashError::Store(other),
        }
    }
}

impl DashError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            DashError::NotFound(_) => StatusCode::NOT_FOUND,
            DashError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            DashError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashError::Store(_) | DashError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short heading for the error page.
    fn heading(&self) -> &'static str {
        match self {
            DashError::NotFound(_) => "Not found",
            DashError::BadRequest(_) => "Bad request",
            DashError::Unauthorized(_) => "Unauthorized",
            DashError::Forbidden(_) => "Forbidden",
            DashError::Store(_) | DashError::Render(_) => "Server error",
        }
    }
}

/// HTML pages answer errors with an error page.
impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status().as_u16(),
            heading: self.heading(),
            message: self.to_string(),
        };
        let body = askama::Template::render(&page)
            .unwrap_or_else(|_| format!("{} {}", self.status(), self));
        (self.status(), Html(body)).into_response()
    }
}

/// The JSON API answers errors with `{"error": ..., "status": ...}`.
#[derive(Debug)]
pub struct ApiError(pub DashError);

impl From<DashError> for ApiError {
    fn from(e: DashError) -> Self {
        ApiError(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = serde_json::json!({ "error": self.0.to_string(), "status": status.as_u16() });
        (status, Json(body)).into_response()
    }
}
