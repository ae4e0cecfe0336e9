//! `codebay serve` / `codebay mcp` for JavaScript: converts the options and hands them
//! to `codebay-server`, where the server lives.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use codebay_core::SessionOptions;
use codebay_server::{HttpServer, LocalFactory, SandboxFactory};

/// How `serve()` runs. Every field is optional.
#[napi(object)]
pub struct ServeOptions {
    /// `host:port` (default `127.0.0.1:8931`); port 0 picks a free port.
    pub listen: Option<String>,
    /// The key every request must bear as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// A file whose first line is the key (used when `apiKey` is not given; without
    /// either, `CODEBAY_API_KEY`).
    pub api_key_file: Option<String>,
    /// Sessions open at once (default: what fits in this machine's memory).
    pub max_sessions: Option<u32>,
    /// Seconds a session may stay unused before its sandbox is closed (default 600).
    pub idle_timeout_s: Option<f64>,
    /// Largest request body in bytes (default 16 MiB); larger is answered 413.
    pub max_body: Option<f64>,
    /// `Host` values to accept besides loopback (a pod behind a Service).
    pub allowed_hosts: Option<Vec<String>>,
    /// Browser origins to accept besides loopback and the server's own.
    pub allowed_origins: Option<Vec<String>>,
    /// The options every session's sandbox is made with (`LocalSession.create()`'s), e.g.
    /// `{ resourceLimits: 'rlimits' }` in a pod with no writable cgroup.
    #[napi(ts_type = "LocalSessionOptions")]
    pub session: Option<serde_json::Value>,
}

/// A running `serve()`.
#[napi]
pub struct ServerHandle {
    inner: Arc<HttpServer>,
}

#[napi]
impl ServerHandle {
    /// `http://host:port/mcp`.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.inner.url()
    }

    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.inner.local_addr().port() as u32
    }

    /// Sessions the server opens at once.
    #[napi(getter)]
    pub fn max_sessions(&self) -> u32 {
        self.inner.max_sessions() as u32
    }

    /// Stops accepting, stops every run and closes every sandbox. Idempotent.
    #[napi]
    pub async fn close(&self) {
        self.inner.shutdown().await
    }
}

fn factory(options: SessionOptions) -> Arc<dyn SandboxFactory> {
    Arc::new(LocalFactory {
        options,
        placement: crate::local_session::placement(),
    })
}

/// The sessions' options, checked as `LocalSession.create()` checks them.
fn session_options(value: Option<serde_json::Value>) -> Result<SessionOptions> {
    let registry = codebay_core::Registry::default();
    SessionOptions::from_json(&value.unwrap_or(serde_json::Value::Null), &registry)
        .map_err(|e| Error::new(Status::InvalidArg, format!("session: {}", e.message)))
}

fn positive(name: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(Error::new(
            Status::InvalidArg,
            format!("{name} must be a finite number > 0, not {v}"),
        ))
    }
}

/// Starts the MCP server over Streamable HTTP at `/mcp`, with `/healthz` and
/// `/metrics`. Rejects a non-loopback `listen` without an API key.
#[napi(ts_args_type = "options?: ServeOptions | undefined | null")]
pub async fn serve(options: Option<ServeOptions>) -> Result<ServerHandle> {
    let o = options.unwrap_or(ServeOptions {
        listen: None,
        api_key: None,
        api_key_file: None,
        max_sessions: None,
        idle_timeout_s: None,
        max_body: None,
        allowed_hosts: None,
        allowed_origins: None,
        session: None,
    });
    let sessions = session_options(o.session)?;
    let mut serve = codebay_server::ServeOptions::default();
    if let Some(listen) = o.listen {
        serve.listen = listen;
    }
    serve.api_key = match o.api_key {
        Some(key) if key.is_empty() => {
            return Err(Error::new(Status::InvalidArg, "apiKey is empty"))
        }
        Some(key) => Some(key),
        None => codebay_server::resolve_api_key(o.api_key_file.as_deref())
            .map_err(Error::from_reason)?,
    };
    serve.max_sessions = Some(match o.max_sessions {
        Some(n) => positive("maxSessions", n as f64)? as usize,
        None => codebay_server::default_max_sessions(&sessions),
    });
    if let Some(s) = o.idle_timeout_s {
        serve.idle_timeout = Duration::from_secs_f64(positive("idleTimeoutS", s)?);
    }
    if let Some(b) = o.max_body {
        serve.max_body = positive("maxBody", b)? as usize;
    }
    serve.allowed_hosts = o.allowed_hosts.unwrap_or_default();
    serve.allowed_origins = o.allowed_origins.unwrap_or_default();
    let server = codebay_server::serve_http(serve, factory(sessions))
        .await
        .map_err(Error::from_reason)?;
    Ok(ServerHandle {
        inner: Arc::new(server),
    })
}

/// MCP over this process's stdin and stdout, with one sandbox for the life of the
/// process. Resolves when the client closes stdin, with the sandbox closed. Nothing
/// else may write to stdout meanwhile.
#[napi]
pub async fn serve_stdio() -> Result<()> {
    codebay_server::serve_stdio(factory(SessionOptions::default()))
        .await
        .map_err(Error::from_reason)
}
