//! What the load generator writes down about one request.
//!
//! Every time is seconds after the run's start instant (one monotonic clock for the whole run),
//! so records from one run compare directly and serialize as plain numbers.

use serde::{Deserialize, Serialize};

/// Why a request failed. Every failure is counted under its kind; none is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connection could not be made (refused, unreachable).
    Connect,
    /// The server answered 4xx.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// The server answered 5xx (or another non-2xx status).
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// A stream event that is not valid SSE or whose data is not the expected JSON.
    MalformedSse,
    /// The stream ended (or the connection dropped) before `data: [DONE]`.
    Truncated,
    /// No answer within the request timeout.
    Timeout,
    /// Anything else: a transport error after connecting and before any response (the
    /// server closed the connection without answering, for example).
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::Http4xx,
        ErrorKind::Http5xx,
        ErrorKind::MalformedSse,
        ErrorKind::Truncated,
        ErrorKind::Timeout,
        ErrorKind::Other,
    ];

    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::MalformedSse => "malformed_sse",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }
}

/// One request, from its place in the schedule to its last byte.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the plan.
    pub index: usize,
    /// A warm-up request (sent, excluded from the metrics).
    pub warmup: bool,
    /// When the schedule said to send it. Closed loop: when its slot freed up.
    pub intended_s: f64,
    /// Just before the request was handed to the HTTP client ("start" in vLLM's definitions).
    pub sent_s: f64,
    /// When the response's first body bytes were read (`None` if none arrived).
    pub first_byte_s: Option<f64>,
    /// Every SSE event with a non-empty `choices`, stamped when its bytes were read. For a
    /// non-streaming response, one entry: when the body was complete.
    pub choice_events_s: Vec<f64>,
    /// The first choice event whose text (or delta content) is non-empty.
    pub first_content_s: Option<f64>,
    /// When the response ended: `data: [DONE]`, the end of a non-streaming body, or the
    /// failure.
    pub completed_s: f64,
    /// Prompt tokens sent (the plan's count).
    pub prompt_tokens: usize,
    /// `usage.prompt_tokens` as the server reported it.
    pub usage_prompt_tokens: Option<usize>,
    /// `usage.completion_tokens` as the server reported it (vLLM's output token count).
    pub output_tokens: Option<usize>,
    /// Output tokens asked for.
    pub max_tokens: usize,
    /// HTTP status, when one arrived.
    pub status: Option<u16>,
    /// Why it failed; `None` means success.
    pub error: Option<ErrorKind>,
    /// The failure's detail (status line, error body, parse error), for the report.
    pub error_detail: Option<String>,
}

impl RequestRecord {
    /// Succeeded: no error.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Time to first token: first choice event − sent.
    pub fn ttft_s(&self) -> Option<f64> {
        self.choice_events_s.first().map(|&t| t - self.sent_s)
    }

    /// End-to-end latency: last choice event − sent.
    pub fn e2el_s(&self) -> Option<f64> {
        self.choice_events_s.last().map(|&t| t - self.sent_s)
    }

    /// Time per output token after the first: (E2EL − TTFT) / (tokens − 1), for > 1 token.
    pub fn tpot_s(&self) -> Option<f64> {
        let tokens = self.output_tokens?;
        if tokens < 2 {
            return None;
        }
        Some((self.e2el_s()? - self.ttft_s()?) / (tokens - 1) as f64)
    }

    /// Gaps between consecutive choice events (vLLM's ITL samples of this request).
    pub fn itls_s(&self) -> impl Iterator<Item = f64> + '_ {
        self.choice_events_s.windows(2).map(|w| w[1] - w[0])
    }

    /// How late the send was against the schedule (≥ 0 when the client kept up).
    pub fn lag_s(&self) -> f64 {
        self.sent_s - self.intended_s
    }
}
