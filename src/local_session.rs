//! `LocalSession`: the embedded sandbox, as JavaScript sees it.

use std::path::PathBuf;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use codebay_core::{Placement, Registry, SessionOptions};

use crate::code::Code;
use crate::errors;
use crate::files::Files;
use crate::types::McpToolResult;

/// One isolated sandbox on this machine, with a stateful context per language and
/// the code contexts made in it.
#[napi]
pub struct LocalSession {
    inner: codebay_core::LocalSession,
}

#[napi]
impl LocalSession {
    /// Builds a sandbox (or takes one the pool built ahead). Rejects with a `TypeError`
    /// or `RangeError` (`ERR_CODEBAY_INVALID_OPTION`) for a bad option, and with
    /// `ERR_CODEBAY_KERNEL_UNSUPPORTED` naming the missing piece if the kernel lacks what
    /// isolation needs: code never runs unisolated.
    #[napi(
        ts_args_type = "options?: LocalSessionOptions | undefined | null",
        ts_return_type = "Promise<LocalSession>"
    )]
    pub fn create<'env>(
        env: &'env Env,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, LocalSession>> {
        let placement = placement();
        let options = crate::convert::options_value(env, &options, "LocalSession.create")
            .and_then(|value| SessionOptions::from_json(&value, &placement.registry));
        let creating = options.map(|options| async move {
            let inner = codebay_core::local::pool::acquire(options, placement).await?;
            Ok(LocalSession { inner })
        });
        errors::settle_started(env, creating)
    }

    /// Closes every idle sandbox the pool holds (over all option sets) and resolves
    /// with how many. The pool holds at most 4 idle sandboxes in all, ~15 MiB each, and
    /// closes one left unused for 5 minutes; this frees them now.
    #[napi]
    pub async fn drain_pool() -> u32 {
        codebay_core::local::pool::drain().await as u32
    }

    /// A `Code` that runs in this session without a hop through JavaScript.
    #[napi(getter)]
    pub fn code(&self) -> Code {
        Code::wrap(Arc::new(self.inner.clone()))
    }

    /// The session's files (`/home/user` and `/tmp`), read and written as the code's
    /// user, with the code's confinement.
    #[napi(getter)]
    pub fn files(&self) -> Files {
        Files::wrap(Arc::new(self.inner.clone()))
    }

    /// The session as a tool server: `run_code` with `{ code, language, timeout_s,
    /// envs?, context? }`, and the code-context tools. Never rejects: unknown tools
    /// and bad arguments give `success: false`.
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
        crate::convert::call_mcp_tool(
            env,
            &tool_name,
            &args,
            |refusal| self.inner.refuse(refusal),
            // Called synchronously so that runs are queued in the order of these calls.
            |name, args| self.inner.call_tool_now(name, &args),
        )
    }

    /// `''`: a local session needs no key.
    #[napi(js_name = "getAPIKey")]
    pub fn get_api_key(&self) -> String {
        String::new()
    }

    /// Unique, stable for the session's life.
    #[napi]
    pub fn get_session_id(&self) -> String {
        self.inner.id().to_owned()
    }

    /// Kills every process of the session and removes its cgroups and workspace.
    /// Idempotent; afterwards every call answers with a failure.
    #[napi]
    pub async fn close(&self) {
        self.inner.close().await
    }
}

/// Where this package's parts are: the helper and the drivers beside the addon.
pub(crate) fn placement() -> Placement {
    let dir = crate::package_files::package_dir();
    let sandbox_binary = std::env::var_os("CODEBAY_SANDBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("codebay-sandbox"));
    Placement {
        sandbox_binary,
        runtimes_dir: dir.join("runtimes"),
        // The Node running this addon is the one to put in the sandbox.
        node: std::env::current_exe().ok(),
        registry: Registry::default(),
    }
}
