//! `LocalSession`: the embedded sandbox, as JavaScript sees it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::code::Code;
use crate::types::McpToolResult;

/// Options of `LocalSession.create()`. Every field is optional.
#[napi(object)]
#[derive(Default)]
pub struct LocalSessionOptions {
    /// Memory of the whole session (all its processes and its tmpfs files). Default 512 MiB.
    pub memory_bytes: Option<f64>,
    /// Processes and threads of the session at once. Default 64.
    pub max_processes: Option<u32>,
    /// CPU quota in cores (e.g. 0.5). Default: all cores.
    pub cpu_cores: Option<f64>,
    /// Share the host's network (all its interfaces and loopback services). Default false:
    /// an empty network namespace and no TCP connect or bind.
    pub network: Option<bool>,
    /// Variables added to the code's environment (which otherwise holds only PATH, HOME,
    /// LANG and PYTHONUNBUFFERED).
    pub env: Option<HashMap<String, String>>,
    /// Size of the writable workspace `/home/user`. Default 512 MiB.
    pub workspace_bytes: Option<f64>,
    /// Size of `/tmp`. Default 256 MiB.
    pub tmp_bytes: Option<f64>,
    /// Output kept per stream per run; the rest is counted and dropped. Default 10 MiB.
    pub output_limit_bytes: Option<f64>,
    /// The python3 to use (resolved past shims such as pyenv's). Default: `python3` on PATH.
    pub python: Option<String>,
    /// Sandboxes kept built and ready for `create()` calls with the same options,
    /// refilled in the background. Default 2; 0 disables the pool. At most 16.
    pub pool_size: Option<u32>,
    /// Interpreters started in every new sandbox before its first run.
    /// Default `['python']`; `[]` starts each on first use.
    #[napi(ts_type = "Array<'python' | 'javascript'>")]
    pub prewarm: Option<Vec<String>>,
}

/// One isolated sandbox on this machine, with a stateful Python and JavaScript context.
#[napi]
pub struct LocalSession {
    pub(crate) inner: Arc<codebay_core::LocalSession>,
}

#[napi]
impl LocalSession {
    /// Builds a sandbox. Rejects, naming the missing piece, if the kernel lacks what
    /// isolation needs: code never runs unisolated.
    #[napi(
        ts_args_type = "options?: LocalSessionOptions | undefined | null",
        ts_return_type = "Promise<LocalSession>"
    )]
    pub fn create<'env>(
        env: &'env Env,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, LocalSession>> {
        // Read by hand so that every bad option rejects the promise with a TypeError
        // naming it, instead of throwing or being taken for no options.
        let options = match options.get_type()? {
            ValueType::Undefined | ValueType::Null => LocalSessionOptions::default(),
            // SAFETY: just checked to be an object of this env.
            ValueType::Object => {
                match unsafe { LocalSessionOptions::from_napi_value(env.raw(), options.raw()) } {
                    Ok(options) => options,
                    Err(e) => {
                        return PromiseRaw::reject(
                            env,
                            JsTypeError::from(Error::new(Status::InvalidArg, e.reason)),
                        )
                    }
                }
            }
            other => {
                let message = format!("LocalSession.create takes an options object, got {other}");
                return PromiseRaw::reject(
                    env,
                    JsTypeError::from(Error::new(Status::InvalidArg, message)),
                );
            }
        };
        let (options, pool) = match core_options(options) {
            Ok(checked) => checked,
            Err(e) => return PromiseRaw::reject(env, JsRangeError::from(e)),
        };
        env.spawn_future(async move {
            let inner = codebay_core::local::pool::acquire(options, pool)
                .await
                .map_err(|e| Error::from_reason(e.to_string()))?;
            Ok(LocalSession {
                inner: Arc::new(inner),
            })
        })
    }

    /// A `Code` that runs in this session without a hop through JavaScript.
    #[napi(getter)]
    pub fn code(&self) -> Code {
        Code::local(self.inner.clone())
    }

    /// The session as a tool server: `run_code` with `{ code, language, timeout_s }`.
    /// Never rejects: unknown tools and bad arguments give `success: false`.
    #[napi(
        ts_args_type = "toolName: string, args: any, autoGenSession?: boolean",
        ts_return_type = "Promise<McpToolResult>"
    )]
    pub fn call_mcp_tool<'env>(
        &self,
        env: &'env Env,
        tool_name: Unknown,
        args: Unknown,
        _auto_gen_session: Option<bool>,
    ) -> Result<PromiseRaw<'env, McpToolResult>> {
        // Read by hand: a tool server answers bad input with a failed result, never a throw.
        let tool_name = match tool_name.get_type()? {
            // SAFETY: just checked to be a string of this env.
            ValueType::String => unsafe { String::from_napi_value(env.raw(), tool_name.raw())? },
            _ => {
                let refused = self.inner.refuse("The tool name must be a string.".into());
                return PromiseRaw::resolve(env, refused.into());
            }
        };
        let args = match args.get_type()? {
            ValueType::Undefined => serde_json::Value::Null,
            // SAFETY: converting a live value of this env; a failure is handled below.
            _ => match unsafe { serde_json::Value::from_napi_value(env.raw(), args.raw()) } {
                Ok(args) => args,
                Err(e) => {
                    let message = format!(
                        "The arguments of '{tool_name}' must be JSON data: {}.",
                        e.reason
                    );
                    return PromiseRaw::resolve(env, self.inner.refuse(message).into());
                }
            },
        };
        // Called synchronously so that runs are queued in the order of these calls.
        let call = self.inner.call_tool(&tool_name, &args);
        env.spawn_future(async move { Ok(call.await.into()) })
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

fn core_options(
    o: LocalSessionOptions,
) -> Result<(codebay_core::SessionOptions, codebay_core::PoolOptions)> {
    let dir = crate::package_files::package_dir();
    let sandbox = std::env::var_os("CODEBAY_SANDBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("codebay-sandbox"));
    let mut options = codebay_core::SessionOptions::new(sandbox, dir.join("runtimes"));
    let bytes = |name: &str, v: Option<f64>, default: u64| -> Result<u64> {
        match v {
            None => Ok(default),
            Some(b) if b.is_finite() && b >= 0.0 && b.fract() == 0.0 && b <= 2f64.powi(53) => {
                Ok(b as u64)
            }
            Some(b) => Err(Error::new(
                Status::InvalidArg,
                format!("{name} must be a whole number of bytes, got {b}"),
            )),
        }
    };
    options.memory_bytes = bytes("memoryBytes", o.memory_bytes, options.memory_bytes)?;
    options.workspace_bytes = bytes("workspaceBytes", o.workspace_bytes, options.workspace_bytes)?;
    options.tmp_bytes = bytes("tmpBytes", o.tmp_bytes, options.tmp_bytes)?;
    options.output_cap_bytes = bytes(
        "outputLimitBytes",
        o.output_limit_bytes,
        options.output_cap_bytes as u64,
    )? as usize;
    options.max_processes = o.max_processes.unwrap_or(options.max_processes);
    options.cpu_cores = o.cpu_cores;
    options.network = o.network.unwrap_or(false);
    options.env = o.env.unwrap_or_default().into_iter().collect();
    options.python = o.python.map(PathBuf::from);
    // The Node running this addon is the one to put in the sandbox.
    options.node = std::env::current_exe().ok();
    let mut pool = codebay_core::PoolOptions::default();
    if let Some(size) = o.pool_size {
        if size as usize > codebay_core::local::pool::MAX_POOL_SIZE {
            return Err(Error::new(
                Status::InvalidArg,
                format!(
                    "poolSize must be at most {}, got {size}",
                    codebay_core::local::pool::MAX_POOL_SIZE
                ),
            ));
        }
        pool.size = size as usize;
    }
    if let Some(languages) = o.prewarm {
        pool.prewarm = languages
            .iter()
            .map(|l| {
                codebay_core::Language::parse(l)
                    .map_err(|e| Error::new(Status::InvalidArg, format!("prewarm: {e}")))
            })
            .collect::<Result<_>>()?;
    }
    Ok((options, pool))
}
