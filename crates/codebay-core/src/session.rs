//! The `Session` trait: what every session kind — the local sandbox, a JavaScript
//! object with `callMcpTool`, a remote MCP server, AgentBay's cloud — offers `Code`.
//! A session that only implements the tool call gets everything else from it: runs,
//! the code-context operations, streaming replayed from the final result.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use codebay_protocol::tool::{
    CREATE_CODE_CONTEXT, LIST_CODE_CONTEXTS, LIST_FILES, READ_FILE, REMOVE_CODE_CONTEXT,
    REMOVE_FILE, RESTART_CODE_CONTEXT, RUN_CODE, WRITE_FILE,
};
use codebay_protocol::{
    CodeContext, ContextIdArgs, CreateContextArgs, ErrorInfo, FileEncoding, FileEntry,
    FilePathArgs, McpToolResult, ReadFileArgs, WriteFileArgs,
};
use serde_json::Value;
use tokio::sync::Notify;

use crate::error::{CodebayError, ErrorCode};
use crate::request::RunRequest;
use crate::result::{CodeExecutionResult, CodeExecutionResultItem};
use crate::runtime::Registry;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where a run's output goes while it runs: chunk by chunk, in the order written.
/// Implementations must not block; the chunks are also kept in the result's `logs`.
pub trait OutputSink: Send + Sync {
    fn stdout(&self, chunk: &str, timestamp_ns: u64);
    fn stderr(&self, chunk: &str, timestamp_ns: u64);
    /// A `display()` result as it is displayed, and the main result at the end.
    fn result(&self, item: &CodeExecutionResultItem);
    /// The run's error, once, at its end.
    fn error(&self, error: &ErrorInfo);
}

/// Nanoseconds since the Unix epoch, E2B's `OutputMessage.timestamp`.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Stops a run, as a timeout does (an `AbortSignal`, an MCP cancellation).
#[derive(Clone, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Default)]
struct CancelState {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once cancelled (at once if already).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel between the two is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// What a run reports to while it runs, and what stops it.
#[derive(Clone, Default)]
pub struct RunControl {
    pub sink: Option<Arc<dyn OutputSink>>,
    pub cancel: Cancel,
}

pub trait Session: Send + Sync + 'static {
    fn session_id(&self) -> String;
    fn api_key(&self) -> String;

    /// The languages this session runs. Python and JavaScript unless it says otherwise.
    fn registry(&self) -> &Registry {
        builtin_registry()
    }

    /// One tool call. `Err` carries the call's failure as text (a thrown error's string
    /// form); a tool that answered, even with a failure, is `Ok`.
    fn call_tool(&self, name: &str, args: Value) -> BoxFuture<Result<McpToolResult, String>>;

    /// Refuses a run this session cannot honour (an option it has no way to send),
    /// before anything is sent: `runCode` rejects with the error.
    fn check_run(&self, _request: &RunRequest) -> Result<(), CodebayError> {
        Ok(())
    }

    /// Runs checked code. Called synchronously where the run's place in its context's
    /// queue matters: a session queues it now, in call order. The default goes through
    /// `run_code`, with `Code`'s deadline, and replays the output to the sink at the end.
    fn run(&self, request: RunRequest, control: RunControl) -> BoxFuture<CodeExecutionResult> {
        let call = self.call_tool(RUN_CODE, request.tool_args());
        run_over_tool(call, &request, control)
    }

    fn create_context(
        &self,
        language: String,
        cwd: Option<String>,
    ) -> BoxFuture<Result<CodeContext, CodebayError>> {
        let args = serde_json::to_value(CreateContextArgs { language, cwd }).expect("serialises");
        let call = self.call_tool(CREATE_CODE_CONTEXT, args);
        Box::pin(async move { parse_tool_answer(call.await, "a code context") })
    }

    fn list_contexts(&self) -> BoxFuture<Result<Vec<CodeContext>, CodebayError>> {
        let call = self.call_tool(LIST_CODE_CONTEXTS, Value::Object(Default::default()));
        Box::pin(async move { parse_tool_answer(call.await, "a list of code contexts") })
    }

    fn restart_context(&self, id: String) -> BoxFuture<Result<(), CodebayError>> {
        let args = serde_json::to_value(ContextIdArgs { id }).expect("serialises");
        let call = self.call_tool(RESTART_CODE_CONTEXT, args);
        Box::pin(async move { tool_answer(call.await).map(drop) })
    }

    fn remove_context(&self, id: String) -> BoxFuture<Result<(), CodebayError>> {
        let args = serde_json::to_value(ContextIdArgs { id }).expect("serialises");
        let call = self.call_tool(REMOVE_CODE_CONTEXT, args);
        Box::pin(async move { tool_answer(call.await).map(drop) })
    }

    /// Replaces (or creates) the file at `path`, an absolute path `Files` placed under
    /// `/home/user` or `/tmp`. The default sends the bytes base64 through `write_file`.
    fn write_file(&self, path: String, data: Vec<u8>) -> BoxFuture<Result<(), CodebayError>> {
        let args = WriteFileArgs {
            path,
            data: base64::engine::general_purpose::STANDARD.encode(data),
            encoding: Some(FileEncoding::Base64),
        };
        let call = self.call_tool(WRITE_FILE, serde_json::to_value(args).expect("serialises"));
        Box::pin(async move { tool_answer(call.await).map(drop) })
    }

    /// The file's bytes. The default asks `read_file` for base64.
    fn read_file(&self, path: String) -> BoxFuture<Result<Vec<u8>, CodebayError>> {
        let args = ReadFileArgs {
            path,
            encoding: Some(FileEncoding::Base64),
        };
        let call = self.call_tool(READ_FILE, serde_json::to_value(args).expect("serialises"));
        Box::pin(async move {
            let data = tool_answer(call.await)?;
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| {
                    CodebayError::error(
                        ErrorCode::ToolFailed,
                        format!("The session's read_file answer is not base64: {e}"),
                    )
                })
        })
    }

    fn list_files(&self, path: String) -> BoxFuture<Result<Vec<FileEntry>, CodebayError>> {
        let args = serde_json::to_value(FilePathArgs { path }).expect("serialises");
        let call = self.call_tool(LIST_FILES, args);
        Box::pin(async move { parse_tool_answer(call.await, "a list of files") })
    }

    fn remove_file(&self, path: String) -> BoxFuture<Result<(), CodebayError>> {
        let args = serde_json::to_value(FilePathArgs { path }).expect("serialises");
        let call = self.call_tool(REMOVE_FILE, args);
        Box::pin(async move { tool_answer(call.await).map(drop) })
    }

    /// The default looks for the name in a listing of its directory.
    fn file_exists(&self, path: String) -> BoxFuture<Result<bool, CodebayError>> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) if !dir.is_empty() => (dir.to_owned(), name.to_owned()),
            _ => ("/".to_owned(), path.trim_start_matches('/').to_owned()),
        };
        let listing = self.list_files(dir);
        Box::pin(async move {
            match listing.await {
                Ok(entries) => Ok(entries.iter().any(|e| e.name == name)),
                Err(e) if e.code == ErrorCode::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// Ends the session. Idempotent. A session whose life is not this process's
    /// business (a JavaScript object) does nothing.
    fn close(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

pub fn builtin_registry() -> &'static Registry {
    static BUILTIN: OnceLock<Registry> = OnceLock::new();
    BUILTIN.get_or_init(Registry::default)
}

/// A run through the `run_code` tool (DESIGN §1.1): stopped waiting for at the deadline
/// or when cancelled, mapped to a `CodeExecutionResult`, and replayed to the sink.
pub fn run_over_tool(
    call: BoxFuture<Result<McpToolResult, String>>,
    request: &RunRequest,
    control: RunControl,
) -> BoxFuture<CodeExecutionResult> {
    let deadline = request.session_deadline();
    Box::pin(async move {
        let result = tokio::select! {
            _ = control.cancel.cancelled() => CodeExecutionResult::aborted(String::new(), true),
            answer = tokio::time::timeout(deadline, call) => match answer {
                Err(_) => CodeExecutionResult::session_timed_out(deadline.as_secs_f64()),
                Ok(Err(reason)) => CodeExecutionResult::call_failed(&reason),
                Ok(Ok(tool)) => CodeExecutionResult::from_tool_result(tool),
            },
        };
        if let Some(sink) = &control.sink {
            replay(sink.as_ref(), &result);
        }
        result
    })
}

/// What a session that cannot stream tells the sink once its answer is in.
pub fn replay(sink: &dyn OutputSink, result: &CodeExecutionResult) {
    let at = now_ns();
    if let Some(logs) = &result.logs {
        logs.stdout.iter().for_each(|c| sink.stdout(c, at));
        logs.stderr.iter().for_each(|c| sink.stderr(c, at));
    }
    result.results.iter().flatten().for_each(|i| sink.result(i));
    if let Some(error) = &result.error {
        sink.error(error);
    }
}

/// A context tool's `data`, or its failure as the error it names.
fn tool_answer(answer: Result<McpToolResult, String>) -> Result<String, CodebayError> {
    match answer {
        Ok(tool) if tool.success => Ok(tool.data),
        Ok(tool) => Err(CodebayError::from_tool_message(&tool.error_message)),
        Err(reason) => Err(CodebayError::error(
            ErrorCode::ToolFailed,
            format!("The session's tool call failed: {reason}"),
        )),
    }
}

fn parse_tool_answer<T: serde::de::DeserializeOwned>(
    answer: Result<McpToolResult, String>,
    what: &str,
) -> Result<T, CodebayError> {
    let data = tool_answer(answer)?;
    serde_json::from_str(&data).map_err(|e| {
        CodebayError::error(
            ErrorCode::ToolFailed,
            format!("The session answered something that is not {what}: {e}"),
        )
    })
}
