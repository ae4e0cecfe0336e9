//! Capturing a stream with a cap: keep the first `cap` bytes, count the rest.
//! Appends are amortised O(1) and nothing past the cap is ever held.

#[derive(Debug)]
pub struct CappedOutput {
    kept: Vec<u8>,
    dropped: u64,
    cap: usize,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        CappedOutput {
            kept: Vec::new(),
            dropped: 0,
            cap,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Chunks for the wire: one per line (newline kept), the last one possibly
    /// unterminated. A stream past `LINE_CHUNKS_UP_TO` bytes in one run is a single
    /// chunk instead, taken without copying: a flood is not worth splitting into a
    /// hundred thousand strings. Invalid UTF-8 is replaced, never fatal; decoding the
    /// whole buffer at once keeps characters split across reads intact.
    pub fn into_chunks(self) -> Vec<String> {
        if self.kept.is_empty() {
            return Vec::new();
        }
        if self.kept.len() > LINE_CHUNKS_UP_TO {
            let text = String::from_utf8(self.kept)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            return vec![text];
        }
        let text = String::from_utf8_lossy(&self.kept);
        text.split_inclusive('\n').map(str::to_owned).collect()
    }
}

/// Up to this much output a run, each line is a chunk of its own.
pub const LINE_CHUNKS_UP_TO: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_part_and_counts_the_rest() {
        let mut out = CappedOutput::new(5);
        out.push(b"abc");
        out.push(b"defgh");
        out.push(b"ij");
        assert_eq!(out.dropped(), 5);
        assert_eq!(out.into_chunks(), vec!["abcde"]);
    }

    #[test]
    fn chunks_are_lines_and_invalid_utf8_is_replaced() {
        let mut out = CappedOutput::new(100);
        out.push(b"one\ntw");
        out.push(b"o\n\xff\xfe end");
        assert_eq!(
            out.into_chunks(),
            vec!["one\n", "two\n", "\u{fffd}\u{fffd} end"]
        );
    }

    #[test]
    fn a_large_output_is_one_chunk() {
        let mut out = CappedOutput::new(1 << 20);
        let line = "x".repeat(99) + "\n";
        for _ in 0..1000 {
            out.push(line.as_bytes());
        }
        let chunks = out.into_chunks();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), 100_000);
        let mut bad = CappedOutput::new(1 << 20);
        bad.push(&[b'a'; LINE_CHUNKS_UP_TO]);
        bad.push(b"\xff");
        assert_eq!(bad.into_chunks()[0].chars().last(), Some('\u{fffd}'));
    }

    #[test]
    fn a_character_split_across_reads_survives() {
        let mut out = CappedOutput::new(100);
        let snow = "☃".as_bytes();
        out.push(&snow[..1]);
        out.push(&snow[1..]);
        assert_eq!(out.into_chunks(), vec!["☃"]);
    }
}
