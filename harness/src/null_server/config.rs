//! The null server's configuration: latencies, limits, a stall window and an injected fault.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most `ttft_ms` or `itl_ms` may be (10 minutes): keeps every due time far from overflow.
const MAX_LATENCY_MS: f64 = 600_000.0;
/// The most `max_tokens_limit` may be.
const MAX_TOKENS_LIMIT: usize = 1_000_000;
/// The most `stall.at_s` or `stall.for_s` may be (about 11.5 days).
const MAX_STALL_S: f64 = 1_000_000.0;
/// The most `spin_us` may be (10 ms).
const MAX_SPIN_US: u64 = 10_000;

/// How the null server answers: when tokens come, how many may be asked for, and what goes
/// wrong on purpose.
///
/// In YAML:
///
/// ```yaml
/// ttft_ms: 20          # request body received -> first token event
/// itl_ms: 5            # between token events
/// model: null          # optional, default "null"
/// max_tokens_limit: 4096   # optional; a larger max_tokens is a 400
/// spin_us: 0           # optional; see the field
/// stall: {at_s: 2.0, for_s: 0.5}               # optional
/// fault: {kind: truncate, after_events: 3, every: 2}   # optional
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullServerConfig {
    /// Milliseconds from the moment a request's body has been received to its first token
    /// event.
    pub ttft_ms: f64,
    /// Milliseconds between consecutive token events.
    pub itl_ms: f64,
    /// The model name reported in responses and by `/v1/models` (requests may name any model).
    #[serde(default = "default_model")]
    pub model: String,
    /// The largest `max_tokens` a request may ask for; more is a 400.
    #[serde(default = "default_max_tokens_limit")]
    pub max_tokens_limit: usize,
    /// Microseconds before each due time that are busy-waited (the task re-polls itself)
    /// instead of slept on tokio's timer. That timer rounds deadlines up to whole milliseconds
    /// and its wait is rounded up again by `epoll_wait`, so with 0 (the default) events leave
    /// 0 to 2 ms after their due time. 1000 brings that to microseconds at the cost of CPU on
    /// the server's thread for the last millisecond before every event: use it with
    /// [`NullServer::run_on_own_thread`](super::NullServer::run_on_own_thread) when checking
    /// measured latencies, never on the load generator's own runtime.
    #[serde(default)]
    pub spin_us: u64,
    /// A window in which the server sends nothing at all.
    #[serde(default)]
    pub stall: Option<Stall>,
    /// A fault injected into every n-th request.
    #[serde(default)]
    pub fault: Option<Fault>,
}

fn default_model() -> String {
    "null".to_string()
}

fn default_max_tokens_limit() -> usize {
    4096
}

/// A window, `at_s` seconds after the server started and `for_s` seconds long, during which
/// the server writes no bytes at all.
///
/// - An event of a stream already under way that falls due inside the window is held until
///   the window ends (so several may go out together then); events due after it keep their
///   schedule.
/// - A request whose body arrives inside the window is treated as arriving when the window
///   ends: its response headers go out then and its first token at the end + `ttft_ms`.
/// - Other answers (errors, injected status faults, `/health`, `/v1/models`) due inside the
///   window are held until it ends.
///
/// It happens once per server.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stall {
    /// Seconds after the server started at which the stall begins.
    pub at_s: f64,
    /// How long the stall lasts, in seconds.
    pub for_s: f64,
}

/// A fault applied to every `every`-th valid generation request, counted in arrival order
/// from 1 (`every: 1` faults all of them, `every: 2` the 2nd, 4th, ...). Requests refused
/// as invalid (400) do not count.
///
/// In YAML the kind and its parameter sit next to `every`:
/// `{kind: status, code: 503, every: 1}`, `{kind: malformed_sse}`,
/// `{kind: truncate, after_events: 3}`, `{kind: drop_connection, every: 4}`.
/// `every` defaults to 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFault", into = "RawFault")]
pub struct Fault {
    /// Apply to every n-th request (1 = all).
    pub every: usize,
    /// What goes wrong.
    pub kind: FaultKind,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer at once with this HTTP status and an OpenAI-shaped error body
    /// (`code: "injected_fault"`; 429 and 503 also carry `Retry-After: 1`).
    Status {
        /// The HTTP status, 400 to 599.
        code: u16,
    },
    /// Streaming: right after the first event, a line that is neither valid SSE data JSON
    /// (`data: {not json`); the stream then goes on normally to `data: [DONE]`.
    /// Non-streaming: a 200 whose body is `{not json`.
    MalformedSse,
    /// Streaming: the response ends cleanly (HTTP-wise) after this many events (token events
    /// and the usage chunk count; the malformed line and `[DONE]` do not), without
    /// `data: [DONE]` — even when the whole stream would fit.
    /// Non-streaming: a 200 whose body stops halfway through the JSON, and then the
    /// connection is aborted (no end of the chunked body).
    Truncate {
        /// Events sent before the stream ends.
        after_events: usize,
    },
    /// Close the connection without writing any response byte (the request was read whole).
    DropConnection,
}

/// The flat YAML/JSON shape of a [`Fault`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: RawKind,
    #[serde(default = "one")]
    every: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_events: Option<usize>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    Status,
    MalformedSse,
    Truncate,
    DropConnection,
}

impl TryFrom<RawFault> for Fault {
    type Error = String;

    fn try_from(raw: RawFault) -> Result<Self, String> {
        let kind = match (raw.kind, raw.code, raw.after_events) {
            (RawKind::Status, Some(code), None) => FaultKind::Status { code },
            (RawKind::Status, None, _) => return Err("fault kind `status` needs `code`".into()),
            (RawKind::Truncate, None, Some(after_events)) => FaultKind::Truncate { after_events },
            (RawKind::Truncate, _, None) => {
                return Err("fault kind `truncate` needs `after_events`".into());
            }
            (RawKind::MalformedSse, None, None) => FaultKind::MalformedSse,
            (RawKind::DropConnection, None, None) => FaultKind::DropConnection,
            (_, Some(_), _) => return Err("`code` is only for fault kind `status`".into()),
            (_, _, Some(_)) => {
                return Err("`after_events` is only for fault kind `truncate`".into());
            }
        };
        Ok(Fault { every: raw.every, kind })
    }
}

impl From<Fault> for RawFault {
    fn from(f: Fault) -> Self {
        let (kind, code, after_events) = match f.kind {
            FaultKind::Status { code } => (RawKind::Status, Some(code), None),
            FaultKind::MalformedSse => (RawKind::MalformedSse, None, None),
            FaultKind::Truncate { after_events } => (RawKind::Truncate, None, Some(after_events)),
            FaultKind::DropConnection => (RawKind::DropConnection, None, None),
        };
        RawFault { kind, every: f.every, code, after_events }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("null server config: `{field}` {reason}")]
pub struct ConfigError {
    /// The field at fault, as written in YAML (`stall.for_s`, `fault.code`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn check_ms(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            reason: format!("must be a number of milliseconds from 0 to {MAX_LATENCY_MS}, got {v}"),
        })
    }
}

impl NullServerConfig {
    /// A configuration with these latencies and every other field at its default.
    pub fn new(ttft_ms: f64, itl_ms: f64) -> Self {
        Self {
            ttft_ms,
            itl_ms,
            model: default_model(),
            max_tokens_limit: default_max_tokens_limit(),
            spin_us: 0,
            stall: None,
            fault: None,
        }
    }

    /// Checks every field's range; [`NullServer::start`](super::NullServer::start) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_ms("ttft_ms", self.ttft_ms)?;
        check_ms("itl_ms", self.itl_ms)?;
        if self.model.is_empty() {
            return Err(ConfigError { field: "model", reason: "must not be empty".into() });
        }
        if !(1..=MAX_TOKENS_LIMIT).contains(&self.max_tokens_limit) {
            return Err(ConfigError {
                field: "max_tokens_limit",
                reason: format!(
                    "must be from 1 to {MAX_TOKENS_LIMIT}, got {}",
                    self.max_tokens_limit
                ),
            });
        }
        if self.spin_us > MAX_SPIN_US {
            return Err(ConfigError {
                field: "spin_us",
                reason: format!("must be at most {MAX_SPIN_US}, got {}", self.spin_us),
            });
        }
        if let Some(stall) = &self.stall {
            if !(stall.at_s.is_finite() && (0.0..=MAX_STALL_S).contains(&stall.at_s)) {
                return Err(ConfigError {
                    field: "stall.at_s",
                    reason: format!("must be seconds from 0 to {MAX_STALL_S}, got {}", stall.at_s),
                });
            }
            if !(stall.for_s.is_finite() && stall.for_s > 0.0 && stall.for_s <= MAX_STALL_S) {
                return Err(ConfigError {
                    field: "stall.for_s",
                    reason: format!(
                        "must be seconds above 0 and at most {MAX_STALL_S}, got {}",
                        stall.for_s
                    ),
                });
            }
        }
        if let Some(fault) = &self.fault {
            if fault.every == 0 {
                return Err(ConfigError {
                    field: "fault.every",
                    reason: "must be at least 1 (1 faults every request)".into(),
                });
            }
            if let FaultKind::Status { code } = fault.kind
                && !(400..=599).contains(&code)
            {
                return Err(ConfigError {
                    field: "fault.code",
                    reason: format!("must be an HTTP error status from 400 to 599, got {code}"),
                });
            }
        }
        Ok(())
    }

    /// `ttft_ms` as a duration (rounded to the nanosecond).
    pub(crate) fn ttft(&self) -> Duration {
        Duration::from_nanos((self.ttft_ms * 1e6).round() as u64)
    }

    /// `itl_ms` as a duration (rounded to the nanosecond).
    pub(crate) fn itl(&self) -> Duration {
        Duration::from_nanos((self.itl_ms * 1e6).round() as u64)
    }
}
