//! Capturing a stream with a cap: keep the first `cap` bytes, count the rest.
//!
//! Without a listener the bytes are collected and cut into chunks once the run ends
//! (one per line; one chunk for a large output, taken without a copy). With one, each
//! read is decoded and cut into lines at once, handed to the listener, and kept: the
//! chunks in the result's `logs` are exactly the chunks that were streamed. The end of
//! a line that has not come yet is held until it does, or until the caller flushes it
//! (a prompt without a newline must not wait for the run's end).

/// Up to this much output a run, each line is a chunk of its own.
pub const LINE_CHUNKS_UP_TO: usize = 64 * 1024;

#[derive(Debug)]
pub struct CappedOutput {
    cap: usize,
    /// Bytes kept so far (collected or streamed).
    kept: usize,
    dropped: u64,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Collect(Vec<u8>),
    Stream {
        chunks: Vec<String>,
        /// The start of a character cut by the end of a read, waiting for its rest.
        partial: Vec<u8>,
        /// Text after the last newline, waiting for the rest of its line.
        line: String,
    },
}

impl CappedOutput {
    pub fn collecting(cap: usize) -> Self {
        CappedOutput {
            cap,
            kept: 0,
            dropped: 0,
            mode: Mode::Collect(Vec::new()),
        }
    }

    pub fn streaming(cap: usize) -> Self {
        CappedOutput {
            cap,
            kept: 0,
            dropped: 0,
            mode: Mode::Stream {
                chunks: Vec::new(),
                partial: Vec::new(),
                line: String::new(),
            },
        }
    }

    /// Takes one read; a streaming capture calls `emit` for each new chunk.
    pub fn push(&mut self, bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        let room = self.cap.saturating_sub(self.kept);
        let take = room.min(bytes.len());
        self.dropped += (bytes.len() - take) as u64;
        self.kept += take;
        let bytes = &bytes[..take];
        match &mut self.mode {
            Mode::Collect(buf) => buf.extend_from_slice(bytes),
            Mode::Stream {
                chunks,
                partial,
                line,
            } => {
                if bytes.is_empty() {
                    return;
                }
                partial.extend_from_slice(bytes);
                let complete = complete_utf8_prefix(partial);
                let text = String::from_utf8_lossy(&partial[..complete]).into_owned();
                partial.drain(..complete);
                if self.kept > LINE_CHUNKS_UP_TO {
                    // A flood: one chunk a read, whatever its lines.
                    let text = std::mem::take(line) + &text;
                    emit(&text);
                    chunks.push(text);
                    return;
                }
                line.push_str(&text);
                while let Some(end) = line.find('\n') {
                    let rest = line.split_off(end + 1);
                    let done = std::mem::replace(line, rest);
                    emit(&done);
                    chunks.push(done);
                }
            }
        }
    }

    /// Whether a streaming capture holds the start of a line.
    pub fn holds_partial_line(&self) -> bool {
        matches!(&self.mode, Mode::Stream { line, .. } if !line.is_empty())
    }

    /// Hands over the start of a line without waiting for its end.
    pub fn flush_partial_line(&mut self, emit: &mut dyn FnMut(&str)) {
        if let Mode::Stream { chunks, line, .. } = &mut self.mode {
            if !line.is_empty() {
                let text = std::mem::take(line);
                emit(&text);
                chunks.push(text);
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The chunks for the result. Invalid UTF-8 is replaced, never fatal.
    pub fn into_chunks(self, emit: &mut dyn FnMut(&str)) -> Vec<String> {
        match self.mode {
            Mode::Collect(kept) => collected_chunks(kept),
            Mode::Stream {
                mut chunks,
                partial,
                mut line,
            } => {
                line.push_str(&String::from_utf8_lossy(&partial));
                if !line.is_empty() {
                    emit(&line);
                    chunks.push(line);
                }
                chunks
            }
        }
    }
}

/// The length of `bytes` without a trailing, unfinished UTF-8 sequence.
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    let tail = bytes.len().saturating_sub(3);
    for start in (tail..bytes.len()).rev() {
        let b = bytes[start];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for its lead
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if bytes.len() - start < needed {
            start
        } else {
            bytes.len()
        };
    }
    bytes.len()
}

/// A stream past `LINE_CHUNKS_UP_TO` bytes in one run is a single chunk, taken without
/// copying: a flood is not worth splitting into a hundred thousand strings. Decoding
/// the whole buffer at once keeps characters split across reads intact.
fn collected_chunks(kept: Vec<u8>) -> Vec<String> {
    if kept.is_empty() {
        return Vec::new();
    }
    if kept.len() > LINE_CHUNKS_UP_TO {
        let text = String::from_utf8(kept)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        return vec![text];
    }
    String::from_utf8_lossy(&kept)
        .split_inclusive('\n')
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> impl FnMut(&str) {
        |_| {}
    }

    #[test]
    fn keeps_the_first_part_and_counts_the_rest() {
        let mut out = CappedOutput::collecting(5);
        out.push(b"abc", &mut none());
        out.push(b"defgh", &mut none());
        out.push(b"ij", &mut none());
        assert_eq!(out.dropped(), 5);
        assert_eq!(out.into_chunks(&mut none()), vec!["abcde"]);
    }

    #[test]
    fn chunks_are_lines_and_invalid_utf8_is_replaced() {
        let mut out = CappedOutput::collecting(100);
        out.push(b"one\ntw", &mut none());
        out.push(b"o\n\xff\xfe end", &mut none());
        assert_eq!(
            out.into_chunks(&mut none()),
            vec!["one\n", "two\n", "\u{fffd}\u{fffd} end"]
        );
    }

    #[test]
    fn a_large_output_is_one_chunk() {
        let mut out = CappedOutput::collecting(1 << 20);
        let line = "x".repeat(99) + "\n";
        for _ in 0..1000 {
            out.push(line.as_bytes(), &mut none());
        }
        let chunks = out.into_chunks(&mut none());
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), 100_000);
    }

    #[test]
    fn streaming_emits_what_it_keeps_as_it_comes() {
        let mut seen = Vec::new();
        let mut out = CappedOutput::streaming(16);
        out.push(b"one\ntw", &mut |c| seen.push(c.to_owned()));
        assert_eq!(seen, ["one\n"], "the start of a line waits for its end");
        assert!(out.holds_partial_line());
        out.push(b"o\nthree\nfo", &mut |c| seen.push(c.to_owned()));
        assert_eq!(seen, ["one\n", "two\n", "three\n"]);
        out.flush_partial_line(&mut |c| seen.push(c.to_owned()));
        assert!(!out.holds_partial_line());
        out.push(b"ur\n", &mut |c| seen.push(c.to_owned()));
        let chunks = out.into_chunks(&mut |c| seen.push(c.to_owned()));
        assert_eq!(chunks, seen);
        assert_eq!(
            chunks,
            ["one\n", "two\n", "three\n", "fo"],
            "cut at the cap of 16 bytes"
        );
    }

    #[test]
    fn a_character_split_across_reads_survives_in_both_modes() {
        let snow = "☃".as_bytes();
        let mut seen = Vec::new();
        let mut streamed = CappedOutput::streaming(100);
        streamed.push(&snow[..1], &mut |c| seen.push(c.to_owned()));
        assert!(seen.is_empty(), "half a character is held back");
        streamed.push(&snow[1..], &mut |c| seen.push(c.to_owned()));
        assert_eq!(streamed.into_chunks(&mut none()), vec!["☃"]);
        let mut collected = CappedOutput::collecting(100);
        collected.push(&snow[..1], &mut none());
        collected.push(&snow[1..], &mut none());
        assert_eq!(collected.into_chunks(&mut none()), vec!["☃"]);
        let mut cut_off = CappedOutput::streaming(100);
        cut_off.push(&snow[..2], &mut none());
        assert_eq!(cut_off.into_chunks(&mut none()), vec!["\u{fffd}"]);
    }
}
