//! A byte-level tokenizer: text is its UTF-8 bytes, one token each.
//!
//! Ids `0..256` are the bytes, then the specials [`BOS`] and [`EOS`]. A model's vocabulary is
//! usually larger (32000 for Mixtral); ids past the specials never come from text, but a
//! model with random weights does generate them, so they decode to one printable ASCII
//! character each (`!`..`~`, cycling): every generated token is then exactly one visible
//! character, which keeps client-side token counting honest.
//!
//! Decoding a stream is incremental ([`StreamDecoder`]): a multi-byte UTF-8 character split
//! across tokens is held back until complete, never emitted as replacement characters.

/// Beginning of sequence, prepended to every prompt.
pub const BOS: u32 = 256;
/// End of sequence: generation stops here unless `ignore_eos`.
pub const EOS: u32 = 257;
/// The smallest vocabulary the tokenizer works with: the bytes and the two specials.
pub const MIN_VOCAB: usize = 258;

/// Encodes text as `[BOS, bytes...]`.
pub fn encode(text: &str) -> Vec<u32> {
    std::iter::once(BOS).chain(text.bytes().map(u32::from)).collect()
}

/// The bytes one token stands for (empty for the specials).
pub fn token_bytes(id: u32) -> Option<u8> {
    match id {
        0..=255 => Some(id as u8),
        BOS | EOS => None,
        _ => Some(b'!' + ((id - MIN_VOCAB as u32) % 94) as u8),
    }
}

/// Decodes a whole token sequence (invalid UTF-8 becomes U+FFFD; specials are dropped).
pub fn decode(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().filter_map(|&id| token_bytes(id)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Turns a stream of tokens into text pieces, holding back incomplete UTF-8 characters.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text that token `id` completes (possibly empty while a character is incomplete).
    pub fn push(&mut self, id: u32) -> String {
        if let Some(b) = token_bytes(id) {
            self.pending.push(b);
        }
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                out
            }
            Err(e) if e.error_len().is_none() && self.pending.len() - e.valid_up_to() < 4 => {
                // An incomplete character at the end: emit what is valid, keep the rest.
                let valid = e.valid_up_to();
                let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                self.pending.drain(..valid);
                out
            }
            Err(_) => {
                let out = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                out
            }
        }
    }

    /// Whatever is still pending, at the end of the stream.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text() {
        let text = "héllo, 世界 🎉";
        let ids = encode(text);
        assert_eq!(ids[0], BOS);
        assert_eq!(ids.len(), 1 + text.len());
        assert_eq!(decode(&ids), text);
    }

    #[test]
    fn stream_decoder_holds_split_characters() {
        let mut d = StreamDecoder::new();
        let pieces: Vec<String> = encode("a世b").iter().map(|&id| d.push(id)).collect();
        assert_eq!(pieces, ["", "a", "", "", "世", "b"]);
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn ids_past_the_bytes_are_one_printable_character() {
        for id in [MIN_VOCAB as u32, 1000, 31999] {
            let s = decode(&[id]);
            assert_eq!(s.len(), 1);
            assert!(s.chars().all(|c| c.is_ascii_graphic()), "{id}: {s:?}");
        }
        assert_eq!(decode(&[BOS, EOS]), "");
    }
}
