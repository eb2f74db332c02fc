//! OpenAI wire format: request validation (field by field, so every error names its field)
//! and the response and stream-chunk bodies.
//!
//! Requests are parsed into a `serde_json::Value` first and then read field by field rather
//! than deserialized into a struct: serde's own messages for a wrong type do not always name
//! the field, and OpenAI clients expect `param` to say which one is at fault.
//!
//! What is accepted beyond the basics:
//! - `null` for any optional field means "not given".
//! - Fields OpenAI or vLLM define whose effect this engine does not implement are accepted
//!   only at their neutral value (`n: 1`, `best_of: 1`, `top_p: 1`, `top_k: -1` or `0`,
//!   `min_p: 0`, `presence_penalty: 0`, `frequency_penalty: 0`, `repetition_penalty: 1`,
//!   `echo: false`, `logprobs: null`/`false`, `top_logprobs: 0`, `stop: []` or `""`,
//!   `logit_bias: {}`, `suffix: ""`); any other value is a 400 naming the field. `user` is
//!   accepted and ignored.
//! - Any other field is a 400 naming it, as OpenAI answers ("Unrecognized request argument").
//! - `prompt` is one prompt: a string, an array of token ids, or a one-element array holding
//!   either. Several prompts in one request are refused.
//! - Completions default to `max_tokens: 16` (OpenAI's default), lowered to what the context
//!   leaves; chat defaults to the whole rest of the context, as vLLM does.

use serde::Serialize;
use serde_json::{Map, Value};

use super::errors::ApiError;
use crate::api::{FinishReason, GenerateRequest};
use crate::tokenizer;

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    Chat,
}

impl Endpoint {
    /// The prefix of response ids.
    pub(crate) fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Completions => "cmpl-",
            Endpoint::Chat => "chatcmpl-",
        }
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedRequest {
    /// What the engine is asked to do.
    pub(crate) generate: GenerateRequest,
    /// Answer as Server-Sent Events.
    pub(crate) stream: bool,
    /// Add a usage chunk at the end of the stream.
    pub(crate) include_usage: bool,
}

/// The chat template: each message as `<|role|>\n{content}\n`, then `<|assistant|>\n` to
/// open the reply. `developer` messages (OpenAI's newer name for system) render as system.
pub(crate) fn render_chat(messages: &[(&'static str, String)]) -> String {
    let mut out = String::new();
    for (role, content) in messages {
        out.push_str("<|");
        out.push_str(role);
        out.push_str("|>\n");
        out.push_str(content);
        out.push('\n');
    }
    out.push_str("<|assistant|>\n");
    out
}

/// Parses and validates a request body for `endpoint`.
pub(crate) fn parse_request(
    endpoint: Endpoint,
    body: &[u8],
    model_name: &str,
    max_context: usize,
) -> Result<ParsedRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid_body(format!(
            "the request body must be a JSON object, got {}",
            type_name(&value)
        )));
    };
    let mut f = Fields { map };

    let model = f.required("model")?;
    let model = model.as_str().ok_or_else(|| wrong_type("model", "a string", &model))?;
    if model != model_name {
        return Err(ApiError::model_not_found(model, model_name));
    }

    let (prompt, default_max_tokens, max_tokens_field) = match endpoint {
        Endpoint::Completions => (parse_prompt(f.required("prompt")?)?, Some(16), "max_tokens"),
        Endpoint::Chat => {
            let messages = parse_messages(f.required("messages")?)?;
            let field =
                if f.has("max_completion_tokens") { "max_completion_tokens" } else { "max_tokens" };
            if field == "max_completion_tokens" {
                // Both given: the newer name wins, the older must agree or be absent.
                if let (Some(a), Some(b)) = (f.peek("max_completion_tokens"), f.peek("max_tokens"))
                    && a != b
                {
                    return Err(ApiError::invalid(
                        "max_tokens",
                        "`max_tokens` and `max_completion_tokens` disagree; give one of them",
                    ));
                }
                f.take("max_tokens");
            }
            (tokenizer::encode(&render_chat(&messages)), None, field)
        }
    };

    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
    }
    if prompt.len() >= max_context {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "the prompt is {} tokens long; this model's context is {max_context} tokens and \
                 at least one must be left for the output",
                prompt.len()
            ),
        ));
    }
    let room = max_context - prompt.len();
    let max_tokens = match f.take(max_tokens_field) {
        Some(v) => {
            let n = f.uint(max_tokens_field, &v)?;
            if n < 1 {
                return Err(ApiError::invalid(
                    max_tokens_field,
                    format!("`{max_tokens_field}` must be at least 1, got {n}"),
                ));
            }
            if n > room as u64 {
                return Err(ApiError::invalid(
                    max_tokens_field,
                    format!(
                        "`{max_tokens_field}` is {n}, but the prompt is {} tokens and this \
                         model's context is {max_context} tokens: at most {room} can be generated",
                        prompt.len()
                    ),
                ));
            }
            n as usize
        }
        None => default_max_tokens.map_or(room, |d: usize| d.min(room)),
    };

    let min_tokens = match f.take("min_tokens") {
        Some(v) => {
            let n = f.uint("min_tokens", &v)?;
            if n > max_tokens as u64 {
                return Err(ApiError::invalid(
                    "min_tokens",
                    format!(
                        "`min_tokens` ({n}) must not exceed `{max_tokens_field}` ({max_tokens})"
                    ),
                ));
            }
            n as usize
        }
        None => 0,
    };

    let temperature = match f.take("temperature") {
        Some(v) => {
            let t = v.as_f64().ok_or_else(|| wrong_type("temperature", "a number", &v))?;
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature",
                    format!("`temperature` must be between 0 and 2, got {t}"),
                ));
            }
            t as f32
        }
        None => 1.0,
    };

    let seed = match f.take("seed") {
        // Negative seeds are accepted (OpenAI's seed is a signed 64-bit integer) and used by
        // their two's-complement bits.
        Some(v) => Some(match (v.as_u64(), v.as_i64()) {
            (Some(u), _) => u,
            (None, Some(i)) => i as u64,
            _ => return Err(wrong_type("seed", "an integer", &v)),
        }),
        None => None,
    };

    let stream = f.take_bool("stream")?.unwrap_or(false);
    let include_usage = match f.take("stream_options") {
        Some(v) => {
            if !stream {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` is only allowed when `stream` is true",
                ));
            }
            let Value::Object(opts) = v else {
                return Err(wrong_type("stream_options", "an object", &v));
            };
            let mut opts = Fields { map: opts };
            let include = opts.take_bool_named("include_usage", "stream_options.include_usage")?;
            if let Some(k) = opts.map.keys().next() {
                return Err(ApiError::invalid(
                    format!("stream_options.{k}"),
                    format!("unsupported stream option `{k}` (only `include_usage` is supported)"),
                ));
            }
            include.unwrap_or(false)
        }
        None => false,
    };
    let ignore_eos = f.take_bool("ignore_eos")?.unwrap_or(false);

    // Accepted at their neutral values only.
    f.neutral_number("n", &[1.0], "only one choice per request is supported")?;
    f.neutral_number("best_of", &[1.0], "only `best_of: 1` is supported")?;
    f.neutral_number("top_p", &[1.0], "nucleus sampling is not supported; use `temperature`")?;
    f.neutral_number("top_k", &[-1.0, 0.0], "top-k sampling is not supported")?;
    f.neutral_number("min_p", &[0.0], "min-p sampling is not supported")?;
    f.neutral_number("presence_penalty", &[0.0], "penalties are not supported")?;
    f.neutral_number("frequency_penalty", &[0.0], "penalties are not supported")?;
    f.neutral_number("repetition_penalty", &[1.0], "penalties are not supported")?;
    f.neutral_bool("echo", "echoing the prompt is not supported")?;
    match endpoint {
        Endpoint::Completions => {
            if let Some(v) = f.take("logprobs") {
                return Err(ApiError::invalid(
                    "logprobs",
                    format!("log probabilities are not supported (got {})", show(&v)),
                ));
            }
            if let Some(v) = f.take("suffix")
                && v.as_str() != Some("")
            {
                return Err(ApiError::invalid(
                    "suffix",
                    format!("`suffix` is not supported (got {})", show(&v)),
                ));
            }
        }
        Endpoint::Chat => {
            f.neutral_bool("logprobs", "log probabilities are not supported")?;
            f.neutral_number("top_logprobs", &[0.0], "log probabilities are not supported")?;
        }
    }
    if let Some(v) = f.take("stop") {
        let empty = match &v {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => return Err(wrong_type("stop", "a string or an array of strings", &v)),
        };
        if !empty {
            return Err(ApiError::invalid(
                "stop",
                format!("stop sequences are not supported (got {})", show(&v)),
            ));
        }
    }
    if let Some(v) = f.take("logit_bias") {
        match &v {
            Value::Object(o) if o.is_empty() => {}
            Value::Object(_) => {
                return Err(ApiError::invalid("logit_bias", "`logit_bias` is not supported"));
            }
            _ => return Err(wrong_type("logit_bias", "an object", &v)),
        }
    }
    if let Some(v) = f.take("user")
        && !v.is_string()
    {
        return Err(wrong_type("user", "a string", &v));
    }

    if let Some(k) = f.map.keys().next() {
        return Err(ApiError::invalid(
            k.clone(),
            format!("Unrecognized request argument supplied: `{k}`"),
        ));
    }

    Ok(ParsedRequest {
        generate: GenerateRequest { prompt, max_tokens, min_tokens, ignore_eos, temperature, seed },
        stream,
        include_usage,
    })
}

/// One prompt: a string (encoded with BOS), an array of token ids (used as they are), or a
/// one-element array holding either.
fn parse_prompt(v: Value) -> Result<Vec<u32>, ApiError> {
    match v {
        Value::String(s) => Ok(tokenizer::encode(&s)),
        Value::Array(items) => {
            if items.iter().all(Value::is_number) {
                return token_ids(&items);
            }
            if items.len() > 1 {
                return Err(ApiError::invalid(
                    "prompt",
                    format!(
                        "only one prompt per request is supported, got an array of {} prompts",
                        items.len()
                    ),
                ));
            }
            match items.into_iter().next() {
                Some(Value::String(s)) => Ok(tokenizer::encode(&s)),
                Some(Value::Array(ids)) => token_ids(&ids),
                Some(other) => Err(ApiError::invalid(
                    "prompt",
                    format!(
                        "`prompt` must be a string or an array of token ids, got an array holding {}",
                        type_name(&other)
                    ),
                )),
                None => Err(ApiError::invalid("prompt", "`prompt` must not be empty")),
            }
        }
        other => Err(wrong_type("prompt", "a string or an array of token ids", &other)),
    }
}

fn token_ids(items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                ApiError::invalid(
                    "prompt",
                    format!(
                        "token ids must be integers from 0 to {}; item {i} is {}",
                        u32::MAX,
                        show(v)
                    ),
                )
            })
        })
        .collect()
}

/// `messages`: a non-empty array of `{role, content[, name]}`, content a string or an array
/// of `{"type":"text","text":…}` parts.
fn parse_messages(v: Value) -> Result<Vec<(&'static str, String)>, ApiError> {
    let Value::Array(items) = v else {
        return Err(wrong_type("messages", "an array of messages", &v));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must not be empty"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |field: &str| format!("messages[{i}].{field}");
            let Value::Object(map) = m else {
                return Err(wrong_type(&format!("messages[{i}]"), "an object", &m));
            };
            let mut f = Fields { map };
            let role = f.take("role").ok_or_else(|| {
                ApiError::invalid(at("role"), format!("`{}` is required", at("role")))
            })?;
            let role = match role.as_str() {
                Some("system" | "developer") => "system",
                Some("user") => "user",
                Some("assistant") => "assistant",
                _ => {
                    return Err(ApiError::invalid(
                        at("role"),
                        format!(
                            "`{}` must be one of system, developer, user, assistant; got {}",
                            at("role"),
                            show(&role)
                        ),
                    ));
                }
            };
            let content = f.take("content").ok_or_else(|| {
                ApiError::invalid(at("content"), format!("`{}` is required", at("content")))
            })?;
            let content = match content {
                Value::String(s) => s,
                Value::Array(parts) => {
                    let mut text = String::new();
                    for (j, part) in parts.iter().enumerate() {
                        match (part.get("type").and_then(Value::as_str), part.get("text")) {
                            (Some("text"), Some(Value::String(t))) => text.push_str(t),
                            _ => {
                                return Err(ApiError::invalid(
                                    at("content"),
                                    format!(
                                        "`{}[{j}]` must be a text part {{\"type\":\"text\",\
                                         \"text\":…}}; only text content is supported",
                                        at("content")
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
                other => return Err(wrong_type(&at("content"), "a string", &other)),
            };
            if let Some(name) = f.take("name")
                && !name.is_string()
            {
                return Err(wrong_type(&at("name"), "a string", &name));
            }
            if let Some(k) = f.map.keys().next() {
                return Err(ApiError::invalid(
                    at(k),
                    format!("unsupported message field `{}`", at(k)),
                ));
            }
            Ok((role, content))
        })
        .collect()
}

/// The request's fields, removed as they are read so that leftovers are the unknown ones.
struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// Removes a field; `null` counts as absent.
    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    fn peek(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn has(&self, name: &str) -> bool {
        self.peek(name).is_some()
    }

    fn required(&mut self, name: &str) -> Result<Value, ApiError> {
        self.take(name).ok_or_else(|| ApiError::invalid(name, format!("`{name}` is required")))
    }

    fn uint(&self, name: &str, v: &Value) -> Result<u64, ApiError> {
        v.as_u64().ok_or_else(|| wrong_type(name, "a non-negative integer", v))
    }

    fn take_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        self.take_bool_named(name, name)
    }

    fn take_bool_named(&mut self, name: &str, param: &str) -> Result<Option<bool>, ApiError> {
        self.take(name)
            .map(|v| v.as_bool().ok_or_else(|| wrong_type(param, "a boolean", &v)))
            .transpose()
    }

    /// A numeric field accepted only at one of its neutral values.
    fn neutral_number(&mut self, name: &str, neutral: &[f64], why: &str) -> Result<(), ApiError> {
        if let Some(v) = self.take(name) {
            let x = v.as_f64().ok_or_else(|| wrong_type(name, "a number", &v))?;
            if !neutral.contains(&x) {
                return Err(ApiError::invalid(name, format!("`{name}`: {why} (got {x})")));
            }
        }
        Ok(())
    }

    /// A boolean field accepted only as `false`.
    fn neutral_bool(&mut self, name: &str, why: &str) -> Result<(), ApiError> {
        if self.take_bool(name)? == Some(true) {
            return Err(ApiError::invalid(name, format!("`{name}`: {why}")));
        }
        Ok(())
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        param,
        format!("`{param}` must be {expected}, got {} {}", type_name(got), show(got)),
    )
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message, shortened.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let head: String = s.chars().take(57).collect();
        format!("{head}...")
    } else {
        s
    }
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
    pub(crate) total_tokens: usize,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// What every response and chunk starts with.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

/// A completion response or chunk.
#[derive(Serialize)]
pub(crate) struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<TextChoice<'a>>,
    /// Absent (`None`), `null` (`Some(None)`) or the usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    index: u32,
    text: &'a str,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A chat completion response.
#[derive(Serialize)]
pub(crate) struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// A chat completion stream chunk.
#[derive(Serialize)]
pub(crate) struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChatChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChatChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// What a chat chunk adds to the message.
#[derive(Serialize, Default)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

impl Delta<'_> {
    /// The first chunk of a reply: the role and empty content.
    pub(crate) fn role() -> Self {
        Self { role: Some("assistant"), content: Some("") }
    }
}

impl<'a> Delta<'a> {
    /// A piece of content.
    pub(crate) fn content(text: &'a str) -> Self {
        Self { role: None, content: Some(text) }
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    // The wire types hold only strings, numbers and options: serializing cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

impl Header {
    /// A whole (non-streamed) response.
    pub(crate) fn response(
        &self,
        endpoint: Endpoint,
        text: &str,
        reason: FinishReason,
        usage: Usage,
    ) -> String {
        match endpoint {
            Endpoint::Completions => to_json(&TextCompletion {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                choices: vec![TextChoice {
                    index: 0,
                    text,
                    logprobs: None,
                    finish_reason: Some(reason.as_str()),
                }],
                usage: Some(Some(usage)),
            }),
            Endpoint::Chat => to_json(&ChatCompletion {
                id: &self.id,
                object: "chat.completion",
                created: self.created,
                model: &self.model,
                choices: [ChatChoice {
                    index: 0,
                    message: ChatMessage { role: "assistant", content: text },
                    logprobs: None,
                    finish_reason: reason.as_str(),
                }],
                usage,
            }),
        }
    }

    /// A completions stream chunk with one choice.
    pub(crate) fn text_chunk(
        &self,
        text: &str,
        finish: Option<FinishReason>,
        include_usage: bool,
    ) -> String {
        to_json(&TextCompletion {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            choices: vec![TextChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: finish.map(FinishReason::as_str),
            }],
            usage: include_usage.then_some(None),
        })
    }

    /// A chat stream chunk with one choice.
    pub(crate) fn chat_chunk(
        &self,
        delta: Delta<'_>,
        finish: Option<FinishReason>,
        include_usage: bool,
    ) -> String {
        to_json(&ChatChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: vec![ChatChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish.map(FinishReason::as_str),
            }],
            usage: include_usage.then_some(None),
        })
    }

    /// The usage chunk that ends a stream when `stream_options.include_usage` is set.
    pub(crate) fn usage_chunk(&self, endpoint: Endpoint, usage: Usage) -> String {
        match endpoint {
            Endpoint::Completions => to_json(&TextCompletion {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                choices: Vec::new(),
                usage: Some(Some(usage)),
            }),
            Endpoint::Chat => to_json(&ChatChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: Vec::new(),
                usage: Some(Some(usage)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(endpoint: Endpoint, body: Value) -> Result<ParsedRequest, ApiError> {
        parse_request(endpoint, body.to_string().as_bytes(), "m", 64)
    }

    fn err_param(endpoint: Endpoint, body: Value) -> (u16, Option<String>) {
        let e = parse(endpoint, body).expect_err("should be refused");
        (e.status.as_u16(), e.param)
    }

    #[test]
    fn completion_defaults() {
        let p = parse(Endpoint::Completions, json!({"model": "m", "prompt": "hi"})).unwrap();
        assert_eq!(p.generate.prompt, vec![tokenizer::BOS, b'h' as u32, b'i' as u32]);
        assert_eq!(p.generate.max_tokens, 16);
        assert_eq!(p.generate.min_tokens, 0);
        assert!(!p.generate.ignore_eos);
        assert_eq!(p.generate.temperature, 1.0);
        assert_eq!(p.generate.seed, None);
        assert!(!p.stream && !p.include_usage);
    }

    #[test]
    fn default_max_tokens_shrinks_to_the_context() {
        let prompt: Vec<u32> = (0..60).collect();
        let p = parse(Endpoint::Completions, json!({"model": "m", "prompt": prompt})).unwrap();
        assert_eq!(p.generate.max_tokens, 4);
        let p = parse(
            Endpoint::Chat,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert_eq!(p.generate.max_tokens, 64 - p.generate.prompt.len());
    }

    #[test]
    fn all_fields() {
        let p = parse(
            Endpoint::Completions,
            json!({"model": "m", "prompt": [5, 6, 7], "max_tokens": 9, "min_tokens": 3,
                "temperature": 0, "seed": -1, "stream": true,
                "stream_options": {"include_usage": true}, "ignore_eos": true, "n": 1,
                "top_p": 1.0, "top_k": -1, "user": "u", "stop": null, "logprobs": null,
                "presence_penalty": 0, "frequency_penalty": 0.0, "repetition_penalty": 1,
                "best_of": 1, "echo": false, "logit_bias": {}, "min_p": 0}),
        )
        .unwrap();
        assert_eq!(
            p.generate,
            GenerateRequest {
                prompt: vec![5, 6, 7],
                max_tokens: 9,
                min_tokens: 3,
                ignore_eos: true,
                temperature: 0.0,
                seed: Some(u64::MAX),
            }
        );
        assert!(p.stream && p.include_usage);
        let p = parse(Endpoint::Completions, json!({"model": "m", "prompt": [[1, 2]]})).unwrap();
        assert_eq!(p.generate.prompt, vec![1, 2]);
        let p = parse(Endpoint::Completions, json!({"model": "m", "prompt": ["a"]})).unwrap();
        assert_eq!(p.generate.prompt, tokenizer::encode("a"));
    }

    #[test]
    fn chat_template_and_max_completion_tokens() {
        let p = parse(
            Endpoint::Chat,
            json!({"model": "m", "max_completion_tokens": 5, "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "u"}], "name": "x"}]}),
        )
        .unwrap();
        assert_eq!(
            tokenizer::decode(&p.generate.prompt),
            "<|system|>\ns\n<|user|>\nu\n<|assistant|>\n"
        );
        assert_eq!(p.generate.max_tokens, 5);
    }

    #[test]
    fn bad_inputs_name_their_field() {
        use Endpoint::*;
        let cases: Vec<(Endpoint, Value, u16, Option<&str>)> = vec![
            (Completions, json!({"prompt": "x"}), 400, Some("model")),
            (Completions, json!({"model": 3, "prompt": "x"}), 400, Some("model")),
            (Completions, json!({"model": "other", "prompt": "x"}), 404, Some("model")),
            (Completions, json!({"model": "m"}), 400, Some("prompt")),
            (Completions, json!({"model": "m", "prompt": 5}), 400, Some("prompt")),
            (Completions, json!({"model": "m", "prompt": ["a", "b"]}), 400, Some("prompt")),
            (Completions, json!({"model": "m", "prompt": [[1], [2]]}), 400, Some("prompt")),
            (Completions, json!({"model": "m", "prompt": [-1]}), 400, Some("prompt")),
            (Completions, json!({"model": "m", "prompt": [1.5]}), 400, Some("prompt")),
            (Completions, json!({"model": "m", "prompt": []}), 400, Some("prompt")),
            (Completions, json!({"model": "m", "prompt": "x".repeat(63)}), 400, Some("prompt")),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "max_tokens": 0}),
                400,
                Some("max_tokens"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "max_tokens": 63}),
                400,
                Some("max_tokens"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "max_tokens": "5"}),
                400,
                Some("max_tokens"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "max_tokens": -5}),
                400,
                Some("max_tokens"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "min_tokens": 17}),
                400,
                Some("min_tokens"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "temperature": 2.5}),
                400,
                Some("temperature"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "temperature": "hot"}),
                400,
                Some("temperature"),
            ),
            (Completions, json!({"model": "m", "prompt": "x", "seed": 1.5}), 400, Some("seed")),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "stream": "yes"}),
                400,
                Some("stream"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}}),
                400,
                Some("stream_options"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "stream": true, "stream_options": {"include_usage": 1}}),
                400,
                Some("stream_options.include_usage"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "stream": true, "stream_options": {"x": 1}}),
                400,
                Some("stream_options.x"),
            ),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "ignore_eos": 1}),
                400,
                Some("ignore_eos"),
            ),
            (Completions, json!({"model": "m", "prompt": "x", "n": 2}), 400, Some("n")),
            (Completions, json!({"model": "m", "prompt": "x", "top_p": 0.9}), 400, Some("top_p")),
            (Completions, json!({"model": "m", "prompt": "x", "stop": ["\n"]}), 400, Some("stop")),
            (
                Completions,
                json!({"model": "m", "prompt": "x", "logprobs": 1}),
                400,
                Some("logprobs"),
            ),
            (Completions, json!({"model": "m", "prompt": "x", "user": 7}), 400, Some("user")),
            (Completions, json!({"model": "m", "prompt": "x", "bogus": 7}), 400, Some("bogus")),
            (Chat, json!({"model": "m"}), 400, Some("messages")),
            (Chat, json!({"model": "m", "messages": []}), 400, Some("messages")),
            (Chat, json!({"model": "m", "messages": "hi"}), 400, Some("messages")),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
                400,
                Some("messages[0].role"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user"}]}),
                400,
                Some("messages[0].content"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
                400,
                Some("messages[0].content"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                400,
                Some("messages[0].content"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
                400,
                Some("messages[0].tool_calls"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}),
                400,
                Some("max_completion_tokens"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000}),
                400,
                Some("max_tokens"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "max_completion_tokens": 4}),
                400,
                Some("max_tokens"),
            ),
            (
                Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true}),
                400,
                Some("logprobs"),
            ),
        ];
        for (endpoint, body, status, param) in cases {
            let got = err_param(endpoint, body.clone());
            assert_eq!(got, (status, param.map(String::from)), "{endpoint:?} {body}");
        }
    }

    #[test]
    fn malformed_json_says_where() {
        let e = parse_request(Endpoint::Completions, b"{\"model\": ", "m", 64).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.message.contains("not valid JSON") && e.message.contains("line 1"), "{e:?}");
        assert_eq!(e.param, None);
        let e = parse_request(Endpoint::Completions, b"[1]", "m", 64).unwrap_err();
        assert!(e.message.contains("JSON object"), "{e:?}");
    }

    #[test]
    fn chunks_have_the_wire_shape() {
        let h = Header { id: "cmpl-1".into(), created: 7, model: "m".into() };
        let v: Value = serde_json::from_str(&h.text_chunk("a", None, true)).unwrap();
        assert_eq!(
            v,
            json!({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
                "choices": [{"index": 0, "text": "a", "logprobs": null, "finish_reason": null}],
                "usage": null})
        );
        let v: Value =
            serde_json::from_str(&h.text_chunk("", Some(FinishReason::Stop), false)).unwrap();
        assert!(v.get("usage").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let v: Value = serde_json::from_str(&h.chat_chunk(Delta::role(), None, false)).unwrap();
        assert_eq!(v["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        let v: Value = serde_json::from_str(&h.chat_chunk(
            Delta::default(),
            Some(FinishReason::Length),
            false,
        ))
        .unwrap();
        assert_eq!(v["choices"][0]["delta"], json!({}));
        let v: Value =
            serde_json::from_str(&h.usage_chunk(Endpoint::Chat, Usage::new(3, 4))).unwrap();
        assert_eq!(v["choices"], json!([]));
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
    }
}
