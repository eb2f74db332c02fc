//! The OpenAI-compatible HTTP server (axum) over any [`Backend`].
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/completions` | a text completion; `prompt` is text (encoded with BOS) or token ids |
//! | `POST /v1/chat/completions` | a chat completion; messages rendered with the template below |
//! | `GET /v1/models` | the one served model |
//! | `GET /health` | 200 `{"status":"ok"}`; 503 once the server stops taking work |
//! | `GET /metrics` | the engine's metrics, Prometheus text format 0.0.4 |
//!
//! Request fields, defaults and what is refused: see `openai.rs` (module docs). Errors use
//! OpenAI's JSON shape; the status and `type` of each case are listed in `errors.rs`. An
//! unknown model is a 404 with `code: "model_not_found"` and `param: "model"`, as OpenAI
//! answers; every other bad request field is a 400 whose `param` names the field.
//!
//! Chat template: each message as `<|role|>\n{content}\n` (roles `system`, `user`,
//! `assistant`; `developer` renders as `system`), then `<|assistant|>\n`; the whole text is
//! encoded like a completion prompt.
//!
//! Streaming answers are Server-Sent Events, one `data: {json}\n\n` per chunk and a final
//! `data: [DONE]\n\n`. A completion stream sends one chunk per piece of decoded text, then a
//! chunk with empty text and the `finish_reason`. A chat stream opens with a chunk whose delta
//! is `{"role":"assistant","content":""}` when the engine produces its first token, then
//! `{"content":…}` chunks, then an empty delta with the `finish_reason`. With
//! `stream_options.include_usage` every chunk carries `"usage": null` and a last chunk with
//! `"choices": []` carries the usage. `finish_reason` is `stop`, `length`, or `abort` (vLLM's
//! value) when the engine aborted the request (shutdown).
//!
//! Bodies are read whole, up to axum's default limit of 2 MiB (a larger one is a 413).
//!
//! Flow control: the server holds no queue of its own. Each request is handed to
//! [`Backend::submit`] at once, which enforces the engine's queue limit; a full queue is a
//! 429 with `Retry-After`. A client that goes away drops the request's event receiver (the SSE
//! body owns it for a stream, the handler future otherwise), which is how the engine learns to
//! abort the request and free its KV blocks.

mod errors;
mod metrics;
mod openai;
mod thread;

pub use thread::ServerThread;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures::Stream;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{Backend, Event, FinishReason};
use crate::tokenizer::StreamDecoder;
pub use errors::ApiError;
use openai::{Delta, Endpoint, Header, ParsedRequest, Usage};

/// What every handler shares.
struct AppState {
    backend: Arc<dyn Backend>,
    /// False once the server stopped taking work (shutdown began, or the backend said so).
    accepting: AtomicBool,
    /// Unix time the server started, reported as the model's `created`.
    started: u64,
    /// Random per process, so ids differ across restarts.
    id_base: u64,
    next_id: AtomicU64,
}

impl AppState {
    fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            accepting: AtomicBool::new(true),
            started: unix_now(),
            id_base: RandomState::new().hash_one(unix_now()),
            next_id: AtomicU64::new(0),
        }
    }

    fn header(&self, endpoint: Endpoint) -> Header {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Header {
            id: format!("{}{:016x}{n:08x}", endpoint.id_prefix(), self.id_base),
            created: unix_now(),
            model: self.backend.model_name().to_string(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The router over any backend: the routes in the module docs, JSON 404 for unknown routes
/// and JSON 405 (with `Allow`) for a known route asked with the wrong method.
///
/// On its own (without [`serve`]), `/health` turns 503 once the backend has refused a request
/// as shutting down; [`serve`] also turns it when its shutdown begins.
pub fn router(backend: Arc<dyn Backend>) -> Router {
    build(Arc::new(AppState::new(backend)))
}

fn build(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves `backend` on `listener` until `shutdown` resolves. Then it stops accepting
/// connections and work ([`Backend::stop_accepting`]; `/health` turns 503), lets requests in
/// flight finish for up to `grace`, then calls [`Backend::abort_all`] (their streams end with
/// `finish_reason: "abort"`) and waits for every handler to end before returning `Ok`.
///
/// Accepted sockets get `TCP_NODELAY`, so streamed tokens are not held back by Nagle's
/// algorithm.
pub async fn serve(
    backend: Arc<dyn Backend>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let state = Arc::new(AppState::new(backend));
    let app = build(state.clone());
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.accepting.store(false, Ordering::SeqCst);
            state.backend.stop_accepting();
            let _ = began_tx.send(());
        }
    };
    let listener = listener.tap_io(|tcp| {
        // Only latency is at stake if this fails; serving goes on.
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(signal).into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = began_rx => {}
    }
    if let Ok(result) = tokio::time::timeout(grace, &mut server).await {
        return result;
    }
    state.backend.abort_all();
    server.await
}

/// Resolves when the process receives SIGINT or SIGTERM (on Unix; Ctrl-C elsewhere). If the
/// handlers cannot be installed it never resolves, so a server is not stopped by mistake.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(&state, Endpoint::Completions, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(&state, Endpoint::Chat, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// Validates, submits, and answers whole or as a stream.
async fn generate(
    state: &AppState,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::body_rejected(&r))?;
    let backend = &state.backend;
    let ParsedRequest { generate, stream, include_usage } =
        openai::parse_request(endpoint, &body, backend.model_name(), backend.max_context())?;
    let prompt_tokens = generate.prompt.len();
    let events = backend.submit(generate).map_err(|e| {
        if e == crate::api::SubmitError::ShuttingDown {
            state.accepting.store(false, Ordering::SeqCst);
        }
        ApiError::from(e)
    })?;
    let header = state.header(endpoint);
    if stream {
        let chunks = Chunks::new(events, header, endpoint, include_usage, prompt_tokens);
        Ok(Sse::new(chunks.into_stream()).into_response())
    } else {
        // This future owns `events`: if the client goes away, hyper drops the future and with
        // it the receiver, which aborts the request.
        let (text, reason, usage) = collect(events, prompt_tokens).await;
        let body = header.response(endpoint, &text, reason, usage);
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }
}

/// Reads a request's events to the end: the text, why it ended, the usage. A channel closed
/// without `Finished` (the engine dropped the request) counts as an abort.
async fn collect(
    mut events: UnboundedReceiver<Event>,
    prompt_tokens: usize,
) -> (String, FinishReason, Usage) {
    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let mut generated = 0;
    let (reason, usage) = loop {
        match events.recv().await {
            Some(Event::Token(id)) => {
                generated += 1;
                text.push_str(&decoder.push(id));
            }
            Some(Event::Finished { reason, prompt_tokens, completion_tokens }) => {
                break (reason, Usage::new(prompt_tokens, completion_tokens));
            }
            None => break (FinishReason::Abort, Usage::new(prompt_tokens, generated)),
        }
    };
    text.push_str(&decoder.finish());
    (text, reason, usage)
}

/// Turns a request's events into SSE chunks. The stream owns the receiver: when hyper drops
/// the body (the client went away), the receiver goes with it and the engine aborts.
struct Chunks {
    events: UnboundedReceiver<Event>,
    header: Header,
    endpoint: Endpoint,
    include_usage: bool,
    prompt_tokens: usize,
    decoder: StreamDecoder,
    generated: usize,
    /// Chat: the opening `role` chunk went out.
    opened: bool,
    /// Chunks ready to send, in order.
    outbox: VecDeque<String>,
    /// The last chunk (`[DONE]`) is in the outbox.
    finished: bool,
}

impl Chunks {
    fn new(
        events: UnboundedReceiver<Event>,
        header: Header,
        endpoint: Endpoint,
        include_usage: bool,
        prompt_tokens: usize,
    ) -> Self {
        Self {
            events,
            header,
            endpoint,
            include_usage,
            prompt_tokens,
            decoder: StreamDecoder::new(),
            generated: 0,
            opened: false,
            outbox: VecDeque::new(),
            finished: false,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<sse::Event, Infallible>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(data) = s.outbox.pop_front() {
                    return Some((Ok(sse::Event::default().data(data)), s));
                }
                if s.finished {
                    return None;
                }
                match s.events.recv().await {
                    Some(Event::Token(id)) => s.on_token(id),
                    Some(Event::Finished { reason, prompt_tokens, completion_tokens }) => {
                        s.on_finish(reason, Usage::new(prompt_tokens, completion_tokens));
                    }
                    None => {
                        let usage = Usage::new(s.prompt_tokens, s.generated);
                        s.on_finish(FinishReason::Abort, usage);
                    }
                }
            }
        })
    }

    fn open(&mut self) {
        if self.endpoint == Endpoint::Chat && !self.opened {
            self.opened = true;
            let chunk = self.header.chat_chunk(Delta::role(), None, self.include_usage);
            self.outbox.push_back(chunk);
        }
    }

    fn text(&mut self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        let chunk = match self.endpoint {
            Endpoint::Completions => self.header.text_chunk(piece, None, self.include_usage),
            Endpoint::Chat => {
                self.header.chat_chunk(Delta::content(piece), None, self.include_usage)
            }
        };
        self.outbox.push_back(chunk);
    }

    fn on_token(&mut self, id: u32) {
        self.generated += 1;
        self.open();
        let piece = self.decoder.push(id);
        self.text(&piece);
    }

    fn on_finish(&mut self, reason: FinishReason, usage: Usage) {
        self.open();
        let rest = self.decoder.finish();
        let last = match self.endpoint {
            Endpoint::Completions => {
                self.header.text_chunk(&rest, Some(reason), self.include_usage)
            }
            Endpoint::Chat => {
                self.text(&rest);
                self.header.chat_chunk(Delta::default(), Some(reason), self.include_usage)
            }
        };
        self.outbox.push_back(last);
        if self.include_usage {
            self.outbox.push_back(self.header.usage_chunk(self.endpoint, usage));
        }
        self.outbox.push_back("[DONE]".to_string());
        self.finished = true;
        // Nothing more is read; let the engine see the request is over.
        self.events.close();
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": state.backend.model_name(),
            "object": "model",
            "created": state.started,
            "owned_by": "dyno",
        }],
    }))
    .into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.accepting.load(Ordering::SeqCst) {
        axum::Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "shutting_down"})))
            .into_response()
    }
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let body = metrics::render(&state.backend.metrics());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::route_not_found(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_end_with_abort_when_the_engine_drops_the_request() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Event::Token(b'a' as u32)).unwrap();
        drop(tx);
        let header = Header { id: "chatcmpl-1".into(), created: 1, model: "m".into() };
        let mut c = Chunks::new(rx, header, Endpoint::Chat, true, 3);
        while !c.finished {
            match c.events.recv().await {
                Some(Event::Token(id)) => c.on_token(id),
                Some(Event::Finished { .. }) => unreachable!(),
                None => c.on_finish(FinishReason::Abort, Usage::new(3, c.generated)),
            }
        }
        let chunks: Vec<String> = c.outbox.into_iter().collect();
        assert_eq!(chunks.len(), 5, "{chunks:?}");
        assert!(chunks[0].contains(r#""delta":{"role":"assistant","content":""}"#));
        assert!(chunks[1].contains(r#""delta":{"content":"a"}"#));
        assert!(chunks[2].contains(r#""finish_reason":"abort""#));
        assert!(chunks[3].contains(r#""completion_tokens":1"#));
        assert_eq!(chunks[4], "[DONE]");
    }

    #[tokio::test]
    async fn collect_holds_back_split_characters() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for b in "é!".bytes() {
            tx.send(Event::Token(u32::from(b))).unwrap();
        }
        tx.send(Event::Token(crate::tokenizer::EOS)).unwrap();
        tx.send(Event::Finished {
            reason: FinishReason::Stop,
            prompt_tokens: 2,
            completion_tokens: 4,
        })
        .unwrap();
        let (text, reason, usage) = collect(rx, 2).await;
        assert_eq!((text.as_str(), reason, usage), ("é!", FinishReason::Stop, Usage::new(2, 4)));
    }
}
