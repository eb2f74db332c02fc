//! Errors in OpenAI's JSON shape:
//! `{"error":{"message":…,"type":…,"param":<field or null>,"code":<string or null>}}`.
//!
//! | status | `type` | `code` | when |
//! |---|---|---|---|
//! | 400 | `invalid_request_error` | null | malformed JSON, a field of the wrong type or out of range, a prompt too long, an unsupported value |
//! | 404 | `invalid_request_error` | `model_not_found` | `model` is not the served model (`param` is `"model"`), as OpenAI answers |
//! | 404 | `invalid_request_error` | `not_found` | an unknown route |
//! | 405 | `invalid_request_error` | `method_not_allowed` | a known route with the wrong method (with an `Allow` header) |
//! | 413 and other body errors | `invalid_request_error` | null | the body could not be read (too large, broken connection) |
//! | 429 | `rate_limit_error` | `rate_limit_exceeded` | the engine's waiting queue is full; a `Retry-After` header gives seconds (at least 1) |
//! | 503 | `service_unavailable_error` | null | the engine is shutting down |

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::SubmitError;

/// An error answer: status, OpenAI error body and, for 429, a `Retry-After`. Public so that
/// other OpenAI-compatible servers in dyno (the harness's null server) answer in exactly the
/// same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<&'static str>,
    pub(crate) retry_after_s: Option<u64>,
}

impl ApiError {
    /// `status` with OpenAI error `type` `kind` and `message`; no param, code or retry hint.
    pub fn new(status: StatusCode, kind: &'static str, message: String) -> Self {
        Self { status, message, kind, param: None, code: None, retry_after_s: None }
    }

    /// The same error with OpenAI's `code` field set.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The same error with a `Retry-After` header of `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 about one request field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message.into());
        e.param = Some(param.into());
        e
    }

    /// 400 about the request as a whole (no single field at fault).
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message.into())
    }

    /// 400 for a body that is not JSON; serde's message carries the line and column.
    pub fn malformed_json(err: &serde_json::Error) -> Self {
        Self::invalid_body(format!("the request body is not valid JSON: {err}"))
    }

    /// 404 for a model this server does not serve.
    pub(crate) fn model_not_found(requested: &str, served: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{requested}` does not exist; this server serves `{served}`."),
        );
        e.param = Some("model".into());
        e.code = Some("model_not_found");
        e
    }

    /// 404 for an unknown route.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown route: {method} {path}"),
        );
        e.code = Some("not_found");
        e
    }

    /// 405 for a known route asked with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method {method} is not allowed on {path}"),
        );
        e.code = Some("method_not_allowed");
        e
    }

    /// The body could not be read (too large, connection broken).
    pub fn body_rejected(rejection: &BytesRejection) -> Self {
        Self::new(
            rejection.status(),
            "invalid_request_error",
            format!("could not read the request body: {}", rejection.body_text()),
        )
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        let message = err.to_string();
        match err {
            SubmitError::QueueFull { retry_after_s, .. } => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
                e.code = Some("rate_limit_exceeded");
                e.retry_after_s = Some(retry_after_s.max(1));
                e
            }
            SubmitError::Invalid { field, reason } => ApiError::invalid(field, reason),
            SubmitError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error", message)
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// The JSON body.
    pub fn body(&self) -> String {
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serializing strings and options cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.body(),
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid("max_tokens", "too big");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "too big", "type": "invalid_request_error",
                "param": "max_tokens", "code": null}})
        );
    }

    #[test]
    fn queue_full_is_429_with_retry_after() {
        let e = ApiError::from(SubmitError::QueueFull { limit: 4, retry_after_s: 0 });
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after_s, Some(1), "Retry-After is at least one second");
        let resp = e.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn invalid_submit_names_the_field() {
        let e = ApiError::from(SubmitError::Invalid { field: "prompt", reason: "bad".into() });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert_eq!(
            ApiError::from(SubmitError::ShuttingDown).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
