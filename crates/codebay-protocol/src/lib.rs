//! Every message that crosses a boundary in codebay, defined once (serde only, no I/O):
//!
//! - [`tool`]: the session tools' arguments (`run_code`, the code-context tools) and the
//!   `McpToolResult` every session answers with.
//! - [`backend`]: the backend JSON in a `run_code` result (DESIGN §2) and the one
//!   `{ name, value, traceback }` error shape.
//! - [`helper`]: the sandbox helper's control socket: config, requests, replies, the
//!   order of the descriptors a spawn hands over, and the limits both sides check.
//! - [`driver`]: the JSON lines between the engine and a runtime driver.
//! - [`files`]: the paths a file operation may name, and the sandbox's file agent.
//! - [`agentbay`]: AgentBay's OpenAPI (query, forms, answers), as its public SDK sends it.
//! - [`mcp`]: what the MCP server streams while code runs (`OutputNotice`).
//!
//! Golden fixtures in `tests/fixtures/` hold the Rust types and the drivers
//! (`runtimes/test_drivers.py`) to the same bytes.

pub mod agentbay;
pub mod backend;
pub mod driver;
pub mod files;
pub mod helper;
pub mod mcp;
pub mod tool;

pub use backend::{BackendOutput, ErrorInfo, MimeBundle};
pub use driver::{DriverMessage, DriverReply, DriverRequest};
pub use files::{FileEntry, FileErrorCode, FileKind, FileReply, FileRequest};
pub use helper::{
    CgroupInfo, HelperReply, HelperRequest, ReadOnlyBind, ResourceLimits, SandboxConfig, SpawnedFds,
};
pub use mcp::OutputNotice;
pub use tool::{
    CodeContext, ContextIdArgs, CreateContextArgs, FileEncoding, FilePathArgs, McpToolResult,
    ReadFileArgs, RunCodeArgs, WriteFileArgs,
};
