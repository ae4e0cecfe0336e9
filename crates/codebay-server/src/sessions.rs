//! The sandboxes the server holds: one per MCP session, made when the session
//! initializes, closed when it ends (its handler is dropped) or at shutdown, and
//! bounded by `max_sessions`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use codebay_core::Session;
use rmcp::model::ErrorCode;
use rmcp::ErrorData as McpError;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Gauges, Metrics};
use crate::SandboxFactory;

/// The JSON-RPC error code of a refused session: in the implementation-defined server
/// error range, so that a client can tell "full" from a bad request.
pub const SERVER_FULL: ErrorCode = ErrorCode(-32001);

pub struct State {
    pub factory: Arc<dyn SandboxFactory>,
    pub max_sessions: usize,
    pub metrics: Metrics,
    open: Mutex<HashMap<u64, Arc<dyn Session>>>,
    /// Open sandboxes and those being made: what counts against `max_sessions`.
    reserved: AtomicUsize,
    next_key: AtomicU64,
    closing: AtomicBool,
    /// Cancelled at shutdown: every run is stopped.
    pub shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
}

impl State {
    /// Needs a tokio runtime: sandboxes are closed on it when their session ends.
    pub fn new(factory: Arc<dyn SandboxFactory>, max_sessions: usize) -> Arc<State> {
        Arc::new(State {
            factory,
            max_sessions,
            metrics: Metrics::default(),
            open: Mutex::default(),
            reserved: AtomicUsize::new(0),
            next_key: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub fn sessions_open(&self) -> usize {
        self.open.lock().expect("sessions lock").len()
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            sessions_open: self.sessions_open(),
            max_sessions: self.max_sessions,
            pool_ready: self.factory.pooled(),
        }
    }

    fn reserve(&self) -> Result<(), McpError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(McpError::new(
                SERVER_FULL,
                "codebay: the server is shutting down and opens no new session",
                None,
            ));
        }
        let max = self.max_sessions;
        self.reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| {
                self.metrics.session_refused();
                McpError::new(
                    SERVER_FULL,
                    format!(
                        "codebay: this server already has its maximum of {max} sessions open \
                         (--max-sessions); close a session or try another server"
                    ),
                    Some(serde_json::json!({ "maxSessions": max })),
                )
            })
    }

    fn release(&self) {
        self.reserved.fetch_sub(1, Ordering::SeqCst);
    }

    /// Stops every run; sessions opened afterwards are refused.
    pub fn stop_runs(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
    }

    /// Stops every run and closes every sandbox; sessions opened afterwards are refused.
    pub async fn close_all(&self) {
        self.stop_runs();
        let all: Vec<Arc<dyn Session>> = {
            let mut open = self.open.lock().expect("sessions lock");
            open.drain().map(|(_, s)| s).collect()
        };
        futures::future::join_all(all.iter().map(|s| s.close())).await;
        self.factory.drain().await;
    }
}

/// One MCP session's sandbox. Dropped with the session's handler, which closes it.
pub struct Slot {
    state: Arc<State>,
    inner: Mutex<Option<(u64, Arc<dyn Session>)>>,
    /// Serialises a second `initialize` with the first.
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    pub fn new(state: Arc<State>) -> Slot {
        Slot {
            state,
            inner: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    pub fn session(&self) -> Option<Arc<dyn Session>> {
        self.inner
            .lock()
            .expect("slot lock")
            .as_ref()
            .map(|(_, s)| s.clone())
    }

    /// Makes the sandbox, unless the server is full; a session has at most one.
    pub async fn open(&self) -> Result<Arc<dyn Session>, McpError> {
        let _one = self.opening.lock().await;
        if let Some(session) = self.session() {
            return Ok(session);
        }
        self.state.reserve()?;
        let session = match self.state.factory.create().await {
            Ok(session) => session,
            Err(reason) => {
                self.state.release();
                return Err(McpError::internal_error(
                    format!("codebay: the sandbox could not be made: {reason}"),
                    None,
                ));
            }
        };
        let key = self.state.next_key.fetch_add(1, Ordering::SeqCst);
        self.state
            .open
            .lock()
            .expect("sessions lock")
            .insert(key, session.clone());
        *self.inner.lock().expect("slot lock") = Some((key, session.clone()));
        // A shutdown that began while the sandbox was made did not see it.
        if self.state.closing.load(Ordering::SeqCst) {
            self.close_now().await;
            return Err(McpError::new(
                SERVER_FULL,
                "codebay: the server is shutting down and opens no new session",
                None,
            ));
        }
        Ok(session)
    }

    fn take(&self) -> Option<Arc<dyn Session>> {
        let (key, session) = self.inner.lock().expect("slot lock").take()?;
        self.state.release();
        // Already gone when close_all took it.
        self.state.open.lock().expect("sessions lock").remove(&key);
        Some(session)
    }

    pub async fn close_now(&self) {
        if let Some(session) = self.take() {
            session.close().await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(session) = self.take() {
            self.state
                .runtime
                .spawn(async move { session.close().await });
        }
    }
}
