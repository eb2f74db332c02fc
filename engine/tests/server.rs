//! The OpenAI-compatible server over real loopback HTTP, against a scripted backend.
//!
//! `ScriptedBackend` stands in for the engine: every request produces the bytes of [`SCRIPT`]
//! (cycled) as tokens, with EOS where the script says, honouring `max_tokens`, `min_tokens`
//! and `ignore_eos`. A gate (a semaphore, one permit per token) lets a test hold generation
//! so that overload, disconnects and shutdown happen at a known point. Tests wait on the
//! backend's own counters (watch channels), never on sleeps; the only timeout is a guard that
//! turns a hang into a failure.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dyno_engine::api::{
    Backend, EngineMetrics, Event, FinishReason, GenerateRequest, Histogram, SubmitError,
};
use dyno_engine::server::{router, serve};
use dyno_engine::tokenizer;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{Semaphore, oneshot, watch};

/// What the scripted model says, byte by byte (one token per byte; "ö" is two).
const SCRIPT: &[u8] = "Hi, wörld! ".as_bytes();
const MODEL: &str = "scripted";
const CONTEXT: usize = 64;
/// Token ids at or past this are refused by `submit` as `Invalid { field: "prompt" }`.
const VOCAB: u32 = 1000;
const RETRY_AFTER_S: u64 = 2;

/// Turns a hang into a failure; generous, never a performance threshold.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut).await.expect("the test hung")
}

#[derive(Debug, Clone, Copy)]
struct Script {
    /// Output position where the model wants to say EOS.
    eos_at: Option<usize>,
    /// Requests in flight (accepted, not ended) beyond which `submit` answers QueueFull.
    queue_limit: usize,
    /// Start with the gate closed (no token until the test releases some).
    held: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self { eos_at: None, queue_limit: 64, held: false }
    }
}

struct State {
    accepting: bool,
    in_flight: usize,
    requests: Vec<GenerateRequest>,
}

struct Shared {
    script: Script,
    gate: Semaphore,
    state: Mutex<State>,
    prompt_tokens: AtomicU64,
    generated: AtomicU64,
    finished: AtomicU64,
    step_seconds: Mutex<Histogram>,
    /// Calls to `submit`, accepted or not.
    submits: watch::Sender<usize>,
    aborted: watch::Sender<u64>,
    abort_all: watch::Sender<bool>,
    /// `stop_accepting` was called.
    stopped: watch::Sender<bool>,
}

/// A deterministic stand-in for the engine.
#[derive(Clone)]
struct ScriptedBackend(Arc<Shared>);

impl ScriptedBackend {
    fn new(script: Script) -> Self {
        let permits = if script.held { 0 } else { Semaphore::MAX_PERMITS };
        Self(Arc::new(Shared {
            script,
            gate: Semaphore::new(permits),
            state: Mutex::new(State { accepting: true, in_flight: 0, requests: Vec::new() }),
            prompt_tokens: AtomicU64::new(0),
            generated: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            step_seconds: Mutex::new(Histogram::step_time()),
            submits: watch::channel(0).0,
            aborted: watch::channel(0).0,
            abort_all: watch::channel(false).0,
            stopped: watch::channel(false).0,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().expect("state lock")
    }

    /// Lets `n` more tokens through the gate.
    fn release(&self, n: usize) {
        self.0.gate.add_permits(n);
    }

    /// Opens the gate for good.
    fn open(&self) {
        self.release(1 << 40);
    }

    async fn wait_submits(&self, n: usize) {
        let mut rx = self.0.submits.subscribe();
        within(rx.wait_for(|&s| s >= n)).await.expect("backend alive");
    }

    async fn wait_aborted(&self, n: u64) {
        let mut rx = self.0.aborted.subscribe();
        within(rx.wait_for(|&a| a >= n)).await.expect("backend alive");
    }

    async fn wait_stopped(&self) {
        let mut rx = self.0.stopped.subscribe();
        within(rx.wait_for(|&s| s)).await.expect("backend alive");
    }

    fn aborted(&self) -> u64 {
        *self.0.aborted.borrow()
    }

    fn requests(&self) -> Vec<GenerateRequest> {
        self.state().requests.clone()
    }
}

/// Decrements the in-flight count however a generation task ends.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.in_flight -= 1;
        }
    }
}

async fn generate(shared: Arc<Shared>, req: GenerateRequest, tx: UnboundedSender<Event>) {
    let _in_flight = InFlight(shared.clone());
    let mut abort_all = shared.abort_all.subscribe();
    let prompt_tokens = req.prompt.len();
    let abort = |generated: usize, tell: bool| {
        if tell {
            let _ = tx.send(Event::Finished {
                reason: FinishReason::Abort,
                prompt_tokens,
                completion_tokens: generated,
            });
        }
        shared.aborted.send_modify(|a| *a += 1);
    };
    let mut generated = 0;
    let reason = loop {
        if generated == req.max_tokens {
            break FinishReason::Length;
        }
        tokio::select! {
            biased;
            _ = tx.closed() => return abort(generated, false),
            _ = abort_all.wait_for(|&a| a) => return abort(generated, true),
            permit = shared.gate.acquire() => match permit {
                Ok(p) => p.forget(),
                Err(_) => return abort(generated, true),
            },
        }
        let eos = shared.script.eos_at == Some(generated)
            && !req.ignore_eos
            && generated >= req.min_tokens;
        let token = if eos { tokenizer::EOS } else { u32::from(SCRIPT[generated % SCRIPT.len()]) };
        if tx.send(Event::Token(token)).is_err() {
            return abort(generated, false);
        }
        generated += 1;
        shared.generated.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut h) = shared.step_seconds.lock() {
            h.observe(0.002);
        }
        if eos {
            break FinishReason::Stop;
        }
    };
    shared.finished.fetch_add(1, Ordering::SeqCst);
    let _ = tx.send(Event::Finished { reason, prompt_tokens, completion_tokens: generated });
}

impl Backend for ScriptedBackend {
    fn model_name(&self) -> &str {
        MODEL
    }

    fn max_context(&self) -> usize {
        CONTEXT
    }

    fn submit(&self, req: GenerateRequest) -> Result<UnboundedReceiver<Event>, SubmitError> {
        let result = {
            let mut s = self.state();
            if !s.accepting {
                Err(SubmitError::ShuttingDown)
            } else if let Some(&bad) = req.prompt.iter().find(|&&t| t >= VOCAB) {
                Err(SubmitError::Invalid {
                    field: "prompt",
                    reason: format!("token id {bad} is outside the vocabulary of {VOCAB}"),
                })
            } else if s.in_flight >= self.0.script.queue_limit {
                Err(SubmitError::QueueFull {
                    limit: self.0.script.queue_limit,
                    retry_after_s: RETRY_AFTER_S,
                })
            } else {
                s.in_flight += 1;
                s.requests.push(req.clone());
                self.0.prompt_tokens.fetch_add(req.prompt.len() as u64, Ordering::SeqCst);
                let (tx, rx) = unbounded_channel();
                tokio::spawn(generate(self.0.clone(), req, tx));
                Ok(rx)
            }
        };
        self.0.submits.send_modify(|n| *n += 1);
        result
    }

    fn metrics(&self) -> EngineMetrics {
        let running = self.state().in_flight;
        EngineMetrics {
            waiting: 0,
            running,
            kv_blocks_used: running,
            kv_blocks_free: 100 - running,
            preemptions_total: 0,
            prompt_tokens_total: self.0.prompt_tokens.load(Ordering::SeqCst),
            generated_tokens_total: self.0.generated.load(Ordering::SeqCst),
            requests_finished_total: self.0.finished.load(Ordering::SeqCst),
            requests_aborted_total: self.aborted(),
            step_seconds: self.0.step_seconds.lock().expect("histogram lock").clone(),
        }
    }

    fn stop_accepting(&self) {
        self.state().accepting = false;
        self.0.stopped.send_replace(true);
    }

    fn abort_all(&self) {
        self.0.abort_all.send_replace(true);
    }
}

/// A server on a loopback port, run by `serve`.
struct TestServer {
    base: String,
    backend: ScriptedBackend,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(script: Script, grace: Duration) -> Self {
        let backend = ScriptedBackend::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let dyn_backend: Arc<dyn Backend> = Arc::new(backend.clone());
        let signal = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(serve(dyn_backend, listener, signal, grace));
        Self { base, backend, client: reqwest::Client::new(), shutdown: Some(tx), task }
    }

    async fn with(script: Script) -> Self {
        Self::start(script, Duration::from_secs(3600)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        within(self.client.post(self.url(path)).json(body).send()).await.expect("request sent")
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> reqwest::Response {
        let req =
            self.client.post(self.url(path)).header("content-type", "application/json").body(body);
        within(req.send()).await.expect("request sent")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        within(self.client.get(self.url(path)).send()).await.expect("request sent")
    }

    async fn metrics(&self) -> String {
        let resp = self.get("/metrics").await;
        assert_eq!(resp.status(), 200);
        within(resp.text()).await.expect("metrics body")
    }

    /// Fires the shutdown future and waits for `serve` to return.
    async fn shut_down(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within(self.task).await.expect("serve task")
    }
}

/// The `data:` payloads of a complete SSE body, checking the framing of each event.
fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "an SSE body ends with a blank line: {body:?}");
    body.split_terminator("\n\n")
        .map(|event| {
            let data =
                event.strip_prefix("data: ").unwrap_or_else(|| panic!("not data: {event:?}"));
            assert!(!data.contains('\n'), "one data line per event: {event:?}");
            data.to_string()
        })
        .collect()
}

/// The JSON chunks of a stream, checking that it ends with `[DONE]` and only there.
fn sse_json(body: &str) -> Vec<Value> {
    let events = sse_events(body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect()
}

async fn stream_body(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().expect("ascii content type").to_string();
    assert_eq!(ct, "text/event-stream");
    within(resp.text()).await.expect("stream body")
}

async fn json_body(resp: reqwest::Response) -> Value {
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_string());
    assert_eq!(ct.as_deref(), Some("application/json"), "status {}", resp.status());
    within(resp.json()).await.expect("JSON body")
}

/// The text the script produces in `n` tokens (no EOS).
fn script_text(n: usize) -> String {
    tokenizer::decode(&(0..n).map(|i| u32::from(SCRIPT[i % SCRIPT.len()])).collect::<Vec<_>>())
}

fn chat_body(extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"}]});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    body
}

#[tokio::test]
async fn completion_whole() {
    let srv = TestServer::with(Script::default()).await;
    let resp = srv.post("/v1/completions", &json!({"model": MODEL, "prompt": "ab", "max_tokens": 7, "temperature": 0.5, "seed": 42})).await;
    assert_eq!(resp.status(), 200);
    let v = json_body(resp).await;
    let id = v["id"].as_str().expect("id");
    assert!(id.starts_with("cmpl-") && id.len() > 10, "{id}");
    assert!(v["created"].as_u64().expect("created") > 1_600_000_000);
    assert_eq!(
        v,
        json!({"id": id, "object": "text_completion", "created": v["created"], "model": MODEL,
            "choices": [{"index": 0, "text": "Hi, wö", "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}})
    );
    assert_eq!(
        srv.backend.requests(),
        vec![GenerateRequest {
            prompt: tokenizer::encode("ab"),
            max_tokens: 7,
            min_tokens: 0,
            ignore_eos: false,
            temperature: 0.5,
            seed: Some(42),
        }]
    );
    // Token ids are used as given, without BOS.
    let resp = srv.post("/v1/completions", &json!({"model": MODEL, "prompt": [300, 301]})).await;
    let v = json_body(resp).await;
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert_eq!(v["usage"]["completion_tokens"], 16, "default max_tokens is 16");
    assert_eq!(v["choices"][0]["text"], script_text(16));
    assert_eq!(srv.backend.requests()[1].prompt, vec![300, 301]);
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn eos_min_tokens_and_ignore_eos() {
    let srv = TestServer::with(Script { eos_at: Some(3), ..Script::default() }).await;
    let complete = |extra: Value| {
        let mut body = json!({"model": MODEL, "prompt": "x", "max_tokens": 8});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        body
    };
    let v = json_body(srv.post("/v1/completions", &complete(json!({}))).await).await;
    assert_eq!(v["choices"][0]["text"], "Hi,", "EOS decodes to nothing");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 4, "EOS is counted");
    for extra in [json!({"ignore_eos": true}), json!({"min_tokens": 5})] {
        let v = json_body(srv.post("/v1/completions", &complete(extra.clone())).await).await;
        assert_eq!(v["choices"][0]["text"], script_text(8), "{extra}");
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{extra}");
        assert_eq!(v["usage"]["completion_tokens"], 8, "{extra}");
    }
    let reqs = srv.backend.requests();
    assert!(reqs[1].ignore_eos && reqs[1].min_tokens == 0);
    assert!(!reqs[2].ignore_eos && reqs[2].min_tokens == 5);
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn completion_stream_with_usage() {
    let srv = TestServer::with(Script::default()).await;
    let body = json!({"model": MODEL, "prompt": "ab", "max_tokens": 7, "stream": true,
        "stream_options": {"include_usage": true}});
    let raw = stream_body(srv.post("/v1/completions", &body).await).await;
    let chunks = sse_json(&raw);
    // H, i, ",", " ", w, ö (two tokens, one piece), the finish chunk, the usage chunk.
    assert_eq!(chunks.len(), 8, "{raw}");
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(id.starts_with("cmpl-"));
    let mut text = String::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["model"], MODEL);
        assert!(c["created"].is_u64());
        if i < 7 {
            assert_eq!(c["usage"], Value::Null);
            assert!(c.as_object().expect("object").contains_key("usage"), "usage: null present");
            let choices = c["choices"].as_array().expect("choices");
            assert_eq!(choices.len(), 1);
            assert_eq!(choices[0]["index"], 0);
            assert_eq!(choices[0]["logprobs"], Value::Null);
            text.push_str(choices[0]["text"].as_str().expect("text"));
            let finish = if i == 6 { json!("length") } else { Value::Null };
            assert_eq!(choices[0]["finish_reason"], finish, "chunk {i}");
        }
    }
    assert_eq!(chunks[5]["choices"][0]["text"], "ö", "split characters are held back");
    assert_eq!(chunks[6]["choices"][0]["text"], "");
    assert_eq!(text, "Hi, wö");
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(
        chunks[7]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10})
    );
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn completion_stream_without_usage() {
    let srv = TestServer::with(Script { eos_at: Some(2), ..Script::default() }).await;
    let body = json!({"model": MODEL, "prompt": "ab", "stream": true});
    let raw = stream_body(srv.post("/v1/completions", &body).await).await;
    let chunks = sse_json(&raw);
    assert_eq!(chunks.len(), 3, "H, i, then the finish chunk (EOS has no text): {raw}");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{raw}");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn chat_whole() {
    let srv = TestServer::with(Script::default()).await;
    let resp = srv.post("/v1/chat/completions", &chat_body(json!({"max_tokens": 4}))).await;
    assert_eq!(resp.status(), 200);
    let v = json_body(resp).await;
    let id = v["id"].as_str().expect("id");
    assert!(id.starts_with("chatcmpl-"), "{id}");
    let prompt = tokenizer::encode("<|system|>\nBe brief.\n<|user|>\nHello?\n<|assistant|>\n");
    assert_eq!(
        v,
        json!({"id": id, "object": "chat.completion", "created": v["created"], "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi, "},
                "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt.len(), "completion_tokens": 4,
                "total_tokens": prompt.len() + 4}})
    );
    assert_eq!(srv.backend.requests()[0].prompt, prompt);
    // Without a limit, chat may use the rest of the context.
    let v = json_body(srv.post("/v1/chat/completions", &chat_body(json!({}))).await).await;
    assert_eq!(v["usage"]["total_tokens"], CONTEXT);
    let v = json_body(
        srv.post("/v1/chat/completions", &chat_body(json!({"max_completion_tokens": 2}))).await,
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hi");
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let srv = TestServer::with(Script { eos_at: Some(7), ..Script::default() }).await;
    let body = chat_body(json!({"max_tokens": 12, "stream": true,
        "stream_options": {"include_usage": true}}));
    let raw = stream_body(srv.post("/v1/chat/completions", &body).await).await;
    let chunks = sse_json(&raw);
    // role, H, i, ",", " ", w, ö, finish, usage.
    assert_eq!(chunks.len(), 9, "{raw}");
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], MODEL);
    }
    let choice = |i: usize| &chunks[i]["choices"][0];
    assert_eq!(choice(0)["delta"], json!({"role": "assistant", "content": ""}));
    let text: String =
        (1..7).map(|i| choice(i)["delta"]["content"].as_str().expect("content")).collect();
    assert_eq!(text, "Hi, wö");
    for c in &chunks[..7] {
        assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(c["choices"][0]["index"], 0);
        assert_eq!(c["usage"], Value::Null);
        assert!(c.as_object().expect("object").contains_key("usage"));
    }
    assert_eq!(choice(7)["delta"], json!({}));
    assert_eq!(choice(7)["finish_reason"], "stop");
    assert_eq!(chunks[8]["choices"], json!([]));
    assert_eq!(chunks[8]["usage"]["completion_tokens"], 8);
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn models_health_and_metrics() {
    let srv = TestServer::with(Script::default()).await;
    let v = json_body(srv.get("/v1/models").await).await;
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], MODEL);
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "dyno");
    assert!(data[0]["created"].is_u64());

    let resp = srv.get("/health").await;
    assert_eq!(resp.status(), 200);

    srv.post("/v1/completions", &json!({"model": MODEL, "prompt": "ab", "max_tokens": 5})).await;
    let resp = srv.get("/metrics").await;
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = within(resp.text()).await.expect("metrics body");
    for line in [
        "# TYPE dyno_requests_running gauge\ndyno_requests_running 0\n",
        "# TYPE dyno_kv_blocks_free gauge\ndyno_kv_blocks_free 100\n",
        "dyno_prompt_tokens_total 3\n",
        "# TYPE dyno_generated_tokens_total counter\ndyno_generated_tokens_total 5\n",
        "dyno_requests_finished_total 1\n",
        "dyno_requests_aborted_total 0\n",
        "# TYPE dyno_step_seconds histogram\n",
        "dyno_step_seconds_bucket{le=\"0.001\"} 0\n",
        "dyno_step_seconds_bucket{le=\"0.0025\"} 5\n",
        "dyno_step_seconds_bucket{le=\"+Inf\"} 5\n",
        "dyno_step_seconds_count 5\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    srv.shut_down().await.expect("serve returns Ok");
}

/// Checks an error answer: status, OpenAI shape, `param`; returns the body.
async fn expect_error(resp: reqwest::Response, status: u16, param: Option<&str>) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let v = json_body(resp).await;
    let err = v["error"].as_object().unwrap_or_else(|| panic!("no error object: {v}"));
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(err["type"].is_string(), "{v}");
    assert_eq!(err["param"], param.map_or(Value::Null, Value::from), "{v}");
    v
}

#[tokio::test]
async fn bad_requests_get_4xx_json_naming_the_field() {
    let srv = TestServer::with(Script::default()).await;
    let cmpl = "/v1/completions";
    let chat = "/v1/chat/completions";

    let v = expect_error(srv.post_raw(cmpl, "{\"model\": \"scripted\",").await, 400, None).await;
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("not valid JSON") && msg.contains("line 1 column"), "{msg}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    expect_error(srv.post_raw(cmpl, "").await, 400, None).await;
    expect_error(srv.post_raw(chat, "[]").await, 400, None).await;

    let v = expect_error(
        srv.post(cmpl, &json!({"model": "gpt-4", "prompt": "x"})).await,
        404,
        Some("model"),
    )
    .await;
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let long = "x".repeat(CONTEXT);
    let cases: Vec<(&str, Value, &str)> = vec![
        (cmpl, json!({"prompt": "x"}), "model"),
        (cmpl, json!({"model": MODEL, "prompt": long}), "prompt"),
        (cmpl, json!({"model": MODEL, "prompt": ["a", "b"]}), "prompt"),
        (cmpl, json!({"model": MODEL, "prompt": {"text": "a"}}), "prompt"),
        (cmpl, json!({"model": MODEL, "prompt": [1, -2]}), "prompt"),
        (cmpl, json!({"model": MODEL, "prompt": [1, 5000]}), "prompt"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "max_tokens": 0}), "max_tokens"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "max_tokens": 63}), "max_tokens"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "max_tokens": "many"}), "max_tokens"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "min_tokens": 20}), "min_tokens"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "temperature": 3}), "temperature"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "stream": 1}), "stream"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "n": 3}), "n"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "top_p": 0.5}), "top_p"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "stop": "\n"}), "stop"),
        (cmpl, json!({"model": MODEL, "prompt": "x", "tempurature": 1}), "tempurature"),
        (chat, json!({"model": MODEL, "messages": []}), "messages"),
        (
            chat,
            json!({"model": MODEL, "messages": [{"role": "user", "content": 1}]}),
            "messages[0].content",
        ),
        (
            chat,
            json!({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (chat, chat_body(json!({"max_completion_tokens": 1000})), "max_completion_tokens"),
        (chat, chat_body(json!({"seed": "abc"})), "seed"),
    ];
    for (path, body, param) in cases {
        let resp = srv.post(path, &body).await;
        let v = expect_error(resp, 400, Some(param)).await;
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(param) || param == "prompt", "{param}: {msg}");
    }
    let v = expect_error(
        srv.post(cmpl, &json!({"model": MODEL, "prompt": ["a", "b"]})).await,
        400,
        Some("prompt"),
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("one prompt per request"));

    // Unknown routes and wrong methods answer JSON too.
    let v = expect_error(srv.get("/v1/nope").await, 404, None).await;
    assert_eq!(v["error"]["code"], "not_found");
    let resp = srv.get(cmpl).await;
    assert_eq!(resp.headers()["allow"], "POST");
    let v = expect_error(resp, 405, None).await;
    assert_eq!(v["error"]["code"], "method_not_allowed");

    assert!(srv.backend.requests().is_empty(), "nothing invalid reached the backend");
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn overload_is_refused_with_429_and_nothing_is_lost() {
    const LIMIT: usize = 3;
    const N: usize = 10;
    let srv =
        TestServer::with(Script { queue_limit: LIMIT, held: true, ..Script::default() }).await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let client = srv.client.clone();
        let url = srv.url("/v1/completions");
        let stream = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": stream});
            let resp = client.post(url).json(&body).send().await.expect("request sent");
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").map(|v| v.as_bytes().to_vec());
            let body = resp.text().await.expect("body");
            (status, retry_after, body)
        }));
    }
    // Every request has reached the backend; only then does generation go on.
    srv.backend.wait_submits(N).await;
    srv.backend.open();
    let (mut served, mut refused) = (0, 0);
    for t in tasks {
        let (status, retry_after, body) = within(t).await.expect("client task");
        match status {
            200 => {
                served += 1;
                assert!(body.contains("\"finish_reason\":\"length\""), "{body}");
            }
            429 => {
                refused += 1;
                assert_eq!(retry_after.as_deref(), Some(RETRY_AFTER_S.to_string().as_bytes()));
                let v: Value = serde_json::from_str(&body).expect("JSON error");
                assert_eq!(v["error"]["type"], "rate_limit_error");
                assert_eq!(v["error"]["code"], "rate_limit_exceeded");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!((served, refused), (LIMIT, N - LIMIT));
    assert!(srv.metrics().await.contains(&format!("dyno_requests_finished_total {LIMIT}\n")));
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_aborts_the_request() {
    let srv = TestServer::with(Script { held: true, ..Script::default() }).await;
    let body = json!({"model": MODEL, "prompt": "x", "max_tokens": 10, "stream": true});
    let resp = srv.post("/v1/completions", &body).await;
    assert_eq!(resp.status(), 200);
    srv.backend.release(3);
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\n\n").count() < 3 {
        let bytes = within(stream.next()).await.expect("stream open").expect("bytes");
        seen.push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
    }
    let texts: Vec<Value> = sse_events(&seen)
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("JSON")["choices"][0]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("H"), json!("i"), json!(",")]);
    drop(stream);
    srv.backend.wait_aborted(1).await;
    let m = srv.metrics().await;
    assert!(m.contains("dyno_requests_aborted_total 1\n"), "{m}");
    assert!(m.contains("dyno_requests_finished_total 0\n"), "{m}");
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn a_client_leaving_a_whole_request_aborts_it() {
    let srv = TestServer::with(Script { held: true, ..Script::default() }).await;
    let client = srv.client.clone();
    let url = srv.url("/v1/chat/completions");
    let request =
        tokio::spawn(async move { client.post(url).json(&chat_body(json!({}))).send().await });
    srv.backend.wait_submits(1).await;
    request.abort();
    assert!(within(request).await.is_err_and(|e| e.is_cancelled()));
    srv.backend.wait_aborted(1).await;
    assert!(srv.metrics().await.contains("dyno_requests_aborted_total 1\n"));
    srv.shut_down().await.expect("serve returns Ok");
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let srv = TestServer::with(Script { held: true, ..Script::default() }).await;
    let client = srv.client.clone();
    let url = srv.url("/v1/completions");
    let body = json!({"model": MODEL, "prompt": "x", "max_tokens": 4, "stream": true});
    let request = tokio::spawn(async move {
        let resp = client.post(url).json(&body).send().await.expect("request sent");
        stream_body(resp).await
    });
    srv.backend.wait_submits(1).await;
    let backend = srv.backend.clone();
    let base = srv.base.clone();
    let shutdown = tokio::spawn(srv.shut_down());
    // The backend is told to stop taking work before anything is aborted.
    backend.wait_stopped().await;
    backend.open();
    let raw = within(request).await.expect("client task");
    let chunks = sse_json(&raw);
    assert_eq!(
        chunks.last().map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(json!("length"))
    );
    within(shutdown).await.expect("shutdown task").expect("serve returns Ok");
    assert_eq!(backend.aborted(), 0);
    // The listener is gone.
    assert!(reqwest::get(format!("{base}/health")).await.is_err());
}

#[tokio::test]
async fn shutdown_aborts_what_outlives_the_grace_period() {
    let srv = TestServer::start(Script { held: true, ..Script::default() }, Duration::ZERO).await;
    let client = srv.client.clone();
    let url = srv.url("/v1/chat/completions");
    let body = chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let streaming = tokio::spawn(async move {
        let resp = client.post(url).json(&body).send().await.expect("request sent");
        stream_body(resp).await
    });
    let client = srv.client.clone();
    let url = srv.url("/v1/completions");
    let whole = tokio::spawn(async move {
        let body = json!({"model": MODEL, "prompt": "x"});
        let resp = client.post(url).json(&body).send().await.expect("request sent");
        json_body(resp).await
    });
    srv.backend.wait_submits(2).await;
    let backend = srv.backend.clone();
    srv.shut_down().await.expect("serve returns Ok");
    assert_eq!(backend.aborted(), 2);
    let chunks = sse_json(&within(streaming).await.expect("client task"));
    let finish: Vec<Value> =
        chunks.iter().map(|c| c["choices"][0]["finish_reason"].clone()).collect();
    assert!(finish.contains(&json!("abort")), "{chunks:?}");
    assert_eq!(chunks.last().map(|c| c["choices"].clone()), Some(json!([])), "usage chunk last");
    let v = within(whole).await.expect("client task");
    assert_eq!(v["choices"][0]["finish_reason"], "abort");
}

#[tokio::test]
async fn refusals_while_shutting_down_are_503_and_health_follows() {
    // `router` on its own, served by plain axum.
    let backend = ScriptedBackend::new(Script::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let app = router(Arc::new(backend.clone()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let health = || async {
        within(client.get(format!("{base}/health")).send()).await.expect("sent").status()
    };
    assert_eq!(health().await, 200);
    backend.stop_accepting();
    let resp = within(
        client
            .post(format!("{base}/v1/completions"))
            .json(&json!({"model": MODEL, "prompt": "x"}))
            .send(),
    )
    .await
    .expect("sent");
    let v = expect_error(resp, 503, None).await;
    assert_eq!(v["error"]["type"], "service_unavailable_error");
    assert_eq!(health().await, 503);
    server.abort();
}

#[tokio::test]
async fn a_standard_openai_client_reads_every_answer() {
    use async_openai::Client;
    use async_openai::config::OpenAIConfig;
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    use async_openai::types::completions::CreateCompletionRequestArgs;

    let srv = TestServer::with(Script { eos_at: Some(5), ..Script::default() }).await;
    let client =
        Client::with_config(OpenAIConfig::new().with_api_base(srv.url("/v1")).with_api_key("k"));

    let models = within(client.models().list()).await.expect("models");
    assert_eq!(models.data.len(), 1);
    assert_eq!(models.data[0].id, MODEL);

    let req = CreateCompletionRequestArgs::default()
        .model(MODEL)
        .prompt("ab")
        .max_tokens(4u32)
        .build()
        .expect("request");
    let resp = within(client.completions().create(req)).await.expect("completion");
    assert_eq!(resp.choices[0].text, "Hi, ");
    assert_eq!(resp.usage.as_ref().map(|u| u.completion_tokens), Some(4));

    let req = CreateCompletionRequestArgs::default()
        .model(MODEL)
        .prompt("ab")
        .max_tokens(10u32)
        .stream(true)
        .build()
        .expect("request");
    let mut stream = within(client.completions().create_stream(req)).await.expect("stream");
    let mut text = String::new();
    let mut finish = None;
    while let Some(chunk) = within(stream.next()).await {
        let chunk = chunk.expect("chunk parses");
        for c in chunk.choices {
            text.push_str(&c.text);
            finish = finish.or(c.finish_reason);
        }
    }
    assert_eq!(text, "Hi, w");
    assert_eq!(format!("{finish:?}"), "Some(Stop)");

    let messages = vec![
        ChatCompletionRequestUserMessageArgs::default()
            .content("Hello?")
            .build()
            .expect("message")
            .into(),
    ];
    let req = CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .messages(messages.clone())
        .max_completion_tokens(3u32)
        .build()
        .expect("request");
    let resp = within(client.chat().create(req)).await.expect("chat");
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("Hi,"));

    let req = CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .messages(messages)
        .stream(true)
        .build()
        .expect("request");
    let mut stream = within(client.chat().create_stream(req)).await.expect("stream");
    let mut text = String::new();
    let mut roles = 0;
    while let Some(chunk) = within(stream.next()).await {
        let chunk = chunk.expect("chunk parses");
        for c in chunk.choices {
            roles += usize::from(c.delta.role.is_some());
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
        }
    }
    assert_eq!((text.as_str(), roles), ("Hi, w", 1));

    // Errors come back as OpenAI API errors with their fields.
    let req = CreateCompletionRequestArgs::default()
        .model("gpt-4")
        .prompt("ab")
        .build()
        .expect("request");
    match within(client.completions().create(req)).await {
        Err(async_openai::error::OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code, 404);
            assert_eq!(e.api_error.code.as_deref(), Some("model_not_found"));
            assert_eq!(e.api_error.param.as_deref(), Some("model"));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    srv.shut_down().await.expect("serve returns Ok");
}
