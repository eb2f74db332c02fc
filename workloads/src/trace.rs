//! Length (and arrival) data read from files: JSON-lines traces and ShareGPT conversations.
//!
//! Data files tolerate extra fields (real traces carry ids, models, ...); only the fields
//! named here are read.

use std::path::Path;

use serde::Deserialize;

use crate::WorkloadError;

/// One request of a trace: when (seconds after the trace's first row, if known) and how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TraceRow {
    pub timestamp_s: Option<f64>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
}

/// Where lengths of a file are clamped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clamp {
    pub min: usize,
    pub max: Option<usize>,
}

impl Clamp {
    fn apply(&self, v: usize) -> usize {
        let v = v.max(self.min).max(1);
        match self.max {
            Some(max) => v.min(max),
            None => v,
        }
    }
}

fn read(path: &Path) -> Result<String, WorkloadError> {
    std::fs::read_to_string(path)
        .map_err(|source| WorkloadError::Io { path: path.to_path_buf(), source })
}

#[derive(Deserialize)]
struct JsonlRow {
    #[serde(default)]
    timestamp: Option<f64>,
    prompt_tokens: usize,
    output_tokens: usize,
}

/// Reads a JSON-lines trace; timestamps become relative to the first row and must not
/// decrease; blank lines are skipped.
pub(crate) fn read_jsonl(path: &Path, clamp: Clamp) -> Result<Vec<TraceRow>, WorkloadError> {
    let text = read(path)?;
    let shown = path.display();
    let mut rows = Vec::new();
    let mut first: Option<f64> = None;
    let mut last = f64::NEG_INFINITY;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let row: JsonlRow = serde_json::from_str(line)
            .map_err(|e| WorkloadError::Invalid(format!("{shown}:{line_no}: {e}")))?;
        let timestamp_s = match row.timestamp {
            Some(t) => {
                if !t.is_finite() {
                    return Err(WorkloadError::Invalid(format!(
                        "{shown}:{line_no}: `timestamp` = {t}: must be finite"
                    )));
                }
                if t < last {
                    return Err(WorkloadError::Invalid(format!(
                        "{shown}:{line_no}: `timestamp` = {t}: earlier than the previous row \
                         ({last}); rows must be in time order"
                    )));
                }
                last = t;
                let t0 = *first.get_or_insert(t);
                Some(t - t0)
            }
            None => None,
        };
        rows.push(TraceRow {
            timestamp_s,
            prompt_tokens: clamp.apply(row.prompt_tokens),
            output_tokens: clamp.apply(row.output_tokens),
        });
    }
    if rows.is_empty() {
        return Err(WorkloadError::Invalid(format!("{shown}: the trace has no rows")));
    }
    Ok(rows)
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

fn is_human(from: &str) -> bool {
    matches!(from, "human" | "user")
}

fn is_model(from: &str) -> bool {
    matches!(from, "gpt" | "chatgpt" | "assistant" | "bard" | "bing")
}

/// Reads a ShareGPT file: for each conversation, the first human turn directly followed by a
/// model turn gives the prompt and output lengths, counted in UTF-8 bytes (the built-in
/// engine's tokenizer is byte-level). Conversations with fewer than 2 turns, or no such pair,
/// are skipped.
pub(crate) fn read_sharegpt(path: &Path, clamp: Clamp) -> Result<Vec<TraceRow>, WorkloadError> {
    let text = read(path)?;
    let shown = path.display();
    let conversations: Vec<Conversation> = serde_json::from_str(&text).map_err(|e| {
        WorkloadError::Invalid(format!(
            "{shown}: not a ShareGPT file (a JSON array of {{\"conversations\": [{{\"from\", \
             \"value\"}}, ...]}}): {e}"
        ))
    })?;
    let rows: Vec<TraceRow> = conversations
        .iter()
        .filter(|c| c.conversations.len() >= 2)
        .filter_map(|c| {
            c.conversations.windows(2).find(|w| is_human(&w[0].from) && is_model(&w[1].from)).map(
                |w| TraceRow {
                    timestamp_s: None,
                    prompt_tokens: clamp.apply(w[0].value.len()),
                    output_tokens: clamp.apply(w[1].value.len()),
                },
            )
        })
        .collect();
    if rows.is_empty() {
        return Err(WorkloadError::Invalid(format!(
            "{shown}: no conversation has a human turn followed by a model turn"
        )));
    }
    Ok(rows)
}
