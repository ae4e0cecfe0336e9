//! `AgentBaySession`: a cloud session of AgentBay, as JavaScript sees it. The wire and
//! the rules are `codebay_remote::agentbay`'s.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use codebay_core::McpToolResult as CoreToolResult;
use codebay_remote::agentbay::{process_env, AttachOptions, CreateOptions};

use crate::code::Code;
use crate::convert;
use crate::errors;
use crate::files::Files;
use crate::types::McpToolResult;

/// A session in AgentBay's cloud (the `code_latest` image): the same `Code` as a
/// `LocalSession`, over AgentBay's OpenAPI.
#[napi]
pub struct AgentBaySession {
    inner: codebay_remote::AgentBaySession,
}

/// What `delete()` resolves with (AgentBay's `DeleteResult`).
#[napi(object)]
pub struct DeleteResult {
    pub request_id: String,
    pub success: bool,
    pub error_message: Option<String>,
}

impl From<codebay_remote::DeleteResult> for DeleteResult {
    fn from(r: codebay_remote::DeleteResult) -> Self {
        DeleteResult {
            request_id: r.request_id,
            success: r.success,
            error_message: r.error_message,
        }
    }
}

#[napi]
impl AgentBaySession {
    /// Creates a cloud session (`CreateMcpSession`). Rejects with `ERR_CODEBAY_NO_API_KEY`
    /// before any request when there is no key, with `ERR_CODEBAY_INVALID_OPTION` for a
    /// bad option, and with `ERR_CODEBAY_REMOTE_FAILED` when the cloud refuses
    /// (`[Code] Message`), does not answer within `timeoutMs`, or cannot be reached.
    #[napi(
        ts_args_type = "options?: AgentBaySessionOptions | undefined | null",
        ts_return_type = "Promise<AgentBaySession>"
    )]
    pub fn create<'env>(
        env: &'env Env,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, AgentBaySession>> {
        let creating = convert::options_value(env, &options, "AgentBaySession.create")
            .and_then(|value| CreateOptions::from_json(&value, &process_env))
            .map(|options| async move {
                let inner = codebay_remote::AgentBaySession::create(options).await?;
                Ok(AgentBaySession { inner })
            });
        errors::settle_started(env, creating)
    }

    /// Uses an existing cloud session; nothing is sent until it is used.
    #[napi(
        ts_args_type = "options: AgentBayAttachOptions",
        ts_return_type = "Promise<AgentBaySession>"
    )]
    pub fn attach<'env>(
        env: &'env Env,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, AgentBaySession>> {
        let attaching = convert::options_value(env, &options, "AgentBaySession.attach")
            .and_then(|value| AttachOptions::from_json(&value, &process_env))
            .map(|options| async move {
                let inner = codebay_remote::AgentBaySession::attach(options);
                Ok(AgentBaySession { inner })
            });
        errors::settle_started(env, attaching)
    }

    /// A `Code` over this session: `runCode` sends `{ code, language, timeout_s }`.
    #[napi(getter)]
    pub fn code(&self) -> Code {
        Code::wrap(Arc::new(self.inner.clone()))
    }

    /// The cloud session's files, through its filesystem tools (text only).
    #[napi(getter)]
    pub fn files(&self) -> Files {
        Files::wrap(Arc::new(self.inner.clone()))
    }

    /// The cloud session's web view (empty for an attached session).
    #[napi(getter)]
    pub fn resource_url(&self) -> String {
        self.inner.resource_url().to_owned()
    }

    /// One `CallMcpTool`. Never rejects: a refusal, a timeout or a network failure is a
    /// result with `success: false` and an `errorMessage` that names it.
    #[napi(
        ts_args_type = "toolName: string, args: any, autoGenSession?: boolean",
        ts_return_type = "Promise<McpToolResult>"
    )]
    pub fn call_mcp_tool<'env>(
        &self,
        env: &'env Env,
        tool_name: Unknown,
        args: Unknown,
        auto_gen_session: Unknown,
    ) -> Result<PromiseRaw<'env, McpToolResult>> {
        let auto_gen = errors::is(&auto_gen_session, ValueType::Boolean)
            // SAFETY: just checked to be a boolean of this env.
            && unsafe { bool::from_napi_value(env.raw(), auto_gen_session.raw()) }.unwrap_or(false);
        convert::call_mcp_tool(
            env,
            &tool_name,
            &args,
            |refusal| CoreToolResult::failed(refusal, String::new()),
            |name, args| self.inner.call(name, &args, auto_gen),
        )
    }

    /// The API key the session calls with.
    #[napi(js_name = "getAPIKey")]
    pub fn get_api_key(&self) -> String {
        codebay_core::Session::api_key(&self.inner)
    }

    #[napi]
    pub fn get_session_id(&self) -> String {
        self.inner.id().to_owned()
    }

    /// Releases the cloud session (`ReleaseMcpSession`). Idempotent; never rejects.
    #[napi]
    pub async fn delete(&self) -> DeleteResult {
        self.inner.delete().await.into()
    }

    /// `delete()`.
    #[napi]
    pub async fn close(&self) -> DeleteResult {
        self.inner.delete().await.into()
    }

    /// Names the session and where it is, never the key.
    #[napi(js_name = "toString")]
    pub fn to_js_string(&self) -> String {
        format!(
            "AgentBaySession({} at {})",
            self.inner.id(),
            self.inner.endpoint()
        )
    }
}
