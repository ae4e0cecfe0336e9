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
    /// unterminated. Invalid UTF-8 is replaced, never fatal; decoding the whole
    /// buffer at once keeps characters split across reads intact.
    pub fn into_chunks(self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.kept);
        text.split_inclusive('\n').map(str::to_owned).collect()
    }
}

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
    fn a_character_split_across_reads_survives() {
        let mut out = CappedOutput::new(100);
        let snow = "☃".as_bytes();
        out.push(&snow[..1]);
        out.push(&snow[1..]);
        assert_eq!(out.into_chunks(), vec!["☃"]);
    }
}
