//! AgentBay's cloud as a session: its OpenAPI over reqwest, as its public SDK sends it.
//!
//! - [`api`]: one call (query, headers, form, the answer's envelope) and how it fails.
//! - [`answer`]: a `CallMcpTool` answer as an `McpToolResult`, as the SDK maps it.
//! - [`options`]: `create()`/`attach()` options, the environment, the defaults.
//! - [`session`]: `AgentBaySession`, the `Session` trait over `CallMcpTool`.
//! - [`files`]: `session.files` over the cloud's filesystem tools.

pub mod answer;
pub mod api;
pub mod files;
pub mod options;
pub mod session;

pub use api::{ApiClient, ApiError, ApiKey};
pub use options::{process_env, AttachOptions, CreateOptions};
pub use session::{AgentBaySession, DeleteResult};
