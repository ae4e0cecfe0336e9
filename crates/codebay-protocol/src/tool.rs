//! The session tools: what `Code` and the code-context methods send to any session,
//! and the `McpToolResult` every session answers with (AgentBay's shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tool names, as every session kind serves them.
pub const RUN_CODE: &str = "run_code";
pub const CREATE_CODE_CONTEXT: &str = "create_code_context";
pub const LIST_CODE_CONTEXTS: &str = "list_code_contexts";
pub const RESTART_CODE_CONTEXT: &str = "restart_code_context";
pub const REMOVE_CODE_CONTEXT: &str = "remove_code_context";
pub const WRITE_FILE: &str = "write_file";
pub const READ_FILE: &str = "read_file";
pub const LIST_FILES: &str = "list_files";
pub const REMOVE_FILE: &str = "remove_file";
/// Every tool a session serves, in the order an unknown-tool message lists them.
pub const TOOLS: [&str; 9] = [
    RUN_CODE,
    CREATE_CODE_CONTEXT,
    LIST_CODE_CONTEXTS,
    RESTART_CODE_CONTEXT,
    REMOVE_CODE_CONTEXT,
    WRITE_FILE,
    READ_FILE,
    LIST_FILES,
    REMOVE_FILE,
];

/// `run_code` arguments. Without options these are exactly `code`, `language` and
/// `timeout_s`, as AgentBay's SDK sends them; `envs` and `context` are ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCodeArgs {
    pub code: String,
    pub language: String,
    /// Seconds; absent means the default (60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// Environment for this run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envs: Option<BTreeMap<String, String>>,
    /// The id of the code context to run in, instead of the language's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// `create_code_context` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContextArgs {
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `restart_code_context` and `remove_code_context` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextIdArgs {
    pub id: String,
}

/// How a file's bytes are carried in a tool's `data`: as text, or base64 for binary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileEncoding {
    #[default]
    Utf8,
    Base64,
}

/// `write_file` arguments: replaces (or creates) the file, making missing directories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    pub path: String,
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<FileEncoding>,
}

/// `read_file` arguments; the answer's `data` is the content in `encoding` (text by
/// default: a file that is not UTF-8 needs `base64`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<FileEncoding>,
}

/// `list_files` (answers a JSON array of `FileEntry`) and `remove_file` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePathArgs {
    pub path: String,
}

/// A code context as E2B names it: its own interpreter in the session's sandbox.
/// `create_code_context` answers one as JSON; `list_code_contexts` an array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeContext {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpToolResult {
    pub success: bool,
    pub data: String,
    pub error_message: String,
    pub request_id: String,
}

impl McpToolResult {
    pub fn ok(data: String, request_id: String) -> Self {
        McpToolResult {
            success: true,
            data,
            error_message: String::new(),
            request_id,
        }
    }

    pub fn failed(error_message: String, request_id: String) -> Self {
        McpToolResult {
            success: false,
            data: String::new(),
            error_message,
            request_id,
        }
    }

    /// Reads what a hand-written session answered. Such sessions are loose (a missing
    /// `data`, a number for `requestId`), so each field is taken for what it is; only a
    /// value that is not an object at all is refused.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "the session answered {} instead of a tool result object",
                json_kind(value)
            ));
        };
        let text = |key: &str| match map.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        Ok(McpToolResult {
            success: matches!(map.get("success"), Some(Value::Bool(true))),
            data: text("data"),
            error_message: text("errorMessage"),
            request_id: text("requestId"),
        })
    }
}

/// What a JSON value is, for messages: "a number", "an object", ...
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_code_args_without_options_are_the_three_sdk_keys() {
        let args = RunCodeArgs {
            code: "1".into(),
            language: "python".into(),
            timeout_s: Some(5.0),
            envs: None,
            context: None,
        };
        assert_eq!(
            serde_json::to_value(&args).unwrap(),
            json!({"code": "1", "language": "python", "timeout_s": 5.0})
        );
    }

    #[test]
    fn unknown_run_code_keys_are_refused() {
        let err = serde_json::from_value::<RunCodeArgs>(
            json!({"code": "1", "language": "py", "timeout": 5}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn loose_tool_results_are_read_for_what_they_are() {
        let r = McpToolResult::from_value(&json!({ "success": "yes", "requestId": 7 })).unwrap();
        assert!(!r.success, "only a real true counts as success");
        assert_eq!(r.request_id, "7");
        assert_eq!(
            McpToolResult::from_value(&json!(42)).unwrap_err(),
            "the session answered a number instead of a tool result object"
        );
    }
}
