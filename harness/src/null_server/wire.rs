//! The OpenAI wire format, as far as the null server needs it: reading a request into the few
//! numbers that matter, and writing chunks, whole responses and errors as preformatted bytes.

use std::fmt::{self, Write as _};

use axum::body::Bytes;
use axum::http::StatusCode;
use dyno_engine::server::ApiError;
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

/// The text of every token event.
pub(crate) const TOKEN_TEXT: &str = " tok";
/// The end of every stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";
/// The line a `malformed_sse` fault sends.
pub(crate) const MALFORMED: &[u8] = b"data: {not json\n\n";
/// `max_tokens` when a request gives none.
const DEFAULT_MAX_TOKENS: u64 = 16;

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    Chat,
}

/// What the null server takes from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Prompt size: token ids given, or UTF-8 bytes of text.
    pub(crate) prompt_tokens: usize,
    /// Tokens to generate.
    pub(crate) max_tokens: usize,
    /// Answer as Server-Sent Events.
    pub(crate) stream: bool,
    /// Send a usage chunk before `[DONE]`.
    pub(crate) include_usage: bool,
}

/// The fields read; any other field is ignored (serde skips it without building it).
#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    prompt: Option<Len>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "read only to refuse a non-boolean; every answer is max_tokens long"
    )]
    ignore_eos: Option<bool>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<Len>,
}

/// A prompt or message content measured without keeping it: a string counts its UTF-8 bytes,
/// an array counts token ids (`u32`) or, for content parts, the bytes of their `text`.
struct Len(usize);

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

/// One element of an array: a token id or a content part.
enum Item {
    Token,
    Part(usize),
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token id (an integer from 0 to 2^32-1) or a content part object")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Item, E> {
                u32::try_from(v)
                    .map(|_| Item::Token)
                    .map_err(|_| E::custom(format!("token id {v} is above 2^32-1")))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Item, A::Error> {
                let part = Part::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Item::Part(part.text.map_or(0, |t| t.len())))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Len {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Len;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of token ids")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Len, E> {
                Ok(Len(v.len()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Len, A::Error> {
                let mut n = 0;
                while let Some(item) = seq.next_element::<Item>()? {
                    n += match item {
                        Item::Token => 1,
                        Item::Part(bytes) => bytes,
                    };
                }
                Ok(Len(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a request body. `limit` is the largest `max_tokens` allowed.
pub(crate) fn parse(endpoint: Endpoint, body: &[u8], limit: usize) -> Result<Parsed, ApiError> {
    let raw: RawRequest = serde_json::from_slice(body)
        .map_err(|e| bad_request(None, format!("the request body is not valid JSON: {e}")))?;
    let prompt_tokens = match endpoint {
        Endpoint::Completions => match raw.prompt {
            Some(Len(n)) => n,
            None => return Err(bad_request(Some("prompt"), "`prompt` is required")),
        },
        Endpoint::Chat => match raw.messages {
            Some(m) => m.iter().map(|m| m.content.as_ref().map_or(0, |c| c.0)).sum(),
            None => {
                return Err(bad_request(Some("messages"), "`messages` is required"));
            }
        },
    };
    let (field, max_tokens) = match (endpoint, raw.max_completion_tokens) {
        (Endpoint::Chat, Some(n)) => ("max_completion_tokens", n),
        _ => ("max_tokens", raw.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    };
    if max_tokens < 1 || max_tokens > limit as u64 {
        return Err(bad_request(
            Some(field),
            format!("`{field}` must be from 1 to this server's limit of {limit}, got {max_tokens}"),
        ));
    }
    let stream = raw.stream.unwrap_or(false);
    let include_usage = stream && raw.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    Ok(Parsed { prompt_tokens, max_tokens: max_tokens as usize, stream, include_usage })
}

/// The per-request parts of every chunk: `{"id":…,"object":…,"created":…,"model":…`.
pub(crate) struct Meta {
    endpoint: Endpoint,
    /// The JSON object's opening, up to (not including) `,"choices"`.
    head: String,
}

impl Meta {
    /// `model_json` is the model name already written as a JSON string (quoted, escaped).
    pub(crate) fn new(
        endpoint: Endpoint,
        id: u64,
        created: u64,
        model_json: &str,
        whole: bool,
    ) -> Self {
        let (prefix, object) = match (endpoint, whole) {
            (Endpoint::Completions, _) => ("cmpl", "text_completion"),
            (Endpoint::Chat, false) => ("chatcmpl", "chat.completion.chunk"),
            (Endpoint::Chat, true) => ("chatcmpl", "chat.completion"),
        };
        let mut head = String::with_capacity(96 + model_json.len());
        // Writing to a String cannot fail.
        let _ = write!(
            head,
            r#"{{"id":"{prefix}-null-{id:x}","object":"{object}","created":{created},"model":{model_json}"#
        );
        Self { endpoint, head }
    }

    /// One token event: `data: {…}\n\n` with one choice carrying [`TOKEN_TEXT`]. `role` adds
    /// the chat role to the delta (first chat event); `finish` sets `finish_reason: "length"`
    /// (last event); `usage_null` adds `"usage": null` (streams with `include_usage`).
    pub(crate) fn token_event(&self, role: bool, finish: bool, usage_null: bool) -> Bytes {
        let mut s = String::with_capacity(self.head.len() + 128);
        s.push_str("data: ");
        s.push_str(&self.head);
        s.push_str(r#","choices":[{"index":0,"#);
        match self.endpoint {
            Endpoint::Completions => {
                let _ = write!(s, r#""text":"{TOKEN_TEXT}""#);
            }
            Endpoint::Chat if role => {
                let _ = write!(s, r#""delta":{{"role":"assistant","content":"{TOKEN_TEXT}"}}"#);
            }
            Endpoint::Chat => {
                let _ = write!(s, r#""delta":{{"content":"{TOKEN_TEXT}"}}"#);
            }
        }
        s.push_str(r#","logprobs":null,"finish_reason":"#);
        s.push_str(if finish { r#""length"}]"# } else { "null}]" });
        if usage_null {
            s.push_str(r#","usage":null"#);
        }
        s.push_str("}\n\n");
        Bytes::from(s)
    }

    /// The usage event that ends a stream with `include_usage`: `choices: []` and the counts.
    pub(crate) fn usage_event(&self, prompt_tokens: usize, completion_tokens: usize) -> Bytes {
        let mut s = String::with_capacity(self.head.len() + 128);
        s.push_str("data: ");
        s.push_str(&self.head);
        s.push_str(r#","choices":[],"usage":"#);
        write_usage(&mut s, prompt_tokens, completion_tokens);
        s.push_str("}\n\n");
        Bytes::from(s)
    }

    /// A whole (non-streamed) response body with `completion_tokens` tokens of text.
    pub(crate) fn whole(&self, prompt_tokens: usize, completion_tokens: usize) -> Bytes {
        let mut s =
            String::with_capacity(self.head.len() + 160 + completion_tokens * TOKEN_TEXT.len());
        s.push_str(&self.head);
        s.push_str(r#","choices":[{"index":0,"#);
        match self.endpoint {
            Endpoint::Completions => s.push_str(r#""text":""#),
            Endpoint::Chat => s.push_str(r#""message":{"role":"assistant","content":""#),
        }
        for _ in 0..completion_tokens {
            s.push_str(TOKEN_TEXT);
        }
        s.push('"');
        if self.endpoint == Endpoint::Chat {
            s.push('}');
        }
        s.push_str(r#","logprobs":null,"finish_reason":"length"}],"usage":"#);
        write_usage(&mut s, prompt_tokens, completion_tokens);
        s.push('}');
        Bytes::from(s)
    }
}

fn write_usage(s: &mut String, prompt: usize, completion: usize) {
    let _ = write!(
        s,
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    );
}

/// An injected `status` fault: the status with the `type` OpenAI uses for it,
/// `code: "injected_fault"`, and `Retry-After: 1` on 429 and 503.
pub(crate) fn injected_error(code: u16, request: u64) -> ApiError {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let e =
        ApiError::new(status, kind, format!("injected fault: status {code} (request {request})"))
            .with_code("injected_fault");
    if matches!(status.as_u16(), 429 | 503) { e.with_retry_after(1) } else { e }
}

/// 400 about field `param`, or about the whole request when `None`.
pub(crate) fn bad_request(param: Option<&'static str>, message: impl Into<String>) -> ApiError {
    match param {
        Some(p) => ApiError::invalid(p, message),
        None => ApiError::invalid_body(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn json_of(event: &Bytes) -> Value {
        let s = std::str::from_utf8(event).expect("utf-8");
        let data = s.strip_prefix("data: ").and_then(|s| s.strip_suffix("\n\n")).expect("sse");
        serde_json::from_str(data).expect("json")
    }

    #[test]
    fn chunks_parse_and_have_the_wire_shape() {
        let m = Meta::new(Endpoint::Completions, 10, 7, "\"m\\\"x\"", false);
        assert_eq!(
            json_of(&m.token_event(false, false, true)),
            json!({"id": "cmpl-null-a", "object": "text_completion", "created": 7,
                "model": "m\"x", "choices": [{"index": 0, "text": " tok", "logprobs": null,
                "finish_reason": null}], "usage": null})
        );
        let v = json_of(&m.token_event(false, true, false));
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert!(v.get("usage").is_none());
        let v = json_of(&m.usage_event(3, 4));
        assert_eq!(v["choices"], json!([]));
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );

        let c = Meta::new(Endpoint::Chat, 1, 7, "\"m\"", false);
        let v = json_of(&c.token_event(true, false, false));
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["choices"][0]["delta"], json!({"role": "assistant", "content": " tok"}));
        let v = json_of(&c.token_event(false, true, false));
        assert_eq!(v["choices"][0]["delta"], json!({"content": " tok"}));

        let w: Value =
            serde_json::from_slice(&Meta::new(Endpoint::Chat, 1, 7, "\"m\"", true).whole(2, 3))
                .expect("json");
        assert_eq!(w["object"], "chat.completion");
        assert_eq!(w["choices"][0]["message"]["content"], " tok tok tok");
        assert_eq!(w["usage"]["total_tokens"], 5);
    }

    #[test]
    fn requests_are_measured() {
        let p = parse(Endpoint::Completions, br#"{"prompt":"h\u00e9","x":[1,{}]}"#, 64).unwrap();
        assert_eq!(
            p,
            Parsed { prompt_tokens: 3, max_tokens: 16, stream: false, include_usage: false }
        );
        let p = parse(
            Endpoint::Completions,
            br#"{"prompt":[1,2,3],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#,
            64,
        )
        .unwrap();
        assert_eq!(
            p,
            Parsed { prompt_tokens: 3, max_tokens: 5, stream: true, include_usage: true }
        );
        let p = parse(
            Endpoint::Chat,
            br#"{"messages":[{"role":"user","content":"ab"},{"role":"user","content":[{"type":"text","text":"cde"}]}],"max_completion_tokens":2,"max_tokens":9}"#,
            64,
        )
        .unwrap();
        assert_eq!((p.prompt_tokens, p.max_tokens), (5, 2));
        for bad in [
            &br#"{"prompt":"x","max_tokens":65}"#[..],
            br#"{"prompt":"x","max_tokens":0}"#,
            br#"{"prompt":"x","max_tokens":-1}"#,
            br#"{"prompt":[-1]}"#,
            br#"{"prompt":5}"#,
            br#"{}"#,
            br#"{"prompt":"#,
        ] {
            let e = parse(Endpoint::Completions, bad, 64).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(bad));
        }
    }
}
