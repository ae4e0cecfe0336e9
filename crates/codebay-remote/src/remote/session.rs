//! `RemoteSession`: a session of a `codebay serve` (or any MCP server with the same
//! tools) as a `codebay_core::Session`. A run streams: each progress notification of
//! its `tools/call` is an output chunk for the sink; a cancel sends
//! `notifications/cancelled`; nothing waits past the run's deadline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codebay_core::result::item_from_bundle;
use codebay_core::{
    BoxFuture, CodeExecutionResult, CodebayError, ErrorCode, McpToolResult, RunControl, RunRequest,
    Session,
};
use codebay_protocol::mcp::OutputNotice;
use codebay_protocol::tool::RUN_CODE;
use serde_json::Value;

use super::client::{McpClient, McpError};
use super::options::ConnectOptions;

/// Where the next session goes: round robin over a list of endpoints, process-wide.
static NEXT: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone)]
pub struct RemoteSession(Arc<State>);

struct State {
    client: McpClient,
    api_key: String,
    timeout: Duration,
    closed: AtomicBool,
}

impl RemoteSession {
    /// Connects to the first endpoint, in round-robin order, that accepts a session;
    /// one that refuses (or is down) is skipped. Fails naming every endpoint's reason.
    pub async fn connect(options: ConnectOptions) -> Result<RemoteSession, CodebayError> {
        let n = options.endpoints.len();
        let start = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut reasons = Vec::new();
        for k in 0..n {
            let endpoint = options.endpoints[(start + k) % n].clone();
            match McpClient::connect(endpoint.clone(), options.api_key.clone(), options.timeout)
                .await
            {
                Ok(client) => {
                    return Ok(RemoteSession(Arc::new(State {
                        client,
                        api_key: options.api_key,
                        timeout: options.timeout,
                        closed: AtomicBool::new(false),
                    })))
                }
                Err(e) => reasons.push(e.to_string()),
            }
        }
        Err(CodebayError::error(
            ErrorCode::RemoteFailed,
            format!("No MCP server took the session: {}", reasons.join("; ")),
        ))
    }

    pub fn id(&self) -> &str {
        self.0.client.session_id()
    }

    pub fn endpoint(&self) -> &str {
        self.0.client.endpoint().as_str()
    }

    /// One `tools/call`; never fails: what went wrong is a failed result naming it.
    pub fn call(&self, name: &str, args: Value) -> BoxFuture<McpToolResult> {
        let this = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            if this.0.closed.load(Ordering::SeqCst) {
                return closed_result();
            }
            let id = this.0.client.reserve_id();
            let answer = this
                .0
                .client
                .call_tool(id, &name, args, this.0.timeout, None)
                .await;
            tool_result(this.request_id(id), answer)
        })
    }

    fn request_id(&self, id: u64) -> String {
        format!("{}-{id}", self.id())
    }

    pub async fn close(&self) {
        if self.0.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.0.client.close(self.0.timeout).await;
    }
}

fn closed_result() -> McpToolResult {
    let e = CodebayError::error(ErrorCode::SessionClosed, "The remote session was closed.");
    McpToolResult::failed(e.to_tool_message(), String::new())
}

/// A `tools/call` result as an `McpToolResult`: the text content is the tool's text,
/// `isError` its failure.
fn tool_result(request_id: String, answer: Result<Value, McpError>) -> McpToolResult {
    let result = match answer {
        Ok(result) => result,
        Err(e) => return McpToolResult::failed(e.to_string(), request_id),
    };
    let text: String = result
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect();
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        McpToolResult::failed(text, request_id)
    } else {
        McpToolResult::ok(text, request_id)
    }
}

/// Applies one progress message (an `OutputNotice`) to the sink; another message is
/// not ours and is left alone.
fn notice(sink: &dyn codebay_core::OutputSink, message: &str) {
    match OutputNotice::parse(message) {
        Ok(OutputNotice::Stdout { text, timestamp }) => sink.stdout(&text, timestamp),
        Ok(OutputNotice::Stderr { text, timestamp }) => sink.stderr(&text, timestamp),
        Ok(OutputNotice::Result { item }) => sink.result(&item_from_bundle(&item)),
        Ok(OutputNotice::Error { error }) => sink.error(&error),
        Err(_) => {}
    }
}

impl Session for RemoteSession {
    fn session_id(&self) -> String {
        self.id().to_owned()
    }

    fn api_key(&self) -> String {
        self.0.api_key.clone()
    }

    fn call_tool(&self, name: &str, args: Value) -> BoxFuture<Result<McpToolResult, String>> {
        let call = self.call(name, args);
        Box::pin(async move { Ok(call.await) })
    }

    /// `run_code` with a progress token: the server's notifications are the sink's
    /// chunks as they are written. A cancel tells the server, which interrupts the run.
    fn run(&self, request: RunRequest, control: RunControl) -> BoxFuture<CodeExecutionResult> {
        let this = self.clone();
        Box::pin(async move {
            if this.0.closed.load(Ordering::SeqCst) {
                return CodeExecutionResult::from_tool_result(closed_result());
            }
            let deadline = request.session_deadline();
            let id = this.0.client.reserve_id();
            let streamed = Arc::new(Mutex::new(false));
            let sink = control.sink.clone();
            let seen = streamed.clone();
            let mut progress = move |message: &str| {
                *seen.lock().expect("progress flag") = true;
                if let Some(sink) = &sink {
                    notice(sink.as_ref(), message);
                }
            };
            let streaming = control.sink.is_some();
            let call = this.0.client.call_tool(
                id,
                RUN_CODE,
                request.tool_args(),
                deadline,
                streaming.then_some(&mut progress as &mut (dyn FnMut(&str) + Send)),
            );
            let result = tokio::select! {
                _ = control.cancel.cancelled() => {
                    let _ = this.0.client.cancel(id, Duration::from_secs(5)).await;
                    return CodeExecutionResult::aborted(this.request_id(id), true);
                }
                answer = call => match answer {
                    Err(McpError::Timeout { .. }) => CodeExecutionResult::session_timed_out(deadline.as_secs_f64()),
                    other => CodeExecutionResult::from_tool_result(tool_result(this.request_id(id), other)),
                },
            };
            // A server that did not stream: the whole output, once, at the end.
            if !*streamed.lock().expect("progress flag") {
                if let Some(sink) = &control.sink {
                    codebay_core::session::replay(sink.as_ref(), &result);
                }
            }
            result
        })
    }

    fn close(&self) -> BoxFuture<()> {
        let this = self.clone();
        Box::pin(async move { RemoteSession::close(&this).await })
    }
}
