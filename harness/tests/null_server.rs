//! The null server over real loopback HTTP: wire format, prompt counting, every fault kind,
//! the stall window, counters and shutdown. Nothing here asserts speed; the only timing
//! checks are lower bounds the server guarantees (nothing is sent before it is due).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dyno_harness::null_server::{
    Fault, FaultKind, NullServer, NullServerConfig, NullServerError, NullServerHandle,
    NullServerStats, Stall,
};
use futures::StreamExt;
use serde_json::{Value, json};

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().tcp_nodelay(true).build().expect("reqwest client")
}

fn start(config: NullServerConfig) -> NullServerHandle {
    NullServer::start(config, any_port()).expect("null server starts")
}

fn with_fault(kind: FaultKind, every: usize) -> NullServerConfig {
    NullServerConfig { fault: Some(Fault { every, kind }), ..NullServerConfig::new(0.0, 0.0) }
}

async fn post(
    client: &reqwest::Client,
    server: &NullServerHandle,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(format!("{}{path}", server.base_url()))
        .json(body)
        .send()
        .await
        .expect("request answered")
}

/// A streamed answer split into SSE events by hand.
struct Sse {
    /// Each event's `data:` payload, `[DONE]` included, in order.
    data: Vec<String>,
    /// When each event's bytes were read.
    at: Vec<Instant>,
    /// The body ended with a transport error.
    error: bool,
}

impl Sse {
    /// Payloads before `[DONE]`, parsed; panics on one that is not JSON.
    fn json(&self) -> Vec<Value> {
        self.data
            .iter()
            .filter(|d| d.as_str() != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{d:?}: {e}")))
            .collect()
    }

    fn done(&self) -> bool {
        self.data.last().is_some_and(|d| d == "[DONE]")
    }
}

async fn read_sse(resp: reqwest::Response) -> Sse {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut sse = Sse { data: Vec::new(), at: Vec::new(), error: false };
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            sse.error = true;
            break;
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8(event).expect("utf-8 event");
            let data = text
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data line: {text:?}"))
                .trim_end_matches('\n');
            sse.data.push(data.to_string());
            sse.at.push(now);
        }
    }
    assert!(buf.is_empty(), "bytes after the last event: {:?}", String::from_utf8_lossy(&buf));
    sse
}

fn stream_body(max_tokens: usize, usage: bool) -> Value {
    json!({"model": "whatever", "prompt": [1, 2, 3], "max_tokens": max_tokens, "stream": true,
        "stream_options": {"include_usage": usage}, "ignore_eos": true, "temperature": 0})
}

#[tokio::test]
async fn completion_stream_has_the_openai_wire_format() {
    let server = start(NullServerConfig::new(0.0, 0.0));
    let c = client();
    let sse = read_sse(post(&c, &server, "/v1/completions", &stream_body(5, true)).await).await;
    assert!(sse.done() && !sse.error);
    let events = sse.json();
    assert_eq!(events.len(), 6, "{:?}", sse.data);
    let id = events[0]["id"].as_str().expect("id").to_string();
    for (i, e) in events[..5].iter().enumerate() {
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["object"], "text_completion");
        assert_eq!(e["model"], "null");
        assert!(e["created"].as_u64().is_some());
        assert_eq!(e["usage"], Value::Null);
        let choices = e["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0]["index"], 0);
        assert!(!choices[0]["text"].as_str().expect("text").is_empty());
        let finish = if i == 4 { json!("length") } else { Value::Null };
        assert_eq!(choices[0]["finish_reason"], finish);
    }
    assert_eq!(events[5]["choices"], json!([]));
    assert_eq!(
        events[5]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
    );
    assert_eq!(
        server.stats(),
        NullServerStats { received: 1, completed: 1, ..NullServerStats::default() }
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn chat_stream_counts_message_bytes_and_defaults_to_16_tokens() {
    let config = NullServerConfig { model: "tiny \"q\"".into(), ..NullServerConfig::new(0.0, 0.0) };
    let server = start(config);
    let c = client();
    let body = json!({"model": "m", "stream": true, "messages": [
        {"role": "system", "content": "ab"},
        {"role": "user", "content": [{"type": "text", "text": "cdé"}]}]});
    let sse = read_sse(post(&c, &server, "/v1/chat/completions", &body).await).await;
    assert!(sse.done());
    let events = sse.json();
    assert_eq!(events.len(), 16);
    assert_eq!(events[0]["choices"][0]["delta"], json!({"role": "assistant", "content": " tok"}));
    for e in &events {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["model"], "tiny \"q\"");
        assert!(e.get("usage").is_none());
        assert!(!e["choices"][0]["delta"]["content"].as_str().expect("content").is_empty());
    }
    assert_eq!(events[15]["choices"][0]["finish_reason"], "length");

    let mut body = body;
    body["stream_options"] = json!({"include_usage": true});
    body["max_completion_tokens"] = json!(2);
    let sse = read_sse(post(&c, &server, "/v1/chat/completions", &body).await).await;
    let events = sse.json();
    assert_eq!(events.len(), 3);
    // "ab" + "cdé" = 2 + 4 UTF-8 bytes.
    assert_eq!(events[2]["usage"]["prompt_tokens"], 6);
    assert_eq!(events[2]["usage"]["completion_tokens"], 2);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn whole_answers_carry_text_and_usage() {
    let server = start(NullServerConfig::new(1.0, 1.0));
    let c = client();
    for (prompt, prompt_tokens) in [(json!("héllo"), 6), (json!([7, 8, 9, 10]), 4)] {
        let resp = post(
            &c,
            &server,
            "/v1/completions",
            &json!({"model": "x", "prompt": prompt, "max_tokens": 3}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], " tok tok tok");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": prompt_tokens, "completion_tokens": 3,
                "total_tokens": prompt_tokens + 3})
        );
    }
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "stream": false}),
    )
    .await;
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], " tok".repeat(16));
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert_eq!(server.stats().completed, 3);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_requests_are_400_in_openai_shape() {
    let server = start(NullServerConfig { max_tokens_limit: 8, ..NullServerConfig::new(0.0, 0.0) });
    let c = client();
    let cases: [(&str, &str, Option<&str>); 6] = [
        ("/v1/completions", r#"{"prompt": "x", "#, None),
        ("/v1/completions", r#"{"prompt": "x", "max_tokens": 9}"#, Some("max_tokens")),
        ("/v1/completions", r#"{"prompt": "x", "max_tokens": 0}"#, Some("max_tokens")),
        ("/v1/completions", r#"{"max_tokens": 2}"#, Some("prompt")),
        ("/v1/chat/completions", r#"{"prompt": "x"}"#, Some("messages")),
        ("/v1/completions", r#"{"prompt": [1, -2]}"#, None),
    ];
    for (path, body, param) in cases {
        let resp = c
            .post(format!("{}{path}", server.base_url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.expect("error json");
        let e = &v["error"];
        assert!(!e["message"].as_str().expect("message").is_empty());
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"], param.map_or(Value::Null, |p| json!(p)), "{body}");
        assert!(e.get("code").is_some());
    }
    assert_eq!(
        server.stats(),
        NullServerStats { received: 6, rejected: 6, ..NullServerStats::default() }
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn status_fault_every_second_request() {
    let server = start(with_fault(FaultKind::Status { code: 503 }, 2));
    let c = client();
    for i in 1..=6 {
        let resp = post(&c, &server, "/v1/completions", &stream_body(2, false)).await;
        if i % 2 == 0 {
            assert_eq!(resp.status(), 503, "request {i}");
            assert_eq!(resp.headers()["retry-after"], "1");
            let v: Value = resp.json().await.expect("error json");
            assert_eq!(v["error"]["code"], "injected_fault");
            assert_eq!(v["error"]["type"], "service_unavailable_error");
            assert!(v["error"]["message"].as_str().is_some());
        } else {
            let sse = read_sse(resp).await;
            assert!(sse.done(), "request {i}");
            assert_eq!(sse.json().len(), 2);
        }
    }
    let s = server.stats();
    assert_eq!((s.received, s.completed, s.faulted, s.in_flight()), (6, 3, 3, 0));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn malformed_sse_fault_sends_a_bad_line_after_the_first_event() {
    let server = start(with_fault(FaultKind::MalformedSse, 1));
    let c = client();
    let sse = read_sse(post(&c, &server, "/v1/completions", &stream_body(4, true)).await).await;
    // 4 tokens, the bad line after the first, the usage event, [DONE].
    assert_eq!(sse.data.len(), 7, "{:?}", sse.data);
    assert_eq!(sse.data[1], "{not json");
    assert!(serde_json::from_str::<Value>(&sse.data[1]).is_err());
    let good: Vec<&String> =
        sse.data.iter().enumerate().filter(|&(i, _)| i != 1).map(|(_, d)| d).collect();
    for d in &good[..good.len() - 1] {
        serde_json::from_str::<Value>(d).expect("other events parse");
    }
    assert!(sse.done());

    let resp = post(&c, &server, "/v1/completions", &json!({"prompt": "x", "max_tokens": 2})).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(server.stats().faulted, 2);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn truncate_fault_ends_after_that_many_events_without_done() {
    let server = start(with_fault(FaultKind::Truncate { after_events: 3 }, 1));
    let c = client();
    let sse = read_sse(post(&c, &server, "/v1/completions", &stream_body(8, true)).await).await;
    assert!(!sse.error);
    assert!(!sse.done());
    assert_eq!(sse.data.len(), 3);
    assert_eq!(sse.json().len(), 3);

    // The whole stream would fit (2 tokens + usage), but [DONE] is still left out.
    let sse = read_sse(post(&c, &server, "/v1/completions", &stream_body(2, true)).await).await;
    assert!(!sse.done());
    assert_eq!(sse.data.len(), 3);
    assert_eq!(sse.json()[2]["choices"], json!([]));

    // Not streamed: half a body, then the connection is aborted.
    let resp = post(&c, &server, "/v1/completions", &json!({"prompt": "x", "max_tokens": 2})).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
    assert_eq!(server.stats().faulted, 3);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn drop_connection_fault_closes_without_an_answer() {
    let server = start(with_fault(FaultKind::DropConnection, 2));
    let c = client();
    for i in 1..=4 {
        let resp = c
            .post(format!("{}/v1/completions", server.base_url()))
            .json(&stream_body(3, false))
            .send()
            .await;
        if i % 2 == 0 {
            let err = resp.expect_err("the connection is dropped");
            assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
        } else {
            let sse = read_sse(resp.expect("answered")).await;
            assert!(sse.done());
        }
    }
    let s = server.stats();
    assert_eq!((s.received, s.completed, s.faulted), (4, 2, 2));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn tokens_are_never_early() {
    let server = start(NullServerConfig::new(30.0, 10.0));
    let c = client();
    let sent = Instant::now();
    let sse = read_sse(post(&c, &server, "/v1/completions", &stream_body(4, false)).await).await;
    assert!(sse.done());
    for (i, at) in sse.at[..4].iter().enumerate() {
        let least = Duration::from_millis(30 + 10 * i as u64);
        assert!(at.duration_since(sent) >= least, "token {i} after {:?}", at.duration_since(sent));
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn stall_holds_everything_until_the_window_ends() {
    let before = Instant::now();
    let config = NullServerConfig {
        stall: Some(Stall { at_s: 0.0, for_s: 0.2 }),
        ..NullServerConfig::new(5.0, 0.0)
    };
    let server = start(config);
    let c = client();
    let health = c.get(format!("{}/health", server.base_url())).send().await.expect("health");
    assert_eq!(health.status(), 200);
    assert!(before.elapsed() >= Duration::from_millis(200));
    let sent = Instant::now();
    let sse = read_sse(post(&c, &server, "/v1/completions", &stream_body(3, false)).await).await;
    assert!(sse.done());
    // After the window the latencies are the configured ones again.
    assert!(sse.at[0].duration_since(sent) >= Duration::from_millis(5));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let server = start(NullServerConfig { model: "nm".into(), ..NullServerConfig::new(0.0, 0.0) });
    let c = client();
    let base = server.base_url();
    let v: Value = c
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "nm");
    let v: Value =
        c.get(format!("{base}/health")).send().await.expect("health").json().await.expect("json");
    assert_eq!(v, json!({"status": "ok"}));
    let resp = c.get(format!("{base}/nope")).send().await.expect("404");
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "not_found");
    let resp = c.get(format!("{base}/v1/completions")).send().await.expect("405");
    assert_eq!(resp.status(), 405);
    assert_eq!(server.stats(), NullServerStats::default(), "only generation requests count");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn many_concurrent_streams_all_complete() {
    let server = start(NullServerConfig::new(2.0, 1.0));
    let c = client();
    let url = format!("{}/v1/chat/completions", server.base_url());
    let body = json!({"messages": [{"role": "user", "content": "x"}], "stream": true,
        "max_tokens": 16, "stream_options": {"include_usage": true}});
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                read_sse(c.post(url).json(&body).send().await.expect("answered")).await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let sse = t.await.expect("task");
        assert!(sse.done());
        let events = sse.json();
        assert_eq!(events.len(), 17);
        assert_eq!(events[16]["usage"]["completion_tokens"], 16);
        ids.insert(events[0]["id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids.len(), 64, "ids are unique");
    let s = server.stats();
    assert_eq!((s.received, s.completed, s.in_flight()), (64, 64, 0));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_lets_streams_in_flight_finish_then_refuses_connections() {
    let server = start(NullServerConfig::new(0.0, 20.0));
    let addr = server.local_addr();
    let c = client();
    let resp = post(&c, &server, "/v1/completions", &stream_body(10, false)).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("bytes");
    assert!(first.starts_with(b"data: "));
    let stats_before = server.stats();
    assert_eq!(stats_before.in_flight(), 1);
    let shutdown = tokio::spawn(server.shutdown());
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.expect("the stream is not cut"));
    }
    assert!(rest.ends_with(b"data: [DONE]\n\n"));
    shutdown.await.expect("task").expect("clean shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn client_going_away_counts_as_cancelled() {
    let server = start(NullServerConfig::new(0.0, 50.0));
    let c = client();
    let resp = post(&c, &server, "/v1/completions", &stream_body(100, false)).await;
    let mut body = resp.bytes_stream();
    body.next().await.expect("a first chunk").expect("bytes");
    drop(body);
    drop(c);
    // The server notices when it next writes (within one inter-token latency).
    for _ in 0..200 {
        if server.stats().cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = server.stats();
    assert_eq!((s.received, s.completed, s.cancelled), (1, 0, 1));
    server.shutdown().await.expect("clean shutdown");
}

#[test]
fn own_thread_server_serves_and_stops() {
    let server = NullServer::run_on_own_thread(NullServerConfig::new(0.0, 0.0), any_port())
        .expect("starts on its own thread");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    runtime.block_on(async {
        let c = client();
        let sse =
            read_sse(post(&c, &server, "/v1/completions", &stream_body(16, true)).await).await;
        assert!(sse.done());
        assert_eq!(sse.json().len(), 17);
        assert_eq!((server.received(), server.completed()), (1, 1));
        let addr = server.local_addr();
        server.shutdown().await.expect("clean shutdown");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    });
}

#[test]
fn start_needs_a_runtime_and_a_valid_config() {
    assert!(matches!(
        NullServer::start(NullServerConfig::new(0.0, 0.0), any_port()),
        Err(NullServerError::NoRuntime)
    ));
    let bad = NullServerConfig::new(-1.0, 0.0);
    assert!(matches!(
        NullServer::run_on_own_thread(bad, any_port()),
        Err(NullServerError::Config(e)) if e.field == "ttft_ms"
    ));
    let taken =
        NullServer::run_on_own_thread(NullServerConfig::new(0.0, 0.0), any_port()).expect("starts");
    assert!(matches!(
        NullServer::run_on_own_thread(NullServerConfig::new(0.0, 0.0), taken.local_addr()),
        Err(NullServerError::Bind { .. })
    ));
}

#[test]
fn config_reads_from_yaml_and_is_validated() {
    let yaml = "ttft_ms: 20\nitl_ms: 5.5\nmodel: m\nmax_tokens_limit: 64\nspin_us: 500\n\
                stall: {at_s: 2, for_s: 0.5}\nfault: {kind: truncate, after_events: 3, every: 2}\n";
    let c: NullServerConfig = serde_yaml::from_str(yaml).expect("parses");
    assert_eq!(
        c,
        NullServerConfig {
            ttft_ms: 20.0,
            itl_ms: 5.5,
            model: "m".into(),
            max_tokens_limit: 64,
            spin_us: 500,
            stall: Some(Stall { at_s: 2.0, for_s: 0.5 }),
            fault: Some(Fault { every: 2, kind: FaultKind::Truncate { after_events: 3 } }),
        }
    );
    c.validate().expect("valid");
    let back: NullServerConfig =
        serde_yaml::from_str(&serde_yaml::to_string(&c).expect("writes")).expect("reads back");
    assert_eq!(back, c);

    let minimal: NullServerConfig = serde_yaml::from_str("ttft_ms: 0\nitl_ms: 0\n").expect("ok");
    assert_eq!(minimal, NullServerConfig::new(0.0, 0.0));
    let f: NullServerConfig =
        serde_yaml::from_str("ttft_ms: 0\nitl_ms: 0\nfault: {kind: drop_connection}\n")
            .expect("ok");
    assert_eq!(f.fault, Some(Fault { every: 1, kind: FaultKind::DropConnection }));

    for (bad, says) in [
        ("ttft_ms: 0\nitl_ms: 0\nbogus: 1\n", "bogus"),
        ("itl_ms: 0\n", "ttft_ms"),
        ("ttft_ms: 0\nitl_ms: 0\nfault: {kind: status}\n", "needs `code`"),
        ("ttft_ms: 0\nitl_ms: 0\nfault: {kind: truncate}\n", "needs `after_events`"),
        ("ttft_ms: 0\nitl_ms: 0\nfault: {kind: malformed_sse, code: 500}\n", "only for"),
        ("ttft_ms: 0\nitl_ms: 0\nfault: {kind: explode}\n", "explode"),
        ("ttft_ms: 0\nitl_ms: 0\nstall: {at_s: 1}\n", "for_s"),
    ] {
        let err = serde_yaml::from_str::<NullServerConfig>(bad).expect_err(bad).to_string();
        assert!(err.contains(says), "{bad:?}: {err}");
    }

    for (config, field) in [
        (NullServerConfig::new(f64::NAN, 0.0), "ttft_ms"),
        (NullServerConfig::new(0.0, 1e9), "itl_ms"),
        (NullServerConfig { model: String::new(), ..NullServerConfig::new(0.0, 0.0) }, "model"),
        (
            NullServerConfig { max_tokens_limit: 0, ..NullServerConfig::new(0.0, 0.0) },
            "max_tokens_limit",
        ),
        (NullServerConfig { spin_us: 1_000_000, ..NullServerConfig::new(0.0, 0.0) }, "spin_us"),
        (
            NullServerConfig {
                stall: Some(Stall { at_s: 0.0, for_s: 0.0 }),
                ..NullServerConfig::new(0.0, 0.0)
            },
            "stall.for_s",
        ),
        (
            NullServerConfig {
                stall: Some(Stall { at_s: -1.0, for_s: 1.0 }),
                ..NullServerConfig::new(0.0, 0.0)
            },
            "stall.at_s",
        ),
        (with_fault(FaultKind::MalformedSse, 0), "fault.every"),
        (with_fault(FaultKind::Status { code: 200 }, 1), "fault.code"),
    ] {
        let err = config.validate().expect_err(field);
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(field));
    }
}

/// Not a check: prints how many streamed requests (16 tokens, no delays) per second the
/// null server on its own thread answers to a 4-thread reqwest client. Run with
/// `cargo test --release -p dyno-harness --test null_server -- --ignored --nocapture`.
#[test]
#[ignore = "measures throughput; run by hand"]
fn own_thread_throughput() {
    let server =
        NullServer::run_on_own_thread(NullServerConfig::new(0.0, 0.0), any_port()).expect("starts");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("client runtime");
    let url = format!("{}/v1/completions", server.base_url());
    let (requests, elapsed) = runtime.block_on(async {
        let c = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()
            .expect("client");
        let start = Instant::now();
        let until = start + Duration::from_secs(3);
        let workers: Vec<_> = (0..128)
            .map(|_| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        let resp =
                            c.post(&url).json(&stream_body(16, true)).send().await.expect("sent");
                        let mut body = resp.bytes_stream();
                        while let Some(chunk) = body.next().await {
                            chunk.expect("bytes");
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w.await.expect("worker");
        }
        (total, start.elapsed())
    });
    let stats = server.stats();
    println!(
        "{requests} streamed requests in {elapsed:?}: {:.0}/s; server stats {stats:?}",
        requests as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(stats.completed, requests);
}

/// Not a check: prints how late (client-side, loopback) tokens arrive against their due time
/// with and without `spin_us`. Run like [`own_thread_throughput`].
#[test]
#[ignore = "measures timing; run by hand"]
fn own_thread_timing_precision() {
    for spin_us in [0, 1000] {
        let config = NullServerConfig { spin_us, ..NullServerConfig::new(20.0, 5.0) };
        let server = NullServer::run_on_own_thread(config, any_port()).expect("starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let mut late_ms: Vec<f64> = Vec::new();
        runtime.block_on(async {
            let c = client();
            for _ in 0..50 {
                let sent = Instant::now();
                let sse =
                    read_sse(post(&c, &server, "/v1/completions", &stream_body(16, false)).await)
                        .await;
                for (i, at) in sse.at[..16].iter().enumerate() {
                    let due = Duration::from_micros(20_000 + 5_000 * i as u64);
                    late_ms.push((at.duration_since(sent).as_secs_f64() - due.as_secs_f64()) * 1e3);
                }
            }
        });
        late_ms.sort_by(f64::total_cmp);
        let mean = late_ms.iter().sum::<f64>() / late_ms.len() as f64;
        println!(
            "spin_us {spin_us}: lateness mean {mean:.3} ms, p50 {:.3}, p99 {:.3}, max {:.3}",
            late_ms[late_ms.len() / 2],
            late_ms[late_ms.len() * 99 / 100],
            late_ms[late_ms.len() - 1]
        );
    }
}
