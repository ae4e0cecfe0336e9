//! A `codebay serve` (any MCP server with codebay's tools) as a session.
//!
//! - [`client`]: a minimal MCP client over Streamable HTTP (reqwest).
//! - [`options`]: `RemoteSession.connect()` options.
//! - [`session`]: `RemoteSession`, the `Session` trait over `tools/call`.

pub mod client;
pub mod options;
pub mod session;

pub use options::ConnectOptions;
pub use session::RemoteSession;
