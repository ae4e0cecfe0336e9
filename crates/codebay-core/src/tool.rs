//! The answer of every session's tool call (AgentBay's `McpToolResult`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

    /// Reads what a JavaScript session resolved with. Sessions written by hand are
    /// loose (a missing `data`, a number for `requestId`), so each field is taken
    /// for what it is; only a value that is not an object at all is refused.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "the session answered {} instead of a tool result object",
                kind(value)
            ));
        };
        let text = |key: &str| match map.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let success = match map.get("success") {
            Some(Value::Bool(b)) => *b,
            _ => false,
        };
        Ok(McpToolResult {
            success,
            data: text("data"),
            error_message: text("errorMessage"),
            request_id: text("requestId"),
        })
    }
}

fn kind(value: &Value) -> &'static str {
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
    fn reads_a_complete_result() {
        let r = McpToolResult::from_value(&json!({
            "success": true, "data": "x", "errorMessage": "", "requestId": "r1"
        }))
        .unwrap();
        assert_eq!(r, McpToolResult::ok("x".into(), "r1".into()));
    }

    #[test]
    fn loose_fields_are_read_for_what_they_are() {
        let r = McpToolResult::from_value(&json!({ "success": "yes", "requestId": 7 })).unwrap();
        assert!(!r.success, "only a real true counts as success");
        assert_eq!(r.request_id, "7");
        assert_eq!(r.data, "");
    }

    #[test]
    fn a_non_object_is_refused_with_its_kind() {
        assert_eq!(
            McpToolResult::from_value(&json!(42)).unwrap_err(),
            "the session answered a number instead of a tool result object"
        );
    }
}
