//! The null server: an OpenAI-compatible HTTP server that produces tokens at a configured
//! TTFT and inter-token latency without any model.
//!
//! It serves two purposes: measuring the load generator's own overhead and the highest rate
//! it sustains (run it with [`NullServer::run_on_own_thread`] so it does not share the load
//! generator's core), and, with injected faults ([`Fault`]), checking that the load generator
//! measures known latencies and counts every failure by kind.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/completions` | `prompt`: a string or an array of token ids |
//! | `POST /v1/chat/completions` | `messages`: `content` a string or an array of text parts |
//! | `GET /v1/models` | the configured model |
//! | `GET /health` | 200 `{"status":"ok"}` |
//!
//! Unknown routes are a JSON 404, a known route with the wrong method a JSON 405.
//!
//! # Requests
//!
//! Read: `prompt` / `messages`, `max_tokens` (chat: `max_completion_tokens` wins if given;
//! default 16; 0 or above [`NullServerConfig::max_tokens_limit`] is a 400 naming the field),
//! `stream`, `stream_options.include_usage`, `ignore_eos` (accepted; the server always
//! generates `max_tokens` tokens). `model` and every other field are ignored. A body that is
//! not JSON, or a field of the wrong type, is a 400 in OpenAI's error shape.
//!
//! `usage.prompt_tokens` is the length of a token-id prompt, or the number of UTF-8 bytes of
//! a text prompt (chat: the bytes of every message's content, summed; no template).
//!
//! # Answers
//!
//! Token `i` (from 0) is due at `arrival + ttft + i·itl`, where `arrival` is when the request
//! body had been read; every due time is computed from the arrival, so nothing drifts. A
//! stream is Server-Sent Events: one `data: {json}\n\n` body chunk per token event, each with
//! one choice whose text (chat: `delta.content`) is `" tok"`; the chat role rides on the first
//! event's delta, and the last token event carries `finish_reason: "length"` (there is no
//! separate empty finishing chunk, so choice-bearing events = tokens = `max_tokens`). With
//! `stream_options.include_usage` every token event has `"usage": null` and a usage event
//! (`choices: []`) follows the last one at once; then `data: [DONE]`. A non-streamed answer
//! is one JSON with the whole text and `usage`, sent when the last token is due.
//!
//! Timing precision: tokio's timer works in whole milliseconds, so with the default
//! `spin_us: 0` events leave 0 to 2 ms after their due time (plus scheduling); set
//! `spin_us: 1000` to busy-wait the last millisecond instead (see
//! [`NullServerConfig::spin_us`]). Measured on a 2-core VM over loopback, from just before
//! the client sends to when it reads each event, for `ttft_ms: 20, itl_ms: 5`: lateness mean
//! 1.9 ms (p99 6.5) with `spin_us: 0`, mean 0.6 ms (p99 1.4) with `spin_us: 1000` (which
//! includes the client's own sending), and about 15,000-18,000 streamed 16-token requests/s
//! from a 4-thread reqwest client. Rerun with `cargo test --release -p dyno-harness --test
//! null_server -- --ignored --nocapture own_thread`.
//!
//! Faults and the stall window are described on [`FaultKind`] and [`Stall`].

mod config;
mod conn;
mod stream;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use config::{ConfigError, Fault, FaultKind, NullServerConfig, Stall};
use conn::{ConnHandle, CuttableListener};
use dyno_engine::server::ApiError;
use stream::{Clock, Counters, CutBody, Events, Outcome, StreamFault, Ticket, TokenStream};
use wire::{Endpoint, Meta, injected_error};

/// Why the null server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NullServerError {
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("null server: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// [`NullServer::start`] was called outside a tokio runtime.
    #[error("null server: NullServer::start must be called inside a tokio runtime")]
    NoRuntime,
    /// The server's own thread or runtime could not be created.
    #[error("null server: cannot start its thread: {0}")]
    Thread(std::io::Error),
    /// Serving failed.
    #[error("null server: {0}")]
    Serve(std::io::Error),
    /// The server's task or thread panicked or was cancelled.
    #[error("null server: its task or thread ended abnormally")]
    Crashed,
}

/// A snapshot of the server's request counters. Every generation request received ends up
/// in exactly one of `completed`, `faulted`, `rejected` and `cancelled`, or is in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NullServerStats {
    /// Generation requests whose body was read.
    pub received: u64,
    /// Answered in full: `data: [DONE]` written to the connection, or a whole JSON answer.
    pub completed: u64,
    /// Given an injected fault.
    pub faulted: u64,
    /// Refused as invalid (400).
    pub rejected: u64,
    /// Dropped before their answer was complete (the client went away).
    pub cancelled: u64,
}

impl NullServerStats {
    /// Requests received and not yet settled.
    pub fn in_flight(&self) -> u64 {
        self.received.saturating_sub(self.completed + self.faulted + self.rejected + self.cancelled)
    }
}

/// What every handler shares.
struct Shared {
    clock: Clock,
    max_tokens_limit: usize,
    fault: Option<Fault>,
    /// The model name as a JSON string (quoted and escaped), written into every chunk.
    model_json: String,
    model: String,
    /// Unix time the server started (`created` of the model).
    started_unix: u64,
    counters: Arc<Counters>,
    /// Valid generation requests so far: the arrival order that faults count in.
    valid: AtomicU64,
    /// Response ids.
    next_id: AtomicU64,
}

impl Shared {
    /// Holds an answer that would go out inside the stall window until the window ends.
    async fn hold(&self) {
        self.clock.wait_until(Instant::now()).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Starts null servers. See the [module docs](self).
pub struct NullServer;

impl NullServer {
    /// Validates `config`, binds `addr` (port 0 picks a free port) and serves on the current
    /// tokio runtime until [`NullServerHandle::shutdown`] (or the handle is dropped). Must be
    /// called inside a tokio runtime. The stall window counts from this call.
    pub fn start(
        config: NullServerConfig,
        addr: SocketAddr,
    ) -> Result<NullServerHandle, NullServerError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| NullServerError::NoRuntime)?;
        let bound = Bound::new(config, addr)?;
        let (local_addr, counters) = (bound.local_addr, bound.shared.counters.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = runtime.spawn(bound.serve(stop_rx));
        Ok(NullServerHandle { local_addr, counters, stop: stop_tx, done: Done::Task(task) })
    }

    /// Like [`start`](Self::start), but on a dedicated OS thread with its own single-threaded
    /// tokio runtime, so the server shares no core with the caller's runtime. Returns once the
    /// address is bound. Needs no runtime; it blocks the caller for as long as binding takes.
    pub fn run_on_own_thread(
        config: NullServerConfig,
        addr: SocketAddr,
    ) -> Result<NullServerHandle, NullServerError> {
        config.validate()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("null-server".into())
            .spawn(move || {
                let runtime =
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(NullServerError::Thread(e)));
                            return;
                        }
                    };
                let result = runtime.block_on(async move {
                    let bound = match Bound::new(config, addr) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let (stop_tx, stop_rx) = oneshot::channel();
                    let ready = (bound.local_addr, bound.shared.counters.clone(), stop_tx);
                    if ready_tx.send(Ok(ready)).is_err() {
                        return Ok(());
                    }
                    bound.serve(stop_rx).await
                });
                drop(runtime);
                let _ = done_tx.send(result);
            })
            .map_err(NullServerError::Thread)?;
        let (local_addr, counters, stop_tx) =
            ready_rx.recv().map_err(|_| NullServerError::Crashed)??;
        Ok(NullServerHandle {
            local_addr,
            counters,
            stop: stop_tx,
            done: Done::Thread { thread, result: done_rx },
        })
    }
}

/// A bound, not yet serving, server.
struct Bound {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Bound {
    /// Must run inside a tokio runtime (registers the socket with it).
    fn new(config: NullServerConfig, addr: SocketAddr) -> Result<Self, NullServerError> {
        config.validate()?;
        let bind_err = |source| NullServerError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let now = Instant::now();
        let stall = config.stall.map(|s| {
            let start = now + Duration::from_secs_f64(s.at_s);
            (start, start + Duration::from_secs_f64(s.for_s))
        });
        let clock = Clock {
            ttft: config.ttft(),
            itl: config.itl(),
            spin: Duration::from_micros(config.spin_us),
            stall,
        };
        // A string always serializes.
        let model_json = serde_json::to_string(&config.model).unwrap_or_else(|_| "\"null\"".into());
        let shared = Arc::new(Shared {
            clock,
            max_tokens_limit: config.max_tokens_limit,
            fault: config.fault,
            model_json,
            model: config.model,
            started_unix: unix_now(),
            counters: Arc::default(),
            valid: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        });
        Ok(Self { listener, local_addr, shared })
    }

    /// Serves until `stop` fires or its sender is dropped, then shuts down gracefully: no new
    /// connections, and every request in flight is answered in full.
    async fn serve(self, stop: oneshot::Receiver<()>) -> std::io::Result<()> {
        let app = router(self.shared).into_make_service_with_connect_info::<ConnHandle>();
        axum::serve(CuttableListener(self.listener), app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await
    }
}

/// How the handle waits for the server to end.
enum Done {
    Task(tokio::task::JoinHandle<std::io::Result<()>>),
    Thread { thread: std::thread::JoinHandle<()>, result: oneshot::Receiver<std::io::Result<()>> },
}

/// A running null server. Dropping it begins a graceful shutdown without waiting for it.
pub struct NullServerHandle {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    stop: oneshot::Sender<()>,
    done: Done,
}

impl std::fmt::Debug for NullServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NullServerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl NullServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://{local_addr}`, the base URL for requests (`{base_url}/v1/completions`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The request counters now.
    pub fn stats(&self) -> NullServerStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
        NullServerStats {
            received: load(&c.received),
            completed: load(&c.completed),
            faulted: load(&c.faulted),
            rejected: load(&c.rejected),
            cancelled: load(&c.cancelled),
        }
    }

    /// Generation requests received so far.
    pub fn received(&self) -> u64 {
        self.counters.received.load(Ordering::SeqCst)
    }

    /// Generation requests answered in full so far.
    pub fn completed(&self) -> u64 {
        self.counters.completed.load(Ordering::SeqCst)
    }

    /// Stops accepting connections, lets every request in flight finish (their streams run
    /// to their end; a client that stops reading holds this up), closes idle connections, and
    /// waits for the server (and its thread, for [`NullServer::run_on_own_thread`]) to end.
    pub async fn shutdown(self) -> Result<(), NullServerError> {
        let NullServerHandle { stop, done, .. } = self;
        let _ = stop.send(());
        let result = match done {
            Done::Task(task) => task.await.map_err(|_| NullServerError::Crashed)?,
            Done::Thread { thread, result } => {
                let r = result.await.map_err(|_| NullServerError::Crashed)?;
                // The thread has sent its result and dropped its runtime: it is ending.
                thread.join().map_err(|_| NullServerError::Crashed)?;
                r
            }
        };
        result.map_err(NullServerError::Serve)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(&shared, &conn, Endpoint::Completions, body).await
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(&shared, &conn, Endpoint::Chat, body).await
}

/// One generation request, from its body to its answer.
async fn generate(
    shared: &Arc<Shared>,
    conn: &ConnHandle,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrival = Instant::now();
    let mut ticket = Ticket::new(shared.counters.clone());
    // Arriving inside the stall window counts as arriving at its end.
    let arrival = shared.clock.release(arrival);
    let parsed = body
        .map_err(|r| ApiError::body_rejected(&r))
        .and_then(|b| wire::parse(endpoint, &b, shared.max_tokens_limit));
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            ticket.settle(Outcome::Rejected);
            shared.clock.wait_until(arrival).await;
            return e.into_response();
        }
    };
    let ordinal = shared.valid.fetch_add(1, Ordering::SeqCst) + 1;
    let fault = shared.fault.filter(|f| ordinal.is_multiple_of(f.every as u64)).map(|f| f.kind);
    if fault.is_some() {
        ticket.settle(Outcome::Faulted);
    }
    match fault {
        Some(FaultKind::DropConnection) => {
            shared.clock.wait_until(arrival).await;
            conn.cut();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(FaultKind::Status { code }) => {
            shared.clock.wait_until(arrival).await;
            return injected_error(code, ordinal).into_response();
        }
        _ => {}
    }

    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = Meta::new(endpoint, id, unix_now(), &shared.model_json, !parsed.stream);
    let n = parsed.max_tokens;
    if !parsed.stream {
        // The whole answer goes out when its last token is due.
        shared.clock.wait_until(shared.clock.token_due(arrival, n - 1)).await;
        let json = meta.whole(parsed.prompt_tokens, n);
        let body = match fault {
            Some(FaultKind::MalformedSse) => Body::from(&b"{not json"[..]),
            Some(FaultKind::Truncate { .. }) => {
                Body::from_stream(CutBody::new(json.slice(..json.len() / 2)))
            }
            _ => {
                ticket.settle(Outcome::Completed);
                Body::from(json)
            }
        };
        return ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
            .into_response();
    }

    let usage_null = parsed.include_usage;
    let events = Events {
        first: meta.token_event(endpoint == Endpoint::Chat, n == 1, usage_null),
        middle: meta.token_event(false, false, usage_null),
        last: meta.token_event(endpoint == Endpoint::Chat && n == 1, true, usage_null),
        usage: parsed.include_usage.then(|| meta.usage_event(parsed.prompt_tokens, n)),
    };
    let stream_fault = match fault {
        Some(FaultKind::MalformedSse) => StreamFault::Malformed,
        Some(FaultKind::Truncate { after_events }) => StreamFault::Truncate(after_events),
        _ => StreamFault::None,
    };
    // Headers of a request that arrived inside the stall window wait for its end.
    shared.clock.wait_until(arrival).await;
    let stream = TokenStream::new(shared.clock, arrival, n, events, stream_fault, ticket);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    shared.hold().await;
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": shared.model,
            "object": "model",
            "created": shared.started_unix,
            "owned_by": "dyno-null-server",
        }],
    }))
    .into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    shared.hold().await;
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn route_not_found(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    shared.hold().await;
    ApiError::route_not_found(method.as_str(), uri.path()).into_response()
}

async fn method_not_allowed(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
) -> Response {
    shared.hold().await;
    ApiError::method_not_allowed(method.as_str(), uri.path()).into_response()
}
