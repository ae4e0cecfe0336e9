//! What the MCP server (`codebay serve` / `codebay mcp`) sends beside the tool results:
//! a run's output while it runs, one `notifications/progress` per chunk, whose
//! `message` is the JSON text of an [`OutputNotice`]. The remote session reads the
//! same type back into its streaming callbacks.

use serde::{Deserialize, Serialize};

use crate::backend::{ErrorInfo, MimeBundle};

/// A `run_code` request's `_meta` key: `true` says the client handles the server's
/// messages in the order they arrive, so the server answers right after the last
/// notification. Without it the server pauses a few milliseconds first, for clients
/// (the TypeScript SDK) that would otherwise drop the last notifications.
pub const ORDERED_NOTICES_META: &str = "codebay/orderedNotices";

/// One piece of a run's output, tagged by `stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stream", rename_all = "lowercase")]
pub enum OutputNotice {
    /// A chunk as written; `timestamp` in nanoseconds since the Unix epoch (E2B's
    /// `OutputMessage.timestamp`).
    Stdout {
        text: String,
        timestamp: u64,
    },
    Stderr {
        text: String,
        timestamp: u64,
    },
    /// A displayed result, or the main result at the end: a MIME bundle as in a
    /// `run_code` result's `result` items (DESIGN §2), as an object, not encoded.
    Result {
        item: MimeBundle,
    },
    /// The run's error, once, at its end.
    Error {
        error: ErrorInfo,
    },
}

impl OutputNotice {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an OutputNotice is always serialisable")
    }

    pub fn parse(text: &str) -> Result<OutputNotice, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_tagged_by_stream() {
        let n = OutputNotice::Stdout {
            text: "hi\n".into(),
            timestamp: 7,
        };
        assert_eq!(
            n.to_json(),
            r#"{"stream":"stdout","text":"hi\n","timestamp":7}"#
        );
        let e = OutputNotice::parse(
            r#"{"stream":"error","error":{"name":"E","value":"v","traceback":""}}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            OutputNotice::Error {
                error: ErrorInfo::new("E", "v")
            }
        );
    }
}
