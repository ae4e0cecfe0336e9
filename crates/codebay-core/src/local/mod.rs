//! The embedded session: one sandbox on this machine, run by the `codebay-sandbox`
//! helper, with one stateful interpreter per language inside it.
//!
//! - [`interpreters`]: finding the real Python and Node to put in the sandbox.
//! - [`sandbox`]: the helper process and its control socket (docs/internals.md §1–2).
//! - [`context`]: one interpreter driver and the runs it serves (docs/internals.md §4).
//! - [`output`]: capped capture of stdout/stderr.
//! - [`session`]: the `run_code` tool server on top of it all.

pub mod context;
pub mod interpreters;
pub mod output;
pub mod pool;
pub mod sandbox;
pub mod session;
pub mod turns;

pub use pool::PoolOptions;
pub use session::{LocalSession, SessionError, SessionOptions};
