//! `RemoteSession`: a session of a `codebay serve` over MCP, as JavaScript sees it. The
//! client and the rules are `codebay_remote::remote`'s.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use codebay_core::McpToolResult as CoreToolResult;
use codebay_remote::agentbay::process_env;
use codebay_remote::remote::ConnectOptions;

use crate::code::Code;
use crate::convert;
use crate::errors;
use crate::files::Files;
use crate::types::McpToolResult;

/// A sandbox session on a `codebay serve` (or a list of them), over MCP Streamable
/// HTTP: the same `Code` and `files` as a `LocalSession`, with streaming and abort.
#[napi]
pub struct RemoteSession {
    inner: codebay_remote::RemoteSession,
}

#[napi]
impl RemoteSession {
    /// Opens an MCP session on the first endpoint, round robin, that takes one (one
    /// that refuses or is down is skipped). Rejects with `ERR_CODEBAY_REMOTE_FAILED`
    /// naming each endpoint's reason.
    #[napi(
        ts_args_type = "options: RemoteSessionOptions",
        ts_return_type = "Promise<RemoteSession>"
    )]
    pub fn connect<'env>(
        env: &'env Env,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, RemoteSession>> {
        let connecting = convert::options_value(env, &options, "RemoteSession.connect")
            .and_then(|value| ConnectOptions::from_json(&value, &process_env))
            .map(|options| async move {
                let inner = codebay_remote::RemoteSession::connect(options).await?;
                Ok(RemoteSession { inner })
            });
        errors::settle_started(env, connecting)
    }

    #[napi(getter)]
    pub fn code(&self) -> Code {
        Code::wrap(Arc::new(self.inner.clone()))
    }

    #[napi(getter)]
    pub fn files(&self) -> Files {
        Files::wrap(Arc::new(self.inner.clone()))
    }

    /// One `tools/call`. Never rejects: a failure is a result with `success: false`.
    #[napi(
        ts_args_type = "toolName: string, args: any, autoGenSession?: boolean",
        ts_return_type = "Promise<McpToolResult>"
    )]
    pub fn call_mcp_tool<'env>(
        &self,
        env: &'env Env,
        tool_name: Unknown,
        args: Unknown,
        _auto_gen_session: Unknown,
    ) -> Result<PromiseRaw<'env, McpToolResult>> {
        convert::call_mcp_tool(
            env,
            &tool_name,
            &args,
            |refusal| CoreToolResult::failed(refusal, String::new()),
            |name, args| self.inner.call(name, args),
        )
    }

    /// The API key the session calls with.
    #[napi(js_name = "getAPIKey")]
    pub fn get_api_key(&self) -> String {
        codebay_core::Session::api_key(&self.inner)
    }

    /// The MCP session id.
    #[napi]
    pub fn get_session_id(&self) -> String {
        self.inner.id().to_owned()
    }

    /// Ends the MCP session (the server closes its sandbox). Idempotent.
    #[napi]
    pub async fn close(&self) {
        self.inner.close().await
    }

    /// Names the session and where it is, never the key.
    #[napi(js_name = "toString")]
    pub fn to_js_string(&self) -> String {
        format!(
            "RemoteSession({} at {})",
            self.inner.id(),
            self.inner.endpoint()
        )
    }
}
