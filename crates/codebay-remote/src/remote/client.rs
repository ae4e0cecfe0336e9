//! A minimal MCP client over Streamable HTTP (MCP 2025-03-26 and later): `initialize`
//! then `notifications/initialized`, `tools/call` with a progress token whose
//! notifications reach a callback while the call runs, `notifications/cancelled`, and
//! `DELETE` to end the session. An answer may come as JSON or as an SSE stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use codebay_protocol::mcp::ORDERED_NOTICES_META;
use serde_json::{json, Value};

/// The protocol version asked for; the server answers with the one it speaks.
pub const PROTOCOL_VERSION: &str = "2025-03-26";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum McpError {
    #[error("the MCP server at {endpoint} refused the API key (HTTP 401)")]
    Unauthorized { endpoint: String },
    #[error("the MCP server at {endpoint} answered HTTP {status}: {body}")]
    Status {
        endpoint: String,
        status: u16,
        body: String,
    },
    /// A JSON-RPC error answer.
    #[error("the MCP server answered {method} with error {code}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
    #[error("the MCP server at {endpoint} did not answer {method} within {ms} ms")]
    Timeout {
        endpoint: String,
        method: String,
        ms: u128,
    },
    #[error("cannot reach the MCP server at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the MCP server's answer to {method} is not MCP: {reason}")]
    Malformed { method: String, reason: String },
}

fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("codebay/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a rustls HTTP client builds")
    })
}

/// One MCP session with one server.
#[derive(Debug)]
pub struct McpClient {
    endpoint: reqwest::Url,
    api_key: String,
    session_id: String,
    protocol: String,
    next_id: AtomicU64,
}

impl McpClient {
    /// `initialize` and `notifications/initialized`, each within `timeout`.
    pub async fn connect(
        endpoint: reqwest::Url,
        api_key: String,
        timeout: Duration,
    ) -> Result<McpClient, McpError> {
        let mut client = McpClient {
            endpoint,
            api_key,
            session_id: String::new(),
            protocol: PROTOCOL_VERSION.into(),
            next_id: AtomicU64::new(1),
        };
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "codebay", "version": env!("CARGO_PKG_VERSION") },
        });
        let (result, session) = client
            .request_with_session("initialize", params, timeout, &mut |_| {})
            .await?;
        client.session_id = session.ok_or_else(|| McpError::Malformed {
            method: "initialize".into(),
            reason: "no Mcp-Session-Id header: the server keeps no sessions".into(),
        })?;
        if let Some(v) = result.get("protocolVersion").and_then(Value::as_str) {
            client.protocol = v.to_owned();
        }
        client
            .notify("notifications/initialized", json!({}), timeout)
            .await?;
        Ok(client)
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    /// The id the next request will carry, so a caller can cancel it by that id.
    pub fn reserve_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `tools/call` as request `id`; with `progress`, a progress token is sent and each
    /// progress notification's `message` goes to it. The call's result object.
    pub async fn call_tool(
        &self,
        id: u64,
        name: &str,
        arguments: Value,
        timeout: Duration,
        progress: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<Value, McpError> {
        let mut params = json!({ "name": name, "arguments": arguments });
        let mut ignore = |_: &str| {};
        let progress: &mut (dyn FnMut(&str) + Send) = match progress {
            Some(p) => {
                // This client reads the stream in order, so the server need not pause
                // between the last notice and the answer.
                params["_meta"] = json!({ "progressToken": id, ORDERED_NOTICES_META: true });
                p
            }
            None => &mut ignore,
        };
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params });
        self.exchange("tools/call", id, body, timeout, progress)
            .await
            .map(|(result, _)| result)
    }

    /// Tells the server to stop request `id`.
    pub async fn cancel(&self, id: u64, timeout: Duration) -> Result<(), McpError> {
        let params = json!({ "requestId": id, "reason": "cancelled by the caller" });
        self.notify("notifications/cancelled", params, timeout)
            .await
    }

    /// Ends the session on the server (`DELETE`); a server that has forgotten it is fine.
    pub async fn close(&self, timeout: Duration) -> Result<(), McpError> {
        let sent = self
            .headers(http().delete(self.endpoint.clone()))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport("DELETE", e, timeout))?;
        match sent.status().as_u16() {
            200..=299 | 404 | 405 => Ok(()),
            401 => Err(McpError::Unauthorized {
                endpoint: self.shown(),
            }),
            status => Err(McpError::Status {
                endpoint: self.shown(),
                status,
                body: sent.text().await.unwrap_or_default(),
            }),
        }
    }

    async fn notify(&self, method: &str, params: Value, timeout: Duration) -> Result<(), McpError> {
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        let response = self.post(&body, method, timeout).await?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(self.status_error(response, method).await)
    }

    async fn request_with_session(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(Value, Option<String>), McpError> {
        let id = self.reserve_id();
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.exchange(method, id, body, timeout, progress).await
    }

    /// Posts `body` (request `id`) and reads its answer, JSON or SSE, within `timeout`.
    async fn exchange(
        &self,
        method: &str,
        id: u64,
        body: Value,
        timeout: Duration,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(Value, Option<String>), McpError> {
        let read = async {
            let response = self.post(&body, method, timeout).await?;
            if !response.status().is_success() {
                return Err(self.status_error(response, method).await);
            }
            let session = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let sse = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/event-stream"));
            let answer = if sse {
                self.read_sse(response, method, id, progress).await?
            } else {
                let text = response
                    .text()
                    .await
                    .map_err(|e| self.transport(method, e, timeout))?;
                serde_json::from_str(&text).map_err(|e| McpError::Malformed {
                    method: method.into(),
                    reason: e.to_string(),
                })?
            };
            Ok((rpc_result(method, answer)?, session))
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(McpError::Timeout {
                    endpoint: self.shown(),
                    method: method.into(),
                    ms: timeout.as_millis(),
                })
            })
    }

    /// Reads SSE events until the answer to `id`; progress notifications go to `progress`.
    async fn read_sse(
        &self,
        mut response: reqwest::Response,
        method: &str,
        id: u64,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Value, McpError> {
        let mut buffer = String::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| McpError::Unreachable {
                endpoint: self.shown(),
                reason: e.to_string(),
            })?;
            let Some(chunk) = chunk else {
                return Err(McpError::Malformed {
                    method: method.into(),
                    reason: "the event stream ended before the answer".into(),
                });
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let Some(message) = sse_data(&event) else {
                    continue;
                };
                let Ok(message) = serde_json::from_str::<Value>(&message) else {
                    continue;
                };
                if message.get("method").and_then(Value::as_str) == Some("notifications/progress") {
                    if let Some(text) = message.pointer("/params/message").and_then(Value::as_str) {
                        progress(text);
                    }
                    continue;
                }
                if message.get("id").and_then(Value::as_u64) == Some(id) {
                    return Ok(message);
                }
            }
        }
    }

    async fn post(
        &self,
        body: &Value,
        method: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, McpError> {
        self.headers(http().post(self.endpoint.clone()))
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport(method, e, timeout))
    }

    fn headers(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut b = builder;
        if !self.api_key.is_empty() {
            b = b.bearer_auth(&self.api_key);
        }
        if !self.session_id.is_empty() {
            b = b
                .header(SESSION_HEADER, &self.session_id)
                .header(VERSION_HEADER, &self.protocol);
        }
        b
    }

    async fn status_error(&self, response: reqwest::Response, _method: &str) -> McpError {
        let status = response.status().as_u16();
        if status == 401 {
            return McpError::Unauthorized {
                endpoint: self.shown(),
            };
        }
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        McpError::Status {
            endpoint: self.shown(),
            status,
            body,
        }
    }

    fn transport(&self, method: &str, e: reqwest::Error, timeout: Duration) -> McpError {
        if e.is_timeout() {
            return McpError::Timeout {
                endpoint: self.shown(),
                method: method.into(),
                ms: timeout.as_millis(),
            };
        }
        let mut reason = Vec::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason.push(s.to_string());
            source = s.source();
        }
        McpError::Unreachable {
            endpoint: self.shown(),
            reason: if reason.is_empty() {
                e.without_url().to_string()
            } else {
                reason.join(": ")
            },
        }
    }

    fn shown(&self) -> String {
        self.endpoint.as_str().to_owned()
    }
}

/// The `data:` lines of one SSE event, joined.
fn sse_data(event: &str) -> Option<String> {
    let lines: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// A JSON-RPC answer's `result`, or its error.
fn rpc_result(method: &str, answer: Value) -> Result<Value, McpError> {
    if let Some(error) = answer.get("error") {
        return Err(McpError::Rpc {
            method: method.into(),
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
    }
    answer
        .get("result")
        .cloned()
        .ok_or_else(|| McpError::Malformed {
            method: method.into(),
            reason: "neither result nor error".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_read_by_their_data_lines() {
        assert_eq!(
            sse_data("event: message\ndata: {\"a\":1}\n\n").as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(sse_data("data:x\ndata: y\n\n").as_deref(), Some("x\ny"));
        assert_eq!(sse_data(": ping\n\n"), None);
    }

    #[test]
    fn a_json_rpc_error_is_named() {
        let e = rpc_result(
            "tools/call",
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the MCP server answered tools/call with error -32602: bad"
        );
        assert_eq!(
            rpc_result("x", json!({"result": {"ok": true}})).unwrap(),
            json!({"ok": true})
        );
    }
}
