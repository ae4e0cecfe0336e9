//! The JSON lines between the engine and a runtime driver (docs/internals.md §4).
//! Requests go to the driver's fd 3, one per line; the driver answers on fd 4 with
//! any number of [`DriverMessage::Display`] lines as they happen, then exactly one
//! [`DriverMessage::Reply`]. Serialised compactly, keys in the order declared here:
//! the drivers write the same bytes (held by `tests/fixtures/driver.jsonl`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::{ErrorInfo, MimeBundle};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriverRequest {
    /// Chosen by the engine, unpredictable, below 2^53 (a JavaScript number holds it).
    pub id: u64,
    pub code: String,
    /// The run's timeout, for the driver's information: the engine enforces it.
    pub timeout_ms: u64,
    /// Environment for this run only: set before the code runs, restored after.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    /// The most bytes (UTF-8) any one MIME value of a result may have; the driver keeps
    /// the first part and counts the rest in `resultBytesDropped`. None: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_limit_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum DriverMessage {
    /// A `display()` result, sent as it is displayed.
    Display { id: u64, bundle: MimeBundle },
    /// The end of a run, written after its stdout and stderr were flushed.
    Reply(DriverReply),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriverReply {
    /// Null only for a request that could not be read at all.
    pub id: Option<u64>,
    pub ok: bool,
    pub execution_count: u64,
    /// The value of the cell's last expression, when it has one.
    pub main_result: Option<MimeBundle>,
    /// Set exactly when `ok` is false.
    pub error: Option<ErrorInfo>,
    /// Bytes cut from this run's results (display and main) by `resultLimitBytes`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub result_bytes_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl DriverMessage {
    /// The id of the request this message answers.
    pub fn id(&self) -> Option<u64> {
        match self {
            DriverMessage::Display { id, .. } => Some(*id),
            DriverMessage::Reply(reply) => reply.id,
        }
    }
}

impl DriverRequest {
    /// The request as the line the driver reads.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a request serialises");
        line.push('\n');
        line
    }
}
