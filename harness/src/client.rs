//! The HTTP side of a load test: one pooled `reqwest` client that sends a planned request to
//! an OpenAI-compatible `/v1/completions` endpoint, streams the answer, and writes down when
//! every byte and event arrived in a [`RequestRecord`].

use crate::record::{ErrorKind, RequestRecord};
use crate::sse::SseParser;
use dyno_workloads::PlannedRequest;
use futures::StreamExt;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Where requests go and how prompts are written.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// Base URL, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub base_url: String,
    /// The `model` field of every request.
    pub model: String,
    /// Send prompts as token-id arrays (the built-in engine and the null server take them);
    /// otherwise as text.
    pub token_prompts: bool,
}

impl TargetSpec {
    /// The completions endpoint URL.
    pub fn completions_url(&self) -> String {
        api_url(&self.base_url, "completions")
    }
}

/// `{base}/v1/{path}` for a base URL given with or without a trailing `/v1` or `/`.
pub fn api_url(base_url: &str, path: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/{path}")
}

/// The run's clock: one monotonic origin every record's times are measured from.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// A clock starting now.
    pub fn start_now() -> Self {
        Self { start: Instant::now() }
    }

    /// A clock starting at `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self { start }
    }

    /// Seconds since the origin.
    pub fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The instant `s` seconds after the origin.
    pub fn instant_at(&self, s: f64) -> Instant {
        self.start + Duration::from_secs_f64(s.max(0.0))
    }
}

/// Sends requests to one target over one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    target: TargetSpec,
    /// `target.model` as a JSON string literal, written once rather than per request.
    model_json: String,
    /// Give up on a request once it can no longer meet these SLO bounds (see
    /// [`Client::with_slo_deadline`]).
    slo_deadline: Option<SloDeadline>,
}

/// Per-request deadline from SLO bounds: a request asking for `n` tokens is abandoned (as a
/// timeout) after `ttft + tpot·(n − 1) + grace`, the moment it can no longer meet either bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloDeadline {
    /// Time-to-first-token bound, seconds.
    pub ttft_s: f64,
    /// Time-per-output-token bound, seconds.
    pub tpot_s: f64,
    /// Slack on top, seconds.
    pub grace_s: f64,
}

impl SloDeadline {
    /// The deadline of a request for `output_tokens` tokens.
    pub fn for_output(&self, output_tokens: usize) -> Duration {
        let s = self.ttft_s + self.tpot_s * output_tokens.saturating_sub(1) as f64 + self.grace_s;
        Duration::from_secs_f64(s.max(0.001))
    }
}

/// A client that cannot be built (TLS backend, resolver).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl Client {
    /// A client for `target` whose pool keeps up to `pool_size` idle connections (at least the
    /// run's concurrency, so no request waits for a connection), with Nagle's algorithm off and
    /// a whole-request `timeout`.
    pub fn new(
        target: TargetSpec,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool_size.max(1))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build()?;
        let url = target.completions_url();
        let model_json = json_string(&target.model);
        Ok(Self { http, url, target, model_json, slo_deadline: None })
    }

    /// Abandons each request once it can no longer meet `deadline`'s bounds (it is recorded
    /// as a timeout): a tuner measuring goodput loses nothing by it, and an overloaded
    /// candidate's run ends in bounded time instead of draining a long queue.
    pub fn with_slo_deadline(mut self, deadline: SloDeadline) -> Self {
        self.slo_deadline = Some(deadline);
        self
    }

    /// Sends `req` (intended at `intended_s` on `clock`) as a streaming completion with
    /// `max_tokens` + `ignore_eos` pinning its output length, and records its timeline. Never
    /// fails: a failure is a record with its [`ErrorKind`].
    pub async fn send(
        &self,
        req: &PlannedRequest,
        intended_s: f64,
        clock: &RunClock,
    ) -> RequestRecord {
        let body = self.request_body(req);
        let mut rec = RequestRecord {
            index: req.index,
            warmup: req.warmup,
            intended_s,
            prompt_tokens: req.prompt.len(),
            max_tokens: req.output_tokens,
            ..RequestRecord::default()
        };
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(deadline) = &self.slo_deadline {
            request = request.timeout(deadline.for_output(req.output_tokens));
        }
        rec.sent_s = clock.now_s();
        let outcome = match request.send().await {
            Ok(response) => read_response(response, &mut rec, clock).await,
            Err(e) => Err(transport_error(&e, false)),
        };
        rec.completed_s = clock.now_s();
        if let Err((kind, detail)) = outcome {
            rec.error = Some(kind);
            rec.error_detail = Some(detail);
        }
        rec
    }

    /// The JSON body for `req` (written by hand: one small string per request).
    fn request_body(&self, req: &PlannedRequest) -> String {
        use std::fmt::Write;
        let mut body = String::with_capacity(128 + req.prompt.len() * 4);
        body.push_str("{\"model\":");
        body.push_str(&self.model_json);
        body.push_str(",\"prompt\":");
        if self.target.token_prompts {
            body.push('[');
            for (i, t) in req.prompt.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                let _ = write!(body, "{t}");
            }
            body.push(']');
        } else {
            body.push_str(&json_string(&req.prompt_text()));
        }
        let _ = write!(
            body,
            ",\"max_tokens\":{},\"min_tokens\":{},\"ignore_eos\":true,\"temperature\":0,\
             \"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}",
            req.output_tokens, req.output_tokens
        );
        body
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

type Failure = (ErrorKind, String);

/// Classifies a transport error; `mid_body` when it happened while reading the body.
fn transport_error(e: &reqwest::Error, mid_body: bool) -> Failure {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if mid_body || e.is_body() || e.is_decode() {
        ErrorKind::Truncated
    } else {
        ErrorKind::Other
    };
    (kind, error_chain(e))
}

/// An error with its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// One streamed chunk of a completion, as much of it as the metrics need.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    completion_tokens: Option<usize>,
}

/// Reads a response into `rec`: status, then the SSE stream, stamping each chunk of bytes as
/// it is read and parsing the events it completes afterwards.
async fn read_response(
    response: reqwest::Response,
    rec: &mut RequestRecord,
    clock: &RunClock,
) -> Result<(), Failure> {
    let status = response.status();
    rec.status = Some(status.as_u16());
    if !status.is_success() {
        let kind = if status.is_client_error() { ErrorKind::Http4xx } else { ErrorKind::Http5xx };
        let body = response.text().await.unwrap_or_default();
        rec.first_byte_s = Some(clock.now_s());
        let mut detail = format!("HTTP {status}: {}", body.trim());
        detail.truncate(500);
        return Err((kind, detail));
    }
    let mut parser = SseParser::new();
    let mut stream = response.bytes_stream();
    let mut done = false;
    let mut failure: Option<Failure> = None;
    while let Some(item) = stream.next().await {
        let bytes = item.map_err(|e| transport_error(&e, true))?;
        let t = clock.now_s();
        if rec.first_byte_s.is_none() {
            rec.first_byte_s = Some(t);
        }
        parser.feed(&bytes, |data| {
            // Anything after `[DONE]` or a malformed event is not looked at.
            if done || failure.is_some() {
                return;
            }
            if data == b"[DONE]" {
                done = true;
                return;
            }
            match serde_json::from_slice::<Chunk>(data) {
                Ok(chunk) => {
                    if let Some(usage) = chunk.usage {
                        rec.usage_prompt_tokens = usage.prompt_tokens.or(rec.usage_prompt_tokens);
                        rec.output_tokens = usage.completion_tokens.or(rec.output_tokens);
                    }
                    if let Some(choice) = chunk.choices.first() {
                        rec.choice_events_s.push(t);
                        let text = choice
                            .text
                            .as_deref()
                            .or_else(|| choice.delta.as_ref().and_then(|d| d.content.as_deref()));
                        if rec.first_content_s.is_none() && text.is_some_and(|s| !s.is_empty()) {
                            rec.first_content_s = Some(t);
                        }
                    }
                }
                Err(e) => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned();
                    failure = Some((ErrorKind::MalformedSse, format!("event {shown:?}: {e}")));
                }
            }
        });
        if let Some(f) = failure {
            return Err(f);
        }
        if done {
            break;
        }
    }
    if !done {
        let what = if parser.has_partial_event() { "mid-event" } else { "between events" };
        return Err((
            ErrorKind::Truncated,
            format!(
                "stream ended {what} without data: [DONE] after {} choice events",
                rec.choice_events_s.len()
            ),
        ));
    }
    if rec.output_tokens.is_none() {
        // No usage chunk: count choice events, one token each (what a client without usage
        // can know); the report's token counts then depend on the server's chunking.
        rec.output_tokens = Some(rec.choice_events_s.len());
    }
    Ok(())
}
