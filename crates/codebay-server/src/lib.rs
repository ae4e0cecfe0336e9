//! `codebay serve` / `codebay mcp`: codebay's sandboxes as an MCP server (rmcp).
//!
//! Each MCP session owns one sandbox session, made by a [`SandboxFactory`] when the
//! client initializes and closed when the client ends the session (HTTP DELETE), after
//! the idle timeout, or at shutdown. The tools are the session tools of
//! `codebay_protocol::tool`, over `Arc<dyn codebay_core::Session>`.
//!
//! - [`handler`]: the MCP handler: tools, runs with progress notifications, cancellation.
//! - [`sessions`]: the sandboxes held, and `--max-sessions`.
//! - [`http`]: Streamable HTTP at `/mcp`, `/healthz`, `/metrics`, auth and limits.
//! - [`activity`]: each session's requests in flight: a client gone mid-run is a
//!   cancel, and a session with nothing in flight for the idle timeout is closed.
//! - [`metrics`]: the Prometheus text.
//! - [`tools`]: the tool list and its JSON schemas.

pub mod activity;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod sessions;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use codebay_core::local::pool;
use codebay_core::{BoxFuture, Placement, Session, SessionOptions};
use rmcp::ServiceExt as _;

pub use http::{serve_http, HttpServer};
pub use sessions::SERVER_FULL;

/// Makes the sandbox of a new MCP session.
pub trait SandboxFactory: Send + Sync + 'static {
    fn create(&self) -> BoxFuture<Result<Arc<dyn Session>, String>>;

    /// Sandboxes built ahead and waiting (for `/metrics`).
    fn pooled(&self) -> usize {
        0
    }

    /// Closes what `pooled` counts (at shutdown).
    fn drain(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// Local sandboxes through the pool.
pub struct LocalFactory {
    pub options: SessionOptions,
    pub placement: Placement,
}

impl SandboxFactory for LocalFactory {
    fn create(&self) -> BoxFuture<Result<Arc<dyn Session>, String>> {
        let (options, placement) = (self.options.clone(), self.placement.clone());
        Box::pin(async move {
            pool::acquire(options, placement)
                .await
                .map(|s| Arc::new(s) as Arc<dyn Session>)
                .map_err(|e| e.message)
        })
    }

    fn pooled(&self) -> usize {
        pool::ready_count(&self.options, &self.placement)
    }

    fn drain(&self) -> BoxFuture<()> {
        Box::pin(async {
            pool::drain().await;
        })
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8931";
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// How `codebay serve` runs.
#[derive(Clone)]
pub struct ServeOptions {
    /// `host:port`; port 0 picks a free one (see [`HttpServer::local_addr`]).
    pub listen: String,
    /// Required of every request as `Authorization: Bearer <key>`; required to bind
    /// anything but loopback.
    pub api_key: Option<String>,
    /// None: what fits in this machine's memory ([`default_max_sessions`]).
    pub max_sessions: Option<usize>,
    pub idle_timeout: Duration,
    pub max_body: usize,
    /// `Host` values accepted besides loopback ones (a pod behind a Service). Without
    /// any, a non-loopback bind accepts every Host (the key guards it).
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones and the server's own.
    pub allowed_origins: Vec<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: DEFAULT_LISTEN.into(),
            api_key: None,
            max_sessions: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("max_sessions", &self.max_sessions)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// The key from `--api-key-file` (its first line, trimmed), else `CODEBAY_API_KEY`.
/// An empty key is refused rather than taken as "no key".
pub fn resolve_api_key(file: Option<&str>) -> Result<Option<String>, String> {
    let key = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the API key file {path}: {e}"))?;
            Some(text.lines().next().unwrap_or_default().trim().to_owned())
        }
        None => std::env::var("CODEBAY_API_KEY").ok(),
    };
    match key {
        Some(k) if k.is_empty() => Err(match file {
            Some(path) => format!("the API key file {path} is empty"),
            None => "CODEBAY_API_KEY is set but empty".into(),
        }),
        other => Ok(other),
    }
}

/// How many sessions fit in this machine's memory (`MemTotal`) at `options`' limit;
/// at least 1.
pub fn default_max_sessions(options: &SessionOptions) -> usize {
    let per = options.memory_limit_bytes().max(1);
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_total_bytes(&t))
        .unwrap_or(per);
    ((total / per) as usize).max(1)
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `codebay mcp`: MCP over stdin/stdout, one sandbox for the life of the process.
/// Resolves when the client closes stdin; the sandbox is closed by then.
pub async fn serve_stdio(factory: Arc<dyn SandboxFactory>) -> Result<(), String> {
    let state = sessions::State::new(factory, 1);
    let handler = handler::Handler::new(state.clone());
    let slot = handler.slot();
    let running = handler
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP over stdio failed to start: {e}"));
    let outcome = match running {
        Ok(service) => service
            .waiting()
            .await
            .map(drop)
            .map_err(|e| format!("MCP over stdio ended with an error: {e}")),
        Err(e) => Err(e),
    };
    state.shutdown.cancel();
    slot.close_now().await;
    state.close_all().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_sessions_follow_memory() {
        assert_eq!(
            mem_total_bytes("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16 << 20)
        );
        let per = SessionOptions::default().memory_limit_bytes();
        assert!(per > 512 << 20, "{per}");
        assert!(default_max_sessions(&SessionOptions::default()) >= 1);
    }

    #[test]
    fn an_empty_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("codebay-key-{}", std::process::id()));
        std::fs::write(&dir, "  \n").unwrap();
        let err = resolve_api_key(Some(dir.to_str().unwrap())).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&dir, "s3cret\n").unwrap();
        assert_eq!(
            resolve_api_key(Some(dir.to_str().unwrap()))
                .unwrap()
                .as_deref(),
            Some("s3cret")
        );
        let _ = std::fs::remove_file(&dir);
    }
}
