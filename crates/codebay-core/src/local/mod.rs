//! The embedded session: one sandbox on this machine, run by the `codebay-sandbox`
//! helper, with its code contexts inside it.
//!
//! - [`interpreters`]: finding the real Python and Node to put in the sandbox.
//! - [`sandbox`]: the helper process and its control socket (docs/internals.md §1–2).
//! - [`interpreter`]: one driver process and the exchange of a run (docs/internals.md §4).
//! - [`context`]: a code context: its interpreter, its FIFO queue, its task.
//! - [`accounting`]: per-context cgroup counters (out-of-memory kills, refused forks).
//! - [`output`]: capped capture of stdout/stderr, collected or streamed.
//! - [`files`]: the session's files, through the sandbox's file agent.
//! - [`session`]: the session on top of it all, as a `Session` and as a tool server.
//! - [`pool`]: sessions built ahead.

pub mod accounting;
pub mod context;
pub mod files;
pub mod interpreter;
pub mod interpreters;
pub mod output;
pub mod pool;
pub mod sandbox;
pub mod session;

pub use session::{LocalSession, Placement, RunReply};

pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes; a short read leaves zeros, still a valid id.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, 0) };
    u64::from_le_bytes(bytes)
}
