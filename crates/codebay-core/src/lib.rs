//! The pure-Rust core of codebay: no napi types live here.
//!
//! - [`request`]: what `Code.runCode` checks before it calls a session, and the exact
//!   `run_code` tool arguments it sends (DESIGN §1.1).
//! - [`tool`]: the `McpToolResult` every session answers with.
//! - [`wire`]: the backend JSON carried in a successful tool result's `data` (DESIGN §2).
//! - [`result`]: turning a tool result into a `CodeExecutionResult` (DESIGN §1.1, §2).

pub mod local;
pub mod request;
pub mod result;
pub mod tool;
pub mod wire;

pub use local::{LocalSession, PoolOptions, SessionError, SessionOptions};
pub use request::{Language, RequestError, RunRequest, DEFAULT_TIMEOUT_S};
pub use result::{CodeExecutionResult, CodeExecutionResultItem, ExecutionError, Logs};
pub use tool::McpToolResult;
pub use wire::{BackendOutput, MimeBundle, WireError};
