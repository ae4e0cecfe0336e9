//! `AgentBaySession`: a cloud session of AgentBay as a `codebay_core::Session`. Every
//! tool call is one `CallMcpTool`; `Code` runs over it unchanged (DESIGN §1.1), with the
//! output replayed to streaming callbacks at the end (the cloud's streaming protocol is
//! not spoken here).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codebay_core::{
    BoxFuture, CodeContext, CodebayError, ErrorCode, FileEntry, McpToolResult, RunRequest, Session,
};
use codebay_protocol::agentbay::{
    js_json, Action, CallMcpToolForm, CreateMcpSessionData, CreateMcpSessionForm,
    ReleaseMcpSessionForm,
};
use serde_json::Value;
use tokio::sync::Mutex;

use super::answer::tool_result;
use super::files;
use super::options::{AttachOptions, Connection, CreateOptions};

/// How long `create()` waits before its one retry after a connection error.
const CREATE_RETRY_DELAY: Duration = Duration::from_millis(250);

/// What `delete()` resolves with (the SDK's `DeleteResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteResult {
    pub request_id: String,
    pub success: bool,
    pub error_message: Option<String>,
}

/// A cloud session. Clones share it.
#[derive(Clone)]
pub struct AgentBaySession(Arc<State>);

struct State {
    connection: Connection,
    id: String,
    resource_url: String,
    deleted: AtomicBool,
    /// Held while a release is in flight, so that concurrent deletes send one request;
    /// keeps the successful result, which every later delete returns.
    release: Mutex<Option<DeleteResult>>,
}

impl std::fmt::Debug for AgentBaySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBaySession")
            .field("id", &self.0.id)
            .field("endpoint", &self.0.connection.api.endpoint().as_str())
            .finish_non_exhaustive()
    }
}

fn sdk_stats() -> String {
    serde_json::json!({
        "source": "sdk",
        "sdk_language": "typescript",
        "sdk_version": env!("CARGO_PKG_VERSION"),
        "is_release": true,
        "framework": "codebay",
    })
    .to_string()
}

impl AgentBaySession {
    /// `CreateMcpSession`, retried once if the connection could not be made (nothing
    /// reached the gateway then, so nothing is created twice).
    pub async fn create(options: CreateOptions) -> Result<AgentBaySession, CodebayError> {
        let CreateOptions {
            connection,
            image_id,
            labels,
        } = options;
        let form = CreateMcpSessionForm {
            authorization: connection.key.bearer(),
            image_id: Some(image_id),
            labels: labels.map(|l| serde_json::to_string(&l).expect("labels serialise")),
            sdk_stats: sdk_stats(),
        };
        let api = &connection.api;
        let mut answer = api.call(Action::CreateMcpSession, &form).await;
        if matches!(&answer, Err(e) if e.is_connect()) {
            tokio::time::sleep(CREATE_RETRY_DELAY).await;
            answer = api.call(Action::CreateMcpSession, &form).await;
        }
        let failed = |why: String, request_id: &str| {
            let id = match request_id {
                "" => String::new(),
                id => format!(" (request id {id})"),
            };
            CodebayError::error(
                ErrorCode::RemoteFailed,
                format!("AgentBay could not create a session: {why}{id}"),
            )
        };
        let envelope = answer.map_err(|e| failed(e.to_string(), &e.request_id()))?;
        let request_id = envelope.request_id.clone().unwrap_or_default();
        let data = match envelope.data {
            Some(data @ Value::Object(_)) => {
                serde_json::from_value::<CreateMcpSessionData>(data)
                    .map_err(|e| failed(format!("its Data is not a session: {e}"), &request_id))?
            }
            _ => return Err(failed("the answer has no Data object".into(), &request_id)),
        };
        if data.success == Some(false) {
            let why = data.err_msg.filter(|m| !m.is_empty());
            return Err(failed(
                why.unwrap_or_else(|| "Session creation failed".into()),
                &request_id,
            ));
        }
        let id = data
            .session_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| failed("the answer has no SessionId".into(), &request_id))?;
        Ok(AgentBaySession::new(
            connection,
            id,
            data.resource_url.unwrap_or_default(),
        ))
    }

    /// An existing cloud session; nothing is sent until it is used.
    pub fn attach(options: AttachOptions) -> AgentBaySession {
        AgentBaySession::new(options.connection, options.session_id, String::new())
    }

    fn new(connection: Connection, id: String, resource_url: String) -> AgentBaySession {
        AgentBaySession(Arc::new(State {
            connection,
            id,
            resource_url,
            deleted: AtomicBool::new(false),
            release: Mutex::new(None),
        }))
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The cloud session's web view, when `create()` got one.
    pub fn resource_url(&self) -> &str {
        &self.0.resource_url
    }

    pub fn endpoint(&self) -> &str {
        self.0.connection.api.endpoint().as_str()
    }

    /// One `CallMcpTool`. Never fails: what went wrong is a failed result naming it.
    /// `run_code` is sent once and never retried (it is not idempotent).
    pub fn call(
        &self,
        name: &str,
        args: &Value,
        auto_gen_session: bool,
    ) -> BoxFuture<McpToolResult> {
        if self.0.deleted.load(Ordering::SeqCst) {
            let closed = CodebayError::error(
                ErrorCode::SessionClosed,
                format!("The AgentBay session {} was deleted.", self.0.id),
            );
            let result = McpToolResult::failed(closed.to_tool_message(), String::new());
            return Box::pin(async move { result });
        }
        let form = CallMcpToolForm {
            args: js_json(args),
            authorization: self.0.connection.key.bearer(),
            auto_gen_session,
            name: name.to_owned(),
            server: String::new(),
            session_id: self.0.id.clone(),
        };
        let (api, name) = (self.0.connection.api.clone(), name.to_owned());
        Box::pin(async move { tool_result(&name, api.call(Action::CallMcpTool, &form).await) })
    }

    /// `ReleaseMcpSession`. Idempotent: once released, every later call answers with
    /// that result and sends nothing; a failed release can be tried again.
    pub async fn delete(&self) -> DeleteResult {
        let mut release = self.0.release.lock().await;
        if let Some(done) = &*release {
            return done.clone();
        }
        let form = ReleaseMcpSessionForm {
            authorization: self.0.connection.key.bearer(),
            session_id: self.0.id.clone(),
        };
        let result = match self
            .0
            .connection
            .api
            .call(Action::ReleaseMcpSession, &form)
            .await
        {
            Ok(envelope) => DeleteResult {
                request_id: envelope.request_id.unwrap_or_default(),
                success: true,
                error_message: None,
            },
            Err(e) => DeleteResult {
                request_id: e.request_id(),
                success: false,
                error_message: Some(format!("Failed to delete session {}: {e}", self.0.id)),
            },
        };
        if result.success {
            self.0.deleted.store(true, Ordering::SeqCst);
            *release = Some(result.clone());
        }
        result
    }

    fn not_supported<T: Send + 'static>(what: &str) -> BoxFuture<Result<T, CodebayError>> {
        let e = CodebayError::error(
            ErrorCode::NotSupported,
            format!("{what} not supported by this session: AgentBay's cloud has no such tool"),
        );
        Box::pin(async move { Err(e) })
    }
}

impl Session for AgentBaySession {
    fn session_id(&self) -> String {
        self.0.id.clone()
    }

    fn api_key(&self) -> String {
        self.0.connection.key.expose().to_owned()
    }

    fn call_tool(&self, name: &str, args: Value) -> BoxFuture<Result<McpToolResult, String>> {
        let call = self.call(name, &args, false);
        Box::pin(async move { Ok(call.await) })
    }

    /// The cloud's `run_code` takes `code`, `language` and `timeout_s` only.
    fn check_run(&self, request: &RunRequest) -> Result<(), CodebayError> {
        let unsupported = if !request.envs.is_empty() {
            "envs"
        } else if request.context.is_some() {
            "context"
        } else {
            return Ok(());
        };
        Err(CodebayError::error(
            ErrorCode::NotSupported,
            format!(
                "The run option {unsupported} is not supported by this session: AgentBay's \
                 run_code takes only code, language and timeout_s"
            ),
        ))
    }

    fn create_context(
        &self,
        _language: String,
        _cwd: Option<String>,
    ) -> BoxFuture<Result<CodeContext, CodebayError>> {
        Self::not_supported("Code contexts are")
    }

    fn list_contexts(&self) -> BoxFuture<Result<Vec<CodeContext>, CodebayError>> {
        Self::not_supported("Code contexts are")
    }

    fn restart_context(&self, _id: String) -> BoxFuture<Result<(), CodebayError>> {
        Self::not_supported("Code contexts are")
    }

    fn remove_context(&self, _id: String) -> BoxFuture<Result<(), CodebayError>> {
        Self::not_supported("Code contexts are")
    }

    fn write_file(&self, path: String, data: Vec<u8>) -> BoxFuture<Result<(), CodebayError>> {
        files::write(self.clone(), path, data)
    }

    fn read_file(&self, path: String) -> BoxFuture<Result<Vec<u8>, CodebayError>> {
        files::read(self.clone(), path)
    }

    fn list_files(&self, path: String) -> BoxFuture<Result<Vec<FileEntry>, CodebayError>> {
        files::list(self.clone(), path)
    }

    fn remove_file(&self, path: String) -> BoxFuture<Result<(), CodebayError>> {
        files::remove(self.clone(), path)
    }

    fn file_exists(&self, path: String) -> BoxFuture<Result<bool, CodebayError>> {
        files::exists(self.clone(), path)
    }

    fn close(&self) -> BoxFuture<()> {
        let this = self.clone();
        Box::pin(async move {
            this.delete().await;
        })
    }
}
