//! The pure-Rust core of codebay: no napi types live here.
//!
//! - [`session`]: the `Session` trait every session kind implements, output sinks, cancellation.
//! - [`code`]: `Code`, AgentBay's class over any session (DESIGN §1.1).
//! - [`files`]: `Files`, a session's files over any session.
//! - [`request`]: a checked `runCode` call and its `run_code` tool arguments.
//! - [`result`]: a tool result → `CodeExecutionResult` (DESIGN §1.1, §2).
//! - [`runtime`]: the runtime registry: a language is one descriptor.
//! - [`options`]: `LocalSession.create()` options, validated once.
//! - [`error`]: the errors codebay throws and their stable codes.
//! - [`local`]: the local engine.
//!
//! The messages themselves are `codebay_protocol`'s.

pub mod code;
pub mod error;
pub mod files;
pub mod local;
pub mod options;
pub mod request;
pub mod result;
pub mod runtime;
pub mod session;

pub use code::{Code, RunOptions};
pub use codebay_protocol::{
    BackendOutput, CodeContext, ErrorInfo, FileEntry, FileKind, McpToolResult, MimeBundle,
};
pub use error::{CodebayError, ErrorCode, ErrorKind};
pub use files::Files;
pub use local::{LocalSession, Placement};
pub use options::{PoolOptions, SessionOptions};
pub use request::{RunRequest, DEFAULT_TIMEOUT_S};
pub use result::{CodeExecutionResult, CodeExecutionResultItem, Logs};
pub use runtime::{Registry, Runtime};
pub use session::{BoxFuture, Cancel, OutputSink, RunControl, Session};
