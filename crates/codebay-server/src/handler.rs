//! The MCP handler of one session: its tools over the session's sandbox.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codebay_core::{
    Cancel, CodeExecutionResult, CodeExecutionResultItem, ErrorInfo, OutputSink, RunControl,
    RunRequest, Session,
};
use codebay_protocol::mcp::ORDERED_NOTICES_META;
use codebay_protocol::tool::RUN_CODE;
use codebay_protocol::{BackendOutput, MimeBundle, OutputNotice};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::sessions::{Slot, State};
use crate::tools;

/// How long a finished run waits for its last notifications to be sent before it
/// answers anyway (a client that stopped reading must not hold the answer).
const NOTICE_FLUSH: Duration = Duration::from_secs(2);

/// A pause between a run's last notification and its answer. The TypeScript SDK
/// handles a notification a microtask later than a response that arrived in the same
/// read, and drops progress for a request already answered: without the pause, the
/// last chunks (and the main result) of a fast run are lost to it. A client that
/// handles messages in order says so with `_meta["codebay/orderedNotices"]: true`.
const NOTICE_GAP: Duration = Duration::from_millis(3);

#[derive(Clone)]
pub struct Handler {
    state: Arc<State>,
    slot: Arc<Slot>,
}

impl Handler {
    pub fn new(state: Arc<State>) -> Handler {
        let slot = Arc::new(Slot::new(state.clone()));
        Handler { state, slot }
    }

    pub fn slot(&self) -> Arc<Slot> {
        self.slot.clone()
    }

    async fn session(&self) -> Result<Arc<dyn Session>, McpError> {
        match self.slot.session() {
            Some(session) => Ok(session),
            // A client that skipped `initialize` (stdio allows it): made now.
            None => self.slot.open().await,
        }
    }

    async fn run_code(
        &self,
        session: Arc<dyn Session>,
        args: Value,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let request = RunRequest::from_tool_args(session.registry(), &args)
            .map_err(|e| McpError::invalid_params(e.message, None))?;
        let cancel = Cancel::default();
        // The run goes on in a task of its own: a handler future dropped mid-run (a
        // connection gone) must still stop the run, not leave it orphaned.
        let stop_on_drop = CancelOnDrop(cancel.clone());
        let (sink, notices) = match context.meta.get_progress_token() {
            Some(token) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let unsent = Arc::new(AtomicUsize::new(0));
                let sink: Arc<dyn OutputSink> = Arc::new(NoticeSink {
                    tx,
                    unsent: unsent.clone(),
                    behind: AtomicBool::new(false),
                });
                (
                    Some(sink),
                    Some(tokio::spawn(forward(
                        context.peer.clone(),
                        token,
                        rx,
                        unsent,
                    ))),
                )
            }
            None => (None, None),
        };
        let watch = {
            let (cancel, ct, shutdown) = (
                cancel.clone(),
                context.ct.clone(),
                self.state.shutdown.clone(),
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = ct.cancelled() => cancel.cancel(),
                    _ = shutdown.cancelled() => cancel.cancel(),
                }
            })
        };
        let started = Instant::now();
        let run = session.run(request, RunControl { sink, cancel });
        let result = tokio::spawn(run).await;
        watch.abort();
        drop(stop_on_drop.disarm());
        let result =
            result.map_err(|e| McpError::internal_error(format!("the run failed: {e}"), None))?;
        let failure = (!result.success).then(|| {
            result
                .error
                .as_ref()
                .map_or("Error".to_owned(), |e| e.name.clone())
        });
        self.state
            .metrics
            .record_run(started.elapsed(), failure.as_deref());
        if let Some(notices) = notices {
            // The sink went with the run, so the forwarder ends once it has sent all.
            let sent = tokio::time::timeout(NOTICE_FLUSH, notices).await;
            let ordered = context.meta.0 .0.get(ORDERED_NOTICES_META) == Some(&Value::Bool(true));
            if matches!(sent, Ok(Ok(n)) if n > 0) && !ordered {
                tokio::time::sleep(NOTICE_GAP).await;
            }
        }
        Ok(run_answer(&result))
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("codebay", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Runs Python and JavaScript in an isolated sandbox of this session: run_code keeps \
                 each language's state between calls; the file tools read and write /home/user and /tmp.",
            )
    }

    /// Only the revisions with sessions: each MCP session owns one sandbox, and
    /// 2026-07-28 drops sessions.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        let info = self.negotiate_initialize(&request)?;
        self.slot.open().await?;
        context.peer.set_peer_info(request);
        Ok(info)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::all()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let args = Value::Object(request.arguments.unwrap_or_default());
        if name != RUN_CODE {
            tools::check_args(&name, &args).map_err(|m| McpError::invalid_params(m, None))?;
        }
        let session = self.session().await?;
        if name == RUN_CODE {
            return self.run_code(session, args, context).await.map(Into::into);
        }
        let answer = session.call_tool(&name, args).await;
        Ok(match answer {
            Ok(tool) if tool.success => {
                CallToolResult::success(vec![ContentBlock::text(tool.data)])
            }
            Ok(tool) => CallToolResult::error(vec![ContentBlock::text(tool.error_message)]),
            Err(reason) => CallToolResult::error(vec![ContentBlock::text(reason)]),
        }
        .into())
    }
}

struct CancelOnDrop(Cancel);

impl CancelOnDrop {
    fn disarm(self) -> Cancel {
        let me = std::mem::ManuallyDrop::new(self);
        me.0.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Sends each notice as `notifications/progress`, in order, numbered 1, 2, 3...
/// The notices of one run not yet sent, in bytes, past which more are not streamed. A
/// client that does not read its stream would otherwise have the server hold all its
/// output twice (the run's answer holds all of it anyway).
const UNSENT_NOTICE_BYTES: usize = 4 * 1024 * 1024;

async fn forward(
    peer: Peer<RoleServer>,
    token: ProgressToken,
    mut notices: mpsc::UnboundedReceiver<String>,
    unsent: Arc<AtomicUsize>,
) -> u64 {
    let mut n = 0u64;
    while let Some(notice) = notices.recv().await {
        n += 1;
        let size = notice.len();
        let param = ProgressNotificationParam::new(token.clone(), n as f64).with_message(notice);
        let sent = peer.notify_progress(param).await;
        unsent.fetch_sub(size, Ordering::SeqCst);
        if sent.is_err() {
            // The client is gone; the run's answer will not reach it either.
            return n;
        }
    }
    n
}

/// Streams a run's output as notices while the client keeps up; once it falls
/// behind, no more (what it got is a prefix of the output, never one with holes).
struct NoticeSink {
    tx: mpsc::UnboundedSender<String>,
    unsent: Arc<AtomicUsize>,
    behind: AtomicBool,
}

impl NoticeSink {
    fn send(&self, notice: OutputNotice) {
        if self.behind.load(Ordering::SeqCst) {
            return;
        }
        let json = notice.to_json();
        let size = json.len();
        let within = self
            .unsent
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n + size <= UNSENT_NOTICE_BYTES).then_some(n + size)
            })
            .is_ok();
        if !within {
            self.behind.store(true, Ordering::SeqCst);
        } else if self.tx.send(json).is_err() {
            self.unsent.fetch_sub(size, Ordering::SeqCst);
        }
    }
}

impl OutputSink for NoticeSink {
    fn stdout(&self, chunk: &str, timestamp_ns: u64) {
        self.send(OutputNotice::Stdout {
            text: chunk.to_owned(),
            timestamp: timestamp_ns,
        });
    }

    fn stderr(&self, chunk: &str, timestamp_ns: u64) {
        self.send(OutputNotice::Stderr {
            text: chunk.to_owned(),
            timestamp: timestamp_ns,
        });
    }

    fn result(&self, item: &CodeExecutionResultItem) {
        self.send(OutputNotice::Result { item: bundle(item) });
    }

    fn error(&self, error: &ErrorInfo) {
        self.send(OutputNotice::Error {
            error: error.clone(),
        });
    }
}

/// An item back as its MIME bundle (DESIGN §2). A chart goes under `e2b/chart`, the
/// key that maps back to `chart`.
pub fn bundle(item: &CodeExecutionResultItem) -> MimeBundle {
    let mut b = Map::new();
    for (mime, value) in [
        ("text/plain", &item.text),
        ("text/html", &item.html),
        ("text/markdown", &item.markdown),
        ("image/png", &item.png),
        ("image/jpeg", &item.jpeg),
        ("image/svg+xml", &item.svg),
        ("text/latex", &item.latex),
    ] {
        if let Some(v) = value {
            b.insert(mime.into(), Value::String(v.clone()));
        }
    }
    if let Some(json) = &item.json {
        b.insert("application/json".into(), json.clone());
    }
    if let Some(chart) = &item.chart {
        b.insert("e2b/chart".into(), chart.clone());
    }
    if let Some(main) = item.is_main_result {
        b.insert("isMainResult".into(), Value::Bool(main));
    }
    b
}

/// The tool result of a run: its DESIGN §2 JSON as text (or the bare message of a
/// run that never reached the sandbox), `isError` when it failed, images beside.
pub fn run_answer(result: &CodeExecutionResult) -> CallToolResult {
    let Some(logs) = &result.logs else {
        let message = result.error_message.clone().unwrap_or_default();
        return match result.success {
            true => CallToolResult::success(vec![ContentBlock::text(result.result.clone())]),
            false => CallToolResult::error(vec![ContentBlock::text(message)]),
        };
    };
    let items = result.results.as_deref().unwrap_or_default();
    let output = BackendOutput {
        stdout: logs.stdout.clone(),
        stderr: logs.stderr.clone(),
        result: items
            .iter()
            .map(|i| Value::String(Value::Object(bundle(i)).to_string()))
            .collect(),
        execution_error: match result.success {
            true => String::new(),
            false => result
                .error_message
                .clone()
                .or_else(|| result.error.as_ref().map(ErrorInfo::summary))
                .unwrap_or_else(|| "the code did not run successfully".into()),
        },
        execution_time: result.execution_time,
        execution_count: result.execution_count,
        error: result.error.clone(),
    };
    let mut content = vec![ContentBlock::text(output.to_json())];
    for item in items {
        if let Some(png) = &item.png {
            content.push(ContentBlock::image(png.clone(), "image/png"));
        }
        if let Some(jpeg) = &item.jpeg {
            content.push(ContentBlock::image(jpeg.clone(), "image/jpeg"));
        }
    }
    match result.success {
        true => CallToolResult::success(content),
        false => CallToolResult::error(content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codebay_core::Logs;

    #[test]
    fn a_client_behind_gets_a_prefix_of_the_output_and_no_more() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let unsent = Arc::new(AtomicUsize::new(0));
        let sink = NoticeSink {
            tx,
            unsent: unsent.clone(),
            behind: AtomicBool::new(false),
        };
        let chunk = "x".repeat(64 * 1024);
        for i in 0..100 {
            sink.stdout(&format!("{i:03}{chunk}"), 0);
        }
        let queued: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert!(unsent.load(Ordering::SeqCst) <= UNSENT_NOTICE_BYTES);
        assert!(queued.len() > 10 && queued.len() < 100, "{}", queued.len());
        for (i, notice) in queued.iter().enumerate() {
            assert!(
                notice.contains(&format!("\"{i:03}x")),
                "in order, none missing"
            );
        }
        // Caught up again, it still gets nothing more: no hole in what it has.
        unsent.store(0, Ordering::SeqCst);
        sink.stdout("later", 0);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_run_answers_its_backend_json_with_images_beside() {
        let result = CodeExecutionResult {
            request_id: "r1".into(),
            success: true,
            result: "42".into(),
            logs: Some(Logs {
                stdout: vec!["hi\n".into()],
                stderr: vec![],
            }),
            results: Some(vec![
                CodeExecutionResultItem {
                    png: Some("iVBO".into()),
                    ..Default::default()
                },
                CodeExecutionResultItem {
                    text: Some("42".into()),
                    is_main_result: Some(true),
                    ..Default::default()
                },
            ]),
            execution_count: Some(1),
            ..Default::default()
        };
        let answer = run_answer(&result);
        assert_eq!(answer.is_error, Some(false));
        let text = answer.content[0].as_text().unwrap().text.clone();
        let back = CodeExecutionResult::from_tool_result(codebay_core::McpToolResult::ok(
            text,
            "r1".into(),
        ));
        assert_eq!(back.result, "42");
        assert_eq!(back.logs, result.logs);
        assert_eq!(back.results, result.results);
        assert!(matches!(&answer.content[1], ContentBlock::Image(i) if i.mime_type == "image/png"));
    }

    #[test]
    fn a_failed_run_is_an_error_with_its_error() {
        let result =
            CodeExecutionResult::failed("r2".into(), ErrorInfo::new("TimeoutError", "too slow"));
        let answer = run_answer(&result);
        assert_eq!(answer.is_error, Some(true));
        let text = answer.content[0].as_text().unwrap().text.clone();
        let back = CodeExecutionResult::from_tool_result(codebay_core::McpToolResult::failed(
            text,
            "r2".into(),
        ));
        assert!(!back.success);
        assert_eq!(back.error.unwrap().name, "TimeoutError");
    }
}
