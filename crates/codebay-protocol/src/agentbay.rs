//! AgentBay's OpenAPI, as its public SDK (`wuying-agentbay-sdk`, `typescript/src/api/client.ts`)
//! sends it: Alibaba Cloud's RPC style with anonymous auth. `POST /` with the action, the
//! version and the common parameters in the query; the body form-encoded, every value a
//! string (the key as the form field `Authorization=Bearer <key>`, JSON values as JSON
//! text); the answer a JSON envelope `{ RequestId, Code, Message, Success, HttpStatusCode, Data }`.
//!
//! The form structs declare their fields in the order the SDK adds them to the body, so
//! `serde_urlencoded` writes the SDK's bytes (held by `tests/fixtures/agentbay.jsonl`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const API_VERSION: &str = "2025-05-06";
/// AgentBay's documented public endpoint, for its default region (Shanghai).
pub const DEFAULT_ENDPOINT: &str = "wuyingai.cn-shanghai.aliyuncs.com";
/// The image whose sessions serve `run_code`.
pub const CODE_IMAGE: &str = "code_latest";
/// The SDK's read and connect timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// The actions codebay calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    CreateMcpSession,
    CallMcpTool,
    ReleaseMcpSession,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateMcpSession => "CreateMcpSession",
            Action::CallMcpTool => "CallMcpTool",
            Action::ReleaseMcpSession => "ReleaseMcpSession",
        }
    }
}

/// The query of every request, in the SDK's order. Nothing is signed: the SDK's calls
/// are `authType: "Anonymous"`, so no `Signature*` or `AccessKeyId` parameter is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CommonQuery {
    pub action: Action,
    /// Always `json`.
    pub format: String,
    pub version: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`, no fraction.
    pub timestamp: String,
    /// Unique per request.
    pub signature_nonce: String,
}

/// `CreateMcpSession`'s form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateMcpSessionForm {
    /// `Bearer <key>`.
    pub authorization: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The labels object as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// Who is calling, as JSON text (the SDK always sends it).
    pub sdk_stats: String,
}

/// `CallMcpTool`'s form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CallMcpToolForm {
    /// The tool's arguments as JSON text, numbers written as JavaScript writes them.
    pub args: String,
    pub authorization: String,
    /// `false` unless the caller asks the gateway to make a session.
    pub auto_gen_session: bool,
    pub name: String,
    /// Empty: the gateway finds the server from the tool's name, as it does for the SDK.
    pub server: String,
    pub session_id: String,
}

/// `ReleaseMcpSession`'s form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReleaseMcpSessionForm {
    pub authorization: String,
    pub session_id: String,
}

/// Every answer's envelope. Each field is optional: the gateway leaves out what does
/// not apply, and a failure is read from what is there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiEnvelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// A string on the wire; kept as JSON because a gateway in front may send a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ApiEnvelope {
    /// `[<Code>] <Message>`, the SDK's form of a refusal.
    pub fn refusal(&self) -> String {
        let code = match &self.code {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Null) | None => "Unknown".to_owned(),
            Some(other) => other.to_string(),
        };
        let message = match self.message.as_deref() {
            Some(m) if !m.is_empty() => m,
            _ => "Unknown error",
        };
        format!("[{code}] {message}")
    }
}

/// `Data` of a `CreateMcpSession` answer (the fields codebay reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateMcpSessionData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err_msg: Option<String>,
}

/// `Data` of a `CallMcpTool` answer: the MCP tool result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpCallData {
    #[serde(default)]
    pub content: Vec<McpContent>,
    #[serde(default)]
    pub is_error: bool,
}

/// One item of an MCP tool result's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpContent {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// `JSON.stringify(value)`: integral numbers without a fraction (`60`, not `60.0`), as
/// the SDK's `Args` has them; a typed backend would refuse `60.0` where it wants an integer.
pub fn js_json(value: &Value) -> String {
    serde_json::to_string(&js_numbers(value)).expect("a JSON value serialises")
}

fn js_numbers(value: &Value) -> Value {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() <= SAFE => Value::from(f as i64),
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(js_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), js_numbers(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_numbers_are_written_as_javascript_writes_them() {
        let args =
            json!({"code": "1", "timeout_s": 60.0, "n": [2.5, -0.0, 1e300], "o": {"x": 3.0}});
        assert_eq!(
            js_json(&args),
            r#"{"code":"1","timeout_s":60,"n":[2.5,0,1e+300],"o":{"x":3}}"#
        );
    }

    #[test]
    fn a_refusal_names_code_and_message_or_says_they_are_unknown() {
        let e: ApiEnvelope =
            serde_json::from_str(r#"{"Code":"InvalidApiKey","Message":"bad key"}"#).unwrap();
        assert_eq!(e.refusal(), "[InvalidApiKey] bad key");
        assert_eq!(ApiEnvelope::default().refusal(), "[Unknown] Unknown error");
    }
}
