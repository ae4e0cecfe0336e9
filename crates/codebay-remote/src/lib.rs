//! codebay's sessions over HTTP (reqwest with rustls): [`agentbay`], AgentBay's cloud,
//! and [`remote`], a `codebay serve` over MCP.

pub mod agentbay;
pub mod remote;

pub use agentbay::{AgentBaySession, DeleteResult};
pub use remote::RemoteSession;
