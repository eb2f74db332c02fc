//! An incremental Server-Sent Events parser, ours rather than a crate's so that the load
//! generator sees each event the moment its last byte is read: the caller stamps the time of
//! every chunk of bytes before handing it over, and the events that chunk completes inherit
//! that time — JSON parsing happens after the stamp, never before.
//!
//! Implements the parts of the WHATWG event-stream format that OpenAI-compatible servers use:
//! lines end in `\n`, `\r\n` or `\r`; a blank line ends an event; `data:` lines (one optional
//! space after the colon) are joined with `\n`; comment lines (`:`) and other fields (`event`,
//! `id`, `retry`) are skipped.

/// Splits a byte stream into the `data` payloads of its events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// `data` of the current event so far.
    data: Vec<u8>,
    /// The current event has at least one `data` line.
    has_data: bool,
    /// The previous byte was `\r` (so a following `\n` belongs to the same line end).
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes`, calling `on_event` with the data of every event they complete.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&[u8])) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(&mut on_event);
                }
                _ => self.line.push(b),
            }
        }
    }

    /// Bytes received after the last complete event (an unterminated event or line): a stream
    /// that ends with some is truncated.
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if self.line.is_empty() {
            if self.has_data {
                on_event(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if let Some(value) = self.line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        // Comments (`:`) and other fields are ignored, as the format prescribes.
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |d| out.push(String::from_utf8_lossy(d).into_owned()));
        }
        out
    }

    #[test]
    fn splits_events_across_any_chunking() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n: keep-alive\n\ndata: [DONE]\n\n";
        let whole = events(&[stream]);
        assert_eq!(whole, vec!["{\"a\":1}", "{\"b\":2}", "[DONE]"]);
        for cut in 0..stream.len() {
            assert_eq!(events(&[&stream[..cut], &stream[cut..]]), whole, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytewise), whole);
    }

    #[test]
    fn handles_crlf_cr_multiline_data_and_other_fields() {
        assert_eq!(
            events(&[b"event: x\r\ndata:one\r\ndata: two\r\nid: 3\r\n\r\ndata: three\r\r"]),
            vec!["one\ntwo", "three"]
        );
    }

    #[test]
    fn reports_partial_events() {
        let mut p = SseParser::new();
        p.feed(b"data: {\"a\":1}\n\ndata: {\"b\"", |_| {});
        assert!(p.has_partial_event());
        let mut p = SseParser::new();
        p.feed(b"data: x\n\n", |_| {});
        assert!(!p.has_partial_event());
    }
}
