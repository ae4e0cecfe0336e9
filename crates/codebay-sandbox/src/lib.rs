//! The `codebay-sandbox` helper: one process per session that builds the sandbox
//! (namespaces, cgroups, mounts, credentials, Landlock, seccomp) and serves the
//! addon's control socket. See docs/internals.md for the contract.
//!
//! Each isolation layer lives in its own module so it can be reasoned about and
//! unit-tested alone, in the spirit of Firecracker's jailer.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("codebay-sandbox supports x86_64 Linux only (seccomp filter and syscall numbers)");

pub mod cgroup;
pub mod config;
pub mod credentials;
pub mod error;
pub mod init;
pub mod kernel_check;
pub mod landlock;
pub mod mounts;
pub mod namespaces;
pub mod protocol;
pub mod resource_limits;
pub mod seccomp;
pub mod supervisor;
pub mod sys;

pub use error::SandboxError;
