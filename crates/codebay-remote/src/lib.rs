//! codebay's sessions over HTTP (reqwest with rustls): [`agentbay`], AgentBay's cloud.

pub mod agentbay;

pub use agentbay::{AgentBaySession, DeleteResult};
