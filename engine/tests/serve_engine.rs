//! The server in front of the real engine (mixtral-tiny, random weights) over loopback HTTP:
//! what a client sees matches what the engine computes, a client that leaves frees its KV
//! blocks (seen in `/metrics`), and overload is refused with 429 while everything accepted is
//! served.
//!
//! Generation is held open without sleeps by giving the model a very long context: a request
//! with `ignore_eos` and a huge `max_tokens` runs far longer than any test step, and the test
//! ends it itself by disconnecting. Waiting for the engine to reach a state polls `/metrics`;
//! a generous timeout only turns a hang into a failure.

use dyno_engine::api::Backend;
use dyno_engine::config::{BatchPolicy, EngineConfig};
use dyno_engine::engine::EngineHandle;
use dyno_engine::server::serve;
use dyno_engine::weights::RandomWeights;
use dyno_engine::{ModelConfig, tokenizer};
use futures::StreamExt;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const LONG: usize = 60_000;

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut).await.expect("the test hung")
}

fn long_tiny() -> ModelConfig {
    let tiny = ModelConfig::preset("mixtral-tiny").expect("preset");
    ModelConfig { name: "tiny-long".into(), max_context: 65_536, ..tiny }
}

struct Server {
    base: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: EngineConfig) -> Self {
        let model = long_tiny();
        let handle = EngineHandle::start(&model, &RandomWeights { seed: 1 }, &config)
            .expect("engine starts");
        let backend: Arc<dyn Backend> = Arc::new(handle);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            backend,
            listener,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        Self { base, client: reqwest::Client::new(), shutdown: Some(tx), task }
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        within(self.client.post(format!("{}{path}", self.base)).json(body).send())
            .await
            .expect("request sent")
    }

    /// The value of an unlabelled Prometheus sample.
    async fn metric(&self, name: &str) -> f64 {
        let text = within(async {
            self.client.get(format!("{}/metrics", self.base)).send().await?.text().await
        })
        .await
        .expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
    }

    /// Polls `/metrics` until `name` has `value`.
    async fn wait_metric(&self, name: &str, value: f64) {
        within(async {
            while self.metric(name).await != value {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within(self.task).await.expect("serve task").expect("serve returns Ok");
    }
}

fn config(batch: BatchPolicy, max_waiting: usize) -> EngineConfig {
    EngineConfig {
        threads: 1,
        kv_block_size: 16,
        kv_pool_mib: 48,
        max_waiting,
        batch,
        ..EngineConfig::default()
    }
}

/// Reads a streaming response until `events` SSE events have arrived.
async fn first_events<S, B>(stream: &mut S, events: usize) -> String
where
    S: futures::Stream<Item = reqwest::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut seen = String::new();
    while seen.matches("\n\n").count() < events {
        let bytes = within(stream.next()).await.expect("stream open").expect("bytes");
        seen.push_str(std::str::from_utf8(bytes.as_ref()).expect("UTF-8"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_and_whole_answers_carry_the_engines_greedy_tokens() {
    let srv = Server::start(config(BatchPolicy::default(), 16)).await;
    let body = json!({"model": "tiny-long", "prompt": "Hello", "max_tokens": 12,
        "temperature": 0, "ignore_eos": true});
    let whole: Value = within(srv.post("/v1/completions", &body).await.json()).await.expect("json");
    let text = whole["choices"][0]["text"].as_str().expect("text").to_string();
    assert_eq!(whole["usage"]["prompt_tokens"], 6, "BOS + 5 bytes: {whole}");
    assert_eq!(whole["usage"]["completion_tokens"], 12);
    assert_eq!(whole["choices"][0]["finish_reason"], "length");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = srv.post("/v1/completions", &streamed).await;
    assert_eq!(resp.status(), 200);
    let raw = within(resp.text()).await.expect("body");
    assert!(raw.ends_with("data: [DONE]\n\n"), "{raw}");
    let chunks: Vec<Value> = raw
        .split_terminator("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    let joined: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(joined, text, "the stream spells the same greedy tokens");
    assert_eq!(chunks.last().expect("usage chunk")["usage"]["completion_tokens"], 12);
    // Every generated token of the random model is one printable character.
    assert_eq!(text.chars().count(), 12);
    assert_eq!(tokenizer::encode("Hello").len(), 6);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_kv_blocks() {
    let srv = Server::start(config(BatchPolicy::default(), 16)).await;
    assert_eq!(srv.metric("dyno_kv_blocks_used").await, 0.0);
    let body = json!({"model": "tiny-long", "prompt": "Tell me everything.",
        "max_tokens": LONG, "ignore_eos": true, "stream": true});
    let resp = srv.post("/v1/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    first_events(&mut stream, 3).await;
    assert_eq!(srv.metric("dyno_requests_running").await, 1.0);
    assert!(srv.metric("dyno_kv_blocks_used").await >= 2.0);
    drop(stream);
    srv.wait_metric("dyno_requests_aborted_total", 1.0).await;
    srv.wait_metric("dyno_kv_blocks_used", 0.0).await;
    assert_eq!(srv.metric("dyno_requests_running").await, 0.0);
    assert_eq!(srv.metric("dyno_requests_finished_total").await, 0.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_429_and_every_accepted_request_is_served() {
    const LIMIT: usize = 2;
    const BURST: usize = 5;
    // One sequence at a time: while the long request runs, the others wait.
    let srv = Server::start(config(BatchPolicy::Static { batch_size: 1 }, LIMIT)).await;
    let long = json!({"model": "tiny-long", "prompt": "x", "max_tokens": LONG,
        "ignore_eos": true, "stream": true});
    let resp = srv.post("/v1/completions", &long).await;
    let mut stream = resp.bytes_stream();
    first_events(&mut stream, 1).await;

    let mut tasks = Vec::new();
    for i in 0..BURST {
        let client = srv.client.clone();
        let url = format!("{}/v1/completions", srv.base);
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "tiny-long", "prompt": format!("burst {i}"),
                "max_tokens": 3, "ignore_eos": true});
            let resp = client.post(url).json(&body).send().await.expect("sent");
            let status = resp.status().as_u16();
            let retry = resp.headers().get("retry-after").is_some();
            (status, retry, resp.text().await.expect("body"))
        }));
    }
    srv.wait_metric("dyno_requests_waiting", LIMIT as f64).await;
    // The refusals come back at once; the accepted ones wait behind the long request.
    drop(stream);
    let (mut served, mut refused) = (0, 0);
    for t in tasks {
        let (status, retry, body) = within(t).await.expect("client task");
        match status {
            200 => {
                served += 1;
                assert!(body.contains("\"completion_tokens\":3"), "{body}");
            }
            429 => {
                refused += 1;
                assert!(retry, "429 carries Retry-After");
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert_eq!((served, refused), (LIMIT, BURST - LIMIT));
    srv.wait_metric("dyno_requests_finished_total", LIMIT as f64).await;
    assert_eq!(srv.metric("dyno_requests_aborted_total").await, 1.0);
    assert_eq!(srv.metric("dyno_kv_blocks_used").await, 0.0);
    srv.stop().await;
}
