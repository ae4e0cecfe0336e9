//! The `codebay-sandbox` helper: one process per session that builds the sandbox
//! (namespaces, cgroups, mounts, credentials, Landlock, seccomp) and serves the
//! engine's control socket. The messages are `codebay_protocol::helper`'s; see
//! docs/internals.md for the contract.
//!
//! - [`supervisor`] (outside): config, kernel check, the session's cgroups (limits, and
//!   the directories delegated to init), clone, id maps; at the end, removes every
//!   cgroup of the session, contexts included.
//! - [`init`] (pid 1 inside): mounts, then serves `spawn` (any argv, in a new cgroup of
//!   its own named by the request's context, fully confined before exec) and `kill`
//!   (every process of a context's cgroup, wherever they moved in the process tree).
//!
//! - [`file_agent`] (inside, as the code's user): the same binary run by init to serve
//!   the session's file operations, confined as the code is.
//! - [`doctor`] (`codebay-sandbox doctor`): checks what this machine gives the sandbox
//!   with the same probes, and says how to get what is missing.
//!
//! The helper knows no language: the engine says what to execute. As a library it
//! also gives the engine the one SCM_RIGHTS implementation both sides use,
//! [`sys::send_with_fds`] and [`sys::recv_with_fds`].
//!
//! Each isolation layer lives in its own module so it can be reasoned about and
//! unit-tested alone, in the spirit of Firecracker's jailer.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("codebay-sandbox supports x86_64 Linux only (seccomp filter and syscall numbers)");

pub mod cgroup;
pub mod config;
pub mod contexts;
pub mod credentials;
pub mod doctor;
pub mod error;
pub mod file_agent;
pub mod id_range;
pub mod init;
pub mod ipc;
pub mod kernel_check;
pub mod landlock;
pub mod mounts;
pub mod namespaces;
pub mod process_contexts;
pub mod protocol;
pub mod resource_limits;
pub mod seccomp;
pub mod supervisor;
pub mod sys;

pub use error::SandboxError;
