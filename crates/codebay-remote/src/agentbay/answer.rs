//! A `CallMcpTool` answer as an `McpToolResult`, as the SDK's `Session.callMcpTool` maps
//! it (`typescript/src/session.ts`): the content's text is the tool's text, `isError`
//! its failure; `run_code` keeps its text in both `data` and `errorMessage` when it
//! failed, so `Code` can read the backend JSON of a failed run.

use codebay_protocol::agentbay::{ApiEnvelope, McpCallData};
use codebay_protocol::tool::RUN_CODE;
use codebay_protocol::McpToolResult;
use serde_json::Value;

use super::api::ApiError;

pub fn tool_result(tool: &str, answer: Result<ApiEnvelope, ApiError>) -> McpToolResult {
    let envelope = match answer {
        Ok(envelope) => envelope,
        Err(e) => return McpToolResult::failed(e.to_string(), e.request_id()),
    };
    let request_id = envelope.request_id.clone().unwrap_or_default();
    let data = match envelope.data {
        None | Some(Value::Null) => {
            let message = "AgentBay's CallMcpTool answer has no Data".to_owned();
            return McpToolResult::failed(message, request_id);
        }
        // The Python SDK also takes Data sent as JSON text.
        Some(Value::String(text)) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        Some(data) => data,
    };
    let call = match &data {
        Value::Object(_) => serde_json::from_value::<McpCallData>(data.clone()).ok(),
        _ => None,
    };
    let Some(call) = call else {
        // Not an MCP result: the SDK hands over the Data itself.
        let text = match data {
            Value::String(text) => text,
            other => other.to_string(),
        };
        return McpToolResult::ok(text, request_id);
    };
    let text: String = call
        .content
        .iter()
        .filter_map(|c| c.text.as_deref())
        .collect();
    let text = if text.is_empty() {
        call.content
            .first()
            .and_then(|c| c.blob.clone().or_else(|| c.data.clone()))
            .unwrap_or_default()
    } else {
        text
    };
    if tool == RUN_CODE {
        return McpToolResult {
            success: !call.is_error,
            error_message: if call.is_error {
                text.clone()
            } else {
                String::new()
            },
            data: text,
            request_id,
        };
    }
    if call.is_error {
        let parts: Vec<&str> = call
            .content
            .iter()
            .map(|c| c.text.as_deref().unwrap_or("Unknown error"))
            .collect();
        let message = if parts.is_empty() {
            "Unknown error".to_owned()
        } else {
            parts.join("; ")
        };
        return McpToolResult::failed(message, request_id);
    }
    if text.is_empty() {
        return McpToolResult::ok(data.to_string(), request_id);
    }
    McpToolResult::ok(text, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(body: Value) -> Result<ApiEnvelope, ApiError> {
        Ok(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn the_content_text_is_the_data_and_request_id_comes_along() {
        let r = tool_result(
            "run_code",
            answer(json!({"RequestId": "r-1", "Success": true,
                "Data": {"content": [{"type": "text", "text": "{\"stdout\":"}, {"type": "text", "text": "[]}"}], "isError": false}})),
        );
        assert_eq!(r, McpToolResult::ok("{\"stdout\":[]}".into(), "r-1".into()));
    }

    #[test]
    fn a_failed_run_keeps_its_text_in_data_and_error_message() {
        let r = tool_result(
            "run_code",
            answer(
                json!({"RequestId": "r-2", "Data": {"content": [{"text": "{\"x\":1}"}], "isError": true}}),
            ),
        );
        assert!(!r.success);
        assert_eq!(
            (r.data.as_str(), r.error_message.as_str()),
            ("{\"x\":1}", "{\"x\":1}")
        );
    }

    #[test]
    fn another_tool_that_failed_joins_its_texts() {
        let r = tool_result(
            "read_file",
            answer(
                json!({"RequestId": "r-3", "Data": {"content": [{"text": "a"}, {"type": "image"}], "isError": true}}),
            ),
        );
        assert_eq!(
            r,
            McpToolResult::failed("a; Unknown error".into(), "r-3".into())
        );
    }

    #[test]
    fn data_as_json_text_and_data_that_is_not_an_mcp_result() {
        let text = json!({"content": [{"text": "hi"}]}).to_string();
        let r = tool_result("shell", answer(json!({"Data": text})));
        assert_eq!(r.data, "hi");
        let r = tool_result("shell", answer(json!({"Data": [1, 2]})));
        assert_eq!(r.data, "[1,2]");
        let r = tool_result("shell", answer(json!({"RequestId": "r-4"})));
        assert!(!r.success && r.error_message.contains("no Data"), "{r:?}");
        assert_eq!(r.request_id, "r-4");
    }
}
